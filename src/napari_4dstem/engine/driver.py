"""The engine driver: map a per-chunk (or per-pattern) kernel over the scan of any DataCube.

A *kernel* is a plain, module-level function

    kernel(block, *, row0, parallel, **kwargs, **scan_kwargs) -> ndarray (ny, nx, *out_tail)

called on a scan block ``(ny, nx, h, k_x)`` in the dataset's native dtype, holding detector
rows ``row0 : row0 + h`` (all rows unless the caller asks for a window, so small detectors read
only the rows they need). ``scan_kwargs`` are arrays over the scan ``(scan_y, scan_x, ...)``
that the driver slices to the block (e.g. a per-pattern descan shift). ``parallel`` tells the
kernel whether it owns all local cores (local engine) or one (dask.distributed worker thread).

The backend is a parameter, never a copy of the code:

- ``None`` or ``"local"``: in-process, one block at a time, split into pieces that the numba
  kernels (``nogil``) process on a pool of threads, one per core; blocks of lazy files (h5py,
  zarr, dask) are read one ahead in a background thread. ``"prange"`` runs each block as one
  numba ``parallel`` call instead (as fast on an idle machine, slower when other processes
  share the cores), ``"serial"`` on one core.
- a ``distributed.Client``, or a scheduler address string (``"tcp://host:8786"``): one task per
  block on the cluster, the same kernels compiled single-threaded on the workers.

:func:`map_scan` is a job (a generator yielding :class:`~napari_4dstem.engine.jobs.Progress`,
cancellable between blocks, and in the threads mode also every ``WAIT_STEP_S`` while a block runs)
returning the assembled ``(scan_y, scan_x, *out_tail)`` array.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import numpy as np

from ..errors import DataShapeError
from . import chunks
from .blocks import find_chunk_views, read_rows, run_block, run_chunk_views, slice_scan_kwargs
from .chunks import (
    _TARGET_BLOCK_BYTES,
    block_slices,
    default_scan_chunk,
    mapped_file,
    native_chunks,
    release_pages,
)
from .jobs import PARTIAL_EVERY_S, WAIT_STEP_S, Job, PartialMap, Progress

__all__ = ["PerPattern", "block_slices", "is_distributed", "map_scan"]


def is_distributed(backend: Any) -> bool:
    """Whether ``backend`` names a dask.distributed cluster (a Client or an address).

    Parameters
    ----------
    backend : None, str or object
        A :func:`map_scan` backend.

    Returns
    -------
    bool
        False for None and the in-process names (``"local"``, ``"threads"``, ``"prange"``,
        ``"serial"``); True for any other string (a scheduler address) or an object from the
        ``distributed`` package.
    """
    if backend is None or backend in ("local", "threads", "prange", "serial"):
        return False
    if isinstance(backend, str):
        return True
    return type(backend).__module__.split(".")[0] == "distributed"


def _raw(data: Any) -> Any:
    # a DataCube's array, or the array itself
    return getattr(data, "data", data) if hasattr(data, "calibration") else data


def map_scan(
    data: Any,
    kernel: Callable[..., np.ndarray],
    *,
    out_tail: tuple[int, ...] = (),
    out_dtype: Any = np.float64,
    kwargs: Mapping[str, Any] | None = None,
    scan_kwargs: Mapping[str, np.ndarray] | None = None,
    k_rows: tuple[int, int] | None = None,
    k_rows_exact: bool = True,
    split_blocks: bool = True,
    scan_chunk: tuple[int, int] | None = None,
    backend: Any = None,
    message: str = "",
    partial: Callable[[np.ndarray, np.ndarray], PartialMap] | None = None,
) -> Job[np.ndarray]:
    """Job: apply ``kernel`` to every scan block and assemble the result over the scan.

    Parameters
    ----------
    data : DataCube or 4D array-like ``(scan_y, scan_x, k_y, k_x)``
        numpy, memmap, h5py, zarr or dask; read block by block in its native dtype.
    kernel : callable
        ``kernel(block, *, row0, parallel, **kwargs, **scan_kwargs)`` returning a float array
        ``(ny, nx, *out_tail)``. Must be a module-level function for the distributed backend.
    out_tail : tuple of int
        Trailing shape of the per-pattern result (``()`` for a scalar per pattern).
    out_dtype : dtype
        dtype of the assembled result (default float64).
    kwargs : mapping
        Constant keyword arguments of the kernel (masks, parameters).
    scan_kwargs : mapping of str to arrays ``(scan_y, scan_x, ...)``
        Per-pattern arguments, sliced to each block.
    k_rows : (int, int), optional
        Read only detector rows ``k_rows[0] : k_rows[1]`` (the kernel gets ``row0``).
    k_rows_exact : bool
        With False, ``k_rows`` is what the kernel needs and the driver may hand it more rows
        (with the matching ``row0``): kernels that index absolute rows and stay inside their
        own range say so, and then get in-memory numpy blocks with whole patterns, which
        numba sees as C-contiguous and vectorises about twice as well as a row window.
    split_blocks : bool
        Local engine: split each block over the thread pool (numba kernels). False calls the
        kernel once per block with ``parallel=True``, for kernels that are parallel
        themselves (e.g. a BLAS product).
    scan_chunk : (int, int), optional
        Scan block shape; by default about 32 MiB, aligned with the storage chunks.
    backend : None, "local", "prange", "serial", distributed.Client or str
        Where to run (see the module docstring).
    message : str
        Text of the :class:`Progress` steps.
    partial : callable, optional
        ``partial(out, done) -> PartialMap``: the map so far, from the output array and the
        boolean scan mask of the blocks written; attached to a :class:`Progress` at most every
        ``PARTIAL_EVERY_S`` and at the last block (maps filling in while the job runs).

    Yields
    ------
    Progress
        One per block written (``done`` = blocks written, ``message``), with the partial map when
        ``partial`` is given; in the local threads mode also a waiting step (the same ``done``, no
        map) every ``WAIT_STEP_S`` while a block's pool calls run, so a Cancel (the job closed at a
        step) does not wait for a slow block.

    Returns
    -------
    ndarray ``(scan_y, scan_x, *out_tail)`` of ``out_dtype``
        The generator's return value: the kernel's output for every pattern.

    Raises
    ------
    DataShapeError
        When ``data`` is not 4D, ``k_rows`` lies outside the detector, or a scan argument
        has another scan shape.
    ValueError
        For an unknown ``backend``.
    """
    arr = _raw(data)
    shape = tuple(int(s) for s in arr.shape)
    if len(shape) != 4:
        raise DataShapeError(f"data must be 4D (scan_y, scan_x, k_y, k_x), got shape {shape}")
    qy = shape[2]
    r0, r1 = (0, qy) if k_rows is None else (max(0, int(k_rows[0])), min(qy, int(k_rows[1])))
    if r1 <= r0:
        raise DataShapeError(f"detector rows {k_rows} are outside the detector of {qy} rows")
    scan_kwargs = dict(scan_kwargs or {})
    for k, v in scan_kwargs.items():
        if tuple(v.shape[:2]) != shape[:2]:
            raise DataShapeError(f"{k} has scan shape {v.shape[:2]}, the data {shape[:2]}")
    kwargs = dict(kwargs or {})
    if scan_chunk is None:
        itemsize = np.dtype(arr.dtype).itemsize
        scan_chunk = default_scan_chunk(shape, itemsize, native_chunks(arr))
        if is_distributed(backend):
            # fewer, larger tasks: per-task overhead on a cluster
            scan_chunk = _task_chunk(shape, itemsize * (r1 - r0) / qy, scan_chunk)
        elif not split_blocks and isinstance(arr, np.ndarray) and not (partial is not None and mapped_file(arr)):
            # a self-parallel kernel (BLAS) on data in RAM: its thread wake-ups cost
            # milliseconds per call on a busy machine, so two calls for the whole scan (at most
            # 1 GiB each); still cancellable in between. Not on a mapped file whose map fills in
            # (partial): there the default blocks, read from the file as they are computed
            scan_chunk = _task_chunk(shape, itemsize * (r1 - r0) / qy, scan_chunk, parts=2, cap=2**30)
        elif isinstance(arr, np.ndarray) and r1 - r0 < qy:
            # data in RAM, a kernel that reads only some detector rows: blocks of about the
            # default size in bytes *read*, not in whole patterns (a small detector otherwise
            # pays per-block overhead on blocks that take a fraction of a millisecond)
            scan_chunk = _task_chunk(shape, itemsize * (r1 - r0) / qy, scan_chunk, parts=1, cap=_TARGET_BLOCK_BYTES)
    blocks = block_slices(shape[:2], scan_chunk)
    out = np.empty(shape[:2] + tuple(out_tail), dtype=out_dtype)
    rows = slice(r0, r1)
    if not k_rows_exact and isinstance(arr, np.ndarray) and arr.flags.c_contiguous:
        # whole patterns (a view, nothing is read): C-contiguous blocks for numba; a memmap
        # still reads only the pages of the rows the kernel touches
        rows = slice(0, qy)
    chunked = None
    local_threads = split_blocks and backend in (None, "local", "threads")
    if not k_rows_exact and (is_distributed(backend) or local_threads):
        # chunk views a reader registered (uncompressed whole-pattern HDF5 chunks): the kernel
        # runs on views of whole chunks in the file's map, as on a memmap (no copy; it touches
        # only the rows it needs)
        chunked = find_chunk_views(arr)
        if chunked is not None:
            rows = slice(0, qy)
    done = np.zeros(shape[:2], bool) if partial is not None else None
    if is_distributed(backend):
        from .distributed import run_distributed

        yield from _with_partial(
            run_distributed(arr, kernel, out, blocks, rows, kwargs, scan_kwargs, backend, message, done_mask=done),
            out,
            blocks,
            partial,
            done,
            ordered=False,
        )
    else:
        mode = "threads" if backend in (None, "local", "threads") else backend
        if mode == "threads" and not split_blocks:
            mode = "prange"
        if mode not in ("threads", "prange", "serial"):
            raise ValueError(
                f"backend must be None/'local', 'prange', 'serial', a distributed.Client or a "
                f"scheduler address, got {backend!r}"
            )
        if chunked is not None and mode == "threads":
            job = _run_chunks(chunked, kernel, out, blocks, kwargs, scan_kwargs, message)
        else:
            job = _run_local(arr, kernel, out, blocks, rows, kwargs, scan_kwargs, message, mode)
        # the local modes write the blocks in raster order: Progress.done blocks are written
        yield from _with_partial(job, out, blocks, partial, done, ordered=True)
    return out


def _with_partial(job: Job[None], out, blocks, partial, done, *, ordered: bool) -> Job[None]:
    """``job``'s steps, with the map so far attached.

    ``job``'s steps, with the map so far attached (``partial``) at most every ``PARTIAL_EVERY_S`` and at the
    last step, and only where a block was written since the last map (not to the waiting steps of
    :func:`_pipelined`). ``ordered``: ``Progress.done`` counts the blocks written in order (else the job
    marks ``done`` itself).
    """
    if partial is None:
        yield from job
        return
    last = -math.inf
    marked = 0
    shown = 0  # blocks written when the last map was attached (none yet: no map)
    try:
        for p in job:
            if ordered:
                for sy, sx in blocks[marked : p.done]:
                    done[sy, sx] = True
                marked = max(marked, p.done)
            now = time.perf_counter()
            # a waiting step (no block written since the last map) carries none
            if p.done > shown and (now - last >= PARTIAL_EVERY_S or p.done >= p.total):
                p = dataclasses.replace(p, partial=partial(out, done))
                last = time.perf_counter()
                shown = p.done
            yield p
    finally:
        job.close()  # a cancelled job: the pool's queued blocks are dropped at once


def _run_chunks(direct, kernel, out, blocks, kwargs, scan_kwargs, message) -> Job[None]:
    """The threads mode on a :class:`~.blocks.ChunkViews` source: one pool task per chunk."""

    def queued():
        for sy, sx in blocks:
            skw = slice_scan_kwargs(scan_kwargs, sy, sx)
            futs = run_chunk_views(direct, sy, sx, kernel, kwargs, skw, submit=_pool().submit)
            release = functools.partial(direct.release, [off for (*_, off), _ in futs])
            yield out[sy, sx], [((dy, dx), fut) for (dy, dx, _), fut in futs], release, True

    yield from _pipelined(queued(), len(blocks), message)


def _pipelined(queued, total: int, message: str) -> Job[None]:
    """Collect queued blocks in order.

    Collect queued blocks in order: ``queued`` yields ``(dst, [(index into dst, future)], done, ahead)`` per
    block, ``done()`` running once the block is written. With ``ahead`` the block is collected only after the
    next one is queued, so the pool never idles at a block boundary; without (work already done in this
    thread), at once. Steps: ``Progress(blocks written, total)`` once per block written, and while a block's
    pool calls still run, a waiting step with the same count every ``WAIT_STEP_S`` (a Cancel point each: a
    block's time depends on the load and on a first call's compile, so no block size keeps a step short;
    Orientation's Run on all once waited 0.59 s for its disk-detection block at load 8). A job closed early
    (cancelled) drops the queued pool calls and returns without waiting for the running ones (at most one
    piece a pool thread, left to end in its thread, its result dropped).
    """
    pending: list = []
    written = 0

    def wait() -> Iterator[Progress]:
        # each future's own wait, as ``result()`` (``concurrent.futures.wait`` cost ~0.1 ms a block
        # more, measured on blocks of 1 ms), with a step whenever WAIT_STEP_S has passed without one
        step_at = time.perf_counter() + WAIT_STEP_S
        for _, fut in pending[0][1]:
            while True:
                try:
                    fut.exception(timeout=max(0.0, step_at - time.perf_counter()))
                    break
                except FutureTimeout:
                    yield Progress(written, total, message)
                    step_at = time.perf_counter() + WAIT_STEP_S

    def collect() -> Progress:
        nonlocal written
        dst, futs, done, _ = pending.pop(0)
        for idx, fut in futs:
            dst[idx] = fut.result()
        done()
        written += 1
        return Progress(written, total, message)

    try:
        for item in queued:
            pending.append(item)
            while len(pending) > (1 if item[3] else 0):
                yield from wait()
                yield collect()
        while pending:
            yield from wait()
            yield collect()
    finally:
        queued.close()  # stops the block reader of a lazy source
        # the queued pool calls are dropped; those running end on their own in the pool's threads
        # (a numba kernel cannot be stopped, and a first call compiling took 46 s once: waited
        # for here, Cancel waited for it); they write nothing, their results are dropped
        for _, group, _, _ in pending:
            for _, fut in group:
                fut.cancel()


def _task_chunk(
    shape, bytes_per_px: float, chunk: tuple[int, int], *, parts: int = 8, cap: int = 2**28
) -> tuple[int, int]:
    """A larger scan block, so per-call overhead stays small next to the work.

    A larger scan block: whole scan rows (when a block of ``chunk[0]`` rows fits the cap), then whole
    multiples of ``chunk`` along scan_y, about ``1/parts`` of the data read (at least the default block, at
    most ``cap`` bytes), so per-call overhead stays small next to the work. (Storage chunks that split scan_x,
    e.g. EMD's (8, 8, k, k), had left tasks of one default block: 60 tasks of ~2 ms on a 2 GB file, mostly
    dask overhead.)
    """
    px = shape[2] * shape[3] * bytes_per_px
    if chunk[1] < shape[1]:
        if chunk[0] * shape[1] * px > cap:
            return chunk
        chunk = (chunk[0], shape[1])
    total = shape[0] * shape[1] * px
    per_block = chunk[0] * chunk[1] * px
    target = min(max(total / parts, per_block), cap)
    k = max(1, int(target // max(per_block, 1)))
    return (min(shape[0], chunk[0] * k), chunk[1])


def _iter_blocks(arr, blocks, rows) -> Iterator[tuple[slice, slice, np.ndarray]]:
    if isinstance(arr, np.ndarray) and not (chunks.SAFE_READS and mapped_file(arr)):
        # in RAM, or a mapped file: views (checked against the file's size)
        for sy, sx in blocks:
            yield sy, sx, read_rows(arr, sy, sx, rows)
        return
    # lazy storage (and mapped files read with pread): read the next block while the current
    # one is computed
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="4dstem-read") as pool:
        nxt = pool.submit(read_rows, arr, *blocks[0], rows) if blocks else None
        for k, (sy, sx) in enumerate(blocks):
            block = nxt.result()
            nxt = pool.submit(read_rows, arr, *blocks[k + 1], rows) if k + 1 < len(blocks) else None
            yield sy, sx, block


_POOL: ThreadPoolExecutor | None = None
# pieces per pool thread of each block in threads mode (more: better balance under load)
PIECES = 4


def n_threads() -> int:
    """Threads of the local engine: numba's thread count (all cores unless limited)."""
    import numba

    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=n_threads(), thread_name_prefix="4dstem-engine")
    return _POOL


def _pieces(ny: int, nx: int, n: int) -> list[tuple[slice, slice]]:
    """Split a ``(ny, nx)`` block into about ``n`` rectangles of whole scan rows or row parts."""
    if ny >= n:
        edges = np.linspace(0, ny, n + 1).astype(int)
        return [(slice(a, b), slice(0, nx)) for a, b in itertools.pairwise(edges) if b > a]
    per_row = math.ceil(n / ny)
    edges = np.linspace(0, nx, min(per_row, nx) + 1).astype(int)
    return [(slice(i, i + 1), slice(a, b)) for i in range(ny) for a, b in itertools.pairwise(edges)]


def _run_local(arr, kernel, out, blocks, rows, kwargs, scan_kwargs, message, mode) -> Job[None]:
    threads = n_threads() if mode == "threads" else 1

    def queued():
        for sy, sx, block in _iter_blocks(arr, blocks, rows):
            skw = slice_scan_kwargs(scan_kwargs, sy, sx)
            done = functools.partial(release_pages, block)
            if threads == 1 or block.shape[0] * block.shape[1] < 2 * threads:
                fut: Future = Future()
                fut.set_result(run_block(block, kernel, rows.start, mode == "prange", kwargs, skw))
                yield out[sy, sx], [(Ellipsis, fut)], done, False
                continue
            # numba kernels release the GIL: serial kernels on pieces of the block, one per
            # pool thread, balance themselves when other processes share the cores (a numba
            # parallel region waits for its slowest thread); the next block's pieces are queued
            # before this block is collected (short blocks, e.g. a small detector on data in
            # RAM, lost a fifth of their time waiting at the block boundary)
            pieces = _pieces(block.shape[0], block.shape[1], PIECES * threads)

            def piece(p, block=block, skw=skw):
                py, px = p
                sub = {key: np.ascontiguousarray(v[py, px]) for key, v in skw.items()}
                return run_block(block[py, px], kernel, rows.start, False, kwargs, sub)

            yield out[sy, sx], [(p, _pool().submit(piece, p)) for p in pieces], done, True

    yield from _pipelined(queued(), len(blocks), message)


class PerPattern:
    """Turn a per-pattern function ``fn(pattern, **kw) -> scalar or array`` into a kernel.

    The generic path for analyses that have no numba kernel: it loops over the patterns of a
    block in Python. ``pattern`` holds the detector rows the driver read. Picklable when ``fn``
    is a module-level function, so it runs on dask.distributed too.

    Parameters
    ----------
    fn : callable
        ``fn(pattern, **kw)`` returning a scalar or an array of fixed shape.
    scan_keys : tuple of str
        Keyword arguments that are per-pattern (passed to :func:`map_scan` as
        ``scan_kwargs``): ``fn`` gets their value at that pattern; the others are passed
        unchanged.
    """

    def __init__(self, fn: Callable[..., Any], *, scan_keys: tuple[str, ...] = ()):
        self.fn = fn
        self.scan_keys = tuple(scan_keys)

    def __call__(self, block, *, row0: int, parallel: bool = True, **kw):
        """The kernel: ``fn`` of every pattern of ``block``, as float64 ``(ny, nx, *shape)``."""
        ny, nx = block.shape[:2]
        scan = {k: kw.pop(k) for k in self.scan_keys}
        out = None
        for i in range(ny):
            for j in range(nx):
                r = self.fn(block[i, j], **kw, **{k: v[i, j] for k, v in scan.items()})
                r = np.asarray(r, dtype=np.float64)
                if out is None:
                    out = np.empty((ny, nx, *r.shape))
                out[i, j] = r
        return out


def n_blocks_for(data: Any, scan_chunk: tuple[int, int] | None = None) -> int:
    """How many blocks :func:`map_scan` will process locally with the default block size.

    On a cluster, and for self-parallel kernels on in-memory data, the driver uses larger
    blocks; the ``total`` of the :class:`Progress` it yields is always right.
    """
    arr = _raw(data)
    shape = tuple(int(s) for s in arr.shape)
    if scan_chunk is None:
        scan_chunk = default_scan_chunk(shape, np.dtype(arr.dtype).itemsize, native_chunks(arr))
    return math.ceil(shape[0] / scan_chunk[0]) * math.ceil(shape[1] / scan_chunk[1])
