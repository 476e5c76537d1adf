"""Augmentation: the distortions real detectors add to a simulated pattern (crystal4D-style).

Everything is numpy/numba, reproducible from one seed per sample, with every range a
parameter of :class:`AugmentConfig`. The per-pixel work runs in ``nogil`` numba kernels
(``_augment_kernels``: one warp pass for pattern, probe and label; separable blur;
counting noise from a per-sample SplitMix64 stream), so :func:`augment_batch` scales with its
threads and a sample's draws do not depend on the thread that made them. The steps, in the
order they are applied:

1. plasmon background: ``(1 - w) P + w (L * probe)`` with ``L(k) = 1 / (k^2 + width^2)`` a 2D
   Lorentzian centred on the beam (``w`` 0.01-0.1, width 0.01-0.1 1/A), convolved with the probe;
2. geometric warp, the SAME for pattern, probe and label (and the Bragg positions): a pixel at
   ``p`` moves to ``c + A (p - c) + shift`` with ``c`` the beam origin,
   ``A = R(rotation) R(phi) diag(sqrt(1 + e), 1 / sqrt(1 + e)) R(-phi)`` (ellipticity ``e`` up to
   0.15: axis ratio ``1 + e``, area kept; rotation a few degrees) and a sub-pixel shift up to
   10 px. The output is sampled at ``p = c + A^-1 (p' - c - shift)`` (bilinear), i.e. the
   inverse map, so a planted peak lands exactly where ``A`` says;
3. detector blur (Gaussian MTF, sigma 0-1 px);
4. dose: Poisson counts with ``10^5``-``10^10`` electrons per pattern (log-uniform); pixels
   expecting more than 1000 electrons draw from the matching normal distribution (rounded),
   whose skewness differs from Poisson by under 0.03;
5. read noise (Gaussian, 0-2 counts), hot and dead pixels, salt-and-pepper (fractions up to
   1e-3), and an optional beam stop (a bar from the beam to the edge, zero counts).

Steps 3-5 touch only the pattern: the probe and the label stay noise-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from . import _augment_kernels as _k

__all__ = [
    "AugmentConfig",
    "Augmentation",
    "AugmentedSample",
    "augment",
    "augment_batch",
    "draw_augmentation",
    "warp_images",
    "warp_matrix",
    "warp_points",
]


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the augmentation parameters (each drawn uniformly unless said otherwise).

    Attributes
    ----------
    dose_e : (float, float)
        Electrons per pattern, drawn log-uniformly (default 1e5-1e10).
    plasmon_weight : (float, float)
        Share ``w`` of the plasmon background (default 0.01-0.1).
    plasmon_width_inv_A : (float, float)
        Lorentzian width of the plasmon background, 1/A (default 0.01-0.1).
    shift_px : float
        Largest length of the shift vector, pixels (default 10).
    ellipticity : float
        Largest axis ratio minus 1, in [0, 1) (default 0.15).
    rotation_deg : float
        Largest absolute rotation, degrees (default 2).
    blur_sigma_px : (float, float)
        Gaussian detector blur, pixels (default 0-1).
    read_noise : (float, float)
        Gaussian read noise, counts (default 0-2).
    hot_dead_fraction : float
        Largest fraction of hot plus dead pixels (default 1e-3).
    salt_pepper_fraction : float
        Largest fraction of salt-and-pepper pixels (default 1e-3).
    beam_stop_probability : float
        Probability of a beam stop (default 0).
    beam_stop_width_px : (float, float)
        Beam-stop width, pixels (default 4-12).

    Raises
    ------
    ValueError
        When the dose range, the ellipticity or a fraction is out of range.
    """

    dose_e: tuple[float, float] = (1e5, 1e10)  # electrons per pattern, log-uniform
    plasmon_weight: tuple[float, float] = (0.01, 0.1)
    plasmon_width_inv_A: tuple[float, float] = (0.01, 0.1)
    shift_px: float = 10.0  # largest shift (length of the shift vector)
    ellipticity: float = 0.15  # largest axis ratio - 1
    rotation_deg: float = 2.0  # largest |rotation|
    blur_sigma_px: tuple[float, float] = (0.0, 1.0)
    read_noise: tuple[float, float] = (0.0, 2.0)  # counts (Gaussian sigma)
    hot_dead_fraction: float = 1e-3  # largest fraction of hot + dead pixels
    salt_pepper_fraction: float = 1e-3
    beam_stop_probability: float = 0.0
    beam_stop_width_px: tuple[float, float] = (4.0, 12.0)

    def __post_init__(self):
        """Refuse ranges that cannot be drawn from."""
        lo, hi = self.dose_e
        if not 0 < lo <= hi:
            raise ValueError(f"dose_e must be 0 < low <= high, got {self.dose_e}")
        if not 0 <= self.ellipticity < 1:
            raise ValueError(f"ellipticity must be in [0, 1), got {self.ellipticity}")
        for name in ("hot_dead_fraction", "salt_pepper_fraction", "beam_stop_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class Augmentation:
    """The drawn values of one sample's augmentation (all that is needed to redo it).

    Attributes
    ----------
    seed : int
        The sample's seed (the noise streams derive from it).
    dose_e : float
        Electrons per pattern.
    plasmon_weight, plasmon_width_inv_A : float
        Plasmon background share and Lorentzian width (1/A).
    shift_px : (float, float)
        Shift ``(dy, dx)`` in pixels.
    ellipticity, ellipse_angle_deg, rotation_deg : float
        The warp (:func:`warp_matrix`).
    blur_sigma_px : float
        Detector blur, pixels.
    read_noise : float
        Read noise, counts.
    hot_fraction, dead_fraction, salt_pepper_fraction : float
        Bad-pixel fractions.
    beam_stop : bool
        Whether a beam stop is drawn.
    beam_stop_angle_deg, beam_stop_width_px : float
        Its direction (degrees) and width (pixels).
    """

    seed: int
    dose_e: float
    plasmon_weight: float
    plasmon_width_inv_A: float
    shift_px: tuple[float, float]  # (dy, dx)
    ellipticity: float
    ellipse_angle_deg: float
    rotation_deg: float
    blur_sigma_px: float
    read_noise: float
    hot_fraction: float
    dead_fraction: float
    salt_pepper_fraction: float
    beam_stop: bool
    beam_stop_angle_deg: float
    beam_stop_width_px: float

    def to_dict(self) -> dict:
        """The values as a plain dict."""
        return asdict(self)


def draw_augmentation(config: AugmentConfig, seed: int) -> Augmentation:
    """Draw one sample's augmentation parameters from ``config`` with its own seed.

    Parameters
    ----------
    config : AugmentConfig
        The ranges.
    seed : int
        The sample's seed.

    Returns
    -------
    Augmentation
        The drawn values; the same seed and config always give the same ones.
    """
    rng = np.random.default_rng(seed)
    lo, hi = np.log10(config.dose_e)
    r = config.shift_px * math.sqrt(rng.uniform())
    a = rng.uniform(0, 2 * math.pi)
    hd = rng.uniform(0, config.hot_dead_fraction)
    split = rng.uniform()
    return Augmentation(
        seed=int(seed),
        dose_e=float(10 ** rng.uniform(lo, hi)),
        plasmon_weight=float(rng.uniform(*config.plasmon_weight)),
        plasmon_width_inv_A=float(rng.uniform(*config.plasmon_width_inv_A)),
        shift_px=(r * math.sin(a), r * math.cos(a)),
        ellipticity=float(rng.uniform(0, config.ellipticity)),
        ellipse_angle_deg=float(rng.uniform(0, 180)),
        rotation_deg=float(rng.uniform(-config.rotation_deg, config.rotation_deg)),
        blur_sigma_px=float(rng.uniform(*config.blur_sigma_px)),
        read_noise=float(rng.uniform(*config.read_noise)),
        hot_fraction=float(hd * split),
        dead_fraction=float(hd * (1 - split)),
        salt_pepper_fraction=float(rng.uniform(0, config.salt_pepper_fraction)),
        beam_stop=bool(rng.uniform() < config.beam_stop_probability),
        beam_stop_angle_deg=float(rng.uniform(0, 360)),
        beam_stop_width_px=float(rng.uniform(*config.beam_stop_width_px)),
    )


# ------------------------------------------------------------------------------------------
# geometry
# ------------------------------------------------------------------------------------------
def _rot(deg: float) -> np.ndarray:
    """Rotation by ``deg`` from +x towards +y, as a matrix on (y, x) vectors."""
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, s], [-s, c]])  # (y, x): y' = c y + s x, x' = -s y + c x


def warp_matrix(ellipticity: float, ellipse_angle_deg: float, rotation_deg: float) -> np.ndarray:
    """The 2x2 matrix ``A`` acting on ``(y, x)`` pixel offsets from the origin.

    The ellipse's long axis (stretched by ``sqrt(1 + e)``) points ``ellipse_angle_deg`` from +x
    towards +y; the short axis is squeezed by the same factor (area kept).

    Parameters
    ----------
    ellipticity : float
        Axis ratio minus 1.
    ellipse_angle_deg : float
        Direction of the long axis, degrees from +x towards +y.
    rotation_deg : float
        Rotation applied after the ellipse, degrees.

    Returns
    -------
    ndarray ``(2, 2)``
        ``A = R(rotation) R(phi) diag(sqrt(1 + e), 1 / sqrt(1 + e)) R(-phi)`` on ``(y, x)``.
    """
    f = math.sqrt(1.0 + ellipticity)
    Rphi = _rot(ellipse_angle_deg)
    D = np.diag([1.0 / f, f])  # (y, x): stretch along x (angle 0) before turning it
    return _rot(rotation_deg) @ Rphi @ D @ Rphi.T


def warp_points(points_yx: np.ndarray, *, matrix: np.ndarray, shift_px, origin_px) -> np.ndarray:
    """Where points ``(n, 2)`` (k_y, k_x) go under the warp: ``c + A (p - c) + shift``.

    Parameters
    ----------
    points_yx : ndarray ``(n, 2)``
        Points ``(k_y, k_x)`` in pixels.
    matrix : ndarray ``(2, 2)``
        ``A`` (:func:`warp_matrix`).
    shift_px : (float, float)
        Shift ``(dy, dx)`` in pixels.
    origin_px : (float, float)
        Centre ``c`` of the warp.

    Returns
    -------
    ndarray ``(n, 2)``
        The warped points.
    """
    c = np.asarray(origin_px, float)
    return c + (np.asarray(points_yx, float) - c) @ np.asarray(matrix).T + np.asarray(shift_px)


def warp_images(images: np.ndarray, *, matrix: np.ndarray, shift_px, origin_px) -> np.ndarray:
    """Warp a stack ``(n, H, W)`` (or one image) so a pixel at ``p`` lands at ``c + A (p - c) + s``.

    Parameters
    ----------
    images : ndarray ``(n, H, W)`` or ``(H, W)``
        The images.
    matrix : ndarray ``(2, 2)``
        ``A`` (:func:`warp_matrix`).
    shift_px : (float, float)
        Shift ``s = (dy, dx)`` in pixels.
    origin_px : (float, float)
        Centre ``c`` of the warp.

    Returns
    -------
    ndarray float32
        The warped images, same shape; sampled bilinearly at the inverse map, zero outside.
    """
    a = np.asarray(images, np.float32)
    single = a.ndim == 2
    a = np.ascontiguousarray(a[None] if single else a)
    out = np.empty_like(a)
    ainv = np.linalg.inv(np.asarray(matrix, float))
    _k.warp_stack(
        a,
        out,
        ainv,
        float(origin_px[0]),
        float(origin_px[1]),
        float(shift_px[0]),
        float(shift_px[1]),
    )
    return out[0] if single else out


# ------------------------------------------------------------------------------------------
# physics of the background and the detector
# ------------------------------------------------------------------------------------------


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.05:
        return img
    return _k.gaussian_blur(img, float(sigma), 3.0, np.empty_like(img))


def plasmon_background(probe: np.ndarray, *, width_inv_A: float, pixel_size_inv_A: float, origin_px) -> np.ndarray:
    """A 2D Lorentzian ``1 / (k^2 + width^2)`` convolved with the probe, summing to 1.

    The Lorentzian is centred on the beam and the result normalised over the detector.

    The convolution is done on a 2x2-binned grid (zero-padded, no wrap-around) and brought back
    by bilinear interpolation: the background is smooth on the scale of a pixel pair and this
    is four times cheaper.
    """
    bg, total = _plasmon(np.asarray(probe, np.float32), width_inv_A, pixel_size_inv_A)
    return bg / total if total > 0 else bg


def _plasmon(probe: np.ndarray, width_inv_A: float, pixel_size_inv_A: float):
    """The background of :func:`plasmon_background` before normalisation, and its sum."""
    from scipy import fft as sfft

    H, W = probe.shape
    h, w = H // 2, W // 2
    pb = _k.bin2(probe, h, w)
    # even padded sizes >= 2x (no wrap-around); the kernel is centred on index 0 (offsets
    # -P/2..P/2), so the convolution stays where the probe is
    P, Q = 2 * sfft.next_fast_len(h, real=True), 2 * sfft.next_fast_len(w, real=True)
    # the kernel is real and even, so its transform is real and even: the type-1 DCT of one
    # quadrant gives it at a quarter of the work of rfft2. float32 throughout: half the time
    # of float64, and its error lies far below the counting noise added later
    step, width = 2.0 * float(pixel_size_inv_A), float(width_inv_A)
    quad = _k.lorentzian_quadrant(P // 2 + 1, Q // 2 + 1, step, width)
    spec = sfft.dctn(quad, type=1)
    spec = np.concatenate([spec, spec[P // 2 - 1 : 0 : -1]])  # rows P/2+1..P-1 mirror 1..P/2-1
    conv = sfft.irfft2(spec * sfft.rfft2(pb, (P, Q)), (P, Q))
    out = np.empty((H, W), np.float32)
    total = _k.upsample2_clipped(conv, h, w, out)
    return out, total


@dataclass(frozen=True, eq=False)
class AugmentedSample:
    """An augmented pattern, its probe and label, the warped Bragg positions and the warp.

    Attributes
    ----------
    pattern : ndarray ``(H, W)`` float32
        The augmented pattern in counts.
    probe, label : ndarray ``(H, W)`` float32
        Warped like the pattern, noise-free.
    bragg_qy, bragg_qx : ndarray ``(n,)`` or None
        The warped Bragg positions, pixels (when given).
    matrix : ndarray ``(2, 2)``
        The warp ``A``.
    shift_px : (float, float)
        The shift ``(dy, dx)``.
    mask : ndarray ``(H, W)`` bool or None
        The beam stop (zero counts), if drawn.
    params : Augmentation
        The drawn parameters.
    """

    pattern: np.ndarray
    probe: np.ndarray
    label: np.ndarray
    bragg_qy: np.ndarray | None
    bragg_qx: np.ndarray | None
    matrix: np.ndarray
    shift_px: tuple[float, float]
    mask: np.ndarray | None
    params: Augmentation


def augment(
    pattern: np.ndarray,
    probe: np.ndarray,
    label: np.ndarray,
    *,
    seed: int,
    config: AugmentConfig | None = None,
    origin_px: Sequence[float] | None = None,
    pixel_size_inv_A: float = 0.01,
    bragg_qy: np.ndarray | None = None,
    bragg_qx: np.ndarray | None = None,
    augmentation: Augmentation | None = None,
) -> AugmentedSample:
    """Augment one sample (see the module docstring for the steps).

    The same ``seed`` (and config) always gives the same result; pass ``augmentation`` to
    replay drawn parameters.

    Parameters
    ----------
    pattern : ndarray ``(H, W)``
        The noise-free simulated pattern (fractions of the beam).
    probe : ndarray ``(H, W)``
        Its vacuum probe.
    label : ndarray ``(H, W)``
        Its label image.
    seed : int
        The sample's seed.
    config : AugmentConfig, optional
        The ranges (default :class:`AugmentConfig()`).
    origin_px : (float, float), optional
        The beam origin (default ``(H // 2, W // 2)``).
    pixel_size_inv_A : float
        Detector pixel size in 1/A, for the plasmon width (default 0.01).
    bragg_qy, bragg_qx : ndarray ``(n,)``, optional
        Bragg positions to warp with the pattern.
    augmentation : Augmentation, optional
        Drawn values to replay instead of drawing from ``seed``.

    Returns
    -------
    AugmentedSample
        The counts, the warped probe and label, the warped positions and the parameters.
    """
    config = config or AugmentConfig()
    aug = augmentation or draw_augmentation(config, seed)
    rng = np.random.default_rng([aug.seed, 1])
    pat = np.ascontiguousarray(pattern, np.float32)
    H, W = pat.shape
    c = (H // 2, W // 2) if origin_px is None else (float(origin_px[0]), float(origin_px[1]))
    probe = np.ascontiguousarray(probe, np.float32)
    label = np.ascontiguousarray(label, np.float32)
    if aug.plasmon_weight > 0:
        bg, total = _plasmon(probe, aug.plasmon_width_inv_A, pixel_size_inv_A)
        if total > 0:
            # the background (sum 1 once divided by its total) takes its weight of the
            # pattern's total
            bg *= aug.plasmon_weight * max(float(pat.sum(dtype=np.float64)), 1e-12) / total
            bg += (1.0 - aug.plasmon_weight) * pat
            pat = bg
    A = warp_matrix(aug.ellipticity, aug.ellipse_angle_deg, aug.rotation_deg)
    # one warp of the three images: each source position and its weights are computed once
    pat_w, probe_w, label_w = warp_images(np.stack([pat, probe, label]), matrix=A, shift_px=aug.shift_px, origin_px=c)
    lam = _gaussian_blur(pat_w, aug.blur_sigma_px)
    counts = _k.count_noise(lam, aug.dose_e, int(rng.integers(0, 2**63 - 1)), float(aug.read_noise), np.empty_like(lam))
    n = counts.size
    flat = counts.reshape(-1)
    top = float(max(flat.max(), 1.0))
    k_hot = rng.binomial(n, aug.hot_fraction)
    k_dead = rng.binomial(n, aug.dead_fraction)
    k_sp = rng.binomial(n, aug.salt_pepper_fraction)
    if k_hot:
        flat[rng.integers(0, n, k_hot)] = top * rng.uniform(0.5, 2.0, k_hot)
    if k_dead:
        flat[rng.integers(0, n, k_dead)] = 0.0
    if k_sp:
        idx = rng.integers(0, n, k_sp)
        flat[idx] = np.where(rng.uniform(size=k_sp) < 0.5, 0.0, top)
    mask = None
    if aug.beam_stop:
        yy, xx = np.mgrid[0:H, 0:W]
        t = math.radians(aug.beam_stop_angle_deg)
        ny, nx = yy - c[0] - aug.shift_px[0], xx - c[1] - aug.shift_px[1]
        along = ny * math.sin(t) + nx * math.cos(t)
        across = -ny * math.cos(t) + nx * math.sin(t)
        mask = (along > -aug.beam_stop_width_px) & (np.abs(across) < aug.beam_stop_width_px / 2)
        mask |= np.hypot(ny, nx) < aug.beam_stop_width_px
        counts[mask] = 0.0
    qy = qx = None
    if bragg_qy is not None and bragg_qx is not None:
        pts = warp_points(np.stack([bragg_qy, bragg_qx], -1), matrix=A, shift_px=aug.shift_px, origin_px=c)
        qy, qx = pts[:, 0], pts[:, 1]
    return AugmentedSample(counts, probe_w, label_w, qy, qx, A, aug.shift_px, mask, aug)


def augment_batch(
    patterns: np.ndarray,
    probes: np.ndarray,
    labels: np.ndarray,
    *,
    seeds: Sequence[int],
    config: AugmentConfig | None = None,
    origin_px: Sequence[float] | None = None,
    pixel_size_inv_A: float | Sequence[float] = 0.01,
    workers: int = 1,
) -> list[AugmentedSample]:
    """Augment a batch ``(n, H, W)`` with one seed per sample, on ``workers`` threads.

    Parameters
    ----------
    patterns, probes, labels : ndarray ``(n, H, W)``
        The samples.
    seeds : sequence of int
        One seed per sample.
    config : AugmentConfig, optional
        The ranges.
    origin_px : (float, float), optional
        The beam origin (default the centre).
    pixel_size_inv_A : float or sequence of float
        Detector pixel size(s) in 1/A.
    workers : int
        Threads (default 1); results do not depend on it.

    Returns
    -------
    list of AugmentedSample
        In the order of the samples.

    Raises
    ------
    ValueError
        When the number of seeds differs from the number of patterns.
    """
    n = len(patterns)
    if len(seeds) != n:
        raise ValueError(f"{n} patterns need {n} seeds, got {len(seeds)}")
    px = np.broadcast_to(np.asarray(pixel_size_inv_A, float), (n,))

    def one(i):
        return augment(
            patterns[i],
            probes[i],
            labels[i],
            seed=int(seeds[i]),
            config=config,
            origin_px=origin_px,
            pixel_size_inv_A=float(px[i]),
        )

    if workers <= 1:
        return [one(i) for i in range(n)]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(n)))
