"""NN disk detection vs correlation: accuracy on the thick-sample proxy, and speed.

Run: ``python benchmarks/bench_nn.py [--model NAME|FILE] [--threads 2]``

1. Accuracy: held-out strained scans of the kinematic *thick-sample proxy*
   (:func:`napari_4dstem.nn.synthetic.make_thick_strained_scan`, seeds unlike the training and
   validation seeds), at several thicknesses, Poisson noise at the dose of shared/TARGETS.md.
   NOT multislice: see docs/nn.md. Prints F1 at 0.5 / 1 px, position RMSE, strain RMSE of
   both paths and the ratios NN / correlation.
2. Speed: patterns/s of the NN path on 256x256 patterns (binned 2x into the 128 model) on
   the CPU with ``--threads`` torch threads, with correlation on the same data for reference.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def accuracy(model, thicknesses, scan, seeds):
    from napari_4dstem.nn.evaluate import compare_paths

    rows = []
    for t in thicknesses:
        acc = {"correlation": [], "nn": []}
        for seed in seeds:
            r = compare_paths(thickness_nm=t, model=model, scan_shape=(scan, scan), seed=seed)
            for k in acc:
                acc[k].append(r[k])
        mean = {
            k: {
                m: float(np.nanmean([d[m] for d in v]))
                for m in ("f1_0.5px", "f1_1px", "position_rmse_px", "strain_rmse", "e_xx_rmse")
            }
            for k, v in acc.items()
        }
        rows.append((t, mean))
        c, n = mean["correlation"], mean["nn"]
        print(
            f"t = {t:5.1f} nm | corr F1@0.5 {c['f1_0.5px']:.3f} F1@1 {c['f1_1px']:.3f} "
            f"pos {c['position_rmse_px']:.3f} px strain {c['strain_rmse']:.2e} | "
            f"NN F1@0.5 {n['f1_0.5px']:.3f} F1@1 {n['f1_1px']:.3f} pos {n['position_rmse_px']:.3f} px "
            f"strain {n['strain_rmse']:.2e} | strain NN/corr {n['strain_rmse'] / c['strain_rmse']:.2f}, "
            f"F1@0.5 NN/corr {n['f1_0.5px'] / max(c['f1_0.5px'], 1e-9):.2f}",
            flush=True,
        )
    return rows


def speed(model, n_side=16, size=256):
    from napari_4dstem.analysis.bragg.disks import find_bragg_disks
    from napari_4dstem.analysis.bragg.probe import make_template
    from napari_4dstem.nn.infer import find_bragg_disks_nn
    from napari_4dstem.nn.registry import load_model
    from napari_4dstem.simulation.samples import make_strained_crystal

    s = make_strained_crystal(
        scan_shape=(n_side, n_side), detector_shape=(size, size), disk_radius_px=10, spacing_px=40
    )
    lm = load_model(model)
    n = n_side * n_side
    find_bragg_disks_nn(s.datacube.data[:1, :2], probe=s.probe, model=lm)  # warm-up
    t0 = time.perf_counter()
    find_bragg_disks_nn(s.datacube, probe=s.probe, model=lm)
    nn_rate = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    find_bragg_disks(s.datacube, template=make_template(s.probe))
    corr_rate = n / (time.perf_counter() - t0)
    print(
        f"speed, {size}x{size} patterns, CPU: NN {nn_rate:.1f} patterns/s, correlation "
        f"{corr_rate:.1f} patterns/s (NN/corr {nn_rate / corr_rate:.2f})",
        flush=True,
    )
    return nn_rate, corr_rate


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scan", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 4])
    ap.add_argument("--thickness", type=float, nargs="+", default=[5.0, 30.0, 40.0, 60.0])
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, model {args.model or 'bundled default'}")
    accuracy(args.model, args.thickness, args.scan, args.seeds)
    speed(args.model)


if __name__ == "__main__":
    main()
