"""The raw-layout form: a raw file with a file header and a header and footer per frame, written
here byte by byte, decodes exactly; a layout that does not fit shows red and cannot be opened."""

from pathlib import Path

import numpy as np
import pytest

from napari_4dstem.widgets.raw_layout import RawLayoutWidget

pytestmark = pytest.mark.gui

DOCK = "Open raw binary file"


def _write_raw(path, frames, *, header=b"", frame_header=b"", frame_footer=b""):
    """``frames`` (n, ky, kx) in their dtype (with its byte order), each record header + pixels + footer."""
    with open(path, "wb") as f:
        f.write(header)
        for fr in frames:
            f.write(frame_header)
            f.write(fr.tobytes())
            f.write(frame_footer)


def _form(w, path, *, header, fh, ff, dtype, endian, det):
    w.set_path(path)
    w.header.setValue(header)
    w.frame_header.setValue(fh)
    w.frame_footer.setValue(ff)
    w.dtype.setCurrentText(dtype)
    w.endian.setCurrentText(endian)
    w.k_rows.setValue(det[0])
    w.k_cols.setValue(det[1])


def test_a_raw_file_with_header_and_footer_decodes_exactly(make_napari_viewer, qtbot, tmp_path, stall_detector):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 60000, size=(3, 4, 5, 6)).astype(">u2")  # big-endian uint16
    path = tmp_path / "scan.bin"
    _write_raw(
        path,
        data.reshape(12, 5, 6),
        header=b"H" * 100,
        frame_header=b"\x01" * 8,
        frame_footer=b"\xff" * 4,
    )
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", DOCK)
    assert isinstance(w, RawLayoutWidget)
    # nothing fits yet (the default 128 x 128 frames): red, Open disabled, no scan shape offered
    w.set_path(path)
    assert not w.fits and not w.open_btn.isEnabled() and w.scan_shape.count() == 0
    assert "#c62828" in w.size_label.styleSheet()
    _form(w, path, header=100, fh=8, ff=4, dtype="uint16", endian="big", det=(5, 6))
    # green: the estimate is the file size; only the factorisations of 12 frames are offered
    assert w.fits and w.open_btn.isEnabled()
    assert "#2e7d32" in w.size_label.styleSheet()
    size = path.stat().st_size
    assert size == 100 + 12 * (8 + 60 + 4)
    assert f"estimated {size:,} B = file size {size:,} B" in w.size_label.text()
    shapes = [w.scan_shape.itemText(i) for i in range(w.scan_shape.count())]
    assert sorted(shapes) == sorted(["3 x 4", "4 x 3", "2 x 6", "6 x 2", "1 x 12", "12 x 1"])
    w.scan_shape.setCurrentText("3 x 4")
    with stall_detector.excluded("first layer add"):
        assert w.open()
        qtbot.waitUntil(lambda: "scan" in viewer.layers, timeout=20000)
    layer = viewer.layers["scan"]
    assert layer.data.shape == (3, 4, 5, 6)
    np.testing.assert_array_equal(np.asarray(layer.data), data.astype(np.uint16))
    assert isinstance(layer.data, np.memmap)  # lazy: a view of the file
    assert "opened scan" in w.status.text()
    # a wrong footer: the estimate misses the file size by 2 B a frame, red, Open disabled
    w.frame_footer.setValue(2)
    assert not w.fits and not w.open_btn.isEnabled()
    assert "#c62828" in w.size_label.styleSheet()
    assert f"file size {size:,} B" in w.size_label.text() and "left over" in w.size_label.text()
    assert w.scan_shape.count() == 0
    assert not w.open()
    assert "does not fit" in w.status.text()
    # little-endian read of the same bytes fits the size but gives byte-swapped values
    w.frame_footer.setValue(4)
    w.endian.setCurrentText("little")
    assert w.fits


def test_axis_order_scan_columns_and_transposed_frames(make_napari_viewer, qtbot, tmp_path, stall_detector):
    rng = np.random.default_rng(4)
    data = rng.normal(size=(2, 3, 4, 5)).astype("<f4")  # (scan_y, scan_x, k_y, k_x)
    # stored down the scan's columns, each frame transposed, no headers
    stored = data.transpose(1, 0, 3, 2).reshape(6, 5, 4)
    path = tmp_path / "cols.raw"
    _write_raw(path, stored)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", DOCK)
    _form(w, path, header=0, fh=0, ff=0, dtype="float32", endian="little", det=(4, 5))
    w.transpose.setChecked(True)
    w.scan_order.setCurrentIndex(1)
    w.scan_shape.setCurrentText("2 x 3")
    assert w.fits
    with stall_detector.excluded("first layer add"):
        assert w.open()
        qtbot.waitUntil(lambda: "cols" in viewer.layers, timeout=20000)
    np.testing.assert_array_equal(np.asarray(viewer.layers["cols"].data), data)


REALDATA = Path(__file__).parents[2].parent / "shared" / "realdata" / "rosettasciio" / "quantumdetector"


def test_a_real_merlin_file_through_the_raw_form(make_napari_viewer, qtbot, stall_detector):
    """A real Merlin .mib is a raw file to the form: 384 header bytes before each 256 x 256 uint8
    frame. Decoded through the form it equals our MIB reader and rsciio's total (3,623,664)."""
    path = REALDATA / "Merlin_navigation4x2_ROI" / "001_4x2_6bit.mib"
    if not path.is_file():
        pytest.skip("real detector files not present (../shared/realdata)")
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", DOCK)
    _form(w, path, header=0, fh=384, ff=0, dtype="uint8", endian="little", det=(256, 256))
    assert w.fits
    assert sorted(w.scan_shape.itemText(i) for i in range(w.scan_shape.count())) == sorted(
        ["2 x 4", "4 x 2", "1 x 8", "8 x 1"]
    )
    w.scan_shape.setCurrentText("2 x 4")
    with stall_detector.excluded("first layer add"):
        assert w.open()
        qtbot.waitUntil(lambda: "001_4x2_6bit" in viewer.layers, timeout=20000)
    got = np.asarray(viewer.layers["001_4x2_6bit"].data)
    with stall_detector.excluded("reference"):
        from napari_4dstem.io import open_datacube

        ref = np.asarray(open_datacube(path).data)
    assert got.shape == (2, 4, 256, 256)
    assert int(got.sum(dtype=np.int64)) == 3_623_664
    np.testing.assert_array_equal(got, ref)
    # one byte less of header a frame: red, and no scan shape offered
    w.frame_header.setValue(383)
    assert not w.fits and w.scan_shape.count() == 0
