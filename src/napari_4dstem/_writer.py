"""npe2 writers: save image layers (4D datacubes and 2D maps/patterns) to EMD 1.0 files."""

from __future__ import annotations

from typing import Any

from ._layers import calibration_from_layer_meta
from .data.datacube import DataCube
from .data.results import DiffractionImage, RealSpaceMap
from .errors import DataShapeError
from .io import emd


def _to_object(data: Any, meta: dict[str, Any]):
    name = str(meta.get("name") or "layer").replace("/", "_")
    cal = calibration_from_layer_meta(meta)
    ndim = len(data.shape)
    if ndim == 4:
        return DataCube(data, cal, name=name)
    if ndim == 2:
        import numpy as np

        ours = (meta.get("metadata") or {}).get("napari_4dstem", {})
        labels = tuple(meta.get("axis_labels") or ())
        arr = np.asarray(data.compute() if hasattr(data, "compute") else data)
        params = ours.get("params", {})
        units = ours.get("units", "")
        if ours.get("kind") == "diffraction" or labels == ("k_y", "k_x"):
            return DiffractionImage(arr, name=name, units=units or "counts", calibration=cal, params=params)
        return RealSpaceMap(arr, name=name, units=units, calibration=cal, params=params)
    raise DataShapeError(f"layer {name!r} is {ndim}D; EMD export takes 4D datacubes and 2D images")


def write_layers(path: str, layer_data: list[tuple[Any, dict, str]]) -> list[str]:
    """Write several image layers to one EMD file (napari already confirmed any overwrite)."""
    objs = [_to_object(d, m) for d, m, t in layer_data if t == "image"]
    if not objs:
        return []
    emd.write(path, *objs, overwrite=True)
    return [path]


def write_single_layer(path: str, data: Any, meta: dict) -> list[str]:
    """Write one image layer to an EMD file."""
    emd.write(path, _to_object(data, meta), overwrite=True)
    return [path]
