"""#15: Results dock Show and Load session keep the GUI thread free (UX audit session 13, defects 3
and 9): Show of a strain result added 13 layers in one GUI-thread call (8.2 s wall at load 18);
Load session opened the file with napari inside the click (10.4 s) and put the file's 10 scan-space
maps on the diffraction canvas with "Inconsistent units across layers" warnings."""

from __future__ import annotations

import itertools
import shutil
import warnings

import pytest

from napari_4dstem.widgets._results import results_viewer, set_results_viewer
from napari_4dstem.widgets.results_list import ResultsListWidget, session_results

from .conftest import EventLoopTurns

pytestmark = pytest.mark.gui


def test_show_adds_the_layers_one_per_event_loop_turn(make_napari_viewer, qtbot, strain_result, stall_detector):
    res = strain_result
    main, results = make_napari_viewer(), make_napari_viewer()
    set_results_viewer(main, results)
    w = ResultsListWidget(main)
    w.select(session_results(main).add(res, "strain"))
    turns = EventLoopTurns(main, results)
    with stall_detector.excluded("napari makes each layer's controls"):
        assert w.show_result()
        qtbot.waitUntil(lambda: w.show_done, timeout=60000)
    turns.timer.stop()
    n = len(w.shown)
    at = [k for _, lyr, k in turns.at if any(lyr is s for s in w.shown)]
    assert n >= 10 and len(at) == n
    # the old dock added them all inside one call: one turn for all
    assert all(b > a for a, b in itertools.pairwise(at)), at


def test_load_session_reads_in_a_worker_and_shows_what_the_session_showed(
    make_napari_viewer, qtbot, tmp_path, stall_detector
):
    from napari_4dstem._sample_data import sample_path

    main = make_napari_viewer()
    src = tmp_path / "strained_crystal.h5"
    shutil.copy(sample_path("strained_crystal"), src)
    with stall_detector.excluded("first layer add"):
        opened = main.open(str(src), plugin="napari-4dstem")
    real = [lyr for lyr in opened if lyr.metadata["napari_4dstem"].get("kind") == "real_space"]
    assert len(real) >= 5
    # the user kept the datacube, the probe and one map (on the Real space canvas, as the docks do)
    kept = real[0].name
    for lyr in real[1:]:
        main.layers.remove(lyr)
    shown_main = [lyr.name for lyr in main.layers if lyr.name != kept]
    w = ResultsListWidget(main)
    out = w.save_session(tmp_path / "s.json")

    other = make_napari_viewer()
    w2 = ResultsListWidget(other)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w2.load_session(out)
        # the click returns before the file is opened: the reader runs in a worker
        assert len(other.layers) == 0
        with stall_detector.excluded("napari makes each layer's controls"):
            qtbot.waitUntil(lambda: w2.loaded is not None, timeout=60000)
    assert [lyr.name for lyr in other.layers] == shown_main
    assert [lyr.name for lyr in results_viewer(other).layers] == [kept]
    units = [str(c.message) for c in caught if "Inconsistent units" in str(c.message)]
    assert not units
    assert "opened strained_crystal.h5" in w2.status.text()
