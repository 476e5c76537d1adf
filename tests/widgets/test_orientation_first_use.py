"""Orientation mapping's first use never compiles in the dock's job while the plugin's kernel
warm-up runs (#15, UX audit session 14 defect 4: *Check current pattern* took 38 s on a real
int32 file, numba compiling the disk detection's significance test in the job's thread with
the GUI thread starved): the check and the run wait for the warm-up with a message that says
so and a Cancel point every 0.1 s, then run."""

import time

import pytest

from napari_4dstem.widgets import _warmup
from napari_4dstem.widgets.orientation import OrientationWidget

pytestmark = pytest.mark.gui


@pytest.fixture
def running_warmup(monkeypatch):
    """A fresh warm-up state that reads as running (at step 3 of its steps) until released; no
    real warm-up starts (the dtype is already marked done)."""
    import numpy as np

    fresh = _warmup._State()
    fresh.done.update(np.dtype(t).str for t in ("uint16", "float32", "float64", "int32", "uint8"))
    fresh.running["planted"] = object()
    fresh.step = (3, len(_warmup._STEPS))
    monkeypatch.setattr(_warmup, "_state", lambda: fresh)

    def release():
        fresh.running.clear()
        fresh.changed.emit()

    yield fresh, release
    release()


def _dock(make_napari_viewer, stall_detector):
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        viewer.open_sample("napari-4dstem", "polycrystal_au")
    w = OrientationWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.crystal_combo.setCurrentText("Au")
    return viewer, w


@pytest.mark.parametrize("button", ["check_btn", "run_btn"])
def test_orientation_waits_for_the_warm_up_says_so_and_cancels(
    make_napari_viewer, qtbot, stall_detector, running_warmup, monkeypatch, button
):
    import napari_4dstem.pipelines as pipelines

    called = []
    for name in ("iter_acom_pattern", "iter_acom", "iter_plans", "iter_probe_template"):
        real = getattr(pipelines, name)

        def spy(*a, _real=real, _name=name, **k):
            called.append(_name)
            return _real(*a, **k)

        monkeypatch.setattr(pipelines, name, spy)
    _, w = _dock(make_napari_viewer, stall_detector)
    getattr(w, button).click()
    # the bar says what the job waits for, and how far the warm-up is
    qtbot.waitUntil(lambda: "preparing kernels" in w.progress.format(), timeout=10000)
    assert (w.progress.value(), w.progress.maximum()) == (3, len(_warmup._STEPS))
    qtbot.wait(600)  # it keeps waiting while the warm-up runs: no detection, plan or matching
    assert called == [] and w._worker is not None
    t0 = time.perf_counter()
    w.cancel_btn.click()
    qtbot.waitUntil(lambda: w._worker is None, timeout=5000)
    took = time.perf_counter() - t0
    assert w.status.text() == "cancelled" and called == []
    assert took < 1.5, took  # a Cancel point every 0.1 s (1.5 s: a loaded 2-core machine)


def test_orientation_check_runs_once_the_warm_up_ends(make_napari_viewer, qtbot, stall_detector, running_warmup):
    state, release = running_warmup
    _, w = _dock(make_napari_viewer, stall_detector)
    w.check_btn.click()
    qtbot.waitUntil(lambda: "preparing kernels" in w.progress.format(), timeout=10000)
    state.step = (7, len(_warmup._STEPS))
    qtbot.waitUntil(lambda: w.progress.value() == 7, timeout=5000)  # the bar follows the warm-up
    release()
    qtbot.waitUntil(lambda: w._worker is None, timeout=120000)
    iy, ix = w.scan_position()
    assert w.check is not None and (w.check.iy, w.check.ix) == (iy, ix)
    assert w.status.text().startswith(f"pattern ({iy}, {ix}): ")
