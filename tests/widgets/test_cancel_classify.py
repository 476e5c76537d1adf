"""Cancel within 0.5 s while Classify's decomposition or a clustering trial runs (issue #15, UX 20).

Session 12's audit measured Classify's decomposition and each class-count trial as single steps of
the job: 4.8 s and 0.8-1.4 s a trial on a 64 x 64 scan at load 10, and a Cancel waited for them.
The job now runs each such call in a thread it waits for in 0.1 s steps (Cancel points), and a
cancelled job leaves the call to end in its thread. Here the calls are planted slow (3 s) in the real
dock on the bundled sample, and Cancel is clicked once one runs: the worker must end within 0.5 s,
with the Run button enabled again. On the old code the NMF and the trial's silhouette ran in the
job's own thread (figures in the CHANGELOG).
"""

from __future__ import annotations

import threading
import time

import pytest

from .test_cancel_inflight import _click_cancel_when
from .test_cancel_prephase import _sample_in_a_dock

pytest.importorskip("sklearn")
pytestmark = pytest.mark.gui

SLOW_S = 3.0


def _plant(monkeypatch, name):
    """``model.<name>`` made ``SLOW_S`` slower; the event set when it starts, the list of calls."""
    from napari_4dstem.analysis.classify import model

    real = getattr(model, name)
    started, calls = threading.Event(), []

    def slow(*args, **kwargs):
        calls.append(threading.current_thread().name)
        started.set()
        time.sleep(SLOW_S)
        return real(*args, **kwargs)

    monkeypatch.setattr(model, name, slow)
    return started, calls


@pytest.mark.parametrize(("what", "planted"), [("decomposition", "_nmf"), ("trial", "_silhouette")])
def test_classify_cancels_while_a_decomposition_or_a_trial_runs(
    make_napari_viewer, qtbot, stall_detector, monkeypatch, what, planted
):
    _main, w = _sample_in_a_dock(make_napari_viewer, qtbot, stall_detector, "Classification")
    if what == "decomposition":
        w.decomposition.setCurrentText("nmf")
    started, calls = _plant(monkeypatch, planted)
    w.run_btn.click()
    assert w.jobs.busy, w.status.text()
    took = _click_cancel_when(qtbot, w, started.is_set, f"while its {what} runs ({planted}, {SLOW_S} s)")
    assert w.result is None
    assert took < SLOW_S / 2, f"the worker waited {took:.2f} s for the planted call"
    # the call was left to end in its own thread, not the worker's
    assert len(calls) == 1 and "classify" in calls[0], calls
