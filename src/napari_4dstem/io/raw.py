"""Raw binary 4D-STEM files: the user says the shape, dtype and header/footer sizes.

The file is ``header_bytes`` of file header, then ``scan_y * scan_x`` frame records, each
``frame_header_bytes`` + ``k_y * k_x`` values of ``dtype`` (any numpy dtype string, endianness
included, e.g. ``">u2"``) + ``frame_footer_bytes``, in raster order, rows as stored. It is
opened as a zero-copy strided view of a structured memmap. There is no ``detect``: a raw file
has nothing to sniff, so it is opened only with ``open_datacube(path, format="raw", ...)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..data.calibration import Calibration
from ..data.datacube import DataCube
from ..errors import FileFormatError
from ._helpers import check_scan_shape, frame_memmap, lazy_frames, never_raises

__all__ = ["is_raw", "read_datacube"]


@never_raises
def is_raw(path: str | os.PathLike) -> bool:
    """Always False: raw binary files cannot be recognised; open them with ``format="raw"``."""
    return False


def read_datacube(
    path: str | os.PathLike,
    *,
    scan_shape: tuple[int, int] | None = None,
    detector_shape: tuple[int, int] | None = None,
    dtype: str | np.dtype | None = None,
    header_bytes: int = 0,
    frame_header_bytes: int = 0,
    frame_footer_bytes: int = 0,
    allow_extra_bytes: bool = False,
    calibration: Calibration | None = None,
) -> DataCube:
    """Open a raw binary file lazily with a user-given layout.

    Parameters
    ----------
    path : path
        The file.
    scan_shape : (int, int)
        ``(scan_y, scan_x)``.
    detector_shape : (int, int)
        ``(k_y, k_x)`` of each frame.
    dtype : str or numpy dtype
        Pixel type, e.g. ``"<u2"``, ``">u4"``, ``"float32"``.
    header_bytes : int
        Bytes before the first frame record.
    frame_header_bytes, frame_footer_bytes : int
        Bytes before / after the pixels of every frame record.
    allow_extra_bytes : bool
        Accept a file longer than the layout needs (trailing bytes are ignored).
    calibration : Calibration, optional
        Attached as given.

    Returns
    -------
    DataCube
        ``(scan_y, scan_x, k_y, k_x)`` in ``dtype``, a zero-copy memmap view.

    Raises
    ------
    FileFormatError
        For a missing file, a missing or invalid layout, or a file shorter (or, without
        ``allow_extra_bytes``, longer) than the layout needs.
    """
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(p, "no such file")
    missing = [
        n for n, v in (("scan_shape", scan_shape), ("detector_shape", detector_shape), ("dtype", dtype))
        if v is None
    ]  # fmt: skip
    if missing:
        raise FileFormatError(
            p, f"a raw binary file needs {', '.join(missing)}",
            'e.g. open_datacube(path, format="raw", scan_shape=(ny, nx), detector_shape=(ky, kx), dtype="<u2")',
        )  # fmt: skip
    try:
        dt = np.dtype(dtype)
        ky, kx = (int(v) for v in detector_shape)
        hb, fh, ff = int(header_bytes), int(frame_header_bytes), int(frame_footer_bytes)
    except (TypeError, ValueError) as e:
        raise FileFormatError(p, f"invalid raw layout ({e})") from None
    if dt.hasobject or dt.itemsize == 0 or min(ky, kx) < 1 or min(hb, fh, ff) < 0:
        raise FileFormatError(p, f"invalid raw layout: dtype {dt}, frame {ky} x {kx}, header {hb}")
    record = fh + ky * kx * dt.itemsize + ff
    size = p.stat().st_size
    n = max(0, size - hb) // record
    sy, sx = check_scan_shape(p, n, scan_shape)
    need = hb + sy * sx * record
    if size != need and not allow_extra_bytes:
        raise FileFormatError(
            p, f"the layout needs {need} bytes ({sy} x {sx} frames of {record} bytes after a "
            f"{hb}-byte header), the file has {size}",
            "check the shapes, dtype and header/footer sizes, or pass allow_extra_bytes=True",
        )  # fmt: skip
    frames = frame_memmap(
        p, offset=hb, n_frames=sy * sx, frame_shape=(ky, kx), dtype=dt, frame_header=fh,
        frame_footer=ff,
    )  # fmt: skip
    meta = {"format": "raw binary", "dtype": dt.str, "header_bytes": hb,
            "frame_header_bytes": fh, "frame_footer_bytes": ff}  # fmt: skip
    return DataCube(lazy_frames(frames, (sy, sx)), calibration, name=p.stem, metadata=meta, source=str(p))
