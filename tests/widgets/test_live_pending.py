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


def test_a_large_image_being_prepared_is_not_drawn_after_its_dock_closed(
    make_napari_viewer, qtbot, stall_detector, monkeypatch
):
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
    viewer.window.remove_dock_widget(dock)
    qtbot.waitUntil(lambda: w._closed, timeout=5000)  # the dock's deferred deletion closes the widget
    go.set()
    li._prep_runner.wait()
    qtbot.wait(50)
    assert li.name not in rv.layers or rv.layers[li.name].data.shape == (8, 8), "drawn after its dock closed"


def test_another_file_drops_the_large_image_being_prepared(make_napari_viewer, qtbot, stall_detector, monkeypatch):
    viewer = make_napari_viewer()
    _, w, li = _dock(viewer)
    cal = Calibration()
    with stall_detector.excluded("first layer add"):
        li.set_image(np.zeros((8, 8), np.float32), cal)
    rv = li.viewer(create=False)
    go = _slow_prepare(monkeypatch)
    li.set_image(np.ones((512, 512), np.float32), cal)
    w._init_for_layer()  # another file picked (here: none)
    go.set()
    li._prep_runner.wait()
    qtbot.wait(50)
    assert li.name not in rv.layers or rv.layers[li.name].data.shape == (8, 8), "the last file's image drawn"


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
