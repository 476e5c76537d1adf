"""Closing a dock through napari (its title bar's close button, ``remove_dock_widget``) cleans up
(issue #15): napari unparents the widget and deletes its QDockWidget, never calling the widget's
``closeEvent``. Before, only the Virtual imaging dock hung its clean-up on the dock's end; every
other dock kept its jobs running and its handlers on the viewer's events (the Bragg dock ran its
live disk detection again at each scan step, the Orientation dock followed ``pattern_changed``).

The checks here do not use the plugin's own clean-up code: they read napari's and psygnal's
callback lists and the key maps directly, and a job is a planted generator that records its end.
"""

from __future__ import annotations

import threading
import time

import pytest
from qtpy.QtCore import QObject, QTimer

pytestmark = pytest.mark.gui

# dock name -> the attribute of its JobRunner (None: a dock without jobs)
DOCKS = {
    "Virtual imaging": "jobs",
    "Bragg disks and strain": "jobs",
    "Calibration and DPC": "jobs",
    "Orientation mapping": "jobs",
    "Phase retrieval": "jobs",
    "Classification": "jobs",
    "NN disk detection": "jobs",
    "Simulation and training data": "sim_jobs",
    "Results": "jobs",
    "Result pane": None,
    "Series, compare and watch": None,
    "Scan shape": None,
    "Log": None,
    "Keyboard shortcuts": None,
}


def _ours(obj, widget) -> bool:
    """``obj`` is the widget or a Qt object inside it."""
    if obj is widget:
        return True
    if isinstance(obj, QObject):
        try:
            p = obj.parent()
        except RuntimeError:
            return False
        while p is not None:
            if p is widget:
                return True
            p = p.parent()
    return False


def _holds(cb, widget) -> bool:
    """Whether a callback acts for ``widget``: napari's weak ``(object, name)`` pair, a bound
    method, or a function whose closure holds the widget (also one function down)."""
    if isinstance(cb, tuple):
        return _ours(cb[0](), widget)
    if _ours(getattr(cb, "__self__", None), widget):
        return True
    for cell in getattr(cb, "__closure__", None) or ():
        try:
            v = cell.cell_contents
        except ValueError:
            continue
        if _ours(v, widget) or _ours(getattr(v, "__self__", None), widget):
            return True
        for inner in getattr(v, "__closure__", None) or ():
            try:
                if _ours(inner.cell_contents, widget):
                    return True
            except ValueError:
                pass
    return False


def _left_behind(viewer, widget) -> list[str]:
    from napari_4dstem.plugin_api import events

    base = getattr(viewer, "__wrapped__", viewer)
    left = []
    groups = {"viewer": base.events, "layers": base.layers.events, "dims": base.dims.events}
    groups.update({f"layer {lyr.name!r}": lyr.events for lyr in base.layers})
    for gname, group in groups.items():
        for ename, em in group.emitters.items():
            left += [f"{gname}.{ename}" for cb in em.callbacks if _holds(cb, widget)]
    ev = events(base)
    for name in ("pattern_changed", "datacube_changed", "calibration_changed", "virtual_image_changed"):
        for slot in getattr(ev, name)._slots:
            if _holds(slot.dereference(), widget):
                left.append(f"plugin event {name}")
    for holder in [base, *base.layers]:
        left += [
            f"key {k} of {getattr(holder, 'name', 'viewer')}" for k, f in holder.keymap.items() if _holds(f, widget)
        ]
        left += [
            f"mouse drag of {getattr(holder, 'name', 'viewer')}"
            for f in holder.mouse_drag_callbacks
            if _holds(f, widget)
        ]
    return left


def _planted_job(ended: threading.Event, steps: list):
    from napari_4dstem.engine.jobs import Progress

    try:
        for i in range(100000):
            time.sleep(0.02)
            steps.append(i)
            yield Progress(i, 100000, "planted")
        return None
    finally:
        ended.set()


@pytest.mark.parametrize("name", list(DOCKS))
def test_closing_a_dock_through_napari_stops_its_job_and_drops_its_handlers(
    name, make_napari_viewer, qtbot, stall_detector
):
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        viewer.open_sample("napari-4dstem", "strained_crystal")
    dock, w = viewer.window.add_plugin_dock_widget("napari-4dstem", name)
    qtbot.wait(300)
    if name == "Virtual imaging":
        qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None, timeout=30000)
    ended, steps = threading.Event(), []
    runner = getattr(w, DOCKS[name]) if DOCKS[name] else None
    if runner is not None:
        assert runner.start(_planted_job, ended, steps, desc="planted", on_done=lambda r: None)
        qtbot.waitUntil(lambda: len(steps) >= 2, timeout=10000)
    viewer.window.remove_dock_widget(dock)
    qtbot.wait(200)  # the dock's deferred deletion
    if runner is not None:
        assert ended.wait(5), f"{name}: its job still runs after napari closed the dock"
        qtbot.waitUntil(lambda: runner.worker is None, timeout=5000)
    left = _left_behind(viewer, w)
    assert not left, f"{name}: handlers left on the viewer after napari closed it: {left}"
    assert not [t for t in w.findChildren(QTimer) if t.isActive()], f"{name}: a timer of the dock still runs"


def test_the_bragg_dock_closed_through_napari_no_longer_detects_at_each_scan_step(
    make_napari_viewer, qtbot, stall_detector
):
    """What a user saw: after closing the Bragg dock, stepping the scan still ran its live disk
    detection (a worker per step) and drew its peaks on the pattern."""
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        viewer.open_sample("napari-4dstem", "strained_crystal")
    dock, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Bragg disks and strain")
    calls = []
    w.detect_current = lambda *a, **k: calls.append(a)  # napari looks the method up by name at each event
    w.template = object()  # live detection on: it runs at each scan step
    viewer.dims.set_current_step(0, 3)
    qtbot.wait(50)
    assert calls, "the open dock detects at a scan step"
    calls.clear()
    viewer.window.remove_dock_widget(dock)
    qtbot.wait(200)
    viewer.dims.set_current_step(0, 5)
    viewer.dims.set_current_step(1, 4)
    qtbot.wait(100)
    assert not calls, "the closed dock still ran its live detection at a scan step"
