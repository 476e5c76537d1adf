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
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
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


# the most a scrolled dock asks of the window's width: a wider form scrolls sideways (with the
# Real space dock, napari's layer docks and its canvas, a window of 1920 px has room for it)
DOCK_MIN_WIDTH_CAP_PX = 460


class _DockScroll(QScrollArea):
    """The scroll area of a dock's form: as narrow as its form's minimum width (up to
    ``DOCK_MIN_WIDTH_CAP_PX``: no sideways scrolling below that), as short as Qt allows (the
    form scrolls up and down)."""

    is_scroll_area = True  # not a dock: the Log names the dock above it (_common._dock_name)

    def eventFilter(self, obj, event):
        from qtpy.QtCore import QEvent

        # the form's minimum width changed (a longer text, a row shown): the dock's too, up to
        # the cap (Qt does not ask a scroll area again on its own)
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            width = self.minimumSizeHint().width()
            if width != getattr(self, "_min_width", None):  # else no relayout of the window
                self._min_width = width
                self.updateGeometry()
        return super().eventFilter(obj, event)

    def minimumSizeHint(self):
        from qtpy.QtCore import QSize

        hint = super().minimumSizeHint()
        inner = self.widget()
        if inner is None:
            return hint
        bar = self.verticalScrollBar().sizeHint().width()
        width = min(inner.minimumSizeHint().width() + bar + 2 * self.frameWidth(), DOCK_MIN_WIDTH_CAP_PX)
        return QSize(max(hint.width(), width), hint.height())


def scroll_contents(widget: QWidget) -> QScrollArea:
    """Put what ``widget`` lays out into a scroll area that fills it, so the dock can be narrower
    and shorter than its form (as napari's own docks are): its controls keep their sizes and are
    reached by scrolling, and the dock no longer holds the main window at the form's size (with
    the Virtual imaging and Real space docks open the window was 2112 x 1092 px, wider and taller
    than a 1920 x 1080 screen). Call it once the layout is built; ``widget.layout()`` is then the
    one holding the scroll area, and the form's own layout is ``area.widget().layout()``.

    Parameters
    ----------
    widget : QWidget
        A dock widget with its layout set.

    Returns
    -------
    QScrollArea
        The scroll area, its widget (resized to the viewport, never below its minimum size)
        holding the former layout and its widgets.
    """
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QBoxLayout, QFrame

    lay = widget.layout()
    # a label too long for a narrow dock puts its field under it rather than widen the form
    for sub in [lay, *widget.findChildren(QFormLayout)]:
        if isinstance(sub, QFormLayout):
            sub.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    inner = QWidget()
    inner.setObjectName("scrolled_form")
    inner.setLayout(lay)  # Qt moves the layout and its widgets over
    if isinstance(lay, QBoxLayout) and not _wants_height(lay):
        lay.addStretch(1)  # the form at the top of a tall dock, not spread over it
    area = _DockScroll()
    area.setObjectName("dock_scroll_area")
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    area.setWidget(inner)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    return area


def _wants_height(lay) -> bool:
    """Whether a box layout already ends in a stretch or holds a widget that takes spare height."""
    taking = {QSizePolicy.Policy.Expanding, QSizePolicy.Policy.MinimumExpanding, QSizePolicy.Policy.Ignored}
    n = lay.count()
    if n and lay.itemAt(n - 1).spacerItem() is not None:
        return True
    widgets = (lay.itemAt(i).widget() for i in range(n))
    return any(w is not None and w.sizePolicy().verticalPolicy() in taking for w in widgets)
