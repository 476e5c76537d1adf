"""Compile the numba kernels ahead, in a worker, when the first widget opens.

The kernels are ``numba.njit(cache=True)``: the first use in a fresh install compiles them
(20-60 s on 2 cores), later processes load them from the cache (about 1 s). Either way it must
not happen on the GUI thread or at the first click: the first dock widget that opens starts
:func:`ensure_warm` for the chosen layer's dtype, which runs the real core functions once on a
tiny synthetic datacube of that dtype in a worker (progress in napari's activity dock), and
every widget shows a "preparing kernels" line while it runs (:class:`WarmupLabel`). The core
kernels are compiled first by a child process into numba's cache (numba's compiler is Python
code: in the worker it took turns with the GUI thread for the GIL), the worker then loads them;
a child that fails leaves the compiling to the worker (:func:`_warm_in_child`).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QLabel

from ..analysis.warm import CORE_STEPS, tiny_cube


class _State(QObject):
    changed = Signal()

    def __init__(self):
        super().__init__()
        self.done: set[str] = set()
        self.running: dict[str, object] = {}
        self.failed: list[str] = []
        # napari's Shapes numba functions compiled (or loaded) by the warm-up's first step: until
        # then a Shapes layer made on the GUI thread waits on numba's process-wide compiler lock
        # for the worker's compile (a fresh install froze the GUI 36 s at load 10, #15)
        self.shapes_ready = False
        self.waiting: dict[tuple, object] = {}  # after_shapes_warm's callbacks, by (owner, name)
        self.step = (0, len(_STEPS))  # the running warm-up's steps done, of all (read by jobs' threads)


@functools.cache
def _state() -> _State:
    """The one _State of the process, made on first use."""
    return _State()


def is_warming() -> bool:
    return bool(_state().running)


def shapes_pending() -> bool:
    """Whether a warm-up runs whose step compiling napari's Shapes (numba) has not finished: a
    Shapes layer made or changed on the GUI thread now would wait for that compile."""
    st = _state()
    return bool(st.running) and not st.shapes_ready


def after_shapes_warm(owner, fn) -> None:
    """Call ``fn()`` on the GUI thread once napari's Shapes functions are warm (at once when no
    warm-up is compiling them), unless the Qt object ``owner`` is deleted by then. One call per
    ``(owner, fn)`` however often it is asked for while the warm-up runs."""
    if not shapes_pending():
        fn()
        return
    st = _state()
    key = (id(owner), getattr(fn, "__name__", id(fn)))
    waiting = st.waiting
    if key in waiting:
        return

    def check(key=key):
        if shapes_pending():
            return
        st.changed.disconnect(waiting.pop(key))
        from ._common import is_deleted

        if not is_deleted(owner):
            fn()

    waiting[key] = check
    st.changed.connect(check)


def ensure_warm(dtype=np.uint16) -> None:
    """Start warming the kernels for patterns of ``dtype`` (once per dtype and process)."""
    from ._common import create_worker

    st = _state()
    key = np.dtype(dtype).str
    if key in st.done or key in st.running:
        return

    def finished(key=key):
        st.running.pop(key, None)
        st.done.add(key)
        st.shapes_ready = True  # a warm-up that stopped early: the GUI thread compiles them itself
        st.changed.emit()

    def failed(exc):
        st.failed.append(f"{type(exc).__name__}: {exc}")

    def stepped(i):
        st.step = (min(i, steps), steps)
        if i >= _STEPS.index(_napari_shapes) + 1 and not st.shapes_ready:
            st.shapes_ready = True
            st.changed.emit()

    steps = len(_STEPS)
    st.step = (0, steps)
    st.running[key] = create_worker(
        warm_kernels,
        np.dtype(dtype),
        _progress={"total": steps, "desc": "preparing kernels"},
        _connect={"finished": finished, "errored": failed, "yielded": stepped},
    )
    st.changed.emit()


def iter_wait_warm(what: str):
    """Job steps: wait while the plugin's kernel warm-up runs, a Cancel point every 0.1 s.

    A job's first use of a kernel the warm-up has not loaded yet compiles it in the job's thread
    (tens of seconds on a cold cache, numba's compiler holding the GIL against the GUI thread, and
    the warm-up's child compiling the same kernel meanwhile): the Orientation check on the TIA
    int32 file took 38 s so in the session-14 audit. Waiting here costs at most the warm-up's own
    time, the GUI stays free and Cancel works; the message says what the job waits for."""
    from ..engine.jobs import Progress

    st = _state()
    while st.running:  # read in the job's thread: a dict's truth and a tuple, set on the GUI thread
        done, total = st.step
        yield Progress(
            done,
            total,
            f"preparing kernels for {what} (compiled on first use, loaded from the cache later), warm-up",
        )
        time.sleep(0.1)


def virtual_kernel(dtype) -> str:
    """``"numpy"`` while a warm-up runs and this process has not loaded the exact virtual image's
    numba kernel for patterns of ``dtype`` yet, else ``"numba"`` (``kernel`` of
    :func:`~napari_4dstem.pipelines.iter_virtual`). A first image asked meanwhile compiled that
    kernel in its job's thread, behind the warm-up's own compiles on numba's process-wide lock: a
    fresh install's first int32 image came after 47-110 s (load 8-11, #15); numpy's sums are the
    same numbers for integer data. Called from job threads (reads a dict and numba's signatures)."""
    if not _state().running:
        return "numba"
    from ..engine.kernels import as_kernel_input, runs_sum_block

    name = as_kernel_input(np.zeros(0, dtype)).dtype.name  # the dtype the kernel sees
    for disp in (runs_sum_block.parallel, runs_sum_block.serial):
        if any(str(getattr(sig[0], "dtype", "")) == name for sig in disp.signatures):
            return "numba"
    return "numpy"


def _napari_shapes(cube):
    """napari triangulates Shapes with numba, compiled per dtype and memory order on first use
    (seconds; a fresh install froze the GUI 4 s at the first Wedge polygon). Build a Shapes model
    of every detector the docks draw, as they draw it, and draw every kind of shape a user can
    (polygon, ellipse, rectangle, path, line: a user's first polygon froze the GUI 21-45 s, #15),
    here in the worker."""
    from napari.layers import Shapes

    from ..analysis.virtual.detectors import AnnulusDetector, DiskDetector, RectangleDetector, WedgeDetector
    from ._shapes_warm import warm_drawn_shapes
    from .virtual import detector_to_shapes

    dets = (
        DiskDetector((24.0, 24.0), 5.0),
        AnnulusDetector((24.0, 24.0), 6.0, 20.0),
        RectangleDetector((10.0, 30.0), (5.0, 40.0)),
        WedgeDetector((24.0, 24.0), 6.0, 20.0, -30.0, 60.0),  # concave
    )
    for det in dets:
        data, types = detector_to_shapes(det)
        for arrays in (data, [np.asfortranarray(a) for a in data]):
            Shapes(list(zip(arrays, types, strict=True)))
    warm_drawn_shapes()


def _imports(cube):
    """Modules the widgets import at their first result (matplotlib for histograms and plots)."""
    import matplotlib.figure  # noqa: F401
    from matplotlib.backends import backend_agg  # noqa: F401


# the Shapes first: the docks draw detectors as soon as they open; then the core's kernels in the
# order a user meets them (the same groups as `napari-4dstem warmup`, analysis/warm.py)
_STEPS = (_napari_shapes, _imports, *CORE_STEPS)
# the child process compiles the core steps' kernels after napari's Shapes are warm here (the docks
# wait for those to draw a detector outline) and before the core steps load them here
_CHILD_BEFORE = CORE_STEPS[0]


def _child_command(dtype: np.dtype) -> list[str]:
    """The child process that compiles the core kernels of ``dtype`` into numba's cache."""
    return [sys.executable, "-m", "napari_4dstem.analysis.warm", np.dtype(dtype).name]


def _warm_in_child(dtype: np.dtype):
    """Compile the core kernels of ``dtype`` in a child process (same interpreter, same package
    files, same ``NUMBA_CACHE_DIR``: it fills numba's on-disk cache); a generator yielding while it
    runs, returning whether it succeeded. numba's compiler is Python code: compiling in a worker
    thread made the GUI thread wait for the GIL (at load 9.5 a cold int32 virtual image, 16 s of
    compiling, left it 29 gaps > 50 ms, worst 0.86 s; `benchmarks/gil_compile_gaps.py`); in a
    child it holds another interpreter's GIL. Closing the generator (viewer closing) ends the child.
    ``NAPARI_4DSTEM_WARMUP_CHILD=0`` turns it off (the warm-up then compiles in its thread)."""
    if os.environ.get("NAPARI_4DSTEM_WARMUP_CHILD", "1") == "0":
        return False
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[2])  # the child imports these very files
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.Popen(
            _child_command(dtype),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
    except OSError as e:
        _state().failed.append(f"warm-up child: {type(e).__name__}: {e}")
        return False
    try:
        while proc.poll() is None:
            yield 1
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        _state().failed.append(f"warm-up child exited {proc.returncode}: the kernels compile in this process")
    return proc.returncode == 0


def warm_kernels(dtype: np.dtype):
    """Worker job: run each group of kernels once on a tiny cube of ``dtype`` (a generator:
    one yield per group, so a closing viewer can stop it between groups). The core kernels are
    compiled first in a child process (:func:`_warm_in_child`): the steps here then load them from
    numba's cache; where the child failed they compile here, as before."""
    cube = tiny_cube(dtype)
    for i, step in enumerate(_STEPS):
        if step is _CHILD_BEFORE:
            yield from _warm_in_child(dtype)
        try:
            step(cube)
        except Exception as e:
            _state().failed.append(f"{step.__name__}: {type(e).__name__}: {e}")
        yield i + 1


class WarmupLabel(QLabel):
    """ "preparing kernels..." while the kernels are warmed; hidden otherwise."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setText("preparing kernels (compiled once, in the background)...")
        self.setStyleSheet("color: #e0b040")
        self.setWordWrap(True)  # never what sets a dock's width
        _state().changed.connect(self._update)
        self._update()

    def _update(self) -> None:
        try:
            self.setVisible(is_warming())
        except RuntimeError:  # the label was deleted with its widget
            pass
