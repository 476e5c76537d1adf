"""Lattice vectors from Bragg peaks: choice of g1, g2, indexing, per-pattern lattice fits.

1. :func:`find_lattice` -- g1, g2 from the Bragg vector map: its peaks relative to the origin,
   g1 the shortest vector, g2 the shortest one at least 20 degrees away from g1's line, with
   g2 turned so that ``g1 x g2 > 0`` in (x, y); then a weighted least-squares fit of both to
   every indexed peak of the map. Or give ``g1``/``g2`` yourself (:class:`Lattice`).
2. :func:`fit_lattice` -- every peak of every pattern is indexed ``(h, k)`` against the
   lattice (rounding ``G^-1 (q - origin)``; peaks further than ``max_index_error`` x the
   shorter vector from a lattice site are left out), and each pattern gets a weighted
   least-squares fit ``q = o + h g1 + k g2`` (origin fitted too, so descan needs no
   calibration). The normal equations are accumulated and solved (3 x 3 LU) per pattern in
   a numba kernel over the CSR peak list; no Python loop over patterns. The worst peak of each
   pattern is dropped when its residual exceeds ``outlier_sigma`` robust standard deviations
   (of all peaks), and the fit repeated (up to three peaks per pattern);
   indexing is then redone with each pattern's own lattice, so large strains index right.

Vectors are ``(y, x)`` pairs in detector pixels (``g1 = (g1_y, g1_x)``), y first as
everywhere. Patterns whose fit fails get NaN and a reason code (:data:`FIT_REASONS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
from scipy import ndimage

from ..._docstrings import cite
from ...data.results import BraggPeaks, DiffractionImage, RealSpaceMap
from ...engine.jobs import Job, Progress, eager
from ...errors import DataShapeError, Napari4DSTEMError
from .disks import _origin_per_peak, bragg_vector_map, correct_ellipse, origin_from_peaks
from .fit_weights import FIT_WEIGHTS
from .peaks import find_peaks

__all__ = [
    "FIT_REASONS",
    "FIT_WEIGHTS",
    "Lattice",
    "LatticeError",
    "LatticeFit",
    "find_lattice",
    "fit_lattice",
    "iter_fit_lattice",
]

FIT_REASONS = {
    0: "ok",
    1: "no peaks in the pattern",
    2: "too few indexed peaks for a lattice fit",
    3: "indexed peaks are collinear: the lattice is undetermined",
}


class LatticeError(Napari4DSTEMError, ValueError):
    """No lattice can be found or fitted (too few peaks, collinear peaks, bad vectors)."""


@dataclass(frozen=True)
class Lattice:
    """Two reciprocal lattice vectors ``(y, x)`` in detector pixels (the basis of the indexing).

    Parameters
    ----------
    g1, g2 : (float, float)
        The vectors ``(y, x)`` in detector pixels; finite and not parallel.
    params : dict, optional
        How they were found (not compared).

    Raises
    ------
    LatticeError
        When a vector is not finite, zero, or the two are parallel.
    """

    g1: tuple[float, float]
    g2: tuple[float, float]
    params: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        """Store the vectors as float pairs; refuse non-finite or parallel ones."""
        g1 = tuple(float(v) for v in np.asarray(self.g1, dtype=float).reshape(2))
        g2 = tuple(float(v) for v in np.asarray(self.g2, dtype=float).reshape(2))
        if not all(math.isfinite(v) for v in g1 + g2):
            raise LatticeError(f"lattice vectors must be finite, got g1={g1}, g2={g2}")
        for name, g in (("g1", g1), ("g2", g2)):
            if g == (0.0, 0.0):
                raise LatticeError(f"{name} is zero: not a lattice basis")
        cross = g1[1] * g2[0] - g1[0] * g2[1]
        if abs(cross) < 1e-6 * max(math.hypot(*g1) * math.hypot(*g2), 1e-300):
            raise LatticeError(f"g1={g1} and g2={g2} are parallel: not a lattice basis")
        object.__setattr__(self, "g1", g1)
        object.__setattr__(self, "g2", g2)

    @property
    def matrix(self) -> np.ndarray:
        """``G`` with columns g1, g2, rows (y, x): ``q - origin = G @ (h, k)``."""
        return np.array([[self.g1[0], self.g2[0]], [self.g1[1], self.g2[1]]])


def _bvm_vectors(bvm: DiffractionImage, min_relative: float, smooth_px: float) -> tuple[np.ndarray, np.ndarray]:
    s = int(bvm.params.get("sampling", 1))
    oy, ox = bvm.params.get("origin_at_px", (bvm.data.shape[0] // (2 * s), bvm.data.shape[1] // (2 * s)))
    img = ndimage.gaussian_filter(np.asarray(bvm.data, dtype=np.float64), smooth_px * s)
    t = find_peaks(
        img.astype(np.float32),
        edge_px=2,
        min_spacing_px=3 * s,
        min_relative=min_relative,
        max_peaks=200,
        parallel=False,
    )
    yx = t.yx[0, : t.count[0]]
    v = t.value[0, : t.count[0]]
    # sub-pixel by a 3 x 3 centroid on the smoothed map
    out = []
    for y, x in yx.astype(int):
        w = img[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
        yy, xx = np.mgrid[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
        out.append(((w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()))
    vec = np.asarray(out, dtype=float).reshape(-1, 2) / s - np.array([oy, ox])
    return vec, v


def _weighted_basis_fit(vec: np.ndarray, w: np.ndarray, G: np.ndarray, tol: float) -> np.ndarray:
    """Least-squares G from vectors indexed against G (origin fixed at 0)."""
    hk = np.rint(np.linalg.solve(G, vec.T).T)
    dev = np.hypot(*(vec - hk @ G.T).T)
    ok = (dev < tol) & np.any(hk != 0, axis=1)
    if ok.sum() < 2 or abs(np.linalg.det(hk[ok].T @ hk[ok])) < 1e-9:
        return G
    sw = np.sqrt(w[ok])[:, None]
    sol, *_ = np.linalg.lstsq(hk[ok] * sw, vec[ok] * sw, rcond=None)  # rows: g1, g2 as (y, x)
    return sol.T


@cite
def find_lattice(
    source: DiffractionImage | BraggPeaks,
    *,
    g1: tuple[float, float] | None = None,
    g2: tuple[float, float] | None = None,
    min_relative: float = 0.05,
    min_length_px: float = 3.0,
    smooth_px: float = 1.0,
    refine: bool = True,
) -> Lattice:
    """Lattice vectors g1, g2 (``(y, x)`` px) from a Bragg vector map (or from peaks).

    Parameters
    ----------
    source : DiffractionImage (from :func:`~.bragg.bragg_vector_map`) or BraggPeaks
        With BraggPeaks the map is made first (origin from the calibration, else from the
        central beam of every pattern).
    g1, g2 : (float, float), optional
        Your own vectors; with ``refine`` they are only the starting point of the fit to the map
        (the indexing basis stays yours).
    min_relative : float
        Map peaks below this fraction of the strongest non-central peak are ignored.
    min_length_px : float
        Shorter vectors are the central beam.
    smooth_px : float
        Gaussian smoothing of the map before its peaks are found, in detector pixels.
    refine : bool
        Refine g1, g2 by a weighted least-squares fit to every indexed map peak (default True).

    Returns
    -------
    Lattice
        g1, g2 ``(y, x)`` in detector pixels, ``g1 x g2 > 0`` in (x, y) components.

    Raises
    ------
    LatticeError
        When only one of g1, g2 is given, or the map has fewer than two non-collinear peaks.
    TypeError
        When ``source`` is neither a DiffractionImage nor BraggPeaks.

    Notes
    -----
    The map is smoothed, its peaks found (:func:`~.peaks.find_peaks`) and centred by a 3 x 3
    centroid. g1 is the shortest vector longer than ``min_length_px``; g2 the shortest at least
    20 degrees off g1's line. With ``refine``, three rounds of indexing ``(h, k) =
    rint(G^-1 v)`` (within a quarter of the shorter vector) and a least-squares fit
    ``v = h g1 + k g2`` weighted by the map's peak heights.

    References
    ----------
    %(savitzky2021_1)s
    """
    if isinstance(source, BraggPeaks):
        origin = None
        cal = source.calibration
        if cal.origin_map_px is None and cal.origin_px is None:
            origin = origin_from_peaks(source)
        source = bragg_vector_map(source, origin=origin)
    if not isinstance(source, DiffractionImage):
        raise TypeError(f"find_lattice needs a DiffractionImage or BraggPeaks, got {type(source).__name__}")
    if (g1 is None) != (g2 is None):
        raise LatticeError("give both g1 and g2, or neither")
    vec, w = _bvm_vectors(source, 0.0, smooth_px)
    far = np.hypot(*vec.T) >= min_length_px if len(vec) else np.zeros(0, bool)
    vec, w = vec[far], w[far]
    if len(w):
        keep = w >= min_relative * w.max()
        vec, w = vec[keep], w[keep]
    if g1 is not None:
        G = Lattice(g1, g2).matrix
        how = "given"
    else:
        if len(vec) < 2:
            raise LatticeError(
                f"the Bragg vector map has {len(vec)} peak(s) besides the central beam: need two "
                "non-collinear ones (lower min_relative, or give g1 and g2)"
            )
        order = np.argsort(np.hypot(*vec.T))
        vec_s = vec[order]
        a = vec_s[0]
        cand = [
            v
            for v in vec_s[1:]
            if abs(a[1] * v[0] - a[0] * v[1]) > math.sin(math.radians(20)) * np.hypot(*a) * np.hypot(*v)
        ]
        if not cand:
            raise LatticeError("all Bragg vector map peaks lie on one line: give g1 and g2")
        b = cand[0]
        if a[1] * b[0] - a[0] * b[1] < 0:  # g1 x g2 > 0 with (x, y) components
            b = -b
        G = np.array([[a[0], b[0]], [a[1], b[1]]])
        how = "automatic"
    if refine and len(vec) >= 2:
        tol = 0.25 * min(np.hypot(*G[:, 0]), np.hypot(*G[:, 1]))
        for _ in range(3):
            G = _weighted_basis_fit(vec, w, G, tol)
    return Lattice(
        (G[0, 0], G[1, 0]),
        (G[0, 1], G[1, 1]),
        params={"method": how, "refined": bool(refine), "n_map_peaks": len(vec)},
    )


@dataclass(frozen=True, eq=False)
class LatticeFit:
    """Per-pattern lattice fits.

    Attributes
    ----------
    g1, g2, origin : ndarray ``(scan_y, scan_x, 2)``
        Fitted vectors and origin, ``(y, x)`` detector pixels; NaN where the fit failed.
    residual_px : ndarray ``(scan_y, scan_x)``
        Weighted RMS distance of the used peaks from their fitted lattice sites (a confidence:
        large means a poor fit).
    n_peaks : ndarray ``(scan_y, scan_x)`` int
        Peaks used in each fit.
    reason : ndarray ``(scan_y, scan_x)`` uint8
        0 where the fit is valid, else a key of :data:`FIT_REASONS`.
    lattice : Lattice
        The indexing basis.
    calibration : Calibration or None
        The calibration of the peaks.
    params : dict
        The fit's parameters.
    """

    g1: np.ndarray
    g2: np.ndarray
    origin: np.ndarray
    residual_px: np.ndarray
    n_peaks: np.ndarray
    reason: np.ndarray
    lattice: Lattice
    calibration: Any = None
    params: dict = field(default_factory=dict)

    @property
    def valid(self) -> np.ndarray:
        """Bool ``(scan_y, scan_x)``: True where the fit is valid (reason 0)."""
        return self.reason == 0

    def summary(self) -> str:
        """How many fits failed and why, in one line."""
        n = self.reason.size
        parts = [f"{int(self.valid.sum())}/{n} patterns fitted"]
        for code, text in FIT_REASONS.items():
            k = int((self.reason == code).sum())
            if code and k:
                parts.append(f"{k} {text}")
        return "; ".join(parts)

    def to_map(self) -> RealSpaceMap:
        """The fits as one RealSpaceMap ``(scan_y, scan_x, 8)`` in detector pixels.

        Returns
        -------
        RealSpaceMap
            Channels g1_y, g1_x, g2_y, g2_x, origin_y, origin_x, residual_px, n_peaks.
        """
        data = np.concatenate(
            [self.g1, self.g2, self.origin, self.residual_px[..., None], self.n_peaks[..., None]],
            axis=-1,
        )
        kw = {} if self.calibration is None else {"calibration": self.calibration}
        return RealSpaceMap(
            data,
            name="lattice",
            units="px",
            channels=(
                "g1_y",
                "g1_x",
                "g2_y",
                "g2_x",
                "origin_y",
                "origin_x",
                "residual_px",
                "n_peaks",
            ),
            params={**self.params, "reasons": FIT_REASONS, "summary": self.summary()},
            **kw,
        )


@numba.njit(cache=True, nogil=True)
def _fit_pass(offsets, vy, vx, finite, w0, G, cy, cx, have_fit, tol, use_next, use, indexed, res, z, good, ok):
    """One indexing + fitting pass over every pattern (CSR ``offsets``), in place.

    Each pattern is indexed with its own basis from the previous pass (``cy``, ``cx``) where
    that fit is finite (``have_fit``), else with ``G`` and a zero origin; then the weighted
    3 x 3 normal equations of ``q = o + h g1 + k g2`` are accumulated in peak order and solved
    (LU with partial pivoting; NaN and ``ok`` False when ill-conditioned), and every peak gets
    its residual ``res``, weighted residual ``z`` and ``good`` flag.
    """
    n_pos = len(offsets) - 1
    M = np.empty((3, 3))
    R = np.empty((3, 2))
    for p in range(n_pos):
        i0, i1 = offsets[p], offsets[p + 1]
        a, b, c, d = G[0, 0], G[0, 1], G[1, 0], G[1, 1]
        oy = 0.0
        ox = 0.0
        if have_fit and np.isfinite(cy[p, 0]) and np.isfinite(cx[p, 0]):
            a, b, c, d = cy[p, 1], cy[p, 2], cx[p, 1], cx[p, 2]
            oy, ox = cy[p, 0], cx[p, 0]
        det2 = a * d - b * c
        s0 = s1 = s2 = s3 = s4 = s5 = 0.0
        y0 = y1 = y2 = x0 = x1 = x2 = 0.0
        for i in range(i0, i1):
            if finite[i]:
                r0 = vy[i] - oy
                r1 = vx[i] - ox
            else:
                r0 = 0.0
                r1 = 0.0
            h = np.rint((d * r0 - b * r1) / det2)
            k = np.rint((a * r1 - c * r0) / det2)
            dev = math.hypot(r0 - a * h - b * k, r1 - c * h - d * k)
            ind = finite[i] and dev < tol
            indexed[i] = ind
            u = ind and use_next[i]
            use[i] = u
            w = w0[i] if u else 0.0
            # the same products in the same order as the former bincount accumulations
            s0 += w
            s1 += w * h
            s2 += w * k
            s3 += w * h * h
            s4 += w * h * k
            s5 += w * k * k
            y0 += w * vy[i]
            y1 += w * vy[i] * h
            y2 += w * vy[i] * k
            x0 += w * vx[i]
            x1 += w * vx[i] * h
            x2 += w * vx[i] * k
            res[i] = h  # h, k kept for the residuals below
            z[i] = k
        M[0, 0], M[0, 1], M[0, 2] = s0, s1, s2
        M[1, 0], M[1, 1], M[1, 2] = s1, s3, s4
        M[2, 0], M[2, 1], M[2, 2] = s2, s4, s5
        R[0, 0], R[1, 0], R[2, 0] = y0, y1, y2
        R[0, 1], R[1, 1], R[2, 1] = x0, x1, x2
        # LU with partial pivoting (as LAPACK getrf); det for the conditioning test
        det = 1.0
        for col in range(3):
            piv = col
            best = abs(M[col, col])
            for r in range(col + 1, 3):
                if abs(M[r, col]) > best:
                    best = abs(M[r, col])
                    piv = r
            if piv != col:
                det = -det
                for j in range(3):
                    M[col, j], M[piv, j] = M[piv, j], M[col, j]
                R[col, 0], R[piv, 0] = R[piv, 0], R[col, 0]
                R[col, 1], R[piv, 1] = R[piv, 1], R[col, 1]
            det *= M[col, col]
            if M[col, col] != 0.0:
                for r in range(col + 1, 3):
                    f = M[r, col] / M[col, col]
                    for j in range(col + 1, 3):
                        M[r, j] -= f * M[col, j]
                    R[r, 0] -= f * R[col, 0]
                    R[r, 1] -= f * R[col, 1]
        # conditioning relative to the number of peaks: collinear (h, k) give a ~0 determinant
        scale = max(s0, 1e-300) * max(s3 + s5, 1e-300) ** 2
        okp = abs(det) > 1e-6 * scale
        ok[p] = okp
        if okp:
            for col in range(2):
                for r in range(2, -1, -1):
                    acc = R[r, col]
                    for j in range(r + 1, 3):
                        acc -= M[r, j] * R[j, col]
                    R[r, col] = acc / M[r, r]
            for j in range(3):
                cy[p, j] = R[j, 0]
                cx[p, j] = R[j, 1]
        else:
            for j in range(3):
                cy[p, j] = np.nan
                cx[p, j] = np.nan
        for i in range(i0, i1):
            h = res[i]
            k = z[i]
            pred_y = cy[p, 0] + cy[p, 1] * h + cy[p, 2] * k
            pred_x = cx[p, 0] + cx[p, 1] * h + cx[p, 2] * k
            r = math.hypot(vy[i] - pred_y, vx[i] - pred_x)
            res[i] = r
            # robust scale of residual x sqrt(weight) (the weights are inverse variances)
            z[i] = r * math.sqrt(max(w0[i], 0.0))
            good[i] = use[i] and np.isfinite(r)


@numba.njit(cache=True, nogil=True)
def _drop_worst(offsets, z, good, thr, use_next):
    """Drop the worst peak of each pattern (the first on ties) if its ``z`` exceeds ``thr``."""
    for p in range(len(offsets) - 1):
        best = -np.inf
        arg = -1
        for i in range(offsets[p], offsets[p + 1]):
            if good[i] and z[i] > best:
                best = z[i]
                arg = i
        if arg >= 0 and best > thr:
            use_next[arg] = False


@numba.njit(cache=True, nogil=True)
def _fit_totals(offsets, use, w0, res, n_used, wsum, rss):
    """Per pattern: peaks used (with positive weight), sum of weights, weighted sum of res^2."""
    for p in range(len(offsets) - 1):
        n = 0
        sw = 0.0
        sr = 0.0
        for i in range(offsets[p], offsets[p + 1]):
            w = w0[i] if use[i] else 0.0
            if use[i] and w0[i] > 0:
                n += 1
            sw += w
            r = res[i] if use[i] else 0.0
            sr += w * (r * r)
        n_used[p] = n
        wsum[p] = sw
        rss[p] = sr


def _peak_weights(peaks: BraggPeaks, weights: str, recorded: bool = False) -> np.ndarray:
    """Lattice-fit weight per peak (0 for a non-finite or negative one).

    ``recorded``: ``weights`` came from ``peaks.params["fit_weights"]`` (``weights="auto"``).
    """
    if weights == "intensity":
        w = peaks.intensity
    elif weights == "intensity*correlation":
        w = peaks.intensity * peaks.correlation
    elif weights == "uniform":
        return np.ones(peaks.n_peaks)
    else:
        where = ' in peaks.params["fit_weights"] (weights="auto" follows it)' if recorded else ""
        raise LatticeError(f"weights must be one of {', '.join(FIT_WEIGHTS)}, got {weights!r}{where}")
    return np.where(np.isfinite(w) & (w > 0), w, 0.0)


@cite
def iter_fit_lattice(
    peaks: BraggPeaks,
    lattice: Lattice,
    *,
    origin: Any = None,
    max_index_error: float = 0.25,
    min_peaks: int = 4,
    weights: str = "auto",
    outlier_sigma: float = 4.0,
    ellipse: tuple[float, float, float] | bool | None = None,
) -> Job[LatticeFit]:
    """Job: fit ``q = o + h g1 + k g2`` to the peaks of every pattern, a step a pass.

    See the module docstring; progress after each of the three passes.

    Parameters
    ----------
    peaks : BraggPeaks
        Peaks in raw detector pixels (``intensity`` used as weights).
    lattice : Lattice
        Indexing basis (from :func:`find_lattice` or your own).
    origin : None, (2,), ``(scan_y, scan_x, 2)`` or RealSpaceMap
        Origin used for the *indexing* only (the fit has its own origin); default the
        calibration's, else the strongest peak near the detector centre of each pattern.
    max_index_error : float
        Peaks further than this fraction of the shorter lattice vector from a lattice site are
        not indexed (left out of the fit).
    min_peaks : int
        Fewer indexed peaks than this (at least 3) and the pattern gets NaN (reason 2).
    weights : {"auto", "intensity", "intensity*correlation", "uniform"}
        Peak weights: the integrated disk intensity (about proportional to the inverse
        variance of a disk position at realistic dose), that times the detection score
        (``correlation``; for the network's peaks its confidence: height x sharpness of its
        predicted peak), or equal weights. ``"auto"`` (default): what the peak finder recorded
        in ``peaks.params["fit_weights"]`` (the network's peaks: ``"intensity*correlation"``),
        else ``"intensity"``.
    outlier_sigma : float
        Drop peaks whose residual exceeds this many robust standard deviations (of all peaks
        with that weight), then refit; ``inf`` keeps every indexed peak.
    ellipse : (a, b, theta_deg), True or None
        Correct the elliptic distortion of the peak vectors first (True: the calibration's).

    Yields
    ------
    Progress
        ``done`` passes of 3: where a job shows its progress and stops on Cancel. No partial
        map: between passes the outliers are dropped against one robust scale over all peaks of
        all patterns, so no pattern's fit is final before the last pass.

    Returns
    -------
    LatticeFit
        The generator's return value: per-pattern g1, g2 and origin ``(scan_y, scan_x, 2)`` in
        detector pixels, weighted RMS residual (px), peaks used and a reason code; NaN where the
        fit failed.

    Raises
    ------
    TypeError
        When ``lattice`` is not a :class:`Lattice`.
    LatticeError
        When ``weights`` is unknown (or, under ``"auto"``, the recorded ``fit_weights`` is).
    DataShapeError
        When ``origin`` has the wrong shape.

    Notes
    -----
    Three passes, each a numba kernel over the CSR peak list (no Python loop over patterns):
    index every peak ``(h, k) = rint(G^-1 (q - o))`` (``G`` the pattern's previous fit after
    the first pass), accumulate the weighted 3 x 3 normal equations of ``q = o + h g1 + k g2``
    and solve them by LU; between passes the worst peak of a pattern is dropped when its
    weighted residual exceeds ``outlier_sigma`` x 1.4826 x the median over all peaks (MAD
    scale). ``O(n_peaks)`` per pass. The per-pattern lattice fit of py4DSTEM's strain mapping.

    References
    ----------
    %(savitzky2021_1)s
    %(pekin2017_2)s
    """
    if not isinstance(lattice, Lattice):
        raise TypeError(f"lattice must be a Lattice, got {type(lattice).__name__}")
    min_peaks = max(3, int(min_peaks))
    n_pos = len(peaks.offsets) - 1
    sy, sx = peaks.scan_shape
    pos = peaks.position_index()
    try:
        o = _origin_per_peak(peaks, origin)
    except DataShapeError:
        o = _origin_per_peak(peaks, origin_from_peaks(peaks))
    vy, vx = peaks.qy - o[:, 0], peaks.qx - o[:, 1]
    if ellipse is True:
        ellipse = peaks.calibration.ellipse
    if ellipse:
        vy, vx = correct_ellipse(vy, vx, ellipse)
    recorded = weights == "auto" and "fit_weights" in peaks.params
    if weights == "auto":
        weights = str(peaks.params.get("fit_weights", "intensity"))
    w0 = _peak_weights(peaks, weights, recorded)
    finite = np.isfinite(vy) & np.isfinite(vx)
    G = lattice.matrix
    tol = float(max_index_error) * min(np.hypot(*G[:, 0]), np.hypot(*G[:, 1]))
    # numba kernels loop over the patterns (CSR offsets): each pass indexes every pattern with
    # its own basis (the global one first, then the pattern's previous fit), accumulates and
    # solves its normal equations; only the global robust scale is taken here, between passes
    offsets = np.ascontiguousarray(peaks.offsets, dtype=np.int64)
    vy = np.ascontiguousarray(vy, dtype=np.float64)
    vx = np.ascontiguousarray(vx, dtype=np.float64)
    w0 = np.ascontiguousarray(w0, dtype=np.float64)
    n = peaks.n_peaks
    cy = np.zeros((n_pos, 3))
    cx = np.zeros((n_pos, 3))
    ok = np.zeros(n_pos, bool)
    use, indexed, good = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    res, z = np.empty(n), np.empty(n)
    use_next = finite.copy()
    n_all = np.diff(peaks.offsets)
    for it in range(3):
        _fit_pass(offsets, vy, vx, finite, w0, G, cy, cx, it > 0, tol, use_next, use, indexed,
                  res, z, good, ok)  # fmt: skip
        if good.any():
            sig = 1.4826 * np.median(z[good])
            # exact (simulated) data: a floor of 1e-6 px, so a zero median still rejects outliers
            sig = max(sig, 1e-6 * np.sqrt(np.median(w0[good])))
        else:
            sig = np.inf
        # drop the worst peak of each pattern if it is an outlier (one at a time: one bad peak
        # drags the residuals of its neighbours up too)
        use_next = use.copy() if it else indexed.copy()
        if np.isfinite(outlier_sigma) and np.isfinite(sig) and sig > 0:
            _drop_worst(offsets, z, good, float(outlier_sigma * sig), use_next)
        yield Progress(it + 1, 3, f"lattice fit of every pattern: pass {it + 1} of 3")
    n_used = np.zeros(n_pos, np.int64)
    wsum, rss = np.zeros(n_pos), np.zeros(n_pos)
    _fit_totals(offsets, use, w0, res, n_used, wsum, rss)
    reason = np.zeros(n_pos, np.uint8)
    reason[~ok] = 3
    reason[n_used < min_peaks] = 2
    reason[n_all == 0] = 1
    bad = reason != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        resid = np.sqrt(rss / wsum)
    # back to detector pixels (origin); vectors stay in the (ellipse-corrected) frame
    g1 = np.stack([cy[:, 1], cx[:, 1]], -1)
    g2 = np.stack([cy[:, 2], cx[:, 2]], -1)
    org = np.stack([cy[:, 0], cx[:, 0]], -1)
    if not ellipse:
        o_pat = np.full((n_pos, 2), np.nan)
        o_pat[pos] = o
        org = org + np.where(np.isfinite(o_pat), o_pat, 0.0)
    for a in (g1, g2, org):
        a[bad] = np.nan
    resid[bad] = np.nan
    return LatticeFit(
        g1=g1.reshape(sy, sx, 2),
        g2=g2.reshape(sy, sx, 2),
        origin=org.reshape(sy, sx, 2),
        residual_px=resid.reshape(sy, sx),
        n_peaks=n_used.reshape(sy, sx),
        reason=reason.reshape(sy, sx),
        lattice=lattice,
        calibration=peaks.calibration,
        params={
            "lattice_g1_px": list(lattice.g1),
            "lattice_g2_px": list(lattice.g2),
            "max_index_error": float(max_index_error),
            "min_peaks": min_peaks,
            "weights": weights,
            "outlier_sigma": float(outlier_sigma),
            "ellipse": list(ellipse) if ellipse else None,
            "vectors": "(y, x) detector pixels" + (", ellipse-corrected" if ellipse else ""),
        },
    )


fit_lattice = eager(
    iter_fit_lattice, "Fit ``q = o + h g1 + k g2`` to the peaks of every pattern (see the module docstring)."
)
