"""The detector outline waits for the warm-up's napari Shapes step (#15, UX point 1).

napari triangulates Shapes with numba, and numba compiles (or loads from its cache) only under its
process-wide compiler lock. On a fresh install the kernels' warm-up worker compiles napari's Shapes
functions first; a Shapes layer made on the GUI thread meanwhile waited on that lock: the UX audit
of session 12 measured a 36 s freeze when the Virtual imaging dock opened with a cold numba cache
(the tests' stall detector counts GUI CPU time, not waits on a lock, so it never saw it). The dock
now draws its detector outline only once that step is done; the fields show the detector at once.
Here the step is held on an event, as a long compile would hold it.
"""

from __future__ import annotations

import threading

import pytest

from napari_4dstem.widgets.virtual import DETECTOR_LAYER

pytestmark = pytest.mark.gui


@pytest.fixture
def held_shapes_step(monkeypatch):
    """A fresh warm-up state whose napari Shapes step waits for the returned event."""
    from napari_4dstem.widgets import _warmup

    fresh = _warmup._State()
    monkeypatch.setattr(_warmup, "_state", lambda: fresh)
    release = threading.Event()
    entered = threading.Event()
    real = _warmup._napari_shapes

    def held(cube):
        entered.set()
        release.wait(30)
        real(cube)

    held.__name__ = real.__name__
    steps = tuple(held if s is real else s for s in _warmup._STEPS)
    monkeypatch.setattr(_warmup, "_STEPS", steps)
    monkeypatch.setattr(_warmup, "_napari_shapes", held)
    yield fresh, entered, release
    release.set()


def test_the_detector_outline_waits_for_the_warm_up_of_napari_shapes(
    make_napari_viewer, qtbot, stall_detector, held_shapes_step
):
    state, entered, release = held_shapes_step
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        viewer.open_sample("napari-4dstem", "strained_crystal")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    assert entered.wait(20), "the warm-up did not start when the dock opened"
    # the first virtual image comes (it needs no Shapes), the detector is in the fields ...
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None, timeout=20000)
    assert w.r_out.value() > 0
    qtbot.wait(200)
    # ... and no Shapes layer was made on the GUI thread while napari's Shapes compile held the lock
    assert DETECTOR_LAYER not in viewer.layers
    assert not state.shapes_ready
    release.set()
    qtbot.waitUntil(lambda: DETECTOR_LAYER in viewer.layers, timeout=20000)
    layer = viewer.layers[DETECTOR_LAYER]
    qtbot.waitUntil(lambda: len(layer.data) > 0, timeout=5000)
    assert state.shapes_ready
    assert not state.waiting  # the one-shot callback is gone


def test_after_shapes_warm_runs_at_once_without_a_warm_up_and_once_per_owner(qtbot, monkeypatch):
    from qtpy.QtWidgets import QWidget

    from napari_4dstem.widgets import _warmup

    fresh = _warmup._State()
    monkeypatch.setattr(_warmup, "_state", lambda: fresh)
    calls = []
    owner = QWidget()
    _warmup.after_shapes_warm(owner, lambda: calls.append("now"))
    assert calls == ["now"]  # nothing warming: at once

    fresh.running["<u2"] = object()  # a warm-up running, its Shapes step not done

    def draw():
        calls.append("later")

    _warmup.after_shapes_warm(owner, draw)
    _warmup.after_shapes_warm(owner, draw)  # asked twice: called once
    fresh.changed.emit()  # another step: still pending
    assert calls == ["now"]
    fresh.shapes_ready = True
    fresh.changed.emit()
    fresh.changed.emit()
    assert calls == ["now", "later"]
    gone = QWidget()
    fresh.shapes_ready = False
    _warmup.after_shapes_warm(gone, draw)
    gone.deleteLater()
    qtbot.waitUntil(lambda: _warmup_is_deleted(gone), timeout=2000)
    fresh.shapes_ready = True
    fresh.changed.emit()
    assert calls == ["now", "later"]  # a deleted owner's callback is dropped


def _warmup_is_deleted(obj) -> bool:
    from napari_4dstem.widgets._common import is_deleted

    return is_deleted(obj)


def test_a_radius_typed_and_entered_stays(virtual_dock, qtbot):
    """Typing a radius and pressing Return (real key events) sets that radius. The spin box passes
    Return on to its parents; napari's main window handed it to the canvas, whose active Shapes
    layer (the detector) ran "finish drawing", and the dock's shapes handler wrote the old radius
    back (UX audit, session 12)."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    viewer, w = virtual_dock
    assert viewer.layers.selection.active is viewer.layers[DETECTOR_LAYER]  # as the dock leaves it
    old = w.r_out.value()
    new = 12.0 if abs(old - 12.0) > 1 else 9.0
    edit = w.r_out.lineEdit()
    w.r_out.setFocus()
    edit.selectAll()
    QTest.keyClicks(edit, f"{new:g}")
    QTest.keyClick(edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: w._worker is None and w._pending is None, timeout=20000)
    qtbot.wait(300)
    assert w.r_out.value() == new
    assert w._last_detector.radius_px == pytest.approx(new)


def test_the_dock_keys_work_on_the_detector_layer_napari_leaves_active(virtual_dock, qtbot, stall_detector):
    """Keys as napari dispatches a key press on the canvas (its keymap handler, not the dock's
    functions): with the detector Shapes layer active, D moved napari to its direct-select mode and
    R to rectangle drawing; now they move the detector and reset (UX audit, session 12)."""
    viewer, w = virtual_dock
    layer = viewer.layers[DETECTOR_LAYER]
    assert viewer.layers.selection.active is layer
    handler = viewer.window._qt_viewer.canvas._key_map_handler

    def press(key):
        handler.press_key(key)
        handler.release_key(key)
        stall_detector.step()

    def settled():
        qtbot.waitUntil(lambda: w._worker is None and w._pending is None, timeout=20000)

    mode = layer.mode
    det0 = w._last_detector
    press("D")
    press("S")
    settled()
    assert w._last_detector.center_px == pytest.approx((det0.center_px[0] + 1, det0.center_px[1] + 1))
    assert layer.mode == mode  # napari's Shapes modes untouched
    press("R")
    settled()
    assert layer.mode == mode
    assert w._last_detector.center_px == pytest.approx(det0.center_px, abs=0.6)
    # another Shapes layer keeps napari's own keys
    with stall_detector.excluded("first layer add"):
        other = viewer.add_shapes(name="mine")
    assert viewer.layers.selection.active is other
    press("R")
    assert other.mode == "add_rectangle"


# -- review of the session's merged change ---------------------------------------------------


def test_a_closed_dock_leaves_the_detector_layer_napari_keys_and_a_new_dock_gets_its_own(
    virtual_dock, qtbot, stall_detector
):
    """Closing the dock gave the layer no keys back (napari keeps the closed widget: its handlers
    still moved its detector) and a new dock found the layer and never bound its own."""
    viewer, w = virtual_dock
    layer = viewer.layers[DETECTOR_LAYER]
    handler = viewer.window._qt_viewer.canvas._key_map_handler

    def press(key):
        handler.press_key(key)
        handler.release_key(key)
        stall_detector.step()

    assert {str(k) for k in layer.keymap} >= {"D", "R"}
    viewer.window.remove_dock_widget(w.parentWidget() if w.parentWidget() is not None else w)
    qtbot.waitUntil(lambda: w._closed, timeout=5000)
    assert not {str(k) for k in layer.keymap} & {"D", "R", "W"}  # napari's own Shapes keys again
    old = w._current_detector()
    viewer.layers.selection.active = layer
    press("D")
    qtbot.wait(100)
    assert w._current_detector() is old
    _, w2 = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    qtbot.waitUntil(lambda: w2.last_image is not None and w2._worker is None, timeout=20000)
    qtbot.waitUntil(lambda: w2._shapes_due is None, timeout=5000)  # its outline drawn: the layer's keys its own
    assert {str(k) for k in layer.keymap} >= {"D", "R"}
    from napari_4dstem.widgets.virtual import _LAYER_KEYS, _unwrapped

    assert _LAYER_KEYS[_unwrapped(layer)] is w2  # the new dock's keys, not the closed one's
    assert w._current_detector() is old  # the closed dock moved nothing


def test_a_dock_closed_before_the_warm_up_draws_no_outline(make_napari_viewer, qtbot, stall_detector, held_shapes_step):
    state, entered, release = held_shapes_step
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        viewer.open_sample("napari-4dstem", "strained_crystal")
    dw, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    assert entered.wait(20)
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None, timeout=20000)
    viewer.window.remove_dock_widget(dw)
    release.set()
    qtbot.waitUntil(lambda: state.shapes_ready, timeout=20000)
    qtbot.wait(200)
    assert DETECTOR_LAYER not in viewer.layers


def test_cancel_of_the_opening_exact_job_does_not_start_the_presets_pass(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """On a large lazy file the presets' whole-file pass waits for the exact BF image; Cancel of
    that job started the pass (a whole-file read right after the user said stop)."""
    import time

    import numpy as np

    from napari_4dstem.analysis.virtual import images
    from napari_4dstem.engine import chunks, driver
    from napari_4dstem.widgets import virtual

    yy, xx = np.mgrid[0:64, 0:64]
    disk = (((yy - 32) ** 2 + (xx - 32) ** 2) < 100).astype(np.uint16)
    path = tmp_path / "scan.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(64, 64, 64, 64))
    mm[:] = (100 + (yy % 7)).astype(np.uint16)[:, :, None, None] * disk + 1
    mm.flush()
    del mm
    monkeypatch.setattr(virtual, "LAZY_PROGRESS_BYTES", 2**20)
    monkeypatch.setattr(driver, "PARTIAL_EVERY_S", 0.0)
    monkeypatch.setattr(driver, "_TARGET_BLOCK_BYTES", 2**20)
    monkeypatch.setattr(chunks, "_TARGET_BLOCK_BYTES", 2**20)
    real = images._multi_kernel

    def slow(block, **kwargs):
        if len(kwargs["specs"]) == 1 and block.strides[1] == 64 * 64 * 2:
            time.sleep(0.1)  # the BF job's blocks, slowed so Cancel lands mid-job
        return real(block, **kwargs)

    monkeypatch.setattr(images, "_multi_kernel", slow)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    with stall_detector.excluded("first layer add"):
        viewer.open(str(path), plugin="napari-4dstem")
    qtbot.waitUntil(
        lambda: w._worker is not None and w._presets_after is not None and len(w.filled_in) > 0, timeout=60000
    )
    assert w._preset_worker is None
    w.cancel()
    qtbot.waitUntil(lambda: w._worker is None, timeout=30000)
    qtbot.wait(200)
    assert w._preset_worker is None and w._presets_after is None


# -- UX audit defect 15: smaller items -------------------------------------------------------


def test_closing_the_dataset_removes_the_layers_that_only_made_sense_with_it(virtual_dock, qtbot, stall_detector):
    """The detector outline, an extra detector and their images stayed on both canvases after
    the dataset was closed (UX audit, session 12, defect 15); a new dataset gets its own again."""
    from napari_4dstem.widgets._results import results_viewer

    viewer, w = virtual_dock
    name = w.extras.add(w._last_detector)
    rv = results_viewer(viewer, create=False)
    qtbot.waitUntil(lambda: f"virtual: {name}" in rv.layers, timeout=20000)
    assert {DETECTOR_LAYER, name} <= {lyr.name for lyr in viewer.layers}
    assert "virtual image" in rv.layers
    viewer.layers.remove("strained_crystal")
    stall_detector.step()
    qtbot.waitUntil(lambda: DETECTOR_LAYER not in viewer.layers, timeout=5000)
    qtbot.wait(100)
    assert not {DETECTOR_LAYER, name} & {lyr.name for lyr in viewer.layers}
    assert not {"virtual image", f"virtual: {name}"} & {lyr.name for lyr in rv.layers}
    assert "probe" in viewer.layers  # the sample's own probe image is the user's, not derived
    with stall_detector.excluded("first layer add"):
        viewer.open_sample("napari-4dstem", "strained_crystal")
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None, timeout=20000)
    qtbot.waitUntil(lambda: DETECTOR_LAYER in viewer.layers and "virtual image" in rv.layers, timeout=20000)


def test_uncalibrated_data_shows_each_pixel_field_once(make_napari_viewer, qtbot, stall_detector):
    """On data without a detector calibration the form showed the calibrated rows labelled in
    px too: "inner radius [px]" twice, "outer radius [px]" twice (UX audit, defect 15)."""
    import numpy as np

    viewer = make_napari_viewer()
    rng = np.random.default_rng(5)
    with stall_detector.excluded("first layer add"):
        viewer.add_image(rng.random((8, 8, 32, 32), dtype=np.float32), name="plain")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None, timeout=20000)
    form = w._form
    labels = []
    for i in range(form.rowCount()):
        item = form.itemAt(i, form.ItemRole.LabelRole)
        field = form.itemAt(i, form.ItemRole.FieldRole)
        if item is None or item.widget() is None or field is None or field.widget() is None:
            continue
        if form.isRowVisible(i):
            labels.append(item.widget().text())
    px = [t for t in labels if "[px" in t]
    assert px, labels
    assert len(px) == len(set(px)), f"pixel fields labelled twice: {labels}"
    assert not any(sb.isVisibleTo(w) for sb in (w.r_in_cal, w.r_out_cal, w.cy_cal, w.cx_cal))
