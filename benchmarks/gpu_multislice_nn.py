"""The multislice-trained disk network, end to end on a GPU: simulate, train, evaluate.

Run: ``python benchmarks/gpu_multislice_nn.py --out DIR [--budget-s 380]`` on a machine with
CUDA (``--small --device cpu`` is a quick dry run of every stage on a CPU).

Stages, each time-boxed so the whole fits ``--budget-s``; every stage appends to
``DIR/results.json`` as soon as it ends, so a killed run still reports what it did:

A. our multislice engine on the device vs the CPU (same patterns?) and its speed, 256x256
   CBED of Au [001], thin (20 A) and thick (300 A);
B. a multislice training set (6 crystals, zone axes and random orientations, 2-80 nm,
   200/300 kV, 1.5-4 mrad, strain up to 2 %, uniform-height labels of every reflection with a
   structure-factor weight >= 0.01), in shards, until its time is up;
C. fine-tuning of the bundled default FCU-Net (``fcunet-ms-128``, same architecture) on it, with
   the on-the-fly augmentation, mixed precision; checkpoint each epoch; until its time is up;
D. export of the model, and the result that matters (issue #8): NN vs correlation on held-out
   multislice strained scans (:func:`napari_4dstem.nn.evaluate.make_multislice_strained_scan`,
   other seeds than the training set) of Si and Au [001] at 5, 30 and 50 nm, for the bundled
   bundled default, the proxy model and the new one;
E. the batched FFT correlation (``find_bragg_disks(device=...)``) on the device vs the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

T0 = time.perf_counter()


def now() -> float:
    return time.perf_counter() - T0


def log(*a):
    print(f"[{now():7.1f} s]", *a, flush=True)


class Results:
    def __init__(self, path: Path):
        self.path = path
        self.data: dict = {}

    def put(self, key, value):
        self.data[key] = value
        self.path.write_text(json.dumps(self.data, indent=1, default=_plain))


def _plain(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def stage_a(dev, small):
    import torch

    from napari_4dstem.analysis.crystal.structure import load_crystal
    from napari_4dstem.simulation.engines import SimulationRequest
    from napari_4dstem.simulation.multislice import MultisliceEngine

    shape = (64, 64) if small else (256, 256)
    au = load_crystal("Au")
    out = {}
    for name, t in (("thin_20A", 20.0), ("thick_300A", 300.0)):
        req = SimulationRequest(
            au,
            thicknesses_A=(t,),
            energy_kev=300.0,
            convergence_mrad=2.0,
            shape=shape,
            pixel_size_inv_A=0.01 if not small else 0.03,
        )
        eng = MultisliceEngine(device=dev)
        eng.simulate(req)  # warm-up
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
        n = 3
        t1 = time.perf_counter()
        for _ in range(n):
            r = eng.simulate(req)
        rate = n / (time.perf_counter() - t1)
        cpu_rate, diff = float("nan"), float("nan")
        if t < 100:  # the CPU reference only for the thin one (the thick takes minutes)
            t1 = time.perf_counter()
            rc = MultisliceEngine(device="cpu").simulate(req)
            cpu_rate = 1 / (time.perf_counter() - t1)
            diff = float(np.abs(r.patterns - rc.patterns).max())
        out[name] = {
            "patterns_per_s": rate,
            "cpu_patterns_per_s": cpu_rate,
            "ratio": rate / cpu_rate,
            "max_abs_diff_vs_cpu": diff,
            "grid": r.params["grid"],
            "slices": r.params["n_slices"],
        }
        log("A", name, out[name])
    return out


def stage_b(folder, budget_s, small, workers):
    from napari_4dstem.simulation.training import TrainingSetSpec, simulate_training_set

    spec = TrainingSetSpec(
        n_patterns=16 if small else 8192,
        patterns_per_shard=8 if small else 128,
        crystals=("Au", "Cu", "Al", "Si", "Fe", "Ti"),
        engine="multislice",
        shape=(128, 128),
        pixel_size_inv_A=(0.012, 0.02),
        random_orientation_fraction=0.3,
        zone_axis_tilt_deg=1.5,
        thickness_A=(20.0, 120.0 if small else 600.0),
        energies_kev=(300.0,),
        # 2.5-4 mrad at 300 kV keeps the probe inside a box of 1 / pixel (box_multiple 1):
        # 10-30x cheaper than the 3x box a smaller angle needs
        convergence_mrad=(2.5, 4.0),
        defocus_A=(-100.0, 100.0),
        strain_max=0.02,
        label_heights="uniform",
        label_min_weight=0.01,
        seed=2026,
    )
    t1 = time.perf_counter()
    job = simulate_training_set(spec, folder, workers=workers, executor="threads")
    done = 0
    try:
        for p in job:
            done = p.done
            if time.perf_counter() - t1 > budget_s:
                log("B: time is up at", done, "patterns")
                break
    finally:
        job.close()
    from napari_4dstem.simulation.shards import ShardSet

    n = len(ShardSet(folder))
    dt = time.perf_counter() - t1
    out = {
        "patterns_simulated": done,
        "patterns_in_complete_shards": n,
        "seconds": dt,
        "patterns_per_s": done / dt,
        "spec": spec.to_dict(),
    }
    log("B", {k: v for k, v in out.items() if k != "spec"})
    return out


def stage_c(folder, out_dir, budget_s, small, dev):
    from napari_4dstem.nn.registry import load_model
    from napari_4dstem.nn.train import TrainConfig, iter_train

    base = load_model(None)
    cfg = TrainConfig(
        model=base.config,
        epochs=1000,
        steps_per_epoch=4 if small else 150,
        batch_size=4 if small else 32,
        lr=1e-3,
        warmup_steps=50,
        peak_weight=20.0,
        val_max=8 if small else 64,
        strain_scan=None,
        seed=1,
        device=dev,
        amp=True,
        init=base.name,
    )
    t1 = time.perf_counter()
    job = iter_train(folder, out_dir=out_dir, config=cfg, resume=False)
    epochs = 0
    try:
        for p in job:
            if p.message.startswith("epoch") and ":" in p.message:
                epochs += 1
                log("C", p.message)
                if time.perf_counter() - t1 > budget_s:
                    break
    finally:
        job.close()
    hist = json.loads((Path(out_dir) / "history.json").read_text())
    dt = time.perf_counter() - t1
    steps = hist[-1]["step"] if hist else 0
    out = {
        "epochs": epochs,
        "steps": steps,
        "seconds": dt,
        "patterns_per_s": steps * cfg.batch_size / dt,
        "history": hist,
        "config": cfg.to_dict(),
    }
    return out


def stage_d(ckpt, model_path, dev, small, train_info, scans_dir=None):
    from napari_4dstem.nn.evaluate import compare_on_scan, make_multislice_strained_scan
    from napari_4dstem.nn.registry import load_model
    from napari_4dstem.nn.train import export_model

    export_model(
        ckpt,
        model_path,
        card={
            "name": "fcunet-ms-128",
            "version": "0.2.0",
            "description": "FCU-Net (real domain, width 6) fine-tuned from the bundled default on "
            "multislice simulations by our torch engine (benchmarks/gpu_multislice_nn.py)",
            "training_set": train_info,
            "licence": "BSD-3-Clause",
        },
    )
    models = {
        "default": load_model(None),
        "proxy": load_model("fcunet-proxy-128"),
        "new": load_model(str(model_path)),
    }
    out = {}
    thick = (50.0, 120.0) if small else (50.0, 300.0, 500.0)
    for crystal in ("Si", "Au"):
        t1 = time.perf_counter()
        if scans_dir is not None:  # simulated beforehand (nn.evaluate.save_scans .npz)
            from napari_4dstem.nn.evaluate import load_scans

            path = sorted(Path(scans_dir).glob(f"{crystal}-*.npz"))[0]
            scans, meta = load_scans(path)
            thick = tuple(meta["thicknesses_A"])
        else:
            scans = make_multislice_strained_scan(
                crystal=crystal,
                thicknesses_A=thick,
                scan_shape=(3, 3) if small else (12, 12),
                seed=11 if crystal == "Si" else 12,
                device=dev,
            )
        log("D: scans of", crystal, f"{time.perf_counter() - t1:.1f} s")
        for t, scan in zip(thick, scans, strict=True):
            row = compare_on_scan(scan, models={f"nn_{k}": v for k, v in models.items()}, device=dev)
            c = row["correlation"]
            for mname in models:
                n = row[f"nn_{mname}"]
                n["strain_ratio_vs_correlation"] = n["strain_rmse"] / c["strain_rmse"]
                n["f1_0.5_ratio_vs_correlation"] = n["f1_0.5px"] / max(c["f1_0.5px"], 1e-9)
            out[f"{crystal}_{t:g}A"] = row
            log(
                "D",
                crystal,
                t,
                f"corr F1@0.5 {c['f1_0.5px']:.3f} strain {c['strain_rmse']:.2e}",
                " | ".join(
                    f"{k} F1@0.5 {row[f'nn_{k}']['f1_0.5px']:.3f} strain "
                    f"{row[f'nn_{k}']['strain_rmse']:.2e} ratio "
                    f"{row[f'nn_{k}']['strain_ratio_vs_correlation']:.2f}"
                    for k in models
                ),
            )
    return out


def stage_e(dev, small):
    import torch

    from napari_4dstem.analysis.bragg.disks import find_bragg_disks
    from napari_4dstem.analysis.bragg.probe import make_template
    from napari_4dstem.simulation.samples import make_strained_crystal

    s = make_strained_crystal(
        scan_shape=(8, 8) if small else (32, 32),
        detector_shape=(256, 256),
        disk_radius_px=10,
        spacing_px=40,
    )
    tpl = make_template(s.probe)
    out = {}
    for d in (dev, "cpu"):
        find_bragg_disks(s.datacube.data[:1, :2], template=tpl, device=d)
        if d.startswith("cuda"):
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        bp = find_bragg_disks(s.datacube, template=tpl, device=d)
        out[d] = {
            "patterns_per_s": s.datacube.data.shape[0] * s.datacube.data.shape[1] / (time.perf_counter() - t1),
            "n_peaks": int(bp.offsets[-1]),
        }
    log("E", out)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=380.0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--stages", default="ABCDE", help="which stages to run (letters)")
    ap.add_argument("--set", help="an existing training-set folder (stage B writes one otherwise)")
    ap.add_argument("--train-s", type=float, help="stage C's time (default: a third of the budget)")
    ap.add_argument(
        "--scans",
        help="folder of held-out scans for D (CRYSTAL-*.npz, e.g. from bench_nn_multislice.py --cache)",
    )
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "n4d-gpu-run"
    res = Results(out / "results.json")
    import torch

    res.put("device", torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "cpu")
    res.put("torch", torch.__version__)
    res.put("cpu_threads", torch.get_num_threads())
    B = a.budget_s
    plan = {"A": 0.05 * B, "B": 0.40 * B, "C": a.train_s or 0.33 * B}  # D, E: the rest
    train_set = Path(a.set) if a.set else work / "set"
    for key, fn in (
        ("A_multislice_speed", lambda: stage_a(a.device, a.small)),
        ("B_training_set", lambda: stage_b(train_set, plan["B"], a.small, a.workers)),
        ("C_training", lambda: stage_c(train_set, work / "train", plan["C"], a.small, a.device)),
        (
            "D_evaluation",
            lambda: stage_d(
                work / "train" / "checkpoint.pt",
                out / "fcunet-ms-128.pt",
                a.device,
                a.small,
                {k: v for k, v in res.data.get("B_training_set", {}).items()} or {"folder": str(train_set)},
                a.scans,
            ),
        ),
        ("E_correlation_speed", lambda: stage_e(a.device, a.small)),
    ):
        if key[0] not in a.stages:
            continue
        try:
            res.put(key, fn())
        except Exception as e:  # report and go on: later stages may still work
            log(key, "FAILED:", repr(e))
            res.put(key, {"error": repr(e), "traceback": traceback.format_exc()})
    log("done")


if __name__ == "__main__":
    main()
