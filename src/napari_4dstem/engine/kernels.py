"""Numba kernels for per-pattern reductions over a scan block.

Every kernel takes a block ``(ny, nx, h, k_x)`` in its native dtype, a window of detector rows
``row0 : row0 + h`` of a detector ``(k_y, k_x)`` (so small detectors read only their rows),
and fills an output of shape ``(ny, nx, ...)`` in float64. They run on all local cores
(``parallel``, ``prange`` over patterns) and release the GIL (``nogil``), so the same
functions serve the local engine and the dask.distributed workers.

Sums accumulate in float64 (exact for integer data below 2**53 counts). ``fastmath`` is
limited to re-association and contraction, so the inner loops vectorise but NaN and inf
still propagate into the result instead of being assumed away.
"""

from __future__ import annotations

import functools
import logging
import math
import types

import numba
import numpy as np
from llvmlite import ir as _ir
from numba.core import cgutils as _cgutils
from numba.extending import intrinsic as _intrinsic
from numba.extending import overload as _overload

__all__ = [
    "Kernel",
    "com_block",
    "com_weighted_block",
    "disk_center_block",
    "row_accumulator",
    "runs_sum_block",
    "weighted_sum_block",
]

_FM = {"reassoc", "contract", "nsz"}


class Kernel:
    """One kernel compiled twice: ``parallel`` (all local cores) and ``serial`` (one core).

    The local engine calls ``parallel``; dask.distributed workers call ``serial`` and get their
    parallelism from the worker threads (no oversubscription). Both are the same function, each
    with its own numba cache file; an instance pickles by name, so workers import the compiled
    kernel.

    Parameters
    ----------
    fn : callable
        A numba-compilable function (``prange`` loops run in parallel in the ``parallel`` twin).
    """

    def __init__(self, fn):
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self.parallel = numba.njit(parallel=True, nogil=True, cache=True, fastmath=_FM)(fn)
        # a twin function with its own qualname, so the two compilations get separate cache
        # files (numba's cache index does not key on the ``parallel`` flag)
        twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial")
        twin.__qualname__ = fn.__qualname__ + "_serial"
        self.serial = numba.njit(parallel=False, nogil=True, cache=True, fastmath=_FM)(twin)

    def __call__(self, *args, parallel: bool = True):
        """Run the parallel or the serial compilation on ``args``."""
        return (self.parallel if parallel else self.serial)(*args)

    def __reduce__(self):  # pickled by name, so dask workers import the compiled kernel
        """Pickle by name, so dask workers import the compiled kernel."""
        return (_kernel_by_name, (self.__name__,))


# how many groups of four patterns ahead the small-detector kernel prefetches
PREFETCH_AHEAD = 2


def _kernel_by_name(name: str) -> Kernel:
    return globals()[name]


def _declare_prefetch(builder, ptr_type):
    """The ``llvm.prefetch`` intrinsic in the module being built (void (ptr, i32, i32, i32))."""
    i32 = _ir.IntType(32)
    fnty = _ir.FunctionType(_ir.VoidType(), [ptr_type, i32, i32, i32])
    # llvmlite mangles the name for its pointer type (p0i8; LLVM upgrades it where
    # pointers are opaque)
    return builder.module.declare_intrinsic("llvm.prefetch", [ptr_type], fnty)


@_intrinsic
def _prefetch_hint(typingctx, arr, r, c):
    """Ask the CPU to start loading ``arr[r, c]`` (a 2D array) into cache; no result."""
    sig = numba.types.void(arr, r, c)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = _cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]])
        i8p = builder.bitcast(ptr, _ir.IntType(8).as_pointer())
        fn = _declare_prefetch(builder, i8p.type)
        i32 = _ir.IntType(32)
        # read, high temporal locality, data cache
        builder.call(fn, [i8p, _ir.Constant(i32, 0), _ir.Constant(i32, 3), _ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@functools.cache
def _prefetch_compiles() -> bool:
    """Whether this numba/llvmlite/LLVM builds and runs the prefetch hint (tried once)."""
    try:
        probe = numba.njit(lambda a: _prefetch_hint(a, 0, 0))
        probe(np.zeros((1, 1)))
    except Exception as e:  # any llvmlite/LLVM failure: the kernels do without the hint
        logging.getLogger(__name__).info("prefetch hint disabled (%s: %s)", type(e).__name__, e)
        return False
    return True


def _prefetch(arr, r, c):
    """Ask the CPU to start loading ``arr[r, c]`` (a 2D array) into cache; no result.

    A hint only (it cannot fault): the small-detector kernel issues it for patterns it will
    read a few iterations later, so their scattered rows arrive while it sums others. Where the
    LLVM intrinsic does not compile (a numba/llvmlite that changed its builder, an LLVM that
    rejects the declaration) it is a no-op and the kernels give the same sums, without the
    ~2x on small detectors. Chosen when a kernel using it compiles, not at import.
    """


@_overload(_prefetch, inline="always")
def _ol_prefetch(arr, r, c):
    if _prefetch_compiles():

        def impl(arr, r, c):
            _prefetch_hint(arr, r, c)

    else:

        def impl(arr, r, c):
            pass

    return impl


@numba.njit(nogil=True, cache=True, fastmath=_FM)
def _bilinear(sy, sx):
    """Integer part and bilinear weights of a sub-pixel shift.

    Integer part ``(iy, ix)`` of a sub-pixel shift and the bilinear weights of the four integer shifts ``(iy,
    ix), (iy, ix + 1), (iy + 1, ix), (iy + 1, ix + 1)``.
    """
    ay = math.floor(sy)
    ax = math.floor(sx)
    fy = sy - ay
    fx = sx - ax
    # a tuple, not an array: no allocation per pattern in the hot loop
    w = ((1.0 - fy) * (1.0 - fx), (1.0 - fy) * fx, fy * (1.0 - fx), fy * fx)
    return np.int64(ay), np.int64(ax), w


@numba.njit(nogil=True, cache=True, fastmath=_FM)
def _seg_sum(pat, r, c0, c1, zero):
    # a row slice indexed from 0: no negative-index handling, so the loop vectorises
    seg = pat[r, c0:c1]
    s = zero
    for c in range(seg.shape[0]):
        s += seg[c]
    return s


@numba.njit(nogil=True, cache=True, fastmath=_FM, inline="always")
def _shifted(one, pat, row0, qx, mask, sy, sx, zero):
    """Sum of ``pat`` over ``mask`` moved by the sub-pixel shift ``(sy, sx)``.

    Bilinear in the mask: the weighted sum over the four whole-pixel shifts around it of
    ``one(pat, row0, qx, mask, ty, tx, zero)``, the sum over the mask moved by ``(ty, tx)``
    pixels (:func:`_runs_one` for binary masks, :func:`_weighted_one` for weights).
    """
    iy, ix, w = _bilinear(sy, sx)
    v = 0.0
    for t in range(4):
        if w[t] != 0.0:
            v += w[t] * one(pat, row0, qx, mask, iy + t // 2, ix + t % 2, zero)
    return v


@numba.njit(nogil=True, cache=True, fastmath=_FM)
def _runs_one(pat, row0, qx, runs, ty, tx, zero):
    # sum of the pattern over the runs (runs_r, runs_c0, runs_c1: row r, columns c0:c1)
    # shifted by (ty, tx) pixels; pixels outside the detector count as zero
    runs_r, runs_c0, runs_c1 = runs
    h = pat.shape[0]
    acc = 0.0
    for k in range(runs_r.shape[0]):
        r = runs_r[k] + ty - row0
        if r < 0 or r >= h:
            continue
        acc += _seg_sum(pat, r, max(runs_c0[k] + tx, 0), min(runs_c1[k] + tx, qx), zero)
    return acc


@Kernel
def runs_sum_block(block, row0, runs_r, runs_c0, runs_c1, shift_y, shift_x, zero, out):
    """Binary-detector sum: ``out[i, j] = sum over the runs of block[i, j]``.

    Parameters
    ----------
    block : (ny, nx, h, k_x) array, any real dtype
        Detector rows ``row0 : row0 + h`` of each pattern.
    runs_r, runs_c0, runs_c1 : int64 arrays
        The mask as horizontal runs: row ``r`` (absolute), columns ``c0 : c1``.
    shift_y, shift_x : (ny, nx) float64 arrays, or size-0 arrays for no shift
        Per-pattern detector shift in pixels (the mask is moved by it); sub-pixel shifts are
        bilinear in the mask.
    zero : scalar
        Zero of the per-row accumulator type (see :func:`row_accumulator`); rows are then
        added in float64.
    out : (ny, nx) float64 array
    """
    ny, nx = block.shape[0], block.shape[1]
    qx = block.shape[3]
    h = block.shape[2]
    n = ny * nx
    runs = (runs_r, runs_c0, runs_c1)
    if shift_y.size == 0:
        # four patterns at a time, their rows interleaved: a small detector reads short runs
        # at a 64 KiB stride, bound by memory latency; four independent streams keep more
        # loads in flight (1.5-2x on a 2.7 % disk, float32 in RAM), and the runs of the
        # group PREFETCH_AHEAD groups on are prefetched meanwhile (another ~2x)
        n_groups = (n + 3) // 4
        line = max(1, 64 // block.itemsize)  # elements per 64-byte cache line
        for g in numba.prange(n_groups):
            p0 = 4 * g
            if p0 + 4 > n:
                for p in range(p0, n):
                    out[p // nx, p % nx] = _runs_one(block[p // nx, p % nx], row0, qx, runs, 0, 0, zero)
                continue
            pa = block[p0 // nx, p0 % nx]
            pb = block[(p0 + 1) // nx, (p0 + 1) % nx]
            pc = block[(p0 + 2) // nx, (p0 + 2) % nx]
            pd = block[(p0 + 3) // nx, (p0 + 3) % nx]
            q0 = p0 + 4 * PREFETCH_AHEAD
            ahead = q0 + 4 <= n
            a0 = 0.0
            a1 = 0.0
            a2 = 0.0
            a3 = 0.0
            for k in range(runs_r.shape[0]):
                r = runs_r[k] - row0
                if r < 0 or r >= h:
                    continue
                c0 = max(runs_c0[k], 0)
                c1 = min(runs_c1[k], qx)
                if ahead and c1 > c0:
                    for t in range(4):
                        q = q0 + t
                        for c in range(c0, c1, line):
                            _prefetch(block[q // nx, q % nx], r, c)
                        _prefetch(block[q // nx, q % nx], r, c1 - 1)
                a0 += _seg_sum(pa, r, c0, c1, zero)
                a1 += _seg_sum(pb, r, c0, c1, zero)
                a2 += _seg_sum(pc, r, c0, c1, zero)
                a3 += _seg_sum(pd, r, c0, c1, zero)
            out[p0 // nx, p0 % nx] = a0
            out[(p0 + 1) // nx, (p0 + 1) % nx] = a1
            out[(p0 + 2) // nx, (p0 + 2) % nx] = a2
            out[(p0 + 3) // nx, (p0 + 3) % nx] = a3
        return
    for p in numba.prange(n):
        i = p // nx
        j = p - i * nx
        out[i, j] = _shifted(_runs_one, block[i, j], row0, qx, runs, shift_y[i, j], shift_x[i, j], zero)


@numba.njit(nogil=True, cache=True, fastmath=_FM)
def _weighted_one(pat, row0, qx, mask, ty, tx, zero):
    # sum of weights * pattern over the bounding box (w at absolute row r0, column c0)
    # shifted by (ty, tx) pixels; pixels outside the detector count as zero
    w, r0, c0 = mask
    h = pat.shape[0]
    hw, ww = w.shape
    acc = 0.0
    for a in range(hw):
        r = r0 + a + ty - row0
        if r < 0 or r >= h:
            continue
        cs = c0 + tx
        b0 = max(0, -cs)
        b1 = min(ww, qx - cs)
        if b1 <= b0:
            continue
        seg = pat[r, cs + b0 : cs + b1]
        wr = w[a, b0:b1]
        s = zero
        for b in range(seg.shape[0]):
            s += wr[b] * seg[b]
        acc += s
    return acc


@Kernel
def weighted_sum_block(block, row0, weights, r0, c0, shift_y, shift_x, zero, out):
    """Weighted-detector sum: ``out[i, j] = sum(weights * pattern[r0:, c0:])``.

    ``weights`` is the detector's bounding box ``(hw, ww)`` placed at absolute detector
    position ``(r0, c0)``; shifts as in :func:`runs_sum_block`.
    """
    ny, nx = block.shape[0], block.shape[1]
    qx = block.shape[3]
    shifted = shift_y.size > 0
    mask = (weights, r0, c0)
    for p in numba.prange(ny * nx):
        i = p // nx
        j = p - i * nx
        if shifted:
            out[i, j] = _shifted(_weighted_one, block[i, j], row0, qx, mask, shift_y[i, j], shift_x[i, j], zero)
        else:
            out[i, j] = _weighted_one(block[i, j], row0, qx, mask, 0, 0, zero)


@numba.njit(nogil=True, cache=True, fastmath=_FM, inline="always")
def _com_rows(row_moments, pat, row0, r_lo, r_hi, mask):
    """Sum and first moments ``(tot, my, mx)`` of a pattern over its local rows ``r_lo:r_hi``.

    ``row_moments(pat, r, row0, mask)`` gives row ``r``'s sum and its first moment along
    x in absolute detector columns (:func:`_row_moments` for the whole row,
    :func:`_weighted_row_moments` inside a weighted detector); rows are added in float64.
    """
    tot = 0.0
    my = 0.0
    mx = 0.0
    for r in range(r_lo, r_hi):
        s, sc = row_moments(pat, r, row0, mask)
        tot += s
        my += s * (r + row0)
        mx += sc
    return tot, my, mx


@numba.njit(nogil=True, cache=True, fastmath=_FM, inline="always")
def _row_moments(pat, r, row0, mask):
    # the whole row r
    s = 0.0
    sc = 0.0
    for c in range(pat.shape[1]):
        v = np.float64(pat[r, c])
        s += v
        sc += v * c
    return s, sc


@numba.njit(nogil=True, cache=True, fastmath=_FM, inline="always")
def _weighted_row_moments(pat, r, row0, mask):
    # row r times its row of the weights (bounding box at absolute row r0, column c0)
    weights, r0, c0 = mask
    nb = min(weights.shape[1], pat.shape[1] - c0)
    seg = pat[r, c0 : c0 + nb]
    wr = weights[r + row0 - r0, :nb]
    s = 0.0
    sc = 0.0
    for b in range(nb):
        v = wr[b] * seg[b]
        s += v
        sc += v * b
    sc += s * c0
    return s, sc


@numba.njit(nogil=True, cache=True, fastmath=_FM)
def _store_com(out, i, j, tot, my, mx):
    """``out[i, j] = (tot, my / tot, mx / tot)``: the sum and the centre of mass, NaN where the sum is zero."""
    out[i, j, 0] = tot
    if tot != 0.0:
        out[i, j, 1] = my / tot
        out[i, j, 2] = mx / tot
    else:
        out[i, j, 1] = np.nan
        out[i, j, 2] = np.nan


@Kernel
def com_block(block, row0, out):
    """Intensity and centre of mass of every pattern in one pass over the data.

    ``out[i, j] = (sum, com_y, com_x)`` with ``com`` in absolute detector pixels (pixel
    centres at integer coordinates); NaN where the sum is zero.
    """
    ny, nx, h = block.shape[0], block.shape[1], block.shape[2]
    for p in numba.prange(ny * nx):
        i = p // nx
        j = p - i * nx
        tot, my, mx = _com_rows(_row_moments, block[i, j], row0, 0, h, ())
        _store_com(out, i, j, tot, my, mx)


@Kernel
def com_weighted_block(block, row0, weights, r0, c0, out):
    """Centre of mass inside a weighted detector (bounding box ``weights`` at ``(r0, c0)``)."""
    ny, nx, h = block.shape[0], block.shape[1], block.shape[2]
    # the detector rows the weights cover, as local rows of the block
    r_lo = max(0, r0 - row0)
    r_hi = min(h, r0 + weights.shape[0] - row0)
    mask = (weights, r0, c0)
    for p in numba.prange(ny * nx):
        i = p // nx
        j = p - i * nx
        tot, my, mx = _com_rows(_weighted_row_moments, block[i, j], row0, r_lo, r_hi, mask)
        _store_com(out, i, j, tot, my, mx)


@Kernel
def disk_center_block(block, row0, guess_y, guess_x, radius, background, n_iter, out):
    """Centre of the bright-field disk of every pattern, sub-pixel.

    Starting from ``(guess_y, guess_x)``, take the centre of mass of ``pattern - background``
    over the pixels within ``radius`` of the current estimate and move there; stop after
    ``n_iter`` steps or when the step is below 1e-4 px. A symmetric disk inside the circle is a
    fixed point, so the result is its centre. ``out[i, j] = (center_y, center_x, sum)``.
    """
    ny, nx = block.shape[0], block.shape[1]
    h, qx = block.shape[2], block.shape[3]
    r2 = radius * radius
    for p in numba.prange(ny * nx):
        i = p // nx
        j = p - i * nx
        pat = block[i, j]
        cy = guess_y
        cx = guess_x
        tot = 0.0
        for _ in range(n_iter):
            ra = max(0, math.floor(cy - radius) - row0)
            rb = min(h, math.ceil(cy + radius) + 1 - row0)
            ca = max(0, math.floor(cx - radius))
            cb = min(qx, math.ceil(cx + radius) + 1)
            tot = 0.0
            my = 0.0
            mx = 0.0
            for r in range(ra, rb):
                dy = r + row0 - cy
                for c in range(ca, cb):
                    dx = c - cx
                    if dy * dy + dx * dx <= r2:
                        v = pat[r, c] - background
                        tot += v
                        my += v * dy
                        mx += v * dx
            if tot <= 0.0:
                cy = np.nan
                cx = np.nan
                break
            sy = my / tot
            sx = mx / tot
            cy += sy
            cx += sx
            if sy * sy + sx * sx < 1e-8:
                break
        out[i, j, 0] = cy
        out[i, j, 1] = cx
        out[i, j, 2] = tot


def row_accumulator(dtype, weighted: bool):
    """Zero of the type in which one detector row is summed, chosen for speed and exactness.

    Parameters
    ----------
    dtype : dtype
        The data's dtype.
    weighted : bool
        Whether the row is multiplied by weights (then float).

    Returns
    -------
    numpy scalar
        ``uint32(0)`` / ``int64(0)`` for unweighted unsigned / signed integers of up to 16 bits
        (exact over a row of at most 65536 pixels), ``float32(0)`` for float32 rows (like BLAS;
        relative error about 1e-7 * sqrt(k_x)), else ``float64(0)``. Rows are always added
        together in float64.
    """
    dt = np.dtype(dtype)
    if dt == np.float32:
        return np.float32(0)
    if not weighted and dt.kind == "u" and dt.itemsize <= 2:
        return np.uint32(0)
    if not weighted and dt.kind == "i" and dt.itemsize <= 2:
        return np.int64(0)
    return np.float64(0)


def as_kernel_input(block: np.ndarray) -> np.ndarray:
    """The block in a dtype numba reads: native byte order; float16 and bool widened.

    Copies only when needed (big-endian files, float16), one block at a time.
    """
    dt = block.dtype
    if dt.kind == "b":
        return block.view(np.uint8)
    if dt == np.float16:
        return block.astype(np.float32)
    if dt.kind not in "uif":
        raise TypeError(f"cannot reduce patterns of dtype {dt}")
    if not dt.isnative:
        return block.astype(dt.newbyteorder("="))
    return block
