"""Differential phase contrast: COM shifts in scan axes, the scan/detector rotation, iDPC.

Conventions (see ``docs/virtual-imaging.md``):

- The COM shift ``v = (v_y, v_x) = com - origin`` is measured in detector pixels along the
  detector axes ``(k_y, k_x)``.
- Scan axes ``(scan_y, scan_x)``: with ``theta = rotation_deg`` and ``flip``,
  ``v_x' = -v_x if flip else v_x``, then
  ``u_x = cos(theta) v_x' - sin(theta) v_y`` and ``u_y = sin(theta) v_x' + cos(theta) v_y``.
  So ``rotation_deg`` is the angle of the detector axes in scan axes, measured from ``+x``
  towards ``+y``; ``flip`` mirrors the detector ``k_x`` axis first.
- For a thin sample the COM shift is the phase gradient: ``<k> = grad(phi) / (2 pi)``
  (``k`` in 1/A, ``phi`` in rad); the curl of a gradient is zero, which fixes the rotation
  up to 180 degrees (:func:`fit_dpc_rotation`).
- iDPC: ``phi = F^-1[ -i (f_x G_x + f_y G_y) / (2 pi (|f|^2 + lambda)) ]`` with
  ``G = F[grad phi]``, ``f`` in cycles per scan pixel and ``phi`` of zero mean.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ...data.calibration import Calibration, mrad_per_inv_A
from ...data.results import RealSpaceMap
from ...errors import CalibrationError, DataShapeError
from .origin import fit_origin_plane

__all__ = [
    "MIN_ROTATION_CONFIDENCE",
    "IllConditionedRotationWarning",
    "RotationFit",
    "com_shifts",
    "divergence_curl",
    "dpc",
    "fit_dpc_rotation",
    "idpc",
    "rotate_to_scan",
]

DESCAN = ("plane", "mean", "calibration", "none")

#: median curl contrast of pure noise times sqrt(number of scan pixels) (measured on Gaussian
#: COM noise, 16x16 to 128x128 scans): the unit of :attr:`RotationFit.confidence`
_NOISE_CONTRAST = 1.7
#: below this confidence the rotation fit warns (pure noise: 99th percentile 2.1, highest 2.45 in
#: 1400 trials on 3x3 to 128x128 scans); a scan under about 6x6 can never reach it
MIN_ROTATION_CONFIDENCE = 3.0


class IllConditionedRotationWarning(UserWarning):
    """The DPC rotation fit found no curl contrast above noise: the angle is arbitrary."""


def rotate_to_scan(
    v_y: np.ndarray, v_x: np.ndarray, *, rotation_deg: float, flip: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Detector-axis vectors ``(v_y, v_x)`` in scan axes ``(u_y, u_x)``.

    Parameters
    ----------
    v_y, v_x : ndarray or float
        Components along the detector axes ``k_y``, ``k_x``.
    rotation_deg : float
        Angle of the detector axes in scan axes, from ``+x`` towards ``+y``.
    flip : bool
        Mirror the detector ``k_x`` axis first (default False).

    Returns
    -------
    u_y, u_x : ndarray or float
        ``u_y = sin(t) v_x' + cos(t) v_y`` and ``u_x = cos(t) v_x' - sin(t) v_y`` with
        ``v_x' = -v_x`` when flipped.
    """
    t = math.radians(rotation_deg)
    vx = -v_x if flip else v_x
    c, s = math.cos(t), math.sin(t)
    return s * vx + c * v_y, c * vx - s * v_y


def _com_yx(com: RealSpaceMap | np.ndarray) -> tuple[np.ndarray, np.ndarray, Calibration | None]:
    if isinstance(com, RealSpaceMap):
        if "com_y" in com.channels:
            return com.channel("com_y"), com.channel("com_x"), com.calibration
        d, cal = com.data, com.calibration
    else:
        d, cal = np.asarray(com), None
    if d.ndim != 3 or d.shape[2] < 2:
        raise DataShapeError(f"a COM map must be (scan_y, scan_x, >=2), got shape {d.shape}")
    return d[..., 0], d[..., 1], cal


def com_shifts(
    com: RealSpaceMap | np.ndarray,
    *,
    descan: str = "plane",
    calibration: Calibration | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """COM minus origin ``(v_y, v_x)`` in detector pixels, with the descan removed.

    Parameters
    ----------
    com : RealSpaceMap or ndarray ``(scan_y, scan_x, >=2)``
        COM ``(com_y, com_x)`` per pattern in detector pixels (:func:`~.com.center_of_mass`).
    descan : {"plane", "mean", "calibration", "none"}
        ``"plane"`` fits a robust plane to the COM map itself and subtracts it (the usual choice
        when the sample is thin everywhere); ``"mean"`` subtracts the mean COM;
        ``"calibration"`` subtracts the calibration's origin map (or mean origin); ``"none"``
        returns the raw COM.
    calibration : Calibration, optional
        For ``"calibration"``; default the COM map's.

    Returns
    -------
    v_y, v_x : ndarray ``(scan_y, scan_x)``
        The shifts along the detector axes.

    Raises
    ------
    DataShapeError
        When the COM array is not ``(scan_y, scan_x, >=2)``.
    CalibrationError
        For ``"calibration"`` without an origin, or an origin map of another scan shape.
    ValueError
        For an unknown ``descan``.
    """
    cy, cx, cal0 = _com_yx(com)
    cal = calibration or cal0 or Calibration()
    if descan == "plane" or descan == "mean":
        fit = fit_origin_plane(np.stack([cy, cx], axis=-1), method=descan)
        oy, ox = fit.origin_map_px[..., 0], fit.origin_map_px[..., 1]
    elif descan == "calibration":
        if cal.origin_map_px is not None:
            if cal.origin_map_px.shape[:2] != cy.shape:
                raise CalibrationError(f"origin map shape {cal.origin_map_px.shape[:2]} != COM map {cy.shape}")
            oy, ox = cal.origin_map_px[..., 0], cal.origin_map_px[..., 1]
        elif cal.origin_px is not None:
            oy, ox = cal.origin_px
        else:
            raise CalibrationError("descan='calibration' needs an origin in the calibration")
    elif descan == "none":
        oy = ox = 0.0
    else:
        raise ValueError(f"descan must be one of {DESCAN}, got {descan!r}")
    return cy - oy, cx - ox


def _k_scale(cal: Calibration, units: str) -> float:
    if units == "px":
        return 1.0
    try:
        return cal.k_pixel_size_in(units)
    except CalibrationError as e:
        raise CalibrationError(f"DPC in {units} needs a calibrated detector: {e}") from None


def dpc(
    com: RealSpaceMap | np.ndarray,
    *,
    calibration: Calibration | None = None,
    rotation_deg: float | None = None,
    flip: bool | None = None,
    descan: str = "plane",
    units: str = "px",
) -> RealSpaceMap:
    """DPC signals in scan axes from a COM map (:func:`~.com.center_of_mass`).

    Parameters
    ----------
    com : RealSpaceMap or ndarray ``(scan_y, scan_x, >=2)``
        COM ``(com_y, com_x)`` per pattern in detector pixels.
    calibration : Calibration, optional
        Gives the rotation, flip, origin and detector pixel size; default the COM map's.
    rotation_deg, flip : optional
        Scan/detector rotation and flip; default the calibration's (0 and False if unset).
    descan : {"plane", "mean", "calibration", "none"}
        How the origin is removed (:func:`com_shifts`).
    units : {"px", "mrad", "1/A"}
        Units of the shifts (mrad and 1/A need a calibrated detector).

    Returns
    -------
    RealSpaceMap ``(scan_y, scan_x, 4)``
        Channels ``dpc_y``, ``dpc_x`` (scan axes), ``magnitude`` and ``angle_deg``
        (``atan2(dpc_y, dpc_x)``, from ``+x`` towards ``+y``).

    Raises
    ------
    CalibrationError
        For ``units`` other than px on an uncalibrated detector, or as :func:`com_shifts`.

    Notes
    -----
    The COM shift ``v = com - origin`` is rotated into scan axes (:func:`rotate_to_scan`) and
    scaled to ``units``. For a thin sample it is the phase gradient, ``<k> = grad(phi) / (2 pi)``
    [1]_.

    References
    ----------
    .. [1] I. Lazić, E. G. T. Bosch and S. Lazar, "Phase contrast STEM for thin samples:
       Integrated differential phase contrast", Ultramicroscopy 160, 265-280 (2016).
    """
    vy, vx = com_shifts(com, descan=descan, calibration=calibration)
    cal = calibration or (com.calibration if isinstance(com, RealSpaceMap) else Calibration())
    rot = rotation_deg if rotation_deg is not None else (cal.rotation_deg or 0.0)
    fl = bool(flip) if flip is not None else cal.flip
    scale = _k_scale(cal, units)
    uy, ux = rotate_to_scan(vy * scale, vx * scale, rotation_deg=rot, flip=fl)
    mag = np.hypot(uy, ux)
    ang = np.degrees(np.arctan2(uy, ux))
    params = {"rotation_deg": float(rot), "flip": fl, "descan": descan, "units": units}
    return RealSpaceMap(
        np.stack([uy, ux, mag, ang], axis=-1),
        name="dpc",
        units=units,
        channels=("dpc_y", "dpc_x", "magnitude", "angle_deg"),
        calibration=cal,
        params=params,
    )


def _derivatives(uy: np.ndarray, ux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(curl, div)`` of ``(u_y, u_x)`` with central differences (per scan pixel)."""
    duy_dy, duy_dx = np.gradient(uy)
    dux_dy, dux_dx = np.gradient(ux)
    return duy_dx - dux_dy, dux_dx + duy_dy


def divergence_curl(d: RealSpaceMap | np.ndarray) -> RealSpaceMap:
    """Divergence and curl of a DPC field in scan axes (:func:`dpc`), per scan pixel.

    ``div = d u_x / d x + d u_y / d y`` and ``curl = d u_y / d x - d u_x / d y`` (the z component,
    from ``+x`` towards ``+y``), with ``x, y`` the scan axes in scan pixels, by central
    differences inside the scan and one-sided ones at its edges (``numpy.gradient``: exact for
    linear fields, and for quadratic ones inside). For a thin sample the DPC field is the phase
    gradient, so the divergence is the Laplacian of the phase (charge density) and the curl is
    zero up to noise and a wrong scan rotation (:func:`fit_dpc_rotation` minimises it).

    Parameters
    ----------
    d : RealSpaceMap or ndarray ``(scan_y, scan_x, >=2)``
        Channels ``dpc_y``, ``dpc_x`` first (the order :func:`dpc` writes).

    Returns
    -------
    RealSpaceMap ``(scan_y, scan_x, 2)``: channels ``divergence`` and ``curl``, in the field's
    units per scan pixel.
    """
    arr = d.data if isinstance(d, RealSpaceMap) else np.asarray(d)
    if arr.ndim != 3 or arr.shape[-1] < 2 or min(arr.shape[:2]) < 2:
        raise DataShapeError(
            f"divergence and curl need a (scan_y >= 2, scan_x >= 2, >= 2) DPC map, got shape {arr.shape}"
        )
    uy, ux = (np.asarray(arr[..., i], dtype=np.float64) for i in (0, 1))
    curl, div = _derivatives(uy, ux)
    units = d.units if isinstance(d, RealSpaceMap) else "px"
    cal = d.calibration if isinstance(d, RealSpaceMap) else Calibration()
    params = dict(d.params) if isinstance(d, RealSpaceMap) else {}
    return RealSpaceMap(
        np.stack([div, curl], axis=-1),
        name="dpc_div_curl",
        units=f"{units}/scan px",
        channels=("divergence", "curl"),
        calibration=cal,
        params=params,
    )


@dataclass(frozen=True)
class RotationFit:
    """Scan/detector rotation from DPC by minimising the curl of the rotated COM shifts.

    Attributes
    ----------
    rotation_deg : float
        The rotation, in ``(-180, 180]``.
    flip : bool
        Whether the detector ``k_x`` axis is mirrored.
    curl_rms : float
        RMS curl at the optimum.
    curl_rms_other_flip : float
        The best RMS curl with the other ``flip`` (the larger, the clearer the flip; NaN when
        the flip was given).
    div_rms : float
        RMS divergence at the optimum (the signal).
    resolved_180 : bool
        Whether the half-turn was chosen by the divergence's skew.
    curl_contrast : float
        How much lower the best mean-square curl is than its median over all angles, relative
        to that median (0: flat curve, no information; 1: curl-free at the optimum).
    confidence : float
        ``curl_contrast`` in units of what pure noise gives on a scan of this size (about
        ``1.7 / sqrt(n_scan_pixels)``): about 1 for data without DPC signal; below
        ``MIN_ROTATION_CONFIDENCE`` (3) the fit warns. Both default to NaN (fits made before
        they existed).
    """

    rotation_deg: float
    flip: bool
    curl_rms: float
    curl_rms_other_flip: float
    div_rms: float
    resolved_180: bool
    curl_contrast: float = float("nan")
    confidence: float = float("nan")

    @property
    def ill_conditioned(self) -> bool:
        """True when the curl curve is flat (no DPC signal above noise): the angle is arbitrary."""
        return not (self.confidence >= MIN_ROTATION_CONFIDENCE)

    def to_calibration(self, calibration: Calibration | None = None) -> Calibration:
        """``calibration`` (default an empty one) with this rotation and flip."""
        return (calibration or Calibration()).replace(rotation_deg=self.rotation_deg, flip=self.flip)


def _best_angle(vy, vx, flip: bool) -> tuple[float, float, float, int]:
    # curl(R(t) v') = cos(t) curl(v') + sin(t) div(v') pointwise, so the mean square curl is a
    # quadratic form in (cos t, sin t): its smallest eigenvector is the optimum (mod 180 deg).
    # Over the angle it is (w0 + w1) / 2 - (w1 - w0) / 2 * cos(2 (t - t0)), whose median is
    # (w0 + w1) / 2: the contrast (median - best) / median is (w1 - w0) / (w1 + w0).
    c, d = _derivatives(vy, -vx if flip else vx)
    ok = np.isfinite(c) & np.isfinite(d)
    c, d = c[ok], d[ok]
    if c.size == 0:
        return 0.0, float("nan"), 0.0, 0
    m = np.array([[np.mean(c * c), np.mean(c * d)], [np.mean(c * d), np.mean(d * d)]])
    w, v = np.linalg.eigh(m)
    w0, w1 = max(w[0], 0.0), max(w[1], 0.0)
    scale = w0 + w1
    # zero shifts (or shifts at rounding level of the COM): no information at all
    contrast = float((w1 - w0) / scale) if scale > 0 and w1 > 1e-24 else 0.0
    angle = math.degrees(math.atan2(v[1, 0], v[0, 0]))
    return angle, float(math.sqrt(w0)), contrast, int(c.size)


def _skew(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    a = a - a.mean()
    s = a.std()
    return float(np.mean(a**3) / s**3) if s > 0 else 0.0


def fit_dpc_rotation(
    com: RealSpaceMap | np.ndarray,
    *,
    calibration: Calibration | None = None,
    descan: str = "plane",
    flip: bool | None = None,
    resolve_180: bool = True,
) -> RotationFit:
    """Rotation (and flip) between scan and detector axes that minimises the DPC curl.

    Parameters
    ----------
    com : RealSpaceMap or ndarray ``(scan_y, scan_x, >=2)``
        COM ``(com_y, com_x)`` per pattern in detector pixels, scan at least 3 x 3.
    calibration : Calibration, optional
        For ``descan="calibration"`` (:func:`com_shifts`).
    descan : {"plane", "mean", "calibration", "none"}
        How the origin is removed (:func:`com_shifts`).
    flip : bool, optional
        The flip, when known; ``None`` tries both and keeps the lower curl.
    resolve_180 : bool
        Choose the half-turn so that the divergence of the shifts is negatively skewed, i.e. the
        phase has sharp positive peaks (atoms, particles); this heuristic fails on samples without
        such peaks: then check the sign of the iDPC phase and add 180 degrees if needed.

    Returns
    -------
    RotationFit
        The angle, flip, curls, divergence and the fit's confidence.

    Raises
    ------
    DataShapeError
        For a scan smaller than 3 x 3.

    Warns
    -----
    IllConditionedRotationWarning
        When the confidence is below ``MIN_ROTATION_CONFIDENCE`` (no DPC signal above noise:
        the angle is arbitrary).

    Notes
    -----
    ``curl(R(t) v') = cos(t) curl(v') + sin(t) div(v')`` pointwise, so the mean square curl is a
    quadratic form in ``(cos t, sin t)``: its eigenvector of the smallest eigenvalue is the
    optimum angle (modulo 180 degrees), found in closed form for each flip.
    """
    vy, vx = com_shifts(com, descan=descan, calibration=calibration)
    if vy.shape[0] < 3 or vy.shape[1] < 3:
        raise DataShapeError(f"the rotation fit needs a scan of at least 3x3, got {vy.shape}")
    flips = (False, True) if flip is None else (bool(flip),)
    fits = {f: _best_angle(vy, vx, f) for f in flips}
    best = min(fits, key=lambda f: (fits[f][1], f))
    angle, curl, contrast, n = fits[best]
    other = fits[not best][1] if len(fits) == 2 else float("nan")
    confidence = contrast * math.sqrt(n) / _NOISE_CONTRAST
    uy, ux = rotate_to_scan(vy, vx, rotation_deg=angle, flip=best)
    div = _derivatives(uy, ux)[1]
    if resolve_180 and _skew(div) > 0:
        angle += 180.0
        div = -div
    angle = (angle + 180.0) % 360.0 - 180.0
    if angle == -180.0:
        angle = 180.0
    fit = RotationFit(
        rotation_deg=float(angle),
        flip=best,
        curl_rms=curl,
        curl_rms_other_flip=other,
        div_rms=float(np.sqrt(np.nanmean(div**2))),
        resolved_180=bool(resolve_180),
        curl_contrast=contrast,
        confidence=float(confidence),
    )
    if fit.ill_conditioned:
        warnings.warn(
            f"DPC rotation fit is ill-conditioned: confidence {confidence:.2g} (the best curl is "
            f"{100 * contrast:.3g}% below the median over angles, about what noise alone gives; "
            f"under {MIN_ROTATION_CONFIDENCE:g} there is no usable DPC signal), so "
            f"{fit.rotation_deg:.1f} deg is arbitrary: set the rotation by hand",
            IllConditionedRotationWarning,
            stacklevel=2,
        )
    return fit


def idpc(
    dpc_map: RealSpaceMap,
    *,
    regularization: float = 0.0,
    pad: bool = True,
    calibration: Calibration | None = None,
) -> RealSpaceMap:
    """Integrated DPC: the phase whose gradient is the DPC signal, by Fourier integration.

    Parameters
    ----------
    dpc_map : RealSpaceMap
        Output of :func:`dpc` (channels ``dpc_y``, ``dpc_x`` in scan axes).
    regularization : float
        ``lambda`` added to ``|f|^2`` (``f`` in cycles per scan pixel); damps spatial
        frequencies below about ``sqrt(lambda)`` (e.g. 1e-4 for features under ~100 pixels).
    pad : bool
        Mirror the field to twice its size first, so the non-periodic edges of a real scan
        do not wrap around. In all cases the mean gradient is integrated exactly as a plane
        and only the rest goes through the Fourier integration.
    calibration : Calibration, optional
        Gives the scan step and beam energy for a phase in rad; default the map's.

    Returns
    -------
    RealSpaceMap ``(scan_y, scan_x)``
        Zero-mean phase: in ``rad`` when the shifts are in 1/A or mrad (with the beam energy)
        and the scan step is calibrated and square, else ``a.u.`` (shifts in px times scan
        pixels).

    Raises
    ------
    DataShapeError
        When ``dpc_map`` is not a :func:`dpc` map or has NaN.
    ValueError
        For a negative or non-finite ``regularization``.

    Notes
    -----
    ``phi = F^-1[-i (f_x G_x + f_y G_y) / (2 pi (|f|^2 + lambda))]`` with ``G = F[grad phi]``
    [1]_.

    References
    ----------
    .. [1] I. Lazić, E. G. T. Bosch and S. Lazar, "Phase contrast STEM for thin samples:
       Integrated differential phase contrast", Ultramicroscopy 160, 265-280 (2016).
    """
    if not isinstance(dpc_map, RealSpaceMap) or "dpc_x" not in dpc_map.channels:
        raise DataShapeError("idpc needs the RealSpaceMap returned by dpc()")
    if not (regularization >= 0 and math.isfinite(regularization)):
        raise ValueError(f"regularization must be >= 0, got {regularization!r}")
    cal = calibration or dpc_map.calibration
    gy = np.asarray(dpc_map.channel("dpc_y"), dtype=np.float64)
    gx = np.asarray(dpc_map.channel("dpc_x"), dtype=np.float64)
    if not (np.all(np.isfinite(gy)) and np.all(np.isfinite(gx))):
        raise DataShapeError("the DPC map has NaN values (patterns without intensity?)")
    units, scale = "a.u.", 2 * np.pi
    k_units = dpc_map.units
    step = cal.scan_step_nm()
    if k_units in ("1/A", "mrad") and step is not None:
        k_per_unit = 1.0 if k_units == "1/A" else None
        if k_units == "mrad" and cal.beam_energy_kev is not None:
            k_per_unit = 1.0 / mrad_per_inv_A(cal.beam_energy_kev)
        if k_per_unit is not None and math.isclose(step[0], step[1], rel_tol=1e-6):
            units, scale = "rad", 2 * np.pi * k_per_unit * step[0] * 10.0  # nm -> A
    ny, nx = gy.shape
    # the mean gradient is a plane: integrate it exactly, Fourier-integrate the rest
    mgy, mgx = float(gy.mean()), float(gx.mean())
    gy, gx = gy - mgy, gx - mgx
    if pad:
        # even extension of phi: g_y is odd along y and even along x, g_x the other way round
        gy = np.concatenate([gy, -gy[::-1]], axis=0)
        gy = np.concatenate([gy, gy[:, ::-1]], axis=1)
        gx = np.concatenate([gx, gx[::-1]], axis=0)
        gx = np.concatenate([gx, -gx[:, ::-1]], axis=1)
    fy = np.fft.fftfreq(gy.shape[0])[:, None]
    fx = np.fft.rfftfreq(gy.shape[1])[None, :]
    den = 2 * np.pi * (fy * fy + fx * fx + regularization)
    den[0, 0] = np.inf
    num = fx * np.fft.rfft2(gx) + fy * np.fft.rfft2(gy)
    phi = np.fft.irfft2(-1j * num / den, s=gy.shape)[:ny, :nx]
    iy, ix = np.indices((ny, nx), dtype=np.float64)
    phi = (phi + mgy * iy + mgx * ix) * scale
    phi -= phi.mean()
    params = {
        "regularization": float(regularization),
        "pad": bool(pad),
        "dpc": dict(dpc_map.params),
    }
    return RealSpaceMap(phi, name="idpc", units=units, calibration=cal, params=params)
