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
    """A 4D array ``(scan_y, scan_x, k_y, k_x)`` stored as chunks of whole patterns."""

    def chunk_views(
        self, sy: slice, sx: slice, *, contiguous: bool = True
    ) -> Iterator[tuple[slice, slice, np.ndarray, Any]]:
        """Block ``[sy, sx]`` chunk by chunk: ``(dst_y, dst_x, patterns, token)`` with
        block-relative slices, whole patterns ``(ny, nx, k_y, k_x)`` (views where possible;
        C-contiguous with ``contiguous``) and a token to hand to :meth:`release`."""
        ...

    def release(self, tokens: Iterable[Any]) -> None:
        """Done with these chunks: drop what holding them costs (e.g. mapped pages)."""
        ...

    def read(self, sy: slice, sx: slice, rows: slice) -> np.ndarray:
        """A copy of ``[sy, sx, rows]``."""
        ...


ChunkViewFinder = Callable[[Any], "ChunkViews | None"]

# module-level functions only: the distributed backend sends them to the workers by reference
_FINDERS: list[ChunkViewFinder] = []


def register_chunk_views(finder: ChunkViewFinder) -> ChunkViewFinder:
    """Let the engine run on chunk views: ``finder(arr)`` returns a :class:`ChunkViews` for the
    arrays it knows (and that qualify), None otherwise, cheaply and without raising. Must be a
    module-level function (it travels to dask workers by name). Returns ``finder``."""
    if finder not in _FINDERS:
        _FINDERS.append(finder)
    return finder


def chunk_view_finders() -> tuple[ChunkViewFinder, ...]:
    """The registered finders, in registration order."""
    return tuple(_FINDERS)


def find_chunk_views(arr: Any, finders: Iterable[ChunkViewFinder] | None = None):
    """The first :class:`ChunkViews` a finder gives for ``arr`` (arrays in RAM: never)."""
    if isinstance(arr, np.ndarray):
        return None
    for finder in _FINDERS if finders is None else finders:
        views = finder(arr)
        if views is not None:
            return views
    return None


def run_block(block, kernel, row0, parallel, kwargs, scan_kwargs):
    """Call ``kernel`` on one block (``scan_kwargs`` already sliced to it).

    An ndarray subclass (a memmap, napari's checked memmap of a mapped file) is handed to the
    kernel as a plain ndarray view, zero-copy: numba kernels compiled for one were refused
    another's subclass ("can't unbox array from PyObject").
    """
    if isinstance(block, np.ndarray) and type(block) is not np.ndarray:
        block = block.view(np.ndarray)
    return kernel(block, row0=row0, parallel=parallel, **kwargs, **scan_kwargs)


def slice_scan_kwargs(scan_kwargs: Mapping[str, np.ndarray], sy: slice, sx: slice) -> dict:
    """The per-pattern arguments of block ``[sy, sx]``, C-contiguous for the kernels."""
    return {k: np.ascontiguousarray(v[sy, sx]) for k, v in scan_kwargs.items()}


def read_rows(arr, sy: slice, sx: slice, rows: slice, finders=None) -> np.ndarray:
    """Block ``[sy, sx, rows]`` of any 4D array: a view of numpy data in RAM, a ``pread``
    copy of a memory-mapped file's bytes (never its mapped pages: SIGBUS if the file shrinks),
    a copy out of the chunk views where a reader offers them, else the array's own slicing."""
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
    """Run ``kernel`` on the views of the whole chunks of block ``[sy, sx]`` of a
    :class:`ChunkViews` source; ``scan_kwargs`` are the block's. With ``submit`` (an
    executor's), the calls are queued and ``(piece, future)`` pairs come back; without,
    ``(piece, result)``. Each piece is ``(dst_y, dst_x, token)``."""
    out = []
    for dy, dx, pats, off in direct.chunk_views(sy, sx):
        sub = {k: np.ascontiguousarray(v[dy, dx]) for k, v in scan_kwargs.items()}
        args = (pats, kernel, 0, False, kwargs, sub)
        res = submit(run_block, *args) if submit else run_block(*args)
        out.append(((dy, dx, off), res))
    return out
