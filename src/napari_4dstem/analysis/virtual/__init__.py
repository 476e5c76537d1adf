"""Virtual imaging: detectors, virtual images and previews, centre of mass and DPC, calibration.

Detectors and their masks, virtual images and binned previews, centre of mass and DPC,
calibration of the detector (ring fit) and of the pattern origin (descan), Result-pane transforms.

The ``__all__`` of each module named below is re-exported here and imported on first use (PEP 562), so
``from napari_4dstem.analysis.virtual import X`` loads only the module that defines X.
"""

from __future__ import annotations

from ..._lazy import lazy_modules

__getattr__, __dir__ = lazy_modules(
    __name__,
    ("detectors", "images", "preview", "com", "dpc", "calibration", "origin", "statistics", "transforms", "responses"),
)
