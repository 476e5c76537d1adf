"""The Result pane (UX point 15): the FFT of the Virtual imaging dock's image and the EWPC of the
current pattern, on a canvas of their own, following the image and the scan position."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_result_pane_follows_the_virtual_image_and_the_scan(make_napari_viewer, qtbot, stall_detector):
    main = make_napari_viewer()
    with stall_detector.excluded("reference"):  # the test's own imports
        from napari_4dstem.analysis.virtual.detectors import AnnulusDetector
        from napari_4dstem.analysis.virtual.transforms import ewpc, fft_image
        from napari_4dstem.widgets.result_pane import LAYER, ResultPaneWidget

    with stall_detector.excluded("first layer add"):
        main.open_sample("napari-4dstem", "strained_crystal")
    _, v = main.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    _, p = main.window.add_plugin_dock_widget("napari-4dstem", "Result pane")
    assert isinstance(p, ResultPaneWidget)
    qtbot.waitUntil(lambda: v.last_image is not None and p.shown is not None and not p.runner.busy, timeout=30000)
    with stall_detector.excluded("reference"):
        qtbot.waitUntil(lambda: np.array_equal(p.shown[1], fft_image(v.last_image.data)), timeout=10000)
    # a new detector: the pane follows with the FFT of the new image
    v.set_detector(AnnulusDetector((64.0, 64.0), 20.0, 50.0))
    qtbot.waitUntil(lambda: v._worker is None and v.last_image.params["detector"]["kind"] == "annulus", timeout=30000)
    with stall_detector.excluded("reference"):
        qtbot.waitUntil(
            lambda: not p.runner.busy and np.array_equal(p.shown[1], fft_image(v.last_image.data)), timeout=10000
        )
    cube = main.layers["strained_crystal"]
    assert p.model.layers[LAYER].scale[0] == pytest.approx(1 / (cube.data.shape[0] * cube.scale[0]))
    # EWPC of the pattern at the scan position, in Angstrom; follows the scan
    p.mode.setCurrentIndex(1)
    main.dims.set_point(0, 5 * cube.scale[0])
    main.dims.set_point(1, 9 * cube.scale[1])
    qtbot.waitUntil(lambda: not p.runner.busy and p.shown[0] == "EWPC (5, 9)", timeout=20000)
    with stall_detector.excluded("reference"):
        want = ewpc(np.asarray(cube.data[5, 9]))
    np.testing.assert_array_equal(p.shown[1], want)
    assert str(p.model.layers[LAYER].units[0]) == "angstrom"


def test_plugins_register_result_views_that_follow_the_scan(make_napari_viewer, qtbot, stall_detector):
    """UX points 15 and 24: a plugin's renderer is listed in the pane, runs in the worker on the pattern
    at the scan position, follows the scan, reports its errors in the Log dock, and goes away when
    withdrawn."""
    main = make_napari_viewer()
    with stall_detector.excluded("reference"):
        from napari_4dstem.plugin_api import register_result_renderer, result_renderers, unregister_result_renderer
        from napari_4dstem.widgets.log import log_entries
        from napari_4dstem.widgets.result_pane import LAYER, MODES, ResultPaneWidget

    with pytest.raises(ValueError, match="name of its own"):
        register_result_renderer(MODES[0], np.log1p)
    with pytest.raises(ValueError, match="source must be"):
        register_result_renderer("x", np.log1p, source="cube")
    with stall_detector.excluded("first layer add"):
        main.open_sample("napari-4dstem", "strained_crystal")
    cube = main.layers["strained_crystal"]
    calls = []

    def log_pattern(p):
        calls.append(p.shape)
        return np.log1p(np.maximum(p, 0)), (0.5, 0.5), "mrad"

    try:
        _, p = main.window.add_plugin_dock_widget("napari-4dstem", "Result pane")
        assert isinstance(p, ResultPaneWidget)
        # registered after the pane opened: the pane lists it at once
        register_result_renderer("log pattern", log_pattern, source="pattern")
        items = [p.mode.itemText(i) for i in range(p.mode.count())]
        assert items == [*MODES, "log pattern"]
        p.mode.setCurrentText("log pattern")
        main.dims.set_point(0, 3 * cube.scale[0])
        main.dims.set_point(1, 7 * cube.scale[1])
        qtbot.waitUntil(lambda: not p.runner.busy and p.shown and p.shown[0] == "log pattern (3, 7)", timeout=20000)
        with stall_detector.excluded("reference"):
            want = np.log1p(np.maximum(np.asarray(cube.data[3, 7]), 0)).astype(np.float32)
        np.testing.assert_array_equal(p.shown[1], want)
        assert tuple(p.model.layers[LAYER].scale) == (0.5, 0.5)
        assert str(p.model.layers[LAYER].units[0]) == "milliradian"
        assert calls and calls[-1] == tuple(cube.data.shape[2:])

        # a renderer that fails: the message in the pane, the traceback in the Log dock
        def broken(p):
            return np.zeros(3)

        n_log = len(log_entries())
        register_result_renderer("broken", broken)
        p.mode.setCurrentText("broken")
        qtbot.waitUntil(lambda: "must be a non-empty 2D" in p.status.text(), timeout=20000)
        assert len(log_entries()) > n_log and "broken" in log_entries()[-1]
        # withdrawn while shown: the pane falls back to the first built-in view
        unregister_result_renderer("broken")
        assert "broken" not in [p.mode.itemText(i) for i in range(p.mode.count())]
        assert p.mode.currentText() == MODES[0]
    finally:
        for name in list(result_renderers()):
            unregister_result_renderer(name)
