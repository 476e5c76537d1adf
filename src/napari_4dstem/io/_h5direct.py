"""Read uncompressed HDF5 chunks straight from the file through a memory map.

HDF5 serialises reads (one library lock) and its partial-chunk I/O costs almost as much as a
whole chunk: a small virtual detector that needs 24 of 128 detector rows read a 4 GB EMD file
only 1.9x faster than all of it. For a chunked dataset *without filters* (no compression,
shuffle or checksum) in native byte order whose chunks hold whole patterns, every chunk is a
plain C-order array at a known file offset, so a hyperslab is a set of numpy copies out of an
``mmap`` of the file: no HDF5 call after the chunk index is built, no lock, and only the pages
of the rows asked for are touched. Anything else (compressed data, other chunk shapes, a user
block, a non-file driver) returns None and the caller reads through h5py as before.

The engine knows no file format: :func:`h5_chunk_views` is registered with
:func:`napari_4dstem.engine.blocks.register_chunk_views` when :mod:`napari_4dstem.io` is
imported, and the engine asks it about every lazy array it runs on.
"""

from __future__ import annotations

import math
import mmap
import os
from collections import OrderedDict

import numpy as np

from ..engine import chunks as chunks_mod
from ..engine.blocks import register_chunk_views
from ..errors import FileFormatError

__all__ = ["DirectChunks", "direct_reader", "drop_readers", "h5_chunk_views"]


class DirectChunks:
    """Hyperslabs ``[sy, sx, rows]`` of a 4D chunked dataset, read from an mmap of its file."""

    def __init__(self, filename: str, shape, dtype, chunks, index: dict, fill):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.chunks = tuple(int(c) for c in chunks)
        self.index = index  # (chunk start y, chunk start x) -> byte offset in the file
        self.fill = fill
        self.chunk_bytes = math.prod(self.chunks) * self.dtype.itemsize
        self.filename = filename
        # kept open: fstat before each chunk is handed out (a file truncated by another
        # program is refused instead of SIGBUS), pread with SAFE_READS
        self._fd = os.open(filename, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            self._mm = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            os.close(self._fd)
            raise
        self._buf = np.frombuffer(self._mm, dtype=np.uint8)

    def close(self) -> None:
        """Unmap the file (frees its pages and, on Windows, the lock).

        Unmap the file (frees its pages and, on Windows, the lock). Views still held by a caller keep the map
        alive until they are dropped; reads after close raise.
        """
        self._buf = None
        try:
            self._mm.close()
        except BufferError:  # an exported view is still alive: the map closes with it
            pass
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _chunk(self, off: int) -> np.ndarray:
        """The bytes of the chunk at ``off``, checked against the file's size.

        The bytes of the chunk at ``off``: a view of the map after checking the file still holds them
        (engine.chunks.SAFE_READS: a pread copy, never a mapped page).
        """
        end = off + self.chunk_bytes
        if chunks_mod.SAFE_READS:
            b = os.pread(self._fd, self.chunk_bytes, off)
            if len(b) == self.chunk_bytes:
                return np.frombuffer(b, np.uint8)
        elif os.fstat(self._fd).st_size >= end:
            return self._buf[off:end]
        raise FileFormatError(
            self.filename, f"was truncated while open: {os.fstat(self._fd).st_size} bytes, "
            f"a chunk ends at {end}", "another program shortened the file; reopen it",
        )  # fmt: skip

    @property
    def closed(self) -> bool:
        return self._buf is None

    def chunk_views(self, sy: slice, sx: slice, *, contiguous: bool = True):
        """The block ``[sy, sx]`` (all detector rows) chunk by chunk, without copying.

        The block ``[sy, sx]`` (all detector rows) chunk by chunk, without copying: ``(dst_y, dst_x, patterns,
        offset)`` with block-relative slices and whole patterns (a view into the file's map; with
        ``contiguous``, a small copy where a chunk is cut along scan_x at the scan's edge; the fill value
        where a chunk was never written).
        """
        if self._buf is None:
            raise ValueError("direct chunk reader is closed")
        y0, y1, _ = sy.indices(self.shape[0])
        x0, x1, _ = sx.indices(self.shape[1])
        cy, cx = self.chunks[0], self.chunks[1]
        for gy in range(y0 // cy * cy, y1, cy):
            a0, a1 = max(y0, gy), min(y1, gy + cy)
            for gx in range(x0 // cx * cx, x1, cx):
                b0, b1 = max(x0, gx), min(x1, gx + cx)
                off = self.index.get((gy, gx))
                if off is None:
                    pats = np.full((a1 - a0, b1 - b0, *self.shape[2:]), self.fill, self.dtype)
                else:
                    chunk = self._chunk(off).view(self.dtype)
                    pats = chunk.reshape(self.chunks)[a0 - gy : a1 - gy, b0 - gx : b1 - gx]
                    if contiguous and not pats.flags.c_contiguous:
                        pats = np.ascontiguousarray(pats)
                yield slice(a0 - y0, a1 - y0), slice(b0 - x0, b1 - x0), pats, off

    def release(self, offsets) -> None:
        """Drop the pages of these chunks from this process (they stay in the page cache)."""
        offs = [o for o in offsets if o is not None]
        if offs and hasattr(mmap, "MADV_DONTNEED"):
            page = mmap.PAGESIZE
            start = min(offs) // page * page
            stop = min(len(self._mm), max(offs) + self.chunk_bytes)
            try:
                self._mm.madvise(mmap.MADV_DONTNEED, start, stop - start)
            except (OSError, ValueError):
                pass

    def read(self, sy: slice, sx: slice, rows: slice) -> np.ndarray:
        """A copy of ``[sy, sx, rows]``; the pages read are released afterwards."""
        y0, y1, _ = sy.indices(self.shape[0])
        x0, x1, _ = sx.indices(self.shape[1])
        r0, r1, _ = rows.indices(self.shape[2])
        out = np.empty((y1 - y0, x1 - x0, r1 - r0, self.shape[3]), self.dtype)
        offsets = []
        for dy, dx, pats, off in self.chunk_views(sy, sx, contiguous=False):
            out[dy, dx] = pats[:, :, r0:r1]
            offsets.append(off)
        # as the engine does for memmaps: a full scan must not grow the resident memory to
        # the file size
        self.release(offsets)
        return out


_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 8


def drop_readers(filename: str) -> None:
    """Close and forget the readers of one file (called when its DataCube is closed)."""
    for key in [k for k in _CACHE if k[0] == filename]:
        reader = _CACHE.pop(key)
        if reader is not None:
            reader.close()


def direct_reader(ds) -> DirectChunks | None:
    """A :class:`DirectChunks` for the h5py dataset ``ds`` when it qualifies, else None."""
    try:
        key = (ds.file.filename, ds.name, ds.id.id)
    except Exception:
        return None
    if key in _CACHE:
        _CACHE.move_to_end(key)
        if _CACHE[key] is None or not _CACHE[key].closed:
            return _CACHE[key]
    reader = _make(ds)
    _CACHE[key] = reader
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return reader


@register_chunk_views
def h5_chunk_views(arr) -> DirectChunks | None:
    """The engine's finder: a :class:`DirectChunks` for an h5py dataset that qualifies."""
    if type(arr).__module__.split(".")[0] != "h5py":
        return None
    return direct_reader(arr)


def _make(ds) -> DirectChunks | None:
    try:
        f = ds.file
        if (
            ds.ndim != 4
            or ds.chunks is None
            or tuple(ds.chunks[2:]) != tuple(ds.shape[2:])
            or not ds.dtype.isnative
            or ds.dtype.kind not in "uif"
            or ds.id.get_create_plist().get_nfilters() != 0
            or f.mode != "r"  # a file open for writing may move its chunks
            or f.driver not in ("sec2", None)
            or f.userblock_size != 0
            or not os.path.isfile(f.filename)
        ):
            return None
        index: dict = {}
        n_chunks = ds.id.get_num_chunks()
        nbytes = math.prod(ds.chunks) * ds.dtype.itemsize
        if hasattr(ds.id, "chunk_iter"):
            ds.id.chunk_iter(lambda c: index.__setitem__(tuple(c.chunk_offset[:2]), (c.byte_offset, c.size)))
        else:  # older HDF5: one call per chunk
            for i in range(n_chunks):
                c = ds.id.get_chunk_info(i)
                index[tuple(c.chunk_offset[:2])] = (c.byte_offset, c.size)
        if len(index) != n_chunks or any(size != nbytes for _, size in index.values()):
            return None
        end = os.stat(f.filename).st_size
        if any(off < 0 or off + nbytes > end for off, _ in index.values()):
            return None  # a chunk past the end of the file: let h5py raise its error
        offsets = {k: int(off) for k, (off, _) in index.items()}
        fill = ds.fillvalue if ds.fillvalue is not None else 0
        return DirectChunks(f.filename, ds.shape, ds.dtype, ds.chunks, offsets, fill)
    except Exception:  # any doubt: read through h5py
        return None
