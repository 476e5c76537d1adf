"""Small builders for the forms of the dock widgets: spin boxes, ranges, folder pickers."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)


def spin(lo, hi, value, *, decimals=None, step=None, suffix=""):
    """A QSpinBox, or a QDoubleSpinBox when ``decimals`` is given."""
    s = QSpinBox() if decimals is None else QDoubleSpinBox()
    if decimals is not None:
        s.setDecimals(decimals)
    s.setRange(lo, hi)
    s.setValue(value)
    if step is not None:
        s.setSingleStep(step)
    if suffix:
        s.setSuffix(suffix)
    return s


def spin_range(lo, hi, values, **kw):
    """Two spin boxes "low to high" in a row: ``(row, (low, high))``."""
    a, b = spin(lo, hi, values[0], **kw), spin(lo, hi, values[1], **kw)
    return row(a, QLabel("to"), b), (a, b)


def row(*widgets) -> QHBoxLayout:
    """``widgets`` side by side."""
    lay = QHBoxLayout()
    for w in widgets:
        lay.addWidget(w)
    return lay


def form(*rows, on: QWidget | None = None, flush: bool = False) -> QFormLayout:
    """A form (on the widget ``on`` when given) of ``rows``: ``(label, widget or layout)``
    pairs, or a widget or layout alone on its row; ``flush``: without margins."""
    lay = QFormLayout() if on is None else QFormLayout(on)
    if flush:
        lay.setContentsMargins(0, 0, 0, 0)
    for r in rows:
        if isinstance(r, tuple):
            lay.addRow(*r)
        else:
            lay.addRow(r)
    return lay


def group(title: str, *rows) -> QGroupBox:
    """A group box titled ``title`` holding the :func:`form` of ``rows``."""
    box = QGroupBox(title)
    form(*rows, on=box)
    return box


def folder_row(edit: QLineEdit, parent: QWidget, title: str):
    """The folder field with a "Browse..." button that fills it."""
    btn = QPushButton("Browse...")

    def pick():
        d = QFileDialog.getExistingDirectory(parent, title, edit.text())
        if d:
            edit.setText(d)

    btn.clicked.connect(pick)
    lay = QHBoxLayout()
    lay.addWidget(edit, 1)
    lay.addWidget(btn)
    return lay


def job_row(*buttons):
    """The buttons of a job in a row, its progress bar and status label."""
    progress = QProgressBar()
    progress.setTextVisible(True)
    status = QLabel("")
    status.setWordWrap(True)
    return row(*buttons), progress, status
