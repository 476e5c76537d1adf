"""Simulation and augmentation throughput (ratios within one run; medians of short repeats).

    /work/venv/bin/python benchmarks/bench_simulation.py [--quick] [--engines-only | --jobs-only]

Prints patterns/s per engine (kinematic, our multislice on the CPU, Prismatic, abTEM, each
with its default threads)
for a 256x256 CBED of a thin (20 A) and a thick (300 A) Au [001] crystal, augmentation
throughput on 1 and 2 threads, and training-job scaling 1 -> 2 workers. ``--engines-only``
stops after the engine table; ``--jobs-only`` runs only the job scaling (after a warm-up job).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import numpy as np

from napari_4dstem.analysis.crystal.structure import bundled_crystal
from napari_4dstem.engine.jobs import run_job
from napari_4dstem.simulation.augment import augment_batch
from napari_4dstem.simulation.engines import SimulationRequest, get_engine
from napari_4dstem.simulation.training import TrainingSetSpec, simulate_training_set


def median_time(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(quick: bool = False, engines_only: bool = False) -> None:
    au = bundled_crystal("Au")
    rows = []
    for engine in ("kinematic", "multislice", "prismatic", "abtem"):
        try:
            # defaults: Prismatic all cores, abTEM 1 FFTW thread; ours on the CPU here
            eng = get_engine(engine, device="cpu") if engine == "multislice" else get_engine(engine)
        except Exception as e:
            print(f"{engine}: skipped ({str(e)[:60]}...)")
            continue
        for label, t in (("thin 20 A", 20.0), ("thick 300 A", 300.0)):
            r = SimulationRequest(
                au,
                thicknesses_A=(t,),
                convergence_mrad=2.0,
                shape=(256, 256),
                pixel_size_inv_A=0.01,
            )
            reps = 5 if engine == "kinematic" else 1
            dt = median_time(lambda r=r, eng=eng: eng.simulate(r), reps)
            rows.append((engine, label, 1.0 / dt))
            print(f"{engine:10s} {label:12s} {1 / dt:8.2f} patterns/s")
    kin = {lab: v for e, lab, v in rows if e == "kinematic"}
    for e, lab, v in rows:
        if e != "kinematic":
            print(f"  {e} / kinematic ({lab}): {v / kin[lab]:.4f}")
    if engines_only:
        return

    r = SimulationRequest(au, thicknesses_A=(100.0,), convergence_mrad=2.0, shape=(256, 256))
    res = get_engine("kinematic").simulate(r)
    n = 64 if quick else 256
    pats = np.repeat(res.patterns[0], n, 0)
    probes = np.repeat(res.probe[None], n, 0)
    rates = {}
    for w in (1, 2):
        dt = median_time(lambda w=w: augment_batch(pats, probes, pats, seeds=range(n), workers=w), 3)
        rates[w] = n / dt
        print(f"augmentation 256x256, {w} thread(s): {rates[w]:.0f} patterns/s")
    print(f"  augmentation scaling 2/1 threads: {rates[2] / rates[1]:.2f}")

    jobs(quick)


def jobs(quick: bool) -> None:
    """Training-set job scaling, after a warm-up job (numba compile, crystal cache) so that
    the serial run does not pay what the others do not."""
    spec = TrainingSetSpec(
        n_patterns=24 if quick else 64,
        patterns_per_shard=8,
        crystals=("Au", "Si"),
        shape=(256, 256),
        seed=1,
    )
    # warm-up: the whole set once (every crystal's reflections, every kernel compiled); a short
    # warm-up left the first timed (serial) run paying for the rest: 13 vs 53 patterns/s
    with tempfile.TemporaryDirectory() as d:
        run_job(simulate_training_set(spec, d))
    runs: dict = {}
    for _ in range(3):  # interleaved, median of three
        for ex, w in (("serial", 1), ("threads", 1), ("threads", 2), ("processes", 2)):
            with tempfile.TemporaryDirectory() as d:
                t = time.perf_counter()
                run_job(simulate_training_set(spec, d, workers=w, executor=ex))
                runs.setdefault((ex, w), []).append(spec.n_patterns / (time.perf_counter() - t))
    job_rates = {k: statistics.median(v) for k, v in runs.items()}
    for (ex, w), v in job_rates.items():
        print(f"training job, kinematic, {ex} x{w}: {v:.1f} patterns/s (median of 3)")
    base = job_rates[("serial", 1)]
    for k, v in job_rates.items():
        print(f"  job scaling {k[0]} x{k[1]} / serial: {v / base:.2f}")


if __name__ == "__main__":
    if "--jobs-only" in sys.argv:
        jobs(quick="--quick" in sys.argv)
    else:
        main(quick="--quick" in sys.argv, engines_only="--engines-only" in sys.argv)
