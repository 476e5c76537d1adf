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

Background: tilt-corrected bright-field STEM (as in py4DSTEM's ``Parallax``, read for the idea
only, no code taken); Kirkland, *Advanced Computing in Electron Microscopy*, ch. 3
(aberrations). The model-based refinement of defocus and astigmatism (``refine``) is ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...data.calibration import Calibration
from ...data.results import RealSpaceMap
from ...engine.jobs import Job, Progress, eager
from ...errors import DataShapeError, NonFiniteDataError
from ._common import Geometry, bf_pixels, fourier_shift, iter_pixel_stack, register_translations
from .probe import ProbeModel, scan_to_detector

__all__ = ["ParallaxResult", "iter_parallax", "parallax"]

#: the defocus grid reaches this many times the trusted defocus (:func:`_trusted_defocus_A`): a
#: fit beyond the trusted range is found there and gated off (at 1.5 x, a planted 1200 A on a 16 A
#: field read -603 A inside the range and passed the gate; at 2.5 x 1154 A, gated off)
REACH_OF_TRUSTED = 2.5
#: the refinement's algorithm version (:func:`iter_parallax`'s ``version``; recipes keep theirs)
PARALLAX_VERSION = 3
#: every version a recipe may name (1: session 12; 2: session 13, the rotation scanned; 3: session 14,
#: the spectra of each image's periodic component and a stated 95 % interval)
PARALLAX_VERSIONS = (1, 2, 3)
#: version 3's finite-field term of the defocus's uncertainty: ``FINITE_FIELD_COEF d^2 / trusted``
#: (A; the trusted defocus of :func:`_trusted_defocus_A`). Noise-free, on the 16 x 16 tuning scans (8 A
#: field, trusted 315 A, seeds 1-6 and 31-33), version 3 still read 200 A 0.6-9.6 A short (the worst with
#: 39 A of spurious astigmatism at a rotation 4.8 deg off, a finite-field optimum the jackknife cannot
#: see: every pixel group shares the field); 0.03 makes that worst case's 95 % interval hold 200 A
FINITE_FIELD_COEF = 0.03
#: the two-sided 95 % quantile of Student's t with 3 degrees of freedom (the jackknife's 4 groups)
T95_3DOF = 3.182
#: the coarse rotation scan's step (degrees, over a half turn); the rotation is then refined
ROTATION_STEP_DEG = 10.0
#: a fit whose rotation is further than this from the calibration's (degrees) is not trusted: the
#: shift field turned by a half turn is the same with the aberrations' sign flipped, so the defocus's
#: sign is defined only by keeping the rotation within +-90 deg of the calibration's, and a rotation
#: near 90 deg off could as well be the one a half turn away (the opposite sign)
ROTATION_RESIDUAL_MAX_DEG = 45.0
#: a fit whose left-out groups' rotations spread more than this (jackknife SE, degrees) is not
#: trusted: the rotation is not determined, and the defocus read at a wrong one is short
ROTATION_SE_MAX_DEG = 3.0


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
        (add it to the calibration's rotation). With ``refine``, the rotation the transfer fit
        kept: version 2 scans it over a half turn and refines it (at low dose the shift field's
        rotation is noise), within [-90, 90) deg (a half turn more is the same fit with the
        defocus's sign flipped; beyond 45 deg the fit is not confident); version 1 kept the shift
        field's, or 0 when the calibration's captured more. The shift field's own is in
        ``image.params["fit"]["shift_fit"]["rotation_residual_deg"]``.
    fit_rms_A : float
        RMS residual of the linear shift model, Angstrom.
    params : dict
        The parameters of the run.
    defocus_se_A : float
        Standard error of ``defocus_A`` (jackknife over groups of BF pixels; NaN without
        ``refine``).
    defocus_interval_A : (float, float) or None
        Version 3: the defocus's 95 % interval, ``defocus_A -+ 3.18 defocus_se_A`` (Student's t, 3
        degrees of freedom: the jackknife's 4 groups), the SE holding the finite-field term
        ``FINITE_FIELD_COEF d^2 / trusted``; None without ``refine`` and before version 3 (their SE
        is the jackknife's only, which noise-free is 0.5 A for fits 2-12 A off).
    defocus_confident : bool
        Whether ``defocus_A`` is distinguishable from 0: ``|defocus_A| >= 3 defocus_se_A`` and a
        parametric bootstrap test of "no aberrations" at p <= 0.05 (always True without ``refine``; the
        statistics are in ``image.params["fit"]["confidence"]``). At low dose on an in-focus scan
        the fit follows the noise and this is False; the ``run_phase`` pipeline then keeps the
        typed defocus under ``fit_defocus=None`` ("auto").
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
    defocus_se_A: float = math.nan
    defocus_confident: bool = True
    defocus_interval_A: tuple[float, float] | None = None


def _fit_aberrations(d_A: np.ndarray, k: np.ndarray, lam: float):
    """Least squares ``d = lam M k + c``; returns (M, c, rms residual)."""
    n = len(k)
    a = np.zeros((2 * n, 6))
    a[0::2, 0], a[0::2, 1], a[0::2, 4] = lam * k[:, 0], lam * k[:, 1], 1.0
    a[1::2, 2], a[1::2, 3], a[1::2, 5] = lam * k[:, 0], lam * k[:, 1], 1.0
    coef, *_ = np.linalg.lstsq(a, d_A.ravel(), rcond=None)
    m = coef[:4].reshape(2, 2)
    resid = a @ coef - d_A.ravel()
    rms = float(np.sqrt(np.mean(resid**2)))
    spread = float(np.sum((d_A - d_A.mean(axis=0)) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / spread if spread > 0 else 0.0
    return m, coef[4:], rms, r2


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
    """Sum images ``(n, h, w)`` placed at ``r - shift`` on a grid ``upsample`` times finer.

    Bilinear weights, periodic; returns (weighted sum, weights).
    """
    _, h, w = images.shape
    hu, wu = h * upsample, w * upsample
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    ty = (yy[None] - shifts[:, 0, None, None]) * upsample
    tx = (xx[None] - shifts[:, 1, None, None]) * upsample
    y0, x0 = np.floor(ty).astype(np.int64), np.floor(tx).astype(np.int64)
    fy, fx = ty - y0, tx - x0
    acc = np.zeros(hu * wu)
    wsum = np.zeros(hu * wu)
    for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (1, 0, fy * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 1, fy * fx)):
        idx = ((y0 + dy) % hu) * wu + (x0 + dx) % wu
        acc += np.bincount(idx.ravel(), weights=(wt * images).ravel(), minlength=hu * wu)
        wsum += np.bincount(idx.ravel(), weights=wt.ravel(), minlength=hu * wu)
    return acc.reshape(hu, wu), wsum.reshape(hu, wu)


def _two_sided_mask(geo: Geometry, probe: ProbeModel, ky: np.ndarray, kx: np.ndarray) -> np.ndarray:
    """Scan frequencies Q with both side bands, ``(n_pixels, scan_y, scan_x)`` bool.

    True where both ``k - Q`` and ``k + Q`` lie inside the aperture, for each BF pixel ``k``
    (detector axes); Q in fft order.
    """
    ny, nx = geo.scan_shape
    qy_s = np.fft.fftfreq(ny, geo.step_A[0])[:, None]
    qx_s = np.fft.fftfreq(nx, geo.step_A[1])[None, :]
    qy, qx = scan_to_detector(
        np.broadcast_to(qy_s, (ny, nx)), np.broadcast_to(qx_s, (ny, nx)), rotation_deg=geo.rotation_deg, flip=geo.flip
    )
    ka2 = probe.k_aperture_inv_A**2
    out = np.empty((len(ky), ny, nx), bool)
    for i in range(len(ky)):
        out[i] = (((ky[i] - qy) ** 2 + (kx[i] - qx) ** 2) <= ka2) & (((ky[i] + qy) ** 2 + (kx[i] + qx) ** 2) <= ka2)
    return out


class _Transfer:
    """The weak-phase transfer ``Gamma(k, Q)`` of :mod:`.ssb` on chosen (Q, k), at one scan rotation.

    ``qqy, qqx`` are the chosen scan frequencies (scan axes, 1/A), ``k`` the chosen BF pixels'
    frequencies ``(n_k, 2)`` (detector axes); ``rotation_deg`` turns Q into detector axes.
    ``chi`` is quadratic in the fitted terms (defocus, astigmatism), so the phase differences are
    linear combinations of precomputed products (Cs, if any, is kept fixed):
    ``Gamma = exp(2i pl kCq) (am exp(i (cs_m - pl qCq)) - ap exp(i (cs_p + pl qCq)))``.
    """

    def __init__(self, qqy, qqx, k, probe: ProbeModel, geo: Geometry, rotation_deg: float):
        from .probe import aberration_chi, aperture

        qy, qx = scan_to_detector(qqy, qqx, rotation_deg=rotation_deg, flip=geo.flip)
        qy, qx = qy[:, None], qx[:, None]
        ky, kx = k[None, :, 0], k[None, :, 1]
        edge = geo.k_pixel_inv_A
        a0 = aperture(ky, kx, probe, edge_inv_A=edge)
        am = a0 * aperture(ky - qy, kx - qx, probe, edge_inv_A=edge)
        ap = a0 * aperture(ky + qy, kx + qx, probe, edge_inv_A=edge)
        cs_only = ProbeModel(probe.energy_kev, probe.convergence_mrad, cs_mm=probe.cs_mm)
        c0 = aberration_chi(ky, kx, cs_only)
        cs_m = c0 - aberration_chi(ky - qy, kx - qx, cs_only)
        cs_p = aberration_chi(ky + qy, kx + qx, cs_only) - c0
        f32 = np.float32
        self.rotation_deg = float(rotation_deg)
        self.pl = f32(math.pi * probe.wavelength_A)
        self.ecs_m = (am * np.exp(1j * cs_m)).astype(np.complex64)
        self.ecs_p = (ap * np.exp(1j * cs_p)).astype(np.complex64)
        self.t_sum = (ky * qy + kx * qx).astype(f32)
        self.t_dif = (kx * qx - ky * qy).astype(f32)
        self.t_yx = (ky * qx + kx * qy).astype(f32)
        self.q_sum = (qy * qy + qx * qx).astype(f32)
        self.q_dif = (qx * qx - qy * qy).astype(f32)
        self.q_yx = (2 * qy * qx).astype(f32)

    def gamma(self, dfs, xa: float, xs: float) -> np.ndarray:
        """``Gamma(k, Q)`` for defoci ``dfs`` (astigmatism ``xa, xs``): ``(len(dfs), n_Q, n_k)``."""
        d = np.asarray(dfs, np.float32)[:, None, None]
        xa, xs = np.float32(xa), np.float32(xs)
        kcq = -d * self.t_sum + xa * self.t_dif + xs * self.t_yx
        qcq = _cis(self.pl * (-d * self.q_sum + xa * self.q_dif + xs * self.q_yx))
        return _cis(np.float32(2) * self.pl * kcq) * (self.ecs_m * np.conj(qcq) - self.ecs_p * qcq)

    @staticmethod
    def captured(gam: np.ndarray, gsets) -> np.ndarray:
        """Captured energy ``sum_Q C_Q`` for each (G, pixel weights) of ``gsets``: ``(len(gsets), len(gam))``."""
        p2 = (gam.real**2 + gam.imag**2).astype(np.float32)
        out = np.empty((len(gsets), len(gam)))
        for i, (gg, w) in enumerate(gsets):
            num = np.einsum("dqk,qk->dq", np.conj(gam), gg if w is None else gg * w)
            den = (p2.sum(axis=2) if w is None else p2 @ w) + 1e-9
            out[i] = np.sum((num.real**2 + num.imag**2) / den, axis=1)
        return out

    def iter_grid(self, grid, xa: float, xs: float, gsets, chunk: int = 8):
        """``captured`` over the defocus ``grid`` (astigmatism fixed), ``chunk`` defoci at a time.

        Yields ``(len(gsets), <= chunk)`` arrays (one ``Gamma`` serves every set).
        """
        for i in range(0, len(grid), chunk):
            yield self.captured(self.gamma(grid[i : i + chunk], xa, xs), gsets)

    def score(self, x, g, w=None) -> float:
        """Minus the captured energy at ``x = (defocus, astig cos 2a, astig sin 2a)``."""
        return -float(self.captured(self.gamma([x[0]], x[1], x[2]), [(g, w)])[0, 0])


def _spectra(
    imgs: np.ndarray,
    pix: np.ndarray,
    geo: Geometry,
    probe: ProbeModel,
    max_q: int,
    seed: int = 0,
    periodic: bool = False,
):
    """The chosen pixels' scan spectra at up to ``max_q`` scan frequencies (one of each pair Q, -Q).

    A generator (yields between pixel chunks, where a cancel can stop it); returns ``(g (n_Q, n_k)
    complex64, qqy, qqx (scan axes), sel (flat fft indices))``. With ``periodic`` (version 3) the
    spectra are those of each image's periodic component (:func:`_smooth_component_fft` removed): a
    scan is not periodic, and the jumps between its opposite edges sit at the same place in every
    pixel's image, a shared unshifted feature that pulled the fitted defocus toward 0. The FFTs run over pixel chunks
    (32 MiB): memory of the chosen frequencies, not of the whole stack's spectra.
    """
    _, ny, nx = imgs.shape
    qy_s = np.fft.fftfreq(ny, geo.step_A[0])
    qx_s = np.fft.fftfreq(nx, geo.step_A[1])
    qqy, qqx = (v.ravel() for v in np.meshgrid(qy_s, qx_s, indexing="ij"))
    qr = np.hypot(qqy, qqx)  # a rotation does not change |Q|
    # one of each pair Q, -Q: for real images G(-Q) = conj G(Q) carries nothing new
    half = (qqy > 0) | ((qqy == 0) & (qqx > 0))
    sel = np.nonzero(half & (qr > 0) & (qr < 2 * probe.k_aperture_inv_A))[0]
    if len(sel) > max_q:
        sel = np.sort(np.random.default_rng(seed).choice(sel, max_q, replace=False))
    g = np.empty((len(sel), len(pix)), np.complex64)
    # a chunk's spectra (complex128) are 32 MiB at most; with ``periodic`` half as many pixels, its
    # smooth component's spectra being a second such array
    step = max(1, (32 * 2**20) // (16 * ny * nx) // (2 if periodic else 1))
    for a in range(0, len(pix), step):
        spec = np.fft.fft2(imgs[pix[a : a + step]])
        if periodic:
            spec -= _smooth_component_fft(imgs[pix[a : a + step]])
        g[:, a : a + step] = spec.reshape(-1, ny * nx)[:, sel].T
        yield "the pixels' spectra"
    return g, qqy[sel], qqx[sel], sel


def _smooth_component_fft(u: np.ndarray) -> np.ndarray:
    """The spectrum of the smooth component of images ``u`` (..., h, w) (Moisan's periodic plus smooth).

    ``u = p + s`` with ``p`` periodic and ``s`` smooth, holding the jumps between opposite edges
    that the FFT's periodic wrap adds to every image at the same place: ``s`` solves the periodic
    discrete Poisson equation whose source ``v`` is those jumps on the boundary rows and columns.
    ``v`` is zero inside, so its spectrum is two outer products of 1-D FFTs of the jumps (no second
    image-sized FFT: one complex array of ``u``'s size is the only scan-sized allocation).
    """
    h, w = u.shape[-2:]
    dy = u[..., -1, :] - u[..., 0, :]  # v: +dy on the first row, -dy on the last
    dx = u[..., :, -1] - u[..., :, 0]  # and +dx on the first column, -dx on the last
    ey = 1.0 - np.exp(2j * np.pi * np.fft.fftfreq(h))  # the FFT over y of (row 0: +1, row h-1: -1)
    ex = 1.0 - np.exp(2j * np.pi * np.fft.fftfreq(w))
    out = ey[:, None] * np.fft.fft(dy, axis=-1)[..., None, :]
    fdx = np.fft.fft(dx, axis=-1)
    # added image by image: the whole stack's outer product would be a second array of ``out``'s size
    for o, f in zip(out.reshape(-1, h, w), fdx.reshape(-1, h), strict=True):
        o += f[:, None] * ex[None, :]
    cy = np.cos(2 * np.pi * np.fft.fftfreq(h))[:, None]
    cx = np.cos(2 * np.pi * np.fft.fftfreq(w))[None, :]
    den = 2 * cy + 2 * cx - 4
    den[0, 0] = 1.0
    out /= den
    out[..., 0, 0] = 0.0
    return out


def _defocus_grid(reach: float, inner: float = 300.0, step: float = 10.0, outer_points: int = 30) -> np.ndarray:
    """Symmetric defocus grid holding 0: ``step`` apart out to ``inner``, then geometric to ``reach``.

    The geometric part has at most ``outer_points`` points a side, a ratio of at least 1.08.
    """
    lin = np.arange(0.0, inner + 0.5 * step, step)
    out: list[float] = []
    if reach > inner:
        ratio = max(1.08, (reach / inner) ** (1.0 / outer_points))
        v = inner
        while v < reach:
            v = min(v * ratio, reach)
            out.append(v)
    pos = np.concatenate([lin[1:], np.asarray(out)])
    return np.concatenate([-pos[::-1], [0.0], pos])


def _signal_window(imgs: np.ndarray, pix: np.ndarray, by: int, bx: int) -> tuple[int, int]:
    """Origin ``(y0, x0)`` of the ``by`` x ``bx`` block of scan positions where the BF images vary most.

    At each position, the variance of the pixels ``pix``'s (zero mean, normalised) images across
    the pixels (a pixel at a time: two scan-sized arrays more), then the block sum of every origin by
    an integral image: vacuum (every pixel sees the same flat image, only noise) scores low, the
    specimen (each pixel sees it shifted, or with its own contrast) high. A brightness shared by all
    the pixels (a darker specimen scattering out of the BF disk, a thickness ramp) cancels: the sum
    of the squared images (session 13's first version) put the window in a brighter vacuum corner.
    Of equal blocks the one nearest the centre. ``O(len(pix) N_R)``.
    """
    _, ny, nx = imgs.shape
    s1, s2 = np.zeros((ny, nx)), np.zeros((ny, nx))
    for i in pix:
        s1 += imgs[i]
        s2 += imgs[i] ** 2
    n = max(len(pix), 1)
    power = np.clip(s2 / n - (s1 / n) ** 2, 0.0, None)  # the variance across the pixels, position by position
    cum = np.zeros((ny + 1, nx + 1))
    cum[1:, 1:] = power.cumsum(axis=0).cumsum(axis=1)
    block = cum[by:, bx:] - cum[:-by, bx:] - cum[by:, :-bx] + cum[:-by, :-bx]
    # of equal blocks (a flat scan) the one nearest the centre
    top = np.argwhere(block >= block.max() - 1e-9 * abs(block.max()))
    y0, x0 = top[int(np.argmin(np.hypot(top[:, 0] - (ny - by) / 2, top[:, 1] - (nx - bx) / 2)))]
    return int(y0), int(x0)


def _trusted_defocus_A(geo: Geometry, probe: ProbeModel, k: np.ndarray) -> float:
    """The largest defocus at which half of the BF pixels' images are shifted by at most half the field.

    Beyond it most pixels see object regions the axial image does not hold (the probe is wider
    than the scanned field) and the transfer fit can lock onto a wrong optimum (planted 800 A on a
    16 A field read -213 A).
    """
    field_A = min(geo.scan_shape[0] * geo.step_A[0], geo.scan_shape[1] * geo.step_A[1])
    k_med = float(np.median(np.hypot(k[:, 0], k[:, 1])))
    return field_A / (2 * probe.wavelength_A * max(k_med, 1e-12))


def _refine_aberrations(
    imgs,
    geo: Geometry,
    probe: ProbeModel,
    k,
    defocus,
    astig,
    angle,
    rotations_deg,
    max_q: int = 500,
    max_pixels: int = 200,
    groups: int = 4,
    surrogates: int = 19,
    bootstrap_scan: int = 64,
    version: int = 2,
):
    """Defocus and astigmatism that best explain the BF pixels' spectra, and their spread.

    The weak-phase model ``G(k, Q) = i Phi(Q) Gamma(k, Q)`` (:mod:`.ssb`): maximise the energy
    of ``G`` captured by the least-squares ``Phi`` over (up to ``max_q``) frequencies,
    Nelder-Mead from the shift fit and from the best defocus of a grid search (astigmatism 0),
    the better end kept (at low dose the shift fit is noise and Nelder-Mead from it alone stops in
    a local optimum). The grid is searched at each scan rotation of ``rotations_deg`` (the
    calibration's, and the calibration's plus the shift field's residual) and the fit made at the
    rotation whose grid captures more energy: at low dose the shift field's rotation is noise (22-35 deg
    at 1e4 e/A^2 on 16 x 16 scans), and a model turned by it reads the defocus 30 % short.
    The grid reaches max(300 A, 1.5 x the shift fit's defocus, ``REACH_OF_TRUSTED`` x the trusted
    defocus of :func:`_trusted_defocus_A`). The same fit leaving out each of ``groups`` random groups of the
    BF pixels gives the defocus's jackknife standard error, and ``surrogates`` data sets simulated
    without aberrations the null of a bootstrap test (:func:`_fit_confidence`), drawn on the
    central ``bootstrap_scan`` x ``bootstrap_scan`` positions at most (the test's cost does not
    grow with the scan). A generator: yields a message between its steps (each surrogate, each
    left-out group: a cancel stops it within one), returns ``(defocus, astig, angle, stats)``.
    """
    from scipy.optimize import minimize, minimize_scalar

    n, ny, nx = imgs.shape
    pix = np.arange(n)
    if n > max_pixels:
        pix = np.random.default_rng(1).choice(n, max_pixels, replace=False)
    n_k = len(pix)
    kp = k[pix]
    g, qqy, qqx, sel = yield from _spectra(imgs, pix, geo, probe, max_q, periodic=version >= 3)

    a2 = math.radians(2 * angle)
    x_shift = np.array([defocus, astig * math.cos(a2), astig * math.sin(a2)])
    trusted = _trusted_defocus_A(geo, probe, k)
    reach = max(300.0, 1.5 * abs(defocus), REACH_OF_TRUSTED * trusted)
    grid = _defocus_grid(reach)
    n_grid, i0 = len(grid), len(grid) // 2
    rng = np.random.default_rng(2)
    rotations_deg = [float(r) for r in rotations_deg]
    scanned: list[float] = []
    if version >= 2:
        # a coarse scan of the rotation over a half turn about the calibration's (a half turn more
        # is the defocus's sign, which the grid holds), on every third frequency; the best one
        # joins the candidates searched on all of them
        # (symmetric about the calibration's: -90 and +90 are the same shift field, signs flipped)
        scanned = [rotations_deg[0] + o for o in np.arange(-90.0, 90.0 + ROTATION_STEP_DEG / 2, ROTATION_STEP_DEG)]
        coarse = []
        for rot in scanned:
            m_c = _Transfer(qqy[::3], qqx[::3], kp, probe, geo, rot)
            coarse.append(max(float(part.max()) for part in m_c.iter_grid(grid, 0.0, 0.0, [(g[::3], None)])))
            yield "searching the rotation"
        top = scanned[int(np.argmax(coarse))]
        if all(abs(top - r) > 0.5 for r in rotations_deg):
            rotations_deg.append(top)
    # the rotation whose best defocus on the grid (astigmatism 0) captures the most energy
    candidates = []
    for rot in rotations_deg:
        model = _Transfer(qqy, qqx, kp, probe, geo, rot)
        yield "searching the defocus"
        parts = []
        for part in model.iter_grid(grid, 0.0, 0.0, [(g, None)]):
            parts.append(part)
            yield "searching the defocus"  # a point where a cancel can stop the job
        candidates.append((model, np.concatenate(parts, 1)[0]))
    model, energy = max(candidates, key=lambda c: float(c[1].max()))
    rotation_used = model.rotation_deg
    runs = []
    for x0 in (x_shift, np.array([grid[int(np.argmax(energy))], 0.0, 0.0])):
        simplex = x0 + np.array([[0, 0, 0], [20.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0]])
        opts = dict(initial_simplex=simplex, xatol=1.0, fatol=1e-9, maxfev=200)
        runs.append(minimize(lambda x: model.score(x, g), x0, method="Nelder-Mead", options=opts))
        yield "fitting the transfer model"
    best = min(runs, key=lambda r: r.fun)
    fun, x = best.fun, best.x
    if version >= 2:
        # refine the rotation (the defocus and astigmatism held), then the aberrations at it
        res = minimize_scalar(lambda r: _Transfer(qqy, qqx, kp, probe, geo, r).score(x, g),
                              bounds=(rotation_used - ROTATION_STEP_DEG, rotation_used + ROTATION_STEP_DEG),
                              method="bounded", options=dict(xatol=0.2))  # fmt: skip
        yield "fitting the rotation"
        rot = float(res.x) if res.fun < fun else rotation_used
        # into [-90, 90) deg of the calibration's: a half turn more is the same shift field with the
        # aberrations' sign flipped (the transfer at rotation + 180 deg and -C equals minus the one at
        # rotation and C), so the defocus's sign is the one at the rotation nearer the calibration's
        wrapped = _wrap_rotation(rot, rotations_deg[0])
        if wrapped != rotation_used:
            if wrapped != rot:
                x = -x
            model = _Transfer(qqy, qqx, kp, probe, geo, wrapped)
            rotation_used = model.rotation_deg
            simplex = x + np.array([[0, 0, 0], [10.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])
            opts = dict(initial_simplex=simplex, xatol=0.5, fatol=1e-9, maxfev=200)
            best = minimize(lambda v: model.score(v, g), x, method="Nelder-Mead", options=opts)
            fun, x = best.fun, best.x
            parts = []
            for part in model.iter_grid(grid, 0.0, 0.0, [(g, None)]):
                parts.append(part)
                yield "fitting the rotation"
            energy = np.concatenate(parts, 1)[0]

    # parametric bootstrap of the gain under "no aberrations": the least-squares object at
    # defocus 0 plus noise drawn as shot noise is, in real space (independent between positions
    # and pixels, variance proportional to the intensity), scaled to the variance the fit leaves;
    # on a central sub-scan of at most bootstrap_scan^2 positions (the whole scan when smaller)
    by, bx = min(ny, bootstrap_scan), min(nx, bootstrap_scan)
    y0, x0_ = 0, 0
    if (by, bx) == (ny, nx):
        sub, g_b, sel_b, model_b, energy_b, fun_b = imgs, g, sel, model, energy, fun
    else:
        y0, x0_ = _signal_window(imgs, pix, by, bx) if version >= 2 else ((ny - by) // 2, (nx - bx) // 2)
        sub = imgs[:, y0 : y0 + by, x0_ : x0_ + bx]
        sub_geo = Geometry((by, bx), geo.detector_shape, geo.step_A, geo.k_pixel_inv_A, geo.origin_px,
                           geo.rotation_deg, geo.flip)  # fmt: skip
        g_b, qby, qbx, sel_b = yield from _spectra(sub, pix, sub_geo, probe, max_q, periodic=version >= 3)
        model_b = _Transfer(qby, qbx, kp, probe, geo, rotation_used)
        parts = []
        for part in model_b.iter_grid(grid, 0.0, 0.0, [(g_b, None)]):
            parts.append(part)
            yield "testing the defocus against noise"
        energy_b = np.concatenate(parts, 1)[0]
        fun_b = model_b.score(x, g_b)
    yield "testing the defocus against noise"
    n_q = g_b.shape[0]
    sigma2 = max((float(np.sum(np.abs(g_b.astype(np.complex128)) ** 2)) + fun_b) / (n_q * max(n_k - 1, 1)), 1e-30)
    gam0 = model_b.gamma([0.0], 0.0, 0.0)[0]
    norm0 = np.sum(np.abs(gam0) ** 2, axis=1) + 1e-9
    proj0 = np.sum(g_b * np.conj(gam0), axis=1)
    # the least-squares object holds the noise's projection too (sigma^2 of captured energy at
    # each Q the model reaches): shrunk (one factor, James-Stein) so that its energy is the
    # captured energy less that
    c0 = float(np.sum(np.abs(proj0) ** 2 / norm0))
    reached = int(np.sum(norm0 > 1e-6 * norm0.max()))
    shrink = math.sqrt(max(c0 - reached * sigma2, 0.0) / max(c0, 1e-30))
    signal0 = ((shrink * proj0 / norm0)[:, None] * gam0).astype(np.complex64)
    _, sy, sx = sub.shape
    level = np.clip(sub[pix] + 1.0, 0.0, None)  # intensity / its mean (n_k, sy, sx)
    sd = np.sqrt(level / np.maximum(level.mean(axis=(1, 2), keepdims=True), 1e-12) * sigma2 / (sy * sx))
    sets = []
    for _ in range(surrogates):
        noise = np.fft.fft2(sd * rng.standard_normal(sd.shape)).reshape(n_k, -1).T[sel_b]
        sets.append(((signal0 + noise).astype(np.complex64), None))
        yield "testing the defocus against noise"
    parts = []
    for part in model_b.iter_grid(grid, 0.0, 0.0, sets):  # one Gamma per chunk serves every surrogate
        parts.append(part)
        yield "testing the defocus against noise"
    null = np.concatenate(parts, 1)
    gain = float(energy_b.max() - energy_b[i0])  # best over the grid vs defocus 0
    null_gains = null.max(axis=1) - null[:, i0]
    # jackknife: the defocus leaving out each group of pixels, the astigmatism held at the fit
    label = rng.permutation(n_k) % groups
    weights = [(label != i).astype(np.float32) for i in range(groups)]
    parts = []
    for part in model.iter_grid(grid, x[1], x[2], [(g, w) for w in weights]):
        parts.append(part)
        yield "the defocus's standard error"
    per_group = np.concatenate(parts, 1)
    left_rot = np.full(groups, rotation_used)
    if version >= 2:
        # each left-out group's own rotation: the best defocus near the fit at rotations around
        # the kept one, a parabola through its energies (one Gamma serves every group)
        offsets = ROTATION_STEP_DEG / 2 * np.arange(-2.0, 3.0)
        local = x[0] + np.arange(-40.0, 41.0, 5.0)
        e_rot = np.empty((groups + 1, len(offsets)))
        sets_r = [(g, w) for w in weights] + [(g, None)]
        for j, off in enumerate(offsets):
            m_r = _Transfer(qqy, qqx, kp, probe, geo, rotation_used + off)
            e_rot[:, j] = np.concatenate(list(m_r.iter_grid(local, x[1], x[2], sets_r)), 1).max(1)
            yield "the rotation's standard error"
        tops = []
        for e in e_rot:
            a, b, _ = np.polyfit(offsets, e / max(float(np.abs(e).max()), 1e-30), 2)
            # no peak inside the scanned offsets: the rotation is at least that far off
            top = -b / (2 * a) if a < 0 else offsets[int(np.argmax(e))] * 1.5
            tops.append(float(np.clip(top, 1.5 * offsets[0], 1.5 * offsets[-1])))
        # the same estimator on all the pixels is the reference (the parabola's own bias cancels)
        left_rot = rotation_used + np.array(tops[:groups]) - tops[groups]
    left_out, at_edge = [], int(np.argmax(energy)) in (0, n_grid - 1)
    for w, e, rot_i in zip(weights, per_group, left_rot, strict=True):
        i = int(np.argmax(e))
        at_edge = at_edge or i in (0, n_grid - 1)
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, n_grid - 1)]
        m_i = model if rot_i == rotation_used else _Transfer(qqy, qqx, kp, probe, geo, float(rot_i))
        res = minimize_scalar(lambda d, w=w, m_i=m_i: m_i.score(np.array([d, x[1], x[2]]), g, w), bounds=(lo, hi),
                              method="bounded", options=dict(xatol=0.5))  # fmt: skip
        left_out.append(float(res.x))
        yield "the defocus's standard error"
    # the grid's edge holds the best defocus of the data or of a left-out group: the fit is outside
    # the range searched (a planted 500 A read 393 A with every left-out fit at the edge, SE 0)
    stats = _fit_confidence(
        float(x[0]), np.array(left_out), gain, null_gains, at_edge=at_edge, reach_A=reach, trusted_A=trusted,
        rotation_deg=rotation_used if version >= 2 else None, left_out_rotation_deg=left_rot,
        rotation_residual_deg=rotation_used - rotations_deg[0] if version >= 2 else None,
        systematic_A=FINITE_FIELD_COEF * float(x[0]) ** 2 / trusted if version >= 3 else None,
    )  # fmt: skip
    stats.update(
        noise_variance=sigma2,
        rotation_deg=rotation_used,
        rotations_tried_deg=[float(r) for r in rotations_deg],
        rotations_scanned_deg=[float(r) for r in scanned],
        bootstrap_scan=[int(by), int(bx)],
        bootstrap_origin=[int(y0), int(x0_)],
    )
    return float(x[0]), float(np.hypot(x[1], x[2])), 0.5 * math.degrees(math.atan2(x[2], x[1])), stats


def _wrap_rotation(rotation_deg: float, about_deg: float) -> float:
    """``rotation_deg`` plus a whole number of half turns, within [-90, 90) deg of ``about_deg``."""
    turns = math.floor((float(rotation_deg) - float(about_deg) + 90.0) / 180.0)
    return float(rotation_deg) - 180.0 * turns if turns else float(rotation_deg)


def _cis(a: np.ndarray) -> np.ndarray:
    """``exp(i a)`` for real float32 ``a``, complex64 (cos and sin: ~8x faster than numpy's complex exp)."""
    return np.cos(a) + 1j * np.sin(a)


def _fit_confidence(
    defocus_A: float,
    left_out_A: np.ndarray,
    gain: float,
    null_gains: np.ndarray,
    z: float = 3.0,
    alpha: float = 0.05,
    *,
    at_edge: bool = False,
    reach_A: float = math.inf,
    se_floor_A: float = 0.5,
    trusted_A: float = math.inf,
    rotation_deg: float | None = None,
    left_out_rotation_deg: np.ndarray | None = None,
    rotation_se_max_deg: float = ROTATION_SE_MAX_DEG,
    rotation_se_floor_deg: float = 0.2,
    rotation_residual_deg: float | None = None,
    rotation_residual_max_deg: float = ROTATION_RESIDUAL_MAX_DEG,
    systematic_A: float | None = None,
) -> dict:
    """Whether a fitted defocus is distinguishable from 0.

    Two tests, both required:

    - the jackknife standard error over ``g`` groups of BF pixels (``left_out_A``: the defocus
      fitted leaving out each group; their shot noise is independent),
      ``se = sqrt((g - 1) / g * sum (d_i - mean d)^2)``, and ``|defocus| >= z se``;
    - a parametric bootstrap test of "no aberrations": ``gain``, the largest gain in captured
      energy over the defocus grid relative to defocus 0, against ``null_gains``, the same
      statistic on data simulated with defocus 0 (the least-squares object at 0, shrunk by the
      noise it holds, plus shot-like noise of the measured variance);
      ``p = (1 + #{null >= gain}) / (1 + n_null) <= alpha``.

    Not confident either when the best defocus of the data or of a left-out group lies on the
    searched grid's edge (``at_edge``: the true defocus may be beyond ``reach_A``), when the
    fit is more than ``z`` standard errors from the left-out fits' mean (they disagree with it),
    or when ``|defocus|`` exceeds ``trusted_A`` (:func:`_trusted_defocus_A`: the probe is so wide
    that most BF pixels' images are shifted by more than half the scanned field).
    The standard error is floored at ``se_floor_A``, the left-out fits' tolerance (left-out fits
    that agree within it gave SE 0 and z infinite).

    With ``rotation_deg`` (version 2), also not confident when the left-out groups' rotations
    (``left_out_rotation_deg``) spread more than ``rotation_se_max_deg`` (jackknife SE) or disagree
    with the fit, or when the fit's rotation is more than ``rotation_residual_max_deg`` from the
    calibration's (``rotation_residual_deg``): the defocus's sign is defined relative to the
    calibration's rotation only, a half turn being the same shift field with the sign flipped.
    Without it (version 1, which did not check the rotation) ``rotation_se_deg`` and
    ``rotation_determined`` are None.

    With ``systematic_A`` (version 3), the standard error is the jackknife's and ``systematic_A``
    (the finite-field term) in quadrature, and the 95 % interval ``defocus -+ T95_3DOF se`` is stated
    (``defocus_interval_A``); ``defocus_se_jackknife_A`` keeps the jackknife's alone. Before, the
    jackknife alone was the SE (noise-free 0.5 A, the floor, for fits 2-12 A off: every pixel group
    shares the finite field's error) and no interval was stated.

    The jackknife alone is not enough: at 1e3 e/A^2 in focus the best defocus is a noise peak
    that three quarters of the pixels still share (measured: -215 +- 3.5 A on a 16 x 16 scan),
    a non-smooth statistic the jackknife does not see; the bootstrap does (its gain is within
    the null's: the captured energy over the grid is noise there).
    """
    g = len(left_out_A)
    se = max(float(np.sqrt((g - 1) / g * np.sum((left_out_A - left_out_A.mean()) ** 2))), se_floor_A)
    se_jack = se
    if systematic_A is not None:
        se = math.hypot(se_jack, float(systematic_A))
    p = float((1 + np.sum(null_gains >= gain)) / (1 + len(null_gains)))
    zscore = float(abs(defocus_A) / se)
    consistent = abs(defocus_A - float(left_out_A.mean())) <= z * se
    within = abs(defocus_A) <= trusted_A
    rot_se, rot_ok, rot_checked = None, True, False
    if rotation_deg is not None and left_out_rotation_deg is not None:
        rot_checked = True
        lr = np.asarray(left_out_rotation_deg, float)
        rot_se = max(float(np.sqrt((g - 1) / g * np.sum((lr - lr.mean()) ** 2))), rotation_se_floor_deg)
        rot_ok = rot_se <= rotation_se_max_deg and abs(rotation_deg - float(lr.mean())) <= z * rot_se
    sign_ok = rotation_residual_deg is None or abs(rotation_residual_deg) <= rotation_residual_max_deg
    reasons = []
    if not rot_ok:
        reasons.append(f"the rotation is not determined (left-out fits spread {rot_se:.1f} deg)")
    if not sign_ok:
        reasons.append(
            f"the rotation is {rotation_residual_deg:.0f} deg from the calibration's (more than "
            f"{rotation_residual_max_deg:g}): the defocus's sign is ambiguous (a half turn more reads the opposite "
            "sign); correct the calibration's rotation"
        )
    if zscore < z:
        reasons.append(f"|defocus| < {z:g} standard errors (z {zscore:.1f})")
    if p > alpha:
        reasons.append(f"bootstrap p {p:.2f} > {alpha:g}")
    if not consistent:
        reasons.append("the fit disagrees with its left-out fits")
    if at_edge:
        reasons.append(f"the best defocus is at the searched grid's edge ({reach_A:.0f} A)")
    if not within:
        reasons.append(
            f"|defocus| beyond {trusted_A:.0f} A, where the probe is wider than the scanned field can measure"
        )
    extra = {}
    if systematic_A is not None:
        half = T95_3DOF * se
        extra = dict(
            defocus_se_jackknife_A=se_jack,
            defocus_systematic_A=float(systematic_A),
            defocus_interval_A=[float(defocus_A - half), float(defocus_A + half)],
            interval_level=0.95,
        )
    return dict(
        defocus_se_A=se,
        z=zscore,
        left_out_defocus_A=[float(v) for v in left_out_A],
        gain=float(gain),
        null_gain_max=float(np.max(null_gains)),
        p_value=p,
        at_grid_edge=at_edge,
        grid_reach_A=float(reach_A),
        consistent_with_left_out=bool(consistent),
        trusted_defocus_A=float(trusted_A),
        within_trusted_range=bool(within),
        rotation_se_deg=rot_se,
        left_out_rotation_deg=None if left_out_rotation_deg is None else [float(v) for v in left_out_rotation_deg],
        rotation_determined=bool(rot_ok) if rot_checked else None,
        rotation_residual_deg=None if rotation_residual_deg is None else float(rotation_residual_deg),
        rotation_within_sign_range=None if rotation_residual_deg is None else bool(sign_ok),
        confident=bool(zscore >= z and p <= alpha and consistent and not at_edge and within and rot_ok and sign_ok),
        reason="; ".join(reasons),
        z_threshold=z,
        alpha=alpha,
        **extra,
    )


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
    two_sided: bool = False,
    refine: bool = True,
    scan_chunk: tuple[int, int] | None = None,
    version: int = PARALLAX_VERSION,
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
    two_sided : bool
        Correlate each pixel's image only at the scan frequencies where both side bands
        exist (see the code). Default: every frequency.
    refine : bool
        Refine defocus and astigmatism from the shift fit by fitting the weak-phase transfer
        model of :mod:`.ssb` to the BF pixels' spectra (removes the bias of the shift model at
        small defocus; the shift field still gives the rotation and the corrected image).
    calibration : Calibration, optional
        Overrides the datacube's calibration.
    scan_chunk : (int, int), optional
        Scan block read at a time.
    version : int
        The refinement's algorithm (``PARALLAX_VERSION``, the default, the newest): 1 (before
        session 13) searched the rotation at the calibration's and the shift field's only and drew
        the bootstrap on the central 64 x 64 positions; 2 scans the rotation over a half turn, draws
        the bootstrap where the BF images vary most and requires the rotation to be determined; 3
        fits the spectra of each image's periodic component (the jumps between opposite edges
        that the FFT's wrap adds at the same place in every image pulled the defocus toward 0:
        noise-free 200 A read 194 A on the 16 x 16 tuning scans, now 197.6 A) and states a 95 %
        interval whose SE holds a finite-field term. A recipe replays with the version it was made with.

    Yields
    ------
    Progress
        Reading the bright-field pixels, each alignment round, the corrected image.

    Returns
    -------
    ParallaxResult
        The generator's return value: the image (``upsample`` x the scan grid, scan axes), the
        shifts (scan pixels) and the fitted aberrations (Angstrom, degrees), with the defocus's
        standard error and whether it is distinguishable from 0 (``refine``; the ``run_phase``
        pipeline's "auto" uses the fit only then).

    Raises
    ------
    DataShapeError
        When the scan is smaller than 4 x 4.
    NonFiniteDataError
        When a bright-field pixel read is NaN or inf.
    CalibrationError
        When the scan step, detector pixel size, energy or convergence angle is not calibrated.

    Notes
    -----
    Each bright-field pixel's image (streamed over scan chunks, normalised to zero mean) is
    registered by cross-correlation against a reference re-made from the aligned images
    (``iterations`` rounds); the shifts, turned into detector axes in Angstrom, are fitted by
    ``d = lambda M k + c`` (least squares), and ``M = R(theta) S`` gives defocus, astigmatism
    and the residual rotation. The images are shifted back and summed with bilinear weights on a
    grid ``upsample`` times finer (the tilt-corrected bright-field image). ``O(n_bf N_R log N_R)``
    per round.

    References
    ----------
    .. [1] E. J. Kirkland, *Advanced Computing in Electron Microscopy*, 2nd ed., Springer
       (2010), ch. 3 (aberrations).
    """
    cal = calibration or datacube.calibration
    geo = Geometry.of(datacube, cal)
    probe = probe or ProbeModel.from_calibration(cal)
    if version not in PARALLAX_VERSIONS:
        raise ValueError(f"parallax version must be one of {PARALLAX_VERSIONS}, got {version!r}")
    if min(geo.scan_shape) < 4:
        raise DataShapeError(f"parallax needs a scan of at least 4 x 4 positions, got {geo.scan_shape}")
    iy, ix = bf_pixels(geo, probe, fraction=bf_fraction)
    stack = yield from iter_pixel_stack(datacube, iy, ix, scan_chunk=scan_chunk)
    imgs = np.moveaxis(stack, -1, 0).astype(np.float64)  # (n, ny, nx)
    bad = ~np.isfinite(imgs).all(axis=0)
    if bad.any():  # one NaN makes every spectrum NaN: the fit would read a defocus the data never held
        where = np.argwhere(bad)
        raise NonFiniteDataError(
            f"{len(where)} scan position(s) have NaN or inf in the bright-field disk (first at scan "
            f"position ({where[0][0]}, {where[0][1]})); parallax needs finite bright-field pixels"
        )
    mean = imgs.mean(axis=(1, 2), keepdims=True)
    imgs = imgs / np.where(mean > 0, mean, 1.0) - 1.0
    ky, kx = geo.k_of_pixels(iy, ix)
    kr = np.hypot(ky, kx)
    # first reference: the near-axial pixels, whose images are hardly shifted
    inner = kr <= np.quantile(kr, 0.1)
    ref = imgs[inner].mean(axis=0)
    # Each BF pixel's image is an exact translate of one common image only at the frequencies
    # Q where both side bands exist (|k - Q| and |k + Q| inside the aperture); elsewhere one
    # side band adds a Q-dependent phase that biases the shifts at small defocus (+15 A at
    # 5 nm, 20 mrad), but near focus that is where the signal is. ``two_sided`` restricts the
    # correlation to those frequencies; ``refine`` (default) fixes the bias by a model fit.
    weights = _two_sided_mask(geo, probe, ky, kx) if two_sided else None
    shifts = np.zeros((len(iy), 2))
    total = iterations + 1
    for it in range(iterations):
        shifts = register_translations(imgs, ref, lowpass=lowpass_px, weights=weights)
        shifts -= shifts[inner].mean(axis=0)
        ref = fourier_shift(imgs, -shifts).mean(axis=0)
        yield Progress(it + 1, total, "aligning BF images")
    # fit in detector axes, Angstrom
    d_scan_A = shifts * np.asarray(geo.step_A)[None]
    vy, vx = scan_to_detector(d_scan_A[:, 0], d_scan_A[:, 1], rotation_deg=geo.rotation_deg, flip=geo.flip)
    d_det = np.stack([vy, vx], axis=1)
    k = np.stack([ky, kx], axis=1)
    lam = probe.wavelength_A
    m, c, rms, r2 = _fit_aberrations(d_det, k, lam)
    defocus, astig, angle, theta = _decompose(m)
    shift_fit = dict(
        defocus_A=float(defocus), astig_A=float(astig), astig_angle_deg=float(angle), r2=r2,
        rotation_residual_deg=float(theta),
    )  # fmt: skip
    conf: dict = {}
    if refine:
        # at the calibration's rotation and at the one the shift field shows (calibration +
        # residual): at low dose the latter is noise, the transfer fit keeps the better
        rotations = [geo.rotation_deg] + ([geo.rotation_deg + theta] if abs(theta) > 0.5 else [])
        refining = _refine_aberrations(imgs, geo, probe, k, defocus, astig, angle, rotations, version=version)
        while True:
            try:
                stage = next(refining)
            except StopIteration as done:
                defocus, astig, angle, conf = done.value
                # the rotation the transfer fit kept (0 residual when the calibration's won)
                theta = conf["rotation_deg"] - geo.rotation_deg
                break
            yield Progress(iterations, total, f"refining the aberrations: {stage}")
    if use_fitted_shifts:
        fit_det = lam * (k @ m.T) + c
        # back to scan axes (rotate_to_scan inverse of scan_to_detector)
        from ..virtual.dpc import rotate_to_scan

        uy, ux = rotate_to_scan(fit_det[:, 0], fit_det[:, 1], rotation_deg=geo.rotation_deg, flip=geo.flip)
        use = np.stack([uy, ux], axis=1) / np.asarray(geo.step_A)[None]
    else:
        use = shifts
    acc, wsum = _splat(imgs, use, int(upsample))
    image = acc / np.maximum(wsum, 1e-3 * wsum.max())
    yield Progress(total, total, "tilt-corrected image")
    params = dict(
        method="parallax",
        probe=probe.to_dict(),
        bf_fraction=bf_fraction,
        iterations=iterations,
        upsample=int(upsample),
        lowpass_px=lowpass_px,
        use_fitted_shifts=use_fitted_shifts,
        two_sided=two_sided,
        refine=refine,
        version=int(version),
        n_pixels=len(iy),
    )
    aberrations = dict(
        defocus_A=float(defocus),
        astig_A=float(astig),
        astig_angle_deg=float(angle),
        rotation_residual_deg=float(theta),
        fit_rms_A=rms,
    )
    fit = {**aberrations, "shift_fit": shift_fit, "confidence": conf}
    se, confident = conf.get("defocus_se_A", math.nan), conf.get("confident", True)
    if not confident:
        yield Progress(
            total,
            total,
            f"parallax: defocus {defocus:.1f} +- {se:.1f} A is not trusted ({conf['reason']})",
        )
    img_cal = Calibration(scan_step=(geo.step_A[0] / upsample, geo.step_A[1] / upsample), scan_units="A")
    return ParallaxResult(
        image=RealSpaceMap(image, name="parallax_bf", units="", calibration=img_cal, params={**params, "fit": fit}),
        shifts_px=shifts,
        k_inv_A=k,
        params=params,
        defocus_se_A=float(se),
        defocus_confident=bool(confident),
        defocus_interval_A=tuple(conf["defocus_interval_A"]) if "defocus_interval_A" in conf else None,
        **aberrations,
    )


parallax = eager(iter_parallax, "Tilt-corrected bright-field image and aberrations (parallax).")
