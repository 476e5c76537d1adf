"""The Bragg disks and strain widget on the strained-crystal sample, scored against its truth."""

import numpy as np
import pytest

from napari_4dstem._sample_data import sample_path
from napari_4dstem.analysis.bragg.disks import detect_in_stack
from napari_4dstem.data.results import DiffractionImage
from napari_4dstem.io import emd
from napari_4dstem.widgets._results import maps_pending, set_results_viewer  # maps: one new layer a turn
from napari_4dstem.widgets.bragg import (
    FIT_LAYER,
    FIT_VECTORS_LAYER,
    LATTICE_LAYER,
    PEAKS_LAYER,
    REFERENCE_LAYER,
    TIPS_LAYER,
    BraggStrainWidget,
    lattice_sites,
    symmetric_limits,
)

from .test_job_cancel import record_yields

pytestmark = pytest.mark.gui


def test_symmetric_limits():
    assert symmetric_limits(np.array([-0.5, 0.1, np.nan, 2.0]), 100) == (-2.0, 2.0)
    assert symmetric_limits(np.zeros(3))[1] > 0


def test_lattice_sites_on_the_detector():
    sites = lattice_sites((10.0, 10.0), (0.0, 4.0), (4.0, 0.0), (20, 20))
    # the grid 10 + 4 * n on 20 x 20 pixels: rows and columns 2, 6, 10, 14, 18
    want = np.array([(y, x) for y in (2, 6, 10, 14, 18) for x in (2, 6, 10, 14, 18)], float)
    assert sorted(map(tuple, sites)) == sorted(map(tuple, want))
    assert lattice_sites((np.nan, 1.0), (0.0, 4.0), (4.0, 0.0), (20, 20)).shape == (0, 2)


def _drag(layer, start, stop, n_moves=3):
    from napari.utils._test_utils import read_only_mouse_event
    from napari.utils.interactions import mouse_move_callbacks, mouse_press_callbacks, mouse_release_callbacks

    mouse_press_callbacks(layer, read_only_mouse_event(type="mouse_press", is_dragging=True, position=start))
    for t in np.linspace(0, 1, n_moves + 1):
        pos = tuple(np.asarray(start) + t * (np.asarray(stop) - np.asarray(start)))
        mouse_move_callbacks(layer, read_only_mouse_event(type="mouse_move", is_dragging=True, position=pos))
    mouse_release_callbacks(layer, read_only_mouse_event(type="mouse_release", is_dragging=True, position=stop))


def test_dragged_lattice_tip_recomputes_the_strain_and_the_scan_shows_the_fitted_lattice(
    make_napari_viewer, qtbot, stall_detector, monkeypatch
):
    """UX point 18: g1/g2 are draggable on the pattern (their tips are Points); a drag of the g1 tip
    by a known amount changes g1 by exactly that and the strain is computed again in a worker
    (still the planted strain: the vectors index the disks, the reference sets the strain); moving
    the scan (a click on a strain map) shows that pattern's fitted lattice, on the planted one."""
    main, results = make_napari_viewer(), make_napari_viewer()
    set_results_viewer(main, results)
    with stall_detector.excluded("first layer add"):
        main.open_sample("napari-4dstem", "strained_crystal")
    _, w = main.window.add_plugin_dock_widget("napari-4dstem", "Bragg disks and strain")
    w.template_btn.click()
    qtbot.waitUntil(lambda: w.template is not None and w._worker is None, timeout=120000)
    w.run_btn.click()
    qtbot.waitUntil(
        lambda: w.peaks is not None and w._worker is None and w.lattice is not None and not maps_pending(),
        timeout=120000,
    )
    # the strain reference layer is there once the disks are (made by Find disks, not by hand)
    results.layers[REFERENCE_LAYER].add_rectangles([np.array([[-0.5, -0.5], [7.5, 7.5]])])
    from napari_4dstem.engine.jobs import Progress

    passes = []
    shown = w.jobs._on_progress  # recorded where the dock takes each step: connected before the worker starts

    def record(p):
        if isinstance(p, Progress):
            passes.append((p.done, p.total))
        shown(p)

    monkeypatch.setattr(w.jobs, "_on_progress", record)
    w.strain_btn.click()
    qtbot.waitUntil(lambda: w.strain is not None and w._worker is None and not maps_pending(), timeout=60000)
    assert passes[-3:] == [(1, 3), (2, 3), (3, 3)]  # the lattice fit's passes: progress and Cancel points
    with stall_detector.excluded("reference"):
        truth = emd.read(sample_path("strained_crystal"))
    planted = truth["truth_strain"]
    # the tips sit at the ends of the g1/g2 arrows, from the detector centre (64, 64)
    tips = main.layers[TIPS_LAYER]
    # the fitted-lattice overlay (added with the strain) left the tips the layer to drag
    assert FIT_LAYER in main.layers and main.layers.selection.active is tips
    c = np.array([64.0, 64.0])
    g1, g2 = np.array(w.lattice.g1), np.array(w.lattice.g2)
    np.testing.assert_allclose(tips.data, [c + g1, c + g2])
    # drag the g1 tip by (1.5, -2.0) detector pixels, through napari's own select-mode drag
    tips.mode = "select"
    main.layers.selection.active = tips
    start = tips.data_to_world(c + g1)
    stop = tips.data_to_world(c + g1 + np.array([1.5, -2.0]))
    before = w.result
    _drag(tips, tuple(start), tuple(stop))
    stall_detector.step()
    moved = g1 + np.array([1.5, -2.0])
    np.testing.assert_allclose(w.lattice.g1, moved, atol=1e-9)
    np.testing.assert_allclose(w.lattice.g2, g2, atol=1e-12)
    np.testing.assert_allclose([sb.value() for sb in w.g], [*moved, *g2], atol=1e-3)
    np.testing.assert_allclose(main.layers[LATTICE_LAYER].data[0, 1], moved, atol=1e-9)
    # the strain again, in a worker, with the dragged vectors
    qtbot.waitUntil(lambda: w.result is not before and not w._strain_runner.busy and not maps_pending(), timeout=60000)
    assert w.result.lattice == w.lattice
    # the drag's strain replaced the button's one in the session (an adjustment, not a new analysis)
    from napari_4dstem.widgets.results_list import session_results

    store = session_results(main)
    assert [e.recipe.workflow for e in store.session.entries] == ["disks", "strain"]
    assert store.results[w._strain_entry] is w.result
    for ch in ("e_xx", "e_yy", "e_xy"):
        got = results.layers[ch].data
        rms = np.sqrt(np.nanmean((got - planted.channel(ch)) ** 2))
        assert rms < 1.5e-3, (ch, rms)
    # a click on a strain map moves the scan: that pattern's fitted lattice lies on the planted one
    from napari_4dstem.widgets._results import move_scan_to_world

    pos = (20, 25)
    exx = results.layers["e_xx"]
    # what a click on the e_xx map does (the Real space canvas's mouse callback), inside the pixel
    move_scan_to_world(main, tuple(exx.data_to_world((pos[0] + 0.3, pos[1] - 0.4))))
    stall_detector.step()
    fit = w.result.fit
    sites = main.layers[FIT_LAYER].data
    np.testing.assert_allclose(main.layers[FIT_VECTORS_LAYER].data[:, 0], [fit.origin[pos]] * 2)
    np.testing.assert_allclose(main.layers[FIT_VECTORS_LAYER].data[:, 1], [fit.g1[pos], fit.g2[pos]])
    tl = truth["truth_lattice"].data[pos]
    want = lattice_sites(truth["truth_origin"].data[pos], tl[:2], tl[2:], (128, 128))
    dist = np.linalg.norm(sites[:, None] - want[None], axis=-1)
    inner = np.linalg.norm(want - 64, axis=1) < 50  # sites well inside the detector (none cut by the edge)
    assert (dist.min(axis=0)[inner] < 0.5).all(), dist.min(axis=0)[inner].max()
    assert len(sites) >= 20
    assert f"pattern {pos}" in w.fit_label.text()


def test_live_detection_all_patterns_lattice_and_strain(
    make_napari_viewer, qtbot, tmp_path, run_copied_script, stall_detector
):
    main, results = make_napari_viewer(), make_napari_viewer()
    set_results_viewer(main, results)
    with stall_detector.excluded("first layer add"):
        main.open_sample("napari-4dstem", "strained_crystal")
    _, w = main.window.add_plugin_dock_widget("napari-4dstem", "Bragg disks and strain")
    assert isinstance(w, BraggStrainWidget)
    assert w.probe_combo.currentText() == "layer: probe"
    w.template_btn.click()  # in a worker: the GUI thread never waits for it
    qtbot.waitUntil(lambda: w.template is not None and w._worker is None, timeout=120000)
    assert w.template.radius_px == pytest.approx(8.0, abs=0.5)
    # live: the Points layer holds exactly what the core finds on the displayed pattern, found
    # in a worker (a scan step costs the GUI thread nothing), the newest position wins
    cube = main.layers["strained_crystal"]
    # the first live detection may wait for the kernels' warm-up (a cold numba cache compiles)
    qtbot.waitUntil(lambda: PEAKS_LAYER in main.layers, timeout=120000)
    for iy, ix in ((1, 1), (2, 4), (3, 5)):
        main.dims.set_point(0, float(iy))
        main.dims.set_point(1, float(ix))
        stall_detector.step()
    qtbot.waitUntil(lambda: not w._live.busy and "(3, 5)" in w.live_label.text(), timeout=60000)
    pts = main.layers[PEAKS_LAYER].data
    with stall_detector.excluded("reference"):
        ref, count = detect_in_stack(np.asarray(cube.data[3, 5])[None], w.template, parallel=False)
    np.testing.assert_allclose(pts, ref[0, : count[0], :2])
    assert len(pts) >= 20  # the sample's lattice shows 20+ disks per pattern
    # a new result refreshes the layer once (positions and sizes together; setting ``data``
    # then ``size`` refreshed it twice and made napari recompute the dims twice),
    # sized by intensity
    layer = main.layers[PEAKS_LAYER]
    seen = []
    layer.events.set_data.connect(lambda e=None: seen.append("set_data"))
    main.dims.set_point((0, 1), (4.0, 6.0))
    stall_detector.step()
    qtbot.waitUntil(lambda: not w._live.busy and "(4, 6)" in w.live_label.text(), timeout=60000)
    assert seen == ["set_data"]
    with stall_detector.excluded("reference"):
        ref, count = detect_in_stack(np.asarray(cube.data[4, 6])[None], w.template, parallel=False)
    found = ref[0, : count[0]]
    np.testing.assert_allclose(layer.data, found[:, :2])
    np.testing.assert_allclose(layer.size, 4 + 10 * np.sqrt(found[:, 2] / found[:, 2].max()), rtol=1e-6)
    # all patterns, lattice, strain against the unstrained reference corner
    w.run_btn.click()
    qtbot.waitUntil(
        lambda: w.peaks is not None and w._worker is None and w.lattice is not None and not maps_pending(),
        timeout=60000,
    )
    assert "disks per pattern" in results.layers
    # the count map filled in while the job ran (blocks of ~0.15 s), then took the final counts
    assert w.partials.shown and w.partials.shown[0][1] < 1.0
    np.testing.assert_array_equal(results.layers["disks per pattern"].data, w.peaks.counts())
    with stall_detector.excluded("reference"):
        truth = emd.read(sample_path("strained_crystal"))
    g1 = np.array(truth["truth_lattice"].params["g1_ref_px_yx"])
    g2 = np.array(truth["truth_lattice"].params["g2_ref_px_yx"])
    found = np.array([w.lattice.g1, w.lattice.g2])
    # g1/g2 may come out as any basis of the same lattice: compare the cell area and lengths
    assert abs(np.linalg.det(found)) == pytest.approx(abs(np.linalg.det(np.array([g1, g2]))), rel=0.01)
    # UX audit session 13, defect 6: the user draws the reference before the first strain (the
    # layer came only with the first Compute strain): Draw reference, then a rectangle drawn with
    # napari's own add-rectangle mouse handling over the scan's top-left 8 x 8 (unstrained) corner
    assert w.strain_btn.toolTip() and w.reference_btn.toolTip()
    assert w.strain is None and w.reference_region() is None
    w.reference_btn.click()
    ref_layer = results.layers[REFERENCE_LAYER]
    assert results.layers.selection.active is ref_layer and str(ref_layer.mode) == "add_rectangle"
    assert len(ref_layer.data) == 0
    _drag(ref_layer, tuple(ref_layer.data_to_world([-0.5, -0.5])), tuple(ref_layer.data_to_world([7.5, 7.5])))
    assert len(ref_layer.data) == 1
    assert w.reference_region() == (0, 8, 0, 8)
    w.strain_btn.click()
    qtbot.waitUntil(lambda: w.strain is not None and w._worker is None and not maps_pending(), timeout=60000)
    # the first strain is against that corner: its median strain is ~0 there, not over the scan
    assert "rows 0:8, columns 0:8" in w.strain_label.text()
    inside = results.layers["e_xx"].data[0:8, 0:8]
    assert abs(np.nanmedian(inside)) < 1e-3 < abs(np.nanmedian(results.layers["e_xx"].data))
    planted = truth["truth_strain"]
    for c in ("e_xx", "e_yy", "e_xy"):
        got = results.layers[c].data
        rms = np.sqrt(np.nanmean((got - planted.channel(c)) ** 2))
        assert rms < 1.5e-3, (c, rms)  # the sample dose gives about 6e-4 (docs/bragg-strain.md)
        lo, hi = results.layers[c].contrast_limits
        assert lo == pytest.approx(-hi)
    assert "true strain" in w.strain_label.text() and "rows 0:8" in w.strain_label.text()
    # no layer without the pattern's units (napari would warn "Inconsistent units")
    assert main.layers.extent.units is not None, [(lyr.name, lyr.units) for lyr in main.layers]
    # copy as Python: the script, run headless, gives the widget's strain maps exactly
    text = w.copy_as_python()
    assert "run_strain(" in text and "ProbeSource(" in text
    run_copied_script(text, tmp_path)
    with stall_detector.excluded("reference"):
        again = emd.read(tmp_path / "result.h5")["strain"]
    np.testing.assert_array_equal(again.data, w.result.strain.strain.data)
    for k, c in enumerate(("e_xx", "e_yy", "e_xy")):
        np.testing.assert_array_equal(results.layers[c].data, again.data[..., k])
    # the saved result reopens with its recipe, and the strain is dimensionless (not 'intensity')
    # Save result... writes in a worker: the GUI thread only starts it
    assert w.save_result(tmp_path / "saved.h5")
    qtbot.waitUntil(lambda: w.last_saved is not None, timeout=60000)
    out = w.last_saved
    with stall_detector.excluded("reference"):
        saved = emd.read(out)
    assert saved["strain"].units == "" and saved["strain"].params["recipe"]["workflow"] == "strain"
    # a strain layer saved from napari (File > Save Selected Layers) reopens with its units and recipe
    results.layers.selection = {results.layers["e_xx"]}
    # napari's File > Save calls the writer on the GUI thread (napari's, not a dock's, choice)
    with stall_detector.excluded("napari's File > Save on the GUI thread"):
        assert results.layers.save(str(tmp_path / "exx.h5"), selected=True, plugin="napari-4dstem")
    with stall_detector.excluded("reference"):
        exx = emd.read(tmp_path / "exx.h5")["e_xx"]
    np.testing.assert_array_equal(exx.data, w.result.strain.channel("e_xx"))
    assert exx.units == "" and exx.params["channel"] == "e_xx"
    assert exx.params["recipe"]["workflow"] == "strain" and exx.calibration == w.result.strain.strain.calibration
    bvm = main.layers["Bragg vector map"]
    main.layers.selection = {bvm}
    with stall_detector.excluded("napari's File > Save on the GUI thread"):
        assert main.layers.save(str(tmp_path / "bvm.h5"), selected=True, plugin="napari-4dstem")
    with stall_detector.excluded("reference"):
        assert isinstance(emd.read(tmp_path / "bvm.h5")["Bragg vector map"], DiffractionImage)
    # the results went into the viewer's session (the Results dock lists them)
    from napari_4dstem.widgets.results_list import session_results

    assert [e.recipe.workflow for e in session_results(main).session.entries] == ["disks", "strain"]


def test_find_all_fills_the_count_map_in_with_an_eta_and_cancels(
    make_napari_viewer, qtbot, stall_detector, monkeypatch
):
    """UX point 20: while "Find disks in all patterns" runs, the disk-count map fills in the
    real-space viewer (exact where computed, empty where not), the progress bar shows an ETA,
    and Cancel stops the job within about one block (~0.15 s of work)."""
    import time

    from napari_4dstem.engine.jobs import Progress

    main, results = make_napari_viewer(), make_napari_viewer()
    set_results_viewer(main, results)
    with stall_detector.excluded("test data"):
        objs = emd.read(sample_path("strained_crystal"))
        cube = objs["strained_crystal"]
        big = np.tile(np.asarray(cube.data), (2, 2, 1, 1))  # 64 x 64 patterns: a few seconds
        cube.close()
    with stall_detector.excluded("first layer add"):
        main.add_image(big, name="big", **cube.calibration.napari_kwargs("4d"))
        main.add_image(objs["probe"].data, name="probe", **cube.calibration.napari_kwargs("k"))
    w = BraggStrainWidget(main)
    w.template_btn.click()
    qtbot.waitUntil(lambda: w.template is not None and w._worker is None, timeout=120000)
    # the live detection on the current pattern times one pattern: it sizes the job's blocks
    qtbot.waitUntil(lambda: w._t_pattern is not None, timeout=120000)
    seen = record_yields(monkeypatch, w.jobs, [], Progress)  # before the click: no first step missed
    w.run_btn.click()
    qtbot.waitUntil(lambda: any(f < 0.5 for _, f, _ in w.partials.shown) and len(seen) >= 3, timeout=120000)
    assert w._worker is not None and w.peaks is None  # still running
    assert seen[-1].total >= 8  # several blocks
    assert "ETA" in w.progress.format() and "/ " in w.progress.format()
    lyr = results.layers["disks per pattern"]
    part = np.array(lyr.data)
    done = np.isfinite(part)
    assert 0 < done.sum() < part.size  # part of the scan, the rest empty (NaN)
    lo, hi = lyr.contrast_limits
    assert lo == part[done].min() and hi >= part[done].max()
    with stall_detector.excluded("reference"):
        r = int(np.nonzero(done.any(axis=1))[0][0])  # the first computed scan row (or part of it)
        ref_counts = detect_in_stack(big[r][done[r]], w.template, parallel=False)[1]
    np.testing.assert_array_equal(part[r][done[r]], ref_counts)
    t0 = time.perf_counter()
    w.cancel_btn.click()
    qtbot.waitUntil(lambda: w._worker is None, timeout=30000)
    took = time.perf_counter() - t0
    assert w.peaks is None and w.status.text() == "cancelled"
    assert seen[-1].done < seen[-1].total, "the job ran to its end instead of stopping"
    assert np.isnan(results.layers["disks per pattern"].data).any()  # the map as far as it got
    print(
        f"cancel took {took:.3f} s after {seen[-1].done} of {seen[-1].total} blocks; "
        f"{len(w.partials.shown)} partial maps shown, updates {[round(1e3 * c) for c in w.partials.costs]} ms"
    )
    assert took < 1.0  # about one block (0.15 s of work); 1 s leaves room for a loaded machine


def test_method_switch_runs_the_network_live_and_on_all_patterns(
    make_napari_viewer, qtbot, stall_detector, monkeypatch
):
    """UX point 17: one dock, a "correlation template | neural network" switch. The live overlay
    on the pattern and "Find disks in all patterns" (count map filling in, ETA) use the chosen
    method: switched to the network, the overlay holds exactly the network's disks of the
    displayed pattern (the run's keywords: the run finds the same disks there), and the run's
    peaks feed the lattice as the correlation's do."""
    pytest.importorskip("torch")
    from napari_4dstem.engine.jobs import Progress
    from napari_4dstem.pipelines import NNDiskParams, detect_pattern_nn
    from napari_4dstem.simulation.samples import make_strained_crystal
    from napari_4dstem.widgets.bragg import NETWORK

    main, results = make_napari_viewer(), make_napari_viewer()
    set_results_viewer(main, results)
    with stall_detector.excluded("test data"):
        s = make_strained_crystal(scan_shape=(4, 4))
    cal = s.datacube.calibration
    with stall_detector.excluded("first layer add"):
        main.add_image(np.asarray(s.datacube.data), name="cube", **cal.napari_kwargs("4d"))
        main.add_image(np.asarray(s.probe.data), name="probe", **cal.napari_kwargs("k"))
    _, w = main.window.add_plugin_dock_widget("napari-4dstem", "Bragg disks and strain")
    assert w.method.model().item(1).isEnabled()  # torch is here
    main.dims.set_point((0, 1), (1.0, 2.0))
    w.template_btn.click()
    qtbot.waitUntil(lambda: w.template is not None and w._worker is None, timeout=120000)
    qtbot.waitUntil(lambda: w.last_live is not None and w.last_live[0] == (1, 2) and not w._live.busy, timeout=120000)
    pattern = np.asarray(s.datacube.data[1, 2])
    with stall_detector.excluded("reference"):
        ref, count = detect_in_stack(pattern[None], w.template, parallel=False, **w.disk_params().detect_kwargs())
    cc = w.last_live[1]
    np.testing.assert_allclose(cc, ref[0, : count[0]])
    # the switch: the network's choices replace the correlation's, the overlay the network's disks
    qtbot.waitUntil(lambda: w.model_combo.listed, timeout=60000)
    w.method.setCurrentText(NETWORK)
    assert w.nn_box.isVisibleTo(w) and not w.cc_box.isVisibleTo(w)
    qtbot.waitUntil(lambda: "(network)" in w.live_label.text() and not w._live.busy, timeout=120000)
    nn = w.last_live[1]
    with stall_detector.excluded("reference"):
        _, want = detect_pattern_nn(pattern, np.asarray(s.probe.data, float), w.nn_params())
    np.testing.assert_allclose(nn, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(main.layers[PEAKS_LAYER].data, want[:, :2], rtol=1e-5, atol=1e-4)
    assert nn.shape != cc.shape or not np.allclose(nn, cc)  # the detections changed with the method
    # both find the central beam of the planted lattice
    origin = s.truth[1].data[1, 2]
    for rows in (cc, nn):
        assert np.hypot(*(rows[:, :2] - origin).T).min() < 1.0
    # a threshold of the network's goes to the live overlay too
    w.nn_min_rel.setValue(0.9)
    qtbot.waitUntil(lambda: not w._live.busy and len(w.last_live[1]) < len(nn), timeout=60000)
    w.nn_min_rel.setValue(0.1)
    qtbot.waitUntil(lambda: not w._live.busy and len(w.last_live[1]) == len(nn), timeout=60000)
    # all patterns with the network: its count map fills in block by block, with an ETA
    seen = record_yields(monkeypatch, w.jobs, [], Progress)  # before the click: no first step missed
    w.run_btn.click()
    qtbot.waitUntil(lambda: w.peaks is not None and w._worker is None and w.lattice is not None, timeout=180000)
    assert seen and seen[-1].total == 4  # 4 x 4 patterns in blocks of 4
    assert w.partials.shown and w.partials.shown[0][0] == "NN disks per pattern"
    np.testing.assert_array_equal(results.layers["NN disks per pattern"].data, w.peaks.counts())
    assert w.peaks.params["method"] == "neural network (FCU-Net)"
    p = w.peaks.at(1, 2)
    run_rows = np.stack([p["qy"], p["qx"]], axis=1)
    np.testing.assert_allclose(run_rows, want[:, :2], atol=1e-3)  # the run finds the overlay's disks
    assert NNDiskParams().min_relative == w.nn_params().min_relative


def test_without_torch_the_network_choice_is_disabled_and_says_how_to_install(
    make_napari_viewer, monkeypatch, stall_detector
):
    """Torch is an optional extra: without it the method switch offers correlation only, and the
    network's item says how to install it."""
    from qtpy.QtCore import Qt

    from napari_4dstem.widgets import bragg

    monkeypatch.setattr(bragg, "torch_available", lambda: False)
    main = make_napari_viewer()
    w = BraggStrainWidget(main)
    assert not w.method.model().item(1).isEnabled() and w.method.currentText() == bragg.CORRELATION
    hint = w.method.itemData(1, Qt.ItemDataRole.ToolTipRole)
    assert "pip install 'napari-4dstem[nn]'" in hint and hint == w.method.toolTip()
    # a session saved where torch was sets the item anyway: the dock goes back to correlation
    w.method.setCurrentText(bragg.NETWORK)
    assert w.method.currentText() == bragg.CORRELATION and w.status.text() == hint
    assert not w.nn_box.isVisibleTo(w)


def test_probe_template_from_a_vacuum_region_on_real_space_with_its_kernel_preview(
    make_napari_viewer, qtbot, stall_detector
):
    """UX point 16: the probe can be the mean pattern of a vacuum area drawn on real space (the
    Real space dock's "scan region"); the template is the one made from that mean, and the dock
    previews the probe and its kernel."""
    from napari_4dstem.analysis.bragg.probe import make_template
    from napari_4dstem.simulation.samples import make_strained_crystal
    from napari_4dstem.widgets._region import REGION_SHAPES
    from napari_4dstem.widgets.bragg import VACUUM_REGION

    main, results = make_napari_viewer(), make_napari_viewer()
    set_results_viewer(main, results)
    with stall_detector.excluded("test data"):
        s = make_strained_crystal(scan_shape=(4, 4))
        data = np.array(s.datacube.data)
        probe = np.asarray(s.probe.data)
        data[:2] = probe.astype(data.dtype)  # the first two scan rows: vacuum (the probe alone)
        data[0, 0] = data[0, 0] * 1.1  # not all the same pattern
    with stall_detector.excluded("first layer add"):
        main.add_image(data, name="cube")
    w = BraggStrainWidget(main)
    w.probe_combo.setCurrentText(VACUUM_REGION)
    w.kernel_combo.setCurrentText("gaussian")
    w.make_template()  # no region drawn yet: a clear message
    assert "draw the vacuum area first" in w.status.text() and w.template is None
    with stall_detector.excluded("first layer add"):
        # scan rows 0-1, columns 0-3 (pixel edges)
        results.add_shapes([np.array([[-0.5, -0.5], [1.5, 3.5]])], shape_type="rectangle", name=REGION_SHAPES)
    w.template_btn.click()
    qtbot.waitUntil(lambda: w.template is not None and w._worker is None, timeout=120000)
    with stall_detector.excluded("reference"):
        mean = data[:2].reshape(8, *data.shape[2:]).astype(np.float64).mean(axis=0)
        want = make_template(mean, kind="gaussian")
    np.testing.assert_allclose(w.template.kernel, want.kernel, rtol=1e-9, atol=1e-12)
    assert w.template.radius_px == pytest.approx(want.radius_px)
    np.testing.assert_allclose(w._probe_source, mean)  # the probe the run's recipe gets
    # the preview: the probe (left) bright at its centre, dark around; the Gaussian-subtracted
    # kernel (right) has negative parts, so its zero (the corners) is mid-grey, its centre bright
    pic = w._kernel_rgba
    assert pic.shape == (112, 228, 4) and not w.kernel_preview.pixmap().isNull()
    left, right = pic[:, :112, 0].astype(int), pic[:, 116:, 0].astype(int)
    print("preview centre / corner: probe", left[56, 56], left[0, 0], "kernel", right[56, 56], right[0, 0])
    assert left.max() == 255 and left[56, 56] > 150 and left[0, 0] < 32
    assert right[56, 56] > 180 and 120 <= right[0, 0] <= 136
