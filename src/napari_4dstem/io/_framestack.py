"""A 4D lazy view over frame stacks stored in raster order across one or more files.

HDF5 detector files (ARINA, and others) store frames as ``(n_frames, k_y, k_x)`` datasets,
often split across several files. :class:`FrameStack4D` presents them as
``(scan_y, scan_x, k_y, k_x)`` and reads only the frames a slice asks for, one contiguous run
of frames per scan row, so that dask chunks of ``(16, 16, k_y, k_x)`` read 16 short runs.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

import numpy as np

from ..errors import FileFormatError
from ._helpers import lazy_frames, scan_chunks

__all__ = ["FrameStack4D", "bitshuffle_checker", "check_frame_offset", "frames_with_offset"]

_BSHUF_FILTER = 32008


def bitshuffle_checker(ds):
    """A framing check for a bitshuffle/LZ4-compressed HDF5 dataset, or None.

    A function ``check(f0, f1)`` that validates the framing of frames ``f0:f1`` of an HDF5 dataset compressed
    with bitshuffle/LZ4 (one frame per chunk), or None for other datasets.

    HDF5's bitshuffle filter trusts the block sizes inside a compressed chunk: a damaged chunk
    whose block size points past the chunk's end crashed the process (SIGSEGV) in the fuzz
    suite. Reading each chunk's raw bytes and walking its blocks first (12-byte header: total
    bytes and block bytes, then per block a 4-byte size and that many bytes) turns that into
    a FileFormatError. It costs one raw chunk read per frame (a few percent of decoding it).
    """
    try:
        plist = ds.id.get_create_plist()
        codes = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        chunks = ds.chunks
    except Exception:
        return None
    if _BSHUF_FILTER not in codes or chunks is None or chunks[0] != 1 or len(chunks) != 3:
        return None
    if tuple(chunks[1:]) != tuple(ds.shape[1:]):
        return None
    itemsize = ds.dtype.itemsize
    nbytes = int(np.prod(chunks)) * itemsize
    unit = 8 * itemsize
    state: dict = {}

    def index() -> dict | None:
        # frame -> (byte offset, size) of its chunk in the file, built once on first use, so
        # that checking a frame is one plain read of its bytes, not an HDF5 call
        if "index" not in state:
            idx: dict = {}
            try:
                if (ds.file.driver not in ("sec2", None) or not hasattr(ds.id, "chunk_iter")
                        or not hasattr(os, "pread")):  # fmt: skip
                    raise ValueError
                ds.id.chunk_iter(lambda c: idx.__setitem__(int(c.chunk_offset[0]), (c.byte_offset, c.size)))
                fh = open(ds.file.filename, "rb")
                state["fh"] = fh  # os.pread on its descriptor: safe from several threads
            except Exception:
                idx = None
            state["index"] = idx
        return state["index"]

    def raw_chunk(j: int) -> bytes | None:
        idx = index()
        if idx is not None:
            where = idx.get(j)
            if where is None:
                return None  # not written: read as the fill value, nothing to decode
            return os.pread(state["fh"].fileno(), where[1], where[0])
        try:
            return ds.id.read_direct_chunk((j, 0, 0))[1]
        except (KeyError, OSError, ValueError):
            return None

    def check(f0: int, f1: int) -> None:
        for j in range(f0, f1):
            raw = raw_chunk(j)
            if raw is None:
                continue
            problem = _bad_framing(raw, nbytes, unit)
            if problem:
                raise FileFormatError(ds.file.filename, f"compressed frame {j} of {ds.name} is corrupt ({problem})")

    def close() -> None:
        fh = state.pop("fh", None)
        if fh is not None:
            fh.close()

    check.close = close
    return check


def _bad_framing(raw: bytes, nbytes: int, unit: int) -> str | None:
    """Why a bitshuffle/LZ4 chunk's framing is broken, or None when it holds together."""
    if len(raw) < 12:
        return "shorter than its header"
    total, block = _HEAD.unpack_from(raw, 0)
    if total != nbytes:
        return f"it says {total} bytes, a frame has {nbytes}"
    if block == 0 or block % unit:
        return f"block size {block}"
    rest = total % block
    n_blocks = total // block + (1 if rest >= unit else 0)
    tail = rest % unit  # copied uncompressed after the blocks
    pos, end = 12, len(raw)
    unpack = _SIZE.unpack_from
    try:
        for _ in range(n_blocks):
            pos += 4 + unpack(raw, pos)[0]
            if pos > end:
                return "a block runs past the end"
    except struct.error:
        return "a block header past the end"
    if pos + tail != end:
        return "trailing bytes do not match"
    return None


_HEAD = struct.Struct(">QI")
_SIZE = struct.Struct(">I")


class FrameStack4D:
    """Array-like ``(scan_y, scan_x, k_y, k_x)`` over a list of ``(n_i, k_y, k_x)`` stacks.

    Parameters
    ----------
    stacks : sequence of array-like, each (n_i, k_y, k_x)
        h5py datasets or arrays, concatenated along the frame axis.
    scan_shape : (int, int)
        The first ``scan_y * scan_x`` frames are used.
    """

    def __init__(self, stacks: Sequence, scan_shape: tuple[int, int], *, check: bool = True):
        self._stacks = list(stacks)
        self._checks = [bitshuffle_checker(s) if check else None for s in self._stacks]
        self._starts = np.cumsum([0] + [int(s.shape[0]) for s in self._stacks])
        first = self._stacks[0]
        self.dtype = np.dtype(first.dtype)
        self.shape = (int(scan_shape[0]), int(scan_shape[1]), *(int(v) for v in first.shape[1:]))
        self.ndim = 4
        self._unit: tuple[int, int] | None = None  # storage_chunks' scan block, found on first use

    def _frames(self, f0: int, f1: int, ky: slice, kx: slice) -> np.ndarray:
        """Frames ``f0:f1`` (global indices) cropped to ``ky, kx``."""
        parts = []
        i = int(np.searchsorted(self._starts, f0, side="right") - 1)
        while f0 < f1:
            s0, s1 = self._starts[i], self._starts[i + 1]
            hi = min(f1, s1)
            if self._checks[i] is not None:
                self._checks[i](f0 - s0, hi - s0)
            try:
                parts.append(np.asarray(self._stacks[i][f0 - s0 : hi - s0, ky, kx]))
            except (OSError, RuntimeError) as e:
                # the decompression filter refused a chunk (e.g. an LZ4 stream that does not
                # decode to a whole frame): our error, naming the file and the frames
                st = self._stacks[i]
                bad = f"frames {f0 - s0}-{hi - s0 - 1}"
                for j in range(f0 - s0, hi - s0):  # name the first frame that fails alone
                    try:
                        st[j, ky, kx]
                    except (OSError, RuntimeError):
                        bad = f"frame {j}"
                        break
                where = getattr(getattr(st, "file", None), "filename", None) or "ARINA data"
                raise FileFormatError(
                    where,
                    f"{bad} of {getattr(st, 'name', 'the stack')} cannot be decoded: corrupt compressed data ({e})",
                ) from e
            f0 = hi
            i += 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    @property
    def storage_chunks(self) -> tuple[int, int, int, int]:
        """The scan block a read decompresses whole (``engine.chunks.storage_chunks``).

        ``(1, 1, k_y, k_x)`` where every frame is read alone (ARINA's usual HDF5 chunks of one
        frame, contiguous or in-memory stacks). Where a stack's HDF5 (or zarr) chunks hold several
        frames, a read of one frame decompresses its whole chunk, so the unit is the smallest
        scan block of the grid ``(1, c)`` (``c`` a multiple of the chunk's frames, or the scan
        row) or ``(r, scan_x)`` that holds every chunk whole (:func:`_scan_unit`): e.g. chunks of
        8 frames on a 40-wide scan give ``(1, 8)``, of 6 frames on a 16-wide scan ``(3, 16)``.
        """
        if self._unit is None:  # once: the stacks do not change
            self._unit = _scan_unit(self._stacks, self._starts, self.shape[:2])
        return (*self._unit, *self.shape[2:])

    def close(self) -> None:
        """Close the files the chunk checks opened (the datasets' files are the caller's)."""
        for c in self._checks:
            if c is not None:
                c.close()

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (4 - len(key))
        squeeze = [isinstance(k, int | np.integer) for k in key]
        norm = []
        for k, n in zip(key, self.shape, strict=True):
            if isinstance(k, int | np.integer):
                k = int(k) % n
                norm.append(slice(k, k + 1))
            elif isinstance(k, slice):
                norm.append(k)
            else:
                raise TypeError(f"FrameStack4D takes integers and slices, got {type(k).__name__}")
        sy, sx, ky, kx = norm
        ys = range(*sy.indices(self.shape[0]))
        xs = range(*sx.indices(self.shape[1]))
        nky = len(range(*ky.indices(self.shape[2])))
        nkx = len(range(*kx.indices(self.shape[3])))
        out = np.empty((len(ys), len(xs), nky, nkx), dtype=self.dtype)
        if len(xs) and len(ys):
            for j, y in enumerate(ys):
                base = y * self.shape[1]
                if xs.step == 1:
                    out[j] = self._frames(base + xs.start, base + xs.stop, ky, kx)
                else:
                    for i, x in enumerate(xs):
                        out[j, i] = self._frames(base + x, base + x + 1, ky, kx)[0]
        idx = tuple(0 if s else slice(None) for s in squeeze)
        return out[idx]

    def __array__(self, dtype=None, copy=None):
        a = self[:, :]
        return a.astype(dtype) if dtype is not None else a


def _frames_per_chunk(stack) -> int:
    """Frames one storage chunk of a ``(n, k_y, k_x)`` stack holds (1: any frame is read alone)."""
    chunks = getattr(stack, "chunks", None)  # h5py / zarr; None: contiguous or in memory
    if chunks is None or isinstance(stack, np.ndarray):
        return 1
    first = chunks[0]
    if isinstance(first, tuple):  # a dask array: its chunks along the frames
        first = max(first) if first else 1
    return max(int(first), 1)


def _scan_unit(stacks: Sequence, starts: np.ndarray, scan_shape: tuple[int, int]) -> tuple[int, int]:
    """The smallest scan block ``(cy, cx)`` that holds every storage chunk of ``stacks`` whole.

    Blocks on the grid from ``(0, 0)``; ``stacks`` concatenated, stack ``i`` starting at frame
    ``starts[i]``; each chunk's frames must lie in one block. Candidates by increasing size:
    ``(1, m k)`` for multiples of the largest chunk ``k`` below the row length, then
    ``(r, scan_x)``; ``(scan_y, scan_x)`` always holds.
    """
    ny, nx = int(scan_shape[0]), int(scan_shape[1])
    n = ny * nx
    lo_parts, hi_parts = [], []
    for i, st in enumerate(stacks):
        c = _frames_per_chunk(st)
        s0, s1 = int(starts[i]), min(int(starts[i + 1]), n)
        if c <= 1 or s1 <= s0:
            continue
        lo = np.arange(s0, s1, c, dtype=np.int64)
        lo_parts.append(lo)
        hi_parts.append(np.minimum(lo + c, s1) - 1)  # the last frame of each chunk (cut at the scan's end)
    if not lo_parts:
        return 1, 1
    lo, hi = np.concatenate(lo_parts), np.concatenate(hi_parts)
    k = int((hi - lo).max()) + 1
    if k <= 1:
        return 1, 1
    ly, lx, hy, hx = lo // nx, lo % nx, hi // nx, hi % nx

    def holds(cy: int, cx: int) -> bool:
        if cx >= nx:  # whole rows: the chunk's first and last rows in one block of rows
            return bool(np.all(ly // cy == hy // cy))
        return bool(np.all((ly == hy) & (lx // cx == hx // cx)))  # one row, one block of columns

    for cx in range(k, nx, k):
        if holds(1, cx):
            return 1, cx
    for cy in range(1, ny + 1):
        if holds(cy, nx):
            return cy, nx
    return ny, nx


def check_frame_offset(path: str | os.PathLike, frame_offset: int, n: int) -> int:
    """``frame_offset`` as an int that leaves at least one of ``n`` frames; FileFormatError otherwise."""
    try:
        k = int(frame_offset)
    except (TypeError, ValueError):
        raise FileFormatError(path, f"frame_offset must be an integer, got {frame_offset!r}") from None
    if k >= n:
        raise FileFormatError(path, f"frame_offset={k} drops every one of the {n} frames")
    return k


def frames_with_offset(stacks: Sequence, scan_shape: tuple[int, int], offset: int = 0, one=None):
    """``(scan_y, scan_x, k_y, k_x)`` over the frames of ``stacks`` after a trigger offset.

    ``(scan_y, scan_x, k_y, k_x)`` over the frames of ``stacks`` (each ``(n_i, ...)``, in order) after a
    trigger offset: ``offset > 0`` drops the first ``offset`` frames (memmap slices, still views), ``offset <
    0`` puts ``-offset`` blank (zero) frames first.

    ``one(stack, scan_shape)`` makes the 4D array of a single stack (default
    :func:`lazy_frames`, a zero-copy view); several stacks become a :class:`FrameStack4D`;
    blank frames make the result a dask array.
    """
    sy, sx = scan_shape
    if offset >= 0:
        trimmed, left = [], offset
        for st in stacks:
            if left < st.shape[0]:
                trimmed.append(st[left:])
            left = max(0, left - st.shape[0])
        if len(trimmed) == 1:
            return (one or lazy_frames)(trimmed[0], scan_shape)
        return FrameStack4D(trimmed, scan_shape, check=False)
    import dask.array as da

    n = sum(int(st.shape[0]) for st in stacks)
    whole = frames_with_offset(stacks, (1, n), 0, one)
    frame = tuple(int(v) for v in whole.shape[2:])
    if not isinstance(whole, da.Array):
        whole = da.from_array(whole, chunks=(1, min(n, 256), *frame), asarray=True)
    blank = da.zeros((-offset, *frame), dtype=whole.dtype, chunks=(256, *frame))
    flat = da.concatenate([blank, whole[0]])[: sy * sx]
    cy, cx = scan_chunks((sy, sx))
    return flat.reshape(sy, sx, *frame).rechunk((cy, cx, *frame))
