"""Quantum Detectors Merlin ``.mib`` files (with their optional ``.hdr`` acquisition header).

Layout of a ``.mib`` file (public Merlin manual): frames one after another, each a text header
of ``header_bytes`` bytes (``MQ1,<seq>,<header_bytes>,<n_chips>,<width>,<height>,<dtype>,
<layout>,<chip select>,<time stamp>,<shutter s>,...,<counter depth>``) followed by the pixels.

* Decoded frames (``U08``, ``U16``, ``U32``, ``U64``): big-endian unsigned integers, rows top to
  bottom as the Merlin software writes them. Counter depths 1 and 6 are stored in ``U08``,
  12 in ``>u2`` and 24 in ``>u4``. They are opened as a strided numpy view of a structured
  memmap (a header field and a frame field per record), so nothing is copied or read to open.
* RAW frames (``R64``): the undecoded counter bits in 64-bit words. 1-bit counters are packed
  8 pixels to a byte, 6-bit counters take one byte, 12-bit counters a big-endian ``u2``; in
  every case the pixels come in 64-bit words whose pixel order is reversed. A 24-bit RAW frame
  is two 12-bit RAW frames, the most significant 12 bits first. A quad (2x2) RAW frame is a
  256 x 1024 strip ``[chip 4 | chip 3 | chip 2 | chip 1]`` per row; chips 1 and 2 form the top
  half, chips 3 and 4 the bottom half, rotated by 180 degrees. RAW data are decoded on read,
  chunk by chunk, through dask.

Orientation: frames are returned **as stored in the file**, row 0 first (LiberTEM's choice).
rosettasciio flips every frame vertically; its arrays equal ours with ``[..., ::-1, :]``.
We keep file order because it is what the detector read out, because the memmap stays a
plain strided view, and because it matches the RAW decoding without a further flip.

Scan shape: ``scan_shape=(ny, nx)`` given by the user wins; then ``Frames per Trigger`` of the
``.hdr`` when it is above 1 (one trigger per scan line); then fly-back detection on the frame
time stamps (the first frame of each line comes later than the others); otherwise ``(1, n)``.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
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
    lazy_frames,
    never_raises,
    read_head,
    read_small,
    require_regular,
)

__all__ = [
    "MibHeader",
    "acquisition_files",
    "check_frame_headers",
    "decode_raw",
    "detect_flyback",
    "is_mib",
    "read_datacube",
    "read_frame_header",
    "read_hdr",
    "validate",
]

_DTYPES = {"U01": "u1", "U08": "u1", "U16": ">u2", "U32": ">u4", "U64": ">u8"}
_RAW_BYTES_PER_PX = {1: 1 / 8, 6: 1, 12: 2, 24: 4}  # per decoded pixel
_RAW_OUT = {1: np.uint8, 6: np.uint8, 12: np.uint16, 24: np.uint32}
# how many frame headers fly-back detection reads at most (open time must not grow with size)
_FLYBACK_MAX_FRAMES = 4096
# how many frame headers are checked at open (evenly spaced, first and last included)
_CHECK_FRAMES = 64
_HDR_MAX_BYTES = 2**20


@dataclass(frozen=True)
class MibHeader:
    """What the first frame header of a ``.mib`` says.

    Attributes
    ----------
    header_bytes : int
        Size of each per-frame header in bytes.
    n_chips : int
        Number of Medipix chips (1 single, 4 quad).
    width, height : int
        Frame size in pixels as stored (for RAW quad data the stored strip, 1024 x 256).
    pixel_type : str
        ``U08``, ``U16``, ``U32``, ``U64`` or ``R64`` (RAW).
    layout : str
        Chip layout, e.g. ``1x1``, ``2x2``.
    counter_depth : int
        Counter depth in bits (1, 6, 12 or 24).
    exposure_s : float
        Shutter time in seconds.
    """

    header_bytes: int
    n_chips: int
    width: int
    height: int
    pixel_type: str
    layout: str
    counter_depth: int
    exposure_s: float
    timestamp: str
    thresholds_kev: tuple[float, ...]

    @property
    def is_raw(self) -> bool:
        """True for RAW (``R64``) frames, decoded on read."""
        return self.pixel_type.startswith("R")

    @property
    def stored_bytes(self) -> int:
        """Pixel bytes per frame (without its header)."""
        if self.is_raw:
            # a 24-bit RAW header gives the width of two 12-bit frames side by side
            w = self.width // 2 if self.counter_depth == 24 else self.width
            return int(w * self.height * _RAW_BYTES_PER_PX[self.counter_depth])
        return self.width * self.height * np.dtype(_DTYPES[self.pixel_type]).itemsize

    @property
    def frame_bytes(self) -> int:
        """Bytes per frame record, header included."""
        return self.header_bytes + self.stored_bytes

    @property
    def frame_shape(self) -> tuple[int, int]:
        """Decoded frame shape ``(k_y, k_x)``."""
        if not self.is_raw:
            return (self.height, self.width)
        w = self.width // 2 if self.counter_depth == 24 else self.width
        if self.n_chips == 4:
            return (2 * self.height, w // 2)
        return (self.height, w)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the pixels: as stored (big-endian above 8 bits), or RAW's decoded type."""
        if self.is_raw:
            return np.dtype(_RAW_OUT[self.counter_depth])
        return np.dtype(_DTYPES[self.pixel_type])


def _mib_path(path: str | os.PathLike) -> Path:
    """The ``.mib`` file for ``path`` (a ``.mib`` itself, or the ``.hdr`` next to one)."""
    p = Path(path)
    if p.suffix.lower() == ".hdr":
        for cand in (p.with_suffix(".mib"), p.with_suffix(".MIB")):
            if cand.is_file():
                return cand
        raise FileFormatError(p, "Merlin .hdr header without its .mib data file", f"expected {p.with_suffix('.mib')}")
    return p


def acquisition_files(path: str | os.PathLike) -> list[Path]:
    """The ``.mib`` files of an acquisition, in order.

    Parameters
    ----------
    path : str or path
        A ``.mib`` (opens alone) or a ``.hdr``.

    Returns
    -------
    list of Path
        For a ``.hdr``: the ``.mib`` of the same name; when there is none, every
        ``<name><number>.mib`` (or ``<name>_<number>.mib``) beside it, sorted by number (an
        acquisition the Merlin software saved as several files). Empty when there is none.
    """
    p = Path(path)
    if p.suffix.lower() != ".hdr":
        return [p]
    for cand in (p.with_suffix(".mib"), p.with_suffix(".MIB")):
        if cand.is_file():
            return [cand]
    pat = re.compile(rf"^{re.escape(p.stem)}[_-]?(\d+)\.mib$", re.IGNORECASE)
    parts = []
    try:
        for c in p.parent.iterdir():
            m = pat.match(c.name)
            if m and c.is_file():
                parts.append((int(m.group(1)), c))
    except OSError:
        parts = []
    if not parts:
        return [_mib_path(p)]  # raises: a .hdr without its .mib
    return [c for _, c in sorted(parts)]


def _hdr_path(mib: Path) -> Path | None:
    for cand in (mib.with_suffix(".hdr"), mib.with_suffix(".HDR")):
        if cand.is_file():
            return cand
    return None


def read_frame_header(path: str | os.PathLike) -> MibHeader:
    """Parse the first frame header of a ``.mib`` file (reads at most 2 kB).

    Parameters
    ----------
    path : str or path
        The ``.mib`` file.

    Returns
    -------
    MibHeader
        The header's fields.

    Raises
    ------
    FileFormatError
        For a missing file, a header that is not a Merlin frame header, or an invalid field.
    """
    p = _mib_path(path)
    if not p.is_file():
        raise FileFormatError(p, "no such file")
    head = read_head(p, 2048)
    return _parse_frame_header(p, head)


def _parse_frame_header(p: Path, head: bytes) -> MibHeader:
    if not head.startswith(b"MQ1,"):
        raise FileFormatError(p, "not a Merlin .mib file (no 'MQ1' frame header)")
    parts = head.split(b",")
    try:
        header_bytes = int(parts[2])
    except (IndexError, ValueError):
        raise FileFormatError(p, "Merlin frame header has no valid header size") from None
    if not 16 <= header_bytes <= len(head) or header_bytes > 65536:
        raise FileFormatError(p, f"Merlin frame header size {header_bytes} is invalid or truncated")
    text = head[:header_bytes].decode("ascii", errors="replace")
    fields = [f for f in text.split(",") if "\x00" not in f]
    try:
        n_chips = int(fields[3])
        width, height = int(fields[4]), int(fields[5])
        pixel_type = fields[6].strip().upper()
        layout = fields[7].strip()
        exposure_s = float(fields[10])
        timestamp = fields[9].strip()
        thresholds = tuple(float(v) for v in fields[14:22])
    except (IndexError, ValueError) as e:
        raise FileFormatError(p, f"Merlin frame header is malformed ({e})") from None
    # counter depth: the last field (after the extended time stamp and exposure in ns)
    depth = None
    for f in reversed(fields):
        f = f.strip()
        if f.isdigit():
            depth = int(f)
            break
    if depth is None:
        depth = {"U08": 6, "U16": 12, "U32": 24, "U01": 1}.get(pixel_type)
    if pixel_type not in _DTYPES and pixel_type != "R64":
        raise FileFormatError(p, f"unknown Merlin pixel type {pixel_type!r}", "expected U08, U16, U32, U64 or R64")
    if depth not in (1, 6, 12, 24):
        raise FileFormatError(p, f"unknown Merlin counter depth {depth!r} bits", "expected 1, 6, 12 or 24")
    if width < 1 or height < 1 or n_chips < 1 or width * height > 2**26:
        raise FileFormatError(p, f"invalid Merlin frame size {width} x {height}, {n_chips} chips")
    hdr = MibHeader(
        header_bytes,
        n_chips,
        width,
        height,
        pixel_type,
        layout,
        depth,
        exposure_s,
        timestamp,
        thresholds,
    )
    if hdr.is_raw:
        if n_chips not in (1, 4) or (n_chips == 4 and layout.replace("G", "") != "2x2"):
            raise FileFormatError(
                p,
                f"RAW Merlin data with {n_chips} chips in layout {layout!r} is not supported",
                "RAW decoding supports single chips and 2x2 quads; record in a decoded mode",
            )
        if (width * height * _RAW_BYTES_PER_PX[depth]) % 8 or (
            n_chips == 4 and height * 4 != (width // 2 if depth == 24 else width)
        ):
            raise FileFormatError(p, f"RAW Merlin frame size {width} x {height} is inconsistent")
    return hdr


def read_hdr(path: str | os.PathLike) -> dict[str, str]:
    """The ``key: value`` pairs of a Merlin ``.hdr`` acquisition header (small text file).

    Parameters
    ----------
    path : str or path
        The ``.hdr`` file.

    Returns
    -------
    dict of str to str
        Keys and values, stripped.
    """
    p = Path(path)
    text = read_small(p, _HDR_MAX_BYTES, "Merlin .hdr header").decode("latin-1")
    out: dict[str, str] = {}
    for line in text.replace("\x00", "").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def _hdr_int(hdr: dict[str, str], prefix: str) -> int | None:
    for k, v in hdr.items():
        if k.startswith(prefix):
            m = re.match(r"\s*(\d+)", v)
            return int(m.group(1)) if m else None
    return None


@never_raises
def is_mib(path: str | os.PathLike) -> bool:
    """True for a Merlin ``.mib`` file, or a ``.hdr`` header (the dataset opens from it).

    Never raises.
    """
    p = Path(path)
    if p.suffix.lower() == ".hdr":
        return read_head(p, 4) == b"HDR,"
    return read_head(p, 4) == b"MQ1,"


def validate(path: str | os.PathLike, *, allow_truncated: bool = False) -> tuple[MibHeader, int]:
    """Check the file size against the frame header; return ``(header, n_frames)``.

    Parameters
    ----------
    path : str or path
        The ``.mib`` file.
    allow_truncated : bool
        Keep the complete frames of a truncated file instead of raising.

    Returns
    -------
    header : MibHeader
        The first frame header.
    n_frames : int
        Complete frames.

    Raises
    ------
    FileFormatError
        For a file without a complete frame, a truncated file (a partial last frame, or fewer
        frames than the ``.hdr`` promises) unless ``allow_truncated``, or frame records that do
        not start where the first header says (:func:`check_frame_headers`).
    """
    mib = _mib_path(path)
    hdr = read_frame_header(mib)
    size = require_regular(mib).st_size
    n, rest = divmod(size, hdr.frame_bytes)
    if n == 0:
        raise FileFormatError(mib, f"holds no complete frame ({size} bytes, one frame is {hdr.frame_bytes})")
    hint = f"pass allow_truncated=True to open the {n} complete frames"
    if rest and not allow_truncated:
        raise FileFormatError(
            mib,
            f"truncated: {size} bytes is {n} frames of {hdr.frame_bytes} bytes plus {rest} bytes",
            hint,
        )
    check_frame_headers(mib, hdr, n)
    hdr_path = _hdr_path(mib)
    if hdr_path is not None:
        expected = _hdr_int(read_hdr(hdr_path), "Frames in Acquisition")
        if expected and n < expected and not allow_truncated:
            raise FileFormatError(
                mib,
                f"truncated: {hdr_path.name} promises {expected} frames, the file holds {n}",
                hint,
            )
    return hdr, n


def check_frame_headers(path: Path, hdr: MibHeader, n: int, max_checks: int = _CHECK_FRAMES) -> None:
    """Check that frame records start where the first header says they do.

    Parameters
    ----------
    path : Path
        The ``.mib`` file.
    hdr : MibHeader
        Its first frame header.
    n : int
        Number of frames.
    max_checks : int
        Headers read at most (evenly spaced, the second and the last included; default 64).

    Returns
    -------
    None
        Each checked record starts with ``MQ1,`` and repeats the first header's size, chip
        count, width, height, pixel type and layout.

    Raises
    ------
    FileFormatError
        At the first record that does not: an edited size field, or bytes lost or inserted
        anywhere before the last frame, shift the records and fail here instead of opening as
        misaligned frames.
    """
    if n < 2:
        return
    idx = np.unique(np.concatenate([np.linspace(0, n - 1, min(n, max_checks)).astype(np.int64), [1, n - 1]]))
    first = None
    with open(path, "rb") as fh:
        for i in idx:
            fh.seek(int(i) * hdr.frame_bytes)
            head = fh.read(hdr.header_bytes)
            fields = head.split(b",")[:8]
            if first is None:
                first = fields
            if not head.startswith(b"MQ1,") or fields[2:8] != first[2:8]:
                raise FileFormatError(
                    path, f"frame {int(i)} does not start with a Merlin header matching the first "
                    f"(expected at byte {int(i) * hdr.frame_bytes}): bytes lost or inserted, or "
                    "an edited frame size",
                )  # fmt: skip


def _timestamps_ns(frames_hdr: np.ndarray, n: int) -> np.ndarray | None:
    """Frame time stamps in ns from the first ``n`` raw frame headers (None if unreadable)."""
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        fields = bytes(frames_hdr[i]).split(b",")
        ts = None
        for f in fields:  # extended stamp ...T14:04:00.746234381Z has ns resolution
            if f.endswith(b"Z") and b"T" in f:
                ts = f
                break
        try:
            with warnings.catch_warnings():  # a corrupt stamp may carry a time zone
                warnings.simplefilter("ignore")
                if ts is not None:
                    t = np.datetime64(ts[:-1].decode(errors="replace"), "ns")
                else:
                    raw = fields[9].decode(errors="replace").strip().replace(" ", "T")
                    t = np.datetime64(raw, "ns")
        except (ValueError, IndexError, TypeError, OverflowError):
            return None
        out[i] = float(t.astype(np.int64))
    return out


def detect_flyback(times_ns: np.ndarray, n_frames: int) -> tuple[int, int] | None:
    """Scan shape ``(ny, nx)`` from frame time stamps, or None when no fly-back is seen.

    Parameters
    ----------
    times_ns : ndarray ``(n,)``
        Frame time stamps in nanoseconds.
    n_frames : int
        Number of frames in the scan.

    Returns
    -------
    (int, int) or None
        The first frame of each scan line comes after the fly-back, so the time step before it
        stands out above the usual step. A line length ``nx`` is accepted when every outstanding
        step falls at a multiple of ``nx`` and ``nx`` divides the number of frames.
    """
    if times_ns is None or len(times_ns) < 3:
        return None
    d = np.diff(times_ns)
    med = float(np.median(d))
    mad = float(np.median(np.abs(d - med)))
    thresh = max(20 * mad, 1e-5 * abs(med), 2000.0)  # 2 us: above time-stamp jitter
    idx = np.flatnonzero(d - med > thresh) + 1  # first frame of each new line
    if len(idx) == 0:
        return None
    nx = int(idx[0])
    if nx < 2 or n_frames % nx or np.any(idx % nx):
        return None
    expected = np.arange(nx, len(times_ns), nx)
    if not np.array_equal(idx, expected):
        return None
    return n_frames // nx, nx


# -- RAW decoding ---------------------------------------------------------------------------------
def _decode_words(stored: np.ndarray, depth: int, n_px: int) -> np.ndarray:
    """Decode single-chip RAW pixel order: ``(n, bytes)`` -> ``(n, n_px)`` in readout order."""
    n = stored.shape[0]
    b = np.ascontiguousarray(stored).reshape(n, -1)
    if depth == 1:
        words = b.reshape(n, -1, 8)[:, :, ::-1]
        return np.unpackbits(words, axis=-1, bitorder="little").reshape(n, n_px)
    if depth == 6:
        return np.ascontiguousarray(b.reshape(n, -1, 8)[:, :, ::-1]).reshape(n, n_px)
    if depth == 12:
        v = b.view(">u2").reshape(n, -1, 4)[:, :, ::-1]
        return v.astype(np.uint16).reshape(n, n_px)
    raise ValueError(f"no RAW word decoder for {depth} bits")


def _assemble(px: np.ndarray, hdr: MibHeader, w: int) -> np.ndarray:
    """Readout-order pixels ``(n, h * w)`` -> frames ``(n, k_y, k_x)`` (quad chips placed)."""
    n, h = px.shape[0], hdr.height
    rows = px.reshape(n, h, w)
    if hdr.n_chips == 1:
        return rows
    c = w // 4  # stored row: [chip 4 | chip 3 | chip 2 | chip 1]
    blocks = rows.reshape(n, h, 4, c)
    top = np.concatenate([blocks[:, :, 3], blocks[:, :, 2]], axis=-1)
    bottom = np.concatenate([blocks[:, ::-1, 1, ::-1], blocks[:, ::-1, 0, ::-1]], axis=-1)
    return np.concatenate([top, bottom], axis=1)


def decode_raw(stored: np.ndarray, hdr: MibHeader) -> np.ndarray:
    """Decode RAW (``R64``) Merlin frames.

    Parameters
    ----------
    stored : ndarray of uint8, shape (n, stored_bytes)
        The pixel bytes of ``n`` frames, frame headers removed.
    hdr : MibHeader
        The frame header (counter depth, chips, stored size).

    Returns
    -------
    ndarray, shape (n, k_y, k_x)
        uint8 for 1- and 6-bit, uint16 for 12-bit, uint32 for 24-bit counters.
    """
    n = stored.shape[0]
    if hdr.counter_depth == 24:
        half = hdr.stored_bytes // 2
        w = hdr.width // 2
        b = np.ascontiguousarray(stored).reshape(n, -1)
        hi = _assemble(_decode_words(b[:, :half], 12, w * hdr.height), hdr, w)
        lo = _assemble(_decode_words(b[:, half:], 12, w * hdr.height), hdr, w)
        return (hi.astype(np.uint32) << 12) | lo.astype(np.uint32)
    px = _decode_words(stored, hdr.counter_depth, hdr.width * hdr.height)
    return np.ascontiguousarray(_assemble(px, hdr, hdr.width))


# -- open -----------------------------------------------------------------------------------------
def read_datacube(
    path: str | os.PathLike,
    *,
    scan_shape: tuple[int, int] | None = None,
    allow_truncated: bool = False,
    calibration: Calibration | None = None,
    frame_offset: int = 0,
) -> DataCube:
    """Open a Merlin ``.mib`` (or its ``.hdr``) lazily as a DataCube.

    Parameters
    ----------
    path : path
        The ``.mib`` file or the ``.hdr`` next to it.
    scan_shape : (int, int), optional
        ``(scan_y, scan_x)``. Needed when neither the ``.hdr`` nor the time stamps give it.
        Frames beyond ``scan_y * scan_x`` are ignored.
    allow_truncated : bool
        Open the complete frames of a truncated file instead of raising.
    calibration : Calibration, optional
        Merlin files carry no physical pixel sizes; pass one to attach it.
    frame_offset : int
        Trigger synchronisation: a positive value drops that many frames from the start (frames
        recorded before the scan began), a negative one inserts that many blank frames before
        the first (the scan began before the detector recorded). Applied before the scan shape.

    Returns
    -------
    DataCube
        Shape ``(scan_y, scan_x, k_y, k_x)``; decoded data as a zero-copy memmap view in the
        file's big-endian dtype, RAW data as a dask array decoded on read.

    Raises
    ------
    FileFormatError
        As :func:`validate` for each file; for an acquisition of several files whose frames
        differ, that holds fewer frames than its ``.hdr`` promises, or that is RAW; for a
        ``frame_offset`` that is not an integer or drops every frame; or a scan shape that is
        unknown or does not fit the frames.
    """
    files = acquisition_files(path)
    if len(files) > 1:
        return _read_multi(path, files, scan_shape=scan_shape, allow_truncated=allow_truncated,
                           calibration=calibration, frame_offset=frame_offset)  # fmt: skip
    mib = files[0]
    hdr, n = validate(mib, allow_truncated=allow_truncated)
    hdr_path = _hdr_path(mib)
    acq = read_hdr(hdr_path) if hdr_path is not None else {}
    stored = _stored(mib, hdr, n)
    offset = check_frame_offset(mib, frame_offset, n)
    guess = None
    source = "frames"
    n_eff = n - offset
    if scan_shape is None:
        fpt = _hdr_int(acq, "Frames per Trigger")
        if fpt and fpt > 1 and n_eff % fpt == 0:
            guess, source = (n_eff // fpt, fpt), "hdr Frames per Trigger"
        elif offset == 0:
            heads = np.memmap(
                mib,
                dtype=np.dtype([("h", f"V{hdr.header_bytes}"), ("f", f"V{hdr.stored_bytes}")]),
                mode="r",
                shape=(n,),
            )["h"]
            m = min(n, _FLYBACK_MAX_FRAMES)
            guess = detect_flyback(_timestamps_ns(heads, m), n if m == n else m)
            if guess is not None and m < n:
                nx = guess[1]
                guess = (n // nx, nx) if n % nx == 0 else None
            if guess is not None:
                source = "fly-back in frame time stamps"
    else:
        source = "user"
    sy, sx = check_scan_shape(mib, n_eff, scan_shape, guess=guess)
    data = _cube([stored], hdr, offset, (sy, sx))
    meta: dict[str, Any] = {
        "format": "Merlin MIB (RAW)" if hdr.is_raw else "Merlin MIB",
        **_detector_meta(hdr),
        "thresholds_keV": list(hdr.thresholds_kev),
        "frames_in_file": n,
        "frame_offset": offset,
        "scan_shape_from": source,
        "orientation": "file order (rosettasciio = ours[..., ::-1, :])",
    }
    if acq:
        meta["hdr"] = acq
    return DataCube(data, calibration, name=mib.stem, metadata=meta, source=str(mib))


def _detector_meta(hdr: MibHeader) -> dict[str, Any]:
    """The detector settings of the first frame header, as both readers' metadata list them."""
    return {
        "counter_depth_bits": hdr.counter_depth,
        "n_chips": hdr.n_chips,
        "chip_layout": hdr.layout,
        "exposure_s": hdr.exposure_s,
        "first_timestamp": hdr.timestamp,
    }


def _stored(mib: Path, hdr: MibHeader, n: int) -> np.ndarray:
    """The stored frames of one file, ``(n, k_y, k_x)`` (RAW: ``(n, 1, stored bytes)``)."""
    if hdr.is_raw:
        return frame_memmap(mib, offset=0, n_frames=n, frame_shape=(1, hdr.stored_bytes),
                            dtype=np.uint8, frame_header=hdr.header_bytes)  # fmt: skip
    return frame_memmap(mib, offset=0, n_frames=n, frame_shape=(hdr.height, hdr.width),
                        dtype=_DTYPES[hdr.pixel_type], frame_header=hdr.header_bytes)  # fmt: skip


def _cube(stacks: list[np.ndarray], hdr: MibHeader, offset: int, scan: tuple[int, int]):
    """``(sy, sx, k_y, k_x)`` from stored frame stacks after the trigger offset (RAW decoded)."""
    one = None
    if hdr.is_raw:

        def one(st, sc):
            return lazy_frames(st, sc, decode=lambda b: decode_raw(b, hdr), out_dtype=hdr.dtype,
                               out_frame_shape=hdr.frame_shape)  # fmt: skip

    return frames_with_offset(stacks, scan, offset, one)


def _read_multi(path, files: list[Path], *, scan_shape, allow_truncated, calibration,
                frame_offset) -> DataCube:  # fmt: skip
    """An acquisition saved as several ``.mib`` files (opened from its ``.hdr``)."""
    p = Path(path)
    hdrs, counts = [], []
    for f in files:
        h, n_f = validate(f, allow_truncated=allow_truncated)
        hdrs.append(h)
        counts.append(n_f)
    hdr = hdrs[0]
    if hdr.is_raw:
        raise FileFormatError(p, f"RAW (R64) acquisitions saved as several files ({len(files)}) are "
                              "not supported; open each .mib on its own")  # fmt: skip
    for f, h in zip(files[1:], hdrs[1:], strict=True):
        if (h.header_bytes, h.frame_shape, h.pixel_type, h.counter_depth) != (
            hdr.header_bytes, hdr.frame_shape, hdr.pixel_type, hdr.counter_depth,
        ):  # fmt: skip
            raise FileFormatError(
                f, f"its frames ({h.width} x {h.height} {h.pixel_type}, {h.counter_depth} bit) differ "
                f"from those of {files[0].name} ({hdr.width} x {hdr.height} {hdr.pixel_type})",
            )  # fmt: skip
    n = sum(counts)
    acq = read_hdr(p)
    expected = _hdr_int(acq, "Frames in Acquisition")
    if expected and n < expected and not allow_truncated:
        raise FileFormatError(
            p, f"truncated: it promises {expected} frames, its {len(files)} .mib files hold {n}",
            f"pass allow_truncated=True to open the {n} frames",
        )  # fmt: skip
    offset = check_frame_offset(p, frame_offset, n)
    fpt = _hdr_int(acq, "Frames per Trigger")
    n_eff = n - offset
    guess = (n_eff // fpt, fpt) if scan_shape is None and fpt and fpt > 1 and n_eff % fpt == 0 else None
    sy, sx = check_scan_shape(p, n_eff, scan_shape, guess=guess)
    data = _cube([_stored(f, hdr, c) for f, c in zip(files, counts, strict=True)], hdr, offset, (sy, sx))
    meta: dict[str, Any] = {
        "format": "Merlin MIB (RAW)" if hdr.is_raw else "Merlin MIB",
        "files": [f.name for f in files],
        "frames_per_file": counts,
        "frame_offset": offset,
        **_detector_meta(hdr),
        "scan_shape_from": "user" if scan_shape is not None else
                           ("hdr Frames per Trigger" if guess else "frames"),
        "hdr": acq,
    }  # fmt: skip
    return DataCube(data, calibration, name=p.stem, metadata=meta, source=str(p))
