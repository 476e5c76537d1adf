"""NanoMegas / ASTAR blockfile ``.blo``: uint8 diffraction patterns with a small binary header.

Layout (little-endian; field meanings as documented by the ASTAR software and the blockfile
descriptions published with HyperSpy)::

    0   6s  "IMGBLO"                     16  u4  flags (unknown)
    6   u2  magic 0x0102                 20  u2  DP_SZ  pattern edge (patterns are square)
    8   u4  offset of the virtual BF     22  u2  DP rotation
    12  u4  offset of the patterns       24  u2  NX scan width     26 u2 NY scan height
    28  u2  scan rotation (1/100 deg)    30  f8  SX scan step x (nm)  38 f8 SY (nm)
    46  u4  beam energy (V)              50  u2  SDP detector scale (100 x pixels per cm)
    52  u4  camera length (10 x mm)      56  f8  acquisition time (serial date)

Each pattern record is a 6-byte header (``u2`` 0x55AA and a ``u4`` serial number) followed by
``DP_SZ * DP_SZ`` uint8 pixels, rows top to bottom. The records are opened as a structured
memmap with a header field and a frame field, so nothing is copied. The scan shape is
``(NY, NX)`` from the header. Orientation: as stored (the same as rosettasciio and LiberTEM).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from ..data.calibration import Calibration
from ..data.datacube import DataCube
from ..errors import FileFormatError
from ._helpers import (
    check_scan_shape,
    frame_memmap,
    header_calibration,
    lazy_frames,
    never_raises,
    read_head,
    require_regular,
)

__all__ = ["is_blockfile", "read_datacube", "read_header", "validate"]

_FMT = "<6sHIIIHHHHHddIHId"
_MAGIC = 0x0102
_RECORD_HEADER = 6


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Parse the blockfile header (64 bytes).

    Parameters
    ----------
    path : str or path
        The file.

    Returns
    -------
    dict
        The header fields (``magic``, ``offset_vbf``, ``offset_data``, ``dp_size``, ``nx``,
        ``ny``, ``sx_nm``, ``sy_nm``, ``beam_energy_V``...).

    Raises
    ------
    FileFormatError
        When the file does not start with an ``IMGBLO`` header of version 0x0102.
    """
    p = Path(path)
    head = read_head(p, struct.calcsize(_FMT))
    if len(head) < struct.calcsize(_FMT) or not head.startswith(b"IMGBLO"):
        raise FileFormatError(p, "not a blockfile (no 'IMGBLO' header)")
    v = struct.unpack(_FMT, head)
    keys = (
        "id", "magic", "offset_vbf", "offset_data", "flags", "dp_size", "dp_rotation", "nx",
        "ny", "scan_rotation", "sx_nm", "sy_nm", "beam_energy_V", "sdp", "camera_length",
        "acquisition_time",
    )  # fmt: skip
    h = dict(zip(keys, v, strict=True))
    h.pop("id")
    if h["magic"] != _MAGIC:
        raise FileFormatError(p, f"unknown blockfile version 0x{h['magic']:04x} (expected 0x0102)")
    return h


@never_raises
def is_blockfile(path: str | os.PathLike) -> bool:
    """True for a NanoMegas blockfile. Never raises."""
    read_header(path)
    return True


def validate(path: str | os.PathLike) -> dict[str, Any]:
    """Check the header against the file size; return the header.

    Parameters
    ----------
    path : str or path
        The blockfile.

    Returns
    -------
    dict
        The header (:func:`read_header`).

    Raises
    ------
    FileFormatError
        For an empty shape, a data offset inside the header, or a file longer or shorter than
        the header's patterns need (the message says how to open what is there).
    """
    p = Path(path)
    h = read_header(p)
    if h["dp_size"] < 1 or h["nx"] < 1 or h["ny"] < 1:
        raise FileFormatError(
            p,
            f"blockfile header has an empty shape: scan {h['ny']} x {h['nx']}, pattern {h['dp_size']}",
        )
    if h["offset_data"] < struct.calcsize(_FMT):
        raise FileFormatError(p, f"blockfile data offset {h['offset_data']} lies inside the header")
    record = _RECORD_HEADER + h["dp_size"] ** 2
    size = require_regular(p).st_size
    n = h["nx"] * h["ny"]
    need = h["offset_data"] + n * record
    if size > need:
        raise FileFormatError(
            p, f"longer than its header says: {h['ny']} x {h['nx']} patterns of "
            f"{h['dp_size']} x {h['dp_size']} need {need} bytes, the file has {size}",
            "the header's sizes are wrong; pass scan_shape=(ny, nx) to open it anyway",
        )  # fmt: skip
    if size < need:
        have = max(0, size - h["offset_data"]) // record
        raise FileFormatError(
            p,
            f"truncated: the header promises {h['ny']} x {h['nx']} patterns of "
            f"{h['dp_size']} x {h['dp_size']} ({need} bytes), the file has {size} bytes "
            f"({have} complete patterns)",
            f"pass scan_shape=(ny, nx) with ny * nx <= {have} to open what is there",
        )
    return h


def _check_records(p: Path, offset: int, record: int, n: int, max_checks: int = 64) -> None:
    """Every sampled pattern record (evenly spaced, the last included) starts with 0x55AA."""
    if n < 1:
        return
    idx = {0, n - 1, *(int(i) for i in range(0, n, max(1, n // max_checks)))}
    with open(p, "rb") as fh:
        for i in sorted(idx):
            fh.seek(offset + i * record)
            if fh.read(2) != b"\xaa\x55":
                raise FileFormatError(
                    p, f"pattern record {i} does not start with the 0x55AA marker: a wrong data "
                    "offset or pattern size in the header, or bytes lost or inserted",
                )  # fmt: skip


def read_datacube(
    path: str | os.PathLike,
    *,
    scan_shape: tuple[int, int] | None = None,
    calibration: Calibration | None = None,
) -> DataCube:
    """Open a ``.blo`` file lazily.

    Parameters
    ----------
    path : path
        The blockfile.
    scan_shape : (int, int), optional
        Overrides the header's ``(NY, NX)`` (e.g. to open the complete part of a truncated file).
    calibration : Calibration, optional
        Overrides the scan step (nm) and beam energy read from the header.

    Returns
    -------
    DataCube
        ``(NY, NX, DP_SZ, DP_SZ)`` uint8, a zero-copy memmap view.

    Raises
    ------
    FileFormatError
        As :func:`validate` (without ``scan_shape``), for an invalid header, a scan shape
        that does not fit the patterns, or pattern records without their 0x55AA marker.
    """
    p = Path(path)
    try:
        h = validate(p)
    except FileFormatError:
        if scan_shape is None:
            raise
        h = read_header(p)
    record = _RECORD_HEADER + h["dp_size"] ** 2
    if h["dp_size"] < 1 or h["offset_data"] < struct.calcsize(_FMT):
        raise FileFormatError(p, f"invalid blockfile header: pattern {h['dp_size']}, data at {h['offset_data']}")
    n_avail = max(0, require_regular(p).st_size - h["offset_data"]) // record
    n = min(n_avail, h["nx"] * h["ny"]) if scan_shape is None else n_avail
    sy, sx = check_scan_shape(p, n, scan_shape, guess=(h["ny"], h["nx"]), what="patterns")
    _check_records(p, h["offset_data"], record, sy * sx)
    frames = frame_memmap(
        p, offset=h["offset_data"], n_frames=n, frame_shape=(h["dp_size"], h["dp_size"]),
        dtype="u1", frame_header=_RECORD_HEADER,
    )  # fmt: skip
    data = lazy_frames(frames, (sy, sx))
    if calibration is None:
        kw: dict[str, Any] = {}
        if h["sx_nm"] > 0 and h["sy_nm"] > 0:
            kw.update(scan_step=(h["sy_nm"], h["sx_nm"]), scan_units="nm")
        if h["beam_energy_V"] > 0:
            kw["beam_energy_kev"] = h["beam_energy_V"] / 1000.0
        calibration = header_calibration(**kw)
    meta = {"format": "NanoMegas blockfile", "header": h}
    if h["sdp"]:
        meta["detector_pixel_cm"] = 100.0 / h["sdp"]
    return DataCube(data, calibration, name=p.stem, metadata=meta, source=str(p))
