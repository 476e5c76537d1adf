"""How long ACOM matching can go without a cancel point: the longest gap between two yields of
``iter_match_orientations`` (a Cancel waits at most that long, plus the running chunks), named by
the step that ends it, at a given number of scan positions.

    python benchmarks/bench_acom_cancel.py --n 16384 --side 128

Kinematic Au patterns at random orientations (the test suite's generator), one Lorentzian plan
at 2 deg, the widget's defaults (refine, n_matches 1). Reports the gaps over 0.1 s.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=128, help="scan side: side x side positions")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-matches", type=int, default=1)
    args = ap.parse_args()
    from napari_4dstem.analysis.acom.matching import iter_match_orientations, kinematic_bragg_peaks
    from napari_4dstem.analysis.acom.plan import build_orientation_plan
    from napari_4dstem.analysis.crystal.structure import bundled_crystal
    from napari_4dstem.data.results import BraggPeaks
    from napari_4dstem.simulation.samples import random_rotations

    au = bundled_crystal("Au")
    plan = build_orientation_plan(au, energy_kev=300, k_max_inv_A=1.5, step_deg=2.0, thickness_A=50.0)
    n = args.side * args.side
    rng = np.random.default_rng(0)
    n_unique = min(n, 4096)  # orientations drawn once, tiled over the scan (the matching is per pattern)
    pk = kinematic_bragg_peaks(
        au, random_rotations(n_unique, rng), k_max_inv_A=1.5, thickness_A=50.0, position_noise_px=0.1, rng=rng
    )
    # tile the CSR arrays: position i gets the peaks of orientation i % n_unique
    src = np.arange(n) % n_unique
    cnt = np.diff(pk.offsets)[src]
    off = np.concatenate([[0], np.cumsum(cnt)]).astype(np.int64)
    rows = np.concatenate([np.arange(pk.offsets[j], pk.offsets[j + 1]) for j in src])
    peaks = BraggPeaks(
        (args.side, args.side),
        off,
        pk.qy[rows],
        pk.qx[rows],
        pk.intensity[rows],
        pk.correlation[rows],
        calibration=pk.calibration,
    )
    # warm: the numba kernels loaded from their cache (the GUI's first job pays that once)
    for _ in iter_match_orientations(
        peaks.__class__(
            (4, 4),
            off[:17],
            peaks.qy[: off[16]],
            peaks.qx[: off[16]],
            peaks.intensity[: off[16]],
            peaks.correlation[: off[16]],
            calibration=pk.calibration,
        ),
        [plan],
        min_peaks=3,
    ):
        pass
    job = iter_match_orientations(peaks, [plan], min_peaks=3, n_threads=args.threads, n_matches=args.n_matches)
    gaps = []
    t_prev = time.perf_counter()
    t0 = t_prev
    try:
        while True:
            step = next(job)
            t = time.perf_counter()
            gaps.append((t - t_prev, f"{step.message}' (step {len(gaps)}"))
            t_prev = t
    except StopIteration:
        pass
    t_end = time.perf_counter()
    gaps.append((t_end - t_prev, "(after the last yield: the result)'"))
    print(f"{n} patterns ({args.side}x{args.side}), {args.threads} threads: {t_end - t0:.1f} s, {len(gaps)} steps")
    worst = sorted(gaps, key=lambda g: -g[0])[:8]
    for dt, msg in worst:
        print(f"  {dt:6.3f} s before '{msg}'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
