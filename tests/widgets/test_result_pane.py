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
    # the FFT's axes in nm⁻¹ as a plain unit: its scale bar read "750 1/µm" (UX audit, session 12)
    assert str(p.model.layers[LAYER].units[0]) == "inverse_nanometer"
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


def test_fft_parts_of_a_planted_sinusoid_in_the_virtual_image(make_napari_viewer, qtbot, stall_detector):
    """UX point 15: the FFT shows log|F|, |F|, real, imaginary or phase, Hann-windowed or not,
    computed in the worker. Each pattern is a disk times 5 + 3 cos(2 pi (4 y / 32 + 5 x / 40) + phi),
    so any virtual image is S (5 + 3 cos(...)): at (+4, +5) from the centre its transform is
    (3/5) mean W / 2 e^{i phi} (W = n_y n_x, or the sum of the Hann window), at (-4, -5) the
    conjugate."""
    main = make_napari_viewer()
    with stall_detector.excluded("reference"):
        from napari_4dstem import Calibration
        from napari_4dstem.analysis.virtual.transforms import FFT_PARTS, fft_image
        from napari_4dstem.widgets.result_pane import FFT_PARTS as PANE_PARTS
        from napari_4dstem.widgets.result_pane import LAYER, MODES, ResultPaneWidget

        assert PANE_PARTS == FFT_PARTS
        phi = 0.9
        yy, xx = np.mgrid[:32, :40]
        wave = 5 + 3 * np.cos(2 * np.pi * (4 * yy / 32 + 5 * xx / 40) + phi)
        ky, kx = np.mgrid[:48, :48]
        disk = (np.hypot(ky - 23.5, kx - 23.5) <= 4.0).astype(np.float64)
        cube = (wave[..., None, None] * disk).astype(np.float32)
        cal = Calibration(scan_step=(0.5, 0.5), scan_units="nm", k_pixel_size=0.5, k_units="mrad")
    with stall_detector.excluded("first layer add"):
        main.add_image(cube, name="waves", metadata={"napari_4dstem": {"calibration": cal}}, **cal.napari_kwargs("4d"))
    _, v = main.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    _, p = main.window.add_plugin_dock_widget("napari-4dstem", "Result pane")
    assert isinstance(p, ResultPaneWidget)
    qtbot.waitUntil(lambda: v.last_image is not None and v._worker is None, timeout=30000)
    img = np.asarray(v.last_image.data, dtype=np.float64)
    assert img.shape == (32, 40) and p.part.isEnabled() and p.fft_window.isChecked()
    with stall_detector.excluded("reference"):
        qtbot.waitUntil(lambda: not p.runner.busy and np.array_equal(p.shown[1], fft_image(img)), timeout=10000)
    up, down = (16 + 4, 20 + 5), (16 - 4, 20 - 5)
    layer = p.model.layers[LAYER]
    assert layer.colormap.name == "magma" and layer.scale[0] == pytest.approx(1 / (32 * 0.5))

    def show(part, window=True):
        p.fft_window.setChecked(window)
        p.part.setCurrentText(part)
        qtbot.waitUntil(lambda: not p.runner.busy and p.shown is not None and part in p.shown[0], timeout=10000)
        with stall_detector.excluded("reference"):
            want = fft_image(img, window=window, part=part)
        np.testing.assert_array_equal(p.shown[1], want)  # what the pane shows is the core's
        stall_detector.step()
        return p.shown[1]

    for window in (True, False):
        w = np.outer(np.hanning(32), np.hanning(40)).sum() if window else 32 * 40
        half = 0.6 * img.mean() * w / 2  # the planted amplitude: 3 of a mean of 5, times S
        ph = show("phase", window)
        assert ph[up] == pytest.approx(phi, abs=1e-4) and ph[down] == pytest.approx(-phi, abs=1e-4)
        assert layer.colormap.name == "twilight" and tuple(layer.contrast_limits) == pytest.approx((-np.pi, np.pi))
        re = show("real", window)
        assert re[up] == pytest.approx(half * np.cos(phi), rel=1e-4) and re[down] == pytest.approx(re[up], rel=1e-6)
        lo, hi = layer.contrast_limits
        assert layer.colormap.name == "PiYG" and lo == pytest.approx(-hi)
        im = show("imaginary", window)
        assert im[up] == pytest.approx(half * np.sin(phi), rel=1e-4) and im[down] == pytest.approx(-im[up], rel=1e-6)
        mag = show("|F|", window)
        assert mag[up] == pytest.approx(half, rel=1e-4) and layer.colormap.name == "magma"
    assert p.shown[0] == "FFT |F|, no window"
    # EWPC of the pattern: the FFT's part does not apply there
    p.mode.setCurrentIndex(1)
    assert p.mode.currentText() == MODES[1] and not p.part.isEnabled() and not p.fft_window.isEnabled()
    qtbot.waitUntil(lambda: not p.runner.busy and p.shown[0].startswith("EWPC"), timeout=10000)


def _planted_cube(shape=(12, 14, 24, 24), seed=3):
    """A cube whose virtual image is not flat: a bright disk whose brightness follows the scan row."""
    rng = np.random.default_rng(seed)
    ky, kx = np.mgrid[: shape[2], : shape[3]]
    disk = (np.hypot(ky - shape[2] / 2, kx - shape[3] / 2) < 5).astype(np.float64)
    rows = 100.0 + 40.0 * np.sin(np.arange(shape[0]) / 2.0)[:, None, None, None]
    return rng.poisson(rows * disk + 2.0, size=shape).astype(np.uint16)


@pytest.mark.parametrize("series", [False, True], ids=["npy", "5d-series"])
def test_result_pane_opens_on_an_uncalibrated_npy(make_napari_viewer, qtbot, tmp_path, stall_detector, series):
    """UX audit session 13, defect 1: on a raw .npy (no scan step) the Result pane did not open
    (TypeError on ``cal.scan_step[0]``). It opens and shows the FFT of the virtual image in 1/px."""
    main = make_napari_viewer()
    with stall_detector.excluded("reference"):
        from napari_4dstem.analysis.virtual.transforms import fft_image
        from napari_4dstem.widgets.result_pane import LAYER, ResultPaneWidget
        from napari_4dstem.widgets.series import SERIES_LAYER

    if series:
        data = np.stack([_planted_cube(seed=k) for k in range(2)])
        np.save(tmp_path / "series5d.npy", data)
        _, s = main.window.add_plugin_dock_widget("napari-4dstem", "Series, compare and watch")
        with stall_detector.excluded("first layer add"):
            s.open_files([str(tmp_path / "series5d.npy")])
            qtbot.waitUntil(lambda: SERIES_LAYER in main.layers, timeout=30000)
        cube = main.layers[SERIES_LAYER]
    else:
        np.save(tmp_path / "raw.npy", _planted_cube())
        with stall_detector.excluded("first layer add"):
            (cube,) = main.open(str(tmp_path / "raw.npy"), plugin="napari-4dstem")
    cal = cube.metadata["napari_4dstem"]["calibration"]
    assert cal.scan_step is None  # the case of the defect: nothing in the file says the step
    _, v = main.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    qtbot.waitUntil(lambda: v.last_image is not None and v._worker is None, timeout=30000)
    _, p = main.window.add_plugin_dock_widget("napari-4dstem", "Result pane")
    assert isinstance(p, ResultPaneWidget)
    qtbot.waitUntil(lambda: p.shown is not None and not p.runner.busy, timeout=30000)
    with stall_detector.excluded("reference"):
        want = fft_image(v.last_image.data)
    np.testing.assert_array_equal(p.shown[1], want)
    shape = v.last_image.data.shape
    np.testing.assert_allclose(p.model.layers[LAYER].scale, (1 / shape[0], 1 / shape[1]))
