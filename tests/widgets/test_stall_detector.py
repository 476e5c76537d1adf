"""The stall detector itself: our code holding the GUI thread is caught; napari's own event
processing with a short slot of ours inside is not (see tests/widgets/conftest.py)."""

import time

import pytest

pytestmark = pytest.mark.gui


def _burn_in_our_code(seconds: float) -> None:
    """Hold the calling thread in napari_4dstem code for ``seconds`` of its CPU time."""
    from napari_4dstem.analysis.virtual.detectors import DiskDetector

    det = DiskDetector((128.0, 128.0), 40.0)
    t0, w0 = time.thread_time(), time.perf_counter()
    while time.thread_time() - t0 < seconds and time.perf_counter() - w0 < 10 * seconds + 5:
        det.render((256, 256))


def test_our_code_on_the_gui_thread_is_a_stall(make_napari_viewer, qtbot, stall_detector):
    from qtpy.QtCore import QTimer

    make_napari_viewer()
    done = []
    QTimer.singleShot(0, lambda: (_burn_in_our_code(0.3), done.append(1)))
    qtbot.waitUntil(lambda: bool(done), timeout=20000)
    qtbot.wait(50)
    caught = list(stall_detector.stalls)
    stall_detector.stalls.clear()  # expected here: do not fail the teardown
    assert caught, "300 ms of our code in a GUI-thread slot was not caught"
    assert max(s["own_cpu_ms"] for s in caught) > 100


def test_a_short_slot_of_ours_inside_a_long_turn_is_not(make_napari_viewer, qtbot, stall_detector):
    from qtpy.QtCore import QTimer

    make_napari_viewer()
    done = []

    def long_turn():
        # 200 ms outside our package (a stand-in for napari/Qt event processing), then 5 ms of ours
        t0 = time.thread_time()
        x = 0
        while time.thread_time() - t0 < 0.2:
            x += sum(range(1000))
        _burn_in_our_code(0.005)
        done.append(x)

    QTimer.singleShot(0, long_turn)
    qtbot.waitUntil(lambda: bool(done), timeout=20000)
    qtbot.wait(50)
    assert not stall_detector.stalls, stall_detector.report()


def test_a_budgeted_block_over_its_budget_is_reported(make_napari_viewer, stall_detector):
    make_napari_viewer()
    with stall_detector.excluded("opening a dock", budget_s=0.05):
        _burn_in_our_code(0.15)
    caught = list(stall_detector.stalls)
    report = stall_detector.report()  # the failure message itself must build (it raised KeyError)
    stall_detector.stalls.clear()  # expected here: do not fail the teardown
    assert len(caught) == 1 and caught[0]["own_cpu_ms"] > 100
    assert "opening a dock over its 50 ms budget" in report
