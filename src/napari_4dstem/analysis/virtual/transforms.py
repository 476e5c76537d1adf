"""Transforms for the Result pane (UX point 15): windowed FFT and exit-wave power cepstrum.

The windowed FFT of a real-space map and the exit-wave power cepstrum (EWPC) of a diffraction
pattern:

- :func:`fft_image`: ``log10(1 + |FFT(w * (img - mean))|)`` with a 2D Hann window ``w``,
  zero frequency at the centre (``N // 2``); frequency step ``1 / (N * scan_step)``. Or one
  part of the complex transform ``F`` (``part``, :data:`FFT_PARTS`): ``|F|``, its real or
  imaginary part, or its phase (rad, relative to pixel ``(0, 0)`` of the image, numpy's
  convention: ``cos(2 pi (u y / N_y + v x / N_x) + phi)`` has phase ``phi`` at ``(u, v)``).
- :func:`ewpc`: ``|FFT(log(p - min + eps))|`` of a pattern, zero at the centre. A lattice of
  Bragg disks spaced ``g`` px on an ``N`` px detector gives peaks ``N / g`` px from the centre:
  the real-space lattice spacing, ``1 / |g|``, in steps of ``1 / (N * k_pixel)`` (Padgett et al.,
  Ultramicroscopy 214, 112994 (2020)). The logarithm separates the disk shape (probe) from the
  lattice, so the peaks stay sharp for thick samples and overlapping disks.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

__all__ = ["FFT_PARTS", "ewpc", "fft_image", "fft_part"]

#: what :func:`fft_image` shows of the complex transform ``F``
FFT_PARTS = ("log|F|", "|F|", "real", "imaginary", "phase")


def _finite(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"need a 2D image, got shape {a.shape}")
    f = np.isfinite(a)
    return np.where(f, a, np.mean(a[f]) if f.any() else 0.0)


def fft_part(f: np.ndarray, part: str = "log|F|") -> np.ndarray:
    """One part of a complex transform ``f``, float32.

    Parameters
    ----------
    f : ndarray
        A complex transform (any shape), e.g. :func:`fft_image`'s.
    part : str
        ``"log|F|"`` (``log10(1 + |f|)``), ``"|F|"``, ``"real"``, ``"imaginary"`` or ``"phase"``
        (rad, in ``(-pi, pi]``).

    Returns
    -------
    ndarray
        That part, float32, of ``f``'s shape.

    Raises
    ------
    ValueError
        For an unknown part (the known ones are listed).
    """
    if part == "log|F|":
        out = np.log10(1.0 + np.abs(f))
    elif part == "|F|":
        out = np.abs(f)
    elif part == "real":
        out = np.real(f)
    elif part == "imaginary":
        out = np.imag(f)
    elif part == "phase":
        out = np.angle(f)
    else:
        raise ValueError(f"unknown FFT part {part!r}; use one of {FFT_PARTS}")
    return np.asarray(out, dtype=np.float32)


def fft_image(img: np.ndarray, *, window: bool = True, part: str = "log|F|") -> np.ndarray:
    """One part of the 2D FFT of ``img`` (mean removed, Hann-windowed), fftshifted, float32.

    By default its log magnitude, as the Result pane shows it.

    Parameters
    ----------
    img : ndarray ``(n_y, n_x)``
        A real-space map; NaN and inf are replaced by the mean of the finite pixels.
    window : bool
        Multiply by a 2D Hann window before the transform (default True).
    part : {"log|F|", "|F|", "real", "imaginary", "phase"}
        What to return of ``F = FFT(w * (img - mean))`` (see :func:`fft_part`); default the log
        magnitude ``log10(1 + |F|)``.

    Returns
    -------
    ndarray ``(n_y, n_x)`` float32
        That part of ``F`` with zero frequency at ``(n_y // 2, n_x // 2)``; the frequency step
        is ``1 / (N * scan_step)``. The phase is relative to pixel ``(0, 0)`` of ``img`` (numpy's
        convention): ``A cos(2 pi (u y / n_y + v x / n_x) + phi)`` with integer ``u, v`` gives,
        without the window, ``F = A n_y n_x / 2 e^{i phi}`` at ``(u, v)`` from the centre.

    Raises
    ------
    ValueError
        When ``img`` is not 2D, or for an unknown ``part``.
    """
    if part not in FFT_PARTS:
        raise ValueError(f"unknown FFT part {part!r}; use one of {FFT_PARTS}")
    a = _finite(img)
    a = a - a.mean()
    if window:
        a = a * np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    return fft_part(scipy.fft.fftshift(scipy.fft.fft2(a)), part)


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
