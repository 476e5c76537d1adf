"""``iter_in_thread`` / ``iter_imports``: a blocking call waited for in steps, so a job's Cancel
(the worker closes the generator at a step) is not held up by a first import (UX 20)."""

import sys
import threading
import time
import types

import pytest

from napari_4dstem.engine.jobs import WAIT_STEP_S, Progress, iter_imports, iter_in_thread, run_job


def test_steps_while_the_call_runs_and_its_value_is_returned():
    t0 = time.perf_counter()
    steps, gaps = [], []
    job = iter_in_thread(lambda x: (time.sleep(0.5), x * 2)[1], 21, message="loading...")
    last = t0
    while True:
        try:
            p = next(job)
        except StopIteration as end:
            value = end.value
            break
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        steps.append(p)
    assert value == 42
    assert all(isinstance(p, Progress) and p.message == "loading..." for p in steps)
    assert steps[0].done == 0 and steps[-1].done == 1 and len(steps) >= 4
    assert max(gaps) < WAIT_STEP_S + 0.3  # a step about every WAIT_STEP_S (loaded machine)


def test_close_at_a_step_returns_at_once_and_the_call_runs_on():
    release, finished = threading.Event(), threading.Event()

    def blocking():
        release.wait(10)
        finished.set()

    job = iter_in_thread(blocking, message="waiting")
    next(job)
    next(job)  # the thread runs and has not ended
    t0 = time.perf_counter()
    job.close()  # what a cancelled worker does
    assert time.perf_counter() - t0 < 0.05 and not finished.is_set()
    release.set()
    assert finished.wait(5)  # left to end in its own thread


def test_the_calls_exception_is_raised_in_the_job():
    def boom():
        raise ZeroDivisionError("planted")

    with pytest.raises(ZeroDivisionError, match="planted"):
        run_job(iter_in_thread(boom, message="x"))


def test_iter_imports_imports_in_steps_and_skips_what_is_loaded(tmp_path, monkeypatch):
    (tmp_path / "n4d_slow_mod.py").write_text("import time\ntime.sleep(0.4)\nVALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "n4d_slow_mod", raising=False)
    steps = []
    run_job(iter_imports(["n4d_slow_mod", "json"], "loading"), steps.append)
    assert sys.modules["n4d_slow_mod"].VALUE == 7 and len(steps) >= 3
    assert list(iter_imports(["n4d_slow_mod", "json"], "loading")) == []  # loaded: no step
    # a module still being imported (by a cancelled job's thread) is waited for, in steps
    half = types.ModuleType("n4d_half")
    half.__spec__ = types.SimpleNamespace(_initializing=True)
    monkeypatch.setitem(sys.modules, "n4d_half", half)
    monkeypatch.setattr("importlib.import_module", lambda name: time.sleep(0.3))
    assert len(list(iter_imports(["n4d_half"], "loading"))) >= 2
