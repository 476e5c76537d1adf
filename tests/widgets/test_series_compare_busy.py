"""#15 (UX audit session 13, defect 8): *Compare grid* showed busy (Cancel enabled) 1.5-1.9 s after
the click at load 17: the click first made the Compare canvas (a second napari canvas). Busy and the
job now come first; the canvas is made on a later event-loop turn."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem.analysis.virtual.detectors import DiskDetector

pytestmark = pytest.mark.gui


def test_compare_grid_is_busy_before_its_canvas_is_made(make_napari_viewer, qtbot, tmp_path, stall_detector):
    rng = np.random.default_rng(3)
    paths = []
    for k in range(2):
        paths.append(str(tmp_path / f"scan_{k}.npy"))
        np.save(paths[-1], rng.poisson(5.0 + k, (5, 6, 16, 16)).astype(np.uint16))
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        for p in paths:
            viewer.open(p, plugin="napari-4dstem")
    _, s = viewer.window.add_plugin_dock_widget("napari-4dstem", "Series, compare and watch")
    seen = []  # (in the click?, Cancel enabled?, job running?) when the Compare canvas is made
    real = s._compare_viewer
    in_click = [False]

    def spy():
        seen.append((in_click[0], s.compare_cancel.isEnabled(), s._compare_worker is not None))
        return real()

    s._compare_viewer = spy
    det = DiskDetector((8.0, 8.0), 3.0)
    in_click[0] = True
    assert s.compare("open 4D layers", detector=det)
    in_click[0] = False
    assert s.compare_cancel.isEnabled() and not s.compare_btn.isEnabled()
    qtbot.waitUntil(lambda: s._compare_worker is None, timeout=30000)
    assert seen and seen[0] == (False, True, True), seen
    # the grid itself is unchanged: one exact image per dataset on the Compare canvas
    for k, p in enumerate(paths):
        data = np.load(p).astype(np.float64)
        yy, xx = np.mgrid[:16, :16]
        mask = np.hypot(yy - 8.0, xx - 8.0) <= 3.0
        np.testing.assert_allclose(s.compare_images[f"scan_{k}"], (data * mask).sum(axis=(2, 3)), rtol=1e-6)
    assert [lyr.name for lyr in s._compare_model.layers] == ["scan_0", "scan_1", "tile names"]
