"""Workspace keys beside the Virtual imaging dock's own (UX point 22), and the keymap dock.

- **Space** plays a raster path over the scan from the current position (scan_x fastest, row
  after row) and stops at the end or on Space again. A ``QTimer`` on the GUI thread only moves
  the scan position; the docks compute what follows in their workers as for any scan step.
  (napari's own Space, hold to pan and zoom, is bound only while a Virtual imaging dock is open.)
- **Ctrl+Shift+S** saves what exists: the session (Results dock open with results in it), else
  the Virtual imaging dock's image as a result with its recipe. napari's own Ctrl+S (Save
  Selected Layers; .h5/.emd through this plugin's EMD writer) and Ctrl+O (Open, through its reader) stay.
- The *Keyboard shortcuts* dock lists every key (napari does not let plugins add to its Help
  menu; the dock is under Layers > Measure > napari-4dstem and Plugins > napari-4dstem).
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from ._common import watch_dock

# key -> what it does (bound by ``bind_workspace_keys``)
WORKSPACE_KEYS: dict[str, str] = {
    "Space": "play / stop a raster path over the scan (from the current position)",
    "Control-Shift-S": "save: the session when the Results dock holds results, else the virtual image",
}
# napari's own keys the plugin relies on (listed in the keymap dock, not bound here)
NAPARI_KEYS: dict[str, str] = {
    "Control-O": "napari: open a file (this plugin's reader takes 4D-STEM files)",
    "Control-S": "napari: save the selected layers (.h5/.emd through this plugin's EMD writer)",
}
# keys napari cannot bind: Qt's Key_Plus (the keypad's +, the + key of many layouts, Shift and =
# on a US keyboard) reaches napari's key handler as vispy's "+", which app_model reads as its
# UNKNOWN key (``bind_key("+")`` binds nothing), and Shift and - as "_" the same way; so "=" and
# "Shift-=" were bound, but a typed + grew nothing (UX audit, #15). These are read from the
# canvas's key events (``_multiview.canvas_key_events``): typed character -> (what, with Shift).
TYPED_KEYS: dict[str, tuple[str, tuple, tuple]] = {
    "+": ("detector 1 px larger (the keypad's or a layout's + key; Shift and = : 5 px)", (1.0,), (5.0,)),
    "_": ("detector 5 px smaller (Shift and -)", (-5.0,), (-5.0,)),
}
RASTER_MS = 100  # a raster step every 100 ms (10 positions a second)


class RasterPlayer:
    """Steps the scan position of ``dock`` (a dock with ``viewer`` and ``layer``) along a
    raster path on a GUI-thread timer; nothing else runs in it."""

    def __init__(self, dock, interval_ms: int = RASTER_MS):
        self.dock = dock
        self.timer = QTimer(dock)
        self.timer.setInterval(int(interval_ms))
        self.timer.timeout.connect(self.step)
        self.steps = 0

    @property
    def playing(self) -> bool:
        return self.timer.isActive()

    def toggle(self) -> None:
        if self.playing:
            self.stop()
        else:
            self.start()

    def start(self) -> None:
        if self.dock.layer is None or self.dock.viewer.dims.ndim < 4:
            return
        self.steps = 0
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def step(self) -> None:
        """The next scan position of the raster (scan_x fastest); stops after the last one."""
        from ._common import scan_position

        lyr = self.dock.layer
        if lyr is None or self.dock.viewer.dims.ndim < 4:
            self.stop()
            return
        ny, nx = lyr.data.shape[:2]
        iy, ix = scan_position(self.dock.viewer, lyr)
        i = iy * nx + ix + 1
        if i >= ny * nx:
            self.stop()
            return
        iy, ix = divmod(i, nx)
        # one event for both axes: a row change is one step, not a jump back and a step
        sy, sx = (float(v) for v in lyr.scale[:2])
        ty, tx = (float(v) for v in lyr.translate[:2])
        self.dock.viewer.dims.set_point((0, 1), (ty + iy * sy, tx + ix * sx))
        self.steps += 1


def save_current(dock, path=None) -> str:
    """Ctrl+Shift+S: save what exists; returns what it did (also in the dock's status line)."""
    from .results_list import ResultsListWidget, session_results

    viewer = dock.viewer
    results = [w for w in _dock_widgets(viewer) if isinstance(w, ResultsListWidget)]
    if results and session_results(viewer).session.entries:
        results[0].save_session(path)
        what = "session"
    elif getattr(dock, "result", None) is not None:
        dock.save_result(path)
        what = "virtual image"
    else:
        dock.status.setText("nothing to save yet: no result in the session and no virtual image")
        return "nothing"
    return what


def _dock_widgets(viewer) -> list:
    try:
        return list(viewer.window.dock_widgets.values())
    except (AttributeError, RuntimeError):
        return []


def bind_workspace_keys(dock) -> RasterPlayer:
    """Bind the workspace keys on ``dock.viewer`` for ``dock`` (the Virtual imaging dock);
    returns its raster player."""
    player = RasterPlayer(dock)
    dock.viewer.bind_key("Space", lambda viewer: player.toggle(), overwrite=True)
    dock.viewer.bind_key("Control-Shift-S", lambda viewer: save_current(dock), overwrite=True)
    _bind_typed_keys(dock)
    return player


def _bind_typed_keys(dock) -> None:
    """Grow or shrink ``dock``'s detector on the typed keys of ``TYPED_KEYS`` (see there)."""
    from ._multiview import canvas_key_events

    emitter = canvas_key_events(dock.viewer)
    if emitter is None:
        return

    # the Qt key event handled in this event-loop turn: the canvas does not accept it, and napari's
    # QtViewer, its parent, sends it to the same vispy events again
    last = [None]

    def on_key(event):
        key = getattr(getattr(event, "key", None), "name", None)
        native = getattr(event, "native", None)
        if key not in TYPED_KEYS or getattr(event, "handled", False) or (native is not None and native is last[0]):
            return
        last[0] = native
        if native is not None:  # the resend is in this dispatch; the next press (a repeat) is not
            QTimer.singleShot(0, lambda: last.__setitem__(0, None))
        shift = any(getattr(m, "name", m) == "Shift" for m in getattr(event, "modifiers", ()))
        _what, plain, shifted = TYPED_KEYS[key]
        dock.resize_detector(*(shifted if shift else plain))
        event.handled = True

    emitter.connect(on_key)
    dock._typed_keys = (emitter, on_key)


def unbind_workspace_keys(dock) -> None:
    player = getattr(dock, "raster", None)
    if player is not None:
        player.stop()
    typed = getattr(dock, "_typed_keys", None)
    if typed is not None:
        emitter, on_key = typed
        emitter.disconnect(on_key)
        dock._typed_keys = None
    for key in WORKSPACE_KEYS:
        try:
            dock.viewer.bind_key(key, None)
        except (KeyError, ValueError, TypeError):  # already unbound
            pass


def keymap_rows() -> list[tuple[str, str]]:
    """``(key, what it does)`` for every key of the plugin, then napari's own it relies on."""
    from .virtual import KEYMAP

    rows = [(k, what) for k, (what, _m, _a) in KEYMAP.items()]
    rows += [(k, what) for k, (what, _p, _s) in TYPED_KEYS.items()]
    rows += list(WORKSPACE_KEYS.items()) + list(NAPARI_KEYS.items())
    return [(k.replace("Control-", "Ctrl+").replace("Shift-", "Shift+"), what) for k, what in rows]


class KeymapWidget(QWidget):
    """Dock widget: the keymap (the keys work while a Virtual imaging dock is open)."""

    def __init__(self, viewer=None, parent: QWidget | None = None):
        super().__init__(parent)
        watch_dock(self)  # placed in napari's window with our other docks; cleaned up when napari closes it
        rows = keymap_rows()
        self.table = QTableWidget(len(rows), 2)
        self.table.setHorizontalHeaderLabels(["key", "what it does"])
        for i, (key, what) in enumerate(rows):
            self.table.setItem(i, 0, QTableWidgetItem(key))
            self.table.setItem(i, 1, QTableWidgetItem(what))
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setStretchLastSection(True)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Keys of napari-4dstem: active while the Virtual imaging dock is open"))
        layout.addWidget(self.table)


def raster_order(ny: int, nx: int, start: tuple[int, int] = (0, 0)) -> list[tuple[int, int]]:
    """The positions a raster from ``start`` visits after it (reference for tests and docs)."""
    i0 = start[0] * nx + start[1]
    return [tuple(int(v) for v in divmod(i, nx)) for i in np.arange(i0 + 1, ny * nx)]
