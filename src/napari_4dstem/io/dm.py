"""Gatan DigitalMicrograph DM3/DM4 files holding 4D datasets (our own tag-tree parser).

File layout (the publicly documented DM3/DM4 tag format):

* header: ``version`` (u4, 3 or 4), root length (u4 in DM3, u8 in DM4), byte order of the
  tag data (u4: 1 little-endian, 0 big-endian); header fields are big-endian;
* a tag group: ``sorted`` (u1), ``open`` (u1), number of tags (u4 / u8), then the tags;
* a tag: kind (u1: 20 group, 21 data), label length (u2) and label; DM4 then has the tag's
  byte size (u8); a data tag has ``%%%%``, the info length ``n`` (u4 / u8) and ``n`` info
  words (u4 / u8) that describe the value: a simple type code (2 i2, 3 i4, 4 u2, 5 u4, 6 f4,
  7 f8, 8 bool, 9 i1, 10 u1, 11 i8, 12 u8), 18 string, 15 struct, 20 array.

Images live in ``ImageList``; each has ``ImageData`` with ``Data`` (an array tag), ``DataType``
(the pixel type), ``Dimensions`` (sizes, fastest first) and ``Calibrations/Dimension``
(``Scale``, ``Origin``, ``Units``). The first image of a file saved by DigitalMicrograph is its
RGB thumbnail. Arrays are not read while parsing when they are image data or long: we keep
their offset, so the pixel data are opened as a memmap. Pixel types (``DataType``): 1 i2,
2 f4, 3 complex64, 6 u1, 7 i4, 9 i1, 10 u2, 11 u4, 12 f8, 13 complex128, 14 bool,
8 and 23 RGB(A) (4 bytes a pixel, B G R A in memory, i.e. a little-endian ``0xAARRGGBB``);
complex pixels are stored as an array of (real, imaginary) structs. A 4D image with dimensions
``(d0, d1, d2, d3)`` (fastest first) is the C-ordered array ``(d3, d2, d1, d0)`` =
``(scan_y, scan_x, k_y, k_x)``: dimensions 0 and 1 are the detector, 2 and 3 the scan, the
convention rosettasciio uses (signal axes fastest).

What opens as a DataCube: a 4D image, or a 3D stack of patterns ``(d0, d1, n)`` as
``(1, n, d1, d0)`` (``scan_shape=(ny, nx)`` folds it). Integer, float and bool pixels open as
stored. Refused, each with a one-line FileFormatError: files holding only 1D/2D images, EELS/EDS
spectrum images (3D, but a spectrum per scan position, not patterns), complex and RGB images
(4D-STEM analysis needs real intensities; :func:`read_image` decodes them exactly) and packed
complex FFT images (``DataType`` 5).

Status: checked against the 30 DM3/DM4 stacks (every pixel type), the stack-builder file and
the 2D images written by DigitalMicrograph in ``shared/realdata`` (tests/io/test_dm_real.py),
and against synthetic 4D files written from this description (tests/io/test_dm.py); no real 4D
(STEMx) file was available, so the 4D axis convention rests on the format description.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.calibration import Calibration
from ..data.datacube import DataCube
from ..errors import FileFormatError
from ._helpers import check_scan_shape, header_calibration, never_raises, read_head, require_regular

__all__ = ["DMArray", "DMImage", "is_dm4d", "list_images", "read_datacube", "read_image", "read_tags"]

_SIMPLE = {2: "i2", 3: "i4", 4: "u2", 5: "u4", 6: "f4", 7: "f8", 8: "?", 9: "i1", 10: "u1",
           11: "i8", 12: "u8"}  # fmt: skip
_READ_ARRAY_MAX = 4096  # arrays longer than this are kept as offsets, not read
_MAX_DEPTH = 64


class DMArray:
    """An array tag not read while parsing: ``dtype``, ``count`` and file ``offset``.

    Parameters
    ----------
    dtype : numpy.dtype
        Type of one element.
    count : int
        Number of elements.
    offset : int
        Byte offset of the first element in the file.
    """

    def __init__(self, dtype: np.dtype, count: int, offset: int):
        self.dtype, self.count, self.offset = dtype, count, offset

    def __repr__(self) -> str:
        """Type, count and offset."""
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
                nf = info[3] if len(info) > 3 else 0
                if not 1 <= nf <= 64 or len(info) < 5 + 2 * nf:
                    self._fail(f"implausible struct array description {info[:8]}")
                types = info[5 : 5 + 2 * nf : 2]
                if any(t not in _SIMPLE for t in types):
                    self._fail(f"unsupported struct array field types {types}")
                fields = np.dtype([(f"f{i}", self.end + _SIMPLE[t]) for i, t in enumerate(types)])
                arr = self._array(fields, info[4 + 2 * nf], keep_offset)
                if isinstance(arr, DMArray):
                    # (real, imaginary) pairs of one float type are complex pixels
                    if nf == 2 and types[0] == types[1] and types[0] in (6, 7):
                        arr.dtype = np.dtype(self.end + ("c8" if types[0] == 6 else "c16"))
                    return arr
                return [tuple(x) for x in arr.tolist()]
            elem, count = info[1], info[2]
            if elem not in _SIMPLE:
                self._fail(f"unsupported array element type {elem}")
            arr = self._array(np.dtype(self.end + _SIMPLE[elem]), count, keep_offset)
            if elem == 4 and not isinstance(arr, DMArray):  # u2 arrays are mostly UTF-16 text
                try:
                    return arr.astype("<u2").tobytes().decode("utf-16-le")
                except UnicodeDecodeError:
                    return arr
            return arr
        self._fail(f"unknown info type {code}")

    def _array(self, dt: np.dtype, count: int, keep_offset: bool):
        """An array of ``count`` x ``dt`` at the current position, read or skipped.

        An array of ``count`` x ``dt`` at the current position: read when short (and not image data), else
        kept as a :class:`DMArray` offset and skipped.
        """
        nbytes = dt.itemsize * count
        offset = self.fh.tell()
        if offset + nbytes > self.size:
            raise FileFormatError(
                self.path,
                f"truncated: an array of {count} x {dt} at byte {offset} runs past the end "
                f"of the file ({self.size} bytes)",
            )
        if count <= _READ_ARRAY_MAX and not keep_offset:
            return np.frombuffer(self.read(nbytes), dt).copy()
        self.fh.seek(nbytes, 1)
        return DMArray(dt, count, offset)


def read_tags(path: str | os.PathLike) -> dict[str, Any]:
    """The whole tag tree of a DM3/DM4 file (large arrays as :class:`DMArray` offsets).

    Parameters
    ----------
    path : str or path
        The file.

    Returns
    -------
    dict
        Tag groups as nested dicts, tag lists as lists.

    Raises
    ------
    FileFormatError
        For a file too short for a DM header, another version word than 3 or 4, or a truncated
        or malformed tag tree.
    """
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


# DataType -> what a pixel is; the Data array's element type must have the same size
_PIXEL = {1: "i2", 2: "f4", 3: "c8", 6: "u1", 7: "i4", 9: "i1", 10: "u2", 11: "u4", 12: "f8",
          13: "c16", 14: "?"}  # fmt: skip
_RGB_TYPES = (8, 23)  # 4 bytes a pixel: B, G, R, A in memory
_PACKED_COMPLEX = (5,)


@dataclass(frozen=True)
class DMImage:
    """One image of a DM file: where its pixels are and what they are.

    Attributes
    ----------
    index : int
        Position in ``ImageList``.
    name : str
        The image's name.
    dims : tuple of int
        Sizes, fastest first, as DM lists them.
    data_type : int
        DM ``DataType``.
    dtype : numpy.dtype
        numpy dtype of one pixel (structured R, G, B, A for RGB images).
    offset : int
        Byte offset of the pixels in the file.
    tags : dict
        The image's tag group.
    """

    index: int  #: position in ``ImageList``
    name: str
    dims: tuple[int, ...]  #: sizes, fastest first, as DM lists them
    data_type: int  #: DM ``DataType``
    dtype: np.dtype  #: numpy dtype of one pixel (structured R, G, B, A for RGB images)
    offset: int  #: byte offset of the pixels in the file
    tags: dict[str, Any]  #: the image's tag group

    @property
    def shape(self) -> tuple[int, ...]:
        """The C-ordered array shape (slowest first): ``dims`` reversed."""
        return tuple(reversed(self.dims))

    @property
    def calibrations(self) -> list:
        """The ``Calibrations/Dimension`` records (``Origin``, ``Scale``, ``Units``), fastest first."""
        dims = self.tags["ImageData"].get("Calibrations", {}).get("Dimension", {})
        return list(dims.values()) if isinstance(dims, dict) else []

    @property
    def meta(self) -> dict[str, Any]:
        """``ImageTags/Meta Data`` (``Format``, ``Signal``), empty when absent."""
        md = self.tags.get("ImageTags", {}).get("Meta Data", {})
        return md if isinstance(md, dict) else {}


def _rgba_dtype(little: bool) -> np.dtype:
    # R, G, B, A fields (in that order, as image libraries name them) over B G R A bytes
    offsets = [2, 1, 0, 3] if little else [1, 2, 3, 0]
    return np.dtype({"names": ["R", "G", "B", "A"], "formats": ["u1"] * 4, "offsets": offsets,
                     "itemsize": 4})  # fmt: skip


def _image(p: Path, index: int, im: dict[str, Any]) -> DMImage | None:
    """The :class:`DMImage` of one ``ImageList`` entry (None when it holds no pixel array)."""
    d = im.get("ImageData")
    if not isinstance(d, dict) or not isinstance(d.get("Data"), DMArray):
        return None
    arr: DMArray = d["Data"]
    dims_in = d.get("Dimensions", {})
    vals = dims_in.values() if isinstance(dims_in, dict) else []
    dims = tuple(int(v) for v in vals if isinstance(v, int | float) and math.isfinite(v))
    if not dims or any(v < 1 for v in dims):
        raise FileFormatError(p, f"image {index} has dimensions {list(dims)}, not all positive")
    n_px = math.prod(dims)
    if arr.count != n_px:
        raise FileFormatError(p, f"image {index} holds {arr.count} values but its dimensions {list(dims)} need {n_px}")
    dtype_code = d.get("DataType")
    if dtype_code in _RGB_TYPES and arr.dtype.itemsize == 4:
        dtype = _rgba_dtype(arr.dtype.str[0] != ">")
    elif dtype_code in _PIXEL or dtype_code is None:
        # the array's own type, unless DataType says otherwise (e.g. bool stored as bytes)
        dtype = arr.dtype
        want = np.dtype(_PIXEL.get(dtype_code, dtype.str))
        if dtype.itemsize != want.itemsize:
            raise FileFormatError(
                p,
                f"image {index}: DataType {dtype_code} ({want}) but its data array holds {arr.dtype} values",
            )
        if dtype.kind != want.kind:
            dtype = want.newbyteorder(">" if arr.dtype.str[0] == ">" else "<")
    elif dtype_code in _PACKED_COMPLEX:
        dtype = arr.dtype  # refused by the callers that need pixels
    else:
        raise FileFormatError(p, f"image {index} has an unknown DataType {dtype_code!r}")
    return DMImage(index, str(im.get("Name", "")), dims, int(dtype_code or 0), np.dtype(dtype),
                   arr.offset, im)  # fmt: skip


def list_images(path: str | os.PathLike) -> list[DMImage]:
    """Every image of a DM3/DM4 file that holds pixels (the thumbnail first, when present).

    Parameters
    ----------
    path : str or path
        The file.

    Returns
    -------
    list of DMImage
        In ``ImageList`` order.

    Raises
    ------
    FileFormatError
        As :func:`read_tags`, or for an image whose data type or size does not match its data.
    """
    p = Path(path)
    il = read_tags(p).get("ImageList", {})
    out = []
    for i, im in enumerate(il.values() if isinstance(il, dict) else []):
        if isinstance(im, dict) and (img := _image(p, i, im)) is not None:
            out.append(img)
    return out


def read_image(path: str | os.PathLike, index: int = -1) -> np.memmap:
    """The pixels of one image, exactly as stored, as a read-only memmap of ``DMImage.shape``.

    Parameters
    ----------
    path : str or path
        The file.
    index : int
        Which image of :func:`list_images` (default -1: the last, the data after the thumbnail).

    Returns
    -------
    numpy.memmap
        Every pixel type decodes, RGB as a structured ``(R, G, B, A)`` array.

    Raises
    ------
    FileFormatError
        For a file without image data, a packed complex (FFT, ``DataType`` 5) image, or no
        image ``index``.
    """
    p = Path(path)
    images = list_images(p)
    if not images:
        raise FileFormatError(p, "holds no image data")
    try:
        img = images[index]
    except IndexError:
        raise FileFormatError(p, f"has {len(images)} images; there is no image {index}") from None
    if img.data_type in _PACKED_COMPLEX:
        raise FileFormatError(p, "holds a packed complex (FFT) image, which is not supported")
    return np.memmap(p, dtype=img.dtype, mode="r", offset=img.offset, shape=img.shape)


def _pick(p: Path, images: list[DMImage]) -> DMImage:
    """The image to open as a DataCube, or a one-line FileFormatError saying why none is."""
    big = [im for im in images if len(im.dims) >= 3]
    if not big:
        shapes = ", ".join(str(im.shape) for im in images if im.data_type not in _RGB_TYPES)
        raise FileFormatError(
            p,
            f"holds no 3D or 4D image (only 1D/2D images: {shapes or 'none'}); a single "
            "image is not a 4D-STEM dataset or a stack of patterns",
        )
    im = max(big, key=lambda i: len(i.dims))
    fmt, signal = str(im.meta.get("Format", "")), str(im.meta.get("Signal", ""))
    if fmt.lower() == "spectrum image" or signal.upper() in ("EELS", "EDS", "CL"):
        raise FileFormatError(
            p,
            f"holds a {signal or 'spectrum'} spectrum image {im.shape} (a spectrum per scan "
            "position), not diffraction patterns",
        )
    if len(im.dims) > 4:
        raise FileFormatError(p, f"holds a {len(im.dims)}D image; only 3D stacks and 4D open")
    if im.data_type in _PACKED_COMPLEX:
        raise FileFormatError(p, "holds a packed complex (FFT) image, which is not supported")
    if im.data_type in _RGB_TYPES or im.dtype.kind == "c":
        what = "an RGB colour" if im.data_type in _RGB_TYPES else f"a {im.dtype.name}"
        raise FileFormatError(
            p,
            f"holds {what} image {im.shape}, not detector intensities (read its pixels with "
            "napari_4dstem.io.dm.read_image)",
        )
    return im


def read_datacube(
    path: str | os.PathLike,
    *,
    scan_shape: tuple[int, int] | None = None,
    calibration: Calibration | None = None,
) -> DataCube:
    """Open the 4D image (or 3D stack of patterns) of a DM3/DM4 file lazily, as a memmap.

    Parameters
    ----------
    path : str or path
        The file.
    scan_shape : (int, int), optional
        ``(scan_y, scan_x)`` for a 3D stack ``(n, k_y, k_x)``, which opens as ``(1, n)``
        otherwise.
    calibration : Calibration, optional
        Overrides the calibration from the image's dimension calibrations.

    Returns
    -------
    DataCube
        Zero-copy over the file in the stored dtype (complex as such, bool as bool, RGB as its
        R G B A view); the image's tags in ``metadata``.

    Raises
    ------
    FileFormatError
        As :func:`list_images`, or for a file with no 4D image or stack of patterns (2D images,
        spectrum images, packed complex), or a scan shape that does not fit.
    """
    p = Path(path)
    im = _pick(p, list_images(p))
    ndim = len(im.dims)
    if ndim == 4:
        kx, ky, sx, sy = im.dims
        guess: tuple[int, int] | None = (sy, sx)
        n = sy * sx
    else:
        kx, ky, n = im.dims
        guess = None
    sy, sx = check_scan_shape(p, n, scan_shape, guess=guess)
    mm = np.memmap(p, dtype=im.dtype, mode="r", offset=im.offset, shape=(n, ky, kx))
    data = mm[: sy * sx].reshape(sy, sx, ky, kx)
    cal_dims = im.calibrations
    if calibration is None:
        calibration = _calibration(cal_dims, ndim)
    meta = {"format": f"Gatan DM ({ndim}D)", "dimensions_fastest_first": list(im.dims),
            "data_type": im.data_type, "calibrations": cal_dims, "name": im.name}  # fmt: skip
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
    return header_calibration(**kw)
