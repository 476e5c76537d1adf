"""Small builders for the forms of the dock widgets: spin boxes, ranges, folder pickers."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
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
    row = QHBoxLayout()
    row.addWidget(a)
    row.addWidget(QLabel("to"))
    row.addWidget(b)
    return row, (a, b)


def folder_row(edit: QLineEdit, parent: QWidget, title: str):
    """The folder field with a "Browse..." button that fills it."""
    btn = QPushButton("Browse...")

    def pick():
        d = QFileDialog.getExistingDirectory(parent, title, edit.text())
        if d:
            edit.setText(d)

    btn.clicked.connect(pick)
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(btn)
    return row


def job_row(*buttons):
    """The buttons of a job in a row, its progress bar and status label."""
    progress = QProgressBar()
    progress.setTextVisible(True)
    status = QLabel("")
    status.setWordWrap(True)
    row = QHBoxLayout()
    for b in buttons:
        row.addWidget(b)
    return row, progress, status
