"""Opening the Result pane (UX points 3 and 15; #15, the GUI thread never blocks): its canvas is
made without napari binding every shortcut again, and napari's shortcuts still work on it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui


def test_opening_the_result_pane_binds_no_shortcut_again_and_its_canvas_keeps_napari_keys(
    make_napari_viewer, qtbot, stall_detector
):
    """napari's ``QtViewer`` rebinds all its shortcuts when it is made; each emits
    ``shortcut_changed`` and every welcome widget rebuilt its shortcut table (176 events, 528
    refreshes, 0.24 s of GUI CPU per canvas on the old code). The bindings stay as they were, and
    napari's reset-view key (Ctrl+R) still fits the pane's own camera."""
    from napari.components.viewer_model import ViewerModel
    from napari.utils.action_manager import action_manager
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    main = make_napari_viewer()
    shortcuts = {k: list(v) for k, v in action_manager._shortcuts.items()}
    keymap = dict(ViewerModel.class_keymap)
    emitted = []

    def on_change(event):
        emitted.append(event.name)

    action_manager.events.shortcut_changed.connect(on_change)
    try:
        _, p = main.window.add_plugin_dock_widget("napari-4dstem", "Result pane")
    finally:
        action_manager.events.shortcut_changed.disconnect(on_change)
    assert emitted == [], f"{len(emitted)} shortcut_changed events, e.g. {emitted[:3]}"
    assert {k: list(v) for k, v in action_manager._shortcuts.items()} == shortcuts
    assert dict(ViewerModel.class_keymap) == keymap

    # napari's keys on the pane's canvas: Ctrl+R fits its camera again after a zoom
    import numpy as np

    with stall_detector.excluded("first layer add"):
        p.model.add_image(np.arange(64 * 80, dtype=np.float32).reshape(64, 80), name="probe")
    from napari_4dstem.widgets._multiview import _camera

    cam = _camera(p.model)
    fitted = float(cam.zoom)
    cam.zoom = fitted * 7.0
    QTest.keyClick(p.canvas.qt_viewer.canvas.native, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    stall_detector.step()
    qtbot.waitUntil(lambda: float(cam.zoom) == pytest.approx(fitted, rel=0.05), timeout=5000)
