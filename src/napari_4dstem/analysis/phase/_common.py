"""Pieces the phase-retrieval methods share.

The detector geometry of a DataCube, the bright-field pixel stack streamed over scan chunks,
and image-registration helpers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...data.calibration import Calibration
from ...engine.chunks import iter_scan_blocks, n_blocks
from ...engine.jobs import Job, Progress
from ...errors import CalibrationError
from .probe import ProbeModel, k_pixel_inv_A, scan_step_A


@dataclass(frozen=True)
class Geometry:
    """What every method needs from the calibration, in physical units."""

    scan_shape: tuple[int, int]
    detector_shape: tuple[int, int]
    step_A: tuple[float, float]
    k_pixel_inv_A: float
    origin_px: tuple[float, float]
    rotation_deg: float
    flip: bool

    @classmethod
    def of(cls, datacube, calibration: Calibration | None = None) -> Geometry:
        cal = calibration or datacube.calibration
        det = datacube.detector_shape
        origin = cal.origin_px if cal.origin_px is not None else (det[0] // 2, det[1] // 2)
        return cls(
            scan_shape=datacube.scan_shape,
            detector_shape=det,
            step_A=scan_step_A(cal),
            k_pixel_inv_A=k_pixel_inv_A(cal),
            origin_px=(float(origin[0]), float(origin[1])),
            rotation_deg=float(cal.rotation_deg or 0.0),
            flip=bool(cal.flip),
        )

    def k_of_pixels(self, iy: np.ndarray, ix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frequencies ``(k_y, k_x)`` in 1/A of detector pixels (detector axes)."""
        return (
            (np.asarray(iy) - self.origin_px[0]) * self.k_pixel_inv_A,
            (np.asarray(ix) - self.origin_px[1]) * self.k_pixel_inv_A,
        )


def bf_pixels(geo: Geometry, probe: ProbeModel, *, fraction: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Detector pixels ``(iy, ix)`` inside ``fraction`` of the bright-field disk radius."""
    ka = probe.k_aperture_inv_A * fraction
    iy, ix = np.nonzero(np.ones(geo.detector_shape, bool))
    ky, kx = geo.k_of_pixels(iy, ix)
    inside = np.hypot(ky, kx) <= ka
    if inside.sum() < 3:
        raise CalibrationError(
            f"the bright-field disk ({probe.convergence_mrad} mrad) covers fewer than 3 detector "
            "pixels: check the convergence angle, beam energy and detector pixel size"
        )
    return iy[inside], ix[inside]


def iter_pixel_stack(
    datacube, iy: np.ndarray, ix: np.ndarray, *, scan_chunk=None, message: str = "reading BF pixels"
) -> Job[np.ndarray]:
    """Job: the values of detector pixels ``(iy, ix)`` at every scan position.

    Streams the scan in blocks (native dtype), keeping only the chosen pixels: memory
    ``scan_y * scan_x * len(iy) * 4`` bytes. Returns float32 ``(scan_y, scan_x, n_pixels)``.
    """
    data = getattr(datacube, "data", datacube)
    shape = tuple(int(s) for s in data.shape)
    if scan_chunk is None:
        # whole rows of the scan, about 4 MiB: a block read (a lazy file) takes about 0.1 s, so a
        # Cancel stops the job within that (32 MiB blocks: the whole 32 x 32 sample in one, 28 s
        # seen at load 10; UX 20)
        row = shape[1] * shape[2] * shape[3] * np.dtype(data.dtype).itemsize
        scan_chunk = (max(1, (4 * 2**20) // max(row, 1)), shape[1])
    total = n_blocks(shape, scan_chunk)
    out = np.empty((shape[0], shape[1], len(iy)), np.float32)
    yield Progress(0, total, message)  # a Cancel point before the first read
    for i, (sy, sx, block) in enumerate(iter_scan_blocks(data, scan_chunk)):
        out[sy, sx] = block[:, :, iy, ix]
        yield Progress(i + 1, total, message)
    return out


def fourier_shift(images: np.ndarray, shift_yx: np.ndarray) -> np.ndarray:
    """Translate each image ``(n, h, w)`` by ``shift_yx`` ``(n, 2)`` pixels (periodic)."""
    fy = np.fft.fftfreq(images.shape[-2])[None, :, None]
    fx = np.fft.fftfreq(images.shape[-1])[None, None, :]
    ramp = np.exp(-2j * math.pi * (fy * shift_yx[:, 0, None, None] + fx * shift_yx[:, 1, None, None]))
    return np.fft.ifft2(np.fft.fft2(images) * ramp).real


def register_translations(
    images: np.ndarray,
    reference: np.ndarray,
    *,
    upsample: int = 20,
    lowpass: float | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Sub-pixel shifts ``(n, 2)`` (y, x) with ``images[i](r) ~ reference(r - shift[i])``.

    Cross-correlation peak, refined by a matrix-multiply DFT on a ``1/upsample`` pixel grid
    around it (Guizar-Sicairos, Thurman & Fienup, Opt. Lett. 33, 156 (2008),
    doi:10.1364/OL.33.000156), all images at once. ``lowpass`` (cycles/pixel) applies a
    Gaussian weight to the cross-power spectrum (noise); ``weights`` ``(n, h, w)`` (fft order)
    weigh each image's cross-power spectrum (e.g. a mask of the frequencies to use).
    """
    n, h, w = images.shape
    fy = np.fft.fftfreq(h)
    fx = np.fft.fftfreq(w)
    x = np.fft.fft2(images) * np.conj(np.fft.fft2(reference))[None]
    if lowpass:
        x = x * np.exp(-(fy[:, None] ** 2 + fx[None, :] ** 2) / (2 * lowpass**2))[None]
    if weights is not None:
        x = x * weights
    cc = np.fft.ifft2(x).real.reshape(n, -1)
    peak = np.argmax(cc, axis=1)
    py, px = np.unravel_index(peak, (h, w))
    coarse = np.stack([np.where(py > h // 2, py - h, py), np.where(px > w // 2, px - w, px)], 1).astype(float)
    m = int(upsample)  # +-1 pixel around the coarse peak
    off = np.arange(-m, m + 1) / upsample  # (2m+1,)
    ty = coarse[:, 0, None] + off[None]  # (n, M)
    tx = coarse[:, 1, None] + off[None]
    ey = np.exp(2j * math.pi * ty[:, :, None] * fy[None, None, :])  # (n, M, h)
    ex = np.exp(2j * math.pi * tx[:, :, None] * fx[None, None, :])  # (n, M, w)
    # a loop of 2D products: numpy's stacked complex matmul is many times slower here
    up = np.empty((n, len(off), len(off)))
    for i in range(n):
        up[i] = (ey[i] @ x[i] @ ex[i].T).real
    flat = up.reshape(n, -1).argmax(axis=1)
    a, b = np.unravel_index(flat, up.shape[1:])
    return np.stack([ty[np.arange(n), a], tx[np.arange(n), b]], axis=1)


def remove_offset_and_ramp(phase: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``phase`` minus its least-squares plane (offset and linear ramp) over ``mask``."""
    h, w = phase.shape
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([np.ones(h * w), yy.ravel(), xx.ravel()], 1)
    sel = np.ones(h * w, bool) if mask is None else np.asarray(mask, bool).ravel()
    coef, *_ = np.linalg.lstsq(a[sel], phase.ravel()[sel], rcond=None)
    return phase - (a @ coef).reshape(h, w)


def phase_correlation_with_truth(
    phase: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> tuple[float, float]:
    """Pearson correlation and RMS error (rad) of two phase maps, over ``mask``.

    Offset and ramp (the reconstructions' undetermined terms) are removed from both first.
    """
    p = remove_offset_and_ramp(phase, mask)
    t = remove_offset_and_ramp(truth, mask)
    sel = np.ones(p.shape, bool) if mask is None else np.asarray(mask, bool)
    r = float(np.corrcoef(p[sel], t[sel])[0, 1])
    rms = float(np.sqrt(np.mean((p[sel] - t[sel]) ** 2)))
    return r, rms


def fourier_ring_correlation(
    a: np.ndarray, b: np.ndarray, *, pixel_A: float = 1.0, n_rings: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring correlation of two images of one shape (Saxton & Baumeister 1982).

    Returns ``(frequency_inv_A, frc)``: ring centres (1/A for a pixel of ``pixel_A``) and
    ``Re sum A B* / sqrt(sum |A|^2 sum |B|^2)`` per ring, up to the Nyquist frequency. Both
    images lose their mean and a Hann window is applied (no edge artefacts). Ring ``i``
    (``i = 1 .. n_rings``, default ``min(h, w) // 2``) holds the frequencies within half a ring
    width of ``i`` ring widths (``0.5 / n_rings`` cycles per pixel), ring 1 also any lower
    non-zero frequency (the longer axis of a non-square image samples finer than a ring): the zero
    frequency is in none (it holds only the windowed mean). ``b`` is the reference (e.g. the truth): a ring where
    it has no power (per pixel below ``1e-3`` of its strongest ring's: between a crystal's
    reflections, beyond its finest one) is NaN, it says nothing about ``a``.
    """
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    h, w = a.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    fa = np.fft.fft2((a - a.mean()) * win)
    fb = np.fft.fft2((b - b.mean()) * win)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    r = np.hypot(fy, fx)
    n = n_rings or max(2, min(h, w) // 2)
    width = 0.5 / n
    idx = (np.floor(r.ravel() / width + 0.5) - 1).astype(int)  # ring i + 1 at index i; the zero frequency at -1
    # on a non-square image the longer axis samples finer than a ring: its lowest frequencies (below
    # half a ring width) go to the first ring; only the zero frequency stays out
    idx[(idx < 0) & (r.ravel() > 0)] = 0
    ok = (idx >= 0) & (idx < n)
    num = np.bincount(idx[ok], (fa * np.conj(fb)).real.ravel()[ok], minlength=n)
    pa = np.bincount(idx[ok], (np.abs(fa) ** 2).ravel()[ok], minlength=n)
    pb = np.bincount(idx[ok], (np.abs(fb) ** 2).ravel()[ok], minlength=n)
    per_px = pb / np.maximum(np.bincount(idx[ok], minlength=n), 1)
    empty = per_px <= 1e-3 * per_px.max()
    with np.errstate(invalid="ignore", divide="ignore"):
        frc = np.where(empty, np.nan, num / np.sqrt(np.maximum(pa * pb, 1e-300)))
    centres = width * np.arange(1, n + 1) / pixel_A
    return centres, frc


def frc_resolution_A(freq_inv_A: np.ndarray, frc: np.ndarray, threshold: float = 0.5) -> float:
    """Resolution (A) where the FRC first drops below ``threshold``, NaN (empty) rings skipped.

    Inf if it does at the first ring with power; if never, the period of the finest ring with
    power (the Nyquist period when the reference has power up to it).
    """
    measured = np.nonzero(np.isfinite(frc))[0]
    below = measured[frc[measured] < threshold]
    if len(measured) == 0 or (len(below) and below[0] == measured[0]):
        return float("inf")
    if len(below) == 0:
        return float(1.0 / freq_inv_A[measured[-1]])
    return float(1.0 / freq_inv_A[below[0]])
