"""The "Open raw binary file" dock: the layout form of UX point 2.

A raw binary file has nothing to sniff, so the user says its layout: the file header (offset),
a header and a footer per frame, the pixel type and byte order, the frame shape as stored, and
the axis order (frames stored row by row or column by column of the scan, frames transposed).
The form shows the size that layout needs next to the file's size, green when they agree and red
when not, and offers only the scan shapes whose frame count the file holds exactly (the
factorisations of the frame count). *Open* is enabled only for a layout that fits; it opens the
file lazily with :func:`napari_4dstem.io.raw.read_datacube` (a strided view of a memory map, in a
worker) as a 4D layer. The Scan shape dock can reshape the scan later.
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..data.datacube import DataCube, scan_factorizations
from ..errors import Napari4DSTEMError
from ._common import FileJobs, watch_dock
from ._forms import form

DTYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64")
ENDIAN = {"little": "<", "big": ">"}
SCAN_ORDERS = ("row by row (scan_x fastest)", "column by column (scan_y fastest)")
GOOD, BAD = "#2e7d32", "#c62828"


def record_bytes(detector_shape, dtype, frame_header: int = 0, frame_footer: int = 0) -> int:
    """Bytes of one frame record: its header, the pixels, its footer."""
    return int(frame_header) + int(np.prod(detector_shape)) * np.dtype(dtype).itemsize + int(frame_footer)


def layout_fit(size: int, header: int, record: int) -> tuple[int, bool]:
    """``(frames, exact)``: how many whole frame records a file of ``size`` bytes holds after a
    ``header``, and whether they fill it exactly."""
    body = int(size) - int(header)
    if record <= 0 or body <= 0:
        return 0, False
    return body // record, body % record == 0


def open_raw(
    path,
    *,
    scan_shape,
    detector_shape,
    dtype,
    header_bytes: int = 0,
    frame_header_bytes: int = 0,
    frame_footer_bytes: int = 0,
    scan_columns: bool = False,
    transpose_frames: bool = False,
) -> DataCube:
    """Open a raw file lazily with the form's layout: ``scan_shape`` ``(scan_y, scan_x)`` and
    ``detector_shape`` as displayed; ``scan_columns`` when the frames run down the scan's columns
    (scan_y fastest), ``transpose_frames`` when each frame is stored as ``(k_x, k_y)``."""
    from ..io.raw import read_datacube

    sy, sx = (int(v) for v in scan_shape)
    ky, kx = (int(v) for v in detector_shape)
    dc = read_datacube(
        path,
        scan_shape=(sx, sy) if scan_columns else (sy, sx),
        detector_shape=(kx, ky) if transpose_frames else (ky, kx),
        dtype=dtype,
        header_bytes=header_bytes,
        frame_header_bytes=frame_header_bytes,
        frame_footer_bytes=frame_footer_bytes,
    )
    if not (scan_columns or transpose_frames):
        return dc
    data = dc.data
    if scan_columns:
        data = data.transpose(1, 0, 2, 3)
    if transpose_frames:
        data = data.transpose(0, 1, 3, 2)
    meta = {**dc.metadata, "scan_columns": scan_columns, "transpose_frames": transpose_frames}
    return DataCube(data, dc.calibration, name=dc.name, metadata=meta, source=dc.source)


def _open_layer(kwargs: dict) -> tuple:
    """Worker: open and make the layer tuple (reads the centre pattern for contrast limits)."""
    from .._layers import datacube_layer

    data, kw, kind = datacube_layer(open_raw(**kwargs))
    # a raw file reopens only with its layout: no file-based recipe for results made from it
    kw["metadata"]["napari_4dstem"]["source"] = None
    return data, kw, kind


class RawLayoutWidget(QWidget):
    """Dock widget: the layout of a raw binary file, checked against its size, then opened."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        watch_dock(self)  # placed in napari's window with our other docks; cleaned up when napari closes it
        self.viewer = viewer
        self.path = QLineEdit()
        self.path.setPlaceholderText("raw binary file")
        self.browse_btn = QPushButton("Browse...")
        self.header, self.frame_header, self.frame_footer = (QSpinBox() for _ in range(3))
        for sb in (self.header, self.frame_header, self.frame_footer):
            sb.setRange(0, 2**31 - 1)
            sb.setSuffix(" B")
            sb.setKeyboardTracking(False)
        self.dtype = QComboBox()
        self.dtype.addItems(DTYPES)
        self.dtype.setCurrentText("uint16")
        self.endian = QComboBox()
        self.endian.addItems(list(ENDIAN))
        self.k_rows, self.k_cols = QSpinBox(), QSpinBox()
        for sb in (self.k_rows, self.k_cols):
            sb.setRange(1, 65536)
            sb.setValue(128)
            sb.setKeyboardTracking(False)
        self.scan_order = QComboBox()
        self.scan_order.addItems(SCAN_ORDERS)
        self.transpose = QCheckBox("frames stored transposed (k_x, k_y)")
        self.scan_shape = QComboBox()
        self.scan_shape.setToolTip("only the scan shapes whose frame count the file holds exactly")
        self.size_label = QLabel("")
        self.size_label.setWordWrap(True)
        self.size_label.setMinimumHeight(2 * self.size_label.fontMetrics().lineSpacing() + 8)
        self.open_btn = QPushButton("Open")
        self.open_btn.setEnabled(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        file_row = QHBoxLayout()
        file_row.addWidget(self.path, 1)
        file_row.addWidget(self.browse_btn)
        form(
            ("file", file_row),
            ("file header (offset)", self.header),
            ("header per frame", self.frame_header),
            ("footer per frame", self.frame_footer),
            ("pixel type", self.dtype),
            ("byte order", self.endian),
            ("frame rows (k_y)", self.k_rows),
            ("frame columns (k_x)", self.k_cols),
            ("", self.transpose),
            ("frames stored", self.scan_order),
            ("scan_y x scan_x", self.scan_shape),
            self.size_label,
            self.open_btn,
            self.status,
            on=self,
        )
        self.files = FileJobs(self.status, self._on_error)
        self.browse_btn.clicked.connect(lambda _=False: self.choose_file())
        self.path.editingFinished.connect(self.check)
        for sb in (self.header, self.frame_header, self.frame_footer, self.k_rows, self.k_cols):
            sb.valueChanged.connect(self.check)
        for cb in (self.dtype, self.endian, self.scan_order):
            cb.currentIndexChanged.connect(self.check)
        self.scan_shape.currentIndexChanged.connect(self._show_size)
        self.open_btn.clicked.connect(lambda _=False: self.open())
        self._size: int | None = None
        self._frames = 0
        self._exact = False
        self.check()

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Raw binary file")
        if path:
            self.set_path(path)

    def set_path(self, path) -> None:
        self.path.setText(str(path))
        self.check()

    # -- the check ----------------------------------------------------------------------------
    @property
    def dtype_str(self) -> str:
        return np.dtype(self.dtype.currentText()).newbyteorder(ENDIAN[self.endian.currentText()]).str

    def record(self) -> int:
        return record_bytes(
            (self.k_rows.value(), self.k_cols.value()),
            self.dtype_str,
            self.frame_header.value(),
            self.frame_footer.value(),
        )

    def check(self, *_) -> None:
        """The file's size against the layout; the scan shapes the frame count allows."""
        p = Path(self.path.text()) if self.path.text() else None
        try:
            self._size = p.stat().st_size if p is not None and p.is_file() else None
        except OSError:
            self._size = None
        if self._size is None:
            self._frames, self._exact = 0, False
        else:
            self._frames, self._exact = layout_fit(self._size, self.header.value(), self.record())
        current = self.scan_shape.currentText()
        shapes = [f"{a} x {b}" for a, b in scan_factorizations(self._frames)] if self._exact else []
        self.scan_shape.blockSignals(True)
        self.scan_shape.clear()
        self.scan_shape.addItems(shapes)
        if current in shapes:
            self.scan_shape.setCurrentText(current)
        self.scan_shape.blockSignals(False)
        self._show_size()

    def chosen_scan(self) -> tuple[int, int] | None:
        t = self.scan_shape.currentText()
        if not t:
            return None
        a, b = t.split(" x ")
        return int(a), int(b)

    def _show_size(self, *_) -> None:
        if self._size is None:
            text = "no file" if not self.path.text() else f"{self.path.text()}: no such file"
            self._set_size(text, None)
            return
        rec, hb = self.record(), self.header.value()
        scan = self.chosen_scan()
        n = scan[0] * scan[1] if scan else max(self._frames, 1)
        need = hb + n * rec
        ok = self._exact and scan is not None and need == self._size
        if ok:
            text = f"estimated {need:,} B = file size {self._size:,} B: {n} frames of {rec} B"
        else:
            left = self._size - hb - self._frames * rec
            text = (
                f"estimated {need:,} B for {n} frames of {rec} B, file size {self._size:,} B"
                f" ({left:+,} B left over): check the header, footer, pixel type and frame shape"
            )
        self._set_size(text, ok)

    def _set_size(self, text: str, ok: bool | None) -> None:
        self.fits = bool(ok)
        color = "#555555" if ok is None else (GOOD if ok else BAD)
        self.size_label.setStyleSheet(f"QLabel {{ color: white; background: {color}; padding: 3px; }}")
        self.size_label.setText(text)
        self.open_btn.setEnabled(bool(ok))

    # -- open ---------------------------------------------------------------------------------
    def layout_kwargs(self) -> dict:
        scan = self.chosen_scan()
        if not self.fits or scan is None:
            raise Napari4DSTEMError("the layout does not fit the file's size (the red line says by how much)")
        return {
            "path": self.path.text(),
            "scan_shape": scan,
            "detector_shape": (self.k_rows.value(), self.k_cols.value()),
            "dtype": self.dtype_str,
            "header_bytes": self.header.value(),
            "frame_header_bytes": self.frame_header.value(),
            "frame_footer_bytes": self.frame_footer.value(),
            "scan_columns": self.scan_order.currentText() == SCAN_ORDERS[1],
            "transpose_frames": self.transpose.isChecked(),
        }

    def open(self) -> bool:
        """Open the file with the form's layout (in a worker) as a lazy 4D layer."""
        try:
            kwargs = self.layout_kwargs()
        except Napari4DSTEMError as e:
            self.status.setText(str(e))
            return False
        self.open_btn.setEnabled(False)
        self.files.run(_open_layer, kwargs, desc="opening the raw file", on_done=self._add_layer)
        return True

    def _add_layer(self, layer_tuple) -> None:
        data, kwargs, _ = layer_tuple
        self.layer = self.viewer.add_image(data, **kwargs)
        sy, sx, ky, kx = data.shape
        self.status.setText(f"opened {kwargs['name']}: scan {sy} x {sx}, frames {ky} x {kx} (lazy)")
        self._show_size()

    def _on_error(self, exc) -> None:
        from .log import log_error

        log_error("Open raw binary file", exc)
        self.status.setText(str(exc) if isinstance(exc, Napari4DSTEMError) else f"{type(exc).__name__}: {exc}")
        self._show_size()
