"""TVIPS camera recorder streams ``<name>_000.tvips`` (+ ``_001``, ``_002``... when split).

Layout (little-endian u4 fields unless noted):

* the first file starts with a 256-byte main header: ``size`` (256), ``version`` (1 or 2),
  ``dimx``, ``dimy`` (frame width and height), ``bitsperpixel`` (8 or 16), ``offsetx``,
  ``offsety``, ``binx``, ``biny``, ``pixelsize`` (physical detector pixel, nm), ``ht``
  (high tension, kV), ``magtotal``, ``frameheaderbytes``, then padding;
* then frames: a frame header (``frameheaderbytes`` bytes in version 2, 12 bytes in version 1)
  starting with ``num``, ``timestamp``, ``ms``, ... (``mode`` 2 = diffraction, ``rotidx``
  the scan position counter of a scanning acquisition), then ``dimy x dimx`` pixels;
* a long recording continues in ``_001``, ``_002``... files that hold only frames.

Frames are a zero-copy memmap view (one file) or a lazy frame stack over the files (split
recordings), ``(1, n)`` unless ``scan_shape`` is given; ``frame_offset`` drops frames recorded
before the scan started (or puts blank frames first), as for Merlin. The header's ``ht`` gives the beam energy; no
detector calibration is invented from ``pixelsize`` and ``magtotal``.
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
from ._framestack import check_frame_offset, frames_with_offset
from ._helpers import (
    check_scan_shape,
    frame_memmap,
    never_raises,
    read_head,
    require_regular,
)

__all__ = ["is_tvips", "read_datacube", "read_frames", "read_header", "stream_files"]

_HEADER = 256
_FIELDS = ("size", "version", "dimx", "dimy", "bitsperpixel", "offsetx", "offsety", "binx",
           "biny", "pixelsize", "ht", "magtotal", "frameheaderbytes")  # fmt: skip
_PART = re.compile(r"^(.*)_(\d{3})$")
_MAX_PARTS = 10000
_CHECK_FRAMES = 64


def _first(path: Path) -> Path:
    """The ``_000`` file of a split recording (``path`` itself when it is not numbered)."""
    m = _PART.match(path.stem)
    return path.with_name(f"{m.group(1)}_000{path.suffix}") if m else path


def stream_files(path: str | os.PathLike) -> list[Path]:
    """The files of a recording in order: ``_000``, ``_001``...

    Parameters
    ----------
    path : str or path
        Any file of the recording.

    Returns
    -------
    list of Path
        Every numbered name beside the first counts, whatever it is (a FIFO or a dangling link
        is refused when opened). The format records no frame count, so a recording whose *last*
        files are missing cannot be told from a shorter one: it opens with the frames that are
        there (``metadata["files"]``).

    Raises
    ------
    FileFormatError
        When ``_000`` is missing, the numbers have a gap, there are too many parts, or the
        folder cannot be listed.
    """
    first = _first(Path(path))
    m = _PART.match(first.stem)
    if not m:
        return [first]
    pat = re.compile(rf"^{re.escape(m.group(1))}_(\d{{3}}){re.escape(first.suffix)}$")
    try:
        names = os.listdir(first.parent)
    except OSError as e:
        raise FileFormatError(first, f"its folder cannot be listed ({e.strerror})") from None
    nums = sorted(int(g.group(1)) for n in names if (g := pat.match(n)))
    if not nums or nums[0] != 0:
        raise FileFormatError(first, "the first file of this recording (_000) is missing")
    if nums != list(range(len(nums))):
        gap = next(i for i, v in enumerate(nums) if v != i)
        raise FileFormatError(
            first, f"part _{gap:03d} of this recording is missing (found {len(nums)} parts up to "
            f"_{nums[-1]:03d})",
        )  # fmt: skip
    if len(nums) > _MAX_PARTS:
        raise FileFormatError(first, f"{len(nums)} parts, more than {_MAX_PARTS}")
    return [first.with_name(f"{m.group(1)}_{i:03d}{first.suffix}") for i in nums]


def _parse(head: bytes) -> dict[str, Any] | None:
    if len(head) < _HEADER:
        return None
    h = dict(zip(_FIELDS, struct.unpack_from("<13I", head), strict=True))
    if h["size"] != _HEADER or h["version"] not in (1, 2):
        return None
    return h


@never_raises
def is_tvips(path: str | os.PathLike) -> bool:
    """True for a ``.tvips`` recording (any of its numbered files). Never raises."""
    p = Path(path)
    return p.suffix.lower() == ".tvips" and _parse(read_head(_first(p), _HEADER)) is not None


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The main header of a recording (read from its first file), validated.

    Parameters
    ----------
    path : str or path
        Any file of the recording.

    Returns
    -------
    dict
        The header fields (``version``, ``dimx``, ``dimy``, ``bitsperpixel``, ``ht``,
        ``frame_header_bytes``...).

    Raises
    ------
    FileFormatError
        For no 256-byte version 1/2 header, a pixel depth other than 8 or 16 bits, or an
        implausible frame or frame-header size.
    """
    first = _first(Path(path))
    h = _parse(read_head(first, _HEADER))
    if h is None:
        raise FileFormatError(first, "not a TVIPS recording (no 256-byte version 1/2 header)")
    if h["bitsperpixel"] not in (8, 16):
        raise FileFormatError(first, f"{h['bitsperpixel']} bits per pixel is not supported (8 or 16)")
    if not (1 <= h["dimx"] <= 2**16 and 1 <= h["dimy"] <= 2**16):
        raise FileFormatError(first, f"implausible frame size {h['dimx']} x {h['dimy']}")
    h["frame_header_bytes"] = h["frameheaderbytes"] if h["version"] == 2 else 12
    if not 12 <= h["frame_header_bytes"] <= 2**16:
        raise FileFormatError(first, f"implausible frame header size {h['frame_header_bytes']}")
    return h


def _stacks(path: Path) -> tuple[list[np.ndarray], dict[str, Any]]:
    h = read_header(path)
    files = stream_files(path)
    dtype = np.dtype("u1" if h["bitsperpixel"] == 8 else "<u2")
    shape = (h["dimy"], h["dimx"])
    fh = h["frame_header_bytes"]
    rec = fh + shape[0] * shape[1] * dtype.itemsize
    stacks, parts = [], []
    for i, f in enumerate(files):
        start = _HEADER if i == 0 else 0
        size = require_regular(f).st_size
        n, rest = divmod(max(0, size - start), rec)
        if rest:
            raise FileFormatError(
                f, f"truncated or split inside a frame: {size - start} bytes of frames are not a "
                f"whole number of {rec}-byte frames ({n} complete)",
            )  # fmt: skip
        parts.append((f, start, n))
        if n:
            stacks.append(frame_memmap(f, offset=start, n_frames=n, frame_shape=shape,
                                       dtype=dtype, frame_header=fh))  # fmt: skip
    if not stacks:
        raise FileFormatError(path, "holds no frames")
    _check_frame_headers(parts, rec)
    h["files"] = [f.name for f in files]
    h["frames_per_file"] = [n for _, _, n in parts]
    return stacks, h


def _check_frame_headers(parts: list[tuple[Path, int, int]], rec: int) -> None:
    """Frame records must start where the main header says.

    Frame records must start where the main header says: up to 64 frame headers (evenly spaced, and the first
    and last of every file) must have ``ms`` below 1000 and time stamps that never go back. Bytes lost or
    inserted shift the records and fail here instead of opening as misaligned (or extra) frames.
    """
    total = sum(n for _, _, n in parts)
    picks = set(np.linspace(0, total - 1, min(total, _CHECK_FRAMES)).astype(np.int64).tolist())
    base = 0
    for _, _, n in parts:
        if n:
            picks.update((base, base + n - 1))
        base += n
    last_t, base = -1, 0
    for f, start, n in parts:
        mine = sorted(i - base for i in picks if base <= i < base + n)
        if mine:
            with open(f, "rb") as fh:
                for j in mine:
                    fh.seek(start + j * rec)
                    _, t, ms = struct.unpack("<3I", fh.read(12))
                    if ms >= 1000 or t < last_t:
                        raise FileFormatError(
                            f, f"frame {j} does not start with a TVIPS frame header (time stamp "
                            f"{t} s + {ms} ms after {last_t} s): bytes lost or inserted",
                        )  # fmt: skip
                    last_t = t
        base += n


def read_frames(path: str | os.PathLike) -> list[np.ndarray]:
    """The frames of each file of a recording, as stored: memmap views ``(n_i, dimy, dimx)``.

    Parameters
    ----------
    path : str or path
        Any file of the recording.

    Returns
    -------
    list of ndarray
        One read-only memmap view per file.

    Raises
    ------
    FileFormatError
        As :func:`stream_files` and :func:`read_header`, or for a file that is not a whole
        number of frames.
    """
    return _stacks(Path(path))[0]


def read_datacube(
    path: str | os.PathLike,
    *,
    scan_shape: tuple[int, int] | None = None,
    frame_offset: int = 0,
    calibration: Calibration | None = None,
) -> DataCube:
    """Open a TVIPS recording lazily: ``(1, n)`` frames, or ``scan_shape``.

    Parameters
    ----------
    path : str or path
        Any file of the recording (the whole recording opens).
    scan_shape : (int, int), optional
        ``(scan_y, scan_x)`` in raster order (default ``(1, n)``).
    frame_offset : int
        Trigger sync, as for Merlin: a positive value drops that many frames recorded before
        the scan began, a negative one puts that many blank frames first.
    calibration : Calibration, optional
        Overrides the beam energy from the header.

    Returns
    -------
    DataCube
        A lazy frame stack across the files, in the stored dtype; the header in ``metadata``.

    Raises
    ------
    FileFormatError
        As :func:`stream_files` and :func:`read_header`, for a ``frame_offset`` that is not an
        integer or drops every frame, or a scan shape that does not fit the frames.
    """
    p = Path(path)
    stacks, h = _stacks(p)
    n_all = sum(h["frames_per_file"])
    offset = check_frame_offset(p, frame_offset, n_all)
    sy, sx = check_scan_shape(p, n_all - offset, scan_shape)
    data = frames_with_offset(stacks, (sy, sx), offset)
    if calibration is None:
        calibration = Calibration(beam_energy_kev=float(h["ht"])) if h["ht"] > 0 else Calibration()
    meta = {"format": "TVIPS", "frame_offset": offset,
            **{k: v for k, v in h.items() if k not in ("size",)}}  # fmt: skip
    return DataCube(data, calibration, name=_first(p).stem, metadata=meta, source=str(p))
