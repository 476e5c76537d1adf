"""Peak finding and sub-pixel refinement on batches of correlation-like images.

Works on any stack of images whose maxima mark disks: FFT cross-correlations with a probe
template (:mod:`.bragg`), or the output of a neural network. Two steps, both batched numba
kernels (threads over images, no Python loop per image):

1. :func:`find_peaks` -- local maxima (3 x 3) at least ``edge_px`` from the border, whose
   height above the background (10th percentile) is at least ``min_relative`` times that of the strongest
   maximum (and whose value is at least ``min_absolute``), taken in
   order of height while at least ``min_spacing_px`` from every peak already taken, at most
   ``max_peaks`` per image.
2. Sub-pixel refinement (:func:`refine_peaks`), one of

   - ``"parabolic"``: a 3-point parabola per axis through the maximum of the image (fast,
     biased by up to a few hundredths of a pixel on disk cross-correlations, which are cone-
     shaped near their top, not parabolic);
   - ``"gaussian"``: the same on the logarithm (needs positive values);
   - ``"upsample"``: local DFT upsampling of the correlation (``upsample_factor``, default 16)
     around the parabolic estimate, then a parabola on the fine grid; needs the correlation
     spectrum (:mod:`.bragg` passes it). Slow: ``O(k_y k_x)`` per fine-grid row;
   - ``"fit"`` (:func:`fit_disks`): a Poisson maximum-likelihood fit of the disk model
     ``mu(k) = b + A T(|k - s|)`` (``T`` the probe's radial profile) to the *pattern*, over
     the annulus where the disk edge is, by Fisher scoring from the parabolic estimate. It
     is the efficient estimator under Poisson noise (reaches the Cramer-Rao bound), unbiased on
     noise-free symmetric disks, and costs about one FFT correlation per pattern.

All positions are ``(k_y, k_x)`` in detector pixels, pixel centres at integers.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ...engine.kernels import Kernel

__all__ = [
    "REFINE_METHODS",
    "PeakTable",
    "compact_rows",
    "disk_counts",
    "find_peaks",
    "fit_disks",
    "keep_significant",
    "refine_peaks",
]

REFINE_METHODS = ("none", "parabolic", "gaussian", "upsample", "fit")


class PeakTable:
    """Fixed-size per-image peak arrays; unused slots hold NaN.

    Parameters
    ----------
    yx : ndarray ``(n, max_peaks, 2)`` float64
        Peak positions ``(k_y, k_x)`` in detector pixels, strongest first per image.
    value : ndarray ``(n, max_peaks)`` float64
        Image value at each peak.
    count : ndarray ``(n,)`` int64
        Number of peaks found in each image (the used slots).
    """

    __slots__ = ("count", "value", "yx")

    def __init__(self, yx: np.ndarray, value: np.ndarray, count: np.ndarray):
        self.yx, self.value, self.count = yx, value, count


@numba.njit(cache=True, nogil=True)
def _peaks_one(c, edge, min_rel, min_abs, min_sp2, max_peaks, out_yx, out_v):
    ny, nx = c.shape
    lo_y, hi_y = max(edge, 1), min(ny - edge, ny - 1)
    lo_x, hi_x = max(edge, 1), min(nx - edge, nx - 1)
    if hi_y <= lo_y or hi_x <= lo_x:
        return 0
    # the threshold first (the strongest maximum is the interior maximum), measured from the
    # background level (10th percentile of every 3rd pixel: cheap, and the gaps between disks
    # even when they cover most of the pattern), so a flat background never passes it and
    # float noise on flat regions is never collected
    vmax = -np.inf
    for y in range(lo_y, hi_y):
        for x in range(lo_x, hi_x):
            if c[y, x] > vmax:
                vmax = c[y, x]
    sub = c[::3, ::3].copy().ravel()
    k10 = sub.size // 10
    level = np.partition(sub, k10)[k10]
    span = vmax - level
    if not (span > 1e-5 * max(abs(vmax), abs(level))):
        return 0
    thr = max(min_abs, level + min_rel * span)
    cap = 4096
    cy = np.empty(cap, np.int64)
    cx = np.empty(cap, np.int64)
    cv = np.empty(cap, np.float64)
    n = 0
    for y in range(lo_y, hi_y):
        for x in range(lo_x, hi_x):
            v = c[y, x]
            if not (v >= thr):
                continue
            if (
                v > c[y - 1, x - 1]
                and v > c[y - 1, x]
                and v > c[y - 1, x + 1]
                and v > c[y, x - 1]
                and v >= c[y, x + 1]
                and v >= c[y + 1, x - 1]
                and v >= c[y + 1, x]
                and v >= c[y + 1, x + 1]
            ):
                if n == cap:  # keep the strongest `cap` maxima
                    k = np.argmin(cv)
                    if v <= cv[k]:
                        continue
                    cy[k], cx[k], cv[k] = y, x, v
                else:
                    cy[n], cx[n], cv[n] = y, x, v
                    n += 1
    if n == 0:
        return 0
    order = np.argsort(-cv[:n])
    m = 0
    for k in order:
        v = cv[k]
        if v < thr or m >= max_peaks:
            break
        y, x = cy[k], cx[k]
        ok = True
        for j in range(m):
            dy = out_yx[j, 0] - y
            dx = out_yx[j, 1] - x
            if dy * dy + dx * dx < min_sp2:
                ok = False
                break
        if ok:
            out_yx[m, 0] = y
            out_yx[m, 1] = x
            out_v[m] = v
            m += 1
    return m


@Kernel
def _peaks_batch(c, edge, min_rel, min_abs, min_sp2, max_peaks, out_yx, out_v, count):
    for i in numba.prange(c.shape[0]):
        count[i] = _peaks_one(c[i], edge, min_rel, min_abs, min_sp2, max_peaks, out_yx[i], out_v[i])


def find_peaks(
    images: np.ndarray,
    *,
    edge_px: int = 8,
    min_spacing_px: float = 8.0,
    min_relative: float = 0.02,
    min_absolute: float = 0.0,
    max_peaks: int = 100,
    parallel: bool = True,
) -> PeakTable:
    """Integer peak positions in every image of a stack ``(n, k_y, k_x)`` (or one 2D image).

    Parameters
    ----------
    images : ndarray ``(n, k_y, k_x)`` or ``(k_y, k_x)``
        Correlation-like images (any dtype; computed in float32 unless float64).
    edge_px : int
        Peaks closer than this to the border are ignored, in pixels (default 8).
    min_spacing_px : float
        Minimum distance between two peaks of one image, in pixels (default 8).
    min_relative : float
        Minimum height above the background level (10th percentile of every third pixel) as a
        fraction of the strongest maximum's (default 0.02).
    min_absolute : float
        Minimum image value of a peak (default 0).
    max_peaks : int
        Slots per image (default 100).
    parallel : bool
        Run the numba kernel on threads over images (default True).

    Returns
    -------
    PeakTable
        Peaks sorted by height (strongest first) per image, integer positions.

    Raises
    ------
    DataShapeError
        When ``images`` is not 2D or 3D.

    Notes
    -----
    Local maxima of the 3 x 3 neighbourhood above the threshold are collected (the 4096
    strongest per image), sorted by value, and accepted greedily while at least
    ``min_spacing_px`` from every accepted peak. One pass of ``O(k_y k_x)`` per image.
    """
    c = np.asarray(images)
    if c.ndim == 2:
        c = c[None]
    if c.ndim != 3:
        from ...errors import DataShapeError

        raise DataShapeError(f"images must be (n, k_y, k_x), got shape {c.shape}")
    if c.dtype not in (np.float32, np.float64):
        c = c.astype(np.float32)
    c = np.ascontiguousarray(c)
    n = c.shape[0]
    max_peaks = int(max_peaks)
    yx = np.full((n, max_peaks, 2), np.nan)
    v = np.full((n, max_peaks), np.nan)
    count = np.zeros(n, np.int64)
    _peaks_batch(
        c,
        int(edge_px),
        float(min_relative),
        float(min_absolute),
        float(min_spacing_px) ** 2,
        max_peaks,
        yx,
        v,
        count,
        parallel=parallel,
    )
    return PeakTable(yx, v, count)


@Kernel
def _parabolic_batch(c, yx, count, use_log, out_yx, out_v):
    for i in numba.prange(c.shape[0]):
        ny, nx = c.shape[1], c.shape[2]
        for j in range(count[i]):
            y = int(yx[i, j, 0])
            x = int(yx[i, j, 1])
            v0 = c[i, y, x]
            out_v[i, j] = v0
            if y < 1 or x < 1 or y >= ny - 1 or x >= nx - 1:
                out_yx[i, j, 0], out_yx[i, j, 1] = y, x
                continue
            a, b, cc = c[i, y - 1, x], v0, c[i, y + 1, x]
            d, e, f = c[i, y, x - 1], v0, c[i, y, x + 1]
            if use_log:
                if min(a, cc, d, f) <= 0 or b <= 0:
                    out_yx[i, j, 0], out_yx[i, j, 1] = y, x
                    continue
                a, b, cc = math.log(a), math.log(b), math.log(cc)
                d, e, f = math.log(d), math.log(e), math.log(f)
            den_y = a - 2 * b + cc
            den_x = d - 2 * e + f
            dy = 0.5 * (a - cc) / den_y if den_y < 0 else 0.0
            dx = 0.5 * (d - f) / den_x if den_x < 0 else 0.0
            out_yx[i, j, 0] = y + min(max(dy, -0.5), 0.5)
            out_yx[i, j, 1] = x + min(max(dx, -0.5), 0.5)


def _upsample(spectra: np.ndarray, shape, yx: np.ndarray, count: np.ndarray, factor: int) -> np.ndarray:
    """Local DFT upsampling of the correlation around each peak (a parabola on the fine grid).

    ``spectra`` are the full complex correlation spectra ``(n, k_y, k_x)``.
    """
    ny, nx = shape
    fy = np.fft.fftfreq(ny)
    fx = np.fft.fftfreq(nx)
    m = int(1.5 * factor) | 1
    u = (np.arange(m) - m // 2) / factor
    out = yx.copy()
    for i in range(spectra.shape[0]):  # per image; the peaks of one image go in one matmul
        k = int(count[i])
        if k == 0:
            continue
        p = yx[i, :k]
        ey = np.exp(2j * np.pi * (p[:, 0, None] + u)[:, :, None] * fy)  # (k, m, ny)
        ex = np.exp(2j * np.pi * (p[:, 1, None] + u)[:, :, None] * fx)  # (k, m, nx)
        grid = np.real(ey @ spectra[i] @ ex.transpose(0, 2, 1))  # (k, m, m)
        flat = grid.reshape(k, -1).argmax(axis=1)
        iy, ix = np.divmod(flat, m)
        iy = np.clip(iy, 1, m - 2)
        ix = np.clip(ix, 1, m - 2)
        r = np.arange(k)
        a, b, c = grid[r, iy - 1, ix], grid[r, iy, ix], grid[r, iy + 1, ix]
        d, f = grid[r, iy, ix - 1], grid[r, iy, ix + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            dy = np.where(a - 2 * b + c < 0, 0.5 * (a - c) / (a - 2 * b + c), 0.0)
            dx = np.where(d - 2 * b + f < 0, 0.5 * (d - f) / (d - 2 * b + f), 0.0)
        out[i, :k, 0] = p[:, 0] + (iy - m // 2 + np.clip(dy, -0.5, 0.5)) / factor
        out[i, :k, 1] = p[:, 1] + (ix - m // 2 + np.clip(dx, -0.5, 0.5)) / factor
    return out


# ---- disk model fit ------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _solve4(M, g, out):
    # Gaussian elimination with partial pivoting on a 4 x 4 system; False if singular
    a = M.copy()
    b = g.copy()
    for col in range(4):
        piv = col
        for r in range(col + 1, 4):
            if abs(a[r, col]) > abs(a[piv, col]):
                piv = r
        if abs(a[piv, col]) < 1e-300:
            return False
        if piv != col:
            for k in range(4):
                a[col, k], a[piv, k] = a[piv, k], a[col, k]
            b[col], b[piv] = b[piv], b[col]
        for r in range(col + 1, 4):
            f = a[r, col] / a[col, col]
            for k in range(col, 4):
                a[r, k] -= f * a[col, k]
            b[r] -= f * b[col]
    for r in range(3, -1, -1):
        s = b[r]
        for k in range(r + 1, 4):
            s -= a[r, k] * out[k]
        out[r] = s / a[r, r]
    return True


@numba.njit(cache=True, nogil=True, fastmath=True)
def _fit_one(img, sy, sx, prof, dprof, step, r_in, r_out, n_iter, poisson, res):
    """Fit b + A T(|k - s|) over the annulus r_in <= |k - s| <= r_out; res = (y, x, A, b, ok)."""
    ny, nx = img.shape
    n_tab = prof.shape[0] - 1
    inv_step = 1.0 / step
    M = np.zeros((4, 4))
    g = np.zeros(4)
    delta = np.zeros(4)
    A = 0.0
    b = 0.0
    rin2 = r_in * r_in
    rout2 = r_out * r_out
    res[4] = 0.0
    for it in range(n_iter + 1):
        # iteration 0: linear least squares for A, b at the start position
        m00 = m01 = m02 = m03 = m11 = m12 = m13 = m22 = m23 = m33 = 0.0
        g0 = g1 = g2 = g3 = 0.0
        y0 = max(math.floor(sy - r_out), 0)
        y1 = min(math.ceil(sy + r_out) + 1, ny)
        floor = 1e-3 * abs(A) + 1e-12
        for y in range(y0, y1):
            dy = y - sy
            dy2 = dy * dy
            if dy2 > rout2:
                continue
            half = math.sqrt(rout2 - dy2)
            x0 = max(math.ceil(sx - half), 0)
            x1 = min(math.floor(sx + half) + 1, nx)
            for x in range(x0, x1):
                dx = x - sx
                r2 = dy2 + dx * dx
                if r2 < rin2:
                    continue
                r = math.sqrt(r2)
                q = r * inv_step
                i = int(q)
                if i >= n_tab:
                    T = 0.0
                    dT = 0.0
                else:
                    fq = q - i
                    T = prof[i] + fq * (prof[i + 1] - prof[i])
                    dT = dprof[i] + fq * (dprof[i + 1] - dprof[i])
                p = img[y, x]
                if it == 0:
                    m22 += T * T
                    m23 += T
                    m33 += 1.0
                    g2 += p * T
                    g3 += p
                    continue
                mu = b + A * T
                w = 1.0 / max(mu, floor) if poisson else 1.0
                c = -A * dT / (r if r > 1e-9 else 1e-9)
                j0 = c * dy
                j1 = c * dx
                e = w * (p - mu)
                wj0 = w * j0
                wj1 = w * j1
                wT = w * T
                m00 += wj0 * j0
                m01 += wj0 * j1
                m02 += wj0 * T
                m03 += wj0
                m11 += wj1 * j1
                m12 += wj1 * T
                m13 += wj1
                m22 += wT * T
                m23 += wT
                m33 += w
                g0 += e * j0
                g1 += e * j1
                g2 += e * T
                g3 += e
        if it == 0:
            det = m33 * m22 - m23 * m23
            if m33 < 6 or det <= 0:
                return
            A = (m33 * g2 - m23 * g3) / det
            b = (g3 - A * m23) / m33
            if A <= 0:
                return
            continue
        M[0, 0], M[0, 1], M[0, 2], M[0, 3] = m00, m01, m02, m03
        M[1, 0], M[1, 1], M[1, 2], M[1, 3] = m01, m11, m12, m13
        M[2, 0], M[2, 1], M[2, 2], M[2, 3] = m02, m12, m22, m23
        M[3, 0], M[3, 1], M[3, 2], M[3, 3] = m03, m13, m23, m33
        g[0], g[1], g[2], g[3] = g0, g1, g2, g3
        if not _solve4(M, g, delta):
            return
        step_len = math.sqrt(delta[0] ** 2 + delta[1] ** 2)
        if step_len > 1.0:  # a trust region of one pixel
            delta[0] /= step_len
            delta[1] /= step_len
        sy += delta[0]
        sx += delta[1]
        A += delta[2]
        b += delta[3]
        if step_len < 1e-3:
            break
    res[0] = sy
    res[1] = sx
    res[2] = A
    res[3] = b
    res[4] = 1.0 if A > 0 else 0.0


@Kernel
def _fit_batch(imgs, yx, count, prof, dprof, step, r_in, r_out, n_iter, poisson, out):
    for i in numba.prange(imgs.shape[0]):
        img = imgs[i]
        res = np.empty(5)
        for j in range(count[i]):
            _fit_one(img, yx[i, j, 0], yx[i, j, 1], prof, dprof, step, r_in, r_out, n_iter, poisson, res)
            for k in range(5):
                out[i, j, k] = res[k]


def fit_disks(
    patterns: np.ndarray,
    yx: np.ndarray,
    count: np.ndarray,
    *,
    profile: np.ndarray,
    profile_step_px: float,
    radius_px: float,
    edge_px: float,
    n_iter: int = 3,
    poisson: bool = True,
    parallel: bool = True,
) -> np.ndarray:
    """Fit the disk model to every peak: returns ``(n, max_peaks, 5)`` = y, x, A, b, ok.

    ``A`` is the disk height above the background ``b`` (pattern units per pixel). The fit uses
    the pixels whose distance from the disk centre is within ``max(2, 4 edge)`` px of the
    radius (the edge carries the position information; the plateau and the background next to
    it fix ``A`` and ``b``). ``poisson=False`` gives unweighted least squares (for data that are
    not counts, e.g. background-subtracted or negative values).

    Parameters
    ----------
    patterns : ndarray ``(n, k_y, k_x)``
        The diffraction patterns (not their correlations).
    yx : ndarray ``(n, max_peaks, 2)``
        Start positions ``(k_y, k_x)`` in pixels, e.g. parabolic estimates.
    count : ndarray ``(n,)`` int
        Used slots per pattern.
    profile : ndarray float64
        Disk profile ``T(r)`` (``ProbeTemplate.profile``), 1 on the plateau.
    profile_step_px : float
        Radial step of ``profile`` in pixels.
    radius_px, edge_px : float
        Disk radius and edge width of the template, in pixels.
    n_iter : int
        Fisher-scoring iterations after the linear start (default 3).
    poisson : bool
        Weight the residuals by ``1 / mu`` (Poisson likelihood; default True).
    parallel : bool
        Run the numba kernel on threads over patterns (default True).

    Returns
    -------
    ndarray ``(n, max_peaks, 5)`` float64
        Per peak ``(y, x, A, b, ok)``: refined position in pixels, disk height and background
        in pattern units, ``ok`` 1.0 when the fit ran through with ``A > 0``; with ``ok`` 0.0
        (too few pixels, a singular system or ``A <= 0``) ignore the other fields. NaN in
        unused slots.

    Notes
    -----
    Model ``mu(k) = b + A T(|k - s|)``. Iteration 0 solves the linear least squares for
    ``(A, b)`` at the start position; each further iteration is a Fisher-scoring (Gauss-Newton)
    step on ``(s_y, s_x, A, b)`` with weights ``1 / max(mu, floor)``, the position step limited
    to one pixel, stopping when it is under 0.001 px. Under Poisson noise this is the maximum
    likelihood estimate, which reaches the Cramer-Rao bound.
    """
    imgs = np.ascontiguousarray(patterns)
    if imgs.dtype not in (np.float32, np.float64):
        imgs = imgs.astype(np.float32)
    prof = np.ascontiguousarray(profile, dtype=np.float64)
    dprof = np.gradient(prof, profile_step_px)
    half = max(2.0, 4.0 * edge_px)
    r_in = max(radius_px - half, 0.0)
    r_out = radius_px + half
    out = np.full((*yx.shape[:2], 5), np.nan)
    _fit_batch(
        imgs,
        np.ascontiguousarray(yx, dtype=np.float64),
        np.asarray(count, np.int64),
        prof,
        dprof,
        float(profile_step_px),
        float(r_in),
        float(r_out),
        int(n_iter),
        bool(poisson),
        out,
        parallel=parallel,
    )
    return out


def compact_rows(keep: np.ndarray, *arrays: np.ndarray, width: int | None = None):
    """Move the kept slots of ``arrays`` to the front of each image's row, NaN after them.

    Parameters
    ----------
    keep : ndarray ``(n, slots)`` bool
        Which slots to keep.
    *arrays : ndarray ``(n, slots, ...)``
        Per-slot arrays compacted alike.
    width : int, optional
        Slots in the output, at most this many kept per image (default: the slot count).

    Returns
    -------
    tuple
        The compacted arrays (``(n, width, ...)`` float64, kept slots in order) followed by the
        counts ``(n,)`` int64.
    """
    rank = np.cumsum(keep, axis=1) - 1
    width = keep.shape[1] if width is None else int(width)
    keep = keep & (rank < width)
    i, j = np.nonzero(keep)
    out = []
    for a in arrays:
        c = np.full((a.shape[0], width, *a.shape[2:]), np.nan)
        c[i, rank[i, j]] = a[i, j]
        out.append(c)
    return (*out, keep.sum(axis=1).astype(np.int64))


def keep_significant(rows: np.ndarray, count: np.ndarray, z: np.ndarray, min_significance):
    """Compact peak rows to those whose disk significance is at least ``min_significance``.

    Parameters
    ----------
    rows : ndarray ``(n, slots, ...)``
        Per-peak rows (e.g. ``(y, x, value, ...)``).
    count : ndarray ``(n,)`` int
        Used slots per image.
    z : ndarray ``(n, slots)``
        Disk significance from :func:`disk_counts` (noise units).
    min_significance : float or None
        Threshold on ``z``; None keeps every peak.

    Returns
    -------
    rows : ndarray ``(n, slots, ...)``
        The kept rows first in each image, NaN after them.
    count : ndarray ``(n,)`` int64
        Kept peaks per image.
    """
    if min_significance is None:
        return rows, count
    ok = np.arange(rows.shape[1])[None] < np.asarray(count)[:, None]
    return compact_rows(ok & (z >= float(min_significance)), rows)


@Kernel
def _disk_counts_batch(imgs, yx, count, r, r_in, r_out, quanta, floor, n_sectors, out):
    ny, nx = imgs.shape[1], imgs.shape[2]
    r2, rin2, rout2 = r * r, r_in * r_in, r_out * r_out
    ns = max(n_sectors, 1)
    for i in numba.prange(imgs.shape[0]):
        img = imgs[i]
        sn = np.zeros(ns)
        ss = np.zeros(ns)
        ss2 = np.zeros(ns)
        dn = np.zeros(ns)
        ds = np.zeros(ns)
        ds2 = np.zeros(ns)
        for j in range(count[i]):
            cy, cx = yx[i, j, 0], yx[i, j, 1]
            if not (math.isfinite(cy) and math.isfinite(cx)):
                continue
            s_in = 0.0
            n_in = 0
            sn[:] = 0.0
            ss[:] = 0.0
            ss2[:] = 0.0
            dn[:] = 0.0
            ds[:] = 0.0
            ds2[:] = 0.0
            y0 = max(math.floor(cy - r_out), 0)
            y1 = min(math.ceil(cy + r_out) + 1, ny)
            x0 = max(math.floor(cx - r_out), 0)
            x1 = min(math.ceil(cx + r_out) + 1, nx)
            for y in range(y0, y1):
                dy2 = (y - cy) * (y - cy)
                for x in range(x0, x1):
                    d2 = dy2 + (x - cx) * (x - cx)
                    v = img[y, x]
                    k = 0
                    if n_sectors > 0 and d2 <= rout2:
                        a = math.atan2(y - cy, x - cx)  # -pi .. pi
                        k = min(int((a + math.pi) * ns / (2.0 * math.pi)), ns - 1)
                    if d2 <= r2:
                        s_in += v
                        n_in += 1
                        dn[k] += 1.0
                        ds[k] += v
                        ds2[k] += v * v
                    elif d2 > rin2 and d2 <= rout2:
                        sn[k] += 1.0
                        ss[k] += v
                        ss2[k] += v * v
            q = quanta[i]
            if n_sectors > 0:
                _drop_bright_sectors(sn, ss, ss2, dn, ds, ds2, q)
            n_ring = sn.sum()
            if n_in == 0 or n_ring < 2:
                continue
            b = ss.sum() / n_ring
            var = max((ss2.sum() - n_ring * b * b) / (n_ring - 1), 0.0)
            if floor and q > 0:
                # counting data: the variance is at least Poisson's, with one count of background
                # in the ring at least (an empty ring of a sparse pattern is no proof of no noise)
                var = max(var, q * (max(b, 0.0) + q / n_ring))
            s = s_in - n_in * b
            out[i, j, 0] = s
            # noise of the disk sum and of the background estimate scaled to the disk
            sd = math.sqrt(var * (n_in + n_in * n_in / n_ring))
            out[i, j, 1] = s / sd if sd > 0 else (math.inf if s > 0 else 0.0)


@numba.njit(cache=True, nogil=True)
def _drop_bright_sectors(sn, ss, ss2, dn, ds, ds2, q):
    """Zero the ring sectors much brighter than the median sector (a neighbouring disk's edge).

    A sector is dropped when its sum exceeds ``n_k`` times the median sector mean by more than
    3 standard deviations of that sum, the variance per pixel pooled over the sectors at or
    below the median, plus 3 counting quanta ``q`` when the data are counts (so one or two
    stray counts in a sparse ring drop nothing: Poisson counts of a few electrons are not
    Gaussian), and only when the dropped sectors are one run of at most 3 adjacent ones (one
    neighbour's edge) and the disk's own pixels facing them are not brighter than the rest of
    the disk (light spilling into the disk is a neighbour, not a background edge); otherwise
    nothing is dropped.
    """
    ns = sn.shape[0]
    m = np.full(ns, np.nan)
    for k in range(ns):
        if sn[k] > 0:
            m[k] = ss[k] / sn[k]
    ok = np.isfinite(m)
    if ok.sum() < 3:
        return
    med = np.median(m[ok])
    n_lo = 0.0
    s_lo = 0.0
    s2_lo = 0.0
    for k in range(ns):
        if ok[k] and m[k] <= med:
            n_lo += sn[k]
            s_lo += ss[k]
            s2_lo += ss2[k]
    v_lo = 0.0
    if n_lo > 1:
        b_lo = s_lo / n_lo
        v_lo = max((s2_lo - n_lo * b_lo * b_lo) / (n_lo - 1), 0.0)
    drop = np.zeros(ns, np.bool_)
    for k in range(ns):
        if ok[k] and m[k] > med:
            drop[k] = ss[k] - sn[k] * med > 3.0 * math.sqrt(sn[k] * v_lo) + 3.0 * q
    # one neighbour's edge: one run of at most 3 adjacent sectors (135 deg). Light on several
    # sides is not an edge reaching in: a candidate between disks (the network marks some on
    # thick samples) whose disk area catches their edges would pass against the dark rest
    n_drop = drop.sum()
    starts = 0
    for k in range(ns):
        if drop[k] and not drop[k - 1]:
            starts += 1
    if n_drop == 0 or n_drop > 3 or starts != 1:
        return
    # the neighbour's light must stop in the ring: when the disk's own pixels facing the lit
    # sectors are brighter than the rest of the disk (by the same 3 sd + 3 quanta), the "disk"
    # is that neighbour's light spilling over (a candidate next to a bright disk), and the
    # whole ring stays
    n_a = 0.0
    s_a = 0.0
    n_b = 0.0
    s_b = 0.0
    s2_b = 0.0
    for k in range(ns):
        if drop[k]:
            n_a += dn[k]
            s_a += ds[k]
        else:
            n_b += dn[k]
            s_b += ds[k]
            s2_b += ds2[k]
    if n_a > 0 and n_b > 1:
        # the noise of the disk's own pixels (the rest of the disk's: a disk is brighter and
        # noisier than the ring)
        m_b = s_b / n_b
        v_b = max((s2_b - n_b * m_b * m_b) / (n_b - 1), v_lo)
        excess = s_a - n_a * m_b
        if excess > 3.0 * math.sqrt(v_b * (n_a + n_a * n_a / n_b)) + 3.0 * q:
            return
    for k in range(ns):
        if drop[k]:
            sn[k] = 0.0
            ss[k] = 0.0
            ss2[k] = 0.0


def _counting_quanta(patterns: np.ndarray) -> np.ndarray:
    """Per pattern, its counting unit ``q`` when it looks like counts, else 0.

    Counts: every positive pixel is an integer multiple of the smallest positive one (to 1e-3),
    as for raw counts (``q = 1``) or counts times a gain; negative pixels (dark-subtracted or
    filtered data) or non-integer ratios (noise-free simulations) give 0.

    Parameters
    ----------
    patterns : ndarray ``(n, k_y, k_x)``
        The patterns.

    Returns
    -------
    ndarray ``(n,)`` float64
        The unit per pattern (0: not counting data).
    """
    flat = np.asarray(patterns).reshape(len(patterns), -1)
    out = np.zeros(len(flat))
    for i, img in enumerate(flat):
        pos = img[img > 0]
        if pos.size == 0 or np.any(img < 0):
            continue
        q = float(pos.min())
        ratio = pos / q
        if np.all(np.abs(ratio - np.round(ratio)) < 1e-3):
            out[i] = q
    return out


def disk_counts(
    patterns: np.ndarray,
    yx: np.ndarray,
    count: np.ndarray,
    *,
    radius_px: float,
    ring_px: tuple[float, float] = (1.5, 4.0),
    parallel: bool = True,
    poisson_floor: bool = False,
    background: str = "mean",
) -> np.ndarray:
    """Background-subtracted signal in a disk at every peak, and its significance.

    The background per pixel ``b`` and its variance ``v`` are the mean and sample variance of
    the ring ``radius_px + ring_px[0] < |k - s| <= radius_px + ring_px[1]``; ``S = sum_disk -
    n b`` over the ``n`` pixels whose centres lie in the disk; ``z = S / sqrt(v (n + n^2 /
    n_ring))``, the signal in units of the noise of the disk sum plus that of the background
    estimate (for Poisson counts ``v`` is about ``b``; the empirical variance keeps ``z`` free
    of the data's scale, so gain-normalised or float data work too). ``S`` is about
    proportional to the inverse variance of a disk position at a given dose, the natural
    weight of a peak in a lattice fit; ``z`` says whether a disk is there at all (a flat,
    noise-free background gives ``z = inf`` for any ``S > 0``).

    With ``poisson_floor``, patterns of counting data (every positive pixel an integer multiple
    of the smallest one, ``q``: counts times a gain) get at least the Poisson variance with one
    count of background in the ring, ``v >= q (b + q / n_ring)``: at low dose (1e4 electrons a
    pattern) most rings hold no count at all, their sample variance is 0 and any two or three
    stray counts would be "certain" disks.

    Parameters
    ----------
    patterns : ndarray ``(n, k_y, k_x)``
        The diffraction patterns.
    yx : ndarray ``(n, max_peaks, 2)``
        Disk centres ``(k_y, k_x)`` in pixels; non-finite rows are skipped.
    count : ndarray ``(n,)`` int
        Used slots per pattern.
    radius_px : float
        Disk radius in pixels.
    ring_px : (float, float)
        Inner and outer offset of the background ring beyond ``radius_px``, in pixels
        (default ``(1.5, 4.0)``).
    parallel : bool
        Run the numba kernel on threads over patterns (default True).
    poisson_floor : bool
        Floor the variance of counting data at Poisson's (above; default False: the sample
        variance alone, so noise-free data give ``z = inf``).
    background : "mean" or "robust"
        ``"mean"`` (default): ``b`` and ``v`` over the whole ring. ``"robust"``: the ring is cut
        into 8 sectors and those far brighter than the median sector are left out (a sector's
        sum more than 3 standard deviations, plus 3 counting quanta for counts, above the
        median sector mean; the variance pooled over the sectors at or below the median; only
        when they are one run of at most 3 adjacent sectors, one neighbour's edge), so
        the edge of a brighter neighbouring disk reaching into the ring (small disks next to
        the central beam) does not raise ``b`` and ``v``; on a ring without such an edge it is
        the mean.

    Returns
    -------
    ndarray ``(n, max_peaks, 2)`` float64
        ``(S, z)`` per peak: signal in pattern units (counts for counting data) and its
        significance in noise units; NaN in unused slots.

    Raises
    ------
    ValueError
        When ``background`` is neither ``"mean"`` nor ``"robust"``.
    """
    if background not in ("mean", "robust"):
        raise ValueError(f"background must be 'mean' or 'robust', got {background!r}")
    imgs = np.ascontiguousarray(patterns)
    if imgs.dtype not in (np.float32, np.float64):
        imgs = imgs.astype(np.float32)
    r = float(radius_px)
    out = np.full((*yx.shape[:2], 2), np.nan)
    robust = background == "robust"
    quanta = _counting_quanta(imgs) if (poisson_floor or robust) else np.zeros(len(imgs))
    _disk_counts_batch(
        imgs,
        np.ascontiguousarray(yx, dtype=np.float64),
        np.asarray(count, np.int64),
        r,
        r + float(ring_px[0]),
        r + float(ring_px[1]),
        quanta,
        poisson_floor,
        8 if robust else 0,
        out,
        parallel=parallel,
    )
    return out


def refine_peaks(
    images: np.ndarray,
    table: PeakTable,
    *,
    method: str = "parabolic",
    spectra: np.ndarray | None = None,
    upsample_factor: int = 16,
    parallel: bool = True,
) -> PeakTable:
    """Sub-pixel positions of the peaks of ``table`` on the correlation-like ``images``.

    ``method`` is ``"none"``, ``"parabolic"``, ``"gaussian"`` or ``"upsample"`` (the last needs
    ``spectra``, the full complex spectra of ``images``). For ``"fit"`` on the patterns
    themselves use :func:`fit_disks` after a parabolic refinement.

    Parameters
    ----------
    images : ndarray ``(n, k_y, k_x)`` or ``(k_y, k_x)``
        The images the peaks were found on.
    table : PeakTable
        Integer peaks from :func:`find_peaks`.
    method : {"none", "parabolic", "gaussian", "upsample"}
        Refinement (default ``"parabolic"``; see the module docstring).
    spectra : ndarray ``(n, k_y, k_x)`` complex, optional
        The images' full Fourier spectra; needed by ``"upsample"``.
    upsample_factor : int
        Fine-grid factor of ``"upsample"`` (default 16).
    parallel : bool
        Run the numba kernel on threads over images (default True).

    Returns
    -------
    PeakTable
        Sub-pixel positions (pixels) and the image value at the integer maximum.

    Raises
    ------
    ValueError
        When ``method`` is unknown, or ``"upsample"`` is asked without ``spectra``.

    Notes
    -----
    ``"parabolic"`` fits ``y = a + b t + c t^2`` through the maximum and its two neighbours per
    axis (offset ``(f(-1) - f(1)) / (2 (f(-1) - 2 f(0) + f(1)))``, clipped to half a pixel);
    ``"gaussian"`` does the same on ``log f``. ``"upsample"`` evaluates the inverse DFT of the
    spectrum on a ``1/factor``-pixel grid of about 1.5 px around each parabolic estimate (one
    matrix product per image, as in Guizar-Sicairos et al. 2008) and refines its maximum by a
    parabola.

    References
    ----------
    .. [1] M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, "Efficient subpixel image
       registration algorithms", Opt. Lett. 33, 156-158 (2008).
    """
    if method == "none":
        return table
    if method not in ("parabolic", "gaussian", "upsample"):
        raise ValueError(f"method must be one of {REFINE_METHODS[:4]}, got {method!r}")
    c = np.ascontiguousarray(images if images.ndim == 3 else images[None])
    out_yx = np.full_like(table.yx, np.nan)
    out_v = np.full_like(table.value, np.nan)
    _parabolic_batch(c, table.yx, table.count, method == "gaussian", out_yx, out_v, parallel=parallel)
    if method == "upsample":
        if spectra is None:
            raise ValueError("method='upsample' needs the correlation spectra")
        out_yx = _upsample(spectra, c.shape[1:], out_yx, table.count, int(upsample_factor))
    return PeakTable(out_yx, out_v, table.count)
