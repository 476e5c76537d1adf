"""Zarr stores: a 4D array at the top level, or our group layout with calibration attributes.

Our layout: a group with an array ``datacube`` (chunks ``(8-16, 8-16, k_y, k_x)``) and the
calibration as the group attribute ``napari_4dstem_calibration``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..data.calibration import Calibration
from ..data.datacube import DataCube
from ..errors import CalibrationError, FileFormatError
from ._atomic import atomic_output

__all__ = ["is_zarr4d", "read_datacube", "write"]

_CAL_ATTR = "napari_4dstem_calibration"


def _open_node(path):
    import zarr

    p = Path(path)
    if not p.exists():
        raise FileFormatError(p, "no such file or folder")
    try:
        return zarr.open(str(p), mode="r")
    except Exception as e:  # zarr raises many types for a non-store folder
        raise FileFormatError(p, f"not a readable zarr store ({type(e).__name__}: {e})") from None


def _find_array(node, path):
    if hasattr(node, "shape"):
        return node, {}
    attrs = dict(node.attrs)
    if "datacube" in node:
        return node["datacube"], attrs
    arrays = [a for _, a in node.arrays() if len(a.shape) == 4]
    if not arrays:
        raise FileFormatError(path, "zarr group without a 4D array")
    return arrays[0], attrs


def is_zarr4d(path: str | os.PathLike) -> bool:
    """True for a zarr store (folder) whose array, or group's ``datacube``, is 4D. Never raises."""
    try:
        p = Path(path)
        if not p.is_dir():
            return False
        if not any((p / m).exists() for m in ("zarr.json", ".zarray", ".zgroup")):
            return False
        arr, _ = _find_array(_open_node(p), p)
        return len(arr.shape) == 4
    except Exception:
        return False


def read_datacube(path: str | os.PathLike) -> DataCube:
    """Open a zarr store lazily as a DataCube (the zarr array is the DataCube's data)."""
    arr, attrs = _find_array(_open_node(path), path)
    if len(arr.shape) != 4:
        raise FileFormatError(path, f"array is {len(arr.shape)}D {tuple(arr.shape)}; need 4D (scan_y, scan_x, k_y, k_x)")
    cal = None
    if _CAL_ATTR in attrs:
        try:
            cal = Calibration.from_dict(attrs[_CAL_ATTR])
        except (CalibrationError, TypeError) as e:
            raise FileFormatError(path, f"invalid calibration attribute: {e}") from None
    return DataCube(arr, cal, name=Path(path).stem, source=str(path))


def write(path: str | os.PathLike, dc: DataCube, *, overwrite: bool = False, snapshot=None) -> Path:
    """Write a DataCube to a zarr group (array ``datacube`` + calibration attribute), atomically.

    The store is built in a hidden folder and moved into place without replacing anything that
    appeared at ``path`` meanwhile; with ``overwrite`` the old store is swapped out atomically
    (or moved aside and put back if the move fails), never left only as a hidden copy.
    """
    import zarr

    from ..engine.chunks import iter_scan_blocks
    from .emd import _default_write_chunks

    chunks = _default_write_chunks(dc.shape)
    with atomic_output(path, overwrite=overwrite, snapshot=snapshot) as tmp:
        g = zarr.open_group(str(tmp), mode="w")
        g.attrs[_CAL_ATTR] = dc.calibration.to_dict()
        arr = g.create_array("datacube", shape=dc.shape, dtype=dc.dtype, chunks=chunks)
        block = (chunks[0], dc.shape[1])
        for sy, sx, b in iter_scan_blocks(dc.data, block):
            arr[sy, sx] = b
    return Path(path)
