"""Shared pieces of the detector readers: frame memmaps, scan-shape checks, safe sniffing.

Every reader here follows the same steps: ``detect`` (cheap, never raises), ``validate``
(header against file size, raising :class:`~napari_4dstem.errors.FileFormatError`) and
``read_datacube`` (lazy). The helpers keep the arithmetic and the error messages the same
across formats.
"""

from __future__ import annotations

import inspect
import math
import os
import stat
from collections.abc import Callable, Sequence
from functools import wraps

import numpy as np

from ..data._blockread import block_source
from ..data.calibration import Calibration
from ..errors import CalibrationError, FileFormatError

__all__ = [
    "DEFAULT_SCAN_CHUNK",
    "check_eager",
    "check_scan_shape",
    "frame_memmap",
    "header_calibration",
    "lazy_frames",
    "never_raises",
    "read_head",
    "read_small",
    "require_regular",
]

# scan chunk used for decoded (dask) readers: about (8-16, 8-16, Qy, Qx) as the issue asks
DEFAULT_SCAN_CHUNK = 16


# the numpydoc sections every format sniffer shares, added to its docstring by never_raises
_SNIFFER_DOC = """

Parameters
----------
path : str or path
    Any file (or folder).

Returns
-------
bool
    Whether this reader claims it; any exception while looking counts as no.
"""


def never_raises(fn: Callable[[str], bool]) -> Callable[[str], bool]:
    """Decorate a ``detect(path)`` function so that any exception means "not this format".

    Parameters
    ----------
    fn : callable
        ``fn(path) -> bool``, documented by its one-line summary (the shared Parameters and
        Returns sections are added here).

    Returns
    -------
    callable
        ``fn`` returning False where it would raise.
    """

    @wraps(fn)
    def wrapper(path) -> bool:
        try:
            return bool(fn(path))
        except Exception:
            return False

    wrapper.__doc__ = inspect.cleandoc(fn.__doc__ or "") + _SNIFFER_DOC
    return wrapper


def _open_regular(path: str | os.PathLike) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading without blocking; only a regular file (after symlinks) passes.

    ``O_NONBLOCK`` makes opening a FIFO return at once instead of waiting for a writer; the
    ``fstat`` of what was opened (not of the name, which could be swapped) then refuses FIFOs,
    devices (a symlink to ``/dev/zero``) and folders.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise FileFormatError(path, f"cannot be opened ({e.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileFormatError(path, "is not a regular file (a FIFO, device or folder)")
    return fd, st


def require_regular(path: str | os.PathLike) -> os.stat_result:
    """The ``stat`` of ``path``; FileFormatError unless it is a regular file. Never blocks."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise FileFormatError(path, f"cannot be opened ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileFormatError(path, "is not a regular file (a FIFO, device or folder)")
    return st


def _read_fd(fd: int, n: int) -> bytes:
    parts, left = [], n
    while left > 0:
        b = os.read(fd, min(left, 1 << 20))
        if not b:
            break
        parts.append(b)
        left -= len(b)
    return b"".join(parts)


#: the first 8 bytes of every HDF5 file (a superblock at offset 0: what our HDF5 sniffers check first)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def read_head(path: str | os.PathLike, n: int) -> bytes:
    """The first ``n`` bytes of a regular file (fewer if it is shorter).

    The first ``n`` bytes of a regular file (fewer if it is shorter). Never blocks on a FIFO and never reads a
    device: both raise FileFormatError.
    """
    fd, _ = _open_regular(path)
    try:
        return _read_fd(fd, n)
    finally:
        os.close(fd)


def read_small(path: str | os.PathLike, limit: int, what: str = "header") -> bytes:
    """The whole of a small regular file (a sidecar header).

    The whole of a small regular file (a sidecar header); FileFormatError when it is larger than ``limit``
    bytes, not a regular file, or unreadable.
    """
    fd, st = _open_regular(path)
    try:
        if st.st_size > limit:
            raise FileFormatError(path, f"too large for a {what}: {st.st_size} bytes (at most {limit})")
        data = _read_fd(fd, limit + 1)
    except OSError as e:
        raise FileFormatError(path, f"cannot be read ({e.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileFormatError(path, f"too large for a {what} (grew while being read)")
    return data


def check_eager(path: str | os.PathLike, nbytes: int, what: str) -> None:
    """Refuse to read ``nbytes`` into memory for ``what`` when the file is far smaller.

    Refuse to read ``nbytes`` into memory for ``what`` when that is more than twice the size of the file it
    comes from (plus 1 MiB): a small file cannot make us allocate gigabytes.
    """
    try:
        size = os.stat(path).st_size
    except OSError:
        size = 0
    if int(nbytes) > 2 * size + 2**20:
        raise FileFormatError(
            path, f"declares {int(nbytes)} bytes for {what}, more than twice the file's "
            f"{size} bytes: corrupt or crafted",
        )  # fmt: skip


def header_calibration(**kw) -> Calibration:
    """The calibration a file's header gives, or the default one where that is not valid.

    A header's steps and energies are advice: a value :class:`Calibration` refuses (zero,
    negative, not finite) must not keep the data from opening, so the file opens
    uncalibrated instead, for the user to calibrate.

    Parameters
    ----------
    **kw
        Keyword arguments of :class:`Calibration` read from the header.

    Returns
    -------
    Calibration
        ``Calibration(**kw)``, or ``Calibration()`` where that raises CalibrationError.
    """
    try:
        return Calibration(**kw)
    except CalibrationError:
        return Calibration()


def check_scan_shape(
    path: str | os.PathLike,
    n_frames: int,
    scan_shape: Sequence[int] | None,
    *,
    guess: tuple[int, int] | None = None,
    what: str = "frames",
) -> tuple[int, int]:
    """The scan shape ``(scan_y, scan_x)`` for ``n_frames`` frames.

    ``scan_shape`` (given by the user) wins; then ``guess`` (from headers); then ``(1, n)``.
    A user shape that does not cover the frames raises a FileFormatError with the fix.
    When the user shape has fewer positions than the file has frames, the extra frames at
    the end are ignored (Merlin and others often record one or two frames too many): the user
    asked for it. A shape from a header must account for every frame: one that holds fewer
    positions would drop frames silently (an edited or corrupt header), so it raises.
    """
    if scan_shape is not None:
        try:
            sy, sx = (int(v) for v in scan_shape)
        except (TypeError, ValueError):
            raise FileFormatError(
                path, f"scan_shape must be two integers (scan_y, scan_x), got {scan_shape!r}"
            ) from None
        if sy < 1 or sx < 1:
            raise FileFormatError(path, f"scan_shape must be positive, got {(sy, sx)}")
        if sy * sx > n_frames:
            raise FileFormatError(
                path,
                f"scan_shape {(sy, sx)} needs {sy * sx} {what} but the file has {n_frames}",
                f"pass a scan_shape=(ny, nx) with ny * nx <= {n_frames}",
            )
        return sy, sx
    if guess is not None:
        gy, gx = int(guess[0]), int(guess[1])
        if gy >= 1 and gx >= 1 and gy * gx == n_frames:
            return gy, gx
        if gy >= 1 and gx >= 1 and gy * gx < n_frames:
            raise FileFormatError(
                path, f"the header gives a {gy} x {gx} scan ({gy * gx} {what}) but the file "
                f"holds {n_frames} {what}",
                f"pass scan_shape=({gy}, {gx}) to open the first {gy * gx}, or another shape",
            )  # fmt: skip
    if n_frames < 1:
        raise FileFormatError(path, f"holds no complete {what}")
    return 1, n_frames


def frame_memmap(
    path: str | os.PathLike,
    *,
    offset: int,
    n_frames: int,
    frame_shape: tuple[int, int],
    dtype: np.dtype,
    frame_header: int = 0,
    frame_footer: int = 0,
) -> np.ndarray:
    """Read-only view ``(n_frames, k_y, k_x)`` of frames with per-frame headers/footers skipped.

    A structured memmap dtype with a header field, a frame field and a footer field lets the
    frames be viewed without copying; the returned array is a strided view of the memmap.
    """
    dtype = np.dtype(dtype)
    fields = []
    if frame_header:
        fields.append(("h", f"V{frame_header}"))
    fields.append(("f", dtype, tuple(frame_shape)))
    if frame_footer:
        fields.append(("t", f"V{frame_footer}"))
    rec = np.dtype(fields)
    mm = np.memmap(path, dtype=rec, mode="r", offset=offset, shape=(n_frames,))
    return mm["f"]


def lazy_frames(
    frames: np.ndarray,
    scan_shape: tuple[int, int],
    *,
    decode: Callable[[np.ndarray], np.ndarray] | None = None,
    out_dtype: np.dtype | None = None,
    out_frame_shape: tuple[int, int] | None = None,
    scan_chunk: int = DEFAULT_SCAN_CHUNK,
):
    """4D view ``(scan_y, scan_x, k_y, k_x)`` of the first ``sy * sx`` frames.

    Without ``decode`` this is a zero-copy numpy view (the fastest thing to stream). With
    ``decode`` (a function mapping a ``(n, ...)`` stack of stored frames to decoded frames)
    it is a dask array with chunks ``(scan_chunk, scan_chunk, k_y, k_x)``, decoded on read.
    """
    sy, sx = scan_shape
    n = sy * sx
    if decode is None:
        return frames[:n].reshape(sy, sx, *frames.shape[1:])
    import dask.array as da

    stored = frames[:n].reshape(sy, sx, *frames.shape[1:])
    out_frame_shape = tuple(out_frame_shape or frames.shape[1:])
    by, bx = scan_chunks((sy, sx), scan_chunk)
    chunks = (
        _split(sy, by),
        _split(sx, bx),
        (out_frame_shape[0],),
        (out_frame_shape[1],),
    )
    src = da.from_array(
        block_source(stored), chunks=(by, bx, *stored.shape[2:]), asarray=True, fancy=False,
        name=False, meta=np.empty((0,) * 4, dtype=stored.dtype),
    )  # fmt: skip

    def _block(b):
        flat = b.reshape(-1, *b.shape[2:])
        out = decode(flat)
        return out.reshape(b.shape[0], b.shape[1], *out_frame_shape)

    dt = np.dtype(out_dtype or frames.dtype)
    return src.map_blocks(_block, dtype=dt, chunks=chunks, meta=np.empty((0,) * 4, dtype=dt))


def scan_chunks(scan_shape: tuple[int, int], edge: int = DEFAULT_SCAN_CHUNK) -> tuple[int, int]:
    """Scan chunk ``(cy, cx)`` of about ``edge**2`` patterns.

    Scan chunk ``(cy, cx)`` of about ``edge**2`` patterns: ``(edge, edge)`` for 2D scans, longer along x when
    the scan has fewer than ``edge`` rows (e.g. a ``(1, n)`` series).
    """
    sy, sx = scan_shape
    cy = min(sy, edge)
    cx = min(sx, max(edge, edge * edge // cy))
    return cy, cx


def _split(n: int, b: int) -> tuple[int, ...]:
    full, rest = divmod(n, b)
    return (b,) * full + ((rest,) if rest else ())


def file_size(path: str | os.PathLike) -> int:
    return require_regular(path).st_size


def n_complete(size: int, offset: int, frame_bytes: int) -> tuple[int, int]:
    """``(complete frames, leftover bytes)`` after a file header of ``offset`` bytes."""
    if frame_bytes <= 0:
        return 0, max(0, size - offset)
    return divmod(max(0, size - offset), frame_bytes)


def prod(shape: Sequence[int]) -> int:
    return int(math.prod(int(s) for s in shape))
