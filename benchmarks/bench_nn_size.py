"""What a larger FCU-Net buys: 128 vs 256 models on 256x256 patterns (issue #8).

Run::

    PYTHONPATH=src python benchmarks/bench_nn_size.py --model-128 M128.pt --model-256 M256.pt \
        [--thickness 5 40] [--seeds 21 22] [--scan 12] [--also MODEL] [--threads 2]

Both models should be trained with the same recipe on the same proxy patterns, the 256 one
at twice the sampling (``napari-4dstem train ... --make-proxy 3072 --size 128|256``: the
256 set is the 128 set drawn with every length in px doubled, and the augmentation keeps the
same dose per unit area; see docs/nn.md, "What a larger model buys").

1. Accuracy: held-out strained scans of the kinematic thick-sample proxy on a 256x256
   detector (:func:`napari_4dstem.nn.synthetic.make_thick_strained_scan` with ``size=256,
   sampling=2``: lattice spacing 48 px, disk radius 16 px, the dose of the 128 scans per unit
   area, i.e. central disk 15 counts/px, background 0.125/px, Bragg disks 1-3 counts/px,
   Poisson). The 128 model sees each pattern binned 2x, the 256 model at native sampling;
   correlation (default ``find_bragg_disks``, template from the same probe) at native sampling.
   F1 at 0.5 and 1 px, position RMSE (px of the 256 detector), strain RMSE, means over seeds.
2. Speed: patterns/s of each path on a 16x16 scan of 256x256 patterns with ``--threads``
   torch threads (after a warm-up call).

Prints markdown tables. NOT multislice: a kinematic proxy (docs/nn.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

METRICS = ("f1_0.5px", "f1_1px", "position_rmse_px", "strain_rmse")


def accuracy(models, thicknesses, seeds, scan, counts):
    from napari_4dstem.nn.evaluate import compare_on_scan
    from napari_4dstem.nn.synthetic import make_thick_strained_scan

    rows = {}
    for t in thicknesses:
        acc = {}
        for seed in seeds:
            s = make_thick_strained_scan(
                scan_shape=(scan, scan),
                size=256,
                sampling=2.0,
                thickness_nm=t,
                seed=seed,
                central_counts=counts,
            )
            r = compare_on_scan(s, models=models)
            for k, v in r.items():
                acc.setdefault(k, []).append(v)
            print(
                f"t {t:g} nm seed {seed}: "
                + "; ".join(
                    f"{k} F1@0.5 {v['f1_0.5px']:.3f} pos {v['position_rmse_px']:.3f} strain {v['strain_rmse']:.2e}"
                    for k, v in r.items()
                ),
                flush=True,
            )
        rows[t] = {k: {m: float(np.nanmean([d[m] for d in v])) for m in METRICS} for k, v in acc.items()}
    return rows


def speed(models, n_side=16):
    from napari_4dstem.analysis.bragg.disks import find_bragg_disks
    from napari_4dstem.analysis.bragg.probe import make_template
    from napari_4dstem.nn.infer import find_bragg_disks_nn
    from napari_4dstem.nn.synthetic import make_thick_strained_scan

    s = make_thick_strained_scan(scan_shape=(n_side, n_side), size=256, sampling=2.0, thickness_nm=40.0, seed=5)
    n = n_side * n_side
    template = make_template(s.probe)
    rates = {}
    for name in ("correlation", *models):
        if name == "correlation":

            def run(data):
                return find_bragg_disks(data, template=template)
        else:

            def run(data, _m=models[name]):
                return find_bragg_disks_nn(data, probe=s.probe, model=_m)

        run(s.datacube.data[:1, :2])  # warm-up (numba / torch)
        t0 = time.perf_counter()
        run(s.datacube)
        rates[name] = n / (time.perf_counter() - t0)
    return rates


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-128", required=True, help="128 model: registry name or .pt file")
    ap.add_argument("--model-256", required=True, help="256 model: registry name or .pt file")
    ap.add_argument("--thickness", type=float, nargs="+", default=[5.0, 40.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[21, 22])
    ap.add_argument("--scan", type=int, default=12, help="scan side (default 12x12)")
    ap.add_argument(
        "--counts",
        type=float,
        default=60.0,
        help="central disk counts per px of the 128 sampling (default 60: 15/px at 256)",
    )
    ap.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="MODEL",
        help="score another model too (a reference row, e.g. fcunet-proxy-128@0.1.0)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args()

    import torch

    from napari_4dstem.nn.registry import load_model

    torch.set_num_threads(args.threads)
    models = {"NN-128": load_model(args.model_128), "NN-256": load_model(args.model_256)}
    models.update({name: load_model(name) for name in args.also})
    for k, m in models.items():
        print(f"{k}: {m.config.to_dict()}", flush=True)
    print(f"torch {torch.__version__}, {args.threads} threads", flush=True)
    rows = accuracy(models, args.thickness, args.seeds, args.scan, args.counts)
    print(
        f"\n256x256 proxy scans {args.scan}x{args.scan}, seeds {args.seeds}, central disk "
        f"{args.counts / 4:g} counts/px (means over seeds)\n"
    )
    print("| t (nm) | path | F1@0.5px | F1@1px | position RMSE (px) | strain RMSE | strain / corr |")
    print("|---|---|---|---|---|---|---|")
    for t, r in rows.items():
        c = r["correlation"]["strain_rmse"]
        for k, v in r.items():
            print(
                f"| {t:g} | {k} | {v['f1_0.5px']:.3f} | {v['f1_1px']:.3f} | "
                f"{v['position_rmse_px']:.3f} | {v['strain_rmse']:.2e} | "
                f"{v['strain_rmse'] / c:.2f} |"
            )
    if not args.no_speed:
        rates = speed({k: models[k] for k in ("NN-128", "NN-256")})
        print(f"\nSpeed, 16x16 scan of 256x256 patterns, {args.threads} threads (patterns/s)\n")
        print("| path | patterns/s |\n|---|---|")
        for k, v in rates.items():
            print(f"| {k} | {v:.1f} |")


if __name__ == "__main__":
    main()
