"""Zarr stores: a 4D array at the top level, or our group layout with calibration attributes.

Our layout: a group with an array ``datacube`` (chunks ``(8-16, 8-16, k_y, k_x)``) and the
calibration as the group attribute ``napari_4dstem_calibration``.
"""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path

from ..data.calibration import Calibration
from ..data.datacube import DataCube
from ..errors import CalibrationError, FileFormatError
from ._atomic import atomic_output, write_doc
from ._helpers import never_raises
from .abtem_zarr import abtem_calibration, abtem_metadata, transpose_to_ours

__all__ = ["is_zarr4d", "read_datacube", "write"]

_CAL_ATTR = "napari_4dstem_calibration"
#: the shape we wrote, kept in the group: an array shape edited afterwards no longer matches
_SHAPE_ATTR = "napari_4dstem_shape"


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


class CheckedZarr:
    """A zarr array whose reads report a corrupt store as FileFormatError.

    zarr raises RuntimeError, ValueError or codec errors for a chunk that does not decode (a
    flipped byte, metadata edited to another shape); wrapped, every read of a malformed store
    ends in our error type, naming the store. Shape, dtype and chunks are the array's.
    """

    def __init__(self, arr, path):
        self._arr = arr
        self._path = str(path)
        self.shape = tuple(int(s) for s in arr.shape)
        self.dtype = arr.dtype
        self.ndim = len(self.shape)
        self.chunks = tuple(int(c) for c in arr.chunks)

    @property
    def attrs(self):
        return self._arr.attrs

    def __getitem__(self, key):
        try:
            return self._arr[key]
        except (IndexError, TypeError):
            raise
        except Exception as e:
            raise FileFormatError(self._path, f"cannot read zarr data ({type(e).__name__}: {str(e)[:200]})") from None

    def __array__(self, dtype=None, copy=None):
        a = self[...]
        return a.astype(dtype) if dtype is not None else a


_META_FILES = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}


def _check_chunk_files(arr, path, *, ours: bool) -> None:
    """Check a local store's chunk files against the array's declared shape.

    Every file must be a regular file (a FIFO would hang the first read, a link to a device
    would be read until memory runs out); no chunk may lie beyond the declared chunk grid (the
    shape was edited smaller: data would be dropped silently); and in a store we wrote (every
    chunk written) none may be missing (the shape was edited larger, or files were lost:
    zeros would be invented).
    """
    root = getattr(getattr(arr, "store", None), "root", None)
    if root is None:
        return  # not a local folder: nothing to walk
    folder = Path(root) / str(getattr(arr, "path", "") or "")
    shards = getattr(arr, "shards", None)
    step = shards if shards is not None else arr.chunks
    grid = tuple(-(-int(s) // int(c)) for s, c in zip(arr.shape, step, strict=True))
    n_found = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            if name in _META_FILES:
                continue
            p = Path(dirpath) / name
            try:
                ok = stat.S_ISREG(os.stat(p).st_mode)
            except OSError:
                ok = False
            if not ok:
                raise FileFormatError(path, f"chunk {p.relative_to(folder)} is not a regular file")
            parts = [x for x in re.split(r"[/.]", str(p.relative_to(folder))) if x != "c"]
            if len(parts) != len(grid) or not all(x.isdigit() for x in parts):
                continue  # not a chunk key: zarr ignores it too
            idx = tuple(int(x) for x in parts)
            if any(i >= g for i, g in zip(idx, grid, strict=True)):
                raise FileFormatError(
                    path, f"chunk {idx} lies outside the declared shape {tuple(arr.shape)}: the "
                    "metadata was edited or belongs to another array",
                )  # fmt: skip
            n_found += 1
    if ours and n_found < math.prod(grid):
        raise FileFormatError(
            path, f"{n_found} of the {math.prod(grid)} chunks of {tuple(arr.shape)} are present: "
            "files are missing or the shape was edited",
        )  # fmt: skip


@never_raises
def is_zarr4d(path: str | os.PathLike) -> bool:
    """True for a zarr store whose array (or group's ``datacube``) is 4D, or that abTEM wrote.

    Never raises.
    """
    p = Path(path)
    if not p.is_dir():
        return False
    if not any((p / m).exists() for m in ("zarr.json", ".zarray", ".zgroup")):
        return False
    node = _open_node(p)
    if not hasattr(node, "shape") and abtem_metadata(dict(node.attrs)) is not None:
        return True  # an abTEM measurement: the reader opens it or says why not
    arr, _ = _find_array(node, p)
    return len(arr.shape) == 4


def read_datacube(path: str | os.PathLike) -> DataCube:
    """Open a zarr store lazily as a DataCube (the zarr array is the DataCube's data).

    Parameters
    ----------
    path : str or path
        The store (folder): a 4D array, a group with a ``datacube`` array (ours, with its
        calibration attribute), or an abTEM ``to_zarr`` store (``array0`` + ``metadata0``),
        opened with its calibration in our axis order (:mod:`.abtem_zarr`).

    Returns
    -------
    DataCube
        Lazy over the store; a missing chunk file of one of our stores is refused when read.

    Raises
    ------
    FileFormatError
        For an array that is not 4D, an abTEM store without ``array0``, a shape that differs
        from the one written, missing chunk files, or an invalid calibration attribute.
    """
    node = _open_node(path)
    meta = None if hasattr(node, "shape") else abtem_metadata(dict(node.attrs))
    if meta is not None:
        if "array0" not in node:
            raise FileFormatError(path, "abTEM store without its array 'array0'")
        arr = node["array0"]
        cal = abtem_calibration(meta, tuple(arr.shape), path)
        _check_chunk_files(arr, path, ours=False)
        data = transpose_to_ours(CheckedZarr(arr, path))
        return DataCube(data, cal, name=Path(path).stem, source=str(path), metadata={"abtem": meta})
    arr, attrs = _find_array(node, path)
    if len(arr.shape) != 4:
        raise FileFormatError(
            path, f"array is {len(arr.shape)}D {tuple(arr.shape)}; need 4D (scan_y, scan_x, k_y, k_x)"
        )
    _check_chunk_files(arr, path, ours=_CAL_ATTR in attrs)
    if _SHAPE_ATTR in attrs and list(attrs[_SHAPE_ATTR]) != [int(s) for s in arr.shape]:
        raise FileFormatError(
            path, f"array shape {tuple(arr.shape)} differs from the shape written, "
            f"{tuple(attrs[_SHAPE_ATTR])}: the metadata was edited",
        )  # fmt: skip
    cal = None
    if _CAL_ATTR in attrs:
        try:
            cal = Calibration.from_dict(attrs[_CAL_ATTR])
        except (CalibrationError, TypeError) as e:
            raise FileFormatError(path, f"invalid calibration attribute: {e}") from None
    return DataCube(CheckedZarr(arr, path), cal, name=Path(path).stem, source=str(path))


@write_doc
def write(path: str | os.PathLike, dc: DataCube, *, overwrite: bool = False, snapshot=None) -> Path:
    """Write a DataCube to a zarr group (array ``datacube`` + calibration attribute), atomically.

    Parameters
    ----------
    path : str or path
        The output store (a folder).
    dc : DataCube
        The data, streamed in blocks of scan rows.
    %(overwrite)s
    %(snapshot)s

    Returns
    -------
    %(written)s

    Raises
    ------
    %(exists)s

    Notes
    -----
    The store is built in a hidden folder and moved into place without replacing anything that
    appeared at ``path`` meanwhile; with ``overwrite`` the old store is swapped out atomically
    (or moved aside and put back if the move fails), never left only as a hidden copy. Every
    chunk is written, all-zero ones too, so a missing chunk file marks a damaged store.
    """
    import zarr

    from ..engine.chunks import iter_scan_blocks
    from .emd import _default_write_chunks

    chunks = _default_write_chunks(dc.shape)
    with atomic_output(path, overwrite=overwrite, snapshot=snapshot) as tmp:
        g = zarr.open_group(str(tmp), mode="w")
        g.attrs[_CAL_ATTR] = dc.calibration.to_dict()
        g.attrs[_SHAPE_ATTR] = [int(s) for s in dc.shape]
        # every chunk is written, all-zero ones too, so that a missing chunk file in one of our
        # stores is a damaged store (refused), not zeros
        arr = g.create_array("datacube", shape=dc.shape, dtype=dc.dtype, chunks=chunks,
                             config={"write_empty_chunks": True})  # fmt: skip
        block = (chunks[0], dc.shape[1])
        for sy, sx, b in iter_scan_blocks(dc.data, block):
            arr[sy, sx] = b
    return Path(path)
