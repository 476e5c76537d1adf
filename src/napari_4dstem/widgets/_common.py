"""Pieces the dock widgets share: the 4D-layer picker and the layer -> DataCube translation."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox

from .._layers import calibration_from_layer_meta
from ..data.calibration import Calibration
from ..data.datacube import DataCube
from ..errors import Napari4DSTEMError


def layer_datacube(layer) -> tuple[DataCube, Calibration]:
    """The DataCube (no copy) and Calibration behind a 4D image layer."""
    cal = calibration_from_layer_meta({"metadata": layer.metadata, "scale": layer.scale, "units": layer.units})
    return DataCube(layer.data, cal, name=layer.name), cal


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
            lyr.name for lyr in self.viewer.layers
            if getattr(lyr, "ndim", 0) == 4 and getattr(lyr, "rgb", False) is False
            and hasattr(lyr, "contrast_limits")
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
