"""Gatan DigitalMicrograph DM3/DM4 files holding 4D datasets (our own tag-tree parser).

File layout (the publicly documented DM3/DM4 tag format):

* header: ``version`` (u4, 3 or 4), root length (u4 in DM3, u8 in DM4), byte order of the
  tag data (u4: 1 little-endian, 0 big-endian); header fields are big-endian;
* a tag group: ``sorted`` (u1), ``open`` (u1), number of tags (u4 / u8), then the tags;
* a tag: kind (u1: 20 group, 21 data), label length (u2) and label; DM4 then has the tag's
  byte size (u8); a data tag has ``%%%%``, the info length ``n`` (u4 / u8) and ``n`` info
  words (u4 / u8) that describe the value: a simple type code (2 i2, 3 i4, 4 u2, 5 u4, 6 f4,
  7 f8, 8 bool, 9 i1, 10 u1, 11 i8, 12 u8), 18 string, 15 struct, 20 array.

Images live in ``ImageList``; each has ``ImageData`` with ``Data`` (an array tag), ``Dimensions``
(sizes, fastest first) and ``Calibrations/Dimension`` (``Scale``, ``Origin``, ``Units``).
Arrays of simple types are not read while parsing: we keep their offset, so the 4D pixel data
are opened as a memmap. A 4D image with dimensions ``(d0, d1, d2, d3)`` (fastest first) is the
C-ordered array ``(d3, d2, d1, d0)`` = ``(scan_y, scan_x, k_y, k_x)``: dimensions 0 and 1 are
the detector, 2 and 3 the scan, the convention rosettasciio uses (signal axes fastest).

Status: built and tested against synthetic DM3/DM4 files written from this description
(tests/io/test_dm.py); no real 4D DM file was available to check against.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..data.calibration import Calibration
from ..data.datacube import DataCube
from ..errors import CalibrationError, FileFormatError
from ._helpers import check_scan_shape, never_raises, read_head, require_regular

__all__ = ["DMArray", "is_dm4d", "read_datacube", "read_tags"]

_SIMPLE = {2: "i2", 3: "i4", 4: "u2", 5: "u4", 6: "f4", 7: "f8", 8: "u1", 9: "i1", 10: "u1",
           11: "i8", 12: "u8"}  # fmt: skip
_READ_ARRAY_MAX = 4096  # arrays longer than this are kept as offsets, not read
_MAX_DEPTH = 64


class DMArray:
    """An array tag not read while parsing: ``dtype``, ``count`` and file ``offset``."""

    def __init__(self, dtype: np.dtype, count: int, offset: int):
        self.dtype, self.count, self.offset = dtype, count, offset

    def __repr__(self) -> str:
        return f"DMArray({self.dtype}, count={self.count}, offset={self.offset})"


class _Reader:
    def __init__(self, fh, path: Path, version: int, little: bool, size: int):
        self.fh, self.path, self.v4, self.size = fh, path, version == 4, size
        self.end = "<" if little else ">"

    def _fail(self, what: str):
        raise FileFormatError(self.path, f"corrupt DM tag tree: {what} at byte {self.fh.tell()}")

    def read(self, n: int) -> bytes:
        if n < 0 or self.fh.tell() + n > self.size:  # never ask for more than the file holds
            self._fail(f"a field of {n} bytes runs past the end of the file")
        b = self.fh.read(n)
        if len(b) != n:
            self._fail("unexpected end of file")
        return b

    def word(self) -> int:  # header/info words are big-endian
        return struct.unpack(">Q" if self.v4 else ">I", self.read(8 if self.v4 else 4))[0]

    def value(self, code: int):
        if code not in _SIMPLE:
            self._fail(f"unknown type code {code}")
        dt = np.dtype(self.end + _SIMPLE[code])
        return np.frombuffer(self.read(dt.itemsize), dt)[0].item()

    def group(self, depth: int = 0) -> dict[str, Any]:
        if depth > _MAX_DEPTH:
            self._fail("tag groups nested too deep")
        self.read(2)  # sorted, open
        n = self.word()
        if n > 10**6:
            self._fail(f"implausible tag count {n}")
        out: dict[str, Any] = {}
        unnamed = 0
        for _ in range(n):
            kind = self.read(1)[0]
            (llen,) = struct.unpack(">H", self.read(2))
            label = self.read(llen).decode("latin-1")
            if self.v4:
                self.read(8)  # tag size
            if not label:
                label, unnamed = f"[{unnamed}]", unnamed + 1
            if kind == 20:
                out[label] = self.group(depth + 1)
            elif kind == 21:
                out[label] = self.data(keep_offset=label == "Data")
            elif kind == 0:
                break  # end of file marker in some writers
            else:
                self._fail(f"unknown tag kind {kind}")
        return out

    def data(self, keep_offset: bool = False):
        if self.read(4) != b"%%%%":
            self._fail("missing %%%% data marker")
        n = self.word()
        if not 1 <= n <= 1024:
            self._fail(f"implausible info length {n}")
        info = [self.word() for _ in range(n)]
        code = info[0]
        if code in _SIMPLE:
            return self.value(code)
        if code == 18:  # string
            return self.read(info[1]).decode("latin-1", errors="replace")
        if code == 15:  # struct: [15, name_len, n_fields, (name_len, type) * n]
            types = info[4::2][: info[2]]
            return tuple(self.value(t) for t in types)
        if code == 20:
            if info[1] == 15:  # array of structs: [20, 15, name_len, n_fields, (nl, t)*, count]
                nf = info[3]
                types = info[5 : 5 + 2 * nf : 2]
                count = info[-1]
                if count * nf > 10**6:
                    self._fail("struct array too long")
                return [tuple(self.value(t) for t in types) for _ in range(count)]
            elem, count = info[1], info[2]
            if elem not in _SIMPLE:
                self._fail(f"unsupported array element type {elem}")
            dt = np.dtype(self.end + _SIMPLE[elem])
            nbytes = dt.itemsize * count
            offset = self.fh.tell()
            if offset + nbytes > self.size:
                raise FileFormatError(
                    self.path,
                    f"truncated: an array of {count} x {dt} at byte {offset} runs past the end "
                    f"of the file ({self.size} bytes)",
                )
            if count <= _READ_ARRAY_MAX and not keep_offset:
                arr = np.frombuffer(self.read(nbytes), dt)
                if elem == 4:  # u2 arrays are mostly UTF-16 text (units, names)
                    try:
                        return arr.astype("<u2").tobytes().decode("utf-16-le")
                    except UnicodeDecodeError:
                        return arr.copy()
                return arr.copy()
            self.fh.seek(nbytes, 1)
            return DMArray(dt, count, offset)
        self._fail(f"unknown info type {code}")


def read_tags(path: str | os.PathLike) -> dict[str, Any]:
    """The whole tag tree of a DM3/DM4 file (large arrays as :class:`DMArray` offsets)."""
    p = Path(path)
    size = require_regular(p).st_size
    with open(p, "rb") as fh:
        head = fh.read(4)
        if len(head) < 4:
            raise FileFormatError(p, "too short for a DM file")
        (version,) = struct.unpack(">I", head)
        if version not in (3, 4):
            raise FileFormatError(p, f"not a DM3/DM4 file (version word {version})")
        fh.read(8 if version == 4 else 4)
        order = fh.read(4)
        if len(order) < 4:
            raise FileFormatError(p, "truncated DM header")
        (little,) = struct.unpack(">I", order)
        return _Reader(fh, p, version, little == 1, size).group()


@never_raises
def is_dm4d(path: str | os.PathLike) -> bool:
    """True for a DM3/DM4 file (the tag tree is checked only when opening). Never raises."""
    p = Path(path)
    if p.suffix.lower() not in (".dm3", ".dm4"):
        return False
    return struct.unpack(">I", read_head(p, 4))[0] in (3, 4)


def _images(tags: dict[str, Any]) -> list[dict[str, Any]]:
    il = tags.get("ImageList", {})
    return [v for v in il.values() if isinstance(v, dict) and "ImageData" in v]


def read_datacube(
    path: str | os.PathLike,
    *,
    scan_shape: tuple[int, int] | None = None,
    calibration: Calibration | None = None,
) -> DataCube:
    """Open the 4D image of a DM3/DM4 file lazily (a memmap of its data array).

    A 3D image (a stack of patterns) opens as ``(1, n)`` unless ``scan_shape`` is given.
    """
    p = Path(path)
    tags = read_tags(p)
    best = None
    for im in _images(tags):
        d = im["ImageData"]
        dims_in = d.get("Dimensions", {})
        vals = dims_in.values() if isinstance(dims_in, dict) else []
        dims = [int(v) for v in vals if isinstance(v, int | float) and math.isfinite(v)]
        if any(v < 1 for v in dims):
            raise FileFormatError(p, f"image dimensions {dims} are not all positive")
        if isinstance(d.get("Data"), DMArray) and len(dims) >= 3:
            if best is None or len(dims) > len(best[1]):
                best = (im, dims)
    if best is None:
        raise FileFormatError(p, "holds no 3D or 4D image (only 1D/2D images or none)")
    im, dims = best
    arr: DMArray = im["ImageData"]["Data"]
    n_px = int(np.prod(dims))
    if arr.count != n_px:
        raise FileFormatError(
            p, f"image data holds {arr.count} values but its dimensions {dims} need {n_px}"
        )
    cal_dims = list(im["ImageData"].get("Calibrations", {}).get("Dimension", {}).values())
    if len(dims) == 4:
        kx, ky, sx, sy = dims
        guess = (sy, sx)
        n = sy * sx
    elif len(dims) == 3:
        kx, ky, n = dims
        guess = None
    else:
        raise FileFormatError(p, f"{len(dims)}D images are not supported (3D or 4D)")
    sy, sx = check_scan_shape(p, n, scan_shape, guess=guess)
    mm = np.memmap(p, dtype=arr.dtype, mode="r", offset=arr.offset, shape=(n, ky, kx))
    data = mm[: sy * sx].reshape(sy, sx, ky, kx)
    if calibration is None:
        calibration = _calibration(cal_dims, len(dims))
    meta = {"format": f"Gatan DM ({len(dims)}D)", "dimensions_fastest_first": dims,
            "calibrations": cal_dims, "name": im.get("Name", "")}  # fmt: skip
    return DataCube(data, calibration, name=p.stem, metadata=meta, source=str(p))


def _calibration(cal_dims: list, ndim: int) -> Calibration:
    def get(i):
        if i < len(cal_dims) and isinstance(cal_dims[i], dict):
            c = cal_dims[i]
            return float(c.get("Scale", 1.0)), str(c.get("Units", "")).strip()
        return 1.0, ""

    kw: dict[str, Any] = {}
    k_scale, k_units = get(0)
    if k_units in ("1/nm", "nm^-1"):
        kw.update(k_pixel_size=k_scale / 10.0, k_units="1/A")
    elif k_units in ("1/A", "1/Å", "mrad"):
        kw.update(k_pixel_size=k_scale, k_units=k_units)
    if ndim == 4:
        (sxs, su), (sys_, _) = get(2), get(3)
        if su in ("nm", "A", "Å", "µm", "um") and sxs > 0 and sys_ > 0:
            kw.update(scan_step=(sys_, sxs), scan_units=su)
    try:
        return Calibration(**kw)
    except CalibrationError:
        return Calibration()
