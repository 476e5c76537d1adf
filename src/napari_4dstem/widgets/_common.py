"""Pieces the dock widgets share: the 4D-layer picker and the layer -> DataCube translation."""

from __future__ import annotations

import threading
import time
import weakref

import numpy as np
from qtpy.QtCore import QEvent, QObject, Signal
from qtpy.QtWidgets import QComboBox

from .._layers import calibration_from_layer_meta
from ..data.calibration import Calibration
from ..data.datacube import DataCube
from ..errors import Napari4DSTEMError


def create_worker(func, *args, _progress=None, **kwargs):
    """napari's ``create_worker`` for every worker of ours, without napari's activity-dock bar.

    ``_progress`` is accepted and dropped: napari's bar for it runs ``QApplication.processEvents()``
    on the GUI thread when the worker starts (``QtActivityDialog.add_progress_bar``) and at every
    step (``QtLabeledProgressBar.setValue``, connected to ``yielded``), i.e. a nested event loop
    inside the dispatch of our own signals: a second worker starting while the first one's bar
    is added re-entered it, and the software-GL segfault seen in the widget tests under load was
    traced there once. Our docks show their own progress bar, status line and Cancel; napari's
    task status (its window's ``_register_task_status``, no event processing) stays.

    Parameters
    ----------
    func : callable
        A function or generator function, run in the worker thread.
    *args
        Its positional arguments.
    _progress : bool or dict, optional
        napari's activity-bar description; ignored (see above).
    **kwargs
        Its keyword arguments and napari's ``_connect``, ``_start_thread``, ``_worker_class``...

    Returns
    -------
    napari worker
        Started when ``_connect`` is given (napari's rule).
    """
    from napari.qt.threading import create_worker as napari_create_worker

    return napari_create_worker(func, *args, **kwargs)


def layer_array(layer):
    """The array behind a layer's data: a dock's viewer proxy wraps our own array types (a
    ``CheckedMemmap`` of a file) in a new proxy at every access, so compare this, not ``data``."""
    data = layer.data
    return getattr(data, "__wrapped__", data)


def layer_datacube(layer) -> tuple[DataCube, Calibration]:
    """The DataCube (no copy) and Calibration behind a 4D image layer.

    A dock gets napari's public-only proxies of the viewer's objects; the data is unwrapped so the
    engine can see a mapped file's memory map (a private attribute behind the proxy).
    """
    cal = calibration_from_layer_meta({"metadata": layer.metadata, "scale": layer.scale, "units": layer.units})
    return DataCube(layer_array(layer), cal, name=layer.name), cal


def holds_data(layer, data) -> bool:
    """Whether ``layer`` (or napari's proxy of it, as docks get) still holds the array ``data``.

    A dock's layers are napari's public-only proxies: ``layer.data`` is then a proxy too, never
    the array itself, for a memory-mapped file; compare the unwrapped objects.
    """
    if layer is None:
        return False
    return layer_array(layer) is getattr(data, "__wrapped__", data)


_SCALE_BAR_SHOWN = weakref.WeakSet()  # main viewers whose scale bar we turned on (once each)


def show_scale_bar_once(viewer) -> None:
    """Turn the scale bar of ``viewer``'s canvas on (the pattern's k units, Å⁻¹ for the samples)
    the first time a 4D-STEM dataset is there, as the Real space canvas has its own (UX point 3);
    once per viewer, so a user who turns it off later keeps it off."""
    base = getattr(viewer, "__wrapped__", viewer)
    try:
        if base in _SCALE_BAR_SHOWN:
            return
        _SCALE_BAR_SHOWN.add(base)
    except TypeError:  # not weakly referable: a stand-in viewer of a test
        return
    bar = getattr(getattr(getattr(base, "canvas", None), "overlays", None), "scale_bar", None)
    if bar is not None:
        bar.visible = True


class CubePicker(QComboBox):
    """A combo box of the viewer's 4D image layers that follows layers being added and removed.

    Emits ``currentTextChanged`` when the chosen layer changes (also when the chosen one goes).
    """

    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        self.refresh()

    def refresh(self, event=None) -> None:
        names = [
            lyr.name
            for lyr in self.viewer.layers
            if getattr(lyr, "ndim", 0) == 4 and getattr(lyr, "rgb", False) is False and hasattr(lyr, "contrast_limits")
        ]
        if names == [self.itemText(i) for i in range(self.count())]:
            return
        current = self.currentText()
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        self.blockSignals(False)
        if names:
            show_scale_bar_once(self.viewer)  # the pattern's scale, as the Real space canvas has
        if self.layer is not None:
            from ._warmup import ensure_warm

            # compile (or load) the kernels for this dtype in a worker before the first click
            ensure_warm(getattr(self.layer.data, "dtype", np.float32))
        if self.currentText() != current:
            self.currentTextChanged.emit(self.currentText())

    @property
    def layer(self):
        name = self.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def datacube(self) -> tuple[DataCube, Calibration]:
        """DataCube and Calibration of the chosen layer; a clear error when there is none."""
        if self.layer is None:
            raise Napari4DSTEMError("open a 4D-STEM dataset first (File > Open, or File > Open Sample)")
        return layer_datacube(self.layer)


def _dock_name(widget) -> str:
    """The class name of the dock of ours holding ``widget`` (its status label sits in the dock's
    scroll area or a group box, not in the dock itself), "job" when there is none."""
    w = widget.parent()
    while w is not None:
        if type(w).__module__.startswith(__package__) and not getattr(w, "is_scroll_area", False):
            return type(w).__name__
        w = w.parent()
    return "job"


class ThrottledBar:
    """Sets a dock's progress bar (range, value and text) at most ``MAX_HZ`` times a second; the
    last step (``done >= total``) is always shown at once, a step held back is shown when its
    interval ends.

    Each change of a ``QProgressBar`` repaints the main window: ``setValue`` repaints at once and
    ``setFormat`` queues an update, two ``UpdateRequest`` events of the main window a step, each
    composing the window with its OpenGL canvases (0.9-2.5 s wall gaps per block under load in the
    UX audit, #15; no ``LayoutRequest``: the bar's size hint does not depend on its text). Here
    the bar's updates are off while it changes, so a step is one queued update, merged with the
    canvas's own redraw of the same event-loop turn."""

    MAX_HZ = 5.0

    def __init__(self, bar):
        from qtpy.QtCore import QTimer

        self.bar = bar
        self._t = -1e9  # when the bar was last set
        self._due: tuple | None = None  # the step held back
        self._timer = QTimer(bar)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._flush)

    def set(self, done, total, text: str | None, now: bool = False) -> None:
        """Show ``done`` of ``total`` with ``text`` as the bar's format (None: keep it); with
        ``now`` at once (a step whose map is drawn in the same turn: one repaint for both)."""
        self._due = (done, total, text)
        wait = self._t + 1.0 / self.MAX_HZ - time.perf_counter()
        if now or done >= total or wait <= 0:
            self._flush()
        elif not self._timer.isActive():
            self._timer.start(int(wait * 1000) + 1)

    def drop(self) -> None:
        """Forget a step held back (the job ended, or the bar shows something else now)."""
        self._due = None
        self._timer.stop()

    def _flush(self) -> None:
        self._timer.stop()
        if self._due is None or is_deleted(self.bar):
            return
        (done, total, text), self._due = self._due, None
        self._t = time.perf_counter()
        bar, top = self.bar, max(int(total), 1)
        bar.setUpdatesEnabled(False)  # setValue repaints at once: one queued update instead
        try:
            bar.setRange(0, top)
            bar.setValue(min(int(done), top))
            if text is not None:
                bar.setFormat(text)
        finally:
            bar.setUpdatesEnabled(True)  # queues one update


class JobRunner:
    """One background job at a time for a dock widget.

    Runs a core job (a generator yielding :class:`~napari_4dstem.engine.jobs.Progress` and
    returning its result) in a napari worker (:func:`create_worker`: no bar in napari's
    activity dock, whose bar runs nested event loops), enables the Cancel button while it runs,
    disables the widget's action buttons, optionally mirrors progress in a ``QProgressBar`` of
    the dock, and shows errors in the status label and as a napari notification (our own errors
    as their one-line message).
    """

    def __init__(self, status, cancel_btn, *, buttons=(), progress_bar=None):
        self.status = status
        self.cancel_btn = cancel_btn
        self.buttons = tuple(buttons)
        self.progress_bar = progress_bar
        self._bar = None if progress_bar is None else ThrottledBar(progress_bar)
        self.worker = None
        self._job = None
        self._eta = None
        self._partials = None
        self._stop = None  # the running job's stop flag (a threading.Event the worker checks)
        self.cancelling = False  # Cancel was clicked: what the job still sends is dropped
        self.cancel_s: list[float] = []  # seconds from each Cancel click to its job's end (wall)
        self._cancel_t0 = None
        self._desc = ""
        self._status_t = -1e9  # when the status line last showed a step (docks without a bar)
        cancel_btn.setEnabled(False)
        cancel_btn.clicked.connect(self.cancel)
        if progress_bar is not None:
            progress_bar.setVisible(False)

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def start(
        self,
        job_fn,
        *args,
        desc: str,
        on_done,
        total: int | None = None,
        eta: bool = False,
        on_progress=None,
        on_finished=None,
        partials: PartialMaps | None = None,
        **kwargs,
    ) -> bool:
        """Start the job ``job_fn(*args, **kwargs)`` (a generator function); False (and a
        message) when a job is running.

        With ``eta`` the progress bar reads "message: done / total, ETA m:ss". ``on_progress``
        gets every yielded value too; ``on_finished`` is called after the job ends in any way
        (done, cancelled or failed). ``partials`` shows the maps the job yields while it runs
        (:class:`PartialMaps`); it is stopped before ``on_done`` gets the result, so a late
        partial map never covers the final one.
        """
        if self.worker is not None:
            self.status.setText("a job is running: wait or cancel it")
            return False
        self.status.setText(f"{desc}...")
        self._desc, self._status_t = desc, -1e9
        self.cancel_btn.setEnabled(True)
        for b in self.buttons:
            b.setEnabled(False)
        if self.progress_bar is not None:
            self._bar.drop()
            self.progress_bar.setRange(0, 0)  # busy until the first step reports
            self.progress_bar.setVisible(True)
        progress = {"desc": desc} if total is None else {"desc": desc, "total": total}
        # Cancel sets ``stop``: the worker (``_drive``) closes the job at its next step, so its
        # clean-up (pending pool tasks, open files) runs there, at once and off the GUI thread
        self._job = job_fn(*args, **kwargs)
        self._stop = stop = threading.Event()
        self.cancelling = False
        self._eta = (time.perf_counter(), None, None) if eta else None
        self._partials = partials
        if partials is not None:
            partials.begin()
        done_slot = on_done

        def on_done(result, _done=done_slot):
            if stop.is_set():  # cancelled while its last step ran: a late result is dropped
                return
            if partials is not None:
                partials.stop()
            _done(result)

        yielded = [self._on_progress]
        if on_progress is not None:
            yielded.append(lambda p, _f=on_progress: None if stop.is_set() else _f(p))
        self.worker = create_worker(
            _drive,
            self._job,
            stop,
            _progress=progress,
            _connect={
                "yielded": yielded,
                "returned": on_done,
                "errored": self.error,
                "finished": [self._finished] + ([on_finished] if on_finished else []),
            },
        )
        return True

    def _on_progress(self, p) -> None:
        from ..engine.jobs import Progress

        if not isinstance(p, Progress) or self.cancelling:
            return  # a step that ended after Cancel: not shown
        if p.partial is not None and self._partials is not None:
            self._partials.show(p.partial)
        if self.progress_bar is None:
            # a dock without a bar: the steps in its status line, at most 5 a second (napari's
            # activity bar showed them before our workers left it, session 12)
            now = time.perf_counter()
            if p.total and (now - self._status_t >= 1.0 / ThrottledBar.MAX_HZ or p.done >= p.total):
                self._status_t = now
                self.status.setText(f"{p.message or self._desc}: {p.done} / {p.total}...")
            return
        text = None
        if self._eta is not None:
            text = self._eta_text(p)
        elif p.message:
            text = f"{p.message}: %p%"
        self._bar.set(p.done, p.total, text)  # at most 5 a second: each repaints the window

    def _eta_text(self, p) -> str:
        """ "message: done / total, ETA m:ss", the rate measured from the first report (steps
        already done when the job starts, e.g. on resume, are not counted as fast work)."""
        now = time.perf_counter()
        t0, first, phase = self._eta
        if first is None or phase != (p.message, p.total):
            # a new phase (ACOM: disks, then plans, then matching) has a rate of its own
            self._eta = (now, int(p.done), (p.message, p.total))
            eta = "--:--"
        else:
            rate = (p.done - first) / max(now - t0, 1e-9)
            left = (p.total - p.done) / rate if rate > 0 else None
            eta = "--:--" if left is None else f"{int(left // 60)}:{int(left % 60):02d}"
        head = f"{p.message}: " if p.message else ""
        return f"{head}{p.done} / {p.total}, ETA {eta}"

    def _finished(self) -> None:
        self.worker = None
        if self._partials is not None:
            # cancelled or failed: the held map is shown, the map stays as far as it got
            self._partials.stop(show_pending=True)
            self._partials = None
        if self._job is not None:
            try:
                self._job.close()  # no-op: the worker ran it to its end or closed it (_drive)
            except ValueError:  # a job still running in a worker the event loop lost: left to GC
                pass
            self._job = None
        if self.cancelling:
            self.cancel_s.append(time.perf_counter() - self._cancel_t0)
            self.cancelling = False
            if self.status.text() == "cancelling...":  # else the dock said what the stop means
                self.status.setText("cancelled")
        self._stop = None
        self.cancel_btn.setEnabled(False)
        for b in self.buttons:
            b.setEnabled(True)
        if self.progress_bar is not None:
            self._bar.drop()
            self.progress_bar.setVisible(False)

    def error(self, exc) -> None:
        import napari

        from .log import log_error

        msg = str(exc) if isinstance(exc, Napari4DSTEMError) else f"{type(exc).__name__}: {exc}"
        self.status.setText(msg)
        log_error(_dock_name(self.status), exc)  # traceback: Log dock
        napari.utils.notifications.show_error(msg)

    def cancel(self) -> None:
        """Stop the job; returns at once. The worker stops at the job's next step and runs the
        job's clean-up (pending pool tasks, open files) itself; the dock says "cancelling..."
        until then, and what the job still yields or returns is dropped. The map of partial
        results keeps the last one shown, and the one held for the interval is shown at once."""
        if self.worker is None or self.cancelling:
            return
        self._cancel_t0 = time.perf_counter()
        self.cancelling = True
        if self._stop is not None:
            self._stop.set()
        self.cancel_btn.setEnabled(False)
        self.status.setText("cancelling...")
        if self.progress_bar is not None:
            self._bar.drop()
            self.progress_bar.setFormat("cancelling...")
        if self._take_queued():
            return
        if self._partials is not None:
            from qtpy.QtCore import QTimer

            partials = self._partials
            QTimer.singleShot(0, lambda: partials.stop(show_pending=True))  # the held map, next turn

    def _take_queued(self) -> bool:
        """A job still queued in Qt's thread pool (2 threads on a 2-core machine: behind the
        docks' warm-ups or another dock's job) is taken out and ends at the next event-loop
        turn; True then.
        Else it stopped nothing: the worker stops at the job's next step."""
        from qtpy.QtCore import QThreadPool

        worker = self.worker
        try:
            taken = QThreadPool.globalInstance().tryTake(worker)
        except (RuntimeError, TypeError):  # deleted, or not a runnable this binding can take
            return False
        if not taken:
            return False
        from qtpy.QtCore import QTimer

        def end():
            worker.finished.emit()  # what the worker sends at its end: this runner's and napari's clean-up
            worker._finished.emit(worker)  # superqt drops it from its set of live workers

        QTimer.singleShot(0, end)  # the next event-loop turn: the click itself stays cheap
        return True

    def close(self) -> None:
        """Stop the running job and wait for it (call from the widget's closeEvent)."""
        if self.worker is not None:
            if self._stop is not None:
                self._stop.set()
            self.worker.quit()
            self.worker.await_workers(msecs=5000)
        if self._job is not None:
            try:
                self._job.close()
            except ValueError:  # still running after the wait: left to garbage collection
                pass


class PartialMaps:
    """The maps a job yields while it runs (``Progress.partial``), shown in the real-space
    viewer at an adaptive 2-5 Hz.

    Only the newest map of each name waits: one arriving sooner than the interval after the last
    update is held and shown when the interval is over (a later one of that name replaces it; a
    job yielding several maps, e.g. ptychography's object and probe, gets each shown). The interval is four
    times what the last update cost the GUI thread, between 0.2 s and 0.5 s, so a slow canvas
    gets fewer updates. ``stop(show_pending=True)`` shows the held map (a cancelled job leaves
    the map as far as it got); ``hide(keep)`` hides the layers of partial maps that the final
    result does not reuse. ``colormaps`` maps a partial map's name to its colormap (the final
    map's, when the final result reuses the layer).
    """

    MIN_S, MAX_S = 0.2, 0.5

    def __init__(self, viewer, *, colormaps: dict | None = None):
        self._viewer = viewer  # callable: the real-space viewer
        self._cal = None  # the scan's Calibration, given per job (``for_scan``)
        self._part = "scan"  # or "k": patterns (``for_pattern``)
        self.colormaps = dict(colormaps or {})
        self.interval = self.MIN_S
        self.shown: list[tuple[str, float, float]] = []  # (name, fraction, time) of each update
        self.costs: list[float] = []  # seconds each update of a layer took on the GUI thread (wall)
        self._pending: dict = {}  # name -> the newest map of that name not shown yet
        self._last = -1e9
        self._timer = None

    def for_scan(self, calibration) -> PartialMaps:
        """These maps, for a job over a scan with ``calibration`` (``JobRunner.start(...,
        partials=maps.for_scan(cal))``)."""
        self._cal, self._part = calibration, "scan"
        return self

    def for_pattern(self, calibration) -> PartialMaps:
        """These maps, for a job whose partial results are diffraction patterns in
        ``calibration``'s k units (the simulation's newest pattern)."""
        self._cal, self._part = calibration, "k"
        return self

    @property
    def held(self) -> tuple[str, ...]:
        """The names of the maps held for the interval (shown at its end, or at once by ``stop(show_pending=True)``)."""
        return tuple(self._pending)

    def begin(self) -> None:
        self._pending = {}
        self._last = -1e9
        self.shown = []
        self.costs = []

    def show(self, pm) -> None:
        from qtpy.QtCore import QTimer

        self._pending[pm.name] = pm
        wait = self._last + self.interval - time.perf_counter()
        if wait <= 0:
            if self._timer is not None:
                self._timer.stop()  # its event may be late behind this one: no second update now
            self._apply()
        elif self._timer is None:
            self._timer = QTimer()
            self._timer.setSingleShot(True)
            self._timer.timeout.connect(self._apply)
            self._timer.start(int(wait * 1000) + 1)
        elif not self._timer.isActive():
            self._timer.start(int(wait * 1000) + 1)

    def _apply(self) -> None:
        from ._realspace import drop_complex
        from ._results import show_map

        pending, self._pending = self._pending, {}
        if not pending:
            return
        t_all = time.perf_counter()
        for pm in pending.values():
            t0 = time.perf_counter()
            try:
                v = self._viewer()
                update = pm.name in v.layers  # else napari builds the layer (its floor: 0.2-0.4 s)
                lyr = show_map(
                    v,
                    pm.name,
                    pm.data,
                    self._cal,
                    part=self._part,
                    colormap=self.colormaps.get(pm.name, "viridis"),
                    contrast_limits=pm.limits,
                )
                lyr.visible = True  # a map of an earlier run may have been hidden
                drop_complex(lyr)  # a final complex map of an earlier run: the readout gives this one
            except Exception as e:  # a viewer closed under a running job: the job goes on unseen
                from .log import log_error

                log_error("partial map", e)
                return
            now = time.perf_counter()
            self.shown.append((pm.name, pm.fraction, now))
            if update:
                self.costs.append(now - t0)
        self.interval = min(self.MAX_S, max(self.MIN_S, 4 * (now - t_all)))
        self._last = now

    def stop(self, *, show_pending: bool = False) -> None:
        if self._timer is not None:
            self._timer.stop()
        if show_pending:
            self._apply()
        self._pending = {}

    def hide(self, keep=()) -> None:
        """Hide the layers of partial maps that the final result does not reuse (all but
        ``keep``): they stay in the layer list, and a later run fills them again. (Removing
        them cost the GUI thread 0.1-0.5 s of napari's layer-control teardown.)"""
        v = self._viewer()
        for name, _, _ in self.shown:
            if name not in keep and name in v.layers:
                v.layers[name].visible = False


class FileJobs:
    """A dock's file writing and reading in napari workers (Save result..., Export, Show): the
    GUI thread only starts them and shows the outcome (writing a result took 65-360 ms of it).

    Independent of the dock's :class:`JobRunner`: a result can be saved while the next analysis
    runs. ``run(fn, *args, desc=..., on_done=...)`` calls ``fn(*args)`` in a worker; its return
    value goes to ``on_done`` on the GUI thread, errors to ``on_error`` (the dock's status line,
    a notification and the Log dock with the traceback). Results that arrive after the dock was
    closed are dropped.
    """

    def __init__(self, status, on_error):
        self.status = status
        self.on_error = on_error
        self.workers: list = []

    @property
    def busy(self) -> bool:
        return bool(self.workers)

    def run(self, fn, *args, desc: str, on_done=None, **kwargs):
        """Start ``fn(*args, **kwargs)`` in a worker; returns the worker."""
        self.status.setText(f"{desc}...")
        owner = self.status
        slot = {"returned": guarded(owner, on_done)} if on_done is not None else {}
        worker = create_worker(
            fn,
            *args,
            **kwargs,
            _connect={**slot, "errored": guarded(owner, self.on_error), "finished": lambda: self._finished(worker)},
        )
        self.workers.append(worker)
        return worker

    def _finished(self, worker) -> None:
        if worker in self.workers:
            self.workers.remove(worker)

    def wait(self, msecs: int = 10000) -> None:
        """Block until every file job has ended (tests and closing only)."""
        from qtpy.QtCore import QCoreApplication, QElapsedTimer

        t = QElapsedTimer()
        t.start()
        while self.workers and t.elapsed() < msecs:
            QCoreApplication.processEvents()
            time.sleep(0.002)


# seconds of work per scan block of a whole-scan job run from a dock: the job yields (progress,
# the map so far) and can stop after each block, so Cancel takes about this long
BLOCK_S = 0.15


def responsive_chunk(scan_shape, detector_shape, seconds_per_pattern: float | None = None) -> tuple[int, int]:
    """A scan block ``(rows, cols)`` of about ``BLOCK_S`` of work on all local threads, from a
    measured time per pattern on one thread (else a guess of 5 ms per 128 x 128 pattern):
    whole scan rows when a row fits, else part of one."""
    from ..engine.driver import n_threads

    sy, sx = (int(v) for v in scan_shape)
    guess = 5e-3 * detector_shape[0] * detector_shape[1] / 128**2
    # a measured time (the live detection's) may include a first call's compile or a busy
    # moment: at most 4x the guess (blocks then at most ~0.6 s; 2048 blocks of 2 patterns were
    # seen with a first measurement of 0.3 s)
    t = min(seconds_per_pattern, 4 * guess) if seconds_per_pattern else guess
    n = max(n_threads(), int(BLOCK_S * n_threads() / max(t, 1e-6)))
    if n >= sx:
        return (max(1, min(sy, n // sx)), sx)
    return (1, n)


CANCELLED = object()  # what a cancelled job's worker returns (dropped by JobRunner)


def _drive(job, stop=None):
    """The worker's generator: run ``job`` to its end and return its result; once ``stop`` (a
    ``threading.Event``) is set, close the job here, in the worker, at its next step (its
    clean-up, e.g. waiting for a running block, never on the GUI thread) and return
    ``CANCELLED``."""
    while True:
        if stop is not None and stop.is_set():
            job.close()
            return CANCELLED
        try:
            p = next(job)
        except StopIteration as end:
            return end.value
        if stop is not None and stop.is_set():
            job.close()
            return CANCELLED
        yield p


def scan_position(viewer, layer) -> tuple[int, int]:
    """The scan position ``(iy, ix)`` of a 4D layer shown by the viewer's sliders (clipped)."""
    import numpy as np

    pt = viewer.dims.point
    ny, nx = layer.data.shape[:2]
    iy = round((pt[0] - layer.translate[0]) / layer.scale[0])
    ix = round((pt[1] - layer.translate[1]) / layer.scale[1])
    return int(np.clip(iy, 0, ny - 1)), int(np.clip(ix, 0, nx - 1))


class _ModelsChanged(QObject):
    changed = Signal()


_MODELS_CHANGED = None


def models_changed():
    """The signal emitted when a model is added to the registry's user folder (the NN widget
    refreshes its model list on it)."""
    global _MODELS_CHANGED
    if _MODELS_CHANGED is None:
        _MODELS_CHANGED = _ModelsChanged()
    return _MODELS_CHANGED.changed


def is_deleted(obj) -> bool:
    """True when the Qt object behind ``obj`` is gone (a dock closed while its worker ran)."""
    try:
        from qtpy import sip

        return bool(sip.isdeleted(obj))
    except (ImportError, TypeError):
        try:
            import shiboken6

            return not shiboken6.isValid(obj)
        except (ImportError, TypeError):
            return False


def guarded(owner, fn):
    """``fn`` that does nothing once the Qt object ``owner`` is deleted: for worker results
    that arrive after their dock was closed (or its viewer, at the end of a test)."""

    def call(*args, **kwargs):
        if is_deleted(owner):
            return None
        return fn(*args, **kwargs)

    return call


class LatestRunner:
    """Runs a quick computation (a preview on the current pattern) in a worker; the newest
    request wins.

    ``request(fn, *args, **kwargs)`` runs ``fn`` in a worker and hands its result to
    ``on_result`` on the GUI thread. While one runs, only the newest further request is kept
    and started when it ends (requests in between are dropped), so a burst of scan steps or
    parameter edits costs the GUI thread nothing and the display ends on the last one. Errors
    go to ``on_error``.
    """

    def __init__(self, on_result, on_error, *, on_busy=None):
        self.on_result = on_result
        self.on_error = on_error
        self.on_busy = on_busy  # called with True when work starts, False when none is left
        self.worker = None
        self._next = None
        self.generation = 0  # bumped by every request: a result of an older one is still shown

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def request(self, fn, *args, **kwargs) -> None:
        self.generation += 1
        self._next = (fn, args, kwargs)
        if self.worker is None:
            self._start()

    def _start(self) -> None:
        fn, args, kwargs = self._next
        self._next = None
        if self.on_busy is not None:
            self.on_busy(True)
        owner = getattr(self.on_result, "__self__", None)
        on_result, on_error = self.on_result, self.on_error
        if owner is not None:
            on_result, on_error = guarded(owner, on_result), guarded(owner, on_error)
        self.worker = create_worker(
            fn,
            *args,
            **kwargs,
            _connect={"returned": on_result, "errored": on_error, "finished": self._finished},
        )

    def _finished(self) -> None:
        self.worker = None
        if self._next is not None:
            self._start()
        elif self.on_busy is not None:
            self.on_busy(False)

    def wait(self, msecs: int = 10000) -> None:
        """Block until no work is left (tests and closing only)."""
        from qtpy.QtCore import QCoreApplication, QElapsedTimer

        t = QElapsedTimer()
        t.start()
        while (self.worker is not None or self._next is not None) and t.elapsed() < msecs:
            QCoreApplication.processEvents()
            time.sleep(0.002)

    def close(self) -> None:
        self._next = None
        if self.worker is not None:
            self.worker.await_workers(msecs=5000)


# -- a dock's life in napari's window -------------------------------------------------------------


class _DockWatch(QObject):
    """Event filter of a dock widget of ours (:func:`watch_dock`)."""

    def __init__(self, widget, kind: str):
        super().__init__(widget)
        self._kind = kind
        self._dock = None
        self.released = False  # the widget's handlers on the viewer were dropped
        widget.installEventFilter(self)

    def eventFilter(self, obj, event):
        t = event.type()
        if t in (QEvent.Type.ParentChange, QEvent.Type.Show) and self._dock is None:
            self._find_dock(obj)
        elif t == QEvent.Type.Close and not self.released:
            self.released = True
            release_viewer_handlers(obj)
        return False

    def _find_dock(self, widget) -> None:
        from qtpy.QtWidgets import QDockWidget

        w = widget.parentWidget()
        while w is not None and not isinstance(w, QDockWidget):
            w = w.parentWidget()
        if w is None:
            return
        self._dock = w
        from ._multiview import place_dock

        kind = self._kind
        if w.parent() is not None and hasattr(w.parent(), "dockWidgetArea"):
            place_dock(w, kind)  # already in the window (a dock made before the watch)
        else:
            # napari adds the dock to its window next: placed then, inside addDockWidget, before
            # the window lays itself out at the size of stacked docks
            w.dockLocationChanged.connect(guarded(w, lambda *_: place_dock(w, kind)))
        # napari removes a dock (its close button, remove_dock_widget) without closing the widget
        # in it (it unparents the widget and deletes the dock): the dock's end closes the widget
        w.destroyed.connect(guarded(widget, lambda *_: _dock_removed(widget)))


def _dock_removed(widget) -> None:
    watch = widget.findChild(_DockWatch)
    if watch is not None and watch.released:
        return  # closed already
    widget.close()


def watch_dock(widget, kind: str = "form") -> None:
    """Look after ``widget``'s dock in napari's main window; call from its ``__init__``.

    - placing: once napari has put the dock in its window, it goes under our other dock forms
      docked in that area (``kind="form"``), or under the Real space canvas (``kind="canvas"``:
      the Result pane); one that would make the main window outgrow the screen floats as a
      window of its own inside the screen instead, so more docks keep the window within the
      screen, with no tabs (:func:`._multiview.place_dock`);
    - closing: napari's dock close (its title bar's close button, ``remove_dock_widget``) never
      calls the widget's ``closeEvent``; here the dock's end closes the widget, so its
      ``closeEvent`` stops its jobs and timers, and every handler of the widget on the viewer's
      events (layers, dims, the plugin's events, key bindings, mouse callbacks) is dropped
      (:func:`release_viewer_handlers`), also when the widget is closed otherwise.
    """
    if widget.findChild(_DockWatch) is None:
        _DockWatch(widget, kind)


def _owned_by(obj, widget) -> bool:
    """Whether ``obj`` is ``widget``, a Qt object inside it, or a helper object of ours that holds
    it (a detector list, a runner): the owners of callbacks that must go with the dock."""
    if obj is None:
        return False
    if obj is widget:
        return True
    if isinstance(obj, QObject):
        try:
            p = obj.parent()
            while p is not None:
                if p is widget:
                    return True
                p = p.parent()
        except RuntimeError:  # deleted
            return False
        return False
    if type(obj).__module__.startswith("napari_4dstem") and hasattr(obj, "__dict__"):
        return any(v is widget for v in vars(obj).values())
    return False


def _callback_owners(cb, depth: int = 0):
    """The objects a callback acts for: a bound method's object, napari's weak ``(obj, name)``
    pair's object, what a closure (``guarded``, a lambda) or a ``functools.partial`` holds."""
    import functools

    if isinstance(cb, tuple) and cb and isinstance(cb[0], weakref.ref):
        yield cb[0]()
        return
    deref = getattr(cb, "dereference", None)  # psygnal's weak callback
    if callable(deref) and not isinstance(cb, functools.partial):
        try:
            cb = deref()
        except Exception:
            return
        if cb is None:
            return
    if hasattr(cb, "__self__"):
        yield cb.__self__
        cb = getattr(cb, "__func__", cb)
    if isinstance(cb, functools.partial):
        yield from cb.args
        yield from _callback_owners(cb.func, depth + 1)
        return
    for cell in getattr(cb, "__closure__", None) or ():
        try:
            v = cell.cell_contents
        except ValueError:  # empty cell
            continue
        yield v
        if depth < 2 and callable(v):
            yield from _callback_owners(v, depth + 1)


def _acts_for(cb, widget) -> bool:
    return any(_owned_by(o, widget) for o in _callback_owners(cb))


def _viewer_emitters(viewer):
    """napari's event emitters of ``viewer`` and of its layers (and of the Real space viewer)."""
    for model in (viewer, _results_model(viewer)):
        if model is None:
            continue
        for group in (getattr(model, "events", None), model.layers.events, model.dims.events):
            if group is not None:
                yield from getattr(group, "emitters", {}).values()
        for lyr in model.layers:
            yield from lyr.events.emitters.values()


def _results_model(viewer):
    from ._results import results_viewer

    try:
        return results_viewer(viewer, create=False)
    except Exception:
        return None


def release_viewer_handlers(widget) -> int:
    """Drop every handler ``widget`` (or what it owns) left on its viewer: callbacks of napari's
    events of the viewer, its layers and the Real space viewer, of the plugin's own events, key
    bindings and mouse callbacks; stop its Qt timers, cancel the jobs of its ``JobRunner`` objects and drop
    the requests its ``LatestRunner`` objects still hold (none of this waits). Returns how many handlers went.

    A dock that napari removed without a ``closeEvent`` kept them (the Bragg dock's live disk
    detection ran again at every scan step after its dock was closed; the Orientation dock
    followed ``pattern_changed``)."""
    from qtpy.QtCore import QTimer

    viewer = getattr(widget, "viewer", None)
    n = 0
    for timer in widget.findChildren(QTimer):
        timer.stop()
    for helper in list(vars(widget).values()):
        if isinstance(helper, JobRunner):
            helper.cancel()  # returns at once: the worker closes the job at its next step
        elif isinstance(helper, LatestRunner):
            helper._next = None  # the one running ends on its own; no further request starts
    if viewer is None:
        return n
    base = getattr(viewer, "__wrapped__", viewer)
    for em in _viewer_emitters(base):
        for cb in list(em.callbacks):
            if _acts_for(cb, widget):
                em.disconnect(cb)
                n += 1
    from ..plugin_api import events

    ev = events(viewer)
    for name in ("pattern_changed", "datacube_changed", "calibration_changed", "virtual_image_changed", "result_added"):
        sig = getattr(ev, name, None)
        for slot in list(getattr(sig, "_slots", ())):
            if _acts_for(slot, widget):
                sig.disconnect(slot.dereference())
                n += 1
    for model in (base, _results_model(base)):
        if model is None:
            continue
        for holder in [model, *model.layers]:
            for key, func in list(getattr(holder, "keymap", {}).items()):
                if _acts_for(func, widget):
                    holder.bind_key(key, None)
                    n += 1
            for attr in ("mouse_drag_callbacks", "mouse_move_callbacks", "mouse_wheel_callbacks"):
                lst = getattr(holder, attr, None)
                for cb in list(lst or ()):
                    if _acts_for(cb, widget):
                        lst.remove(cb)
                        n += 1
    return n
