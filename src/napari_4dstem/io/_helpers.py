"""Shared pieces of the detector readers: frame memmaps, scan-shape checks, safe sniffing.

Every reader here follows the same steps: ``detect`` (cheap, never raises), ``validate``
(header against file size, raising :class:`~napari_4dstem.errors.FileFormatError`) and
``read_datacube`` (lazy). The helpers keep the arithmetic and the error messages the same
across formats.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path

import numpy as np

from ..data._blockread import block_source
from ..errors import FileFormatError

__all__ = [
    "DEFAULT_SCAN_CHUNK",
    "check_scan_shape",
    "frame_memmap",
    "lazy_frames",
    "never_raises",
    "read_head",
]

# scan chunk used for decoded (dask) readers: about (8-16, 8-16, Qy, Qx) as the issue asks
DEFAULT_SCAN_CHUNK = 16


def never_raises(fn: Callable[[str], bool]) -> Callable[[str], bool]:
    """Decorate a ``detect(path)`` function so that any exception means "not this format"."""

    @wraps(fn)
    def wrapper(path) -> bool:
        try:
            return bool(fn(path))
        except Exception:
            return False

    return wrapper


def read_head(path: str | os.PathLike, n: int) -> bytes:
    """The first ``n`` bytes of a file (fewer if the file is shorter)."""
    with open(path, "rb") as fh:
        return fh.read(n)


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
    the end are ignored (Merlin and others often record one or two frames too many).
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
        if gy >= 1 and gx >= 1 and gy * gx <= n_frames:
            return gy, gx
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
    """Scan chunk ``(cy, cx)`` of about ``edge**2`` patterns: ``(edge, edge)`` for 2D scans,
    longer along x when the scan has fewer than ``edge`` rows (e.g. a ``(1, n)`` series)."""
    sy, sx = scan_shape
    cy = min(sy, edge)
    cx = min(sx, max(edge, edge * edge // cy))
    return cy, cx


def _split(n: int, b: int) -> tuple[int, ...]:
    full, rest = divmod(n, b)
    return (b,) * full + ((rest,) if rest else ())


def file_size(path: str | os.PathLike) -> int:
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(p, "no such file")
    return p.stat().st_size


def n_complete(size: int, offset: int, frame_bytes: int) -> tuple[int, int]:
    """``(complete frames, leftover bytes)`` after a file header of ``offset`` bytes."""
    if frame_bytes <= 0:
        return 0, max(0, size - offset)
    return divmod(max(0, size - offset), frame_bytes)


def prod(shape: Sequence[int]) -> int:
    return int(math.prod(int(s) for s in shape))
