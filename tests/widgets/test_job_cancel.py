"""JobRunner's Cancel returns at once: the worker stops the job at its next step and runs the job's
clean-up itself; the click costs the GUI thread next to nothing and what the job still sends is
dropped (UX 20)."""

import threading
import time

import numpy as np
import pytest
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from napari_4dstem import Calibration
from napari_4dstem.engine.jobs import PartialMap, Progress
from napari_4dstem.widgets._common import JobRunner, PartialMaps

pytestmark = pytest.mark.gui

BLOCK_S = 0.3  # each step of the job, and its clean-up after a cancel (a block in flight)
N = 10


def _slow_job(log: dict):
    """Rows of a 10 x 4 map, one a step of BLOCK_S; the clean-up (like waiting for a block in
    flight) takes BLOCK_S too and records the thread it ran on."""
    done = np.zeros((N, 4), bool)
    try:
        for k in range(N):
            time.sleep(BLOCK_S)
            done[k] = True
            log["steps"] = k + 1
            yield Progress(k + 1, N, "rows", partial=PartialMap.of("rows", np.full((N, 4), k + 1.0), done))
        return "result"
    finally:
        time.sleep(BLOCK_S)
        log["cleanup_thread"] = threading.get_ident()


def _dock(qtbot):
    w = QWidget()
    lay = QVBoxLayout(w)
    status, cancel, run, bar = QLabel(), QPushButton("Cancel"), QPushButton("Run"), QProgressBar()
    for x in (status, cancel, run, bar):
        lay.addWidget(x)
    qtbot.addWidget(w)
    return w, JobRunner(status, cancel, buttons=(run,), progress_bar=bar), run


def click_cost(button) -> tuple[float, float]:
    """GUI-thread CPU time and wall time of one click (the slot run inside ``click``)."""
    cpu, wall = time.thread_time(), time.perf_counter()
    button.click()
    return time.thread_time() - cpu, time.perf_counter() - wall


def record_yields(monkeypatch, jobs: JobRunner, into: list, kind: type | None = None) -> list:
    """Record into ``into`` every value the next jobs of ``jobs`` yield (only instances of
    ``kind`` when given), from their first step on: the runner's own progress slot is wrapped, and
    ``JobRunner.start`` connects it when it creates the worker. A slot connected to
    ``jobs.worker.yielded`` after the click that starts the job can miss the first steps (the
    worker runs at once; a fresh-clone CI run missed the first progress step that way). Call it
    before the click; it stays for the test's later jobs of ``jobs``. Returns ``into``."""
    shown = jobs._on_progress

    def record(p):
        if kind is None or isinstance(p, kind):
            into.append(p)
        shown(p)

    monkeypatch.setattr(jobs, "_on_progress", record)
    return into


def test_yields_are_recorded_from_the_first_step(make_napari_viewer, qtbot, monkeypatch, stall_detector):
    """``record_yields`` sees a job's first step even when the worker yields it at once."""
    make_napari_viewer()
    _keep, jobs, _run = _dock(qtbot)

    def quick():
        yield Progress(1, 3, "first")  # before the click's slot has returned
        yield "not progress"
        yield Progress(2, 3, "second")
        yield Progress(3, 3, "third")
        return "done"

    everything = record_yields(monkeypatch, jobs, [])
    steps = record_yields(monkeypatch, jobs, [], Progress)
    results = []
    assert jobs.start(quick, desc="quick", on_done=results.append)
    qtbot.waitUntil(lambda: not jobs.busy, timeout=10000)
    assert results == ["done"]
    assert [p.done for p in steps] == [1, 2, 3] and everything[1] == "not progress" and len(everything) == 4


def test_cancel_returns_at_once_and_the_worker_cleans_up(make_napari_viewer, qtbot, stall_detector):
    viewer = make_napari_viewer()
    _keep, jobs, run = _dock(qtbot)  # the dock kept: its labels and buttons live with it
    maps = PartialMaps(lambda: viewer).for_scan(Calibration())
    log, results = {}, []
    with stall_detector.excluded("first layer add"):
        lyr = viewer.add_image(np.zeros((N, 4), np.float32), name="rows")
    assert jobs.start(_slow_job, log, desc="rows", eta=True, on_done=results.append, partials=maps)
    qtbot.waitUntil(lambda: len(maps.shown) == 2, timeout=10000)
    assert " / 10, ETA 0:0" in jobs.progress_bar.format() and not run.isEnabled()
    stall_detector.step()
    steps_at_click = log["steps"]
    cpu, wall = click_cost(jobs.cancel_btn)
    print(f"Cancel click: GUI-thread CPU {cpu * 1e3:.2f} ms, wall {wall * 1e3:.2f} ms")
    assert cpu < 0.010 and wall < 0.050  # the click does not wait for the step running (0.3 s)
    assert jobs.status.text() == "cancelling..." and jobs.progress_bar.format() == "cancelling..."
    assert not jobs.cancel_btn.isEnabled() and jobs.busy and not run.isEnabled()
    jobs.cancel()  # a second click (or key) does nothing
    qtbot.waitUntil(lambda: not jobs.busy, timeout=10000)
    # the step that was running ended, its map and the result were dropped; the clean-up ran in
    # the worker, not on the GUI thread
    assert log["steps"] == steps_at_click + 1 and results == []
    assert log["cleanup_thread"] != threading.main_thread().ident
    assert jobs.status.text() == "cancelled" and run.isEnabled() and not jobs.cancel_btn.isEnabled()
    assert all(f <= steps_at_click / N for _, f, _ in maps.shown)
    assert np.isfinite(lyr.data).sum() == 4 * steps_at_click  # as far as it got before the click
    # stopped within one step and its clean-up (wall; the machine is shared)
    print(f"Cancel to the job's end: {jobs.cancel_s[-1]:.3f} s (step {BLOCK_S} s + clean-up {BLOCK_S} s)")
    assert jobs.cancel_s[-1] < 2 * BLOCK_S + 1.0
    # a new job runs to its end and is shown
    log.clear()
    assert jobs.start(_slow_job, log, desc="rows", on_done=results.append, partials=maps)
    qtbot.waitUntil(lambda: not jobs.busy, timeout=10000)
    assert results == ["result"] and np.isfinite(lyr.data).all() and np.nanmax(lyr.data) == N


def _failing_job():
    yield Progress(0, 1, "about to fail")
    raise ZeroDivisionError("planted failure")


def test_a_failing_job_lands_in_the_log_with_its_traceback(qtbot, stall_detector):
    from napari_4dstem.widgets.log import log_entries

    _keep, jobs, run = _dock(qtbot)  # the dock kept: its labels and buttons live with it
    assert jobs.start(_failing_job, desc="fails", on_done=lambda r: None)
    qtbot.waitUntil(lambda: not jobs.busy, timeout=10000)
    last = log_entries()[-1]
    assert "ZeroDivisionError: planted failure" in last and "Traceback" in last
    assert "_failing_job" in last  # the traceback reaches into the job
    assert jobs.status.text() == "ZeroDivisionError: planted failure" and run.isEnabled()


def _fast_job(n: int, step_s: float):
    """A map of n rows filled one row every ``step_s`` (far more often than a screen update)."""
    done = np.zeros((n, 8), bool)
    for k in range(n):
        time.sleep(step_s)
        done[k] = True
        yield Progress(k + 1, n, "rows", partial=PartialMap.of("fast rows", np.full((n, 8), k + 1.0), done))
    return k + 1


def test_fast_steps_are_shown_at_2_to_5_hz(make_napari_viewer, qtbot, stall_detector):
    viewer = make_napari_viewer()
    _keep, jobs, _ = _dock(qtbot)
    maps = PartialMaps(lambda: viewer).for_scan(Calibration())
    with stall_detector.excluded("first layer add"):
        lyr = viewer.add_image(np.zeros((100, 8), np.float32), name="fast rows")
    results = []
    assert jobs.start(_fast_job, 100, 0.02, desc="rows", on_done=results.append, partials=maps)
    qtbot.waitUntil(lambda: not jobs.busy, timeout=30000)
    t = np.array([s[2] for s in maps.shown])
    gaps = np.diff(t)
    rate = (len(t) - 1) / (t[-1] - t[0])
    print(f"{len(t)} updates for 100 steps: {rate:.1f} Hz, gaps {np.round(gaps, 3).tolist()} s")
    assert results == [100] and len(t) < 100 / 4
    assert np.all(gaps >= PartialMaps.MIN_S - 0.01)  # never more than 5 a second
    assert np.median(gaps) <= PartialMaps.MAX_S + 0.1  # about 2 a second at least (a loaded machine)
    assert np.isfinite(lyr.data).sum() >= 8 * 60  # the last one shown: at most ~0.5 s (25 rows) before the end
