"""Chunked streaming over the scan: how every per-pattern reduction reads a lazy DataCube.

Blocks are rectangles of the scan ``(scan_y, scan_x)`` with the whole detector, read in the
dataset's native dtype. Block sizes follow the storage chunks when the array has them, so that
each storage chunk is decompressed once.
"""

from __future__ import annotations

import math
import mmap
import os
import threading
import weakref
from collections.abc import Iterator

import numpy as np

from ..errors import FileFormatError

__all__ = [
    "block_slices",
    "dask_source",
    "default_scan_chunk",
    "iter_scan_blocks",
    "mapped_file",
    "native_chunks",
    "read_block",
    "read_mapped",
    "release_pages",
    "storage_chunks",
]

# target bytes per block: large enough to amortise per-call overhead, small enough for caches
_TARGET_BLOCK_BYTES = 32 * 2**20


def native_chunks(data) -> tuple[int, ...] | None:
    """Storage chunk shape of an h5py, zarr or dask array (None for numpy/memmap).

    Parameters
    ----------
    data : array-like
        Any array.

    Returns
    -------
    tuple of int or None
        dask's ``chunksize``, or h5py's/zarr's ``chunks`` when regular; None otherwise.
    """
    chunks = getattr(data, "chunksize", None)  # dask
    if chunks is None:
        chunks = getattr(data, "chunks", None)  # h5py / zarr
        if chunks is not None and not all(isinstance(c, int) for c in chunks):
            chunks = None
    return tuple(int(c) for c in chunks) if chunks is not None else None


def dask_source(d) -> object | None:
    """The one array a dask array reads, when it is a plain ``da.from_array`` of it (else None).

    Parameters
    ----------
    d : dask.array.Array
        The dask array.

    Returns
    -------
    array-like or None
        The source (an h5py dataset, a zarr array, a reader's array-like), or None.

    Notes
    -----
    ``from_array`` keeps its input in the graph under a layer named ``original-<name>`` (unless
    inlined); a graph of exactly that layer and the getter layer is a view of that array, and
    a slice of it is handed to the array's own ``__getitem__`` (only what the slice asks for is
    read). Anything more (a rechunk, a ``map_blocks`` decode) may read whole dask chunks.
    """
    try:
        layers = d.__dask_graph__().layers
    except AttributeError:
        return None
    if len(layers) != 2:
        return None
    found = [v for name, lay in layers.items() if str(name).startswith("original-") for v in lay.values()]
    if len(found) != 1:
        return None
    src = getattr(found[0], "value", found[0])  # a newer dask's DataNode wraps the array
    if not hasattr(src, "shape") or tuple(int(s) for s in src.shape) != tuple(int(s) for s in d.shape):
        return None
    return src


def storage_chunks(data) -> tuple[int, ...] | None:
    """The unit a read of ``data`` touches: its storage chunks, not dask's.

    Parameters
    ----------
    data : array-like
        numpy, memmap, h5py, zarr, dask, or a reader's array-like.

    Returns
    -------
    tuple of int or None
        None for data read at any position alone (numpy, memory maps, contiguous HDF5 datasets);
        ``(1, 1, k_y, k_x)`` for per-frame storage (a reader's array-like says so with a
        ``storage_chunks`` attribute: ARINA's frame stacks, Direct Electron MRC frames); h5py's or
        zarr's chunks; for a dask array, its source's storage chunks when it is a plain
        ``from_array`` view of one (the readers' dask arrays, a layer's dask view of an HDF5 file),
        else dask's ``chunksize`` (whole dask chunks may be computed for one position).
    """
    declared = getattr(data, "storage_chunks", _NOT_DECLARED)
    if declared is not _NOT_DECLARED:
        return None if declared is None else tuple(int(c) for c in declared)
    if isinstance(data, np.ndarray):
        return None
    if hasattr(data, "chunksize") and hasattr(data, "__dask_graph__"):
        src = dask_source(data)
        return storage_chunks(src) if src is not None else native_chunks(data)
    return native_chunks(data)


_NOT_DECLARED = object()


def default_scan_chunk(
    shape: tuple[int, int, int, int], itemsize: int, native: tuple[int, ...] | None = None
) -> tuple[int, int]:
    """Scan block ``(ny, nx)`` of about 32 MiB, a multiple of the native chunk where there is one.

    Parameters
    ----------
    shape : (int, int, int, int)
        ``(scan_y, scan_x, k_y, k_x)`` of the data.
    itemsize : int
        Bytes per detector pixel.
    native : tuple of int, optional
        The storage chunk shape (:func:`native_chunks`).

    Returns
    -------
    (int, int)
        The block shape, grown along ``scan_x`` first (scan rows are contiguous on disk for most
        formats), never larger than the scan.
    """
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


def block_slices(scan_shape: tuple[int, int], scan_chunk: tuple[int, int]) -> list[tuple[slice, slice]]:
    """The scan blocks ``(scan_y slice, scan_x slice)`` in raster order.

    Parameters
    ----------
    scan_shape : (int, int)
        ``(scan_y, scan_x)``.
    scan_chunk : (int, int)
        Block shape (values below 1 count as 1); edge blocks are smaller.

    Returns
    -------
    list of (slice, slice)
        The blocks, row by row.
    """
    sy, sx = scan_shape
    by, bx = (max(1, int(c)) for c in scan_chunk)
    return [
        (slice(y0, min(y0 + by, sy)), slice(x0, min(x0 + bx, sx))) for y0 in range(0, sy, by) for x0 in range(0, sx, bx)
    ]


def read_block(data, sy: slice, sx: slice) -> np.ndarray:
    """Read ``data[sy, sx]`` as a numpy array in its native dtype.

    Parameters
    ----------
    data : array-like ``(scan_y, scan_x, k_y, k_x)``
        numpy, memmap, h5py, zarr or dask.
    sy, sx : slice
        The scan block.

    Returns
    -------
    ndarray
        The block; a memory-mapped file's block is checked (or copied with ``pread``) by
        :func:`read_mapped`.
    """
    block = data[sy, sx]
    if hasattr(block, "compute"):
        block = block.compute()
    return read_mapped(block) if isinstance(block, np.ndarray) else np.asarray(block)


# ------------------------------------------------------------------------------------------
# memory-mapped files read with pread (#19)
# ------------------------------------------------------------------------------------------
# Touching a mapped page past the end of a file that another program truncated kills the
# process with SIGBUS (napari with it). Before the engine hands a kernel a block of a mapped
# file, it checks with fstat that the file still holds every byte of the block, and raises
# FileFormatError if not: a file shortened before the block is read is refused. A truncation
# *while* a kernel runs on the block (milliseconds) cannot be caught in Python; with
# SAFE_READS (environment NAPARI_4DSTEM_SAFE_READS=1) the engine never touches mapped pages:
# each block is copied out of the file with pread (a short read is a FileFormatError), which
# closes that window too, at the cost of one copy of the data (see docs/reliability.md).
SAFE_READS = os.environ.get("NAPARI_4DSTEM_SAFE_READS", "") not in ("", "0")


class MappedFile:
    """``pread`` access to the file behind a numpy memmap (or a view of one).

    Parameters
    ----------
    mm : mmap.mmap
        The map.
    name : str
        Path of the mapped file.
    map_start : int
        File offset of the map's first byte.

    Raises
    ------
    OSError
        When the file at ``name`` cannot be opened or is not the one mapped.
    """

    def __init__(self, mm: mmap.mmap, name: str, map_start: int):
        self.name = name
        self.map_start = map_start  # file offset of the map's first byte
        self.base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
        self.size = len(mm)
        self.fd = os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
        try:
            if not _same_file(self.fd, self.base):
                raise OSError("the file at this path is not the one mapped")
        except OSError:
            os.close(self.fd)
            raise
        weakref.finalize(mm, os.close, self.fd)

    def check(self, view: np.ndarray) -> None:
        """Raise FileFormatError unless the file still holds every byte of ``view``.

        Parameters
        ----------
        view : ndarray
            An array over this map.

        Raises
        ------
        FileFormatError
            When another program truncated the file below the end of ``view``.
        """
        if view.size == 0:
            return
        _, hi = _byte_bounds(view)
        need = self.map_start + hi - self.base
        size = os.fstat(self.fd).st_size
        if size < need:
            raise FileFormatError(
                self.name, f"was truncated while open: {size} bytes, {need} were mapped",
                "another program shortened the file; reopen it",
            )  # fmt: skip

    def read(self, view: np.ndarray) -> np.ndarray:
        """A copy of ``view`` (an array over this map), read from the file.

        Parameters
        ----------
        view : ndarray
            An array over this map.

        Returns
        -------
        ndarray
            Same shape, dtype and strides, in a new buffer.

        Raises
        ------
        ValueError
            When ``view`` lies outside the map.
        FileFormatError
            When the file is shorter than the map (a short read).
        """
        if view.size == 0:
            return np.empty(view.shape, view.dtype)
        lo, hi = _byte_bounds(view)
        if lo < self.base or hi > self.base + self.size:
            raise ValueError("view outside its map")
        buf = np.empty(hi - lo, np.uint8)
        pos, done = self.map_start + lo - self.base, 0
        mv = memoryview(buf)
        while done < len(buf):
            n = os.preadv(self.fd, [mv[done:]], pos + done)
            if n <= 0:
                size = os.fstat(self.fd).st_size
                raise FileFormatError(
                    self.name, f"was truncated while open: {size} bytes, {pos + len(buf)} were mapped",
                    "another program shortened the file; reopen it",
                )  # fmt: skip
            done += n
        return np.ndarray(view.shape, view.dtype, buffer=buf, offset=view.ctypes.data - lo, strides=view.strides)


def _same_file(fd: int, addr: int) -> bool:
    """Whether ``fd`` is the file mapped at ``addr``.

    Whether ``fd`` is the file mapped at ``addr`` (Linux: /proc/self/maps; elsewhere the path is trusted).
    """
    try:
        with open("/proc/self/maps", "rb") as fh:
            for line in fh:
                rng, _, _, dev, ino = line.split(None, 5)[:5]
                a, b = (int(x, 16) for x in rng.split(b"-"))
                if a <= addr < b:
                    st = os.fstat(fd)
                    major, minor = (int(x, 16) for x in dev.split(b":"))
                    return int(ino) == st.st_ino and (major, minor) == (os.major(st.st_dev), os.minor(st.st_dev))
    except (OSError, ValueError):
        return True
    return True


_MAPPED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MAPPED_LOCK = threading.Lock()


def mapped_file(arr) -> MappedFile | None:
    """The :class:`MappedFile` of a memmap-backed array.

    Parameters
    ----------
    arr : ndarray
        Any array; views of a memmap are followed to it.

    Returns
    -------
    MappedFile or None
        None for arrays in RAM, or a map whose file cannot be opened again (then its views are
        used as they are). One MappedFile per map.
    """
    top, depth = arr, 0
    while top is not None and not isinstance(top, np.memmap) and depth < 64:  # views of a memmap
        top, depth = getattr(top, "base", None), depth + 1
    mm = getattr(top, "_mmap", None)
    name = getattr(top, "filename", None)
    offset = getattr(top, "offset", None)
    if not isinstance(mm, mmap.mmap) or name is None or offset is None:
        return None
    with _MAPPED_LOCK:
        try:
            got = _MAPPED.get(mm)
            if got is None:
                start = int(offset) - int(offset) % mmap.ALLOCATIONGRANULARITY
                got = _MAPPED[mm] = MappedFile(mm, str(name), start)
        except (OSError, ValueError, TypeError):
            return None
        return got


def random_access_view(arr: np.ndarray) -> np.ndarray:
    """``arr`` (a view of a memory-mapped file) over a map of its own advised ``MADV_RANDOM``.

    Parameters
    ----------
    arr : ndarray
        Any array; only a view of a ``np.memmap`` is remapped.

    Returns
    -------
    ndarray
        The same values, shape and strides over a new read-only map of the same file whose page
        faults read only the pages touched; ``arr`` itself where it is not a view of a mapped file
        or the file cannot be mapped again (then nothing changes).

    Notes
    -----
    A page fault in a mapping with the default advice reads the kernel's read-around window
    (the device's ``read_ahead_kb``, 8 MiB on this machine's disk) around the page: a strided
    read of every k-th pattern (a few % of the file) read the whole 1.13 GiB file from the disk
    when it was not in the page cache (``benchmarks/bench_open_lazy.py --cold``, #15). The
    advice is set on this map alone: napari's map of the file and the engine's sequential passes
    keep their read-around. The new map is a ``np.memmap``, so :func:`read_mapped` checks it
    against the file's size as any other.
    """
    mf = mapped_file(arr)
    if mf is None or arr.size == 0 or not hasattr(mmap, "MADV_RANDOM"):
        return arr
    try:
        lo, hi = _byte_bounds(arr)
        start = mf.map_start + (lo - mf.base)  # file offset of the view's lowest byte
        first = start - start % mmap.ALLOCATIONGRANULARITY
        own = np.memmap(mf.name, dtype=np.uint8, mode="r", offset=first, shape=(start - first + hi - lo,))
        st, got = os.fstat(mf.fd), os.stat(mf.name)
        if (st.st_ino, st.st_dev) != (got.st_ino, got.st_dev):
            return arr  # the path now names another file: keep the view of the one opened
        own._mmap.madvise(mmap.MADV_RANDOM)
        data = arr.__array_interface__["data"][0]
        return np.ndarray(arr.shape, arr.dtype, buffer=own, offset=start - first + (data - lo), strides=arr.strides)
    except (OSError, ValueError, TypeError, AttributeError):
        return arr


def read_mapped(block: np.ndarray) -> np.ndarray:
    """The block to hand a kernel: checked, or copied, when it is a view of a memmap.

    Parameters
    ----------
    block : ndarray
        A scan block.

    Returns
    -------
    ndarray
        ``block`` itself when it is in RAM; for a view of a memmap, the view after checking that
        the file still holds it, or with :data:`SAFE_READS` a ``pread`` copy.

    Raises
    ------
    FileFormatError
        When the mapped file was truncated.
    """
    mf = mapped_file(block)
    if mf is None:
        return block
    if SAFE_READS:
        return mf.read(block)
    mf.check(block)
    return block


_byte_bounds = getattr(getattr(np.lib, "array_utils", np), "byte_bounds", None)


def _mmap_of(a: np.ndarray) -> mmap.mmap | None:
    base = a
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base


def release_pages(block) -> None:
    """Unmap a memory-mapped block's pages from this process once it has been processed.

    Parameters
    ----------
    block : array-like
        A processed block; anything that is not a view of an ``mmap`` (h5py, zarr, dask
        copies) is left alone.

    Returns
    -------
    None
        Pages that cannot be advised stay mapped (memory accounting only).

    Notes
    -----
    Streaming a memmap touches every page of the file, and mapped file pages count in the
    resident memory, so without this the RSS of a full-scan reduction grows to the size of the
    file. ``MADV_DONTNEED`` drops them from this process only; they stay in the page cache.
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


def iter_scan_blocks(data, scan_chunk: tuple[int, int] | None = None) -> Iterator[tuple[slice, slice, np.ndarray]]:
    """Yield ``(scan_y_slice, scan_x_slice, block)`` covering the whole scan in raster order.

    Parameters
    ----------
    data : array-like ``(scan_y, scan_x, k_y, k_x)``
        numpy, memmap, h5py, zarr or dask.
    scan_chunk : (int, int), optional
        Block shape (default :func:`default_scan_chunk`).

    Yields
    ------
    sy, sx : slice
        The block's place in the scan.
    block : ndarray
        Its patterns in the native dtype (:func:`read_block`); a memory-mapped block's pages
        are released after the consumer is done with it.
    """
    shape = tuple(int(s) for s in data.shape)
    if scan_chunk is None:
        scan_chunk = default_scan_chunk(shape, np.dtype(data.dtype).itemsize, native_chunks(data))
    for sy, sx in block_slices(shape[:2], scan_chunk):
        block = read_block(data, sy, sx)
        yield sy, sx, block
        release_pages(block)


def n_blocks(shape: tuple[int, ...], scan_chunk: tuple[int, int]) -> int:
    """Number of blocks of ``scan_chunk`` that cover the scan of ``shape``."""
    return math.ceil(shape[0] / scan_chunk[0]) * math.ceil(shape[1] / scan_chunk[1])
