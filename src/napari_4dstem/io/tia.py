"""FEI / Thermo Fisher TIA series files: ``<name>.emi`` (metadata) + ``<name>_N.ser`` (data).

SER layout (little-endian; the series format TIA documents):

* header: ``ByteOrder`` u2 (0x4949), ``SeriesID`` u2 (0x0197), ``SeriesVersion`` u2 (0x0210, or
  0x0220 from TIA 4.7.3 on, where offsets become 8 bytes), ``DataTypeID`` u4 (0x4120 1D
  spectra, 0x4122 2D images), ``TagTypeID`` u4 (0x4152 time, 0x4142 time and position),
  ``TotalNumberElements`` u4, ``ValidNumberElements`` u4, ``OffsetArrayOffset`` (u4 / u8),
  ``NumberDimensions`` u4, then per series dimension: size i4, calibration offset f8,
  delta f8, element i4, description (i4 length + text), units (i4 length + text).
  Dimensions are listed fastest first (for a 2D scan: x, then y).
* at ``OffsetArrayOffset``: ``TotalNumberElements`` data offsets, then as many tag offsets.
* a 2D data element: calibration (offset f8, delta f8, element i4) for x then y, ``DataType``
  u2 (1 u1, 2 u2, 3 u4, 4 i1, 5 i2, 6 i4, 7 f4, 8 f8, 9 complex64, 10 complex128),
  ``ArraySizeX`` u4, ``ArraySizeY`` u4, then the pixels, x fastest and the **bottom row
  first** (TIA's y axis points up). Calibrations are SI: metres for images, 1/m for
  diffraction patterns.

The EMI file holds an ``<ObjectInfo>`` XML block (accelerating voltage, the microscope mode,
camera length); its series are ``<name>_1.ser``, ``<name>_2.ser``...

What opens as a DataCube: a series of at least two 2D images; a 1D series as ``(1, n)``,
a 2D scan as ``(y, x)`` from the series dimensions. Frames are returned top row first, as
TIA displays them and as rosettasciio and ncempy return them: a reversed-row view of the
stored frames (zero-copy, a negative stride). Refused in one line: spectra
(``DataTypeID`` 0x4120), single images (:func:`read_frames` gives their pixels) and complex
pixels. Frames at a constant stride (what TIA writes) are a zero-copy view of a memmap;
frames at irregular offsets are a dask array of per-frame views.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..data.calibration import Calibration
from ..data.datacube import DataCube
from ..errors import FileFormatError
from ._helpers import check_scan_shape, header_calibration, never_raises, read_head, read_small, require_regular

__all__ = ["is_tia", "read_datacube", "read_frames", "read_header", "ser_path"]

_MAGIC = b"\x49\x49\x97\x01"
_VERSIONS = (0x0210, 0x0220)
_IMAGES, _SPECTRA = 0x4122, 0x4120
_DTYPES = {1: "u1", 2: "<u2", 3: "<u4", 4: "i1", 5: "<i2", 6: "<i4", 7: "<f4", 8: "<f8",
           9: "<c8", 10: "<c16"}  # fmt: skip
_ELEMENT_HEAD = struct.Struct("<ddiddihII")  # x cal, y cal, DataType, size x, size y: 50 bytes
_EMI_LIMIT = 64 * 2**20
_CHECK_ELEMENTS = 64


def ser_path(path: str | os.PathLike, series: int = 1) -> Path:
    """The ``.ser`` file of ``path``: itself, or ``<name>_<series>.ser`` beside an ``.emi``.

    Parameters
    ----------
    path : str or path
        A ``.ser`` or ``.emi`` file.
    series : int
        Series number of an ``.emi`` (default 1).

    Returns
    -------
    Path
        The series file (not checked to exist).
    """
    p = Path(path)
    if p.suffix.lower() == ".emi":
        return p.with_name(f"{p.stem}_{series}.ser")
    return p


@never_raises
def is_tia(path: str | os.PathLike) -> bool:
    """True for a TIA ``.ser`` file, or an ``.emi`` whose first ``.ser`` is one. Never raises."""
    p = Path(path)
    if p.suffix.lower() not in (".emi", ".ser"):
        return False
    head = read_head(ser_path(p), 6)
    return head[:4] == _MAGIC and struct.unpack("<H", head[4:6])[0] in _VERSIONS


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The SER file header: ids, element counts, series dimensions and the data offsets.

    Parameters
    ----------
    path : str or path
        The ``.ser`` file.

    Returns
    -------
    dict
        The header fields, the dimension records and the offset table of the data elements.

    Raises
    ------
    FileFormatError
        For a file without the 0x4949 0x0197 header, an unknown version, a corrupt header, or
        an offset table that runs past the end of the file.
    """
    p = Path(path)
    size = require_regular(p).st_size
    with open(p, "rb") as fh:
        head = fh.read(4096)
        if len(head) < 30 or head[:4] != _MAGIC:
            raise FileFormatError(p, "not a TIA series (.ser) file (no 0x4949 0x0197 header)")
        (version,) = struct.unpack_from("<H", head, 4)
        if version not in _VERSIONS:
            raise FileFormatError(p, f"unknown TIA series version 0x{version:04x}")
        off_fmt = "<q" if version >= 0x0220 else "<i"
        type_id, tag_id, total, valid = struct.unpack_from("<IIii", head, 6)
        (table,) = struct.unpack_from(off_fmt, head, 22)
        pos = 22 + struct.calcsize(off_fmt)
        (ndim,) = struct.unpack_from("<i", head, pos)
        pos += 4
        if not (0 <= valid <= total and 0 <= ndim <= 8):
            raise FileFormatError(p, f"corrupt TIA header: {valid} of {total} elements, {ndim} dimensions")
        dims = []
        try:
            for _ in range(ndim):
                n, c0, dc, ce, dlen = struct.unpack_from("<iddii", head, pos)
                pos += 28
                desc = head[pos : pos + dlen].decode("latin-1")
                pos += dlen
                (ulen,) = struct.unpack_from("<i", head, pos)
                units = head[pos + 4 : pos + 4 + ulen].decode("latin-1")
                pos += 4 + ulen
                if dlen < 0 or ulen < 0 or pos > len(head):
                    raise struct.error
                dims.append({"size": n, "offset": c0, "delta": dc, "element": ce,
                             "description": desc, "units": units})  # fmt: skip
        except struct.error:
            raise FileFormatError(p, "corrupt TIA header: its dimension records run past it") from None
        item = struct.calcsize(off_fmt)
        if table < pos or table + 2 * total * item > size:
            raise FileFormatError(
                p, f"truncated: the offset table ({total} elements at byte {table}) runs past the "
                f"end of the file ({size} bytes)",
            )  # fmt: skip
        fh.seek(table)
        offsets = np.frombuffer(fh.read(valid * item), off_fmt).astype(np.int64)
    return {"version": version, "data_type_id": type_id, "tag_type_id": tag_id,
            "total_elements": total, "valid_elements": valid, "dimensions": dims,
            "data_offsets": offsets, "file_size": size}  # fmt: skip


def _elements(p: Path, head: dict[str, Any], idx) -> list[tuple[np.dtype, tuple[int, int], tuple]]:
    """``(dtype, (y, x), (x0, dx, y0, dy))`` of the data elements ``idx`` (headers only)."""
    out = []
    with open(p, "rb") as fh:
        for i in idx:
            o = int(head["data_offsets"][i])
            if o < 0 or o + _ELEMENT_HEAD.size > head["file_size"]:
                raise FileFormatError(p, f"element {i} at byte {o} lies outside the file")
            fh.seek(o)
            cx0, cdx, _, cy0, cdy, _, code, nx, ny = _ELEMENT_HEAD.unpack(fh.read(_ELEMENT_HEAD.size))
            if code not in _DTYPES:
                raise FileFormatError(p, f"element {i} has an unknown DataType {code}")
            if not (1 <= nx <= 2**16 and 1 <= ny <= 2**16):
                raise FileFormatError(p, f"element {i} has an implausible size {nx} x {ny}")
            out.append((np.dtype(_DTYPES[code]), (ny, nx), (cx0, cdx, cy0, cdy)))
    return out


def read_frames(path: str | os.PathLike, *, series: int = 1) -> Any:
    """All valid 2D images of a series, ``(n, y, x)`` top row first (stored bottom row first).

    Parameters
    ----------
    path : str or path
        A ``.ser`` or ``.emi`` file.
    series : int
        Series number of an ``.emi`` (default 1).

    Returns
    -------
    ndarray or dask.array.Array
        A read-only view of a memmap (constant stride), or a dask array over per-image views
        (irregular offsets).

    Raises
    ------
    FileFormatError
        As :func:`read_header`, for spectra, an unknown data type, no valid element, images of
        different shapes or types, or a truncated file.
    """
    return _frames(ser_path(path, series))[0]


def _frames(p: Path) -> tuple[Any, dict[str, Any], tuple]:
    head = read_header(p)
    if head["data_type_id"] == _SPECTRA:
        raise FileFormatError(p, "holds spectra (1D data elements), not diffraction patterns")
    if head["data_type_id"] != _IMAGES:
        raise FileFormatError(p, f"unknown TIA DataTypeID 0x{head['data_type_id']:04x}")
    n = head["valid_elements"]
    if n < 1:
        raise FileFormatError(p, "holds no valid data elements")
    offs = head["data_offsets"]
    # up to 64 element headers, evenly spaced, the last included, must agree with the first
    idx = np.unique(np.linspace(0, n - 1, min(n, _CHECK_ELEMENTS)).astype(np.int64))
    checked = _elements(p, head, idx)
    dtype, (ny, nx), cal = checked[0]
    for i, (dt, shape, _) in zip(idx, checked, strict=True):
        if (dt, shape) != (dtype, (ny, nx)):
            raise FileFormatError(p, f"image {int(i)} is {shape[1]} x {shape[0]} {dt}, image 0 is {nx} x {ny} {dtype}")
    nbytes = ny * nx * dtype.itemsize
    end = int(offs.max()) + _ELEMENT_HEAD.size + nbytes
    if end > head["file_size"]:
        raise FileFormatError(p, f"truncated: image data end at byte {end}, the file has {head['file_size']} bytes")
    raw = np.memmap(p, dtype=np.uint8, mode="r")
    steps = np.diff(offs)
    first = int(offs[0]) + _ELEMENT_HEAD.size
    if n == 1 or (steps[0] >= nbytes and np.all(steps == steps[0])):
        stride = int(steps[0]) if n > 1 else nbytes
        frames = np.ndarray((n, ny, nx), dtype=dtype, buffer=raw, offset=first,
                            strides=(stride, nx * dtype.itemsize, dtype.itemsize))  # fmt: skip
        frames.flags.writeable = False
        frames = frames[:, ::-1, :]  # rows are stored bottom first
    else:
        import dask.array as da

        views = [
            raw[o + _ELEMENT_HEAD.size : o + _ELEMENT_HEAD.size + nbytes].view(dtype).reshape(ny, nx)[::-1]
            for o in offs.tolist()
        ]
        frames = da.stack([da.from_array(v, chunks=v.shape) for v in views])
    return frames, head, cal


def _emi_info(emi: Path) -> dict[str, Any]:
    """Accelerating voltage (V), microscope mode and camera length from an EMI file."""
    try:
        text = read_small(emi, _EMI_LIMIT, "TIA .emi metadata file").decode("latin-1")
    except FileFormatError:
        return {}
    info: dict[str, Any] = {}
    m = re.search(r"<AcceleratingVoltage>\s*([0-9.eE+-]+)\s*<", text)
    if m:
        info["accelerating_voltage_V"] = float(m.group(1))
    for label, key in (("Mode", "mode"), ("Camera length", "camera_length"),
                       ("Microscope", "microscope")):  # fmt: skip
        m = re.search(rf"<Label>{label}</Label><Value>([^<]*)</Value><Unit>([^<]*)</Unit>", text)
        if m:
            info[key] = f"{m.group(1).strip()} {m.group(2).strip()}".strip()
    return info


def read_datacube(
    path: str | os.PathLike,
    *,
    scan_shape: tuple[int, int] | None = None,
    calibration: Calibration | None = None,
    series: int = 1,
) -> DataCube:
    """Open the image series of a TIA ``.emi`` (its ``_<series>.ser``) or ``.ser`` file lazily.

    Parameters
    ----------
    path : str or path
        The ``.emi`` or ``.ser`` file.
    scan_shape : (int, int), optional
        ``(scan_y, scan_x)``; default the series' 2D scan dimensions, else ``(1, n)``.
    calibration : Calibration, optional
        Overrides the calibration from the series (scan step, detector pixel size, beam energy
        from the ``.emi``).
    series : int
        Series number of an ``.emi`` (default 1).

    Returns
    -------
    DataCube
        Zero-copy over the file, rows top first as TIA, rosettasciio and ncempy show them.

    Raises
    ------
    FileFormatError
        As :func:`read_frames`, for a missing series file, a single image, complex images, or a
        scan shape that does not fit the images.
    """
    p = Path(path)
    ser = ser_path(p, series)
    if not ser.exists():
        raise FileFormatError(p, f"its series file {ser.name} is missing")
    frames, head, (_, cdx, _, cdy) = _frames(ser)
    n = head["valid_elements"]
    if n < 2:
        raise FileFormatError(
            p, f"holds a single {frames.shape[1]} x {frames.shape[2]} image, not a 4D-STEM "
            "dataset or a stack of patterns (read it with napari_4dstem.io.tia.read_frames)",
        )  # fmt: skip
    if frames.dtype.kind == "c":
        raise FileFormatError(p, f"holds {frames.dtype.name} images, not detector intensities")
    dims = head["dimensions"]
    guess = (dims[1]["size"], dims[0]["size"]) if len(dims) == 2 else None
    sy, sx = check_scan_shape(ser, n, scan_shape, guess=guess)
    data = frames[: sy * sx].reshape(sy, sx, *frames.shape[1:])
    emi = ser.with_name(re.sub(r"_\d+$", "", ser.stem) + ".emi")
    info = _emi_info(emi) if emi.is_file() else {}
    if calibration is None:
        calibration = _calibration(cdx, cdy, dims, info)
    meta = {"format": "FEI TIA", "ser_file": ser.name, "series_version": head["version"],
            "series_dimensions": dims, "total_elements": head["total_elements"],
            "valid_elements": n, "emi": info}  # fmt: skip
    return DataCube(data, calibration, name=p.stem, metadata=meta, source=str(p))


def _calibration(cdx: float, cdy: float, dims: list, info: dict[str, Any]) -> Calibration:
    kw: dict[str, Any] = {}
    # diffraction patterns are calibrated in 1/m (about 1e7-1e10), images in m (below 1e-3)
    if cdx > 1e3 and abs(cdx - cdy) <= 1e-6 * cdx:
        kw.update(k_pixel_size=cdx * 1e-10, k_units="1/A")
    if len(dims) == 2 and all(d["units"] == "m" for d in dims):
        sx_nm, sy_nm = abs(dims[0]["delta"]) * 1e9, abs(dims[1]["delta"]) * 1e9
        if sx_nm > 0 and sy_nm > 0:
            kw.update(scan_step=(sy_nm, sx_nm), scan_units="nm")
    if info.get("accelerating_voltage_V", 0) > 0:
        kw["beam_energy_kev"] = info["accelerating_voltage_V"] / 1000.0
    return header_calibration(**kw)
