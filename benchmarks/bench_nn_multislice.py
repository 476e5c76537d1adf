"""The result that matters for issue #8: NN vs correlation on held-out multislice scans.

Simulates (or loads) strained, bent Si and Au [001] scans with our multislice engine
(:func:`napari_4dstem.nn.evaluate.make_multislice_strained_scan`: 300 kV, 2.5 mrad, 0.015 1/A
per px, 128x128, a vacuum disk of 60 e/px, background 0.5/px, Poisson; the truth is every disk
holding >= 2 e/px in the noise-free pattern) and scores the correlation path and each model:
F1 at 0.5 px, position RMSE, strain RMSE and its ratio to correlation's.

Run: ``python benchmarks/bench_nn_multislice.py [--scan 12 12] [--seed 13] [--cache DIR]
[--model NAME_OR_PT ...] [--json out.json]``. The scans take a while on a CPU (tens of minutes
for 12x12 on 2 cores); ``--cache`` keeps them (pickles) for reruns (``nn.evaluate.save_scans``).
Seeds 11 and 13 are never
used for training (training sets use 2026-2028).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

THICKNESSES = {"Si": (100.0, 300.0, 500.0), "Au": (50.0, 300.0, 500.0)}


def scans_for(crystal: str, scan: tuple[int, int], seed: int, cache: Path | None):
    from napari_4dstem.nn.evaluate import load_scans, make_multislice_strained_scan, save_scans

    name = f"{crystal}-seed{seed}-{scan[0]}x{scan[1]}.npz"
    path = None if cache is None else cache / name
    if path is not None and path.is_file():
        scans, meta = load_scans(path)
        return tuple(meta["thicknesses_A"]), scans
    th = THICKNESSES[crystal]
    t0 = time.perf_counter()
    scans = make_multislice_strained_scan(crystal=crystal, thicknesses_A=th, scan_shape=scan, seed=seed)
    print(f"simulated {crystal} {scan} in {time.perf_counter() - t0:.0f} s", flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_scans(path, scans, crystal=crystal, thicknesses_A=th, seed=seed, scan=scan)
    return th, scans


def main(argv=None) -> int:
    from napari_4dstem.nn.evaluate import compare_on_scan
    from napari_4dstem.nn.registry import DEFAULT_MODEL, load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scan", nargs=2, type=int, default=(12, 12))
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--cache", type=Path, help="folder for the simulated scans (CRYSTAL-seedS-NxM.npz)")
    ap.add_argument("--crystal", action="append", choices=sorted(THICKNESSES))
    ap.add_argument("--model", action="append", help="registry name or .pt file (default: bundled default)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    models = {m: load_model(m) for m in (a.model or [DEFAULT_MODEL])}
    out = {}
    rows = []
    for crystal in a.crystal or ("Si", "Au"):
        th, scans = scans_for(crystal, tuple(a.scan), a.seed, a.cache)
        for t, s in zip(th, scans, strict=True):
            r = compare_on_scan(s, models=models)
            key = f"{crystal} {t / 10:g} nm"
            out[key] = r
            c = r["correlation"]
            cells = [f"{c['f1_0.5px']:.2f} / {c['strain_rmse']:.1e}"]
            for m in models:
                n = r[m]
                ratio = n["strain_rmse"] / c["strain_rmse"]
                cells.append(f"{n['f1_0.5px']:.2f} / {n['strain_rmse']:.1e} ({ratio:.2f}x)")
            rows.append(f"| {key} | " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
    print()
    print("| scan | correlation | " + " | ".join(models) + " |")
    print("|---|---|" + "---|" * len(models))
    print("\n".join(rows))
    if a.json:
        meta = {"seed": a.seed, "scan": list(a.scan), "models": list(models)}
        a.json.write_text(json.dumps({"meta": meta, "results": out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
