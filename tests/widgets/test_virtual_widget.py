"""The Virtual imaging dock widget in a real viewer: detector edits, presets, scan linking."""

import numpy as np
import pytest

from napari_4dstem.analysis.virtual.detectors import AnnulusDetector, DiskDetector
from napari_4dstem.analysis.virtual.images import virtual_image
from napari_4dstem.widgets.virtual import (
    DETECTOR_LAYER,
    REGION_LAYER,
    VirtualImagingWidget,
    detector_to_shapes,
    shapes_to_detector,
)

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(make_napari_viewer, qtbot, stall_detector):
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        viewer.open_sample("napari-4dstem", "strained_crystal")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    assert isinstance(w, VirtualImagingWidget)
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None, timeout=20000)
    return viewer, w


def _reference(viewer, det):
    cube = viewer.layers["strained_crystal"]
    return virtual_image(np.asarray(cube.data), det).data


def test_starts_with_the_detected_bf_disk(widget):
    viewer, w = widget
    det = w._last_detector
    assert isinstance(det, DiskDetector)
    # the sample's central disk: radius 8 px near the detector centre (64, 64)
    assert det.radius_px == pytest.approx(8.0, abs=0.7)
    assert det.center_px == pytest.approx((63.7, 64.2), abs=0.6)
    np.testing.assert_array_equal(w.last_image.data, _reference(viewer, det))
    assert DETECTOR_LAYER in viewer.layers


def test_field_edit_and_shape_drag_update_the_image(widget, qtbot):
    viewer, w = widget
    w.kind_combo.setCurrentText("Annulus")
    w.r_out.setValue(40.0)  # outer first: an inner radius beyond the outer one is refused (S7)
    w.r_in.setValue(12.0)
    qtbot.waitUntil(
        lambda: (
            isinstance(w._last_detector, AnnulusDetector)
            and w._last_detector.inner_px == 12.0
            and w._worker is None
            and w._pending is None
        ),
        timeout=20000,
    )
    np.testing.assert_array_equal(w.last_image.data, _reference(viewer, w._last_detector))
    # dragging the shapes moves the detector: emulate napari's move (data change + refresh)
    layer = viewer.layers[DETECTOR_LAYER]
    layer.data = [d + np.array([3.0, -2.0]) for d in layer.data]
    qtbot.waitUntil(
        lambda: (
            w._worker is None and w._pending is None and w._last_detector.center_px[0] == pytest.approx(w.cy.value())
        ),
        timeout=20000,
    )
    assert w.cy.value() == pytest.approx(63.7 + 3.0, abs=0.6)
    np.testing.assert_array_equal(w.last_image.data, _reference(viewer, w._last_detector))


def test_a_shape_edit_starts_one_job_and_a_quick_drag_shows_its_image_at_once(widget, qtbot, monkeypatch):
    import napari_4dstem.widgets.virtual as vmod

    viewer, w = widget
    jobs = []
    live_job = vmod._live_job

    def counting_job(*a, **k):
        jobs.append(a[1])
        return (yield from live_job(*a, **k))

    monkeypatch.setattr(vmod, "_live_job", counting_job)
    layer = viewer.layers[DETECTOR_LAYER]
    # rebuilding the layer fires set_data several times: one detector, one job
    layer.data = [d + np.array([2.0, 0.0]) for d in layer.data]
    qtbot.waitUntil(lambda: w._worker is None and w._pending is None, timeout=20000)
    assert len(jobs) == 1
    # napari's select-mode drag: shift the shapes, refresh. With jobs this quick (a generous
    # limit here: a shared CI machine is slow), the handler waits for the image and shows it
    # before returning, so it is in before napari redraws the canvas
    monkeypatch.setattr(vmod, "WAIT_FIRST_S", 30.0)
    before = w.last_image
    for i in range(len(layer.data)):
        layer._data_view.shift(i, np.array([0.0, 1.5]))
    layer.refresh()
    assert w.last_image is not before
    assert w.last_image.data.shape == before.data.shape
    assert len(jobs) == 2
    qtbot.waitUntil(lambda: w._worker is None and w._pending is None, timeout=20000)
    np.testing.assert_array_equal(w.last_image.data, _reference(viewer, w._last_detector))
    assert w._last_detector.center_px[1] == pytest.approx(w.cx.value(), abs=0.01)


def test_presets_use_calibrated_angles(widget, qtbot):
    _, w = widget
    w.apply_preset("ADF")
    qtbot.waitUntil(
        lambda: isinstance(w._last_detector, AnnulusDetector) and w._worker is None and w._pending is None,
        timeout=20000,
    )
    # sample: convergence 1.575 mrad, pixel 0.01 1/A at 300 kV -> alpha = 8 px; ADF = 1-3 alpha
    assert w._last_detector.inner_px == pytest.approx(8.0, rel=1e-3)
    assert w._last_detector.outer_px == pytest.approx(24.0, rel=1e-3)
    assert "mrad" in w.angles.text()


def test_real_space_click_moves_the_pattern_and_region_integrates(widget, qtbot):
    viewer, w = widget
    cube = viewer.layers["strained_crystal"]
    w.set_scan_position(5, 21)
    assert viewer.dims.point[0] == pytest.approx(5 * cube.scale[0])
    assert viewer.dims.point[1] == pytest.approx(21 * cube.scale[1])
    np.testing.assert_array_equal(np.asarray(cube._slice.image.raw), np.asarray(cube.data[5, 21]))
    w.integrate_region(2, 6, 10, 13)
    qtbot.waitUntil(lambda: REGION_LAYER in viewer.layers, timeout=20000)
    expected = np.asarray(cube.data[2:6, 10:13]).mean(axis=(0, 1))
    np.testing.assert_allclose(viewer.layers[REGION_LAYER].data, expected)
    assert "mean over 12 positions" in w.status.text()


def test_shapes_conversion_round_trip():
    for det in [DiskDetector((10.5, 20.0), 4.0), AnnulusDetector((30.0, 31.0), 5.0, 12.0)]:
        data, types = detector_to_shapes(det)
        kind = "Disk" if isinstance(det, DiskDetector) else "Annulus"
        back = shapes_to_detector(kind, data, types, (64, 64))
        assert back == det


def test_toggling_descan_recomputes_the_same_detector(widget, qtbot, monkeypatch):
    import napari_4dstem.widgets.virtual as vmod

    _, w = widget
    calls = []
    live_job = vmod._live_job

    def counting_job(*a, **k):
        calls.append((a[1], a[3]))  # detector, descan
        return (yield from live_job(*a, **k))

    monkeypatch.setattr(vmod, "_live_job", counting_job)
    det = w._last_detector
    w.descan.setChecked(True)
    qtbot.waitUntil(lambda: len(calls) == 1 and w._worker is None and w._pending is None, timeout=20000)
    assert calls[0] == (det, True)
    w.descan.setChecked(False)
    qtbot.waitUntil(lambda: len(calls) == 2 and w._worker is None and w._pending is None, timeout=20000)
    assert calls[1] == (det, False)
    np.testing.assert_array_equal(w.last_image.data, _reference(w.viewer, det))


def _outline_vertices(viewer, layer) -> np.ndarray:
    """The vertices napari's canvas draws for a Shapes layer, as (row, column)."""
    visual = viewer.window._qt_viewer.canvas.layer_to_visual[layer]
    return np.asarray(visual.node.shape_faces.mesh_data.get_vertices())[:, ::-1]


def test_the_detector_outline_is_drawn_after_open_preset_and_typed_radii(widget, qtbot):
    """napari redraws a Shapes layer on its set_data event: blocking it left 0 outline pixels."""
    viewer, w = widget
    layer = viewer.layers[DETECTOR_LAYER]

    def drawn_radius():
        v = _outline_vertices(viewer, layer)
        if len(v) <= 3:
            return 0.0
        return 0.25 * (np.ptp(v[:, 0]) + np.ptp(v[:, 1]))

    assert drawn_radius() == pytest.approx(w._last_detector.radius_px, abs=0.6)  # on open
    w.apply_preset("HAADF")
    qtbot.waitUntil(lambda: w._worker is None and w._pending is None, timeout=20000)
    qtbot.waitUntil(lambda: drawn_radius() == pytest.approx(w._last_detector.outer_px, abs=0.6), timeout=5000)
    w.kind_combo.setCurrentText("Disk")
    w.r_out.setValue(5.0)
    qtbot.waitUntil(lambda: w._worker is None and w._pending is None, timeout=20000)
    qtbot.waitUntil(lambda: drawn_radius() == pytest.approx(5.0, abs=0.6), timeout=5000)


def test_switching_the_detector_kind_keeps_its_size(widget, qtbot):
    """Disk -> Rectangle used the empty inner-radius field as a half height: an error."""
    from napari_4dstem.analysis.virtual.detectors import RectangleDetector

    viewer, w = widget
    r = w._last_detector.radius_px
    w.kind_combo.setCurrentText("Rectangle")
    qtbot.waitUntil(
        lambda: isinstance(w._last_detector, RectangleDetector) and w._worker is None and w._pending is None,
        timeout=20000,
    )
    det = w._last_detector
    assert det.rows[1] - det.rows[0] == pytest.approx(2 * r, abs=1.01)
    assert det.cols[1] - det.cols[0] == pytest.approx(2 * r, abs=1.01)
    assert "must be" not in w.status.text()
    np.testing.assert_array_equal(w.last_image.data, _reference(viewer, det))
    w.kind_combo.setCurrentText("Annulus")
    qtbot.waitUntil(
        lambda: isinstance(w._last_detector, AnnulusDetector) and w._worker is None and w._pending is None,
        timeout=20000,
    )
    assert 0 < w._last_detector.inner_px < w._last_detector.outer_px
    w.kind_combo.setCurrentText("Disk")
    qtbot.waitUntil(
        lambda: isinstance(w._last_detector, DiskDetector) and w._worker is None and w._pending is None, timeout=20000
    )
    assert w._last_detector.radius_px == pytest.approx(w.r_out.value())


def test_presets_are_precomputed_and_switch_without_a_job(widget, qtbot, stall_detector):
    """BF/ABF/LAADF/ADF/HAADF/Full, sized to the detected BF disk, computed once in a worker:
    a switch shows the stored exact image at once (no job, no wait)."""
    from napari_4dstem.widgets.virtual import PRESET_NAMES

    viewer, w = widget
    qtbot.waitUntil(lambda: w.presets_ready, timeout=60000)
    assert PRESET_NAMES == ("BF", "ABF", "LAADF", "ADF", "HAADF", "Full")
    for name in PRESET_NAMES:
        w.presets[name].click()
        assert w._worker is None and w._pending is None  # nothing computed
        det = w._last_detector
        with stall_detector.excluded("reference"):
            np.testing.assert_array_equal(w.last_image.data, _reference(viewer, det))
        stall_detector.step()
    # Full covers every detector pixel: its image is the total intensity of each pattern
    cube = viewer.layers["strained_crystal"]
    with stall_detector.excluded("reference"):
        total = np.asarray(cube.data).sum(axis=(2, 3), dtype=np.float64)
    np.testing.assert_allclose(w.last_image.data, total, rtol=1e-6)


def test_a_preset_switch_refreshes_the_outline_once_and_builds_no_shader(widget, qtbot, monkeypatch, stall_detector):
    """UX point 8 (switch <= 50 ms): a precomputed preset redraws the detector outline with one
    refresh of its layer and a dims update of the viewer only where the layers' ranges changed
    (napari's ``Shapes.data`` setter did three and two: 18 ms of GUI CPU a switch; the dims are
    still exactly the layers' ranges after each switch), and its meshes keep their shader programs (vispy
    built a new colour function at every update: two programs compiled and linked again at the
    next draw, 15-17 ms in software OpenGL). The outline drawn is still the preset's."""
    from napari.components.viewer_model import ViewerModel
    from vispy.visuals.shaders.program import ModularProgram

    from napari_4dstem.widgets.virtual import PRESET_NAMES

    viewer, w = widget
    qtbot.waitUntil(lambda: w.presets_ready and w._worker is None, timeout=60000)
    layer = viewer.layers[DETECTOR_LAYER]
    for name in PRESET_NAMES:  # every kind of outline drawn once (its first programs built)
        w.apply_preset(name)
        qtbot.wait(20)
        stall_detector.step()
    counts = {"set_data": 0, "dims": 0, "builds": 0}
    layer.events.set_data.connect(lambda e=None: counts.__setitem__("set_data", counts["set_data"] + 1))
    on_change, build = ViewerModel._on_layers_change, ModularProgram._build

    def counted_on_change(self, *a, **k):
        if self is getattr(viewer, "__wrapped__", viewer):
            counts["dims"] += 1
        return on_change(self, *a, **k)

    def counted_build(self, *a, **k):
        counts["builds"] += 1
        return build(self, *a, **k)

    monkeypatch.setattr(ViewerModel, "_on_layers_change", counted_on_change)
    monkeypatch.setattr(ModularProgram, "_build", counted_build)
    names = ("HAADF", "BF", "ADF", "ABF", "LAADF", "Full", "BF", "HAADF")
    changed = 0
    for name in names:
        before = tuple(viewer.dims.range)
        w.apply_preset(name)
        assert w._worker is None and w._pending is None  # stored, nothing computed
        assert tuple(viewer.dims.range) == tuple(viewer.layers._ranges)
        changed += tuple(viewer.dims.range) != before
        qtbot.wait(20)  # both canvases draw
        stall_detector.step()
        shapes, types = detector_to_shapes(w._last_detector)
        assert layer.shape_type == types
        for got, want in zip(layer.data, shapes, strict=True):
            np.testing.assert_allclose(got, want, atol=1e-4)
        drawn = _outline_vertices(viewer, layer)
        assert np.ptp(drawn[:, 0]) == pytest.approx(max(np.ptp(v[:, 0]) for v in shapes), abs=1.0)
    assert counts == {"set_data": len(names), "dims": changed, "builds": 0}


def test_display_controls_scale_range_and_statistics(widget, qtbot, stall_detector):
    """Lin/Log/Sqrt and percentile ranges are visible controls in the dock applied to the stored
    image on the Real space canvas (no recompute); the statistics line gives min/max/mean/sum/std
    of the values."""
    from napari_4dstem.widgets._results import results_viewer

    viewer, w = widget
    rs = results_viewer(viewer, create=False)
    layer = rs.layers["virtual image"]
    img = w.last_image.data.astype(np.float32)
    li = w.realspace
    assert li.scale_combo.isVisibleTo(w) and li.range_combo.isVisibleTo(w)
    f = img.astype(np.float64)
    assert f"min {f.min():.4g}" in li.stats.text() and f"max {f.max():.4g}" in li.stats.text()
    assert f"sum {f.sum():.4g}" in li.stats.text() and f"std {f.std():.4g}" in li.stats.text()
    lo, hi = np.percentile(img, [0.1, 99.9])
    assert layer.contrast_limits == pytest.approx((lo, hi), rel=1e-6)
    np.testing.assert_array_equal(layer.data, img)
    li.range_combo.setCurrentText("min-max")
    assert layer.contrast_limits == pytest.approx((img.min(), img.max()), rel=1e-6)
    stall_detector.step()
    li.scale_combo.setCurrentText("Log")
    log = np.log10(img - img.min() + 1.0)
    np.testing.assert_allclose(layer.data, log, rtol=1e-6)
    assert layer.contrast_limits == pytest.approx((0.0, log.max()), rel=1e-5, abs=1e-7)
    stall_detector.step()
    li.scale_combo.setCurrentText("Sqrt")
    np.testing.assert_allclose(layer.data, np.sqrt(img - img.min()), rtol=1e-6)
    assert layer.contrast_limits == pytest.approx((0.0, np.sqrt(img.max() - img.min())), rel=1e-5)
    assert f"max {f.max():.4g}" in li.stats.text()  # statistics of the values, not of the display
    assert w._worker is None and rs.layers["virtual image"] is layer  # nothing computed, not re-added


def test_keyboard_moves_and_resizes_the_detector_and_moves_the_scan(widget, qtbot, stall_detector):
    from napari_4dstem.widgets.virtual import KEYMAP

    viewer, w = widget
    bound = {str(k) for k in viewer.keymap}
    for key in KEYMAP:
        assert key.replace("Shift-", "Shift+") in bound, key

    def press(key):
        # the function napari calls for the key (app_model normalises 'Shift-W' to 'Shift+W')
        name = key.replace("Shift-", "Shift+")
        (fn,) = [f for k, f in viewer.keymap.items() if str(k) == name]
        fn(viewer)
        stall_detector.step()

    def settled():
        qtbot.waitUntil(lambda: w._worker is None and w._pending is None, timeout=20000)

    det0 = w._last_detector
    press("D")
    press("Shift-S")
    settled()
    assert w._last_detector.center_px == pytest.approx((det0.center_px[0] + 5, det0.center_px[1] + 1))
    press("=")
    press("Shift-=")
    settled()
    assert w._last_detector.radius_px == pytest.approx(det0.radius_px + 6)
    np.testing.assert_array_equal(w.last_image.data, _reference(viewer, w._last_detector))
    cube = viewer.layers["strained_crystal"]
    w.set_scan_position(5, 5)
    press("L")
    press("Shift-K")
    from napari_4dstem.widgets._common import scan_position

    assert scan_position(viewer, cube) == (15, 6)
    press("R")
    settled()
    assert w._last_detector.center_px == pytest.approx(det0.center_px, abs=0.6)
    # [ ] step through the 4D datasets: the dock and the canvas show the next one's patterns
    with stall_detector.excluded("first layer add"):
        viewer.add_image(np.asarray(cube.data)[:, :, ::-1], name="second", scale=cube.scale, units=cube.units)
    assert w.layer_combo.count() == 2
    press("]")
    assert w.layer.name == "second" and viewer.layers["second"].visible and not cube.visible
    settled()
    qtbot.waitUntil(
        lambda: (
            w._last_detector is not None
            and w._worker is None
            and w._pending is None
            and w.last_image is not None
            and w.result is not None
            and w.result.recipe is not None
        ),
        timeout=30000,
    )
    press("[")
    assert w.layer.name == "strained_crystal" and cube.visible and not viewer.layers["second"].visible


def test_radii_edit_in_mrad_and_px_both_ways(widget, qtbot):
    """The sample: 0.01 1/A per pixel at 300 kV (1.575 mrad = 8 px): px <-> mrad both ways."""
    _, w = widget
    px_mrad = 1.575 / 8.0
    assert w.r_out_cal.isEnabled() and "mrad" in w._form.labelForField(w.r_out_cal).text()
    assert w.r_out_cal.value() == pytest.approx(w.r_out.value() * px_mrad, rel=1e-3)
    w.r_out_cal.setValue(3.15)  # typed in mrad: 16 px
    qtbot.waitUntil(lambda: w._worker is None and w._pending is None, timeout=20000)
    assert w.r_out.value() == pytest.approx(16.0, abs=0.01)
    assert w._last_detector.radius_px == pytest.approx(16.0, abs=0.01)
    w.r_out.setValue(4.0)  # typed in px: 0.7875 mrad
    qtbot.waitUntil(lambda: w._worker is None and w._pending is None, timeout=20000)
    assert w.r_out_cal.value() == pytest.approx(4.0 * px_mrad, rel=1e-3)


def test_detector_response_mean_com_and_icom(widget, qtbot, stall_detector):
    """Per-detector response: Mean = Sum / detector pixels; CoM, |CoM| and iCoM from the core's
    center_of_mass restricted to the detector (known answers computed here the naive way)."""
    from napari_4dstem.analysis.virtual.com import center_of_mass
    from napari_4dstem.analysis.virtual.dpc import dpc, idpc

    viewer, w = widget
    det = w._last_detector
    cube = np.asarray(viewer.layers["strained_crystal"].data)

    def shown(response):
        w.response_combo.setCurrentText(response)
        qtbot.waitUntil(
            lambda: (
                w._worker is None
                and w._pending is None
                and w.last_image.params.get("response", "sum").lower() == response.lower()
            ),
            timeout=30000,
        )
        return w.last_image.data

    mask = det.render(cube.shape[2:])
    with stall_detector.excluded("reference"):
        naive_sum = (cube.astype(np.float64) * mask).sum(axis=(2, 3))
    np.testing.assert_allclose(shown("Mean"), naive_sum / mask.sum(), rtol=1e-9)
    with stall_detector.excluded("reference"):
        w_img = cube.astype(np.float64) * mask
        yy = np.arange(cube.shape[2])[None, None, :, None]
        naive_com_y = (w_img * yy).sum(axis=(2, 3)) / w_img.sum(axis=(2, 3))
        com = center_of_mass(cube, detector=det)
    np.testing.assert_allclose(shown("CoM y"), naive_com_y, atol=1e-6)
    np.testing.assert_allclose(shown("|CoM|"), dpc(com, descan="mean").channel("magnitude"), atol=1e-9)
    np.testing.assert_allclose(shown("iCoM"), idpc(dpc(com, descan="mean")).data, atol=1e-9)
    # Max and Std of the pixels under the detector; divergence and curl of the CoM shifts
    with stall_detector.excluded("reference"):
        vals = cube[:, :, mask.astype(bool)].astype(np.float64)
        d = dpc(com, descan="mean")
        uy, ux = d.channel("dpc_y"), d.channel("dpc_x")
        duy_dy, duy_dx = np.gradient(uy)
        dux_dy, dux_dx = np.gradient(ux)
    np.testing.assert_array_equal(shown("Max"), vals.max(-1))
    np.testing.assert_allclose(shown("Std"), vals.std(-1), rtol=1e-12)
    np.testing.assert_allclose(shown("Divergence"), dux_dx + duy_dy, atol=1e-12)
    np.testing.assert_allclose(shown("Curl"), duy_dx - dux_dy, atol=1e-12)
    np.testing.assert_array_equal(shown("Sum"), _reference(viewer, det))


def test_rgb_composite_of_three_presets(widget, qtbot):
    from napari_4dstem.widgets.virtual import rgb_composite

    viewer, w = widget
    qtbot.waitUntil(lambda: w.presets_ready, timeout=60000)
    w.rgb_btn.click()  # HAADF / ABF / BF
    rgb = w.last_rgb
    assert rgb.shape == (*viewer.layers["strained_crystal"].data.shape[:2], 3)
    for i, name in enumerate(("HAADF", "ABF", "BF")):
        img = _reference(viewer, w._preset_cache[name][0])
        lo, hi = np.percentile(img, [0.1, 99.9])
        np.testing.assert_allclose(rgb[..., i], np.clip((img - lo) / (hi - lo), 0, 1), atol=1e-6)
    assert "RGB: HAADF / ABF / BF" in w.realspace.label.text()
    from napari_4dstem.widgets._results import results_viewer

    rs = results_viewer(viewer, create=False)
    np.testing.assert_array_equal(rs.layers["virtual image RGB"].data, rgb)
    assert rs.layers["virtual image RGB"].visible and rs.layers["virtual image RGB"].rgb
    assert rgb_composite([np.zeros((2, 2))] * 3).max() == 0.0  # a flat image: no division by 0


def test_point_detector_and_hover_readout(widget, qtbot, stall_detector):
    """A Point detector is the one pixel at the centre fields; hovering the real-space view reads
    out the pixel and value under the mouse without moving the scan position."""
    viewer, w = widget
    w.kind_combo.setCurrentText("Point")
    w.cy.setValue(60.0)
    w.cx.setValue(70.0)
    qtbot.waitUntil(
        lambda: (
            w._worker is None
            and w._pending is None
            and w._last_detector.rows == (60, 61)
            and w._last_detector.cols == (70, 71)
        ),
        timeout=20000,
    )
    assert w.kind_combo.currentText() == "Point"
    cube = viewer.layers["strained_crystal"]
    with stall_detector.excluded("reference"):
        expected = np.asarray(cube.data)[:, :, 60, 70].astype(np.float64)
    np.testing.assert_array_equal(w.last_image.data, expected)
    before = tuple(viewer.dims.point[:2])
    from napari_4dstem.widgets._results import results_viewer

    rs = results_viewer(viewer, create=False)
    sy, sx = cube.scale[:2]
    w.realspace._hover(rs, (4.3 * sy, 8.6 * sx))  # what the canvas's mouse-move callback calls
    # the pixel, its centre in the scan's units (the sample's 1 nm steps) and the value
    assert w.realspace.readout.text() == f"scan_y 4, scan_x 9 (4, 9 nm): {float(np.float32(expected[4, 9])):.6g}"
    assert tuple(viewer.dims.point[:2]) == before


def test_copy_as_python_reproduces_the_image(widget, qtbot, tmp_path, run_copied_script, stall_detector):
    """The dock's Sum image is the imaging pipeline's result: the copied script opens the file,
    runs ``run_virtual`` and saves what the dock shows (equal arrays), also for a preset."""
    from qtpy.QtWidgets import QApplication

    from napari_4dstem.io import emd

    _, w = widget
    w.copy_btn.click()
    code = QApplication.clipboard().text()
    assert "run_virtual(" in code and "VirtualImageParams(" in code and "open_datacube(" in code
    run_copied_script(code, tmp_path)
    with stall_detector.excluded("reference"):
        again = emd.read(tmp_path / "result.h5")
    (node,) = [k for k in again if k.startswith("virtual_")]
    np.testing.assert_array_equal(again[node].data, w.last_image.data)
    assert again[node].params["recipe"]["workflow"] == "virtual"
    qtbot.waitUntil(lambda: w.presets_ready, timeout=60000)
    w.presets["HAADF"].click()
    assert w.result is w._preset_cache["HAADF"][1]
    text = w.copy_as_python()
    assert "'annulus'" in text
    (tmp_path / "haadf").mkdir()
    run_copied_script(text, tmp_path / "haadf")
    with stall_detector.excluded("reference"):
        again = emd.read(tmp_path / "haadf" / "result.h5")
    np.testing.assert_array_equal(again["virtual_annulus"].data, w.last_image.data)


def test_save_keep_and_the_responses_without_a_recipe(widget, qtbot, tmp_path, stall_detector):
    """Save result writes the image with its recipe (reopens with it); Keep lists it in the
    Results dock; a CoM response and a drawn mask say why they have no script."""
    from napari_4dstem.io import emd
    from napari_4dstem.pipelines import recipe_of
    from napari_4dstem.widgets.results_list import session_results

    viewer, w = widget
    out = w.save_result(tmp_path / "v.h5")
    qtbot.waitUntil(lambda: (tmp_path / "v.h5").exists() and not w.jobs.busy, timeout=20000)
    assert out is True  # the file is written in a worker
    with stall_detector.excluded("reference"):
        objs = emd.read(tmp_path / "v.h5")
    (img,) = objs.values()
    np.testing.assert_array_equal(img.data, w.last_image.data)
    assert recipe_of(img).params["virtual"].detectors == (w._last_detector.to_params(),)
    name = w.keep()
    assert name == "virtual disk" and session_results(viewer).results[name] is w.result
    w.response_combo.setCurrentText("CoM y")
    qtbot.waitUntil(lambda: w._worker is None and w.last_image.params.get("response") == "CoM y", timeout=20000)
    assert w.result is None
    assert w.copy_as_python() is None and "not a pipeline result" in w.status.text()
    assert w.keep() is None
    w.response_combo.setCurrentText("Sum")
    qtbot.waitUntil(lambda: w._worker is None and w.result is not None, timeout=20000)
    from napari_4dstem.analysis.virtual.detectors import MaskDetector

    mask = np.zeros(viewer.layers["strained_crystal"].data.shape[2:], bool)
    mask[60:70, 60:70] = True
    w.set_detector(MaskDetector(mask))
    qtbot.waitUntil(
        lambda: (
            w._worker is None
            and w.result is not None
            and w.result.recipe.params["virtual"].detectors[0]["kind"] == "mask"
        ),
        timeout=20000,
    )
    assert w.copy_as_python() is None and "mask drawn in napari" in w.status.text()


def test_several_detectors_each_with_its_layer_and_image(widget, qtbot, stall_detector):
    """Add detector keeps the live detector as a coloured layer with its own image in the Real
    space dock; dragging it recomputes that image only; the extras join the RGB composite and
    the session state; deleting the layer removes the detector and its image."""
    from napari_4dstem.widgets._results import results_viewer

    viewer, w = widget
    bf = w._last_detector
    assert w.add_detector() == "detector 1"
    ring = AnnulusDetector((63.5, 64.5), 14.0, 40.0)
    w.set_detector(ring)
    qtbot.waitUntil(lambda: w._worker is None and w._pending is None and w._last_detector == ring, timeout=20000)
    assert w.add_detector() == "detector 2"
    qtbot.waitUntil(lambda: not w.extras.busy and len(w.extras.cache()) == 2, timeout=30000)
    rs = results_viewer(viewer, create=False)
    assert {"virtual: detector 1", "virtual: detector 2"} <= {lyr.name for lyr in rs.layers}
    with stall_detector.excluded("reference"):
        np.testing.assert_array_equal(rs.layers["virtual: detector 1"].data, _reference(viewer, bf))
        np.testing.assert_array_equal(rs.layers["virtual: detector 2"].data, _reference(viewer, ring))
    colors = {tuple(np.round(viewer.layers[n].edge_color[0], 2)) for n in ("detector 1", "detector 2")}
    assert len(colors) == 2  # each its own colour
    # drag detector 1 (as napari does: new shapes data): only its image follows
    moved = DiskDetector((bf.center_px[0] + 5, bf.center_px[1]), bf.radius_px)
    from napari_4dstem.widgets.virtual import detector_to_shapes

    data, types = detector_to_shapes(moved)
    viewer.layers["detector 1"].data = list(zip(data, types, strict=True))
    from napari_4dstem.widgets.virtual import _same_detector

    item = w.extras.items["detector 1"]  # read back from the layer (float32 vertices)
    qtbot.waitUntil(
        lambda: (
            _same_detector(item.detector, moved)
            and not w.extras.busy
            and item.result.recipe.params["virtual"].detectors[0] == item.detector.to_params()
        ),
        timeout=30000,
    )
    with stall_detector.excluded("reference"):
        np.testing.assert_array_equal(rs.layers["virtual: detector 1"].data, _reference(viewer, item.detector))
    # RGB composite of extras and a preset; session state lists them
    qtbot.waitUntil(lambda: w.presets_ready, timeout=60000)
    rgb = w.show_rgb(("detector 2", "detector 1", "BF"))
    assert rgb is not None and rgb.shape[-1] == 3
    assert [cb.findText("detector 2") >= 0 for cb in w.rgb_combos] == [True] * 3
    assert w.extra_state()["extra_detectors"] == [item.detector.to_params(), ring.to_params()]
    viewer.layers.remove("detector 2")
    assert "detector 2" not in w.extras.items and "virtual: detector 2" not in rs.layers
    assert w.rgb_combos[0].findText("detector 2") < 0


def test_region_on_real_space_any_shape_sum_mean_max(widget, qtbot, stall_detector):
    """A region drawn on the Real space dock (rectangle, then an ellipse): the region pattern is
    the Sum / Mean / Max over exactly the positions inside, labelled with their number."""
    from napari_4dstem.widgets._region import REGION_SHAPES
    from napari_4dstem.widgets._results import results_viewer
    from napari_4dstem.widgets.virtual import REGION_LAYER

    viewer, w = widget
    cube = np.asarray(viewer.layers["strained_crystal"].data)
    w.region_btn.click()
    rs = results_viewer(viewer, create=False)
    assert REGION_SHAPES in rs.layers and "virtual image" in rs.layers
    qtbot.waitUntil(lambda: REGION_LAYER in viewer.layers and not w.region.runner.busy, timeout=30000)
    mask = w.region.mask()
    n = int(mask.sum())
    assert n == (cube.shape[0] // 2) * (cube.shape[1] // 2)  # the central quarter
    with stall_detector.excluded("reference"):
        np.testing.assert_array_equal(viewer.layers[REGION_LAYER].data, cube[mask].sum(0, dtype=np.float64))
    assert w.status.text().startswith(f"Σ over {n} positions")
    # an ellipse instead: napari's own masks of it, any reduction
    ell = np.array([[2.5, 3.5], [2.5, 14.5], [11.5, 14.5], [11.5, 3.5]])
    rs.layers[REGION_SHAPES].data = [(ell, "ellipse")]
    w.region_reduce.setCurrentText("Max")
    qtbot.waitUntil(lambda: not w.region.runner.busy and w.status.text().startswith("max over"), timeout=30000)
    mask = w.region.mask()
    assert 0 < mask.sum() < 12 * 9 and not mask[0, 0]
    with stall_detector.excluded("reference"):
        np.testing.assert_array_equal(viewer.layers[REGION_LAYER].data, cube[mask].max(0))
    w.region_reduce.setCurrentText("Mean")
    qtbot.waitUntil(lambda: not w.region.runner.busy and w.status.text().startswith("mean over"), timeout=30000)
    with stall_detector.excluded("reference"):
        np.testing.assert_allclose(viewer.layers[REGION_LAYER].data, cube[mask].mean(0, dtype=np.float64), rtol=1e-12)


def test_the_live_image_is_on_the_real_space_canvas_and_clicks_pick_the_exact_pixel(
    make_napari_viewer, qtbot, stall_detector
):
    """UX point 3: the live virtual image is the layer "virtual image" of the Real space canvas
    (the window's second napari canvas), updated in place; clicks anywhere inside a scan pixel
    pick that pixel, a drag moves the scan during the drag (not the camera), the crosshair sits
    on the pixel centre, and a closed Real space dock comes back with the next image."""
    from napari_4dstem.widgets._common import scan_position
    from napari_4dstem.widgets._multiview import crosshair_position, is_embedded_alive, send_mouse
    from napari_4dstem.widgets._results import REAL_SPACE_DOCK, results_viewer

    viewer = make_napari_viewer(show=True)
    with stall_detector.excluded("first layer add"):
        viewer.open_sample("napari-4dstem", "strained_crystal")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None, timeout=20000)
    cube = viewer.layers["strained_crystal"]
    rs = results_viewer(viewer, create=False)
    assert rs is not None and is_embedded_alive(rs) and REAL_SPACE_DOCK in viewer.window.dock_widgets
    layer = rs.layers["virtual image"]
    np.testing.assert_array_equal(layer.data, _reference(viewer, w._last_detector))
    assert tuple(layer.scale) == tuple(cube.scale[:2])  # in scan units, beside the other maps
    # a new detector: the same layer, new data (set in place, never re-added)
    w.set_detector(AnnulusDetector((63.5, 64.5), 14.0, 40.0))
    qtbot.waitUntil(
        lambda: w._worker is None and w._pending is None and isinstance(w._last_detector, AnnulusDetector),
        timeout=20000,
    )
    assert rs.layers["virtual image"] is layer
    assert [lyr.name for lyr in rs.layers].count("virtual image") == 1
    with stall_detector.excluded("reference"):
        np.testing.assert_array_equal(layer.data, _reference(viewer, w._last_detector))
    # clicks through the canvas: anywhere inside a pixel picks it (napari draws pixel i over
    # i - 1/2 .. i + 1/2 scan steps)
    sy, sx = cube.scale[:2]
    ny, nx = cube.data.shape[:2]
    for iy, ix in [(0, 0), (ny - 1, nx - 1), (3, 4), (5, 7), (10, 1), (6, 6)]:
        for dy, dx in ((0.0, 0.0), (0.4, 0.4), (-0.4, -0.4), (0.4, -0.4)):
            world = ((iy + dy) * sy, (ix + dx) * sx)
            send_mouse(rs, "press", world)
            send_mouse(rs, "release", world)
            assert scan_position(viewer, cube) == (iy, ix), (iy, ix, dy, dx)
            # on the pixel's centre
            assert tuple(viewer.dims.point[:2]) == pytest.approx((iy * sy, ix * sx))
            stall_detector.step()  # one click, one user action
    # a drag: the scan follows at every move (napari throttles mouse moves to one per 5 ms)
    send_mouse(rs, "press", (2 * sy, 2 * sx))
    for k in range(3, 9):
        send_mouse(rs, "move", ((k + 0.3) * sy, (2 * k - 0.2) * sx))
        qtbot.waitUntil(lambda k=k: scan_position(viewer, cube) == (k, 2 * k), timeout=2000)
        stall_detector.step()
    send_mouse(rs, "release", (8.3 * sy, 15.8 * sx))
    assert crosshair_position(rs) == pytest.approx((8 * sy, 16 * sx))
    np.testing.assert_array_equal(np.asarray(cube._slice.image.raw), np.asarray(cube.data[8, 16]))
    # hovering reads out the pixel and value without moving the scan
    qtbot.wait(20)  # past napari's mouse-move throttle: a hover, not the drag's last move
    send_mouse(rs, "move", (4.2 * sy, 9.4 * sx))
    text = f"scan_y 4, scan_x 9 (4, 9 nm): {float(np.float32(layer.data[4, 9])):.6g}"
    qtbot.waitUntil(lambda: w.realspace.readout.text() == text, timeout=2000)
    assert scan_position(viewer, cube) == (8, 16)
    # closed: the next image opens the dock again, with the live image
    viewer.window.remove_dock_widget(viewer.window.dock_widgets[REAL_SPACE_DOCK])
    qtbot.waitUntil(lambda: not is_embedded_alive(rs), timeout=5000)
    w.set_detector(DiskDetector((63.5, 64.5), 6.0))
    qtbot.waitUntil(
        lambda: w._worker is None and w._pending is None and isinstance(w._last_detector, DiskDetector), timeout=20000
    )
    rs2 = results_viewer(viewer, create=False)
    assert rs2 is not None and rs2 is not rs and is_embedded_alive(rs2)
    with stall_detector.excluded("reference"):
        np.testing.assert_array_equal(rs2.layers["virtual image"].data, _reference(viewer, w._last_detector))


def test_each_extra_detector_has_its_own_response(widget, qtbot, stall_detector):
    """UX points 9-10: an extra detector's response (its row in the dock) recomputes its image
    alone; the live image and the other extras stay; sessions keep the responses."""
    from napari_4dstem.widgets._results import results_viewer

    viewer, w = widget
    bf = w._last_detector
    assert w.add_detector() == "detector 1"
    ring = AnnulusDetector((63.5, 64.5), 14.0, 40.0)
    w.set_detector(ring)
    qtbot.waitUntil(lambda: w._worker is None and w._pending is None and w._last_detector == ring, timeout=20000)
    assert w.add_detector() == "detector 2"
    qtbot.waitUntil(lambda: not w.extras.busy and len(w.extras.cache()) == 2, timeout=30000)
    rs = results_viewer(viewer, create=False)
    live = rs.layers["virtual image"].data.copy()
    d1, d2 = w.extras.items["detector 1"], w.extras.items["detector 2"]
    before2 = d2.result
    assert d1.combo.isVisibleTo(w) and d1.combo.currentText() == "Sum"
    cube = np.asarray(viewer.layers["strained_crystal"].data)
    with stall_detector.excluded("reference"):
        vals = cube[:, :, bf.render(cube.shape[2:]).astype(bool)].astype(np.float64)
    d1.combo.setCurrentText("Std")
    qtbot.waitUntil(lambda: not w.extras.busy and d1.result.params.get("response") == "Std", timeout=30000)
    np.testing.assert_allclose(rs.layers["virtual: detector 1"].data, vals.std(-1), rtol=1e-12)
    d1.combo.setCurrentText("Max")
    qtbot.waitUntil(lambda: not w.extras.busy and d1.result.params.get("response") == "Max", timeout=30000)
    np.testing.assert_array_equal(rs.layers["virtual: detector 1"].data, vals.max(-1))
    assert d2.result is before2  # not recomputed
    np.testing.assert_array_equal(rs.layers["virtual image"].data, live)
    # the RGB composite takes any response; the session keeps them
    rgb = w.show_rgb(("detector 1", "detector 2", "detector 1"))
    assert rgb is not None and rgb.shape[-1] == 3
    state = w.extra_state()
    assert state["extra_responses"] == ["Max", "Sum"]
    w.restore_extra(state)
    qtbot.waitUntil(
        lambda: len(w.extras.items) == 2 and not w.extras.busy and len(w.extras.cache()) == 2, timeout=30000
    )
    assert [it.response for it in w.extras.items.values()] == ["Max", "Sum"]


def test_wedge_mask_file_and_centre_in_mrad(widget, qtbot, tmp_path, stall_detector):
    """UX point 6: a Wedge from the fields, drawn as a polygon and dragged; a mask from a .npy
    file of the detector's shape (another shape: a one-line error, the detector stays); the
    centre typed in mrad from the origin (the detected BF disk here) moves it in px."""
    from napari_4dstem.analysis.virtual.detectors import MaskDetector, WedgeDetector
    from napari_4dstem.widgets.virtual import MASK_LAYER

    viewer, w = widget

    def settled():
        qtbot.waitUntil(lambda: w._worker is None and w._pending is None, timeout=20000)

    bf_center = w._bf.center_px
    w.kind_combo.setCurrentText("Wedge")
    w.r_out.setValue(30.0)  # outer first: an inner radius beyond the outer one is refused (S7)
    w.r_in.setValue(10.0)
    w.a_start.setValue(-30.0)
    w.a_end.setValue(60.0)
    settled()
    det = w._last_detector
    assert det == WedgeDetector((w.cy.value(), w.cx.value()), 10.0, 30.0, -30.0, 60.0)
    with stall_detector.excluded("reference"):
        np.testing.assert_array_equal(w.last_image.data, _reference(viewer, det))
    layer = viewer.layers[DETECTOR_LAYER]
    qtbot.waitUntil(lambda: len(layer.data) == 1 and layer.shape_type[0] == "polygon", timeout=5000)
    np.testing.assert_allclose(layer.data[0], det.polygon(), atol=1e-4)
    # dragging the polygon moves the wedge (radii and angles stay)
    layer.data = [(layer.data[0] + np.array([3.0, -2.0]), "polygon")]
    settled()
    moved = w._last_detector
    assert isinstance(moved, WedgeDetector) and (moved.inner_px, moved.outer_px, moved.start_deg, moved.end_deg) == (
        10.0,
        30.0,
        -30.0,
        60.0,
    )
    assert moved.center_px == pytest.approx((det.center_px[0] + 3.0, det.center_px[1] - 2.0), abs=1e-3)
    with stall_detector.excluded("reference"):
        np.testing.assert_array_equal(w.last_image.data, _reference(viewer, moved))
    # the centre in mrad from the origin (0.01 1/A per px at 300 kV: 1.575 mrad = 8 px)
    px_mrad = 1.575 / 8.0
    assert w.cy_cal.isEnabled() and "mrad" in w._form.labelForField(w.cy_cal).text()
    assert w.cy_cal.value() == pytest.approx((w.cy.value() - bf_center[0]) * px_mrad, abs=1e-3)
    w.cx_cal.setValue(-0.7875)  # 4 px left of the origin
    settled()
    # the px field holds 2 decimals: the fitted BF centre (64.2135 px) is kept to 0.005 px
    assert w._last_detector.center_px[1] == pytest.approx(bf_center[1] - 4.0, abs=0.006)
    # a mask file of the detector's shape
    shape = viewer.layers["strained_crystal"].data.shape[2:]
    m = np.zeros(shape, bool)
    m[20:40, 70:100] = True
    m[90:95, 10:60] = True
    np.save(tmp_path / "mask.npy", m)
    np.save(tmp_path / "small.npy", m[:64, :64])
    before = w._last_detector
    assert w.load_mask_file(tmp_path / "small.npy") is None
    assert "has shape (64, 64), the detector is" in w.status.text() and w._last_detector is before
    assert w.load_mask_file(tmp_path / "mask.npy") is not None
    settled()
    assert isinstance(w._last_detector, MaskDetector) and w.kind_combo.currentText() == "Mask file"
    with stall_detector.excluded("reference"):
        cube = np.asarray(viewer.layers["strained_crystal"].data)
        np.testing.assert_array_equal(w.last_image.data, cube[:, :, m].sum(-1, dtype=np.float64))
    qtbot.waitUntil(lambda: MASK_LAYER in viewer.layers and viewer.layers[MASK_LAYER].visible, timeout=5000)
    np.testing.assert_array_equal(viewer.layers[MASK_LAYER].data, m.astype(np.float32))
    assert w.extra_state()["detector"]["path"] == str((tmp_path / "mask.npy").resolve())
    w.kind_combo.setCurrentText("Disk")
    settled()
    qtbot.waitUntil(lambda: not viewer.layers[MASK_LAYER].visible, timeout=5000)
    assert isinstance(w._last_detector, DiskDetector)


def test_a_scan_step_draws_no_real_space_canvas_and_refreshes_no_layer_there(make_napari_viewer, qtbot, stall_detector):
    """UX point 4: a scan step with the Virtual imaging dock open costs napari's own step (the
    pattern sliced and painted) and nothing on the Real space canvas: the crosshair is a Qt
    overlay over that canvas, so the canvas is not drawn again (the vispy cross drew it once a
    step), and no layer of it is refreshed (a Points crosshair's ``data`` setter refreshed the
    layer, its thumbnail and the layer list: 16 ms of GUI CPU a step); no layer of the main
    viewer but the 4D one gets new data."""
    from napari_4dstem.widgets._multiview import crosshair_position, draw_events
    from napari_4dstem.widgets._results import results_viewer

    viewer = make_napari_viewer(show=True)
    with stall_detector.excluded("first layer add"):
        viewer.open_sample("napari-4dstem", "strained_crystal")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    qtbot.waitUntil(lambda: w.presets_ready and w._worker is None, timeout=30000)
    qtbot.wait(100)
    cube = viewer.layers["strained_crystal"]
    rs = results_viewer(viewer, create=False)
    counts: dict[str, int] = {}

    def counter(key):
        def count(event=None):
            counts[key] = counts.get(key, 0) + 1

        return count

    for v, where in ((rs, "real space"), (viewer, "main")):
        for lyr in v.layers:
            for ev in ("set_data", "thumbnail", "data"):
                if hasattr(lyr.events, ev):
                    getattr(lyr.events, ev).connect(counter(f"{where}: {lyr.name}.{ev}"))
    qtbot.wait(200)  # the canvas settled after the presets' images
    draw_events(rs).connect(counter("real space draws"))
    n = 12
    ny, nx = cube.data.shape[:2]
    for i in range(n):
        iy, ix = (7 * i + 3) % ny, (5 * i + 1) % nx
        w.set_scan_position(iy, ix)
        assert crosshair_position(rs) == pytest.approx((iy * cube.scale[0], ix * cube.scale[1]))
        qtbot.wait(30)
        stall_detector.step()
    assert counts.pop("real space draws", 0) == 0
    # the pattern sliced once a step (both scan axes set in one event), nothing else touched
    assert counts == {f"main: {cube.name}.set_data": n, f"main: {cube.name}.thumbnail": n}


def test_grid_of_apertures_one_image_each_and_a_combined_image(widget, qtbot, stall_detector):
    """UX points 6 and 9: a Grid detector (rows x cols apertures, pitch, rotation) from the
    fields, drawn as one circle per aperture, its image the sum over all apertures; "Apertures
    as detectors" gives one image per aperture; "Combined image" the image of the weighted sum
    of the masks (live minus half of detector 1 here), each against numpy."""
    from napari_4dstem.analysis.virtual.detectors import GridDetector
    from napari_4dstem.widgets._results import results_viewer
    from napari_4dstem.widgets.virtual import COMBINED_MAP, DETECTOR_LAYER

    viewer, w = widget
    cube = viewer.layers["strained_crystal"]
    w.kind_combo.setCurrentText("Grid")  # sized from the BF disk: radius r / 2, pitch 2 r
    qtbot.waitUntil(lambda: isinstance(w._last_detector, GridDetector) and w._worker is None, timeout=20000)
    assert w.g_pitch.isEnabled() and not w.r_in.isEnabled()
    for sb, v in ((w.g_rows, 2), (w.g_cols, 3), (w.g_pitch, 21.0), (w.r_out, 6.0), (w.g_rot, 15.0)):
        sb.setValue(v)
        stall_detector.step()
    grid = GridDetector((w.cy.value(), w.cx.value()), 21.0, 6.0, (2, 3), 15.0)
    qtbot.waitUntil(lambda: w._last_detector == grid and w._worker is None and w._pending is None, timeout=20000)
    with stall_detector.excluded("reference"):
        np.testing.assert_array_equal(w.last_image.data, _reference(viewer, grid))
    shapes = viewer.layers[DETECTOR_LAYER]
    qtbot.waitUntil(lambda: len(shapes.data) == 6, timeout=5000)
    centres = np.array([np.asarray(d).mean(axis=0) for d in shapes.data])
    np.testing.assert_allclose(centres, grid.centers(), atol=1e-3)
    # one image per aperture, row by row
    names = w.apertures_as_detectors()
    assert names == [f"detector {k}" for k in range(1, 7)]
    qtbot.waitUntil(lambda: not w.extras.busy and len(w.extras.cache()) == 6, timeout=60000)
    rs = results_viewer(viewer, create=False)
    with stall_detector.excluded("reference"):
        for name, ap in zip(names, grid.apertures(), strict=True):
            np.testing.assert_array_equal(rs.layers[f"virtual: {name}"].data, _reference(viewer, ap))
    # the weighted combination from the field: live grid - 0.5 x detector 1 (the first aperture)
    w.combine_edit.setText("1, -0.5")
    w.combine_btn.click()
    qtbot.waitUntil(lambda: w.combined_result is not None, timeout=30000)
    with stall_detector.excluded("reference"):
        shape = cube.data.shape[2:]
        weights = grid.render(shape).astype(float) - 0.5 * grid.apertures()[0].render(shape)
        want = np.tensordot(np.asarray(cube.data, dtype=np.float64), weights, axes=((2, 3), (0, 1)))
    np.testing.assert_allclose(rs.layers[COMBINED_MAP].data, want, rtol=1e-9, atol=1e-6)
    assert w.combined.weights == (1.0, -0.5)
    assert COMBINED_MAP in w.status.text()
    w.combine_edit.setText("1, x")
    w.combine_btn.click()
    assert "numbers separated by commas" in w.status.text()


def _mouse(widget, kind: str, x: float) -> None:
    """A left-button mouse event at ``x`` (mid-height) delivered to ``widget``."""
    from qtpy.QtCore import QEvent, QPointF, Qt
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    types = {
        "press": QEvent.Type.MouseButtonPress,
        "move": QEvent.Type.MouseMove,
        "release": QEvent.Type.MouseButtonRelease,
    }
    pos = QPointF(x, widget.height() / 2)
    held = Qt.MouseButton.NoButton if kind == "release" else Qt.MouseButton.LeftButton
    ev = QMouseEvent(
        types[kind], pos, widget.mapToGlobal(pos), Qt.MouseButton.LeftButton, held, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(widget, ev)


def test_histogram_handles_and_power_are_display_only(widget, qtbot, stall_detector):
    """UX point 12: a histogram of the displayed values with the contrast limits as handles;
    dragging the high handle sets the layer's upper limit; Power is napari's gamma of the layer
    (no data sent again, nothing recomputed); a limit set in napari's controls moves the handle."""
    from napari_4dstem.widgets._realspace import HIST_BINS
    from napari_4dstem.widgets._results import results_viewer

    viewer, w = widget
    rs = results_viewer(viewer, create=False)
    layer = rs.layers["virtual image"]
    li, hist = w.realspace, w.realspace.histogram
    img = w.last_image.data.astype(np.float32)
    counts, edges = np.histogram(img, bins=HIST_BINS, range=(float(img.min()), float(img.max())))
    np.testing.assert_array_equal(hist.counts, counts)
    np.testing.assert_allclose(hist.edges, edges)
    assert hist.clim == pytest.approx(tuple(layer.contrast_limits))
    sent = []
    layer.events.data.connect(lambda e=None: sent.append("data"))
    # drag the high handle to a quarter of the widget
    hist.resize(400, 60)
    lo, hi = layer.contrast_limits
    x_hi, x_to = hist.value_to_x(hi), 0.75 * hist.value_to_x(hi) + 0.25 * hist.value_to_x(lo)
    _mouse(hist, "press", x_hi)
    _mouse(hist, "move", (x_hi + x_to) / 2)
    _mouse(hist, "move", x_to)
    _mouse(hist, "release", x_to)
    want = hist.x_to_value(x_to)
    assert layer.contrast_limits[1] == pytest.approx(want, rel=1e-5)
    assert layer.contrast_limits[0] == pytest.approx(lo) and li.displayed_clim == pytest.approx((lo, want))
    stall_detector.step()
    # Power: the exponent on the shader, the same data
    li.scale_combo.setCurrentText("Power")
    assert li.gamma.isEnabled() and layer.gamma == pytest.approx(0.5)
    li.gamma.setValue(0.3)
    assert layer.gamma == pytest.approx(0.3)
    np.testing.assert_array_equal(layer.data, img)
    assert sent == [] and w._worker is None
    li.scale_combo.setCurrentText("Lin")
    assert layer.gamma == 1.0 and not li.gamma.isEnabled()
    stall_detector.step()
    # napari's own contrast control: the handles follow
    layer.contrast_limits = (float(img.min()) + 1.0, float(img.max()) - 1.0)
    assert hist.clim == pytest.approx((float(img.min()) + 1.0, float(img.max()) - 1.0))
    # Log: the histogram of the displayed (log) values
    li.scale_combo.setCurrentText("Log")
    log = np.log10(img - img.min() + 1.0)
    np.testing.assert_array_equal(hist.counts, np.histogram(log, bins=HIST_BINS, range=(0.0, float(log.max())))[0])
    assert layer.gamma == 1.0
    # the canvas got the new values (the layer's ``data`` event is held back: same grid)
    from napari_4dstem.widgets._multiview import _QT

    node = _QT[rs]().qt_viewer.canvas.layer_to_visual[layer].node
    np.testing.assert_allclose(np.asarray(node._data, dtype=np.float64), log, rtol=1e-5)


def test_pattern_statistics_follow_the_scan_and_complex_maps_read_modulus_and_phase(widget, qtbot, stall_detector):
    """UX point 13: the Statistics line of the diffraction view gives min / max / mean / sum / std
    of the pattern at the scan position (computed in a worker once the scan settles); a complex
    map on the Real space canvas is shown by one part and the hover readout gives |z| and phi."""
    from napari_4dstem.widgets._realspace import COMPLEX_KEY, show_complex_map, statistics_text
    from napari_4dstem.widgets._results import results_viewer

    viewer, w = widget
    cube = viewer.layers["strained_crystal"]
    ps = w.pattern_stats
    qtbot.waitUntil(lambda: ps.shown_for is not None and not ps.busy, timeout=20000)
    for iy, ix in ((5, 7), (30, 2)):
        viewer.dims.set_point((0, 1), (float(iy), float(ix)))
        stall_detector.step()
        qtbot.waitUntil(lambda p=(iy, ix): ps.shown_for == p and not ps.busy, timeout=20000)
        with stall_detector.excluded("reference"):
            p = np.asarray(cube.data[iy, ix]).astype(np.float64)
        text = ps.text()
        assert text.startswith(f"pattern ({iy}, {ix}): ")
        for part in (f"min {p.min():.4g}", f"max {p.max():.4g}", f"mean {p.mean():.4g}", f"sum {p.sum():.4g}"):
            assert part in text, (part, text)
        assert f"std {p.std():.4g}" in text and f"({p.size} px)" in text
    assert w.realspace.stats.text().startswith("real space: min ")
    # a complex map: amplitude 2.5, phase 0.75 rad at (4, 9); elsewhere amplitude 1, phase 0
    rs = results_viewer(viewer, create=False)
    z = np.ones((32, 32), np.complex64)
    z[4, 9] = 2.5 * np.exp(0.75j)
    layer = show_complex_map(rs, "object", z, w.datacube()[1], part="phase", colormap="twilight")
    np.testing.assert_allclose(layer.data, np.angle(z))
    assert layer.metadata[COMPLEX_KEY] is not None and layer.dtype == np.float32
    sy, sx = layer.scale
    w.realspace._hover(rs, (4.3 * sy, 8.6 * sx))  # what the canvas's mouse-move callback calls
    want = "object: scan_y 4, scan_x 9 (4, 9 nm): |z| 2.5, phi 0.7500 rad (43.0 deg)"
    assert w.realspace.readout.text() == want
    layer.visible = False  # the virtual image under it is read again
    w.realspace._hover(rs, (4.3 * sy, 8.6 * sx))
    assert w.realspace.readout.text() == f"scan_y 4, scan_x 9 (4, 9 nm): {float(w.last_image.data[4, 9]):.6g}"
    assert statistics_text(z).startswith("|z|: min 1  max 2.5")
    assert "phase of the sum" in statistics_text(z)


def test_lazy_data_exact_image_fills_in_row_blocks_with_progress_and_cancel(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """UX point 7 for lazy data: the exact image of a memory-mapped file fills in row block by
    row block (exact where computed, empty below), with the dock's progress bar, and Cancel stops
    it with the image as far as it got. The disk is made slow (40 ms a block) and the blocks
    small (2 rows), so the job runs long enough to be watched."""
    import time

    from napari_4dstem import Calibration
    from napari_4dstem.analysis.virtual import images
    from napari_4dstem.engine import chunks, driver

    monkeypatch.setattr(driver, "PARTIAL_EVERY_S", 0.0)  # an image at every block (else 2-5 a second)
    monkeypatch.setattr(driver, "_TARGET_BLOCK_BYTES", 2 * 2**20)
    monkeypatch.setattr(chunks, "_TARGET_BLOCK_BYTES", 2 * 2**20)
    real = images._multi_kernel

    def slow_disk(*args, **kwargs):
        time.sleep(0.04)
        return real(*args, **kwargs)

    monkeypatch.setattr(images, "_multi_kernel", slow_disk)
    with stall_detector.excluded("test data"):
        yy, xx = np.mgrid[0:64, 0:64]
        disk = (((yy - 32) ** 2 + (xx - 32) ** 2) < 100).astype(np.float32)
        amp = 100 + 20 * np.sin(yy / 5.0) + 10 * np.cos(xx / 7.0)
        mm = np.lib.format.open_memmap(tmp_path / "cube.npy", mode="w+", dtype=np.float32, shape=(64, 64, 64, 64))
        mm[:] = amp[:, :, None, None] * disk + 1.0
        mm.flush()
        mm = np.load(tmp_path / "cube.npy", mmap_mode="r")
    main = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        main.add_image(mm, name="lazy", metadata={"napari_4dstem": {"calibration": Calibration()}})
    w = VirtualImagingWidget(main)
    shown = []
    set_image = w.realspace.set_image

    def spy(img, cal, **kw):
        if "filling in" in (kw.get("title") or ""):
            shown.append((np.array(img), w.progress.format(), w.progress.isVisibleTo(w)))
        return set_image(img, cal, **kw)

    w.realspace.set_image = spy
    main.window.add_dock_widget(w)
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None, timeout=60000)
    assert not w.progress.isVisibleTo(w)
    with stall_detector.excluded("reference"):
        want = virtual_image(np.asarray(mm), w._last_detector).data
    np.testing.assert_allclose(w.last_image.data, want, rtol=1e-5)
    assert len(shown) >= 3 and w.filled_in == sorted(w.filled_in) and max(w.filled_in) < 1.0
    per_block = set()
    for img, fmt, visible in shown:
        done = ~np.isnan(img).all(axis=1)
        rows = int(done.sum())
        assert done[:rows].all() and 0 < rows < 64  # a prefix of whole rows, the rest empty
        np.testing.assert_allclose(img[:rows], want[:rows], rtol=1e-5)
        # the dock's progress bar: "virtual image: k / n blocks", k row blocks shown
        assert visible and fmt.startswith("virtual image: ") and fmt.endswith(" blocks")
        k, n = (int(v) for v in fmt[len("virtual image: ") : -len(" blocks")].split(" / "))
        assert n >= 3 and rows % k == 0
        per_block.add((rows // k, n))
    assert len(per_block) == 1  # the same row blocks throughout
    # Cancel: a new detector, then Cancel once its image has begun to fill in
    before = len(w.filled_in)
    stall_detector.step()
    w.r_out.setValue(w.r_out.value() + 3.0)
    qtbot.waitUntil(lambda: len(w.filled_in) > before, timeout=60000)
    t0 = time.perf_counter()
    w.cancel_btn.click()
    qtbot.waitUntil(lambda: w._worker is None, timeout=30000)
    took = time.perf_counter() - t0
    assert w.status.text() == "cancelled" and not w.progress.isVisibleTo(w)
    layer = w.realspace.layer
    assert np.isnan(layer.data).any() and np.isfinite(layer.data).any()  # as far as it got
    assert w.filled_in[-1] < 1.0
    print(f"lazy fill-in: {len(shown)} partial images in the first job; cancel took {took:.3f} s")
    assert took < 1.0  # one block (40 ms) plus the event loop on a loaded machine


def test_lazy_data_every_response_fills_in_but_icom(make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch):
    """UX point 7 beyond the Sum: on a memory-mapped file, Mean, Max, Std, CoM x, |CoM|, Divergence
    and Curl fill in row block by row block with the dock's progress bar (exact rows for the
    per-pattern ones, the rows whose neighbours are in for the derivatives, |CoM| from the mean CoM
    so far); iCoM shows only the progress and its image once the whole field is in. Each final
    image equals the core's on the array in memory (the core against numpy: test_responses)."""
    import time

    from napari_4dstem import Calibration
    from napari_4dstem.analysis.virtual import com as com_mod
    from napari_4dstem.analysis.virtual import images, statistics
    from napari_4dstem.engine import chunks, driver

    monkeypatch.setattr(driver, "PARTIAL_EVERY_S", 0.0)
    monkeypatch.setattr(driver, "_TARGET_BLOCK_BYTES", 2 * 2**20)
    monkeypatch.setattr(chunks, "_TARGET_BLOCK_BYTES", 2 * 2**20)
    for mod, name in ((images, "_multi_kernel"), (com_mod, "_com_masked_kernel"), (statistics, "_statistic_kernel")):
        real = getattr(mod, name)

        def slow(*args, _real=real, **kwargs):
            time.sleep(0.02)  # long enough a job to be watched
            return _real(*args, **kwargs)

        monkeypatch.setattr(mod, name, slow)
    with stall_detector.excluded("test data"):
        from napari_4dstem.analysis.virtual.responses import detector_response

        yy, xx = np.mgrid[0:64, 0:64]
        ky, kx = np.mgrid[0:64, 0:64]
        cy, cx = 32 + 2 * np.sin(yy / 6.0), 32 + 2 * np.cos(xx / 5.0)  # a disk moving over the scan
        mm = np.lib.format.open_memmap(tmp_path / "cube.npy", mode="w+", dtype=np.float32, shape=(64, 64, 64, 64))
        for i in range(64):
            r2 = (ky[None] - cy[i, :, None, None]) ** 2 + (kx[None] - cx[i, :, None, None]) ** 2
            mm[i] = np.where(r2 < 100, 100 + 10 * np.sin(xx[i, :, None, None] / 7.0), 1.0)
        mm.flush()
        mm = np.load(tmp_path / "cube.npy", mmap_mode="r")
        arr = np.asarray(mm)
    main = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        main.add_image(mm, name="lazy", metadata={"napari_4dstem": {"calibration": Calibration()}})
    w = VirtualImagingWidget(main)
    shown = []
    set_image = w.realspace.set_image

    def spy(img, cal, **kw):
        if "filling in" in (kw.get("title") or ""):
            shown.append((np.array(img), kw["title"], w.progress.format()))
        return set_image(img, cal, **kw)

    w.realspace.set_image = spy
    main.window.add_dock_widget(w)
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None, timeout=60000)
    det = w._last_detector
    set_text = w.status.setText
    statuses = []

    def status_spy(text):
        statuses.append(text)
        return set_text(text)

    w.status.setText = status_spy
    keys = {"Mean": "mean", "Max": "max", "Std": "std", "CoM x": "com_x", "|CoM|": "com_magnitude"}
    keys.update({"Divergence": "divergence", "Curl": "curl", "iCoM": "icom"})
    for response, key in keys.items():
        shown.clear()
        statuses.clear()
        w.response_combo.setCurrentText(response)
        want_resp = "mean" if response == "Mean" else response
        qtbot.waitUntil(
            lambda r=want_resp: w._worker is None and w._pending is None and w.last_image.params.get("response") == r,
            timeout=60000,
        )
        with stall_detector.excluded("reference"):
            want = detector_response(arr, det, key).data
        np.testing.assert_allclose(w.last_image.data, want, rtol=1e-5, atol=1e-6 * np.nanmax(np.abs(want)))
        if key == "icom":
            assert not shown  # no image until the whole field is in, only the progress
            assert any("integrates the whole CoM field" in s for s in statuses)
            continue
        assert len(shown) >= 3, response
        for img, title, fmt in shown:
            rows = int((~np.isnan(img).all(axis=1)).sum())
            assert 0 < rows < 64 and np.isnan(img[rows:]).all(), response
            assert fmt.startswith("virtual image: ") and fmt.endswith(" blocks")
            assert title.startswith(f"virtual image ({response}): filling in, ")
            if key == "com_magnitude":
                assert "from the mean CoM" in title
                continue  # provisional: the mean CoM changes with every block
            tol = {"rtol": 1e-5, "atol": 1e-5 * float(np.nanmax(np.abs(want)))}
            np.testing.assert_allclose(img[:rows], want[:rows], **tol)  # exact where shown
            if key in ("divergence", "curl"):
                assert "waits for the next one" in title


def test_detector_toolbar_on_the_canvas_sets_the_kind_and_follows_the_dock(
    widget, qtbot, stall_detector, tmp_path, monkeypatch
):
    """UX point 6: a row of detector buttons right above the diffraction canvas (in napari's main
    window, not in the dock). Each click changes the detector (keeping its size) and its image,
    exact against numpy; the dock's kind list and the toolbar follow each other; Reset puts the
    BF detector back on the detected disk; closing the dock takes the row off the canvas."""
    from napari_4dstem.analysis.virtual.detectors import GridDetector, MaskDetector, RectangleDetector, WedgeDetector
    from napari_4dstem.widgets._detectors import TOOLBAR_KINDS

    viewer, w = widget
    tb = w.toolbar
    assert tb.on_canvas and list(TOOLBAR_KINDS)[:6] == ["Disk", "Annulus", "Rectangle", "Point", "Wedge", "Grid"]
    assert list(TOOLBAR_KINDS)[6:] == ["Polygon", "Mask file..."]
    canvas = viewer.window._qt_viewer.canvas.native  # test only: where napari's canvas is
    holder = canvas.parentWidget()
    assert tb.widget.parentWidget() is holder and tb.widget.isVisibleTo(holder)  # the window is not shown in tests
    assert holder.layout().indexOf(tb.widget) == holder.layout().indexOf(canvas) - 1  # right above it
    assert not w.isAncestorOf(tb.widget)
    assert tb.buttons["Disk"].isChecked() and sum(b.isChecked() for b in tb.buttons.values()) == 1
    expect = {
        "Annulus": lambda d: isinstance(d, AnnulusDetector),
        "Rectangle": lambda d: isinstance(d, RectangleDetector) and d.rows[1] - d.rows[0] > 1,
        "Point": lambda d: isinstance(d, RectangleDetector) and d.rows[1] - d.rows[0] == 1 == d.cols[1] - d.cols[0],
        "Wedge": lambda d: isinstance(d, WedgeDetector),
        "Grid": lambda d: isinstance(d, GridDetector),
        "Disk": lambda d: isinstance(d, DiskDetector),
    }
    for kind, is_it in expect.items():
        stall_detector.step()
        tb.buttons[kind].click()
        assert w.kind_combo.currentText() == kind
        qtbot.waitUntil(
            lambda f=is_it: (
                w._worker is None
                and w._pending is None
                and f(w._last_detector)
                and w.last_image.params["detector"] == w._last_detector.to_params()
            ),
            timeout=30000,
        )
        with stall_detector.excluded("reference"):
            np.testing.assert_array_equal(w.last_image.data, _reference(viewer, w._last_detector))
        assert [k for k, b in tb.buttons.items() if b.isChecked()] == [kind]
    # the other way: the dock's list checks the button; a kind the toolbar lacks checks none
    w.kind_combo.setCurrentText("Annulus")
    assert [k for k, b in tb.buttons.items() if b.isChecked()] == ["Annulus"]
    qtbot.waitUntil(lambda: w._worker is None and w._pending is None, timeout=30000)
    tb.sync("no such kind")
    assert not any(b.isChecked() for b in tb.buttons.values())
    # Polygon: drawn shapes, napari's polygon tool chosen on the detector layer; a drawn square
    # is the detector (its image against numpy)
    tb.buttons["Drawn shapes"].click()
    layer = viewer.layers[DETECTOR_LAYER]
    assert w.kind_combo.currentText() == "Drawn shapes" and layer.mode == "add_polygon"
    assert viewer.layers.selection.active is layer
    qtbot.waitUntil(lambda: w._worker is None and w._pending is None, timeout=30000)
    layer.mode = "pan_zoom"
    layer.data = [(np.array([[50.0, 50.0], [50.0, 70.0], [70.0, 60.0]]), "polygon")]  # a triangle
    with stall_detector.excluded("reference"):
        want = np.any(layer.to_masks(mask_shape=(128, 128)), axis=0)  # napari's rasterisation
    assert 150 < want.sum() < 250
    qtbot.waitUntil(
        lambda: (
            w._worker is None
            and w._pending is None
            and isinstance(w._last_detector, MaskDetector)
            and np.array_equal(w._last_detector.mask, want)
        ),
        timeout=30000,
    )
    with stall_detector.excluded("reference"):
        np.testing.assert_array_equal(w.last_image.data, _reference(viewer, w._last_detector))
    # Mask file...: the file dialog, then that mask is the detector and its button is checked
    with stall_detector.excluded("test file"):
        path = tmp_path / "mask.npy"
        np.save(path, want[::-1].copy())
    monkeypatch.setattr("qtpy.QtWidgets.QFileDialog.getOpenFileName", lambda *a, **k: (str(path), ""))
    tb.buttons["Mask file"].click()
    qtbot.waitUntil(
        lambda: w._worker is None and w._pending is None and np.array_equal(w._last_detector.mask, want[::-1]),
        timeout=30000,
    )
    assert [k for k, b in tb.buttons.items() if b.isChecked()] == ["Mask file"]
    with stall_detector.excluded("reference"):
        np.testing.assert_array_equal(w.last_image.data, _reference(viewer, w._last_detector))
    # Reset: the BF detector on the sample's bright-field disk (radius 8 px)
    tb.reset_btn.click()
    qtbot.waitUntil(
        lambda: w._worker is None and w._pending is None and isinstance(w._last_detector, DiskDetector), timeout=30000
    )
    assert w._last_detector.radius_px == pytest.approx(8.0, abs=0.7)
    assert [k for k, b in tb.buttons.items() if b.isChecked()] == ["Disk"]
    w.close()
    assert holder.layout().indexOf(tb.widget) < 0 and not tb.on_canvas


def test_the_real_space_mode_buttons_act_on_their_own_layer_without_errors(widget, qtbot):
    """UX audit session 13, defect 4: each click of the select / ellipse / polygon / rectangle
    buttons under the Real space canvas raised a ValueError (napari's action ran on the main
    viewer's active layer). Real clicks: no exception, the region layer's mode changes, the main
    viewer's layers keep theirs."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    from napari_4dstem.widgets._multiview import _QT
    from napari_4dstem.widgets._region import REGION_SHAPES
    from napari_4dstem.widgets._results import results_viewer

    viewer, w = widget
    w.region_btn.click()
    qtbot.waitUntil(lambda: REGION_LAYER in viewer.layers and not w.region.runner.busy, timeout=30000)
    rs = results_viewer(viewer, create=False)
    lay = rs.layers[REGION_SHAPES]
    ctrl = _QT[rs]().qt_viewer.controls.widgets[lay]
    detector = viewer.layers[DETECTOR_LAYER]
    for active in (viewer.layers["strained_crystal"], detector):  # an image, then a Shapes layer
        viewer.layers.selection.active = active
        before = active.mode
        for btn, mode in (
            (ctrl.ellipse_button, "add_ellipse"),
            (ctrl.polygon_button, "add_polygon"),
            (ctrl.rectangle_button, "add_rectangle"),
            (ctrl.select_button, "select"),
        ):
            with qtbot.capture_exceptions() as errors:
                QTest.mouseClick(btn, Qt.MouseButton.LeftButton)
            assert [repr(e[1]) for e in errors] == []
            assert str(lay.mode) == mode
            assert active.mode == before  # the main viewer's layer is not the one the button is for


def test_the_region_pattern_label_stays_in_the_dock(widget, qtbot):
    """UX audit session 13, defect 10: "Σ over N positions" was only the status line's, replaced
    by the next message. It stays in the dock's region row while the pattern is shown."""
    viewer, w = widget
    w.region_btn.click()
    qtbot.waitUntil(lambda: REGION_LAYER in viewer.layers and not w.region.runner.busy, timeout=30000)
    n = int(w.region.mask().sum())
    assert w.region_label.isVisibleTo(w) and f"Σ over {n} positions" in w.region_label.text()
    w.set_detector(AnnulusDetector((64.0, 64.0), 20.0, 40.0))  # another action: the status line moves on
    qtbot.waitUntil(lambda: w._worker is None and w._pending is None, timeout=30000)
    w.status.setText("something else")
    assert f"Σ over {n} positions" in w.region_label.text()
    w.region_reduce.setCurrentText("Max")
    qtbot.waitUntil(lambda: not w.region.runner.busy and "max over" in w.region_label.text(), timeout=30000)
    assert f"max over {n} positions" in w.region_label.text()


def test_annulus_inner_radius_typed_beyond_the_outer_is_refused_in_words(widget, qtbot):
    """UX 6 ("Annulus, inner <= outer enforced"), session-15 audit S7: outer 10 typed, then inner
    40 typed (Enter each, as a user does, the first image still computing). The form kept 40 / 10
    while the image was computed with the previous inner radius, and the image's arrival emptied
    the status line. Now the typed inner radius is refused in words and both fields show the
    detector in use, also after its image comes in."""
    from qtpy.QtCore import Qt

    viewer, w = widget
    w.kind_combo.setCurrentText("Annulus")
    qtbot.waitUntil(
        lambda: isinstance(w._last_detector, AnnulusDetector) and w._worker is None and w._pending is None,
        timeout=20000,
    )

    def type_into(sb, text):
        le = sb.lineEdit()
        le.selectAll()
        qtbot.keyClicks(le, text)
        qtbot.keyClick(le, Qt.Key.Key_Return)

    type_into(w.r_out, "10")
    type_into(w.r_in, "40")
    qtbot.waitUntil(lambda: w._worker is None and w._pending is None, timeout=20000)
    det = w._last_detector
    assert isinstance(det, AnnulusDetector) and det.outer_px == 10.0 and det.inner_px < 10.0
    assert (w.r_in.value(), w.r_out.value()) == pytest.approx((det.inner_px, det.outer_px))
    assert "inner radius 40 px must be smaller than the outer radius 10 px" in w.status.text()
    np.testing.assert_array_equal(w.last_image.data, _reference(viewer, det))
    type_into(w.r_in, "6")  # a valid radius: computed, and the refusal is no longer said
    qtbot.waitUntil(
        lambda: w._last_detector.inner_px == 6.0 and w._worker is None and w._pending is None, timeout=20000
    )
    assert "must be smaller" not in w.status.text()
