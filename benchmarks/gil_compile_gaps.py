"""Does numba compilation in a worker thread starve the GUI thread? (UX audit session 14, defects 4-5)

A job's core function runs in a thread, as the napari docks run it; the main thread stands in for
the GUI thread: a 5 ms sleep loop that records every gap > 50 ms of wall time (the time it waited
to run Python again, i.e. for the GIL) and the main thread's own CPU in it. numba's event API
records each compile (``numba:compile``) in the thread, so that each gap can be laid against the
compiles. Modes:

- ``thread``: the job alone (its kernels compile, or load from the cache, in the thread);
- ``child``: first the plugin's warm-up child process (``python -m napari_4dstem.analysis.warm DTYPE``;
  ``GIL_CHILD=cli``: the whole ``napari-4dstem warmup``), then the same job in the thread.

Run each mode in a fresh process with an empty ``NUMBA_CACHE_DIR`` for a cold cache::

    NUMBA_CACHE_DIR=$(mktemp -d) PYTHONPATH=src python benchmarks/gil_compile_gaps.py thread classify uint8

Jobs: ``classify`` (Classification's feature pass + decomposition on a 4 x 4 scan), ``virtual``
(the Virtual imaging dock's first images), ``warm`` (the plugin's former in-thread warm-up: every
core step for the dtype). The modules are imported on the main thread first: only the compiles
(or cache loads) happen in the thread.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter

import numpy as np


def _job(name: str, dtype: str):
    from napari_4dstem.analysis.warm import CORE_STEPS, tiny_cube, warm_virtual

    cube = tiny_cube(np.dtype(dtype))
    if name == "classify":
        from napari_4dstem.analysis.warm import warm_classify

        return lambda: warm_classify(cube)
    if name == "virtual":
        return lambda: warm_virtual(cube)
    if name == "warm":
        return lambda: [step(cube) for step in CORE_STEPS]
    if name == "dock_classify":  # the Classification dock's Classify job on the audit's file, imports included
        from napari_4dstem.io import open_datacube
        from napari_4dstem.widgets.classify import _classify_job

        dc = open_datacube(os.environ.get("GIL_FILE", _BLO))

        def run():
            job = _classify_job(dc, dc.calibration, None)
            try:
                while True:
                    next(job)
            except StopIteration:
                pass

        return run
    raise SystemExit(f"unknown job {name}")


_BLO = "/work/shared/realdata/rosettasciio/blockfile/test1.blo"


def _imports() -> None:
    import sklearn.decomposition
    import sklearn.mixture  # noqa: F401

    import napari_4dstem.analysis.acom.matching
    import napari_4dstem.analysis.bragg.disks
    import napari_4dstem.analysis.classify.features
    import napari_4dstem.analysis.virtual.com
    import napari_4dstem.analysis.virtual.images
    import napari_4dstem.pipelines  # noqa: F401


def main(mode: str, job: str, dtype: str) -> None:
    import numba.core.event as ev

    child_s = 0.0
    if mode == "child":
        t0 = time.perf_counter()
        rc = subprocess.run(
            # the plugin's warm-up child (widgets/_warmup.py); GIL_CHILD=cli: the whole `napari-4dstem warmup`
            [sys.executable, "-m", "napari_4dstem.cli", "--quiet", "warmup", "--dtype", dtype]
            if os.environ.get("GIL_CHILD") == "cli"
            else [sys.executable, "-m", "napari_4dstem.analysis.warm", dtype],
            capture_output=True,
            text=True,
            check=False,
        )
        child_s = time.perf_counter() - t0
        if rc.returncode:
            print(rc.stderr[-2000:])

    compiles: list[tuple[float, float, str]] = []

    class Rec(ev.Listener):
        def on_start(self, event):
            self.t = time.perf_counter()

        def on_end(self, event):
            compiles.append((self.t, time.perf_counter(), str(event.data.get("dispatcher", ""))[:60]))

    ev.register("numba:compile", Rec())
    # imports on the main thread, before the clock starts (the dock job imports its own in the thread)
    if job != "dock_classify":
        _imports()
    else:
        import napari_4dstem.widgets.classify  # noqa: F401  (Qt, napari: what the GUI has)
    fn = _job(job, dtype)
    done = threading.Event()

    def run():
        try:
            fn()
        finally:
            done.set()

    gaps: list[tuple[float, float, float]] = []  # (start, wall, main-thread cpu)
    where: Counter = Counter()
    t_start = time.perf_counter()
    th = threading.Thread(target=run)
    th.start()
    last, last_cpu = time.perf_counter(), time.thread_time()
    while not done.is_set():
        time.sleep(0.005)
        now, cpu = time.perf_counter(), time.thread_time()
        if now - last > 0.050:
            gaps.append((last, now - last, cpu - last_cpu))
            # where the job's threads are as the main thread gets the GIL back: the call that held it
            for ident, frame in sys._current_frames().items():
                if ident == threading.main_thread().ident:
                    continue
                stack = traceback.extract_stack(frame)[-3:]
                key = " < ".join(f"{os.path.basename(f.filename)}:{f.name}:{f.lineno}" for f in stack[::-1])
                where[key] += now - last
        last, last_cpu = now, cpu
    th.join()
    job_s = time.perf_counter() - t_start
    in_compile = 0.0
    for g0, gw, _ in gaps:
        for c0, c1, _ in compiles:
            in_compile += max(0.0, min(g0 + gw, c1) - max(g0, c0))
    gap_wall = sum(g[1] for g in gaps)
    worst = max((g[1] for g in gaps), default=0.0)
    print(
        f"MEASURE mode={mode} job={job} dtype={dtype} child_s={child_s:.1f} job_s={job_s:.2f} "
        f"compiles={len(compiles)} compile_s={sum(c1 - c0 for c0, c1, _ in compiles):.1f} "
        f"gaps={len(gaps)} gap_wall_s={gap_wall:.2f} gap_cpu_s={sum(g[2] for g in gaps):.2f} "
        f"worst_gap_s={worst:.2f} gap_wall_in_compile_s={in_compile:.2f} "
        f"load={os.getloadavg()[0]:.1f} cache={os.environ.get('NUMBA_CACHE_DIR', '(default)')}"
    )
    for w, s in where.most_common(8):
        print(f"  gap wall {s:5.2f} s  worker at {w}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
