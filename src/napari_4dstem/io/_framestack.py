"""A 4D lazy view over frame stacks stored in raster order across one or more files.

HDF5 detector files (ARINA, and others) store frames as ``(n_frames, k_y, k_x)`` datasets,
often split across several files. :class:`FrameStack4D` presents them as
``(scan_y, scan_x, k_y, k_x)`` and reads only the frames a slice asks for, one contiguous run
of frames per scan row, so that dask chunks of ``(16, 16, k_y, k_x)`` read 16 short runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["FrameStack4D"]


class FrameStack4D:
    """Array-like ``(scan_y, scan_x, k_y, k_x)`` over a list of ``(n_i, k_y, k_x)`` stacks.

    Parameters
    ----------
    stacks : sequence of array-like, each (n_i, k_y, k_x)
        h5py datasets or arrays, concatenated along the frame axis.
    scan_shape : (int, int)
        The first ``scan_y * scan_x`` frames are used.
    """

    def __init__(self, stacks: Sequence, scan_shape: tuple[int, int]):
        self._stacks = list(stacks)
        self._starts = np.cumsum([0] + [int(s.shape[0]) for s in self._stacks])
        first = self._stacks[0]
        self.dtype = np.dtype(first.dtype)
        self.shape = (int(scan_shape[0]), int(scan_shape[1]), *(int(v) for v in first.shape[1:]))
        self.ndim = 4

    def _frames(self, f0: int, f1: int, ky: slice, kx: slice) -> np.ndarray:
        """Frames ``f0:f1`` (global indices) cropped to ``ky, kx``."""
        parts = []
        i = int(np.searchsorted(self._starts, f0, side="right") - 1)
        while f0 < f1:
            s0, s1 = self._starts[i], self._starts[i + 1]
            hi = min(f1, s1)
            parts.append(np.asarray(self._stacks[i][f0 - s0 : hi - s0, ky, kx]))
            f0 = hi
            i += 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

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
