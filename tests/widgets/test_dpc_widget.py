"""The Calibration and DPC widget in real viewers: origin/descan and a planted DPC rotation."""

import numpy as np
import pytest

from napari_4dstem import Calibration
from napari_4dstem.analysis.virtual.origin import fit_origin_plane, measure_origin
from napari_4dstem.simulation.samples import render_disks
from napari_4dstem.widgets._results import set_results_viewer
from napari_4dstem.widgets.dpc import CalibrationDPCWidget

pytestmark = pytest.mark.gui


@pytest.fixture
def viewers(make_napari_viewer):
    main, results = make_napari_viewer(), make_napari_viewer()
    set_results_viewer(main, results)
    return main, results


def _wait(qtbot, w):
    qtbot.waitUntil(lambda: w._worker is None, timeout=30000)


def test_origin_and_descan_recover_the_planted_origin(viewers, qtbot, stall_detector):
    main, results = viewers
    with stall_detector.excluded("first layer add"):
        main.open_sample("napari-4dstem", "strained_crystal")
    _, w = main.window.add_plugin_dock_widget("napari-4dstem", "Calibration and DPC")
    assert isinstance(w, CalibrationDPCWidget)
    w.measure_btn.click()
    qtbot.waitUntil(lambda: w.origin_fit is not None, timeout=30000)
    _wait(qtbot, w)
    cube = main.layers["strained_crystal"]
    with stall_detector.excluded("reference"):
        ref = measure_origin(np.asarray(cube.data))
    np.testing.assert_allclose(w.origin.data, ref.data)
    np.testing.assert_allclose(w.origin_fit.origin_map_px, fit_origin_plane(ref).origin_map_px)
    # the planted (linear) descan of the sample, within 0.05 px after the plane fit
    from napari_4dstem._sample_data import sample_path
    from napari_4dstem.io import emd

    with stall_detector.excluded("reference"):
        truth = emd.read(sample_path("strained_crystal"))["truth_origin"].data
    assert np.abs(w.origin_fit.origin_map_px - truth).max() < 0.05
    for name in ["origin k_y (measured)", "origin k_x (fitted)"]:
        assert name in results.layers and results.layers[name].ndim == 2
        assert tuple(results.layers[name].scale) == (1.0, 1.0)
    w.apply_btn.click()
    cal = cube.metadata["napari_4dstem"]["calibration"]
    np.testing.assert_array_equal(cal.origin_map_px, w.origin_fit.origin_map_px)
    # a click in the real-space viewer moves the main viewer's scan position
    from napari_4dstem.widgets._results import move_scan_to_world

    move_scan_to_world(main, (7.0, 19.0))
    np.testing.assert_array_equal(np.asarray(cube._slice.image.raw), np.asarray(cube.data[7, 19]))


def _dpc_cube(rotation_deg: float, n: int = 24, q: int = 48):
    """A BF disk shifted by the gradient of a Gaussian phase bump, seen on a rotated detector."""
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    r2 = (yy - n / 2) ** 2 + (xx - n / 2) ** 2
    # shift field u = grad(phi) in scan axes (pixels), phi a Gaussian bump
    uy, ux = -(yy - n / 2) / 9.0 * np.exp(-r2 / 40), -(xx - n / 2) / 9.0 * np.exp(-r2 / 40)
    t = np.deg2rad(rotation_deg)
    # detector axes = scan axes rotated by -theta (see analysis/virtual/dpc.py conventions)
    vx = np.cos(t) * ux + np.sin(t) * uy
    vy = -np.sin(t) * ux + np.cos(t) * uy
    centers = np.stack([q / 2 + vy, q / 2 + vx], -1).reshape(-1, 1, 2)
    data = render_disks(centers, np.array([100.0]), (q, q), 8.0, 0.7).reshape(n, n, q, q)
    return data.astype(np.float32)


def test_auto_rotation_finds_the_planted_rotation(viewers, qtbot, stall_detector):
    main, results = viewers
    with stall_detector.excluded("first layer add"):
        data = _dpc_cube(25.0)
        main.add_image(data, name="dpc_cube", metadata={"napari_4dstem": {"calibration": Calibration()}})
    w = CalibrationDPCWidget(main)
    main.window.add_dock_widget(w)
    w.compute_com()
    qtbot.waitUntil(lambda: w.com is not None, timeout=30000)
    _wait(qtbot, w)
    w.descan.setCurrentText("mean")
    w.auto_btn.click()  # the fit and the maps run in workers
    qtbot.waitUntil(
        lambda: (
            w.rotation.value() != 0.0
            and "DPC vectors" in results.layers
            and not w._dpc_runner.busy
            and not w._rot_runner.busy
        ),
        timeout=30000,
    )
    assert w.rotation.value() == pytest.approx(25.0, abs=0.5)
    assert not w.flip.isChecked()
    # a planted signal: the dock shows a high confidence and no ill-conditioned note
    assert "confidence" in w.dpc_label.text() and "ill-conditioned" not in w.dpc_label.text()
    for name in ["DPC magnitude", "DPC colour wheel", "iDPC phase", "DPC vectors"]:
        assert name in results.layers
    assert results.layers["DPC colour wheel"].rgb
    # the recovered phase correlates with the planted Gaussian bump
    n = data.shape[0]
    yy, xx = np.mgrid[0:n, 0:n]
    bump = np.exp(-((yy - n / 2) ** 2 + (xx - n / 2) ** 2) / 40)
    assert np.corrcoef(results.layers["iDPC phase"].data.ravel(), bump.ravel())[0, 1] > 0.9


def test_copy_as_python_reproduces_the_dpc_maps(viewers, qtbot, tmp_path, run_copied_script, stall_detector):
    from napari_4dstem.io import emd

    main, results = viewers
    with stall_detector.excluded("first layer add"):
        main.open_sample("napari-4dstem", "strained_crystal")
    w = CalibrationDPCWidget(main)
    main.window.add_dock_widget(w)
    assert w.copy_as_python() is None and "run the analysis first" in w.status.text()
    w.com_btn.click()
    qtbot.waitUntil(lambda: w.com is not None, timeout=30000)
    _wait(qtbot, w)
    w.auto_btn.click()  # the fit and the maps run in workers: wait for the maps of the fitted rotation
    qtbot.waitUntil(
        lambda: (
            "rotation" in w.dpc_label.text()
            and not w._rot_runner.busy
            and not w._dpc_runner.busy
            and w.result is not None
            and w.result.rotation_deg == w.rotation.value()
            and w.result.flip == w.flip.isChecked()
        ),
        timeout=30000,
    )
    text = w.copy_as_python()
    assert "run_dpc(" in text and "DPCParams(rotation_deg=" in text
    run_copied_script(text, tmp_path)
    with stall_detector.excluded("reference"):
        again = emd.read(tmp_path / "result.h5")
    np.testing.assert_array_equal(again["dpc"].data, w.dpc_map.data)
    np.testing.assert_array_equal(again["idpc"].data, w.phase.data)
    np.testing.assert_array_equal(results.layers["iDPC phase"].data, again["idpc"].data)
