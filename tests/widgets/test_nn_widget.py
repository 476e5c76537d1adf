"""The NN disk detection widget in a real viewer: preview on the displayed pattern, the whole
scan in a worker, the same BraggPeaks type as correlation."""

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_4dstem.data.results import BraggPeaks
from napari_4dstem.io import emd  # at collection: the test's import is not the GUI thread's work
from napari_4dstem.simulation.samples import make_strained_crystal
from napari_4dstem.widgets._results import set_results_viewer
from napari_4dstem.widgets.nn import PEAKS_LAYER, PRED_LAYER, NNDiskWidget

from .test_job_cancel import record_yields

pytestmark = pytest.mark.gui


def _calibrated_sample_in_the_dock(make_napari_viewer, qtbot, stall_detector):
    """The 6 x 6 strained crystal and its probe as calibrated layers, the NN dock open, models listed."""
    main, results = make_napari_viewer(), make_napari_viewer()
    set_results_viewer(main, results)
    with stall_detector.excluded("test data"):
        s = make_strained_crystal(scan_shape=(6, 6))
    cal = s.datacube.calibration
    with stall_detector.excluded("first layer add"):
        main.add_image(np.asarray(s.datacube.data), name="cube", **cal.napari_kwargs("4d"))
        main.add_image(np.asarray(s.probe.data), name="probe", **cal.napari_kwargs("k"))
    _, w = main.window.add_plugin_dock_widget("napari-4dstem", "NN disk detection")
    assert isinstance(w, NNDiskWidget)
    qtbot.waitUntil(lambda: w.models_listed, timeout=60000)  # listed in a worker
    return main, results, s, w


def test_preview_and_scan(make_napari_viewer, qtbot, stall_detector):
    main, results, s, w = _calibrated_sample_in_the_dock(make_napari_viewer, qtbot, stall_detector)
    assert w.probe_combo.currentText() == "probe" and w.model_combo.count() >= 1
    w.preview()  # in a worker; with calibrated layers it must not warn "Inconsistent units"
    qtbot.waitUntil(lambda: w.last_preview is not None, timeout=60000)
    yx = w.last_preview
    assert PRED_LAYER in main.layers and PEAKS_LAYER in main.layers
    # napari warns "Inconsistent units across layers" (and drops the scale bar's units) exactly
    # when this is None: the prediction layer carries the pattern's units
    assert main.layers.extent.units is not None
    # the strained crystal's (0, 0) pattern: the central disk is among the predicted peaks
    origin = s.truth[1].data[0, 0]
    assert len(yx) >= 5 and np.hypot(*(yx - origin).T).min() < 1.0
    # the predicted image (in the model's resampled frame) is placed on the detector: its
    # brightest pixel lies on one of the peaks
    pred = main.layers[PRED_LAYER]
    top = np.unravel_index(np.argmax(pred.data), pred.data.shape)
    world = np.asarray(pred.data_to_world(top), float)
    k_scale = np.asarray(main.layers[PEAKS_LAYER].scale, float)
    assert np.hypot(*((yx * k_scale - world) / k_scale).T).min() < 1.0
    w.run()
    qtbot.waitUntil(lambda: w._worker is None, timeout=60000)
    assert isinstance(w.peaks, BraggPeaks) and w.peaks.scan_shape == (6, 6)
    assert "NN disks per pattern" in results.layers
    # a probe that is not centred: a clear message, no exception
    main.add_image(np.roll(np.asarray(s.probe.data), (40, 40), axis=(0, 1)), name="bad probe")
    w.probe_combo.setCurrentText("bad probe")
    w.preview()
    qtbot.waitUntil(lambda: "not centred" in w.status.text(), timeout=60000)
    # the whole traceback is in the Log dock
    _, log = main.window.add_plugin_dock_widget("napari-4dstem", "Log")
    text = log.text.toPlainText()
    assert "NNDiskWidget" in text and "not centred" in text and "Traceback" in text


def test_save_and_copy_as_python(make_napari_viewer, qtbot, tmp_path, stall_detector):
    """The result saves and reopens as BraggPeaks; data held only in memory has no script, and
    the dock says why."""
    main, results = make_napari_viewer(), make_napari_viewer()
    set_results_viewer(main, results)
    with stall_detector.excluded("test data"):
        s = make_strained_crystal(scan_shape=(4, 4))
    with stall_detector.excluded("first layer add"):
        main.add_image(np.asarray(s.datacube.data), name="cube")
        main.add_image(np.asarray(s.probe.data), name="probe")
    w = NNDiskWidget(main)
    qtbot.waitUntil(lambda: w.models_listed, timeout=60000)  # listed in a worker
    w.run()
    qtbot.waitUntil(lambda: w._worker is None, timeout=60000)
    # the count map filled in block by block (4 blocks of 4 patterns), then took the final counts
    assert w.partials.shown and w.partials.shown[0][1] < 1.0
    np.testing.assert_array_equal(results.layers["NN disks per pattern"].data, w.peaks.counts())
    # Save result... writes in a worker: the GUI thread only starts it
    assert w.save_result(tmp_path / "nn.h5")
    qtbot.waitUntil(lambda: w.last_saved is not None, timeout=60000)
    out = w.last_saved
    with stall_detector.excluded("reference"):
        saved = emd.read(out)
    peaks = next(v for v in saved.values() if isinstance(v, BraggPeaks))
    np.testing.assert_array_equal(peaks.qy, w.peaks.qy)
    assert peaks.params["recipe"]["params"]["nn"]["min_relative"] == pytest.approx(0.1)
    assert w.copy_as_python() is None and "not computed from a file" in w.status.text()


def test_find_all_reports_progress_and_cancels_between_small_blocks(
    make_napari_viewer, qtbot, stall_detector, monkeypatch
):
    """The whole scan used to be one block: no progress for 87 s and a Cancel that did nothing."""
    import time

    from napari_4dstem.engine.jobs import Progress

    main, results = make_napari_viewer(), make_napari_viewer()
    set_results_viewer(main, results)
    with stall_detector.excluded("test data"):
        s = make_strained_crystal(scan_shape=(8, 8))
    with stall_detector.excluded("first layer add"):
        main.add_image(np.asarray(s.datacube.data), name="cube")
        main.add_image(np.asarray(s.probe.data), name="probe")
    _, w = main.window.add_plugin_dock_widget("napari-4dstem", "NN disk detection")
    qtbot.waitUntil(lambda: w.models_listed, timeout=60000)
    seen = record_yields(monkeypatch, w.jobs, [], Progress)  # before the start: no first step missed
    w.run()
    # progress while it runs (after the set-up's steps: "loading torch...", sampling patterns)
    qtbot.waitUntil(lambda: sum(p.message == "NN Bragg disks" for p in seen) >= 1, timeout=60000)
    assert [p for p in seen if p.message == "NN Bragg disks"][-1].total == 16  # 8 x 8 patterns in blocks of 4
    # the disk-count map fills in while the network runs, with an ETA on the progress bar
    qtbot.waitUntil(lambda: len(w.partials.shown) >= 1, timeout=60000)
    part = np.array(results.layers["NN disks per pattern"].data)
    assert 0 < np.isfinite(part).sum() < part.size
    assert "ETA" in w.progress.format()
    t0 = time.perf_counter()
    w.cancel_btn.click()
    qtbot.waitUntil(lambda: w._worker is None, timeout=30000)
    took = time.perf_counter() - t0
    assert w.peaks is None and w.status.text() == "cancelled"
    blocks = [p for p in seen if p.message == "NN Bragg disks"]
    assert blocks[-1].done < blocks[-1].total, "the job ran to its end instead of stopping"
    print(f"cancel took {took:.3f} s after {blocks[-1].done} of {blocks[-1].total} blocks")
    assert np.isnan(results.layers["NN disks per pattern"].data).any()  # the map as far as it got
    assert took < 1.0  # about one block of 4 patterns (0.1-0.3 s); room for a loaded machine


def test_finetune_on_a_scan_region_makes_and_selects_a_user_model(
    make_napari_viewer, qtbot, tmp_path, monkeypatch, stall_detector
):
    """Fine-tune in a worker with the loss curve live; patterns only from the drawn scan region;
    the new user model is listed and selected, and a second run takes the next version."""
    import json

    from napari_4dstem.widgets._region import REGION_SHAPES

    monkeypatch.setenv("NAPARI_4DSTEM_USER_MODELS", str(tmp_path / "models"))
    main, results = make_napari_viewer(), make_napari_viewer()
    set_results_viewer(main, results)
    with stall_detector.excluded("test data"):
        s = make_strained_crystal(scan_shape=(6, 6))
    with stall_detector.excluded("first layer add"):
        main.add_image(np.asarray(s.datacube.data), name="cube")
        main.add_image(np.asarray(s.probe.data), name="probe")
        # a region of 3 x 4 = 12 scan positions, as the Virtual dock's region tool draws it
        results.add_shapes([np.array([[-0.5, 0.5], [2.5, 4.5]])], shape_type="rectangle", name=REGION_SHAPES)
    _, w = main.window.add_plugin_dock_widget("napari-4dstem", "NN disk detection")
    qtbot.waitUntil(lambda: w.models_listed, timeout=60000)
    w.ft_name.setText("mine")
    w.ft_patterns.setValue(32)  # more than the region holds: all 12 are used
    w.ft_epochs.setValue(1)
    w.ft_region.setChecked(True)
    main.dims.set_point((0, 1), (1.0, 2.0))  # the pattern each epoch's network is previewed on
    w.models_listed = False
    assert w.finetune()
    qtbot.waitUntil(lambda: w.finetuned is not None, timeout=180000)
    res = w.finetuned
    assert res.path == tmp_path / "models" / "mine-1.pt"
    card = json.loads(res.path.with_suffix(".json").read_text())
    assert card["fine_tune"]["patterns_labelled"] == 12
    assert w.ft_plot.steps  # the loss curve got the training steps
    qtbot.waitUntil(lambda: w.models_listed, timeout=60000)  # the list refreshed in a worker
    assert w.model_combo.currentText() == "mine@1"
    assert "mine@1 saved" in w.status.text()
    assert w._ft_version("mine") == "2"
    # UX point 17: at the end of the (one) epoch its network was previewed on the current pattern,
    # from the checkpoint, in a worker: the final weights, so exactly what the new model finds there
    qtbot.waitUntil(lambda: bool(w.epoch_previews) and not w._epoch_previewer.busy, timeout=60000)
    epoch, pos, rows = w.epoch_previews[-1]
    assert (epoch, pos) == (1, (1, 2)) and len(w.epoch_previews) == 1
    with stall_detector.excluded("reference"):
        import dataclasses

        from napari_4dstem.pipelines import detect_pattern_nn

        params = dataclasses.replace(w.nn_params(), model=str(res.path))
        _, want = detect_pattern_nn(np.asarray(s.datacube.data[1, 2]), np.asarray(s.probe.data, float), params)
    np.testing.assert_allclose(rows, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(main.layers[PEAKS_LAYER].data, want[:, :2], rtol=1e-5, atol=1e-5)


def test_disks_corrected_by_hand_become_fine_tuning_labels(
    make_napari_viewer, qtbot, tmp_path, monkeypatch, stall_detector
):
    """UX point 17: the preview's disks are edited on the pattern (one deleted, one added), kept as
    the labels of that scan position, and fine-tuning trains on them (the card counts them)."""
    import json

    monkeypatch.setenv("NAPARI_4DSTEM_USER_MODELS", str(tmp_path / "models"))
    main, _, _, w = _calibrated_sample_in_the_dock(make_napari_viewer, qtbot, stall_detector)
    assert not w.keep_labels_btn.isEnabled()  # nothing to keep before a preview
    cube = main.layers["cube"]
    main.dims.set_point(0, 2 * cube.scale[0])
    main.dims.set_point(1, 3 * cube.scale[1])
    w.preview()
    qtbot.waitUntil(lambda: w.last_preview is not None, timeout=60000)
    assert w._preview_pos == (2, 3)
    w.correct_btn.click()
    pts = main.layers[PEAKS_LAYER]
    assert main.layers.selection.active is pts and pts.mode == "add"
    # the user deletes the first disk and adds one at (30.5, 90.25) px
    edited = np.vstack([np.asarray(pts.data)[1:], [[30.5, 90.25]]])
    pts.data = edited
    main.dims.set_point(0, 4 * cube.scale[0])  # the scan moves on: the labels stay (2, 3)'s
    w.keep_labels_btn.click()
    assert list(w.corrections) == [(2, 3)]
    np.testing.assert_array_equal(w.corrections[(2, 3)], edited)
    assert "1 hand-corrected pattern" in w.labels_info.text()
    with stall_detector.excluded("reference"):
        from napari_4dstem.nn.finetune import read_corrections

        saved = read_corrections(w.save_labels(tmp_path / "labels.json"))
    np.testing.assert_array_equal(saved[(2, 3)], edited)
    w.ft_name.setText("hand")
    w.ft_patterns.setValue(8)
    w.ft_epochs.setValue(1)
    assert w.finetune()
    qtbot.waitUntil(lambda: w.finetuned is not None, timeout=180000)
    card = json.loads(w.finetuned.path.with_suffix(".json").read_text())
    assert card["fine_tune"]["hand_corrected"] == 1 and card["fine_tune"]["patterns_labelled"] == 8
    assert "1 corrected by hand" in w.status.text()
    w.clear_labels_btn.click()
    assert not w.corrections and "no hand-corrected" in w.labels_info.text()


def test_precision_combo_sets_the_runs_precision(make_napari_viewer, qtbot, stall_detector, monkeypatch):
    """Session 12: the dock's precision choice reaches NNDiskParams, the preview and the saved
    dock state; its tooltip says what it trades."""
    from napari_4dstem.nn.precision import DEFAULT_PRECISION, PRECISIONS
    from napari_4dstem.widgets import nn as nn_dock

    _main, _results, _s, w = _calibrated_sample_in_the_dock(make_napari_viewer, qtbot, stall_detector)
    assert [w.precision.itemText(i) for i in range(w.precision.count())] == list(PRECISIONS)
    assert w.precision.currentText() == DEFAULT_PRECISION == w.nn_params().precision
    tip = w.precision.toolTip()
    assert "bfloat16" in tip and "faster" in tip and "pixel" in tip
    w.precision.setCurrentText("bfloat16")
    assert w.nn_params().precision == "bfloat16"
    seen = []
    real = nn_dock._preview_job

    def spy(dc, pos, probe, params, cal):
        seen.append(params.precision)
        return real(dc, pos, probe, params, cal)

    monkeypatch.setattr(nn_dock, "_preview_job", spy)
    w.preview()
    qtbot.waitUntil(lambda: w.last_preview is not None, timeout=60000)
    assert seen == ["bfloat16"] and len(w.last_preview) >= 5
    state = w.dock_state()
    assert state["form"]["precision"] == "bfloat16"
    w.precision.setCurrentText("float32")
    assert w.restore_state(state) == [] and w.nn_params().precision == "bfloat16"
