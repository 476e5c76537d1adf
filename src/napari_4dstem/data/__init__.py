"""The data model: DataCube (lazy 4D array + Calibration) and result types."""

from .calibration import AXIS_LABELS, Calibration, electron_wavelength_A
from .datacube import DataCube
from .results import BraggPeaks, DiffractionImage, RealSpaceMap

__all__ = [
    "AXIS_LABELS",
    "BraggPeaks",
    "Calibration",
    "DataCube",
    "DiffractionImage",
    "RealSpaceMap",
    "electron_wavelength_A",
]
