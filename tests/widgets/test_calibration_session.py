"""Session 15 UX audit (audit4), defects S1, S5, S6: a calibration made in the GUI kept by a saved
session, the views and the Virtual imaging dock following a calibration at once, a dock closed
with napari's title-bar button coming back as it was.

The data: a plain ``.npy`` (no calibration, as a raw export) of bright-field disks, opened through
the plugin's reader, calibrated in the Calibration and DPC dock as a user does it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_4dstem.widgets._results import results_viewer

pytestmark = pytest.mark.gui


def _disk_npy(path, scan=(10, 12), shape=(48, 48), radius=7.0, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    disk = 60.0 * (np.hypot(yy - 24, xx - 24) <= radius) + 0.5
    np.save(path, rng.poisson(disk, (*scan, *shape)).astype(np.uint16))
    return path


def _open_npy(viewer, path, stall_detector):
    with stall_detector.excluded("first layer add"):
        (cube,) = [lyr for lyr in viewer.open(str(path), plugin="napari-4dstem") if lyr.ndim == 4]
    return cube


def _calibrate(viewer, qtbot, stall_detector, *, step=4.0):
    """What the audit did in the Calibration and DPC dock: the scan step in A (*Set the real-space
    scale*), *Measure disk* at 1.2 mrad and 300 keV, *Apply to the layer* (each click one user
    action for the stall detector). Returns the dock."""
    _, dw = viewer.window.add_plugin_dock_widget("napari-4dstem", "Calibration and DPC")
    dw.fov_mode.setCurrentText("scan step")
    dw.fov_units.setCurrentText("A")
    dw.fov_y.setValue(step)
    dw.fov_x.setValue(step)
    stall_detector.step()
    dw.apply_fov_btn.click()
    stall_detector.step()
    dw.disk_alpha.setValue(1.2)
    dw.beam_kev.setValue(300.0)
    stall_detector.step()
    dw.measure_disk_btn.click()
    qtbot.waitUntil(lambda: dw.apply_disk_btn.isEnabled() and dw.jobs.worker is None, timeout=60000)
    dw.apply_disk_btn.click()
    return dw


def test_a_session_of_a_file_calibrated_in_the_gui_reopens_it_calibrated(
    make_napari_viewer, qtbot, tmp_path, stall_detector
):
    """S1: the reloaded 4D layer had scale (1, 1, 1, 1) and pixel units although session.json
    stored the calibration; the scale bars, the angles and every analysis started from scratch."""
    src = _disk_npy(tmp_path / "cube.npy")
    main = make_napari_viewer()
    cube = _open_npy(main, src, stall_detector)
    assert tuple(cube.scale) == (1, 1, 1, 1)
    _calibrate(main, qtbot, stall_detector)
    cal = cube.metadata["napari_4dstem"]["calibration"]
    assert cal.scan_step == (4.0, 4.0) and cal.k_pixel_size is not None and cal.convergence_semiangle_mrad == 1.2
    scale, units = tuple(float(s) for s in cube.scale), [str(u) for u in cube.units]
    assert scale[:2] == (4.0, 4.0) and scale[2] == pytest.approx(cal.k_pixel_size) and scale[2] != 1.0
    _, rl = main.window.add_plugin_dock_widget("napari-4dstem", "Results")
    out = rl.save_session(tmp_path / "session.json")
    assert json.loads(out.read_text())["settings"]["datacubes"][0]["calibration"]["scan_step"] == [4.0, 4.0]

    other = make_napari_viewer()  # "a fresh napari": nothing of the first viewer's
    _, rl2 = other.window.add_plugin_dock_widget("napari-4dstem", "Results")
    with stall_detector.excluded("first layer add"):
        rl2.load_session(out)
        qtbot.waitUntil(lambda: rl2.loaded is not None, timeout=60000)
    (cube2,) = [lyr for lyr in other.layers if lyr.ndim == 4]
    # the layer as it was when saved: scale, units, and the calibration the docks read
    assert tuple(float(s) for s in cube2.scale) == scale
    assert [str(u) for u in cube2.units] == units
    assert cube2.metadata["napari_4dstem"]["calibration"] == cal
    _, dw2 = other.window.add_plugin_dock_widget("napari-4dstem", "Calibration and DPC")
    assert dw2.datacube()[1] == cal


def _shown_pixels(viewer, layer):
    """The pattern pixels the diffraction canvas shows: its centre and its zoom in pixels."""
    cam = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    ky, kx = (float(s) for s in layer.scale[-2:])
    cy, cx = cam.center[-2:]
    return np.array([cy / ky, cx / kx, cam.zoom * kx])


def test_a_calibration_keeps_the_views_and_the_virtual_dock_follows_it_at_once(
    make_napari_viewer, qtbot, tmp_path, stall_detector
):
    """S6: after *Apply to the layer* the diffraction canvas kept its camera (the pattern, 100 x
    smaller in 1/A than in px, a dot until reset view), the Real space canvas its zoom after *Set
    the real-space scale*, the scan position moved (napari keeps the dims in world units), and the
    Virtual imaging dock said "detector not calibrated" with its mrad fields hidden until the next
    preset click. Now each canvas shows the same pixels as before, at the zoom and pan the user
    had chosen, the scan position stays, and the dock shows its angles at once."""
    src = _disk_npy(tmp_path / "cube.npy")
    main = make_napari_viewer()
    cube = _open_npy(main, src, stall_detector)
    _, vw = main.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    qtbot.waitUntil(lambda: vw.last_image is not None and vw._worker is None, timeout=60000)
    assert "not calibrated" in vw.angles.text() and not vw._form.isRowVisible(vw.r_out_cal)
    main.dims.set_current_step(0, 5)
    main.dims.set_current_step(1, 3)
    cam = main.scene.camera if hasattr(main, "scene") else main.camera
    cam.zoom *= 3.0  # the user zoomed in on a corner of the pattern
    cam.center = (*cam.center[:-2], 15.0, 30.0)
    before = _shown_pixels(main, cube)
    rv = results_viewer(main, create=False)
    assert rv is not None and len(rv.layers)
    rcam = rv.scene.camera if hasattr(rv, "scene") else rv.camera
    real_before = np.array([*rcam.center[-2:], rcam.zoom])

    dw = _calibrate(main, qtbot, stall_detector, step=4.0)
    k = float(cube.scale[-1])
    assert k == pytest.approx(dw.datacube()[1].k_pixel_size) and k < 0.05
    np.testing.assert_allclose(_shown_pixels(main, cube), before, rtol=1e-6)
    # the real-space canvas: the same scan pixels (world 4 x their index, zoom / 4)
    np.testing.assert_allclose([*rcam.center[-2:], rcam.zoom * 4.0], [*real_before[:2] * 4.0, real_before[2]])
    assert tuple(main.dims.current_step[:2]) == (5, 3)
    # the Virtual imaging dock: its angles and calibrated fields at once, no preset clicked
    assert "not calibrated" not in vw.angles.text() and "mrad" in vw.angles.text()
    assert vw._form.isRowVisible(vw.r_out_cal)
    mrad = vw.r_out.value() * dw.datacube()[1].k_pixel_size_in("mrad")
    assert vw.r_out_cal.value() == pytest.approx(mrad, abs=10.0 ** -vw.r_out_cal.decimals())


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [("Phase retrieval", "iterations", 77), ("Classification", "n_classes", 7), ("Calibration and DPC", "fov_y", 4.5)],
)
def test_a_dock_closed_with_its_title_bar_button_comes_back_as_it_was(
    name, field, value, make_napari_viewer, qtbot, stall_detector
):
    """S5: a dock closed with napari's title-bar x and reopened from the Plugins menu came back
    with its default form values (Phase iterations 77 -> 10, Classification classes 7 -> auto)."""
    from qtpy.QtWidgets import QPushButton

    viewer = make_napari_viewer()
    dock, w = viewer.window.add_plugin_dock_widget("napari-4dstem", name)
    default = getattr(w, field).value()
    assert default != value
    getattr(w, field).setValue(value)
    close = dock.findChild(QPushButton, "QTitleBarCloseButton")
    assert close is not None
    close.click()
    qtbot.wait(200)  # the dock's deferred deletion
    assert all(x is not w for x in viewer.window.dock_widgets.values())  # the dock is gone
    _, w2 = viewer.window.add_plugin_dock_widget("napari-4dstem", name)
    assert w2 is not w  # a new widget, as napari makes for the Plugins menu
    assert getattr(w2, field).value() == value
