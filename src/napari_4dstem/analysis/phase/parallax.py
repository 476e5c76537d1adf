"""Parallax (tilt-corrected bright-field) imaging and the aberrations it measures.

Each bright-field detector pixel ``k`` is a virtual bright-field image recorded with a tilted
illumination. For a thin object it is the axial image translated by

    d(k) = -grad_k chi(k) / (2 pi) = -lambda C k         (Angstrom, detector axes)

with ``chi = pi lambda k^T C k`` the defocus and astigmatism part of the aberration function
(:mod:`.probe`): ``C = -defocus I + astig [[-cos 2a, sin 2a], [sin 2a, cos 2a]]`` in (y, x)
order. We measure the shifts by cross-correlation against an iteratively refined reference,
fit ``d = lambda M k + c`` by least squares, split ``M = R(theta) S`` (``S`` symmetric, the
aberrations; ``theta`` a rotation the calibration has not accounted for), and sum the images
shifted back onto a finer grid: the tilt-corrected (upsampled) bright-field image.

References: Spoth, ..., Kourkoutis, Kirkland, "Dose-efficient phase-contrast imaging ...";
Yu, Varnavides, Ophus, et al., "Dose-efficient tilt-corrected bright-field STEM", Microsc.
Microanal. (2024); Kirkland, *Advanced Computing in Electron Microscopy*, ch. 3 (aberrations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...data.calibration import Calibration
from ...data.results import RealSpaceMap
from ...engine.jobs import Job, Progress, run_job
from ...errors import DataShapeError
from ._common import Geometry, bf_pixels, fourier_shift, iter_pixel_stack, register_translations
from .probe import ProbeModel, scan_to_detector

__all__ = ["ParallaxResult", "iter_parallax", "parallax"]


@dataclass(frozen=True, eq=False)
class ParallaxResult:
    """Tilt-corrected bright-field image and the fitted aberrations.

    Attributes
    ----------
    image : RealSpaceMap
        The corrected image on a grid ``upsample`` times finer than the scan (scan axes).
    shifts_px : ndarray (n_pixels, 2)
        Measured shift ``(y, x)`` of each BF pixel's image, in scan pixels (scan axes).
    k_inv_A : ndarray (n_pixels, 2)
        Frequency ``(k_y, k_x)`` of each BF pixel, 1/A, detector axes.
    defocus_A, astig_A, astig_angle_deg : float
        Fitted aberrations (conventions of :mod:`.probe`: defocus > 0 is underfocus).
    rotation_residual_deg : float
        Rotation of the shift field not explained by the calibration's ``rotation_deg``
        (add it to the calibration's rotation).
    fit_rms_A : float
        RMS residual of the linear shift model, Angstrom.
    """

    image: RealSpaceMap
    shifts_px: np.ndarray
    k_inv_A: np.ndarray
    defocus_A: float
    astig_A: float
    astig_angle_deg: float
    rotation_residual_deg: float
    fit_rms_A: float
    params: dict = field(default_factory=dict)


def _fit_aberrations(d_A: np.ndarray, k: np.ndarray, lam: float):
    """Least squares ``d = lam M k + c``; returns (M, c, rms residual)."""
    n = len(k)
    a = np.zeros((2 * n, 6))
    a[0::2, 0], a[0::2, 1], a[0::2, 4] = lam * k[:, 0], lam * k[:, 1], 1.0
    a[1::2, 2], a[1::2, 3], a[1::2, 5] = lam * k[:, 0], lam * k[:, 1], 1.0
    coef, *_ = np.linalg.lstsq(a, d_A.ravel(), rcond=None)
    m = coef[:4].reshape(2, 2)
    rms = float(np.sqrt(np.mean((a @ coef - d_A.ravel()) ** 2)))
    return m, coef[4:], rms


def _decompose(m: np.ndarray) -> tuple[float, float, float, float]:
    """``M = R(theta) S`` with |theta| <= 90 deg -> (defocus, astig, astig angle deg, theta deg)."""
    theta = math.atan2(m[0, 1] - m[1, 0], m[0, 0] + m[1, 1])
    if theta > math.pi / 2:
        theta -= math.pi
    elif theta < -math.pi / 2:
        theta += math.pi
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, s], [-s, c]])  # rotation by theta in (y, x) order
    sym = rot.T @ m
    sym = 0.5 * (sym + sym.T)
    cmat = -sym  # d = -lam C k
    defocus = -0.5 * (cmat[0, 0] + cmat[1, 1])
    acos2 = 0.5 * (cmat[1, 1] - cmat[0, 0])
    asin2 = cmat[0, 1]
    astig = math.hypot(acos2, asin2)
    angle = 0.5 * math.degrees(math.atan2(asin2, acos2))
    return defocus, astig, angle, math.degrees(theta)


def _splat(images: np.ndarray, shifts: np.ndarray, upsample: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum images ``(n, h, w)`` placed at ``r - shift`` on a grid ``upsample`` times finer
    (bilinear weights, periodic); returns (weighted sum, weights)."""
    _, h, w = images.shape
    hu, wu = h * upsample, w * upsample
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    ty = (yy[None] - shifts[:, 0, None, None]) * upsample
    tx = (xx[None] - shifts[:, 1, None, None]) * upsample
    y0, x0 = np.floor(ty).astype(np.int64), np.floor(tx).astype(np.int64)
    fy, fx = ty - y0, tx - x0
    acc = np.zeros(hu * wu)
    wsum = np.zeros(hu * wu)
    for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (1, 0, fy * (1 - fx)),
                       (0, 1, (1 - fy) * fx), (1, 1, fy * fx)):
        idx = ((y0 + dy) % hu) * wu + (x0 + dx) % wu
        acc += np.bincount(idx.ravel(), weights=(wt * images).ravel(), minlength=hu * wu)
        wsum += np.bincount(idx.ravel(), weights=wt.ravel(), minlength=hu * wu)
    return acc.reshape(hu, wu), wsum.reshape(hu, wu)


def iter_parallax(
    datacube,
    *,
    probe: ProbeModel | None = None,
    calibration: Calibration | None = None,
    bf_fraction: float = 0.9,
    iterations: int = 4,
    upsample: int = 2,
    lowpass_px: float | None = None,
    use_fitted_shifts: bool = False,
    scan_chunk: tuple[int, int] | None = None,
) -> Job[ParallaxResult]:
    """Job: tilt-corrected bright-field image and the aberrations fitted to its shifts.

    Parameters
    ----------
    datacube : DataCube ``(scan_y, scan_x, k_y, k_x)``
        Calibrated: scan step (A or nm), detector pixel (1/A or mrad), beam energy,
        convergence angle; the origin (else the detector centre) and rotation are used.
    probe : ProbeModel, optional
        Energy and convergence angle (default: from the calibration).
    bf_fraction : float
        Use the pixels inside this fraction of the bright-field disk radius (its edge carries
        little signal and the edge of a real disk is blurred).
    iterations : int
        Rounds of alignment against a reference re-made from the aligned images.
    upsample : int
        The corrected image's grid is this many times finer than the scan.
    lowpass_px : float, optional
        Gaussian width (in cycles per scan pixel) of the weight on the cross-power spectra.
        Default: none.
    use_fitted_shifts : bool
        Shift the images back by the fitted model rather than by the measured shifts.
    """
    cal = calibration or datacube.calibration
    geo = Geometry.of(datacube, cal)
    probe = probe or ProbeModel.from_calibration(cal)
    if min(geo.scan_shape) < 4:
        raise DataShapeError(f"parallax needs a scan of at least 4 x 4 positions, got {geo.scan_shape}")
    iy, ix = bf_pixels(geo, probe, fraction=bf_fraction)
    stack = yield from iter_pixel_stack(datacube, iy, ix, scan_chunk=scan_chunk)
    imgs = np.moveaxis(stack, -1, 0).astype(np.float64)  # (n, ny, nx)
    mean = imgs.mean(axis=(1, 2), keepdims=True)
    imgs = imgs / np.where(mean > 0, mean, 1.0) - 1.0
    ky, kx = geo.k_of_pixels(iy, ix)
    kr = np.hypot(ky, kx)
    # first reference: the near-axial pixels, whose images are hardly shifted
    inner = kr <= np.quantile(kr, 0.1)
    ref = imgs[inner].mean(axis=0)
    shifts = np.zeros((len(iy), 2))
    total = iterations + 1
    for it in range(iterations):
        shifts = register_translations(imgs, ref, lowpass=lowpass_px)
        shifts -= shifts[inner].mean(axis=0)
        ref = fourier_shift(imgs, -shifts).mean(axis=0)
        yield Progress(it + 1, total, "aligning BF images")
    # fit in detector axes, Angstrom
    d_scan_A = shifts * np.asarray(geo.step_A)[None]
    vy, vx = scan_to_detector(d_scan_A[:, 0], d_scan_A[:, 1], rotation_deg=geo.rotation_deg, flip=geo.flip)
    d_det = np.stack([vy, vx], axis=1)
    k = np.stack([ky, kx], axis=1)
    lam = probe.wavelength_A
    m, c, rms = _fit_aberrations(d_det, k, lam)
    defocus, astig, angle, theta = _decompose(m)
    if use_fitted_shifts:
        fit_det = lam * (k @ m.T) + c
        # back to scan axes (rotate_to_scan inverse of scan_to_detector)
        from ..dpc import rotate_to_scan

        uy, ux = rotate_to_scan(fit_det[:, 0], fit_det[:, 1], rotation_deg=geo.rotation_deg, flip=geo.flip)
        use = np.stack([uy, ux], axis=1) / np.asarray(geo.step_A)[None]
    else:
        use = shifts
    acc, wsum = _splat(imgs, use, int(upsample))
    image = acc / np.maximum(wsum, 1e-3 * wsum.max())
    yield Progress(total, total, "tilt-corrected image")
    params = dict(method="parallax", probe=probe.to_dict(), bf_fraction=bf_fraction,
                  iterations=iterations, upsample=int(upsample), lowpass_px=lowpass_px,
                  use_fitted_shifts=use_fitted_shifts, n_pixels=len(iy))
    fit = dict(defocus_A=float(defocus), astig_A=float(astig), astig_angle_deg=float(angle),
               rotation_residual_deg=float(theta), fit_rms_A=rms)
    img_cal = Calibration(scan_step=(geo.step_A[0] / upsample, geo.step_A[1] / upsample),
                          scan_units="A")
    return ParallaxResult(
        image=RealSpaceMap(image, name="parallax_bf", units="", calibration=img_cal,
                           params={**params, "fit": fit}),
        shifts_px=shifts,
        k_inv_A=k,
        defocus_A=float(defocus),
        astig_A=float(astig),
        astig_angle_deg=float(angle),
        rotation_residual_deg=float(theta),
        fit_rms_A=rms,
        params=params,
    )


def parallax(datacube, *, progress=None, **kwargs) -> ParallaxResult:
    """Eager twin of :func:`iter_parallax`."""
    return run_job(iter_parallax(datacube, **kwargs), progress)
