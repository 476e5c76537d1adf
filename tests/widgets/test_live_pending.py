"""A large live image still being prepared in the Real space dock's worker (``LiveImage``,
``PREPARE_ASYNC_PX`` pixels or more) is never drawn after its dock closed, and a display change
meanwhile draws neither its unfilled rows nor its transform on the GUI thread (review mends,
session 13). Each failed on the code before its fix."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_4dstem.data import Calibration
from napari_4dstem.widgets import _realspace

pytestmark = pytest.mark.gui


def _slow_prepare(monkeypatch):
    """The worker's preparation held until ``go`` is set (the GUI thread is free meanwhile)."""
    go = threading.Event()
    prepare = _realspace._prepare_for

    def slow(*args, **kwargs):
        go.wait(20)
        return prepare(*args, **kwargs)

    monkeypatch.setattr(_realspace, "_prepare_for", slow)
    return go


def _dock(viewer):
    dock, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    return dock, w, w.realspace


def _close_the_dock(viewer, dock, w, qtbot):
    viewer.window.remove_dock_widget(dock)
    qtbot.waitUntil(lambda: w._closed, timeout=5000)  # the dock's deferred deletion closes the widget


def _pick_another_file(viewer, dock, w, qtbot):
    w._init_for_layer()  # another file picked (here: none)


@pytest.mark.parametrize("drop", [_close_the_dock, _pick_another_file], ids=["dock_closed", "another_file"])
def test_a_large_image_being_prepared_is_not_drawn_once_dropped(
    make_napari_viewer, qtbot, stall_detector, monkeypatch, drop
):
    """Its dock closed, or another file picked, while the image is prepared: it is never drawn."""
    viewer = make_napari_viewer()
    dock, w, li = _dock(viewer)
    cal = Calibration()
    small = np.arange(64, dtype=np.float32).reshape(8, 8)
    with stall_detector.excluded("first layer add"):
        li.set_image(small, cal)
    rv = li.viewer(create=False)
    assert rv.layers[li.name].data.shape == (8, 8)
    go = _slow_prepare(monkeypatch)
    li.set_image(np.ones((512, 512), np.float32), cal)
    assert li.preparing
    drop(viewer, dock, w, qtbot)
    go.set()
    li._prep_runner.wait()
    qtbot.wait(50)
    assert li.name not in rv.layers or rv.layers[li.name].data.shape == (8, 8), f"drawn after {drop.__name__}"


def test_a_scale_change_while_filling_in_draws_no_unfilled_rows(make_napari_viewer, qtbot, stall_detector, monkeypatch):
    viewer = make_napari_viewer()
    _, _, li = _dock(viewer)
    cal = Calibration()
    with stall_detector.excluded("first layer add"):
        li.set_image(np.full((8, 8), 2.0, np.float32), cal)
    rv = li.viewer(create=False)
    rng = np.random.default_rng(7)
    under = rng.uniform(1.0, 10.0, (512, 512)).astype(np.float32)  # the preview
    img = rng.uniform(20.0, 30.0, (512, 512)).astype(np.float32)
    img[300:] = np.nan  # the rows still to come
    want = np.where(np.isnan(img), under, img)
    go = _slow_prepare(monkeypatch)
    li.set_image(img, cal, under=under)
    drawn = []
    rv.layers[li.name].events.data.connect(lambda e: drawn.append(np.asarray(rv.layers[li.name].data).copy()))
    li.scale_combo.setCurrentText("Log")  # at once, while the step is prepared
    assert not any(np.isnan(d).any() for d in drawn), "the unfilled rows were drawn"
    go.set()
    qtbot.waitUntil(lambda: not li.preparing, timeout=30000)
    qtbot.wait(50)
    layer = rv.layers[li.name]
    assert not any(np.isnan(d).any() for d in drawn), "the unfilled rows were drawn"
    np.testing.assert_allclose(layer.data, _realspace.display_transform(want, "Log"), rtol=1e-5)
    np.testing.assert_array_equal(li.shown_raw, want)
