"""Workspace keys in a real viewer: Space plays a raster over the scan and stops; Ctrl+Shift+S
saves what exists; the keymap dock lists every key."""

import numpy as np
import pytest

from napari_4dstem.widgets._common import scan_position
from napari_4dstem.widgets._keys import KeymapWidget, keymap_rows, raster_order

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(virtual_dock):
    return virtual_dock


def _press(viewer, key, stall_detector):
    name = key.replace("Shift-", "Shift+").replace("Control-", "Ctrl+")
    (fn,) = [f for k, f in viewer.keymap.items() if str(k) == name]
    fn(viewer)
    stall_detector.step()


def test_space_plays_a_raster_in_order_and_stops(widget, qtbot, stall_detector):
    viewer, w = widget
    cube = viewer.layers["strained_crystal"]
    ny, nx = cube.data.shape[:2]
    start = (2, nx - 3)  # the path wraps to the next row at the third step
    w.set_scan_position(*start)
    seen = []
    viewer.dims.events.current_step.connect(lambda e=None: seen.append(scan_position(viewer, cube)))
    w.raster.timer.setInterval(20)
    _press(viewer, "Space", stall_detector)
    assert w.raster.playing
    qtbot.waitUntil(lambda: len(seen) >= 8, timeout=20000)
    _press(viewer, "Space", stall_detector)
    assert not w.raster.playing
    n = len(seen)
    qtbot.wait(200)
    assert len(seen) == n  # stopped: no step after the second Space
    # every step one position further along the raster, scan_x fastest, one event each
    assert seen == raster_order(ny, nx, start)[:n]
    assert seen[:3] == [(2, nx - 2), (2, nx - 1), (3, 0)]
    # the pattern on the canvas is the one at the last position
    np.testing.assert_array_equal(np.asarray(cube._slice.image.raw), np.asarray(cube.data[seen[-1]]))
    # played to the end, it stops at the last position by itself
    w.set_scan_position(ny - 1, nx - 3)
    _press(viewer, "Space", stall_detector)
    qtbot.waitUntil(lambda: not w.raster.playing, timeout=20000)
    assert scan_position(viewer, cube) == (ny - 1, nx - 1) and w.raster.steps == 2


def test_ctrl_shift_s_saves_the_virtual_image_and_the_keymap_dock(widget, qtbot, tmp_path, monkeypatch, stall_detector):
    from qtpy.QtWidgets import QFileDialog

    viewer, w = widget
    target = tmp_path / "vi.h5"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    qtbot.waitUntil(lambda: w.result is not None, timeout=20000)
    # no result in the session: the key saves the virtual image (the Save result... dialog)
    _press(viewer, "Control-Shift-S", stall_detector)
    qtbot.waitUntil(lambda: target.exists() and w.last_saved is not None, timeout=20000)
    from napari_4dstem.io import emd

    with stall_detector.excluded("reference"):
        (img,) = emd.read(target).values()
    np.testing.assert_array_equal(img.data, w.last_image.data)
    # with the Results dock open and a result kept, the same key saves the session
    session = tmp_path / "session.json"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(session), ""))
    viewer.window.add_plugin_dock_widget("napari-4dstem", "Results")
    assert w.keep() is not None
    _press(viewer, "Control-Shift-S", stall_detector)
    qtbot.waitUntil(lambda: session.exists(), timeout=20000)
    import json

    saved = json.loads(session.read_text())
    assert "virtual disk" in json.dumps(saved)
    # the keymap dock lists the dock's keys, Space and the save key
    _, k = viewer.window.add_plugin_dock_widget("napari-4dstem", "Keyboard shortcuts")
    assert isinstance(k, KeymapWidget)
    keys = [k.table.item(i, 0).text() for i in range(k.table.rowCount())]
    assert keys == [key for key, _ in keymap_rows()]
    assert {"Space", "Ctrl+Shift+S", "Shift+W", "[", "Ctrl+O", "Ctrl+S"} <= set(keys)


def test_export_raw_tiff_npy_fallback_and_png_as_shown(widget, qtbot, tmp_path, monkeypatch, stall_detector):
    import sys

    _, w = widget
    ex = w.export
    img = w.last_image.data
    # raw: float32 TIFF, the values exactly
    tifffile = pytest.importorskip("tifffile")
    assert ex.export_raw(tmp_path / "vi.tif")
    qtbot.waitUntil(lambda: ex.last_written is not None and not ex.files.busy, timeout=20000)
    with stall_detector.excluded("reference"):
        back = tifffile.imread(tmp_path / "vi.tif")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, img.astype(np.float32))
    assert "vi.tif" in w.status.text()
    # without tifffile: .npy beside the asked name, and the status line says why
    monkeypatch.setitem(sys.modules, "tifffile", None)
    ex.last_written = None
    assert ex.export_raw(tmp_path / "vi2.tif")
    qtbot.waitUntil(lambda: ex.last_written is not None and not ex.files.busy, timeout=20000)
    assert ex.last_written == tmp_path / "vi2.npy"
    np.testing.assert_array_equal(np.load(tmp_path / "vi2.npy"), img.astype(np.float32))
    assert "tifffile is not installed" in w.status.text()
    # PNG as shown: Sqrt scale and the 1-99 % range, gray colormap -> each pixel's grey level
    w.realspace.scale_combo.setCurrentText("Sqrt")
    w.realspace.range_combo.setCurrentText("1-99 %")
    lo, hi = w.realspace.displayed_clim
    ex.last_written = None
    assert ex.export_png(tmp_path / "vi.png")
    qtbot.waitUntil(lambda: ex.last_written is not None and not ex.files.busy, timeout=20000)
    from matplotlib.image import imread

    with stall_detector.excluded("reference"):
        png = imread(tmp_path / "vi.png")  # float 0..1, RGBA
        shown = np.sqrt(img.astype(np.float32) - np.nanmin(img.astype(np.float32)))
        expect = np.round(np.clip((shown.astype(np.float64) - lo) / (hi - lo), 0, 1) * 255)
    assert png.shape == (*img.shape, 4)
    got = np.round(png[..., 0] * 255)
    assert np.abs(got - expect).max() <= 1  # float32 display values: at most one grey level off
    np.testing.assert_array_equal(png[..., 0], png[..., 2])  # grey
    assert (got == 255).sum() >= 1 and (got == 0).sum() >= 1  # the range clips both ends


def test_export_the_datacube_after_a_warning_with_its_size(widget, qtbot, tmp_path, stall_detector):
    viewer, w = widget
    ex = w.export
    cube = viewer.layers["strained_crystal"]
    asked = []
    ex.confirm = lambda text: asked.append(text) or False  # the user says no
    assert not ex.export_datacube(tmp_path / "cube.h5")
    assert "GiB" in asked[0] and "every raw count" in asked[0] and "(32, 32, 128, 128)" in asked[0]
    assert not (tmp_path / "cube.h5").exists() and w.status.text() == "datacube not exported"
    ex.confirm = lambda text: True
    assert ex.export_datacube(tmp_path / "cube.h5")
    qtbot.waitUntil(lambda: ex.last_written is not None and not ex.files.busy, timeout=30000)
    from napari_4dstem.io import open_datacube

    with stall_detector.excluded("reference"):
        back = open_datacube(tmp_path / "cube.h5")
        np.testing.assert_array_equal(np.asarray(back.data), np.asarray(cube.data))
    # the calibration goes with it (EMD): the k pixel size of the sample
    assert back.calibration.k_pixel_size == pytest.approx(w.datacube()[1].k_pixel_size)
    assert "wrote the datacube" in w.status.text()


def test_a_typed_plus_grows_the_detector_and_the_keymap_lists_it(widget, qtbot, stall_detector):
    """UX audit, session 12: "=" and "Shift-=" were bound, but a typed + (Qt's Key_Plus: the
    keypad's, a layout's + key, Shift and = on a US keyboard) reached napari as a key app_model
    cannot name and grew nothing. Real Qt key events on napari's canvas here."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    viewer, w = widget
    canvas = viewer.window._qt_viewer.canvas.native

    def settled():
        qtbot.waitUntil(lambda: w._worker is None and w._pending is None, timeout=20000)

    def key(k, mods=Qt.KeyboardModifier.NoModifier):
        QTest.keyClick(canvas, k, mods)
        stall_detector.step()

    r0 = w._last_detector.radius_px
    key(Qt.Key.Key_Plus)  # the keypad's or a layout's + key
    settled()
    assert w._last_detector.radius_px == pytest.approx(r0 + 1)
    key(Qt.Key.Key_Plus, Qt.KeyboardModifier.ShiftModifier)  # Shift and = on a US keyboard: as Shift-=
    settled()
    assert w._last_detector.radius_px == pytest.approx(r0 + 6)
    key(Qt.Key.Key_Underscore, Qt.KeyboardModifier.ShiftModifier)  # Shift and -: as Shift--
    settled()
    assert w._last_detector.radius_px == pytest.approx(r0 + 1)
    key(Qt.Key.Key_Equal)  # napari's own binding still works beside it
    settled()
    assert w._last_detector.radius_px == pytest.approx(r0 + 2)
    assert "+" in dict(keymap_rows())
    # the closed dock's handler goes with it
    w.close()
    key(Qt.Key.Key_Plus)
    qtbot.wait(100)
    assert w._last_detector.radius_px == pytest.approx(r0 + 2)
