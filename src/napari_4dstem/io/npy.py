"""NumPy ``.npy`` files: 4D arrays opened as memmaps (nothing is read to open them)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..data.calibration import Calibration
from ..data.datacube import DataCube
from ..errors import FileFormatError
from ._atomic import atomic_output, write_doc
from ._helpers import never_raises

__all__ = ["is_npy4d", "read_datacube", "read_header", "write"]

_BLOCK_BYTES = 32 * 2**20


def read_header(path: str | os.PathLike, *, check_size: bool = True) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """``(shape, dtype, fortran_order, data_offset)`` from an .npy header; reads only the header.

    Parameters
    ----------
    path : str or path
        The file.
    check_size : bool
        Refuse a file shorter than its header promises (default True).

    Returns
    -------
    shape : tuple of int
        The array's shape.
    dtype : numpy.dtype
        Its dtype.
    fortran_order : bool
        Whether it is stored in Fortran order.
    data_offset : int
        Byte offset of the data.

    Raises
    ------
    FileFormatError
        For a missing file, an invalid header, an object dtype, or (``check_size``) a truncated
        file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(p, "no such file")
    try:
        with open(p, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(fh)
            offset = fh.tell()
    except (ValueError, OSError, SyntaxError) as e:
        raise FileFormatError(p, f"not a valid .npy file ({e})") from None
    if dtype.hasobject:
        raise FileFormatError(p, "holds Python objects, not numbers")
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    size = p.stat().st_size
    if check_size and size < expected:
        raise FileFormatError(
            p, f"truncated: the header promises {expected} bytes for shape {shape} {dtype}, the file has {size}"
        )
    return tuple(int(s) for s in shape), dtype, bool(fortran), offset


@never_raises
def is_npy4d(path: str | os.PathLike) -> bool:
    """True for an .npy file of a 4D array or a 3D stack of patterns. Never raises.

    A 3D ``(n, k_y, k_x)`` stack opens as one scan line ``(1, n)``, for the Scan shape dock.

    A truncated file, or one that starts with the .npy magic but whose header cannot be read, is
    still claimed, so that opening it says why (napari's own message names no reason).
    """
    try:
        return len(read_header(path, check_size=False)[0]) in (3, 4)
    except FileFormatError:
        with open(path, "rb") as fh:
            return fh.read(6) == b"\x93NUMPY"


def read_datacube(path: str | os.PathLike, *, calibration: Calibration | None = None) -> DataCube:
    """Open a 4D .npy as a read-only memmap DataCube (a 3D stack as ``(1, n, k_y, k_x)``).

    Parameters
    ----------
    path : str or path
        The file.
    calibration : Calibration, optional
        Attached as given (.npy stores none).

    Returns
    -------
    DataCube
        A zero-copy read-only memmap, named after the file's stem.

    Raises
    ------
    FileFormatError
        As :func:`read_header`, or for an array that is not 4D or is in Fortran order.
    """
    shape, dtype, fortran, offset = read_header(path)
    if len(shape) == 3:  # a stack of patterns: one scan line, reshaped later (Scan shape dock)
        shape = (1, *shape)
    if len(shape) != 4:
        raise FileFormatError(
            path,
            f"holds a {len(shape)}D array {shape}; a 4D-STEM dataset is 4D (scan_y, scan_x, k_y, k_x) "
            "or a 3D stack of patterns (n, k_y, k_x)",
        )
    if fortran:
        raise FileFormatError(path, "is stored in Fortran order; save it C-ordered (np.ascontiguousarray)")
    mm = np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset)
    name = Path(path).stem
    return DataCube(mm, calibration, name=name, source=str(path))


@write_doc
def write(path: str | os.PathLike, dc: DataCube, *, overwrite: bool = False, snapshot=None) -> Path:
    """Write a DataCube's array to .npy (streamed in scan blocks, atomically).

    Parameters
    ----------
    path : str or path
        The output file.
    dc : DataCube
        The data (its calibration is not stored: .npy has no place for it; use EMD to keep it).
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
    Written with ordinary ``write`` calls in blocks of whole scan rows, never through a writable
    memmap: a full disk is an error, not a SIGBUS that kills the process. The file is written
    under a temporary name and moved into place.
    """
    from ..engine.chunks import iter_scan_blocks

    dtype = np.dtype(dc.dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": tuple(dc.shape)}  # fmt: skip
    with (
        atomic_output(path, overwrite=overwrite, snapshot=snapshot, expected_bytes=dc.nbytes + 4096) as tmp,
        open(tmp, "xb") as fh,
    ):
        if _needs_v2(header):
            np.lib.format.write_array_header_2_0(fh, header)
        else:
            np.lib.format.write_array_header_1_0(fh, header)
        # blocks of whole scan rows (or runs within one row): written in file order
        _, sx, qy, qx = dc.shape
        frame = max(1, qy * qx * dtype.itemsize)
        rows = _BLOCK_BYTES // (sx * frame)
        block = (rows, sx) if rows >= 1 else (1, max(1, _BLOCK_BYTES // frame))
        for _, _, b in iter_scan_blocks(dc.data, block):
            fh.write(np.ascontiguousarray(b, dtype=dtype).data)
    return Path(path)


def _needs_v2(header: dict) -> bool:
    """True when the header does not fit the 65535-byte limit of .npy version 1.0."""
    return len(repr(header)) > 60000
