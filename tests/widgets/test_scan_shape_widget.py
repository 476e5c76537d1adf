import numpy as np
import pytest

from napari_4dstem.widgets.scan_shape import ScanShapeWidget

pytestmark = pytest.mark.gui


def test_reshape_a_one_line_scan(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    a = np.arange(1 * 12 * 5 * 6, dtype=np.uint16).reshape(1, 12, 5, 6)
    np.save(tmp_path / "line.npy", a)
    (layer,) = viewer.open(str(tmp_path / "line.npy"), plugin="napari-4dstem")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Scan shape")
    assert isinstance(w, ScanShapeWidget)
    assert w.count.text().startswith("12 (now 1 x 12)")
    assert [w.shapes.itemText(i) for i in range(3)] == ["3 x 4", "4 x 3", "2 x 6"]
    w.apply_btn.click()
    assert layer.data.shape == (3, 4, 5, 6)
    np.testing.assert_array_equal(np.asarray(layer.data[2, 1]), a[0, 9])
    assert w.status.text() == "scan shape is now 3 x 4"
    w.apply((2, 5))
    assert "holds 10 patterns, the data has 12" in w.status.text()
    assert layer.data.shape == (3, 4, 5, 6)


def test_opening_a_truncated_file_tells_why(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    np.save(tmp_path / "full.npy", np.zeros((2, 3, 4, 5), np.float32))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "full.npy").read_bytes()[:-9])
    with pytest.raises(Exception, match="cut.npy: truncated"):
        viewer.open(str(tmp_path / "cut.npy"), plugin="napari-4dstem")
    assert len(viewer.layers) == 0
