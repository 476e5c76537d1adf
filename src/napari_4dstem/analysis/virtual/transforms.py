"""Transforms for the Result pane (UX point 15): the windowed FFT of a real-space map and the
exit-wave power cepstrum (EWPC) of a diffraction pattern.

- :func:`fft_image`: ``log10(1 + |FFT(w * (img - mean))|)`` with a 2D Hann window ``w``,
  zero frequency at the centre (``N // 2``); frequency step ``1 / (N * scan_step)``.
- :func:`ewpc`: ``|FFT(log(p - min + eps))|`` of a pattern, zero at the centre. A lattice of
  Bragg disks spaced ``g`` px on an ``N`` px detector gives peaks ``N / g`` px from the centre:
  the real-space lattice spacing, ``1 / |g|``, in steps of ``1 / (N * k_pixel)`` (Padgett et al.,
  Ultramicroscopy 214, 112994 (2020)). The logarithm separates the disk shape (probe) from the
  lattice, so the peaks stay sharp for thick samples and overlapping disks.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

__all__ = ["ewpc", "fft_image"]


def _finite(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"need a 2D image, got shape {a.shape}")
    f = np.isfinite(a)
    return np.where(f, a, np.mean(a[f]) if f.any() else 0.0)


def fft_image(img: np.ndarray, *, window: bool = True) -> np.ndarray:
    """Log magnitude of the 2D FFT of ``img`` (mean removed, Hann-windowed), fftshifted, float32."""
    a = _finite(img)
    a = a - a.mean()
    if window:
        a = a * np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    return np.log10(1.0 + np.abs(scipy.fft.fftshift(scipy.fft.fft2(a)))).astype(np.float32)


def ewpc(pattern: np.ndarray, *, eps: float | None = None) -> np.ndarray:
    """Exit-wave power cepstrum of a diffraction pattern, fftshifted, float32 (the centre, the
    mean of the log pattern, set to 0)."""
    p = _finite(pattern)
    p = p - p.min()
    if eps is None:
        eps = max(1e-3 * float(p.mean()), 1e-12)
    c = np.abs(scipy.fft.fftshift(scipy.fft.fft2(np.log(p + eps))))
    c[p.shape[0] // 2, p.shape[1] // 2] = 0.0
    return c.astype(np.float32)
