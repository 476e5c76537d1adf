"""npe2 writers: save layers to EMD 1.0 files that napari, the library and py4DSTEM reopen.

4D image layers are datacubes; 2D images are real-space maps or diffraction images (by their
metadata or axis labels) with their units and parameters; RGB images (IPF colours) are maps with
channels r, g, b; Points layers are Bragg peaks. Every result records the input file it came
from (the layer's source, or its pipeline recipe's input), the software version and the time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._layers import RGB_CHANNELS, calibration_from_layer_meta, peaks_from_points
from .data.datacube import DataCube
from .data.results import DiffractionImage, RealSpaceMap
from .errors import DataShapeError
from .io import emd


def _ours(meta: dict[str, Any]) -> dict[str, Any]:
    return (meta.get("metadata") or {}).get("napari_4dstem", {})


def _to_object(data: Any, meta: dict[str, Any], kind: str = "image"):
    name = str(meta.get("name") or "layer").replace("/", "_")
    if kind == "points":
        return peaks_from_points(data, meta)
    cal = calibration_from_layer_meta(meta)
    ndim = len(data.shape)
    if ndim == 4:
        return DataCube(data, cal, name=name)
    ours = _ours(meta)
    params = ours.get("params", {})
    units = ours.get("units", "")
    arr = None if ndim == 4 else np.asarray(data.compute() if hasattr(data, "compute") else data)
    if ndim == 3 and (meta.get("rgb") or ours.get("rgb_channels")) and arr.shape[2] == 3:
        return RealSpaceMap(arr, name=name, units=units, channels=RGB_CHANNELS, calibration=cal, params=params)
    channels = tuple(ours.get("channels") or ())
    if ndim == 3 and ours.get("kind") == "real_space" and len(channels) == arr.shape[0]:
        # a stack opened as one layer (channel, scan_y, scan_x): back to (scan_y, scan_x, channel)
        return RealSpaceMap(
            np.moveaxis(arr, 0, -1), name=name, units=units, channels=channels, calibration=cal, params=params
        )
    if ndim == 2:
        labels = tuple(meta.get("axis_labels") or ())
        if ours.get("kind") == "diffraction" or labels == ("k_y", "k_x"):
            return DiffractionImage(arr, name=name, units=units or "counts", calibration=cal, params=params)
        return RealSpaceMap(arr, name=name, units=units, calibration=cal, params=params)
    raise DataShapeError(f"layer {name!r} is {ndim}D; EMD export takes 4D datacubes, 2D images, RGB images and points")


def _source(objs_meta: list[dict[str, Any]]) -> str | None:
    """The input file of the layers: the first that records one (its own, or its recipe's)."""
    for meta in objs_meta:
        ours = _ours(meta)
        recipe = (ours.get("params") or {}).get("recipe") or {}
        src = ours.get("source") or (recipe.get("input") or {}).get("path")
        if src:
            return str(src)
    return None


def write_layers(path: str, layer_data: list[tuple[Any, dict, str]]) -> list[str]:
    """Write several image and points layers to one EMD file (napari already confirmed any
    overwrite)."""
    keep = [(d, m, t) for d, m, t in layer_data if t in ("image", "points")]
    if not keep:
        return []
    objs = [_to_object(d, m, t) for d, m, t in keep]
    names = [o.name for o in objs]
    objs = [o if names.count(o.name) == 1 else _renamed(o, f"{o.name}_{i}") for i, o in enumerate(objs)]
    emd.write(path, *objs, overwrite=True, source=_source([m for _, m, _ in keep]))
    return [path]


def _renamed(o, name):
    from dataclasses import replace

    if isinstance(o, DataCube):
        o.name = name
        return o
    return replace(o, name=name)


def write_single_layer(path: str, data: Any, meta: dict) -> list[str]:
    """Write one image layer to an EMD file."""
    emd.write(path, _to_object(data, meta), overwrite=True, source=_source([meta]))
    return [path]


def write_points(path: str, data: Any, meta: dict) -> list[str]:
    """Write one Points layer (Bragg peaks) to an EMD file (py4DSTEM reads it as BraggVectors)."""
    emd.write(path, _to_object(data, meta, "points"), overwrite=True, source=_source([meta]))
    return [path]
