"""Dask over numpy memmaps without copying the file: each task reads its own block.

``dask.array.from_array`` copies any input that has a ``copy`` method (numpy arrays and
memmaps included) before building its graph, so a DataCube over a 13 GB memmap became 13 GB of
anonymous memory the moment it was binned or cropped. :class:`BlockReader` is a minimal
array-like (shape, dtype, ``__getitem__``) with no ``copy``: dask then slices it lazily, one
block per task, through the operating system's page cache.

Each read also checks that the file behind a memmap still holds what was mapped, so a file
truncated by another program raises :class:`~napari_4dstem.errors.FileFormatError` here
instead of the reader dying with SIGBUS on the first page past the new end.
"""

from __future__ import annotations

import mmap
import os

import numpy as np

from ..errors import FileFormatError

__all__ = ["BlockReader", "CheckedMemmap", "block_source", "checked_view", "mapped_extent"]


def mapped_extent(arr) -> tuple[str, int] | None:
    """``(file name, bytes of the file the map needs)`` for a memmap (or a view of one)."""
    mm = getattr(arr, "_mmap", None)
    name = getattr(arr, "filename", None)
    offset = getattr(arr, "offset", None)
    if mm is None or name is None or offset is None:
        return None
    start = int(offset) - int(offset) % mmap.ALLOCATIONGRANULARITY
    try:
        return str(name), start + len(mm)
    except (ValueError, TypeError):  # a closed map
        return None


class BlockReader:
    """Read-only array-like over a numpy array; ``r[key]`` returns a copy of that block only."""

    storage_chunks = None  # any position is read alone (engine.chunks.storage_chunks)

    def __init__(self, arr: np.ndarray):
        self._arr = arr
        self.shape = tuple(int(s) for s in arr.shape)
        self.dtype = np.dtype(arr.dtype)
        self.ndim = len(self.shape)
        self._extent = mapped_extent(arr)

    def _check(self) -> None:
        if self._extent is None:
            return
        name, need = self._extent
        try:
            size = os.stat(name).st_size
        except OSError as e:
            raise FileFormatError(name, f"cannot be read any more ({e.strerror})") from None
        if size < need:
            raise FileFormatError(
                name, f"was truncated while open: {size} bytes, {need} were mapped",
                "another program shortened the file; reopen it",
            )  # fmt: skip

    def __getitem__(self, key) -> np.ndarray:
        self._check()
        return np.array(self._arr[key], copy=True)

    def __len__(self) -> int:
        return self.shape[0]


def block_source(data):
    """What to hand to ``dask.array.from_array``: numpy input wrapped so dask cannot copy it."""
    if isinstance(data, np.ndarray):
        return BlockReader(data)
    return data


class CheckedMemmap(np.memmap):
    """A memmap whose every ``[...]`` first checks that the file still holds the bytes.

    Each ``[...]`` checks (``fstat``) that the file still holds the bytes it returns and raises
    :class:`FileFormatError` if another program truncated it.

    Handed to napari as a datacube layer's data: napari slices one pattern per step and would
    otherwise die with SIGBUS on a page past the new end. Still an ndarray (and a memmap), so
    the engine's zero-copy path is unchanged.
    """

    def __getitem__(self, key):
        out = super().__getitem__(key)
        if isinstance(out, np.ndarray) and out.size:
            from ..engine.chunks import mapped_file

            mf = mapped_file(out)
            if mf is not None:
                mf.check(out)
        return out


def checked_view(arr):
    """``arr`` as a :class:`CheckedMemmap` when it is a memmap of a file, else ``arr``."""
    if isinstance(arr, np.memmap) and getattr(arr, "filename", None) and not isinstance(arr, CheckedMemmap):
        return arr.view(CheckedMemmap)
    return arr
