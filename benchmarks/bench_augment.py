"""Augmentation throughput against numpy's Poisson sampler, in one run on the same patterns.

    /work/venv/bin/python benchmarks/bench_augment.py [--quick] [--repeats N]

256x256 kinematic Au [001] patterns (100 A, 2 mrad, 300 kV) through ``augment_batch`` with the
default ``AugmentConfig`` (every distortion on), on 1 and 2 threads. The reference is numpy's
own Poisson sampler (``Generator.poisson``, one thread) drawing the counts of each pattern at
a dose of 1e7 electrons -- the one step of the augmentation that numpy alone would need. The
runs are interleaved (reference, 1 thread, 2 threads, repeated) and the medians printed.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from napari_4dstem.analysis.crystal.structure import bundled_crystal
from napari_4dstem.simulation.augment import augment_batch
from napari_4dstem.simulation.engines import SimulationRequest, get_engine


def patterns(n: int):
    r = SimulationRequest(bundled_crystal("Au"), thicknesses_A=(100.0,), convergence_mrad=2.0, shape=(256, 256))
    res = get_engine("kinematic").simulate(r)
    return np.repeat(res.patterns[0], n, 0), np.repeat(res.probe[None], n, 0)


def measure(runs: dict, n: int, repeats: int) -> dict[str, float]:
    """Patterns/s (median over ``repeats`` interleaved runs) of each callable."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up (numba compile or cache load)
    for _ in range(repeats):
        for k, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: n / statistics.median(v) for k, v in times.items()}


def main(quick: bool = False, repeats: int = 5) -> dict[str, float]:
    n = 64 if quick else 256
    pats, probes = patterns(n)
    rng = np.random.default_rng(0)

    def reference():
        for p in pats:
            rng.poisson(p * 1e7)

    runs = {"numpy Poisson reference, 1 thread": reference}
    for w in (1, 2):
        runs[f"augmentation, {w} thread(s)"] = lambda w=w: augment_batch(pats, probes, pats, seeds=range(n), workers=w)
    rates = measure(runs, n, repeats)
    ref = rates["numpy Poisson reference, 1 thread"]
    for k, v in rates.items():
        print(f"{k:36s} {v:7.0f} patterns/s  {v / ref:6.3f} x reference")
    r1, r2 = rates["augmentation, 1 thread(s)"], rates["augmentation, 2 thread(s)"]
    print(f"  scaling 2/1 threads: {r2 / r1:.2f}")
    return rates


if __name__ == "__main__":
    reps = int(sys.argv[sys.argv.index("--repeats") + 1]) if "--repeats" in sys.argv else 5
    main(quick="--quick" in sys.argv, repeats=reps)
