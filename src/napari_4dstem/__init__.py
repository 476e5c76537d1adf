"""napari-4dstem: 4D-STEM analysis in napari, with the library and command line under it.

Axis order everywhere: ``(scan_y, scan_x, k_y, k_x)``. The public API is small and imported
lazily, so ``import napari_4dstem`` stays fast and needs none of the optional extras.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Calibration": "napari_4dstem.data.calibration",
    "DataCube": "napari_4dstem.data.datacube",
    "RealSpaceMap": "napari_4dstem.data.results",
    "DiffractionImage": "napari_4dstem.data.results",
    "BraggPeaks": "napari_4dstem.data.results",
    "open_datacube": "napari_4dstem.io",
    "save_datacube": "napari_4dstem.io",
    "read_emd": ("napari_4dstem.io.emd", "read"),
    "write_emd": ("napari_4dstem.io.emd", "write"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'napari_4dstem' has no attribute {name!r}")
    import importlib

    module, attr = (target, name) if isinstance(target, str) else target
    return getattr(importlib.import_module(module), attr)


def __dir__() -> list[str]:
    return sorted(__all__)
