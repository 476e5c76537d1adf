"""Translate core objects <-> napari layer data tuples (no napari import needed)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .data.calibration import Calibration
from .data.datacube import DataCube
from .data.results import DiffractionImage, RealSpaceMap

__all__ = ["calibration_from_layer_meta", "datacube_layer", "result_layer"]


def _limits(img: np.ndarray) -> tuple[float, float]:
    img = np.asarray(img, dtype=np.float64)
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(finite, [0.1, 99.9])
    if hi <= lo:
        hi = lo + 1.0
    return (float(lo), float(hi))


def datacube_layer(dc: DataCube) -> tuple[Any, dict[str, Any], str]:
    """A lazy 4D image layer tuple: scale, units and axis labels from the calibration.

    Contrast limits come from the pattern at the scan centre (one frame read), so opening
    never scans the dataset.
    """
    cy, cx = dc.scan_shape[0] // 2, dc.scan_shape[1] // 2
    data = dc.data if isinstance(dc.data, np.ndarray) else dc.to_dask()
    kwargs = {
        "name": dc.name,
        **dc.calibration.napari_kwargs("4d"),
        "contrast_limits": _limits(dc.pattern(cy, cx)),
        "multiscale": False,
        "colormap": "inferno",
        "metadata": {
            "napari_4dstem": {
                "kind": "datacube",
                "calibration": dc.calibration,
                "source": dc.source,
                "metadata": dc.metadata,
            }
        },
    }
    return (data, kwargs, "image")


def result_layer(
    obj: RealSpaceMap | DiffractionImage, *, source: str | None = None, **extra
) -> tuple[Any, dict[str, Any], str]:
    """Layer tuple for a 2D result; a map's channels become separate layers by the caller.

    ``source``: the file it was read from (recorded with its node name, so that a pipeline
    using the layer, e.g. as the probe, can name it in a script)."""
    part = "k" if isinstance(obj, DiffractionImage) else "scan"
    kwargs = {
        "name": obj.name,
        **obj.calibration.napari_kwargs(part),
        "contrast_limits": _limits(obj.data),
        "metadata": {
            "napari_4dstem": {
                "kind": "diffraction" if part == "k" else "real_space",
                "calibration": obj.calibration,
                "units": obj.units,
                "params": dict(obj.params),
                **({"source": str(source), "node": obj.name} if source is not None else {}),
            }
        },
        **extra,
    }
    return (obj.data, kwargs, "image")


def calibration_from_layer_meta(meta: dict[str, Any]) -> Calibration:
    """The Calibration a layer carries (our metadata), else one rebuilt from scale and units."""
    ours = (meta.get("metadata") or {}).get("napari_4dstem", {})
    cal = ours.get("calibration")
    if isinstance(cal, Calibration):
        return cal
    if isinstance(cal, dict):
        return Calibration.from_dict(cal)
    scale, units = meta.get("scale"), meta.get("units")
    if scale is not None and units is not None and len(scale) == 4:
        return Calibration.from_napari(scale, units)
    return Calibration()
