"""UX audit (#15, defect 7): a step of a dock's progress bar repainted napari's main window twice
(``QProgressBar.setValue`` repaints at once, ``setFormat`` queues an update): each repaint composes
the window with its OpenGL canvases, 0.9-2.5 s wall gaps per block of a lazy file under load. The
bars' updates are merged into one queued update a step and held to at most 5 a second, the last
step shown at once; a text change lays nothing out (no ``LayoutRequest`` of the main window)."""

from __future__ import annotations

import time

import pytest
from qtpy.QtCore import QEvent, QObject

from napari_4dstem.engine.jobs import Progress

pytestmark = pytest.mark.gui

STEPS = 20


class _Count(QObject):
    """Counts the main window's ``UpdateRequest`` (a repaint of the window) and ``LayoutRequest``."""

    def __init__(self):
        super().__init__()
        self.update = self.layout = 0

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.UpdateRequest:
            self.update += 1
        elif event.type() == QEvent.Type.LayoutRequest:
            self.layout += 1
        return False


def _steps(qtbot, qw, feed, bar, want_text):
    """Feed ``STEPS`` steps, one an event-loop turn, and count what the main window got."""
    count = _Count()
    qw.installEventFilter(count)
    try:
        for _ in range(20):  # the window idle: a dock just opened lays the window out a while
            count.update = count.layout = 0
            qtbot.wait(250)
            if not count.layout and not count.update:
                break
        count.update = count.layout = 0
        t0 = time.perf_counter()
        for i in range(1, STEPS + 1):
            feed(Progress(i, STEPS, "step"))
            qtbot.wait(5)
        elapsed = time.perf_counter() - t0
        qtbot.wait(300)
    finally:
        qw.removeEventFilter(count)
    assert bar.value() == STEPS and bar.format() == want_text  # the last step is shown
    assert count.layout == 0, count.layout
    # at most 5 repaints a second (and the first and last steps), not two a step (40 before)
    assert count.update <= 5 * elapsed + 2 and count.update < STEPS, (count.update, elapsed)
    print(f"main window: {count.update} UpdateRequest, {count.layout} LayoutRequest in {elapsed:.2f} s")
    return count


def test_a_progress_step_repaints_the_main_window_at_most_5_times_a_second(make_napari_viewer, qtbot, stall_detector):
    viewer = make_napari_viewer(show=True)
    qw = viewer.window._qt_window
    with stall_detector.excluded("first layer add"):
        viewer.open_sample("napari-4dstem", "strained_crystal")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None and w._pending is None, timeout=60000)
    qtbot.waitUntil(lambda: w.presets_ready and w._preset_worker is None, timeout=60000)  # the dock idle
    # the live image's steps (``_on_progress`` of a running job, no partial image: the bar only)
    w._worker = running = object()
    try:
        w.progress.setVisible(True)
        _steps(qtbot, qw, w._on_progress, w.progress, f"virtual image: {STEPS} / {STEPS} blocks")
    finally:
        if w._worker is running:
            w._worker = None
    # a JobRunner's bar (Bragg, Classification, NN, Orientation, Phase, Simulation)
    _, b = viewer.window.add_plugin_dock_widget("napari-4dstem", "Bragg disks and strain")
    b.progress.setVisible(True)
    stall_detector.step()
    _steps(qtbot, qw, b.jobs._on_progress, b.progress, "step: %p%")
