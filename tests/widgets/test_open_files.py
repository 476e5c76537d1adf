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


def test_the_binned_preview_is_built_after_the_first_exact_image(
    make_napari_viewer, qtbot, stall_detector, monkeypatch
):
    """Large in-memory data: the first exact image is not queued behind the 4x-binned preview copy
    (which reads the whole dataset); the copy is built after it, and later detector edits show a
    preview first, then the exact image."""
    with stall_detector.excluded("reference"):
        from napari_4dstem.analysis.virtual.detectors import AnnulusDetector
        from napari_4dstem.analysis.virtual.images import virtual_image
        from napari_4dstem.simulation.samples import make_strained_crystal
        from napari_4dstem.widgets import virtual

        s = make_strained_crystal(scan_shape=(16, 16))
        data = np.tile(np.asarray(s.datacube.data, np.float32), (5, 5, 1, 1))[:68, :68]  # 289 MiB
        assert data.nbytes > 256 * 2**20
    monkeypatch.setattr(virtual, "PREVIEW_ABOVE_S", 0.0)  # every exact image counts as slow here
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        viewer.add_image(data, name="big")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    qtbot.waitUntil(lambda: w.last_image is not None, timeout=60000)
    assert w.last_preview is None  # the first image was the exact one
    qtbot.waitUntil(lambda: w._preview is not None, timeout=120000)
    assert w._preview.shape == (68, 68, 32, 32)
    det = AnnulusDetector((64.0, 64.0), 20.0, 50.0)
    w.set_detector(det)
    qtbot.waitUntil(lambda: w.last_preview is not None, timeout=60000)
    qtbot.waitUntil(lambda: w._worker is None and w.last_image.params["detector"]["kind"] == "annulus", timeout=60000)
    with stall_detector.excluded("reference"):
        want = virtual_image(data, det).data
    np.testing.assert_array_equal(w.last_image.data, want)
