"""The NN disk detection widget in a real viewer: preview on the displayed pattern, the whole
scan in a worker, the same BraggPeaks type as correlation."""

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_4dstem.data.results import BraggPeaks
from napari_4dstem.simulation.samples import make_strained_crystal
from napari_4dstem.widgets._results import set_results_viewer
from napari_4dstem.widgets.nn import PEAKS_LAYER, PRED_LAYER, NNDiskWidget

pytestmark = pytest.mark.gui


def test_preview_and_scan(make_napari_viewer, qtbot):
    main, results = make_napari_viewer(), make_napari_viewer()
    set_results_viewer(main, results)
    s = make_strained_crystal(scan_shape=(6, 6))
    main.add_image(np.asarray(s.datacube.data), name="cube")
    main.add_image(np.asarray(s.probe.data), name="probe")
    _, w = main.window.add_plugin_dock_widget("napari-4dstem", "NN disk detection")
    assert isinstance(w, NNDiskWidget)
    assert w.probe_combo.currentText() == "probe" and w.model_combo.count() >= 1
    yx = w.preview()
    assert PRED_LAYER in main.layers and PEAKS_LAYER in main.layers
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
    assert w.preview() is None and "not centred" in w.status.text()


def test_save_and_copy_as_python(make_napari_viewer, qtbot, tmp_path):
    """The result saves and reopens as BraggPeaks; data held only in memory has no script, and
    the dock says why."""
    from napari_4dstem.io import emd

    main, results = make_napari_viewer(), make_napari_viewer()
    set_results_viewer(main, results)
    s = make_strained_crystal(scan_shape=(4, 4))
    main.add_image(np.asarray(s.datacube.data), name="cube")
    main.add_image(np.asarray(s.probe.data), name="probe")
    w = NNDiskWidget(main)
    w.run()
    qtbot.waitUntil(lambda: w._worker is None, timeout=60000)
    saved = emd.read(w.save_result(tmp_path / "nn.h5"))
    peaks = next(v for v in saved.values() if isinstance(v, BraggPeaks))
    np.testing.assert_array_equal(peaks.qy, w.peaks.qy)
    assert peaks.params["recipe"]["params"]["nn"]["min_relative"] == pytest.approx(0.1)
    assert w.copy_as_python() is None and "not computed from a file" in w.status.text()
