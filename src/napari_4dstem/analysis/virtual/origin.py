"""Origin of the diffraction patterns (the unscattered beam) and its descan plane fit.

1. :func:`find_bf_disk` -- centre and radius of the bright-field disk in one pattern (e.g. the
   mean pattern): a logistic-edge disk fitted to the pixels (:func:`fit_soft_disk`), started
   from the connected region above half the maximum around the brightest pixel.
2. :func:`measure_origin` -- the origin of every pattern: ``method="com"`` (centre of mass of
   the whole pattern, or inside a detector) or ``method="disk"`` (centre of the bright-field
   disk: background-subtracted centre of mass inside a circle slightly larger than the disk,
   re-centred until it stops moving; Bragg disks outside the circle do not bias it).
3. :func:`fit_origin_plane` -- the descan: ``origin(iy, ix) = c + a * iy + b * ix`` for each
   detector axis, fitted by least squares with outliers rejected (residual beyond
   ``outlier_sigma`` robust standard deviations, estimated from the median absolute deviation,
   refitted until the inliers stop changing). :meth:`OriginFit.to_calibration` puts the
   fitted map into a :class:`~napari_4dstem.data.calibration.Calibration`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import least_squares

from ...data.calibration import Calibration
from ...data.results import RealSpaceMap
from ...engine.driver import map_scan
from ...engine.jobs import Job, eager, job_doc
from ...engine.kernels import as_kernel_input, disk_center_block
from ...errors import DataShapeError
from .com import iter_center_of_mass
from .detectors import Detector
from .images import as_datacube

__all__ = [
    "BFDisk",
    "OriginFit",
    "find_bf_disk",
    "fit_origin_plane",
    "fit_soft_disk",
    "iter_measure_origin",
    "measure_origin",
]


# the narrowest logistic edge fitted (px): a sharper one leaves the fit no gradient in R (the
# pixels either side of the edge at 0 and 1); a hard point-sampled 4 px disk stuck 0.4 px small
# at 0.02 px (it is now refused as saturated-looking and keeps the thresholded first guess)
E_MIN_PX = 0.1


@dataclass(frozen=True)
class BFDisk:
    """The bright-field disk of a pattern: centre ``(k_y, k_x)`` and radius, in pixels.

    Attributes
    ----------
    center_px : (float, float)
        Disk centre ``(k_y, k_x)``.
    radius_px : float
        Disk radius: where the fitted logistic edge is half way between background and plateau.
    edge_px : float or None
        Width ``e`` of the fitted logistic edge ``1 / (1 + exp((r - R) / e))`` (None when the
        fit failed and the radius is the thresholded area's).
    """

    center_px: tuple[float, float]
    radius_px: float
    edge_px: float | None = None


def soft_disk_profile(r: np.ndarray, radius: float, edge: float) -> np.ndarray:
    """The package's disk profile: 1 inside, 0 outside, ``0.5`` at ``r = radius``, logistic width ``edge``."""
    return 0.5 * (1.0 - np.tanh((r - radius) / (2.0 * edge)))


def _threshold_disk(p: np.ndarray, threshold: float) -> tuple[tuple[float, float], float]:
    """First guess: centre and ``sqrt(area / pi)`` of the thresholded region holding the maximum.

    The region is above ``threshold`` of the way from the median to the maximum of the smoothed
    pattern. Noisy (sparse-count) patterns are smoothed more (2, 4, 8 px) until that region is
    one solid blob, not a speck of noise.
    """
    first = None
    for sigma in (1.0, 2.0, 4.0, 8.0):
        s = ndimage.gaussian_filter(p, sigma)
        lo = np.median(s)
        if s.max() <= lo:
            if first is None:
                raise DataShapeError("the pattern is flat: no bright-field disk to find")
            break
        region = s > lo + threshold * (s.max() - lo)
        labels, _ = ndimage.label(region)
        disk = labels == labels[np.unravel_index(np.argmax(s), s.shape)]
        w = np.where(disk, p - lo, 0.0)
        if w.sum() <= 0:
            w = disk.astype(np.float64)
        cy, cx = ndimage.center_of_mass(w)
        area = int(disk.sum())
        guess = ((float(cy), float(cx)), float(np.sqrt(area / np.pi)))
        if first is None:
            first = guess
        # solid: the blob fills the circle of its own area, and holds most of what is above threshold
        yy, xx = np.indices(p.shape)
        circle = np.hypot(yy - cy, xx - cx) <= guess[1]
        fill = (disk & circle).sum() / max(circle.sum(), 1)
        if area >= 5 and fill >= 0.8 and area >= 0.5 * region.sum():
            return guess
    return first


def fit_soft_disk(
    pattern: np.ndarray,
    center_px: tuple[float, float],
    radius_px: float,
    *,
    fit_center: bool = True,
    margin_px: float | None = None,
) -> tuple[tuple[float, float], float, float, float, float] | None:
    """Least-squares fit of ``b + A * soft_disk_profile(|k - c|, R, e)`` to the pixels near a disk.

    Parameters
    ----------
    pattern : ndarray ``(k_y, k_x)``
        One finite 2D pattern.
    center_px, radius_px : starting centre ``(k_y, k_x)`` and radius.
    fit_center : bool
        Fit the centre too (default), else keep ``center_px``.
    margin_px : float, optional
        Pixels up to ``radius_px + margin_px`` from the centre enter the fit (default
        ``max(3, radius_px / 3)``).

    Returns
    -------
    ((cy, cx), R, e, b, A) or None
        None when the fit does not converge to a plausible disk (``A > 0``, ``R`` within
        ``max(2, R0 / 2)`` of the start, a saturated disk's plateau under 4 x the saturation level
        above the background).

    Notes
    -----
    Saturated pixels (the maximum value held by at least 5 pixels and 5 % of the disk's area) are
    fitted by the clipped model ``min(model, max)``, so a flat-topped disk keeps its radius; then
    the pixels whose model lies within 3 noise standard deviations of the saturation level are
    left out and the fit is repeated (noise clipped near the level would pull it). The plateau
    is then extrapolated from the edge below the saturation level: with noise, the more of the
    edge is clipped the less precise the radius (1 % at 60 % of the plateau, 400 counts).
    """
    p = np.asarray(pattern, dtype=np.float64)
    cy0, cx0 = float(center_px[0]), float(center_px[1])
    r0 = float(radius_px)
    m = max(3.0, r0 / 3) if margin_px is None else float(margin_px)
    reach = r0 + m
    y0, y1 = max(int(np.floor(cy0 - reach)), 0), min(int(np.ceil(cy0 + reach)) + 1, p.shape[0])
    x0, x1 = max(int(np.floor(cx0 - reach)), 0), min(int(np.ceil(cx0 + reach)) + 1, p.shape[1])
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    sub = p[y0:y1, x0:x1]
    d = np.hypot(yy - cy0, xx - cx0)
    sel = d <= reach
    y, x, v = yy[sel], xx[sel], sub[sel]
    if v.size < 8:
        return None
    inner = d[sel] < max(r0 / 2, 1.0)
    outer = d[sel] > r0 + min(2.0, m / 2)
    top = float(np.median(v[inner])) if inner.any() else float(v.max())
    bg = float(np.median(v[outer])) if outer.any() else float(v.min())
    amp = top - bg
    if amp <= 0:
        return None
    vmax = float(v.max())
    n_max = int(np.count_nonzero(v >= vmax))
    clip = vmax if n_max >= max(5, 0.05 * np.pi * r0**2) else np.inf

    def parts(q, cy, cx):
        r = np.hypot(y - cy, x - cx)
        t = np.tanh((r - q[0]) / (2.0 * q[1]))
        m = q[2] + q[3] * 0.5 * (1.0 - t)
        return r, t, m

    keep = np.ones(v.shape)  # 0 drops a pixel (second pass of a saturated disk)

    def resid(q):
        cy, cx = (q[4], q[5]) if fit_center else (cy0, cx0)
        return (np.minimum(parts(q, cy, cx)[2], clip) - v) * keep

    def jac(q):
        cy, cx = (q[4], q[5]) if fit_center else (cy0, cx0)
        r, t, m = parts(q, cy, cx)
        g = q[3] * (1.0 - t * t) / (4.0 * q[1])  # -dm/dr
        cols = [g, g * (r - q[0]) / q[1], np.ones_like(r), 0.5 * (1.0 - t)]
        if fit_center:
            rr = np.maximum(r, 1e-12)
            cols += [g * (y - cy) / rr, g * (x - cx) / rr]
        J = np.column_stack(cols)
        J[m > clip] = 0.0
        return J * keep[:, None]

    if fit_center:
        q0 = [r0, 0.5, bg, amp, cy0, cx0]
        lower = [0.3, E_MIN_PX, -np.inf, 0.0, cy0 - m, cx0 - m]
        upper = [r0 + m, max(r0, 1.0), np.inf, np.inf, cy0 + m, cx0 + m]
        scale = [0.1, 0.1, 0.1 * amp, 0.1 * amp, 0.1, 0.1]
    else:
        q0 = [r0, 0.5, bg, amp]
        lower, upper = [0.3, E_MIN_PX, -np.inf, 0.0], [r0 + m, max(r0, 1.0), np.inf, np.inf]
        scale = [0.1, 0.1, 0.1 * amp, 0.1 * amp]
    q0 = np.clip(q0, np.nextafter(lower, np.inf), np.nextafter(upper, -np.inf))
    try:
        sol = least_squares(resid, q0, jac=jac, bounds=(lower, upper), x_scale=scale)
        if np.isfinite(clip):
            # noise near the saturation level is clipped too (E[min(X, clip)] < min(E[X], clip)),
            # which pulls the fit: refit without the pixels whose model is within 3 noise
            # standard deviations of the clip level
            m_fit = parts(sol.x, *((sol.x[4], sol.x[5]) if fit_center else (cy0, cx0)))[2]
            below = m_fit < clip
            noise = 1.4826 * float(np.median(np.abs(resid(sol.x)[below]))) if below.any() else 0.0
            keep = (m_fit < clip - 3.0 * noise).astype(np.float64)
            if keep.sum() > len(q0) + 2:
                sol = least_squares(resid, sol.x, jac=jac, bounds=(lower, upper), x_scale=scale)
    except (ValueError, np.linalg.LinAlgError):
        return None
    q = sol.x
    R, e, b, A = (float(t) for t in q[:4])
    centre = (float(q[4]), float(q[5])) if fit_center else (cy0, cx0)
    if not (np.isfinite(sol.cost) and A > 0 and abs(R - r0) <= max(2.0, r0 / 2)):
        return None
    if np.isfinite(clip) and b + A > 4.0 * clip - 3.0 * b:
        return None  # a plateau over 4 x the saturation level: the clipped edge does not tell it
    return centre, R, e, b, A


def find_bf_disk(pattern: np.ndarray, *, threshold: float = 0.5) -> BFDisk:
    """Centre and radius of the bright-field disk of one pattern (e.g. the mean pattern).

    Parameters
    ----------
    pattern : ndarray ``(k_y, k_x)``
        One finite 2D pattern.
    threshold : float
        Fraction of the way from the median to the maximum of the smoothed pattern that bounds
        the first guess of the disk (default 0.5).

    Returns
    -------
    BFDisk
        Centre, radius and edge width in detector pixels.

    Raises
    ------
    DataShapeError
        When the pattern is not 2D, has NaN or inf, or is flat.

    Notes
    -----
    First guess: the pattern smoothed by a Gaussian of 1 px (2, 4, 8 px when noise breaks the
    region up), the connected region above ``median + threshold * (max - median)`` holding the
    brightest pixel, its centre of mass and its area's radius ``sqrt(area / pi)``. That radius is
    biased low by the soft edge and by noise (1-3 %), so the disk is then fitted
    (:func:`fit_soft_disk`): a logistic-edge disk ``b + A / (1 + exp((r - R) / e))`` on a flat
    background, centre, ``R``, ``e``, ``b`` and ``A`` free, by least squares on the pixels within
    ``R + max(3, R / 3)``; saturated pixels enter as ``min(model, max)``. ``R`` is where the edge
    is half way from background to plateau -- the radius of the package's simulated disks and
    vacuum probes. A disk blurred by a spread ``sigma`` (detector PSF, or the descan in a mean
    pattern) has its half-way contour about ``sigma**2 / (2 R)`` inside its equal-area radius.
    When the fit fails the first guess is returned (``edge_px`` None).
    """
    p = np.asarray(pattern, dtype=np.float64)
    if p.ndim != 2:
        raise DataShapeError(f"find_bf_disk needs one 2D pattern, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise DataShapeError("the pattern has NaN or inf values")
    centre, r0 = _threshold_disk(p, threshold)
    fit = fit_soft_disk(p, centre, r0)
    if fit is None:
        return BFDisk(centre, r0)
    c, R, e, _, _ = fit
    return BFDisk(c, R, e)


def _disk_kernel(block, *, row0, parallel, guess, radius, background, n_iter):
    block = as_kernel_input(block)
    out = np.empty((*block.shape[:2], 3))
    disk_center_block(block, row0, guess[0], guess[1], radius, background, n_iter, out, parallel=parallel)
    return out


@job_doc
def iter_measure_origin(
    data: Any,
    *,
    method: str = "disk",
    bf_disk: BFDisk | None = None,
    margin_px: float | None = None,
    max_shift_px: float | None = None,
    detector: Detector | None = None,
    calibration: Calibration | None = None,
    scan_chunk: tuple[int, int] | None = None,
    backend: Any = None,
) -> Job[RealSpaceMap]:
    """Job: the origin (unscattered beam centre) of every pattern, in detector pixels.

    Parameters
    ----------
    %(data)s
    method : {"disk", "com"}
        ``"disk"``: centre of the bright-field disk; ``"com"``: centre of mass of the pattern
        (inside ``detector`` when given).
    bf_disk : BFDisk, optional
        Starting centre and disk radius; by default found on the mean pattern (one more pass).
    margin_px : float, optional
        The circle is ``radius + margin_px`` (default ``max(2, radius / 4)``).
    max_shift_px : float, optional
        Largest descan expected (default the disk radius); bounds the detector rows read.
    detector : Detector, optional
        For ``method="com"``: the sums run over its mask.
    calibration : Calibration, optional
        Recorded with the result (defaults to the DataCube's).
    %(scan_chunk)s

    Yields
    ------
    Progress
        For the mean pattern when it is needed, then one per block of the scan.

    Returns
    -------
    RealSpaceMap ``(scan_y, scan_x, 2)``
        The generator's return value: channels ``origin_y``, ``origin_x``, units ``px``.

    Raises
    ------
    ValueError
        For an unknown ``method``.
    DataShapeError
        When no bright-field disk is found on the mean pattern.

    Notes
    -----
    ``"disk"``: the background-subtracted centre of mass inside a circle slightly larger than the
    bright-field disk, re-centred until it moves less than 1e-4 px (at most 30 times), so Bragg
    disks outside the circle do not bias it; the background is the median of the mean pattern in
    a 3 px ring just outside the circle (0 when ``bf_disk`` is given).
    """
    cube, cal = as_datacube(data, calibration)
    if method == "com":
        com = yield from iter_center_of_mass(
            cube, detector=detector, calibration=cal, scan_chunk=scan_chunk, backend=backend
        )
        return _origin_map(com.data[..., :2], cal, {"method": "com", "detector": com.params["detector"]})
    if method != "disk":
        raise ValueError(f"method must be 'disk' or 'com', got {method!r}")
    mean = None
    if bf_disk is None:
        mean = yield from cube.iter_reduce_patterns("mean", scan_chunk=scan_chunk)
        bf_disk = find_bf_disk(mean)
    radius = bf_disk.radius_px + (max(2.0, bf_disk.radius_px / 4) if margin_px is None else float(margin_px))
    if mean is None:
        background = 0.0
    else:
        # the background level just outside the circle, from the mean pattern
        yy, xx = np.indices(mean.shape)
        d = np.hypot(yy - bf_disk.center_px[0], xx - bf_disk.center_px[1])
        ring = (d > radius) & (d <= radius + 3)
        background = float(np.median(mean[ring])) if ring.any() else 0.0
    shift = bf_disk.radius_px if max_shift_px is None else float(max_shift_px)
    cy = bf_disk.center_px[0]
    rows = (int(np.floor(cy - radius - shift)), int(np.ceil(cy + radius + shift)) + 1)
    out = yield from map_scan(
        cube.data,
        _disk_kernel,
        out_tail=(3,),
        kwargs={
            "guess": bf_disk.center_px,
            "radius": radius,
            "background": background,
            "n_iter": 30,
        },
        k_rows=rows,
        k_rows_exact=False,
        scan_chunk=scan_chunk,
        backend=backend,
        message="origin (bright-field disk)",
    )
    params = {
        "method": "disk",
        "bf_center_px": list(bf_disk.center_px),
        "bf_radius_px": bf_disk.radius_px,
        "circle_radius_px": radius,
        "background": background,
    }
    return _origin_map(out[..., :2], cal, params)


def _origin_map(yx: np.ndarray, cal: Calibration, params: dict) -> RealSpaceMap:
    """The origins ``yx (scan_y, scan_x, 2)`` (detector px) as the ``origin`` map of either method."""
    return RealSpaceMap(
        yx, name="origin", units="px", channels=("origin_y", "origin_x"), calibration=cal, params=params
    )


measure_origin = eager(iter_measure_origin, "The origin of every pattern.")


@dataclass(frozen=True, eq=False)
class OriginFit:
    """A fitted origin (descan) map.

    Attributes
    ----------
    origin_map_px : ndarray ``(scan_y, scan_x, 2)``
        Fitted origin ``(k_y, k_x)`` per scan position, pixels.
    coefficients : ndarray ``(2, 3)``
        Per detector axis (rows: y, x) the plane ``c + a * iy + b * ix`` as ``(c, a, b)``.
    inliers : bool ndarray ``(scan_y, scan_x)``
        Positions used in the final fit.
    residual_rms_px : float
        RMS distance between measured and fitted origin over the inliers.
    method : str
        ``"plane"`` or ``"mean"``.
    """

    origin_map_px: np.ndarray
    coefficients: np.ndarray
    inliers: np.ndarray
    residual_rms_px: float
    method: str
    params: dict = field(default_factory=dict)

    @property
    def origin_px(self) -> tuple[float, float]:
        """Mean fitted origin ``(k_y, k_x)``."""
        m = self.origin_map_px.reshape(-1, 2).mean(axis=0)
        return float(m[0]), float(m[1])

    def to_calibration(self, calibration: Calibration | None = None) -> Calibration:
        """``calibration`` with this origin map and its mean as ``origin_px``."""
        cal = calibration or Calibration()
        return cal.replace(origin_map_px=self.origin_map_px, origin_px=self.origin_px)

    def to_map(self, calibration: Calibration | None = None) -> RealSpaceMap:
        """The fitted origin map as a RealSpaceMap (channels ``origin_y``, ``origin_x``, px)."""
        return RealSpaceMap(
            self.origin_map_px,
            name="origin_fit",
            units="px",
            channels=("origin_y", "origin_x"),
            calibration=calibration or Calibration(),
            params={
                "method": self.method,
                "coefficients": self.coefficients.tolist(),
                "residual_rms_px": self.residual_rms_px,
                **self.params,
            },
        )


def _measured_array(measured: Any) -> np.ndarray:
    if isinstance(measured, RealSpaceMap):
        m = np.asarray(measured.data, dtype=np.float64)
        if m.ndim == 3 and m.shape[2] > 2:
            m = m[..., :2]  # a COM map: com_y, com_x, intensity
    else:
        m = np.asarray(measured, dtype=np.float64)
    if m.ndim != 3 or m.shape[2] != 2:
        raise DataShapeError(f"origin measurements must be (scan_y, scan_x, 2), got {m.shape}")
    return m


def fit_origin_plane(
    measured: RealSpaceMap | np.ndarray,
    *,
    method: str = "plane",
    outlier_sigma: float = 4.0,
    max_iter: int = 20,
    mask: np.ndarray | None = None,
) -> OriginFit:
    """Fit the descan: a plane (or a constant) through the measured origin, robust to outliers.

    Parameters
    ----------
    measured : RealSpaceMap or ndarray ``(scan_y, scan_x, 2)``
        Origin per pattern (from :func:`measure_origin` or a COM map); NaN entries are ignored.
    method : {"plane", "mean"}
        Fit ``c + a * iy + b * ix`` per detector axis, or a constant.
    outlier_sigma : float
        Reject positions whose residual distance exceeds this many robust standard
        deviations (1.4826 x median absolute residual); ``inf`` for a plain least-squares fit.
    max_iter : int
        Largest number of reject-and-refit rounds (default 20); the loop also stops when the
        inliers stop changing.
    mask : bool ndarray ``(scan_y, scan_x)``, optional
        Positions allowed in the fit (e.g. vacuum or a thin region).

    Returns
    -------
    OriginFit
        The fitted origin map, plane coefficients, inliers and RMS residual.

    Raises
    ------
    ValueError
        For an unknown ``method``.
    DataShapeError
        When ``measured`` or ``mask`` has the wrong shape, or too few finite measurements remain.
    """
    m = _measured_array(measured)
    sy, sx = m.shape[:2]
    if method not in ("plane", "mean"):
        raise ValueError(f"method must be 'plane' or 'mean', got {method!r}")
    iy, ix = np.indices((sy, sx), dtype=np.float64)
    basis = np.stack([np.ones_like(iy), iy, ix], axis=-1).reshape(-1, 3)
    if method == "mean":
        basis = basis[:, :1]
    y = m.reshape(-1, 2)
    ok = np.all(np.isfinite(y), axis=1)
    if mask is not None:
        mk = np.asarray(mask, dtype=bool)
        if mk.shape != (sy, sx):
            raise DataShapeError(f"mask shape {mk.shape} does not match the scan {(sy, sx)}")
        ok &= mk.ravel()
    if ok.sum() < basis.shape[1] + 1:
        raise DataShapeError(f"only {int(ok.sum())} finite origin measurements: too few to fit")
    inl = ok.copy()
    for _ in range(max_iter):
        coef, *_ = np.linalg.lstsq(basis[inl], y[inl], rcond=None)
        res = np.full(len(y), np.inf)
        res[ok] = np.linalg.norm(y[ok] - basis[ok] @ coef, axis=1)
        sigma = 1.4826 * np.median(res[inl])
        if not np.isfinite(outlier_sigma) or sigma == 0:
            break
        new = ok & (res <= outlier_sigma * sigma)
        if new.sum() < basis.shape[1] + 1 or np.array_equal(new, inl):
            break
        inl = new
    coef, *_ = np.linalg.lstsq(basis[inl], y[inl], rcond=None)
    fitted = (basis @ coef).reshape(sy, sx, 2)
    full = np.zeros((3, 2))
    full[: coef.shape[0]] = coef
    rms = float(np.sqrt(np.mean(np.sum((y[inl] - basis[inl] @ coef) ** 2, axis=1))))
    return OriginFit(
        origin_map_px=fitted,
        coefficients=full.T.copy(),
        inliers=inl.reshape(sy, sx),
        residual_rms_px=rms,
        method=method,
        params={"outlier_sigma": float(outlier_sigma), "n_inliers": int(inl.sum())},
    )
