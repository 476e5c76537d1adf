"""The Results dock: the session's pipeline results listed with their source and time; show,
save, delete, copy as Python; a session saved, loaded and recomputed gives the same result."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_4dstem.io import emd
from napari_4dstem.widgets._results import set_results_viewer
from napari_4dstem.widgets.bragg import BraggStrainWidget  # imported at collection, not in a test's GUI time
from napari_4dstem.widgets.orientation import OrientationWidget
from napari_4dstem.widgets.results_list import ResultsListWidget, session_results
from napari_4dstem.widgets.virtual import VirtualImagingWidget

from .conftest import DOCK_OPEN_BUDGET_S

pytestmark = pytest.mark.gui


def test_results_dock_lists_saves_copies_and_recomputes(
    make_napari_viewer, qtbot, strain_result, tmp_path, stall_detector
):
    main, results = make_napari_viewer(), make_napari_viewer()
    set_results_viewer(main, results)
    _, w = main.window.add_plugin_dock_widget("napari-4dstem", "Results")
    assert isinstance(w, ResultsListWidget)
    name = session_results(main).add(strain_result, "strain")  # what the Bragg dock does
    assert w.table.rowCount() == 1 and w.table.item(0, 1).text() == "strain"
    assert w.table.item(0, 2).text() == "sample.h5" and w.table.item(0, 4).text() == "computed"
    w.select(name)
    assert "correlation_power" in w.params_label.text()
    # show: strain channels to the real-space viewer, the Bragg vector map and peaks to the main one
    # Show makes the layers' data in a worker; napari adds the layers on the GUI thread
    assert w.show_result()
    qtbot.waitUntil(lambda: w.show_done, timeout=60000)
    assert "strain: strain [e_xx]" in results.layers and "strain: bragg_vector_map" in main.layers
    assert main.layers["strain: braggpeaks"].ndim == 4
    # save, copy as Python
    # Save result... writes in a worker: the GUI thread only starts it
    assert w.save_result(tmp_path / "saved.h5")
    qtbot.waitUntil(lambda: w.last_saved is not None, timeout=60000)
    out = w.last_saved
    with stall_detector.excluded("reference"):
        saved = emd.read(out)
    np.testing.assert_array_equal(saved["strain"].data, strain_result.strain.strain.data)
    assert w.table.item(0, 4).text() == "computed" and "wrote" in w.status.text()
    # a file that cannot be written: the worker's error lands in the status line and, with its
    # traceback, in the Log dock
    from napari_4dstem.widgets.log import log_entries

    n_log = len(log_entries())
    assert w.save_result(tmp_path / "no such folder" / "x.h5")
    qtbot.waitUntil(lambda: len(log_entries()) > n_log, timeout=60000)
    assert "ResultsListWidget" in log_entries()[-1] and "Traceback" in log_entries()[-1]
    assert "the output folder does not exist" in w.status.text() and w.last_saved == out
    text = w.copy_as_python()
    assert text == strain_result.to_script()
    # the session as a small JSON file; delete; load back (recipes only); recompute in a worker
    out = w.save_session(tmp_path / "session.json")
    d = json.loads(out.read_text())
    assert [r["name"] for r in d["results"]] == ["strain"] and d["results"][0]["saved_to"].endswith("saved.h5")
    w.delete_result()
    assert w.table.rowCount() == 0
    w.load_session(out)
    assert w.table.rowCount() == 1 and w.table.item(0, 4).text() == "recipe only"
    w.select("strain")
    assert w.save_result(tmp_path / "x.h5") is False and "Recompute it first" in w.status.text()
    assert w.recompute()
    qtbot.waitUntil(lambda: w.jobs.worker is None, timeout=60000)
    again = session_results(main).results["strain"]
    np.testing.assert_array_equal(again.strain.strain.data, strain_result.strain.strain.data)
    assert w.table.item(0, 4).text() == "computed"


def test_results_dock_without_a_selection_says_so(make_napari_viewer):
    main = make_napari_viewer()
    w = ResultsListWidget(main)
    assert w.copy_as_python() is None and "select a result" in w.status.text()
    assert w.recompute() is False


def test_session_reopens_the_datacube_with_its_calibration(make_napari_viewer, qtbot, tmp_path, stall_detector):
    import shutil

    from napari_4dstem._sample_data import sample_path

    main = make_napari_viewer()
    src = tmp_path / "data" / "strained_crystal.h5"
    src.parent.mkdir()
    shutil.copy(sample_path("strained_crystal"), src)
    with stall_detector.excluded("first layer add"):
        (cube,) = [lyr for lyr in main.open(str(src), plugin="napari-4dstem") if lyr.ndim == 4]
    cal = cube.metadata["napari_4dstem"]["calibration"].replace(beam_energy_kev=200.0, rotation_deg=12.5)
    cube.metadata["napari_4dstem"] = {**cube.metadata["napari_4dstem"], "calibration": cal}
    w = ResultsListWidget(main)
    out = w.save_session(tmp_path / "s.json")
    assert json.loads(out.read_text())["settings"]["datacubes"][0]["calibration"]["rotation_deg"] == 12.5
    # "another machine": the data sit in another folder
    moved = tmp_path / "moved"
    shutil.copytree(src.parent, moved)
    other = make_napari_viewer()
    w2 = ResultsListWidget(other)
    # the session's datacubes are read by the plugin's reader in a worker, their layers added after
    with stall_detector.excluded("first layer add"):
        w2.load_session(out, data_folder=moved)
        qtbot.waitUntil(lambda: w2.loaded is not None, timeout=60000)
    (cube2,) = [lyr for lyr in other.layers if lyr.ndim == 4]
    assert cube2.metadata["napari_4dstem"]["calibration"] == cal
    assert cube2.metadata["napari_4dstem"]["source"] == str(moved / "strained_crystal.h5")


def test_session_keeps_the_docks_state(make_napari_viewer, qtbot, tmp_path, stall_detector):
    """Save session keeps each open dock's form, the virtual detector, the strain reference and
    the crystal; Load session gives them back: at once to open docks, to a dock opened later
    when it opens (the virtual detector once the layer's bright-field disk would have been set)."""
    import shutil

    from napari_4dstem._sample_data import sample_path
    from napari_4dstem.analysis.virtual.detectors import AnnulusDetector

    main = make_napari_viewer()
    src = tmp_path / "strained_crystal.h5"
    shutil.copy(sample_path("strained_crystal"), src)
    with stall_detector.excluded("first layer add"):
        main.open(str(src), plugin="napari-4dstem")
    docks = []
    for kind in (VirtualImagingWidget, BraggStrainWidget, OrientationWidget):
        with stall_detector.excluded("dock opening", budget_s=DOCK_OPEN_BUDGET_S):  # as add_plugin_dock_widget
            docks.append(kind(main))
            main.window.add_dock_widget(docks[-1])
    v, b, o = docks
    qtbot.waitUntil(lambda: v.last_image is not None and v._worker is None, timeout=30000)
    ring = AnnulusDetector((63.0, 65.0), 12.0, 30.0)
    v.set_detector(ring)
    v.response_combo.setCurrentText("Mean")
    qtbot.waitUntil(lambda: v._worker is None and v._pending is None, timeout=30000)
    assert v.add_detector() == "detector 1"  # an extra detector (its own layer and image)
    b.min_rel.setValue(0.123)
    b.max_peaks.setValue(17)
    b.restore_extra({"reference": [2, 9, 3, 11]})  # as drawn (no real-space viewer yet)
    assert b.reference_region() == (2, 9, 3, 11)
    o.energy.setValue(200.0)
    o.step.setValue(1.5)
    w = ResultsListWidget(main)
    out = w.save_session(tmp_path / "s.json")
    docks = json.loads(out.read_text())["settings"]["docks"]
    assert set(docks) >= {"virtual", "bragg", "orientation"}
    assert docks["virtual"]["detector"] == ring.to_params()
    assert docks["virtual"]["form"]["response_combo"] == "Mean"
    assert docks["virtual"]["extra_detectors"] == [ring.to_params()]
    assert docks["bragg"]["form"]["max_peaks"] == 17 and docks["bragg"]["reference"] == [2, 9, 3, 11]
    assert docks["orientation"]["form"]["energy"] == 200.0

    other = make_napari_viewer()
    with stall_detector.excluded("dock opening", budget_s=DOCK_OPEN_BUDGET_S):  # as add_plugin_dock_widget
        b2 = BraggStrainWidget(other)  # open before the load: restored at once
        other.window.add_dock_widget(b2)
    w2 = ResultsListWidget(other)
    with stall_detector.excluded("first layer add"):
        w2.load_session(out)
        qtbot.waitUntil(lambda: w2.loaded is not None, timeout=60000)
    assert b2.min_rel.value() == pytest.approx(0.123) and b2.max_peaks.value() == 17
    assert b2.reference_region() == (2, 9, 3, 11)
    docks = []
    for kind in (VirtualImagingWidget, OrientationWidget):  # opened after: restored on opening
        with stall_detector.excluded("dock opening", budget_s=DOCK_OPEN_BUDGET_S):  # as add_plugin_dock_widget
            docks.append(kind(other))
            other.window.add_dock_widget(docks[-1])
    v2, o2 = docks
    assert o2.energy.value() == 200.0 and o2.step.value() == 1.5
    assert v2.response_combo.currentText() == "Mean"
    qtbot.waitUntil(
        lambda: v2._worker is None and v2.last_image is not None and v2._last_detector == ring, timeout=30000
    )
    assert v2.kind_combo.currentText() == "Annulus" and v2.r_out.value() == 30.0
    assert [it.detector for it in v2.extras.items.values()] == [ring]
    assert "detector 1" in other.layers
    qtbot.waitUntil(lambda: not v2.extras.busy and len(v2.extras.cache()) == 1, timeout=30000)
