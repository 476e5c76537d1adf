"""The stall detector: every GUI test fails when the GUI thread is blocked for more than 50 ms.

A zero-cost Qt timer ticks on the GUI thread every few milliseconds while a test runs. The time
between two ticks is one *interval* of GUI-thread work: a slot run by the event loop, or what the
test itself does between two event-loop turns (a click, a field edit; ``stall_detector.step()``
marks where one user action ends and the next begins, as the event loop does between two real
clicks). An interval whose GUI-thread CPU time is over ``THRESHOLD_S`` is a stall when our
package's share of it is: the watchdog samples where the GUI thread is every 10 ms (from 10 ms
into the interval), and the interval's CPU time times the fraction of samples in our code (our
slots, and napari calls made from them) must exceed ``THRESHOLD_S`` (or it was not seen at all and took over twice the
threshold). An interval spent wholly or mostly in napari or Qt (their event processing and
layout, e.g. a backlog of events after the machine was busy) is napari's floor and only logged. Not counted
either, it is

- napari's own floor, measured and reported (``paint_ms``) but not ours to remove: OpenGL
  painting (vispy's ``paintGL``/``resizeGL``/``initializeGL``, 50-100 ms a frame in software
  OpenGL) and adding a layer (``viewer.add_*``, ``LayerList.insert``: napari builds the layer's visual and controls
  on the GUI thread, 70-400 ms here; the layer's ``__init__`` included), building vispy canvases
  and visuals (``SceneCanvas``/``Node`` construction: each layer's visual, a dock's real-space
  canvas), docking a widget (``Window.add_dock_widget``, which also saves napari's settings),
  the layer list's Qt model repainting a row after a layer event (``QtLayerListModel.
  _process_event``) and recomputing a layer's thumbnail after ``layer.data = ...``
  (``_update_thumbnail``), filling a Shapes layer's mesh arrays after its data is set
  (``_shape_list._fill_arrays``), Qt laying out napari's main window (its ``LayoutRequest`` events),
  and pint building its unit registry (the first unit parsed in the process).
  None of these may run our own slots inside (napari's progress bar does, so it is not here). Widgets add each of
  their layers once and update it after;
- deliberately excluded set-up: pytest's and napari's fixtures before the test's first viewer
  (or its body) starts, creating a viewer (the ``make_napari_viewer`` fixture is wrapped
  here) and adding the first layer (``with stall_detector.excluded("first layer add"): ...``), or
  a test's own reference computation (``excluded("reference")``). Opening a dock widget
  (``add_plugin_dock_widget``) is set-up with a budget of its own, ``DOCK_OPEN_BUDGET_S``: Qt
  widgets, first imports and a canvas are fine there, a computation or a compile is not.

CPU time of the GUI thread, not wall time, is what counts: on the shared 2-core machine other
processes stretch wall time at random, while the GUI thread's own CPU time is what a
computation or a compile on it costs. (Waiting on a lock held by a worker is not CPU time; the
wall time is recorded beside it.) A watchdog thread samples the GUI thread's stack while an
interval runs long, so a failure names the code that held the thread.

Set ``NAPARI_4DSTEM_STALL_LOG=path`` to append every interval over the threshold (stalls and
excluded ones) as JSON lines: the before/after figures of docs/napari-widgets.md come from it.
"""

from __future__ import annotations

import faulthandler
import inspect
import json
import os
import re
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager

import pytest

THRESHOLD_S = 0.050
SETUP = "fixture set-up"
DOCK_OPEN_BUDGET_S = 0.250  # opening a dock widget: set-up, but with a budget of its own
TICK_MS = 5
SAMPLE_AFTER_S = 0.010  # the watchdog samples an interval from this far in, every 10 ms
# the GUI thread inside napari's floor: nesting depth of the timed calls, and the thread CPU time
# at which the outermost one began (a nested event loop inside it can end an interval mid-call)
_FLOOR = {"depth": 0, "t0": 0.0}


class StallDetector:
    """Records GUI-thread intervals over ``THRESHOLD_S`` of CPU time (see the module docstring)."""

    def __init__(self, name: str):
        self.name = name
        self.stalls: list[dict] = []
        self.excluded_long: list[dict] = []
        self.paint_s = 0.0  # GUI-thread CPU time in OpenGL painting, whole test
        self._excluded: list[str] = []
        self._timer = None
        self._main = threading.main_thread().ident
        self._lock = threading.Lock()
        self._samples: Counter = Counter()
        self._stop = threading.Event()
        self._watchdog = None
        self._dump = tempfile.TemporaryFile()  # the watchdog's faulthandler dumps
        self._begin()

    # -- intervals ----------------------------------------------------------------------------
    def _begin(self) -> None:
        self._t_wall = time.perf_counter()
        self._t_cpu = time.thread_time()
        self._paint_in = 0.0
        with self._lock:
            self._samples = Counter()

    def _close(self, where: str) -> None:
        now = time.thread_time()
        # an interval ended by a nested event loop inside a floor call (e.g. napari processing
        # events while it adds a layer): the floor call's CPU so far is floor, not ours
        floor_now = now - max(_FLOOR["t0"], self._t_cpu) if _FLOOR["depth"] else 0.0
        cpu = now - self._t_cpu - self._paint_in - floor_now
        wall = time.perf_counter() - self._t_wall
        if cpu > THRESHOLD_S:
            with self._lock:
                top = [f"{n}x {f}" for f, n in self._samples.most_common(3)]
            rec = {
                "test": self.name,
                "cpu_ms": round(cpu * 1e3, 1),
                "wall_ms": round(wall * 1e3, 1),
                "paint_ms": round(self._paint_in * 1e3, 1),
                "ended_by": where,
                "stack": top,
            }
            with self._lock:
                ours = sum(n for f, n in self._samples.items() if _OWN in f.split(" > ")[0])
                seen = sum(self._samples.values())
            rec["ours"] = ours
            # our code's share of the interval, estimated from where the watchdog saw the GUI
            # thread: a slot of ours that ran for a few ms inside a long turn of napari's or Qt's
            # event processing (a backlog of progress events on a loaded machine) is not a stall
            # of ours; a computation of ours fills the samples and fails as before
            own_cpu = cpu * ours / seen if seen else cpu
            rec["own_cpu_ms"] = round(own_cpu * 1e3, 1)
            if self._excluded:
                rec["excluded"] = self._excluded[-1]
                self.excluded_long.append(rec)
            elif (ours and own_cpu > THRESHOLD_S) or (not seen and cpu > 2 * THRESHOLD_S):
                self.stalls.append(rec)
            else:
                # every sample of the GUI thread was in napari or Qt (layout, event processing of
                # napari's own objects), none in our code: napari's floor, reported, not failed
                rec["napari_or_qt"] = True
                self.excluded_long.append(rec)
        self._begin()

    def _tick(self) -> None:
        self._close("event loop")

    def step(self) -> None:
        """End of one user action in a test that drives the widget without an event-loop turn."""
        self._close("step")

    @contextmanager
    def excluded(self, reason: str, budget_s: float | None = None):
        """Deliberately excluded set-up: not counted as a stall (still logged). With
        ``budget_s``, the whole block (GUI-thread CPU less napari's floor) must stay under it."""
        self._close("excluded block")
        self._excluded.append(reason)
        cpu0, floor0, wall0 = time.thread_time(), self.paint_s, time.perf_counter()
        try:
            yield
        finally:
            self._close(f"end of excluded {reason!r}")
            self._excluded.pop()
            cpu = time.thread_time() - cpu0 - (self.paint_s - floor0)
            if budget_s is not None and cpu > budget_s:
                self.stalls.append(
                    {
                        "test": self.name,
                        "cpu_ms": round(cpu * 1e3, 1),
                        "wall_ms": round((time.perf_counter() - wall0) * 1e3, 1),
                        "paint_ms": round((self.paint_s - floor0) * 1e3, 1),
                        "ended_by": f"{reason} over its {budget_s * 1e3:.0f} ms budget",
                        "stack": [],
                        "own_cpu_ms": round(cpu * 1e3, 1),  # the whole block is ours: budgeted
                    }
                )

    def begin_setup(self) -> None:
        self._close("fixture set-up")
        self._excluded.append(SETUP)

    def end_setup(self) -> None:
        if SETUP in self._excluded:
            self._close("end of fixture set-up")
            self._excluded.remove(SETUP)

    def painting_since(self, t0: float) -> None:
        """A floor call that began at thread CPU time ``t0`` ended: its CPU in this interval is
        floor (the part before the interval began was counted by the interval it ran in)."""
        now = time.thread_time()
        self._paint_in += now - max(t0, self._t_cpu)
        self.paint_s += now - t0

    # -- watchdog: where the GUI thread spends a long interval ----------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            # sampled from SAMPLE_AFTER_S into an interval, not from THRESHOLD_S: an interval of
            # 58 ms sampled only after 50 ms was judged by its last 8 ms (one sample, in a
            # ``create_worker`` of ours at the end of a turn of napari's event processing: 100 %
            # "ours", a false stall seen three times late in a full run)
            if time.perf_counter() - self._t_wall < SAMPLE_AFTER_S or self._excluded:
                continue
            where = _innermost_own_frame(_thread_stack(self._main, self._dump))
            if where and _FLOOR["depth"]:
                # inside one of napari's floor calls (its CPU is subtracted): not ours, even
                # when our code made the call (show_map -> add_image)
                where = "napari floor: " + where.replace(_OWN, "")
            if where:
                with self._lock:
                    self._samples[where] += 1

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        from qtpy.QtCore import QTimer

        self._timer = QTimer()
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._tick)
        self._timer.start()
        self._watchdog = threading.Thread(target=self._watch, daemon=True, name="stall-watchdog")
        self._watchdog.start()
        self._begin()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._close("end of test")
        if self._timer is not None:
            self._timer.stop()
            self._timer.deleteLater()
            self._timer = None
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(1.0)
        if self._watchdog is None or not self._watchdog.is_alive():
            self._dump.close()

    def report(self) -> str:
        lines = [f"GUI thread blocked > {THRESHOLD_S * 1e3:.0f} ms (CPU) {len(self.stalls)} time(s):"]
        for s in self.stalls:
            lines.append(
                f"  {s['cpu_ms']} ms CPU, ~{s['own_cpu_ms']} ms of it ours "
                f"({s['wall_ms']} ms wall, {s['paint_ms']} ms painting) "
                f"ended by {s['ended_by']}; GUI thread seen in: {s['stack']}"
            )
        return "\n".join(lines)


_OWN = "napari_4dstem/"  # our package's frames are labelled with this prefix


def _innermost_own_frame(stack: list[tuple[str, int, str]]) -> str | None:
    """``file:function`` of the innermost frame in napari_4dstem or the tests (else the innermost);
    our package's frames are prefixed ``napari_4dstem/``."""
    first = None
    for fn, lineno, func in stack:
        label = f"{os.path.basename(fn)}:{func}:{lineno}"
        if "/src/napari_4dstem/" in fn or "/site-packages/napari_4dstem/" in fn:
            label = _OWN + label
        if first is None:
            first = label
        if ("napari_4dstem" in fn or "/tests/" in fn) and not fn.endswith("conftest.py"):
            return label if label == first else f"{label} > {first}"
    return first


_FRAME_LINE = re.compile(r'^\s+File "(.*)", line (\d+) in (.*)$')


def _thread_stack(ident: int, dump) -> list[tuple[str, int, str]]:
    """The stack of thread ``ident``, innermost first, as (file, line, function), read by
    ``faulthandler`` in one C call that holds the GIL throughout.

    The watchdog used to walk ``sys._current_frames()[ident].f_back...`` in Python: the GIL can
    pass to the sampled thread between two steps of that walk, and on CPython 3.11 that thread
    then pops and frees frames the walk still reads. Session 14's UX audit traced its segfaults
    (and napari alone's, under the same harness) to exactly that walk; faulthandler reads the
    frames without ever releasing the GIL.
    """
    dump.seek(0)
    dump.truncate()
    faulthandler.dump_traceback(dump, all_threads=True)
    dump.seek(0)
    stack: list[tuple[str, int, str]] = []
    inside = False
    for line in dump.read().decode("utf-8", "replace").splitlines():
        if line.startswith(("Thread 0x", "Current thread 0x")):
            if inside:
                break
            inside = int(line.split("0x", 1)[1].split()[0], 16) == ident
        elif inside:
            m = _FRAME_LINE.match(line)
            if m:
                stack.append((m.group(1), int(m.group(2)), m.group(3)))
    return stack


def _no_arguments(timed):
    """``timed`` with the signature ``(self)``: psygnal and napari's events pass a slot as many
    arguments as its signature takes, so a wrapper of a ``(self)`` method must take no more."""

    def wrapped(self):
        return timed(self)

    return wrapped


_ACTIVE: list[StallDetector] = []
_PATCHED = False


def _patch_napari_floor() -> None:
    """Time what napari itself costs on the GUI thread and no widget can move off it: OpenGL
    painting, and adding a layer (napari builds its vispy visual and Qt controls there)."""
    global _PATCHED
    if _PATCHED:
        return
    from napari import layers
    from napari._qt.qt_main_window import Window
    from napari.components.layerlist import LayerList
    from vispy import scene
    from vispy.app.backends import _qt
    from vispy.scene.node import Node

    targets = [(_qt.CanvasBackendDesktop, n) for n in ("paintGL", "resizeGL", "initializeGL")]
    targets.append((LayerList, "insert"))
    targets.append((LayerList, "__delitem__"))  # removing a layer: napari tears its visual and controls down
    targets += [(c, "__init__") for c in (layers.Image, layers.Shapes, layers.Points, layers.Vectors, layers.Labels)]
    # building vispy canvases and visuals (napari's per-layer visual; a dock's real-space canvas)
    targets += [(scene.SceneCanvas, "__init__"), (Node, "__init__")]
    # adding a layer from data (napari checks the data, builds the layer, updates the dims)
    from napari.components.viewer_model import ViewerModel

    targets += [
        (ViewerModel, n) for n in ("add_layer", "add_image", "add_points", "add_shapes", "add_vectors", "add_labels")
    ]
    targets.append((Window, "add_dock_widget"))  # napari docks a widget (and saves its settings)
    # building a second napari canvas for the Real space dock (widgets/_multiview.py): napari's
    # model and QtViewer (canvas, dims sliders, layer list and controls), as a Window does
    from napari._qt.qt_viewer import QtViewer

    targets += [(ViewerModel, "__init__"), (QtViewer, "__init__")]
    # napari turning its own scale bar on (show_scale_bar_once): its vispy text visual, texture
    # and transforms are built then, 50-100 ms under load, napari's cost of showing the bar
    from napari._vispy.overlays.scale_bar import VispyScaleBarOverlay

    targets.append((VispyScaleBarOverlay, "_on_visible_change"))
    # ... and its `visible` event's other slot, which builds the bar's text (vispy's font atlas);
    # the whole of our one line that turns it on is napari's and vispy's work (their slots, the
    # text visual's shaders: 51-97 ms seen under load in slots no wrapper above covers)
    from napari_4dstem.widgets import _common

    targets.append((VispyScaleBarOverlay, "_on_rendering_change"))
    targets.append((_common, "show_scale_bar_once"))
    # pint building its unit registry (once a process, 0.19 s): napari pays it at the first layer
    # with units, or our Calibration.napari_kwargs when it defines Å⁻¹ first; either way once
    from pint.registry import LazyRegistry

    targets.append((LazyRegistry, "_LazyRegistry__init"))
    # napari's layer list turning a layer event (new thumbnail, name, visibility) into Qt's
    # dataChanged: its view repaints the row and thumbnail there (no slot of ours runs inside)
    from napari._qt.containers.qt_layer_model import QtLayerListModel

    targets.append((QtLayerListModel, "_process_event"))
    # napari filling a Shapes layer's mesh arrays (vertices and triangles of every shape) after
    # ``layer.data = ...``: a plain function, no event and no slot of ours inside; a detector's
    # outline set on the GUI thread (where napari layers must be set) pays it: 50 ms of a 103 ms
    # interval in a fresh-clone CI run at full load
    from napari.layers.shapes import _shape_list

    targets.append((_shape_list, "_fill_arrays"))
    # napari's dims sliders fitting their labels after a layer's scale changed the dims range
    # (Qt relayout of the sliders; no slot of ours inside): a calibration applied to the 4D layer
    # pays it, on main's code as well (session 15, mend-s)
    from napari._qt.widgets.qt_dims import QtDims

    targets.append((QtDims, "_resize_slice_labels"))
    # napari recomputing a layer's thumbnail after a data change (a Vectors layer rasterises
    # every arrow: 50-70 ms seen), synchronously inside ``layer.data = ...``
    targets += [
        (c, "_update_thumbnail") for c in (layers.Image, layers.Shapes, layers.Points, layers.Vectors, layers.Labels)
    ]
    # Qt laying out napari's main window (a LayoutRequest recomputes every dock's geometry;
    # no slot of ours runs inside it): timed for that event type only
    from napari._qt.qt_main_window import _QtMainWindow
    from qtpy.QtCore import QEvent

    orig_event = _QtMainWindow.event

    def event(self, e, _orig=orig_event):
        if e.type() != QEvent.Type.LayoutRequest or threading.get_ident() != main or _FLOOR["depth"]:
            return _orig(self, e)
        _FLOOR["depth"] += 1
        t = _FLOOR["t0"] = time.thread_time()
        try:
            return _orig(self, e)
        finally:
            _FLOOR["depth"] -= 1
            for d in _ACTIVE:
                d.painting_since(t)

    _QtMainWindow.event = event
    orig_open = Window.add_plugin_dock_widget

    def opening(self, *a, **k):
        # opening a dock is set-up with its own budget (Qt widgets, imports, a canvas): a widget
        # that computes on open (a mean pattern, a compile) still fails
        if not _ACTIVE:
            return orig_open(self, *a, **k)
        with _ACTIVE[-1].excluded("dock opening", budget_s=DOCK_OPEN_BUDGET_S):
            return orig_open(self, *a, **k)

    Window.add_plugin_dock_widget = opening
    main = threading.main_thread().ident
    stack: list[str] = []
    # _FLOOR["depth"]: count the outermost call only (a layer's __init__ runs inside add_layer, ...)
    for cls, name in targets:
        orig = getattr(cls, name)

        def timed(self, *a, _orig=orig, _what=f"{cls.__name__}.{name}", **k):
            if threading.get_ident() != main:  # GUI-thread time only
                return _orig(self, *a, **k)
            if os.environ.get("STALL_DEBUG") and _FLOOR["depth"]:
                print("nested", _what, _FLOOR["depth"], stack)
            stack.append(_what)
            if _FLOOR["depth"] == 0:
                _FLOOR["t0"] = time.thread_time()
            t = _FLOOR["t0"]
            _FLOOR["depth"] += 1
            try:
                return _orig(self, *a, **k)
            finally:
                _FLOOR["depth"] -= 1
                stack.pop()
                if _FLOOR["depth"] == 0:
                    for d in _ACTIVE:
                        d.painting_since(t)

        if len(inspect.signature(orig).parameters) == 1:  # (self) only: psygnal passes what a slot takes
            timed = _no_arguments(timed)
        setattr(cls, name, timed)
    _PATCHED = True


@pytest.fixture
def stall_detector(request):
    """The running test's stall detector (on for every ``gui`` test; see the module docstring)."""
    det = getattr(request.node, "_stall_detector", None)
    if det is None:
        pytest.skip("the stall detector runs in gui tests only")
    return det


@pytest.fixture(autouse=True)
def _stall_guard(request):
    if request.node.get_closest_marker("gui") is None:
        yield
        return
    request.getfixturevalue("qapp")
    _patch_napari_floor()
    det = StallDetector(request.node.nodeid)
    request.node._stall_detector = det
    _ACTIVE.append(det)
    det.start()
    # pytest's and napari's fixtures set up (settings, checks) before the test drives anything:
    # excluded until the first viewer is made or the test body starts
    det.begin_setup()
    try:
        yield det
    finally:
        det.stop()
        _ACTIVE.remove(det)
        log = os.environ.get("NAPARI_4DSTEM_STALL_LOG")
        if log:
            with open(log, "a") as f:
                for rec in det.stalls + det.excluded_long:
                    f.write(json.dumps(rec) + "\n")
                f.write(json.dumps({"test": det.name, "paint_ms": round(det.paint_s * 1e3, 1)}) + "\n")
    # a failure in teardown: the test body passed, the GUI thread stalled
    if det.stalls and not os.environ.get("NAPARI_4DSTEM_STALL_REPORT_ONLY"):
        pytest.fail(det.report(), pytrace=False)


@pytest.fixture
def virtual_dock(make_napari_viewer, qtbot, stall_detector):
    """``(viewer, dock)``: the strained-crystal sample with the Virtual imaging dock, its first
    image shown and no job running."""
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        viewer.open_sample("napari-4dstem", "strained_crystal")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None, timeout=20000)
    return viewer, w


@pytest.fixture
def strain_result(tmp_path):
    """A strain pipeline result of a small strained-crystal file (6 x 6 scan) computed from that
    file, as the Bragg dock would make it (the Results dock's tests list, show and save it)."""
    from napari_4dstem import open_datacube
    from napari_4dstem.io import emd
    from napari_4dstem.pipelines import DiskDetectionParams, ProbeSource, StrainParams, run_strain
    from napari_4dstem.simulation.samples import make_strained_crystal

    s = make_strained_crystal(scan_shape=(6, 6))
    path = emd.write(tmp_path / "sample.h5", *s.objects())
    dc = open_datacube(path)
    try:
        return run_strain(
            dc,
            detection=DiskDetectionParams(correlation_power=0.9),
            probe=ProbeSource(str(path)),
            strain=StrainParams(reference=(0, 3, 0, 3)),
        )
    finally:
        dc.close()


@pytest.fixture
def make_napari_viewer(make_napari_viewer, request):
    """napari's fixture, with viewer creation excluded from the stall detector."""
    det = getattr(request.node, "_stall_detector", None)

    def factory(*args, **kwargs):
        if det is None:
            return make_napari_viewer(*args, **kwargs)
        det.end_setup()
        with det.excluded("viewer creation"):
            return make_napari_viewer(*args, **kwargs)

    yield factory
    if det is not None:
        det.stop()  # the test is over: closing the viewers is not driving the widget


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    det = getattr(item, "_stall_detector", None)
    if det is not None:
        det.end_setup()
    yield


def pytest_sessionfinish(session, exitstatus):
    """Let our workers' threads end before the interpreter does.

    A job still running when the last test ends (e.g. a simulation stepping to its next cancel point
    after its viewer closed) otherwise emits on a signals object that interpreter shutdown has
    already freed; PyQt turns that error in a ``QRunnable.run`` into an abort, and the process exits
    134 after every test passed (seen with ``test_run_cancel_and_resume`` run alone).
    """
    try:
        from qtpy.QtCore import QThreadPool
    except ImportError:  # the core runs without Qt
        return
    QThreadPool.globalInstance().waitForDone(60_000)


class EventLoopTurns:
    """Counts event-loop turns (a 0 ms timer) and notes ``(viewer, layer, turn)`` at each layer
    inserted into one of ``viewers``: which turn of the GUI thread added which layer."""

    def __init__(self, *viewers):
        from qtpy.QtCore import QTimer

        self.n, self.at = 0, []
        self.timer = QTimer()
        self.timer.setInterval(0)
        self.timer.timeout.connect(self._tick)
        for v in viewers:
            v.layers.events.inserted.connect(lambda e, v=v: self.at.append((v, e.value, self.n)))
        self.timer.start()

    def _tick(self):
        self.n += 1
