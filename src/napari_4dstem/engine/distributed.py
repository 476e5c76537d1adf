"""The dask.distributed backend of :func:`~napari_4dstem.engine.driver.map_scan`.

One task per scan block; the tasks call the same kernels as the local engine, compiled
single-threaded (``parallel=False``), so a worker's threads are its parallelism. Where the
data comes from decides what travels:

- a file (a memory map of a raw/.npy file, an HDF5 dataset): each task carries only the path
  and its block's slices; the worker opens the file itself (once, then keeps it open) and
  reads its block, as on a cluster with a shared file system. Nothing but the small result
  goes back.
- numpy in RAM: the blocks are scattered to the workers (views, not copies; a remote worker
  gets the bytes it needs when they are pickled);
- other lazy arrays (zarr, dask): read by the workers through dask slicing.

All tasks are submitted in one message. ``dask.distributed`` is imported only here, only
when asked for.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from .blocks import (
    chunk_view_finders,
    find_chunk_views,
    read_rows,
    run_block,
    run_chunk_views,
    slice_scan_kwargs,
)
from .chunks import release_pages
from .jobs import Job, Progress

__all__ = ["file_source", "run_distributed"]


def _apply(block, kernel, row0, kwargs, scan_kwargs):
    return run_block(np.asarray(block), kernel, row0, False, kwargs, scan_kwargs)


def file_source(arr: Any) -> tuple | None:
    """How a worker can open ``arr`` itself, or None when it cannot.

    Parameters
    ----------
    arr : array-like
        The data :func:`run_distributed` maps over.

    Returns
    -------
    tuple or None
        ``("memmap", path, offset, dtype, shape, stamp)`` for a C-contiguous 4D memory map of a
        file (raw, .npy), ``("hdf5", path, dataset, chunk_cache_bytes, stamp)`` for an HDF5
        dataset; ``stamp`` (file size and modification time) keeps a worker from reusing a
        handle of a rewritten file. None for anything else.
    """
    if isinstance(arr, np.memmap) and getattr(arr, "filename", None):
        if arr.ndim != 4 or not arr.flags.c_contiguous:
            return None
        top = arr
        while isinstance(top.base, np.ndarray):
            top = top.base
        if not isinstance(top, np.memmap):
            return None
        # the file offset of arr's first byte: the map's offset plus arr's place in the map
        offset = int(top.offset) + int(arr.ctypes.data - top.ctypes.data)
        path = str(arr.filename)
        return ("memmap", path, offset, arr.dtype.str, tuple(arr.shape), _stamp(path))
    if type(arr).__module__.startswith("h5py") and hasattr(arr, "file"):
        path = str(arr.file.filename)
        # the reader's chunk cache: with HDF5's default 1 MiB, chunks larger than that are
        # read piecewise for every row selection, several times slower
        cache = int(arr.file.id.get_access_plist().get_cache()[2])
        return ("hdf5", path, str(arr.name), cache, _stamp(path))
    return None


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns)


# files opened by this worker process, by source (kept open: opening an HDF5 file per task
# would cost more than reading a block)
_OPEN: dict[tuple, Any] = {}
_OPEN_LOCK = threading.Lock()
_MAX_OPEN = 8


_ALLOCATOR_TUNED = False


def _tune_allocator() -> None:
    """Give a dask worker process glibc's usual large-buffer behaviour back (Linux only).

    dask's nanny starts worker processes with ``MALLOC_TRIM_THRESHOLD_=65536``. Setting any
    such tunable freezes glibc's mmap threshold at 128 KiB, so every buffer above it (HDF5's
    chunk buffers, each block read) is a fresh ``mmap`` whose pages fault in, zeroed, again:
    h5py reads ran 2.6-3.7x slower in the workers than in the client, and the distributed
    engine fell to 0.14-0.33x of the local one on EMD files. This sets the threshold to
    32 MiB, the ceiling glibc's own adaptive threshold reaches; trimming stays as dask set it.
    A threshold set by the user (``MALLOC_MMAP_THRESHOLD_``) is left alone.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return
    _ALLOCATOR_TUNED = True
    env = os.environ
    if "MALLOC_MMAP_THRESHOLD_" in env or not any(
        k in env for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
    ):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return  # not glibc: nothing to undo


def _open_source(src: tuple) -> Any:
    _tune_allocator()
    with _OPEN_LOCK:
        arr = _OPEN.get(src)
        if arr is not None:
            return arr
        try:
            if src[0] == "memmap":
                _, path, offset, dtype, shape, _s = src
                arr = np.memmap(path, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape)
            else:
                import h5py

                _, path, name, cache, _s = src
                arr = h5py.File(path, "r", rdcc_nbytes=cache)[name]
        except OSError as e:
            raise OSError(
                f"a dask worker cannot open {src[1]} ({e}); the workers must see the data file "
                "at the same path as the client"
            ) from e
        if len(_OPEN) >= _MAX_OPEN:
            _OPEN.pop(next(iter(_OPEN)))
        _OPEN[src] = arr
        return arr


def _apply_file(src, sy, sx, rows, kernel, kwargs, scan_kwargs, finders):
    """Worker side: read this block from the file and run the kernel on it.

    Worker side: read this block from the file and run the kernel on it. ``finders`` are the client's
    chunk-view finders (a list: sent by reference, they import their reader).
    """
    arr = _open_source(src)
    if rows.start == 0 and rows.stop == arr.shape[2]:
        direct = find_chunk_views(arr, finders)
        if direct is not None:  # whole chunks straight from the file's map, no copy
            y0, y1, _ = sy.indices(arr.shape[0])
            x0, x1, _ = sx.indices(arr.shape[1])
            parts = run_chunk_views(direct, sy, sx, kernel, kwargs, scan_kwargs)
            res = None
            for (dy, dx, _), part in parts:
                if res is None:
                    res = np.empty((y1 - y0, x1 - x0, *part.shape[2:]), part.dtype)
                res[dy, dx] = part
            direct.release([off for (_, _, off), _ in parts])
            return res
    block = read_rows(arr, sy, sx, rows, finders)
    try:
        return run_block(block, kernel, rows.start, False, kwargs, scan_kwargs)
    finally:
        release_pages(block)


def run_distributed(
    arr,
    kernel,
    out,
    blocks,
    rows: slice,
    kwargs,
    scan_kwargs,
    backend: Any,
    message: str,
    done_mask: np.ndarray | None = None,
) -> Job[None]:
    """Job: one task per scan block on a dask.distributed cluster, written into ``out``.

    Parameters
    ----------
    arr : array-like ``(scan_y, scan_x, k_y, k_x)``
        The data: opened by the workers themselves when :func:`file_source` can say how,
        scattered when in RAM, else wrapped as a dask array.
    kernel : callable
        The :func:`~napari_4dstem.engine.driver.map_scan` kernel (module-level, picklable).
    out : ndarray ``(scan_y, scan_x, *out_tail)``
        Where the blocks' results are written.
    blocks : list of (slice, slice)
        The scan blocks.
    rows : slice
        The detector rows read.
    kwargs : mapping
        Constant keyword arguments of the kernel.
    scan_kwargs : mapping of str to arrays ``(scan_y, scan_x, ...)``
        Per-pattern arguments (sliced to each block).
    backend : distributed.Client or str
        The client, or a scheduler address (then a client is made and closed here).
    message : str
        Text of the Progress steps.
    done_mask : bool ndarray ``(scan_y, scan_x)``, optional
        Set True where a block has been written (blocks finish in any order).

    Yields
    ------
    Progress
        One per block finished.

    Returns
    -------
    None
        The results are in ``out``; unfinished tasks are cancelled when the job is stopped.
    """
    from distributed import Client, as_completed

    own = isinstance(backend, str)
    client = Client(backend) if own else backend
    futures: list = []
    try:
        skw = [slice_scan_kwargs(scan_kwargs, sy, sx) for sy, sx in blocks]
        src = file_source(arr)
        in_memory = isinstance(arr, np.ndarray) and src is None
        if src is not None:
            futures = client.map(
                _apply_file,
                [src] * len(blocks),
                [sy for sy, _ in blocks],
                [sx for _, sx in blocks],
                [rows] * len(blocks),
                [kernel] * len(blocks),
                [kwargs] * len(blocks),
                skw,
                [list(chunk_view_finders())] * len(blocks),
                pure=False,
            )
        elif in_memory:
            # hash=False: hashing gigabytes for a key would cost more than the work
            parts = client.scatter([arr[sy, sx, rows] for sy, sx in blocks], hash=False)
            futures = client.map(
                _apply,
                parts,
                [kernel] * len(blocks),
                [rows.start] * len(blocks),
                [kwargs] * len(blocks),
                skw,
                pure=False,
            )
        else:
            import dask
            import dask.array as da

            if isinstance(arr, da.Array):
                d = arr
            else:
                by = blocks[0][0].stop - blocks[0][0].start
                bx = blocks[0][1].stop - blocks[0][1].start
                d = da.from_array(arr, chunks=(by, bx, *arr.shape[2:]), name=False, asarray=True)
            tasks = [
                dask.delayed(_apply, pure=False)(d[sy, sx, rows], kernel, rows.start, kwargs, s)
                for (sy, sx), s in zip(blocks, skw)
            ]
            futures = client.compute(tasks)
        index = {f.key: k for k, f in enumerate(futures)}
        total = len(blocks)
        for done, (fut, part) in enumerate(as_completed(futures, with_results=True)):
            sy, sx = blocks[index[fut.key]]
            out[sy, sx] = part
            if done_mask is not None:  # blocks finish in any order: mark what is written
                done_mask[sy, sx] = True
            yield Progress(done + 1, total, message)
        futures = []
    finally:
        if futures:
            client.cancel(futures)
        if own:
            client.close()
