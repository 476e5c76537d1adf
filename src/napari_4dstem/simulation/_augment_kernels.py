"""numba kernels of the augmentation: warp, blur, background upsampling and counting noise.

Every kernel is ``nogil``, so a thread pool over samples runs them in parallel. The counting
noise uses its own small generator (SplitMix64, one 64-bit word of state kept in a local
variable) instead of numba's per-thread ``np.random``: the draws then depend only on the seed
passed in, never on which thread runs the kernel, and they cost a few nanoseconds each.

Samplers (all from the published algorithms, written here):

- uniform: the top 53 bits of a SplitMix64 output, shifted off 0 so ``log(u)`` is finite;
- normal: Marsaglia and Tsang's ziggurat (256 regions);
- Poisson, mean below 10: inversion by sequential search from one uniform;
- Poisson, mean 10-1000: Hormann's transformed rejection with squeeze (PTRS, 1993), the
  algorithm numpy also uses for large means;
- above a mean of 1000 the caller draws the matching normal (rounded), as before.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_TWO_M53 = 1.0 / 9007199254740992.0
_NORMAL_ABOVE = 1000.0  # mean above which a Poisson count is drawn as a rounded normal


@numba.njit(inline="always")
def _next_u64(state):
    state = state + _GAMMA
    z = state
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return state, z ^ (z >> _S31)


@numba.njit(inline="always")
def _uniform(state):
    """A double in the open interval (0, 1)."""
    state, z = _next_u64(state)
    return state, (float(z >> _S11) + 0.5) * _TWO_M53


def _ziggurat_tables(n=256, r=3.6541528853610088):
    """Marsaglia and Tsang's (2000) ziggurat for the half normal ``f(x) = exp(-x^2 / 2)``.

    ``n`` regions of equal area ``v``; region 0 is the base strip plus the tail beyond ``r``,
    region ``i >= 1`` the rectangle ``[0, x_i] x [f(x_i), f(x_{i+1})]``.
    """
    from scipy.special import erfc

    v = r * math.exp(-r * r / 2) + math.sqrt(math.pi / 2) * erfc(r / math.sqrt(2))
    x = np.zeros(n + 1)
    x[0], x[1] = v / math.exp(-r * r / 2), r
    for i in range(1, n - 1):
        y = math.exp(-(x[i] ** 2) / 2) + v / x[i]
        x[i + 1] = math.sqrt(-2 * math.log(y))
    f = np.exp(-(x**2) / 2)  # x[n] = 0: f = 1 at the top
    return x, f, x[1:] / x[:-1]


_ZX, _ZF, _ZK = _ziggurat_tables()
_ZR = float(_ZX[1])
_S8 = np.uint64(8)
_ONE = np.uint64(1)
_MASK8 = np.uint64(255)


@numba.njit(inline="always")
def _normal(state):
    """Standard normal by the ziggurat: one 64-bit draw and a multiply ~99 % of the time."""
    while True:
        state, z = _next_u64(state)
        i = int(z & _MASK8)
        sign = -1.0 if (z >> _S8) & _ONE else 1.0
        u = float(z >> _S11) * _TWO_M53
        x = u * _ZX[i]
        if u < _ZK[i]:
            return state, sign * x
        if i == 0:  # the tail beyond r (Marsaglia 1964)
            while True:
                state, a = _uniform(state)
                state, b = _uniform(state)
                t = -math.log(a) / _ZR
                if -2.0 * math.log(b) > t * t:
                    return state, sign * (_ZR + t)
        state, w = _uniform(state)
        if _ZF[i] + w * (_ZF[i + 1] - _ZF[i]) < math.exp(-0.5 * x * x):
            return state, sign * x


_INV = np.array([0.0] + [1.0 / k for k in range(1, 201)])  # 1 / k: a multiply, not a divide
_LOG_FACT = np.array([math.lgamma(k + 1.0) for k in range(32)])  # log(k!) for k < 32


@numba.njit(inline="always")
def _log_factorial(k):
    if k < 32:
        return _LOG_FACT[int(k)]
    # Stirling's series for log Gamma(n), n = k + 1 >= 33: error below 1e-13
    n = k + 1.0
    r = 1.0 / n
    return (n - 0.5) * math.log(n) - n + 0.9189385332046728 + r * (1.0 / 12.0 - r * r * (1.0 / 360.0 - r * r / 1260.0))


@numba.njit(inline="always")
def _poisson(state, lam):
    if lam < 10.0:
        state, u = _uniform(state)
        p = math.exp(-lam)
        s = p
        k = 0
        while u > s and k < 200:
            k += 1
            p *= lam * _INV[k]
            s += p
        return state, float(k)
    b = 0.931 + 2.53 * math.sqrt(lam)
    a = -0.059 + 0.02483 * b
    vr = 0.9277 - 3.6224 / (b - 2.0)
    while True:
        state, u = _uniform(state)
        u -= 0.5
        state, v = _uniform(state)
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            return state, float(k)
        if k < 0 or (us < 0.013 and v > us):
            continue
        # the slow acceptance test (about 14 % of draws)
        lhs = math.log(v * (1.1239 + 1.1328 / (b - 3.4)) / (a / (us * us) + b))
        if lhs <= -lam + k * math.log(lam) - _log_factorial(k):
            return state, float(k)


@numba.njit(cache=True, nogil=True)
def count_noise(lam, dose, seed, read_sigma, out):
    """``out = Poisson(lam * dose) + read_sigma * N(0, 1)`` per pixel (float32 counts).

    Means above 1000 draw the matching normal, rounded and clipped at 0 (its skewness differs
    from Poisson's by under 0.03). ``seed`` is the generator's 64-bit starting state.
    """
    state = np.uint64(seed)
    H, W = lam.shape
    for i in range(H):
        for j in range(W):
            m = lam[i, j] * dose
            if m > _NORMAL_ABOVE:
                state, z = _normal(state)
                v = max(0.0, math.floor(m + math.sqrt(m) * z + 0.5))
            elif m > 0.0:
                state, v = _poisson(state, m)
            else:
                v = 0.0
            if read_sigma > 0.0:
                state, z = _normal(state)
                v += read_sigma * z
            out[i, j] = v
    return out


@numba.njit(cache=True, nogil=True)
def sample_poisson(lam, seed):
    """Poisson draws (float64) of a 1D array of means with this module's samplers (tests)."""
    out = np.empty(lam.size)
    state = np.uint64(seed)
    for i in range(lam.size):
        m = lam[i]
        if m > _NORMAL_ABOVE:
            state, z = _normal(state)
            out[i] = max(0.0, math.floor(m + math.sqrt(m) * z + 0.5))
        elif m > 0.0:
            state, out[i] = _poisson(state, m)
        else:
            out[i] = 0.0
    return out


# ------------------------------------------------------------------------------------------
# geometry
# ------------------------------------------------------------------------------------------
@numba.njit(inline="always")
def _edge_bilinear(src, y0, x0, fy, fx):
    # bilinear at a source position whose 2x2 neighbourhood crosses the border (zeros outside)
    H, W = src.shape
    acc = 0.0
    if 0 <= y0:
        if 0 <= x0:
            acc += (1.0 - fy) * (1.0 - fx) * src[y0, x0]
        if x0 + 1 < W:
            acc += (1.0 - fy) * fx * src[y0, x0 + 1]
    if y0 + 1 < H:
        if 0 <= x0:
            acc += fy * (1.0 - fx) * src[y0 + 1, x0]
        if x0 + 1 < W:
            acc += fy * fx * src[y0 + 1, x0 + 1]
    return acc


@numba.njit(inline="always")
def _row_start(i, ainv, cy, cx, sy, sx):
    # source of output pixel (i, 0); it moves by (ainv[0, 1], ainv[1, 1]) per column
    dy = i - cy - sy
    dx = -cx - sx
    return cy + ainv[0, 0] * dy + ainv[0, 1] * dx, cx + ainv[1, 0] * dy + ainv[1, 1] * dx


@numba.njit(inline="always")
def _source_cell(y, x, H, W):
    # the 2x2 source cell of position (y, x): whether it touches the image (inside
    # (-1, H) x (-1, W)), its corner, the fractions and whether the whole cell lies inside
    if not (-1.0 < y < H and -1.0 < x < W):
        return False, 0, 0, 0.0, 0.0, False
    y0 = int(y + 1.0) - 1  # floor, as y > -1
    x0 = int(x + 1.0) - 1
    return True, y0, x0, y - y0, x - x0, 0 <= y0 and y0 + 1 < H and 0 <= x0 and x0 + 1 < W


@numba.njit(inline="always")
def _cell_weights(fy, fx):
    # bilinear weights of the cell's corners (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)
    return (1.0 - fy) * (1.0 - fx), (1.0 - fy) * fx, fy * (1.0 - fx), fy * fx


@numba.njit(inline="always")
def _cell_bilinear(src, y0, x0, w00, w01, w10, w11):
    # bilinear of a 2D image inside its border
    return w00 * src[y0, x0] + w01 * src[y0, x0 + 1] + w10 * src[y0 + 1, x0] + w11 * src[y0 + 1, x0 + 1]


@numba.njit(cache=True, nogil=True)
def warp_stack(src, out, ainv, cy, cx, sy, sx):
    """Bilinear inverse-map warp of a stack ``(n, H, W)``, zero outside (see ``warp_images``).

    Each source position and its weights are computed once for the whole stack (the
    augmentation warps pattern, probe and label as one stack of three).
    """
    n, H, W = src.shape
    step_y, step_x = ainv[0, 1], ainv[1, 1]
    for i in range(H):
        y_row, x_row = _row_start(i, ainv, cy, cx, sy, sx)
        for j in range(W):
            near, y0, x0, fy, fx, whole = _source_cell(y_row + step_y * j, x_row + step_x * j, H, W)
            if not near:
                for k in range(n):
                    out[k, i, j] = 0.0
                continue
            if whole:
                w00, w01, w10, w11 = _cell_weights(fy, fx)
                for k in range(n):
                    out[k, i, j] = _cell_bilinear(src[k], y0, x0, w00, w01, w10, w11)
            else:
                for k in range(n):
                    out[k, i, j] = _edge_bilinear(src[k], y0, x0, fy, fx)


# ------------------------------------------------------------------------------------------
# filters
# ------------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def gaussian_blur(img, sigma, truncate, out):
    """Separable Gaussian blur with zeros outside.

    As ``scipy.ndimage.gaussian_filter`` with ``mode="constant"``: the same taps, radius
    ``int(truncate * sigma + 0.5)``.
    """
    H, W = img.shape
    r = int(truncate * sigma + 0.5)
    taps = np.empty(2 * r + 1, np.float32)
    for t in range(-r, r + 1):
        taps[t + r] = math.exp(-0.5 * t * t / (sigma * sigma))
    taps /= taps.sum()
    # zero-padded copies; the loops over columns then have fixed bounds and vectorise
    pad = np.zeros((H, W + 2 * r), np.float32)
    pad[:, r : r + W] = img
    tmp = np.zeros((H + 2 * r, W), np.float32)
    for i in range(H):
        for t in range(2 * r + 1):
            c = taps[t]
            for j in range(W):
                tmp[i + r, j] += c * pad[i, j + t]
    out[:] = 0.0
    for i in range(H):
        for t in range(2 * r + 1):
            c = taps[t]
            for j in range(W):
                out[i, j] += c * tmp[i + t, j]
    return out


@numba.njit(cache=True, nogil=True)
def bin2(img, h, w):
    """Sum of 2x2 blocks of the top-left ``(2h, 2w)`` of ``img``, float32."""
    out = np.empty((h, w), np.float32)
    for i in range(h):
        for j in range(w):
            out[i, j] = img[2 * i, 2 * j] + img[2 * i, 2 * j + 1] + img[2 * i + 1, 2 * j] + img[2 * i + 1, 2 * j + 1]
    return out


@numba.njit(cache=True, nogil=True)
def lorentzian_quadrant(ny, nx, step, width):
    """``1 / (k^2 + width^2)`` at ``k = step * (i, j)`` for ``i < ny, j < nx``, float32.

    One quadrant of the even kernel (offsets ``0 .. P/2`` of a periodic grid of
    ``P = 2 (ny - 1)``).
    """
    out = np.empty((ny, nx), np.float32)
    w2 = width * width
    for i in range(ny):
        dy = i * step
        for j in range(nx):
            dx = j * step
            out[i, j] = 1.0 / (dy * dy + dx * dx + w2)
    return out


@numba.njit(cache=True, nogil=True)
def upsample2_clipped(img, h, w, out):
    """Bilinear 2x upsampling of the top-left ``(h, w)`` of a binned image into ``out``.

    Fine pixel ``y`` sits at binned coordinate ``(y - 0.5) / 2``; negative values are clipped
    to 0 first. Returns the sum of ``out``.
    """
    H, W = out.shape
    c = np.empty((h, w), np.float32)
    for i in range(h):
        for j in range(w):
            c[i, j] = max(img[i, j], 0.0)
    x0s = np.empty(W, np.int64)
    fxs = np.empty(W, np.float32)
    for j in range(W):
        x = min(max((j - 0.5) / 2, 0.0), w - 1.0)
        x0s[j] = min(int(x), w - 2)
        fxs[j] = x - x0s[j]
    total = 0.0
    for i in range(H):
        y = min(max((i - 0.5) / 2, 0.0), h - 1.0)
        y0 = min(int(y), h - 2)
        fy = np.float32(y - y0)
        row = 0.0
        for j in range(W):
            x0 = x0s[j]
            fx = fxs[j]
            top = c[y0, x0] + fx * (c[y0, x0 + 1] - c[y0, x0])
            bot = c[y0 + 1, x0] + fx * (c[y0 + 1, x0 + 1] - c[y0 + 1, x0])
            v = top + fy * (bot - top)
            out[i, j] = v
            row += v
        total += row
    return total
