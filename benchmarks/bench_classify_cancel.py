"""How long a Cancel of *Classify* waits: the longest gaps between yields of the classification job,
and the time from a Cancel to the job's end, on an unplanted scan.

    python benchmarks/bench_classify_cancel.py --scan 64 --det 64 [--methods gmm,kmeans,hierarchical,nmf]
        [--cancels 5] [--seed 11]

The scan is drawn by ``bench_classify.draw_case`` ("three_phases_boundaries": Au, Cu, Si grains, kinematic
patterns, thickness and strain gradients, descan, Poisson noise at 1e4 electrons), cached under the temporary
directory. The job is the dock's (``pipelines.iter_classification`` with the widget's defaults: pattern
features, PCA, Gaussian mixture, 8 classes at most, ``space="auto"``), driven as the dock's worker drives it:
a step, then the stop flag is read; on a Cancel the generator is closed.

Gaps: one run per method; every gap over 0.1 s between two yields, named by the messages before and after it.

Cancel to the end: ``--cancels`` runs per method, each cancelled at a drawn moment of the decomposition or
clustering (uniform over the part of a full run after the features pass, measured first, or its first
``--window`` seconds); the time from the
click (the stop flag set by another thread) to the generator's ``close()`` returning, medians.
Run it with ``PYTHONPATH`` pointing at the code under test (``git archive main src`` for the old code).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def scan(side: int, det: int, seed: int) -> np.ndarray:
    path = Path(tempfile.gettempdir()) / f"n4d_classify_cancel_{side}_{det}_{seed}.npy"
    if path.exists():
        return np.load(path)
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_classify import cases, draw_case, voronoi

    make, dose = cases(det)["three_phases_boundaries"]
    phases = make()
    data, _truth, _frac = draw_case(
        phases, voronoi(side, 9, seed) % len(phases), scan=side, det=det, dose=dose, seed=seed
    )
    np.save(path, data)
    return data


def job(data, method: str):
    from napari_4dstem.data.datacube import DataCube
    from napari_4dstem.pipelines import ClassificationParams, iter_classification

    decomposition = "nmf" if method == "nmf" else "pca"
    cluster = "gmm" if method == "nmf" else method
    from napari_4dstem.engine.driver import n_threads

    cube = DataCube(data)
    # the dock's blocks (widgets._common.responsive_chunk: ~0.15 s of work on all threads; no Qt import here)
    sy, sx = cube.scan_shape
    n = max(n_threads(), int(0.15 * n_threads() / (5e-3 * data.shape[2] * data.shape[3] / 128**2)))
    chunk = (max(1, min(sy, n // sx)), sx) if n >= sx else (1, n)
    return iter_classification(
        cube,
        classify=ClassificationParams(method=cluster, decomposition=decomposition, max_classes=8),
        scan_chunk=chunk,
    )


def gaps(data, method: str):
    """Every gap between yields (s, message before, message after), and the features' end time."""
    out, t_feat = [], None
    t0 = last = time.perf_counter()
    prev = "(start)"
    g = job(data, method)
    while True:
        try:
            p = next(g)
        except StopIteration:
            now = time.perf_counter()
            out.append((now - last, prev, "(end)"))
            break
        now = time.perf_counter()
        out.append((now - last, prev, p.message))
        if t_feat is None and ("decomposition" in p.message):
            t_feat = now - t0
        last, prev = now, p.message
    return out, t_feat, time.perf_counter() - t0


def cancel_once(data, method: str, at_s: float) -> tuple[float, str]:
    """Run the job as the dock's worker does; Cancel ``at_s`` after the start: (click to end, last message)."""
    stop = threading.Event()
    g = job(data, method)
    t0 = time.perf_counter()
    timer = threading.Timer(at_s, stop.set)
    timer.start()
    msg = ""
    click = None
    for p in g:
        msg = p.message
        if stop.is_set():
            click = t0 + at_s
            g.close()
            break
    end = time.perf_counter()
    timer.cancel()
    if click is None:
        return float("nan"), "(ran to its end)"
    return end - click, msg


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scan", type=int, default=64)
    ap.add_argument("--det", type=int, default=64)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--methods", default="gmm,kmeans,hierarchical,nmf")
    ap.add_argument("--cancels", type=int, default=5)
    ap.add_argument("--no-gaps", action="store_true")
    ap.add_argument("--window", type=float, default=0.0, help="cancel within this many s after the features (0: all)")
    args = ap.parse_args()
    import napari_4dstem

    data = scan(args.scan, args.det, args.seed)
    # the dock imports these before its job starts (widgets.classify._CLASSIFY_MODULES, in a thread)
    import importlib

    for name in ("napari_4dstem.pipelines", "napari_4dstem.analysis.classify", "napari_4dstem.analysis.virtual.origin"):
        importlib.import_module(name)
    for name in ("scipy.signal", "sklearn.decomposition", "sklearn.mixture", "sklearn.metrics"):
        importlib.import_module(name)

    print(f"code: {napari_4dstem.__file__}; load {os.getloadavg()[0]:.1f}; data {data.shape} {data.dtype}")
    for method in args.methods.split(","):
        gs, t_feat, total = gaps(data, method)
        t_feat = t_feat or 0.0
        # a Cancel at a uniformly drawn moment after the features waits for the rest of its gap: on average
        # sum(g^2) / (2 sum(g)) over the gaps that start after the features pass
        after, t = [], 0.0
        for s, _a, _b in gs:
            t += s
            if t - s >= t_feat:
                after.append(s)
        if after:
            print(
                f"[{method}] after the features: {len(after)} gaps, longest {max(after):.3f} s, expected wait of a "
                f"Cancel at a drawn moment {sum(g * g for g in after) / (2 * sum(after)):.3f} s"
            )
        if not args.no_gaps:
            big = sorted(gs, reverse=True)[:6]
            print(f"[{method}] run {total:.2f} s (features until {t_feat:.2f} s); longest gaps:")
            for s, a, b in big:
                print(f"    {s:6.3f} s  after {a!r} -> {b!r}")
        rng = np.random.default_rng(len(method))
        took, msgs = [], []
        for _ in range(args.cancels):
            hi = min(total * 0.95, t_feat + args.window) if args.window > 0 else total * 0.95
            at = float(rng.uniform(t_feat, hi))
            s, _last = cancel_once(data, method, at)
            took.append(s)
            msgs.append(f"{at:.1f}s:{s:.2f}")
        ok = [s for s in took if s == s]
        med = statistics.median(ok) if ok else float("nan")
        print(
            f"[{method}] Cancel to the end: median {med:.3f} s, max {max(ok, default=float('nan')):.3f} s "
            f"({len(ok)} runs; at:took {' '.join(msgs)}); load {os.getloadavg()[0]:.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
