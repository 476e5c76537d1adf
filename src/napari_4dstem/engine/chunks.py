"""Chunked streaming over the scan: how every per-pattern reduction reads a lazy DataCube.

Blocks are rectangles of the scan ``(scan_y, scan_x)`` with the whole detector, read in the
dataset's native dtype. Block sizes follow the storage chunks when the array has them, so that
each storage chunk is decompressed once.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterator

import numpy as np

__all__ = ["default_scan_chunk", "iter_scan_blocks", "native_chunks", "read_block", "release_pages"]

# target bytes per block: large enough to amortise per-call overhead, small enough for caches
_TARGET_BLOCK_BYTES = 32 * 2**20


def native_chunks(data) -> tuple[int, ...] | None:
    """Storage chunk shape of an h5py, zarr or dask array (None for numpy/memmap)."""
    chunks = getattr(data, "chunksize", None)  # dask
    if chunks is None:
        chunks = getattr(data, "chunks", None)  # h5py / zarr
        if chunks is not None and not all(isinstance(c, int) for c in chunks):
            chunks = None
    return tuple(int(c) for c in chunks) if chunks is not None else None


def default_scan_chunk(
    shape: tuple[int, int, int, int], itemsize: int, native: tuple[int, ...] | None = None
) -> tuple[int, int]:
    """Scan block ``(ny, nx)`` of about 32 MiB, a multiple of the native chunk where there is one."""
    sy, sx, qy, qx = shape
    frame = max(1, qy * qx * itemsize)
    n = max(1, _TARGET_BLOCK_BYTES // frame)
    if native is not None and len(native) == 4:
        cy, cx = max(1, native[0]), max(1, native[1])
        per_chunk = cy * cx
        k = max(1, n // per_chunk)
        # grow along x first (rows of the scan are contiguous on disk for most formats)
        mx = min(max(1, math.ceil(sx / cx)), k)
        my = max(1, k // mx)
        return (min(sy, my * cy), min(sx, mx * cx))
    bx = min(sx, n)
    by = min(sy, max(1, n // bx))
    return (by, bx)


def read_block(data, sy: slice, sx: slice) -> np.ndarray:
    """Read ``data[sy, sx]`` as a numpy array in its native dtype."""
    block = data[sy, sx]
    if hasattr(block, "compute"):
        block = block.compute()
    return np.asarray(block)


_byte_bounds = getattr(getattr(np.lib, "array_utils", np), "byte_bounds", None)


def _mmap_of(a: np.ndarray) -> mmap.mmap | None:
    base = a
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base


def release_pages(block) -> None:
    """Unmap a memory-mapped block's pages from this process once it has been processed.

    Streaming a memmap touches every page of the file, and mapped file pages count in the
    resident memory, so without this the RSS of a full-scan reduction grows to the size of the
    file. ``MADV_DONTNEED`` drops them from this process only; they stay in the page cache.
    Does nothing for data that is not a view of an ``mmap`` (h5py, zarr, dask copies).
    """
    if not isinstance(block, np.ndarray) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    mm = _mmap_of(block)
    if mm is None or block.size == 0:
        return
    try:
        base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
        lo, hi = _byte_bounds(block)
        page = mmap.PAGESIZE
        start = (lo - base) // page * page
        stop = min(len(mm), -(-(hi - base) // page) * page)
        if stop > start:
            mm.madvise(mmap.MADV_DONTNEED, start, stop - start)
    except (ValueError, OSError, AttributeError):
        return  # a mapping we cannot advise: the pages stay mapped (memory accounting only)


def iter_scan_blocks(
    data, scan_chunk: tuple[int, int] | None = None
) -> Iterator[tuple[slice, slice, np.ndarray]]:
    """Yield ``(scan_y_slice, scan_x_slice, block)`` covering the whole scan in raster order."""
    shape = tuple(int(s) for s in data.shape)
    if scan_chunk is None:
        scan_chunk = default_scan_chunk(shape, np.dtype(data.dtype).itemsize, native_chunks(data))
    by, bx = (max(1, int(c)) for c in scan_chunk)
    for y0 in range(0, shape[0], by):
        for x0 in range(0, shape[1], bx):
            sy, sx = slice(y0, min(y0 + by, shape[0])), slice(x0, min(x0 + bx, shape[1]))
            block = read_block(data, sy, sx)
            yield sy, sx, block
            release_pages(block)


def n_blocks(shape: tuple[int, ...], scan_chunk: tuple[int, int]) -> int:
    return math.ceil(shape[0] / scan_chunk[0]) * math.ceil(shape[1] / scan_chunk[1])
