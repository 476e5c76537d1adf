"""Transforms for the Result pane (UX point 15): windowed FFT and exit-wave power cepstrum.

The windowed FFT of a real-space map and the exit-wave power cepstrum (EWPC) of a diffraction
pattern:

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
    """Log magnitude of the 2D FFT of ``img`` (mean removed, Hann-windowed), fftshifted, float32.

    Parameters
    ----------
    img : ndarray ``(n_y, n_x)``
        A real-space map; NaN and inf are replaced by the mean of the finite pixels.
    window : bool
        Multiply by a 2D Hann window before the transform (default True).

    Returns
    -------
    ndarray ``(n_y, n_x)`` float32
        ``log10(1 + |FFT(w * (img - mean))|)``, zero frequency at ``(n_y // 2, n_x // 2)``; the
        frequency step is ``1 / (N * scan_step)``.

    Raises
    ------
    ValueError
        When ``img`` is not 2D.
    """
    a = _finite(img)
    a = a - a.mean()
    if window:
        a = a * np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    return np.log10(1.0 + np.abs(scipy.fft.fftshift(scipy.fft.fft2(a)))).astype(np.float32)


def ewpc(pattern: np.ndarray, *, eps: float | None = None) -> np.ndarray:
    """Exit-wave power cepstrum of a diffraction pattern, fftshifted, float32.

    Parameters
    ----------
    pattern : ndarray ``(k_y, k_x)``
        One diffraction pattern; NaN and inf are replaced by the mean of the finite pixels.
    eps : float, optional
        Offset added before the logarithm (default ``1e-3`` of the pattern's mean after its
        minimum is subtracted, at least ``1e-12``).

    Returns
    -------
    ndarray ``(k_y, k_x)`` float32
        ``|FFT(log(p - min + eps))|`` with zero at the centre ``(k_y // 2, k_x // 2)``; the centre
        itself (the mean of the log pattern) is set to 0.

    Raises
    ------
    ValueError
        When ``pattern`` is not 2D.

    Notes
    -----
    A lattice of Bragg disks spaced ``g`` px on an ``N`` px detector gives peaks ``N / g`` px
    from the centre: the real-space lattice spacing ``1 / |g|`` in steps of ``1 / (N k_pixel)``.
    The logarithm separates the disk shape (the probe) from the lattice, so the peaks stay sharp
    for thick samples and overlapping disks [1]_.

    References
    ----------
    .. [1] E. Padgett et al., "The exit-wave power-cepstrum transform for scanning nanobeam
       electron diffraction: robust strain mapping at subnanometer resolution and subpicometer
       precision", Ultramicroscopy 214, 112994 (2020).
    """
    p = _finite(pattern)
    p = p - p.min()
    if eps is None:
        eps = max(1e-3 * float(p.mean()), 1e-12)
    c = np.abs(scipy.fft.fftshift(scipy.fft.fft2(np.log(p + eps))))
    c[p.shape[0] // 2, p.shape[1] // 2] = 0.0
    return c.astype(np.float32)
