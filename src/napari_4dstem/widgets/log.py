"""The "Log" dock widget: every error of the docks' jobs, with its traceback.

The docks show a one-line message in their status line and a napari notification; the whole
traceback lands here (``log_error``), so a failure can be read and reported without a terminal.
"""

from __future__ import annotations

import functools
import time
import traceback

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QHBoxLayout, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from ._common import watch_dock


class _Log(QObject):
    added = Signal(str)

    def __init__(self):
        super().__init__()
        self.entries: list[str] = []


@functools.cache
def _log() -> _Log:
    """The one _Log of the process, made on first use."""
    return _Log()


def log_error(where: str, exc: BaseException) -> str:
    """Record ``exc`` (raised in ``where``) with its traceback; returns the entry."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    entry = f"[{time.strftime('%H:%M:%S')}] {where}: {type(exc).__name__}: {exc}\n{tb}"
    log = _log()
    log.entries.append(entry)
    del log.entries[:-200]
    log.added.emit(entry)
    return entry


def log_entries() -> list[str]:
    return list(_log().entries)


class LogWidget(QWidget):
    """Dock widget: the errors of the napari-4dstem docks, newest last, with tracebacks."""

    def __init__(self, viewer=None, parent: QWidget | None = None):
        super().__init__(parent)
        watch_dock(self)  # placed in napari's window with our other docks; cleaned up when napari closes it
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setPlaceholderText("errors of the napari-4dstem docks appear here, with tracebacks")
        clear = QPushButton("Clear")
        clear.clicked.connect(self.text.clear)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(clear)
        lay = QVBoxLayout(self)
        lay.addWidget(self.text)
        lay.addLayout(row)
        for e in log_entries():
            self.text.appendPlainText(e)
        _log().added.connect(self._add)

    def _add(self, entry: str) -> None:
        self.text.appendPlainText(entry)

    def closeEvent(self, event) -> None:
        try:
            _log().added.disconnect(self._add)
        except (TypeError, RuntimeError):
            pass
        super().closeEvent(event)
