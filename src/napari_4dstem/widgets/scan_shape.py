"""The "Scan shape" dock widget: fix the scan shape of a dataset whose header lacks it.

Some files (Merlin without a usable header, ARINA without scan metadata, raw streams) open as
one long scan line ``(1, n)``. The widget offers only the valid factorisations of ``n`` (squarest
first) and reshapes the layer lazily (:meth:`DataCube.reshape_scan`); it can be changed again.
"""

from __future__ import annotations

import napari
from qtpy.QtWidgets import QComboBox, QLabel, QPushButton, QWidget

from ..data.datacube import scan_factorizations
from ..errors import Napari4DSTEMError
from ._common import CubePicker, layer_datacube, watch_dock
from ._forms import form


class ScanShapeWidget(QWidget):
    """Dock widget: choose ``(scan_y, scan_x)`` among the factorisations of the pattern count."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        watch_dock(self)  # placed in napari's window with our other docks; cleaned up when napari closes it
        self.viewer = viewer
        self.layer_combo = CubePicker(viewer)
        self.count = QLabel("")
        self.shapes = QComboBox()
        self.apply_btn = QPushButton("Apply scan shape")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form(
            ("4D layer", self.layer_combo),
            ("patterns", self.count),
            ("scan_y x scan_x", self.shapes),
            self.apply_btn,
            self.status,
            on=self,
        )
        self.layer_combo.currentTextChanged.connect(self._on_layer)
        self.apply_btn.clicked.connect(self.apply)
        self._on_layer()

    @property
    def layer(self):
        return self.layer_combo.layer

    def _on_layer(self, *_) -> None:
        lyr = self.layer
        self.shapes.clear()
        if lyr is None:
            self.count.setText("")
            return
        ny, nx = lyr.data.shape[:2]
        self.count.setText(f"{ny * nx} (now {ny} x {nx})")
        self.shapes.addItems([f"{a} x {b}" for a, b in scan_factorizations(ny * nx)])

    def apply(self, scan_shape: tuple[int, int] | None = None) -> None:
        """Reshape the layer's scan to ``scan_shape`` (default: the chosen entry)."""
        lyr = self.layer
        if lyr is None:
            self.status.setText("no 4D layer")
            return
        if not scan_shape:
            a, b = self.shapes.currentText().split(" x ")
            scan_shape = (int(a), int(b))
        try:
            dc = layer_datacube(lyr)[0].reshape_scan(scan_shape)
        except Napari4DSTEMError as e:
            self.status.setText(str(e))
            return
        lyr.data = dc.data
        meta = dict(lyr.metadata.get("napari_4dstem", {}))
        meta["calibration"] = dc.calibration
        lyr.metadata["napari_4dstem"] = meta
        self.viewer.reset_view()
        self.status.setText(f"scan shape is now {scan_shape[0]} x {scan_shape[1]}")
        self._on_layer()
