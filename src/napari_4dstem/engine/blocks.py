"""One scan block's task, the same in the local driver and on a dask.distributed worker.

A task reads its block (through a reader's chunk views where the reader offers them), slices
the per-pattern arguments to it and calls the kernel. :mod:`.driver` and :mod:`.distributed`
both import from here; neither imports the other's internals.

Chunk views
-----------
Some storage is a set of plain C-order arrays at known places in a file (an uncompressed,
whole-pattern-chunked HDF5 dataset is: see :mod:`napari_4dstem.io._h5direct`). The kernels can
run on views of those chunks with no copy and no library call. The engine does not know any
file format: a reader registers a *finder* with :func:`register_chunk_views`, a function that
returns a :class:`ChunkViews` for an array it recognises (and qualifies) and None for anything
else. The driver asks the finders about every lazy array it gets; without a finder that
answers, blocks are read through the array's own slicing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import numpy as np

from ..errors import FileFormatError
from .chunks import read_block, read_mapped

__all__ = [
    "ChunkViews",
    "chunk_view_finders",
    "find_chunk_views",
    "read_rows",
    "register_chunk_views",
    "run_block",
    "run_chunk_views",
    "slice_scan_kwargs",
]


class ChunkViews(Protocol):
    """A 4D array ``(scan_y, scan_x, k_y, k_x)`` stored as chunks of whole patterns.

    A protocol: readers return an object with these methods from a finder registered with
    :func:`register_chunk_views`.

    Attributes
    ----------
    chunk_views : callable
        ``chunk_views(sy, sx, *, contiguous=True)``: block ``[sy, sx]`` chunk by chunk.
    release : callable
        ``release(tokens)``: done with these chunks.
    read : callable
        ``read(sy, sx, rows)``: a copy of ``[sy, sx, rows]``.
    """

    def chunk_views(
        self, sy: slice, sx: slice, *, contiguous: bool = True
    ) -> Iterator[tuple[slice, slice, np.ndarray, Any]]:
        """Block ``[sy, sx]`` chunk by chunk.

        Parameters
        ----------
        sy, sx : slice
            The scan block.
        contiguous : bool
            Hand C-contiguous patterns (default True).

        Yields
        ------
        dst_y, dst_x : slice
            Where the chunk's patterns go, relative to the block.
        patterns : ndarray ``(ny, nx, k_y, k_x)``
            Whole patterns, views where possible.
        token : object
            To hand to :meth:`release`.
        """
        ...

    def release(self, tokens: Iterable[Any]) -> None:
        """Done with these chunks: drop what holding them costs (e.g. mapped pages).

        Parameters
        ----------
        tokens : iterable
            Tokens from :meth:`chunk_views`.
        """
        ...

    def read(self, sy: slice, sx: slice, rows: slice) -> np.ndarray:
        """A copy of ``[sy, sx, rows]``.

        Parameters
        ----------
        sy, sx, rows : slice
            Scan block and detector rows.

        Returns
        -------
        ndarray ``(ny, nx, n_rows, k_x)``
            The data, in its stored dtype.
        """
        ...


ChunkViewFinder = Callable[[Any], "ChunkViews | None"]

# module-level functions only: the distributed backend sends them to the workers by reference
_FINDERS: list[ChunkViewFinder] = []


def register_chunk_views(finder: ChunkViewFinder) -> ChunkViewFinder:
    """Let the engine run on chunk views of the arrays ``finder`` knows.

    Parameters
    ----------
    finder : callable
        ``finder(arr)`` returns a :class:`ChunkViews` for the arrays it knows (and that
        qualify), None otherwise, cheaply and without raising. Must be a module-level function
        (it travels to dask workers by name).

    Returns
    -------
    callable
        ``finder`` (so it can decorate); registering it twice has no effect.
    """
    if finder not in _FINDERS:
        _FINDERS.append(finder)
    return finder


def chunk_view_finders() -> tuple[ChunkViewFinder, ...]:
    """The registered finders, in registration order.

    Returns
    -------
    tuple of callable
        The finders.
    """
    return tuple(_FINDERS)


def find_chunk_views(arr: Any, finders: Iterable[ChunkViewFinder] | None = None):
    """The first :class:`ChunkViews` a finder gives for ``arr`` (arrays in RAM: never).

    Parameters
    ----------
    arr : array-like
        A 4D array.
    finders : iterable of callable, optional
        The finders to ask (default the registered ones).

    Returns
    -------
    ChunkViews or None
        None for a numpy array or when no finder knows ``arr``; a dask array that is a plain
        ``from_array`` view of one array is asked about as that array.
    """
    if isinstance(arr, np.ndarray):
        return None
    if hasattr(arr, "__dask_graph__"):
        from .chunks import dask_source

        # a plain dask view of a file (what a napari layer holds): the file's own chunk views
        src = dask_source(arr)
        if src is None:
            return None
        arr = src
    for finder in _FINDERS if finders is None else finders:
        views = finder(arr)
        if views is not None:
            return views
    return None


def run_block(block, kernel, row0, parallel, kwargs, scan_kwargs):
    """Call ``kernel`` on one block (``scan_kwargs`` already sliced to it).

    Parameters
    ----------
    block : array ``(ny, nx, h, k_x)``
        The block's patterns (detector rows ``row0 : row0 + h``).
    kernel : callable
        The :func:`~napari_4dstem.engine.driver.map_scan` kernel.
    row0 : int
        First detector row of ``block``.
    parallel : bool
        Whether the kernel may use all local cores.
    kwargs, scan_kwargs : mapping
        Constant and per-pattern (block-sliced) keyword arguments.

    Returns
    -------
    ndarray ``(ny, nx, *out_tail)``
        The kernel's output.

    Notes
    -----
    An ndarray subclass (a memmap, napari's checked memmap of a mapped file) is handed to the
    kernel as a plain ndarray view, zero-copy: numba kernels compiled for one were refused
    another's subclass ("can't unbox array from PyObject").
    """
    if isinstance(block, np.ndarray) and type(block) is not np.ndarray:
        block = block.view(np.ndarray)
    return kernel(block, row0=row0, parallel=parallel, **kwargs, **scan_kwargs)


def slice_scan_kwargs(scan_kwargs: Mapping[str, np.ndarray], sy: slice, sx: slice) -> dict:
    """The per-pattern arguments of block ``[sy, sx]``, C-contiguous for the kernels.

    Parameters
    ----------
    scan_kwargs : mapping of str to arrays ``(scan_y, scan_x, ...)``
        Per-pattern arguments.
    sy, sx : slice
        The block.

    Returns
    -------
    dict
        The same keys, each array sliced to the block (a C-contiguous copy where needed).
    """
    return {k: np.ascontiguousarray(v[sy, sx]) for k, v in scan_kwargs.items()}


def read_rows(arr, sy: slice, sx: slice, rows: slice, finders=None) -> np.ndarray:
    """Block ``[sy, sx, rows]`` of any 4D array.

    Parameters
    ----------
    arr : array-like ``(scan_y, scan_x, k_y, k_x)``
        numpy (in RAM or memory-mapped), h5py, zarr, dask or a reader's lazy array.
    sy, sx : slice
        The scan block.
    rows : slice
        The detector rows.
    finders : iterable of callable, optional
        Chunk-view finders to ask (default the registered ones).

    Returns
    -------
    ndarray ``(ny, nx, n_rows, k_x)``
        A view of numpy data in RAM, a ``pread`` copy of a memory-mapped file's bytes (never its
        mapped pages: SIGBUS if the file shrinks), a copy out of the chunk views where a reader
        offers them, else the array's own slicing.

    Raises
    ------
    FileFormatError
        When the storage library fails to read the block (a corrupt chunk, a refused filter).
    """
    if isinstance(arr, np.ndarray):
        return read_mapped(arr[sy, sx, rows])  # in RAM: a view, no copy
    try:
        direct = find_chunk_views(arr, finders)
        if direct is not None:  # e.g. uncompressed HDF5 chunks: straight from the file
            return direct.read(sy, sx, rows)
        if rows.start == 0 and rows.stop == arr.shape[2]:
            return read_block(arr, sy, sx)
        block = arr[sy, sx, rows]
        return np.asarray(block.compute() if hasattr(block, "compute") else block)
    except (OSError, RuntimeError) as e:
        # a storage library's read failure (a corrupt HDF5 or zarr chunk, a decompression
        # filter that refused its input) is a malformed file, reported as one of our errors
        raise FileFormatError(
            _source_name(arr),
            f"cannot read scan block [{sy.start}:{sy.stop}, {sx.start}:{sx.stop}] ({type(e).__name__}: {e})",
        ) from e


def _source_name(arr) -> str:
    """The file behind a lazy array, as well as it can be told (for error messages)."""
    for get in (lambda a: a.file.filename, lambda a: a.store.path, lambda a: a.filename):
        try:
            name = get(arr)
        except (AttributeError, TypeError, ValueError):
            continue
        if isinstance(name, str | os.PathLike) and str(name):
            return str(name)
    return f"the data ({type(arr).__name__})"


def run_chunk_views(direct, sy: slice, sx: slice, kernel, kwargs, scan_kwargs, submit=None):
    """Run ``kernel`` on the views of the whole chunks of block ``[sy, sx]`` of a ChunkViews source.

    Parameters
    ----------
    direct : ChunkViews
        The source.
    sy, sx : slice
        The scan block.
    kernel : callable
        The :func:`~napari_4dstem.engine.driver.map_scan` kernel (called with ``row0=0`` and
        ``parallel=False``).
    kwargs : mapping
        Constant keyword arguments.
    scan_kwargs : mapping
        Per-pattern arguments already sliced to the block.
    submit : callable, optional
        An executor's ``submit``: the calls are queued instead of run.

    Returns
    -------
    list of ((slice, slice, object), ndarray or Future)
        ``(piece, result)`` pairs (``(piece, future)`` with ``submit``); each piece is
        ``(dst_y, dst_x, token)``.
    """
    out = []
    for dy, dx, pats, off in direct.chunk_views(sy, sx):
        sub = {k: np.ascontiguousarray(v[dy, dx]) for k, v in scan_kwargs.items()}
        args = (pats, kernel, 0, False, kwargs, sub)
        res = submit(run_block, *args) if submit else run_block(*args)
        out.append(((dy, dx, off), res))
    return out
