"""Files opened from disk (memory-mapped or HDF5, the data napari holds through its proxies) drive
the docks as in-memory samples do (a dock's ``layer.data`` is a napari proxy of the file's array)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("suffix", [".npy", ".h5"])
@pytest.mark.parametrize("dock_first", [True, False])
def test_an_opened_file_gets_its_bf_detector_image_and_presets(
    make_napari_viewer, qtbot, stall_detector, tmp_path, suffix, dock_first
):
    with stall_detector.excluded("reference"):
        from napari_4dstem.analysis.virtual.detectors import DiskDetector
        from napari_4dstem.analysis.virtual.images import virtual_image
        from napari_4dstem.io import save_datacube
        from napari_4dstem.simulation.samples import make_strained_crystal
        from napari_4dstem.widgets.virtual import VirtualImagingWidget

        s = make_strained_crystal(scan_shape=(12, 10))
        path = tmp_path / f"scan{suffix}"
        save_datacube(path, s.datacube)
        data = np.asarray(s.datacube.data)
    viewer = make_napari_viewer()

    def open_file():
        with stall_detector.excluded("first layer add"):
            viewer.open(str(path), plugin="napari-4dstem")

    if not dock_first:
        open_file()
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    assert isinstance(w, VirtualImagingWidget)
    if dock_first:
        open_file()
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None, timeout=30000)
    det = w._last_detector
    assert isinstance(det, DiskDetector)
    assert det.radius_px == pytest.approx(8.0, abs=0.7)  # the sample's bright-field disk
    with stall_detector.excluded("reference"):
        want = virtual_image(data, det).data
    np.testing.assert_array_equal(w.last_image.data, want)
    qtbot.waitUntil(lambda: w.presets_ready, timeout=30000)
