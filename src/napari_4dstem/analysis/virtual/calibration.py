"""Detector calibration from a ring: ellipticity, centre and pixel size.

A polycrystalline or amorphous sample gives rings of constant scattering angle; on a real
detector they come out as ellipses (projector distortion). :func:`fit_ring` samples the
pattern along rays from the centre, finds the ring's radius on every ray (sub-pixel: a
parabola through the three samples around the maximum of the background-corrected profile),
and fits an ellipse to those points (algebraic conic fit, points further than
``outlier_sigma`` robust standard deviations from the ellipse are dropped and the fit
repeated).

The result's ellipse is ``(a, b, theta_deg)``: semi-axes relative to the ring's mean radius
``sqrt(a_px * b_px)`` (so ``a * b = 1``, ``a >= b``) and the angle of ``a`` from the ``k_x``
axis towards ``k_y``, as :class:`~napari_4dstem.data.calibration.Calibration.ellipse` stores it.
Knowing the ring's spacing ``d`` (Angstrom) gives the pixel size: ``k_pixel_size = 1 / (d *
radius_px)`` in 1/A.

The bright-field disk gives the pixel size too: its radius is the probe's convergence
semi-angle ``alpha``, so a measured radius ``R`` px (:func:`~napari_4dstem.analysis.virtual.
origin.find_bf_disk`) and a known ``alpha`` give ``alpha / R`` mrad per pixel, and with the beam
energy ``alpha / (1000 lambda R)`` 1/A per pixel (:func:`calibrate_from_disk`); the other way, a
known pixel size gives the convergence angle (:func:`convergence_angle_from_disk`).

Real space: a field of view ``F`` over ``N`` scan positions is a scan step ``F / N`` (the image
spans ``N`` steps, as napari's scale bar measures it; :func:`with_field_of_view`).

Rotation between scan and detector axes comes from DPC: see
:func:`napari_4dstem.analysis.virtual.dpc.fit_dpc_rotation`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ...data.calibration import Calibration, mrad_per_inv_A, normalize_scan_units, positive_number
from ...errors import CalibrationError, DataShapeError

__all__ = [
    "DiskCalibration",
    "RingFit",
    "calibrate_from_disk",
    "convergence_angle_from_disk",
    "fit_ellipse_points",
    "fit_ring",
    "scan_step_from_field_of_view",
    "with_field_of_view",
]


@dataclass(frozen=True)
class RingFit:
    """An elliptical ring on the detector (all lengths in detector pixels).

    Attributes
    ----------
    center_px : (float, float)
        Ring centre ``(k_y, k_x)``.
    a_px, b_px : float
        Semi-major and semi-minor axes.
    theta_deg : float
        Angle of the major axis from ``k_x`` towards ``k_y``, in ``(-90, 90]``.
    n_points : int
        Ring points used in the final fit.
    residual_rms_px : float
        RMS radial distance of those points from the ellipse.
    """

    center_px: tuple[float, float]
    a_px: float
    b_px: float
    theta_deg: float
    n_points: int
    residual_rms_px: float

    @property
    def radius_px(self) -> float:
        """Mean radius ``sqrt(a_px * b_px)`` (the radius of the circle of the same area)."""
        return math.sqrt(self.a_px * self.b_px)

    @property
    def ellipse(self) -> tuple[float, float, float]:
        """``(a, b, theta_deg)`` relative to :attr:`radius_px`, as Calibration stores it."""
        r = self.radius_px
        return (self.a_px / r, self.b_px / r, self.theta_deg)

    def to_calibration(
        self,
        calibration: Calibration | None = None,
        *,
        d_spacing_A: float | None = None,
        set_origin: bool = False,
    ) -> Calibration:
        """``calibration`` with this ellipse; with ``d_spacing_A`` also the pixel size (1/A).

        ``set_origin`` also stores the ring centre as the mean origin (``origin_px``).
        """
        cal = calibration or Calibration()
        changes: dict = {"ellipse": self.ellipse}
        if d_spacing_A is not None:
            d = float(d_spacing_A)
            if not (math.isfinite(d) and d > 0):
                raise CalibrationError(f"d_spacing_A must be positive, got {d_spacing_A!r}")
            changes.update(k_pixel_size=1.0 / (d * self.radius_px), k_units="1/A")
        if set_origin:
            changes["origin_px"] = self.center_px
        return cal.replace(**changes)


def fit_ellipse_points(y: np.ndarray, x: np.ndarray) -> tuple[tuple[float, float], float, float, float]:
    """Algebraic least-squares ellipse through points: ``(center (y, x), a, b, theta_deg)``.

    Parameters
    ----------
    y, x : array-like ``(n,)``
        Point coordinates (detector pixels), at least 6 points.

    Returns
    -------
    center : (float, float)
        Centre ``(y, x)``.
    a, b : float
        Semi-axes, ``a >= b``.
    theta_deg : float
        Angle of ``a`` from the ``x`` axis towards ``y``, in ``(-90, 90]``.

    Raises
    ------
    CalibrationError
        For fewer than 6 points, or points whose conic is not an ellipse.

    Notes
    -----
    Solves ``A x^2 + B x y + C y^2 + D x + E y + F = 0`` for the smallest singular vector of the
    design matrix on centred and scaled coordinates (a direct algebraic fit, as in [1]_), then
    converts the conic to centre, semi-axes and angle from the eigen-decomposition of its
    quadratic part.

    References
    ----------
    .. [1] A. Fitzgibbon, M. Pilu and R. B. Fisher, "Direct least square fitting of ellipses",
       IEEE Trans. Pattern Anal. Mach. Intell. 21, 476-480 (1999).
    """
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if y.size < 6:
        raise CalibrationError(f"an ellipse fit needs at least 6 points, got {y.size}")
    my, mx = y.mean(), x.mean()
    s = max(np.std(y), np.std(x), 1e-12)
    yy, xx = (y - my) / s, (x - mx) / s
    design = np.stack([xx * xx, xx * yy, yy * yy, xx, yy, np.ones_like(xx)], axis=1)
    _, _, vt = np.linalg.svd(design, full_matrices=False)
    coef = vt[-1] if vt[-1][0] + vt[-1][2] > 0 else -vt[-1]  # positive-definite quadratic part
    a_, b_, c_, d_, e_, f_ = coef
    m = np.array([[a_, b_ / 2], [b_ / 2, c_]])
    if np.linalg.det(m) <= 0:
        raise CalibrationError("the ring points do not lie on an ellipse")
    cx, cy = np.linalg.solve(m, [-d_ / 2, -e_ / 2])
    f0 = a_ * cx * cx + b_ * cx * cy + c_ * cy * cy + d_ * cx + e_ * cy + f_
    lam, vec = np.linalg.eigh(m)  # ascending: lam[0] belongs to the major axis
    ax2 = -f0 / lam
    if np.any(ax2 <= 0):
        raise CalibrationError("the ring points do not lie on an ellipse")
    a_len, b_len = np.sqrt(ax2) * s
    vx, vy = vec[0, 0], vec[1, 0]
    theta = math.degrees(math.atan2(vy, vx))
    theta = (theta + 90.0) % 180.0 - 90.0
    if theta == -90.0:
        theta = 90.0
    return (float(cy * s + my), float(cx * s + mx)), float(a_len), float(b_len), theta


def _ellipse_residual(y, x, center, a, b, theta_deg) -> np.ndarray:
    t = math.radians(theta_deg)
    dy, dx = y - center[0], x - center[1]
    u = dx * math.cos(t) + dy * math.sin(t)
    v = -dx * math.sin(t) + dy * math.cos(t)
    rho = np.hypot(u / a, v / b)  # 1 on the ellipse
    return (rho - 1.0) * math.sqrt(a * b)


def fit_ring(
    pattern: np.ndarray,
    *,
    radius_range_px: tuple[float, float],
    center_px: tuple[float, float] | None = None,
    n_angles: int = 180,
    outlier_sigma: float = 3.0,
    iterations: int = 2,
) -> RingFit:
    """Fit an elliptical ring to a pattern (e.g. the mean or max pattern of a polycrystal).

    Parameters
    ----------
    pattern : ndarray ``(k_y, k_x)``
        One finite 2D pattern.
    radius_range_px : (float, float)
        Radii between which the ring lies (it must be the brightest feature there), at least
        1.25 px apart.
    center_px : (float, float), optional
        Starting centre; by default the centre of mass of the pattern above its median (a first
        ellipse fit then re-centres the rays, ``iterations`` times).
    n_angles : int
        Number of rays (default 180).
    outlier_sigma : float
        Ring points further than this many robust standard deviations (1.4826 x the median
        absolute residual) from the ellipse are dropped and the fit repeated (default 3).
    iterations : int
        Times the rays are re-centred on the fitted ellipse (default 2).

    Returns
    -------
    RingFit
        Centre, semi-axes, angle, points used and the RMS residual (pixels).

    Raises
    ------
    DataShapeError
        When the pattern is not 2D or has NaN or inf.
    ValueError
        When ``radius_range_px`` is not ``(r_min, r_max)`` with ``0 <= r_min < r_max`` or is too
        narrow.
    CalibrationError
        When the ring is found on fewer than 6 rays, or its points are not an ellipse.

    Notes
    -----
    The pattern is sampled along rays from the centre (bilinear, smoothed 0.5 px along each
    ray); a linear background is removed along each ray and the ring's radius is the sub-pixel
    maximum (a parabola through the three samples around it). An algebraic ellipse fit
    (:func:`fit_ellipse_points`) with outlier rejection gives the ring.
    """
    p = np.asarray(pattern, dtype=np.float64)
    if p.ndim != 2:
        raise DataShapeError(f"fit_ring needs one 2D pattern, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise DataShapeError("the pattern has NaN or inf values")
    r0, r1 = (float(v) for v in radius_range_px)
    if not (0 <= r0 < r1):
        raise ValueError(f"radius_range_px must be (r_min, r_max) with r_min < r_max, got {radius_range_px}")
    if center_px is None:
        center_px = ndimage.center_of_mass(np.clip(p - np.median(p), 0, None))
    center = (float(center_px[0]), float(center_px[1]))
    ang = np.linspace(0, 2 * np.pi, int(n_angles), endpoint=False)
    radii = np.arange(r0, r1, 0.25)
    if radii.size < 5:
        raise ValueError("radius_range_px is too narrow (need at least 1.25 px)")
    fit = None
    for _ in range(max(1, iterations)):
        yy = center[0] + np.sin(ang)[:, None] * radii[None, :]
        xx = center[1] + np.cos(ang)[:, None] * radii[None, :]
        inside = (yy >= 0) & (yy <= p.shape[0] - 1) & (xx >= 0) & (xx <= p.shape[1] - 1)
        prof = ndimage.map_coordinates(p, [yy.ravel(), xx.ravel()], order=1).reshape(yy.shape)
        prof = ndimage.gaussian_filter1d(prof, 2.0, axis=1)  # 0.5 px along the ray
        ok_ray = inside.all(axis=1)
        # remove a linear background along each ray, then take the sub-pixel maximum
        t = np.linspace(0, 1, radii.size)
        prof = prof - (prof[:, :1] + (prof[:, -1:] - prof[:, :1]) * t)
        k = np.clip(np.argmax(prof, axis=1), 1, radii.size - 2)
        rows = np.arange(len(ang))
        ym, y0, yp = prof[rows, k - 1], prof[rows, k], prof[rows, k + 1]
        den = ym - 2 * y0 + yp
        frac = np.where(den < 0, 0.5 * (ym - yp) / np.where(den < 0, den, 1), 0.0)
        r = radii[k] + np.clip(frac, -1, 1) * 0.25
        good = ok_ray & (y0 > 0)
        py, px = center[0] + np.sin(ang) * r, center[1] + np.cos(ang) * r
        py, px = py[good], px[good]
        if py.size < 6:
            raise CalibrationError(
                f"found the ring on only {py.size} rays between {r0} and {r1} px; check radius_range_px and the centre"
            )
        keep = np.ones(py.size, bool)
        for _ in range(5):
            c, a, b, th = fit_ellipse_points(py[keep], px[keep])
            res = _ellipse_residual(py, px, c, a, b, th)
            sigma = 1.4826 * np.median(np.abs(res[keep]))
            new = np.abs(res) <= max(outlier_sigma * sigma, 1e-9)
            if new.sum() < 6 or np.array_equal(new, keep):
                break
            keep = new
        c, a, b, th = fit_ellipse_points(py[keep], px[keep])
        res = _ellipse_residual(py[keep], px[keep], c, a, b, th)
        fit = RingFit(c, a, b, th, int(keep.sum()), float(np.sqrt(np.mean(res**2))))
        center = c
    return fit


@dataclass(frozen=True)
class DiskCalibration:
    """The detector pixel size from the bright-field disk and the convergence semi-angle.

    Attributes
    ----------
    radius_px : float
        Radius of the bright-field disk, detector pixels.
    convergence_semiangle_mrad : float
        Probe convergence semi-angle, mrad (the disk's radius in angle).
    mrad_per_px : float
        Detector pixel size in mrad.
    inv_A_per_px : float or None
        Detector pixel size in 1/A (None without a beam energy).
    beam_energy_kev : float or None
        Beam energy, keV.
    center_px : (float, float) or None
        Disk centre ``(k_y, k_x)``, pixels, when measured.
    """

    radius_px: float
    convergence_semiangle_mrad: float
    mrad_per_px: float
    inv_A_per_px: float | None
    beam_energy_kev: float | None = None
    center_px: tuple[float, float] | None = None

    def to_calibration(
        self, calibration: Calibration | None = None, *, k_units: str | None = None, set_origin: bool = False
    ) -> Calibration:
        """``calibration`` with this pixel size, the convergence angle and the beam energy.

        Parameters
        ----------
        calibration : Calibration, optional
            The calibration to change (a new one by default).
        k_units : {"1/A", "mrad"}, optional
            Unit of the stored pixel size; by default 1/A when the beam energy is known, else mrad.
        set_origin : bool
            Also store the disk centre as the mean origin ``origin_px``.

        Raises
        ------
        CalibrationError
            For ``k_units="1/A"`` without a beam energy, or an unknown unit.
        """
        cal = calibration or Calibration()
        units = k_units or ("1/A" if self.inv_A_per_px is not None else "mrad")
        if units not in ("1/A", "mrad"):
            raise CalibrationError(f"k_units must be '1/A' or 'mrad', got {k_units!r}")
        if units == "1/A" and self.inv_A_per_px is None:
            raise CalibrationError("a pixel size in 1/A needs the beam energy")
        size = self.inv_A_per_px if units == "1/A" else self.mrad_per_px
        changes: dict = {
            "k_pixel_size": size,
            "k_units": units,
            "convergence_semiangle_mrad": self.convergence_semiangle_mrad,
        }
        if self.beam_energy_kev is not None:
            changes["beam_energy_kev"] = self.beam_energy_kev
        if set_origin and self.center_px is not None:
            changes["origin_px"] = self.center_px
        return cal.replace(**changes)


def calibrate_from_disk(
    radius_px: float,
    convergence_semiangle_mrad: float,
    *,
    beam_energy_kev: float | None = None,
    center_px: tuple[float, float] | None = None,
) -> DiskCalibration:
    """The detector pixel size from the bright-field disk's radius and the convergence angle.

    Parameters
    ----------
    radius_px : float
        Radius of the bright-field disk in detector pixels (e.g.
        :func:`~napari_4dstem.analysis.virtual.origin.find_bf_disk` on the mean pattern).
    convergence_semiangle_mrad : float
        Probe convergence semi-angle, mrad.
    beam_energy_kev : float, optional
        Beam energy, keV: with it the pixel size in 1/A too.
    center_px : (float, float), optional
        The disk's centre, kept for ``to_calibration(set_origin=True)``.

    Returns
    -------
    DiskCalibration
        ``mrad_per_px = alpha / R``; ``inv_A_per_px = alpha / (1000 lambda R)`` with ``lambda``
        the relativistic electron wavelength in A (small angles).

    Raises
    ------
    CalibrationError
        When the radius, the angle or the energy is not a positive number.
    """
    r = positive_number("the disk radius (px)", radius_px)
    alpha = positive_number("the convergence semi-angle (mrad)", convergence_semiangle_mrad)
    energy = positive_number("the beam energy (keV)", beam_energy_kev, optional=True)
    mrad = alpha / r
    inv_a = None if energy is None else mrad / mrad_per_inv_A(energy)
    c = None if center_px is None else (float(center_px[0]), float(center_px[1]))
    return DiskCalibration(r, alpha, mrad, inv_a, energy, c)


def convergence_angle_from_disk(radius_px: float, calibration: Calibration) -> float:
    """The convergence semi-angle (mrad) of a disk of ``radius_px`` for a known pixel size.

    Parameters
    ----------
    radius_px : float
        Radius of the bright-field disk, detector pixels.
    calibration : Calibration
        With the detector pixel size (in mrad, or in 1/A with the beam energy).

    Returns
    -------
    float
        ``radius_px * pixel size in mrad``.

    Raises
    ------
    CalibrationError
        When the detector is not calibrated, a 1/A pixel size comes without the beam energy, or
        the radius is not positive.
    """
    r = positive_number("the disk radius (px)", radius_px)
    return r * calibration.k_pixel_size_in("mrad")


def scan_step_from_field_of_view(
    scan_shape: tuple[int, int], field_of_view: float | tuple[float, float]
) -> tuple[float, float]:
    """The scan step ``(y, x)`` of a field of view over ``scan_shape`` positions.

    Parameters
    ----------
    scan_shape : (int, int)
        Scan positions ``(scan_y, scan_x)``.
    field_of_view : float or (float, float)
        Extent of the scanned area ``(y, x)`` in any length unit; one number is the width along
        ``scan_x`` with square scan steps (``F / N_x`` on both axes), as microscopes report it.

    Returns
    -------
    (float, float)
        ``(F_y / N_y, F_x / N_x)`` in the unit of ``field_of_view``: the image spans ``N`` steps.

    Raises
    ------
    CalibrationError
        When a field of view is not positive or the scan shape is not two positive integers.
    """
    shape = tuple(int(n) for n in scan_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise CalibrationError(f"the scan shape must be two positive integers, got {scan_shape!r}")
    fov = np.atleast_1d(np.asarray(field_of_view, dtype=float))
    if fov.shape == (1,):
        step = positive_number("the field of view", fov[0]) / shape[1]
        return (step, step)
    if fov.shape != (2,):
        raise CalibrationError(f"the field of view is one number or (y, x), got {field_of_view!r}")
    fy, fx = (positive_number("the field of view", v) for v in fov)
    return (fy / shape[0], fx / shape[1])


def with_field_of_view(
    calibration: Calibration | None,
    scan_shape: tuple[int, int],
    *,
    field_of_view: float | tuple[float, float] | None = None,
    scan_step: float | tuple[float, float] | None = None,
    units: str = "nm",
) -> Calibration:
    """``calibration`` with the real-space scale from a field of view or a scan step.

    Parameters
    ----------
    calibration : Calibration or None
        The calibration to change (a new one for None).
    scan_shape : (int, int)
        Scan positions ``(scan_y, scan_x)``.
    field_of_view : float or (float, float), optional
        Width of the scanned area ``(y, x)`` in ``units`` (see :func:`scan_step_from_field_of_view`).
    scan_step : float or (float, float), optional
        The step ``(y, x)`` in ``units`` instead; give exactly one of the two.
    units : {"A", "nm", "um"}
        Length unit (default nm).

    Returns
    -------
    Calibration
        With ``scan_step`` and ``scan_units``.

    Raises
    ------
    CalibrationError
        For both or neither of ``field_of_view`` and ``scan_step``, a value that is not positive,
        or a unit that is not a length.
    """
    if (field_of_view is None) == (scan_step is None):
        raise CalibrationError("give either the field of view or the scan step")
    u = normalize_scan_units(units)
    if u == "px":
        raise CalibrationError("the field of view needs a length unit (A, nm or um), not pixels")
    if field_of_view is not None:
        step = scan_step_from_field_of_view(scan_shape, field_of_view)
    else:
        st = np.broadcast_to(np.asarray(scan_step, dtype=float), (2,))
        step = tuple(positive_number("the scan step", v) for v in st)
    return (calibration or Calibration()).replace(scan_step=step, scan_units=u)
