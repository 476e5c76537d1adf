"""Dock state in sessions: what each dock's form holds, kept in the session file and given back.

Translation only. A dock that mixes in :class:`DockState` and calls :func:`register_dock` from its
``__init__`` has its state saved by the Results dock's *Save session...* under
``settings["docks"][state_key]`` (plain JSON: the values of its spin boxes, combo boxes, check
boxes and text fields by attribute name, plus what the dock adds in :meth:`DockState.extra_state`,
e.g. the virtual detector or the strain reference rectangle). *Load session...* gives each open
dock its state back; a dock opened later gets it when it registers.

A dock closed (napari's title-bar close button, ``remove_dock_widget``, which closes the widget
through ``watch_dock``) keeps its last state as a pending one: reopened from the Plugins menu in
the same process (a new widget), it comes back as it was, typed values included (they were lost:
UX audit, session 15, S5); a session saved meanwhile keeps it too.
"""

from __future__ import annotations

import weakref
from typing import Any

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox

_FORM_TYPES = (QDoubleSpinBox, QSpinBox, QComboBox, QCheckBox, QLineEdit)


def _value(w) -> Any:
    if isinstance(w, (QDoubleSpinBox, QSpinBox)):
        return w.value()
    if isinstance(w, QComboBox):
        return w.currentText()
    if isinstance(w, QCheckBox):
        return w.isChecked()
    return w.text()


def _set_value(w, v: Any) -> bool:
    """Set a form field; False when the value does not fit it (a combo item that is not there)."""
    if isinstance(w, QDoubleSpinBox) and isinstance(v, int | float) and not isinstance(v, bool):
        w.setValue(float(v))
    elif isinstance(w, QSpinBox) and isinstance(v, int) and not isinstance(v, bool):
        w.setValue(v)
    elif isinstance(w, QComboBox) and isinstance(v, str) and w.findText(v) >= 0:
        w.setCurrentText(v)
    elif isinstance(w, QCheckBox) and isinstance(v, bool):
        w.setChecked(v)
    elif isinstance(w, QLineEdit) and isinstance(v, str):
        w.setText(v)
    else:
        return False
    return True


class DockState:
    """Mixin of a dock widget: its form as a JSON dict and back.

    ``state_key`` names the dock in the session; ``state_exclude`` lists attributes that are not
    part of the state (fields another field drives, the layer picker); a dock adds more with
    :meth:`extra_state` / :meth:`restore_extra` (applied after the form)."""

    state_key: str = ""
    state_exclude: tuple[str, ...] = ("layer_combo",)

    def keyPressEvent(self, event) -> None:
        """Return/Enter passed on by a field of the dock stop here. A spin box commits the typed
        value and ignores the key (as Qt's dialogs want); napari's main window then handed it to
        the canvas, where the active Shapes layer's "finish drawing" binding fired and the detector
        layer's edit handler wrote the old radius back over the typed one (UX audit, session 12)."""
        from qtpy.QtCore import Qt

        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            event.accept()
            return
        super().keyPressEvent(event)

    def _form_fields(self) -> dict[str, Any]:
        out = {}
        for name, w in vars(self).items():
            if name.startswith("_") or name in self.state_exclude:
                continue
            if isinstance(w, _FORM_TYPES) and type(w).__module__.startswith(("PyQt", "PySide", "qtpy")):
                out[name] = w
            elif isinstance(w, list | tuple) and w and all(isinstance(x, _FORM_TYPES) for x in w):
                out[name] = list(w)
        return out

    def dock_state(self) -> dict[str, Any]:
        """The dock's state as plain JSON values."""
        form = {n: [_value(x) for x in w] if isinstance(w, list) else _value(w) for n, w in self._form_fields().items()}
        return {"form": form, **self.extra_state()}

    def restore_state(self, state: dict[str, Any]) -> list[str]:
        """Give the dock a saved state; returns the fields that could not be set (left as they are)."""
        fields = self._form_fields()
        skipped = []
        for name, v in (state.get("form") or {}).items():
            w = fields.get(name)
            if w is None:
                skipped.append(name)
            elif isinstance(w, list):
                if not (isinstance(v, list) and len(v) == len(w) and all(_set_value(x, y) for x, y in zip(w, v))):
                    skipped.append(name)
            elif not _set_value(w, v):
                skipped.append(name)
        self.restore_extra({k: v for k, v in state.items() if k != "form"})
        return skipped

    def extra_state(self) -> dict[str, Any]:
        return {}

    def restore_extra(self, state: dict[str, Any]) -> None:
        return None


_DOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # viewer -> {key: weakref(dock)}
_PENDING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # viewer -> {key: state}


def _base(viewer):
    return getattr(viewer, "__wrapped__", viewer)  # docks get a proxy of the viewer


class _KeepOnClose(QObject):
    """Event filter of a registered dock: at its Close (before its ``closeEvent`` stops its jobs),
    its state becomes the pending state of its key, given to the next dock of that key."""

    def __init__(self, viewer, dock):
        super().__init__(dock)
        self._viewer = weakref.ref(viewer)
        dock.installEventFilter(self)

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Close:
            v = self._viewer()
            docks = _DOCKS.get(v, {}) if v is not None else {}
            ref = docks.get(obj.state_key)
            if ref is not None and ref() is obj:  # still the dock of its key (not one replaced)
                del docks[obj.state_key]
                try:
                    _PENDING.setdefault(v, {})[obj.state_key] = obj.dock_state()
                except RuntimeError:  # a field's Qt object already deleted (the app ending)
                    pass
        return False


def register_dock(viewer, dock: DockState) -> None:
    """Make ``dock``'s state part of ``viewer``'s session (the newest dock of a key wins); a state
    loaded before the dock was opened, or left by a closed dock of its key, is given to it now."""
    v = _base(viewer)
    _DOCKS.setdefault(v, {})[dock.state_key] = weakref.ref(dock)
    if isinstance(dock, QObject):
        _KeepOnClose(v, dock)
    state = _PENDING.get(v, {}).pop(dock.state_key, None)
    if state is not None:
        dock.restore_state(state)


def dock_states(viewer) -> dict[str, dict[str, Any]]:
    """``{state_key: state}`` of the viewer's open docks (and states loaded for docks not opened)."""
    v = _base(viewer)
    out = dict(_PENDING.get(v, {}))
    for key, ref in _DOCKS.get(v, {}).items():
        dock = ref()
        if dock is not None:
            out[key] = dock.dock_state()
    return out


def restore_dock_states(viewer, states: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Give each open dock its saved state; keep the others for when their dock opens.
    Returns ``{state_key: fields that could not be set}`` for the docks restored now."""
    v = _base(viewer)
    pending = _PENDING.setdefault(v, {})
    done = {}
    for key, state in (states or {}).items():
        ref = _DOCKS.get(v, {}).get(key)
        dock = ref() if ref is not None else None
        if dock is None:
            pending[key] = state
        else:
            done[key] = dock.restore_state(state)
    return done


def find_dock(viewer, key: str):
    """The open dock registered under ``key`` for ``viewer`` (e.g. ``"virtual"``), else None."""
    ref = _DOCKS.get(_base(viewer), {}).get(key)
    return ref() if ref is not None else None
