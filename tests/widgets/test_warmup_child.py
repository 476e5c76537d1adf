"""The kernels' warm-up compiles in a child process, and falls back to its thread when that fails.

numba's compiler is Python code: compiling in the warm-up's worker thread made napari's GUI thread
wait for the GIL (UX audit session 14, defects 4-5; `benchmarks/gil_compile_gaps.py`). The core
kernels are now compiled by a child process into numba's on-disk cache, and the warm-up's steps in
the worker load them from there; a child that fails leaves the compiling to the worker, as before.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import napari_4dstem

pytestmark = pytest.mark.gui


@pytest.fixture
def recorded_steps(monkeypatch):
    """A fresh warm-up state and three recording steps; the child runs before the second."""
    from napari_4dstem.widgets import _warmup

    fresh = _warmup._State()
    monkeypatch.setattr(_warmup, "_state", lambda: fresh)
    ran = []

    def step(name):
        def f(cube):
            ran.append((name, cube.dtype.name))

        f.__name__ = name
        return f

    steps = (step("shapes"), step("core1"), step("core2"))
    monkeypatch.setattr(_warmup, "_STEPS", steps)
    monkeypatch.setattr(_warmup, "_CHILD_BEFORE", steps[1])
    monkeypatch.delenv("NAPARI_4DSTEM_WARMUP_CHILD", raising=False)
    return _warmup, fresh, ran


def _drain(gen):
    return list(gen)


def test_the_core_kernels_compile_in_a_child_of_the_same_package_before_the_steps_load_them(
    recorded_steps, monkeypatch, tmp_path
):
    _warmup, state, ran = recorded_steps
    marker = tmp_path / "child.txt"
    code = f"import sys, napari_4dstem; open({str(marker)!r}, 'w').write(napari_4dstem.__file__ + '|' + sys.argv[1])"
    monkeypatch.setattr(_warmup, "_child_command", lambda dt: [sys.executable, "-c", code, np.dtype(dt).name])
    seen = []
    real_core1 = _warmup._STEPS[1]

    def core1(cube):
        seen.append(marker.exists())  # the child is done when the first core step runs here
        real_core1(cube)

    core1.__name__ = "core1"
    steps = (_warmup._STEPS[0], core1, _warmup._STEPS[2])
    monkeypatch.setattr(_warmup, "_STEPS", steps)
    monkeypatch.setattr(_warmup, "_CHILD_BEFORE", core1)
    _drain(_warmup.warm_kernels(np.dtype(np.int32)))
    assert marker.read_text() == f"{napari_4dstem.__file__}|int32"  # our files, the layer's dtype
    assert seen == [True]
    assert ran == [("shapes", "int32"), ("core1", "int32"), ("core2", "int32")]
    assert state.failed == []


def test_a_failing_child_leaves_the_compiling_to_the_worker(recorded_steps, monkeypatch):
    _warmup, state, ran = recorded_steps
    monkeypatch.setattr(_warmup, "_child_command", lambda dt: [sys.executable, "-c", "raise SystemExit(3)"])
    _drain(_warmup.warm_kernels(np.dtype(np.uint8)))
    assert ran == [("shapes", "uint8"), ("core1", "uint8"), ("core2", "uint8")]
    assert any("exited 3" in f for f in state.failed), state.failed
    # a child that cannot start at all
    state.failed.clear()
    ran.clear()
    monkeypatch.setattr(_warmup, "_child_command", lambda dt: ["/nonexistent/python"])
    _drain(_warmup.warm_kernels(np.dtype(np.uint8)))
    assert len(ran) == 3 and any("warm-up child" in f for f in state.failed), state.failed


def test_closing_the_warm_up_ends_its_child(recorded_steps, monkeypatch):
    _warmup, _, ran = recorded_steps
    procs = []
    real_popen = _warmup.subprocess.Popen

    def popen(*a, **kw):
        procs.append(real_popen(*a, **kw))
        return procs[-1]

    monkeypatch.setattr(_warmup.subprocess, "Popen", popen)
    monkeypatch.setattr(_warmup, "_child_command", lambda dt: [sys.executable, "-c", "import time; time.sleep(60)"])
    gen = _warmup.warm_kernels(np.dtype(np.uint16))
    next(gen)  # the shapes step
    next(gen)  # the child runs
    gen.close()  # napari quits the worker
    assert procs and procs[0].poll() is not None
    assert ran == [("shapes", "uint16")]
