"""Direct ptychography by single side band (SSB) deconvolution.

For a weak phase object ``O = exp(i phi) ~ 1 + i phi`` the Fourier transform over the probe
positions ``R`` of the intensity at detector frequency ``k`` is, for ``Q != 0`` (conventions of
:mod:`.probe`; Rodenburg, McCallum & Nellist, Ultramicroscopy 48, 304 (1993),
doi:10.1016/0304-3991(93)90105-7; Pennycook et al., Ultramicroscopy 151, 160 (2015),
doi:10.1016/j.ultramic.2014.09.013)::

    G(k, Q) = sum_R I(R, k) exp(-2 pi i Q.R) = N_R i Phi(Q) Gamma(k, Q)
    Gamma(k, Q) = P*(k) P(k - Q) - P(k) P*(k + Q)

``Gamma`` is non-zero in the two "side bands" where the bright-field disk overlaps its copies
shifted by ``+-Q``; it carries the aberration phase of the probe. We combine every bright-field
pixel by least squares, ``Phi(Q) = sum_k G conj(i Gamma) / (N_R (sum_k |Gamma|^2 + eps))``,
which for an aberration-free probe is the classical SSB sum over both side bands (the triple
overlap cancels), and for a known aberrated probe corrects the aberrations. The phase map
``phi = F^-1[Phi]`` lies on the scan grid.

``eps`` is a Wiener term. By default it is measured from the data at every ``Q``: the noise
variance ``sigma^2`` of ``G`` is the residual of that least-squares fit over the bright-field
pixels (median over ``Q``; white in ``Q`` for shot noise), the signal power ``S(|Q|)`` is the
power of the fitted ``Phi`` less its noise, averaged over rings 2 scan-frequency pixels wide,
and ``eps(Q) = sigma^2 / S(|Q|)``. At high dose this is the least-squares deconvolution; at low
dose it approaches the plain side-band sum (no division by the overlap area), which is what
py4DSTEM's SSB does at every dose. A fixed ``regularization`` (relative to the largest
``sum_k |Gamma|^2``) reproduces the earlier behaviour.

Only the bright-field pixels are read, streamed over scan chunks (memory ``scan_y * scan_x *
n_bf * 12`` bytes, never the whole dataset).
"""

from __future__ import annotations

import math

import numpy as np

from ...data.calibration import Calibration
from ...data.results import RealSpaceMap
from ...engine.jobs import Job, Progress, eager
from ._common import Geometry, bf_pixels, iter_pixel_stack
from .probe import ProbeModel, probe_fourier, scan_to_detector

__all__ = ["iter_ssb", "ssb"]


def iter_ssb(
    datacube,
    *,
    probe: ProbeModel | None = None,
    calibration: Calibration | None = None,
    regularization: float | None = None,
    edge_px: float = 1.0,
    q_batch: int = 256,
    scan_chunk: tuple[int, int] | None = None,
) -> Job[RealSpaceMap]:
    """Job: the object phase (rad) on the scan grid by single side band ptychography.

    Parameters
    ----------
    datacube : DataCube ``(scan_y, scan_x, k_y, k_x)``
        Calibrated (scan step, detector pixel size, beam energy, convergence angle; origin,
        rotation and flip are used when set).
    probe : ProbeModel, optional
        Probe with its aberrations (defocus, astigmatism, Cs), e.g. from :func:`.parallax`;
        default: from the calibration with no aberrations.
    regularization : float, optional
        None (default): the Wiener term is measured from the data's noise and signal power (see
        the module docstring; adapts to the dose). A number: a fixed ``eps`` relative to the
        largest ``sum_k |Gamma|^2`` (damps frequencies with little side-band overlap: near
        ``Q = 0`` and ``|Q|`` near ``2 alpha / lambda``; 0.05 was the default before).
    calibration : Calibration, optional
        Overrides the datacube's calibration.
    edge_px : float
        Width of the soft aperture edge of the model probe, detector pixels.
    q_batch : int
        Scan frequencies per vectorised batch (memory ``q_batch * n_bf`` complex numbers).
    scan_chunk : (int, int), optional
        Scan block read at a time.

    Yields
    ------
    Progress
        Reading the bright-field pixels, then the deconvolution batches.

    Returns
    -------
    RealSpaceMap ``(scan_y, scan_x)``
        The generator's return value: the object phase in radians on the scan grid; with the
        measured Wiener term its params hold ``noise_variance`` (``sigma^2`` of ``G``, in units
        of the vacuum intensity).

    Raises
    ------
    CalibrationError
        When the scan step, detector pixel size, energy or convergence angle is not calibrated.

    Notes
    -----
    Reads only the bright-field pixels (streamed over scan chunks), Fourier transforms them over
    the scan, and for each scan frequency ``Q`` forms ``Gamma(k, Q) = P*(k) P(k - Q) -
    P(k) P*(k + Q)`` and ``Phi(Q) = sum_k G conj(i Gamma) / (N_R (sum_k |Gamma|^2 + eps))``
    (see the module docstring); ``phi = F^-1[Phi]``. Cost ``O(N_R n_bf)`` after one FFT of the
    stack over the scan.

    References
    ----------
    .. [1] J. M. Rodenburg, B. C. McCallum and P. D. Nellist, "Experimental tests on
       double-resolution coherent imaging via STEM", Ultramicroscopy 48, 304-314 (1993).
    .. [2] T. J. Pennycook et al., "Efficient phase contrast imaging in STEM using a pixelated
       detector. Part 1: Experimental demonstration at atomic resolution", Ultramicroscopy 151,
       160-167 (2015).
    """
    cal = calibration or datacube.calibration
    geo = Geometry.of(datacube, cal)
    probe = probe or ProbeModel.from_calibration(cal)
    dk = geo.k_pixel_inv_A
    ka = probe.k_aperture_inv_A
    iy, ix = bf_pixels(geo, probe, fraction=1.0 + (edge_px + 1.0) * dk / ka)
    stack = yield from iter_pixel_stack(datacube, iy, ix, scan_chunk=scan_chunk)
    ny, nx = geo.scan_shape
    ky, kx = geo.k_of_pixels(iy, ix)
    edge = edge_px * dk
    p0 = probe_fourier(ky, kx, probe, edge_inv_A=edge)  # (n_bf,)
    # intensities in units of the vacuum |P|^2 (the mean pattern of a weak object)
    mean_pattern = stack.mean(axis=(0, 1), dtype=np.float64)
    scale = float(np.sum(mean_pattern * np.abs(p0) ** 2) / np.sum(np.abs(p0) ** 4))
    g = yield from _iter_scan_fft(stack, np.float32(scale))  # (n_Q, n_bf)
    del stack
    qy_s = np.fft.fftfreq(ny, geo.step_A[0])
    qx_s = np.fft.fftfreq(nx, geo.step_A[1])
    qqy, qqx = np.meshgrid(qy_s, qx_s, indexing="ij")
    qy, qx = scan_to_detector(qqy.ravel(), qqx.ravel(), rotation_deg=geo.rotation_deg, flip=geo.flip)
    n_q = ny * nx
    num = np.zeros(n_q, complex)
    den = np.zeros(n_q)
    power = np.zeros(n_q)  # sum_k |G|^2: with num and den, the residual of the fit at each Q
    total = math.ceil(n_q / q_batch)
    for i, a in enumerate(range(0, n_q, q_batch)):
        b = slice(a, a + q_batch)
        pm = probe_fourier(ky[None] - qy[b, None], kx[None] - qx[b, None], probe, edge_inv_A=edge)
        pp = probe_fourier(ky[None] + qy[b, None], kx[None] + qx[b, None], probe, edge_inv_A=edge)
        gamma = np.conj(p0)[None] * pm - p0[None] * np.conj(pp)
        num[b] = np.sum(g[b] * np.conj(1j * gamma), axis=1)
        den[b] = np.sum(np.abs(gamma) ** 2, axis=1)
        power[b] = np.sum(g[b].real ** 2 + g[b].imag ** 2, axis=1)
        yield Progress(i + 1, total, "SSB deconvolution")
    extra = {}
    if regularization is None:
        q_abs = np.hypot(qqy, qqx).ravel()
        ring = 2.0 * min(abs(qy_s[1]) if ny > 1 else np.inf, abs(qx_s[1]) if nx > 1 else np.inf)
        # pixels that carry shot noise: the read pixels weighed by their mean count (those just
        # outside the disk carry none)
        n_noisy = float(np.sum(mean_pattern) / scale)
        eps, extra["noise_variance"] = _wiener_term(num, den, power, n_noisy, q_abs, ring)
        spec = np.zeros(n_q, complex)
        ok = np.isfinite(eps)
        spec[ok] = num[ok] / (n_q * (den[ok] + eps[ok]))
    else:
        eps = regularization * den.max()
        spec = num / (n_q * (den + eps))
    spec[0] = 0.0
    phase = np.fft.ifft2(spec.reshape(ny, nx)).real * n_q
    params = dict(
        method="ssb", probe=probe.to_dict(), regularization=regularization, edge_px=edge_px, n_pixels=len(iy), **extra
    )
    return RealSpaceMap(
        phase, name="ssb_phase", units="rad", calibration=cal.replace(origin_map_px=None), params=params
    )


#: bright-field pixels per piece of the FFT over the scan: each piece is a Cancel point, about
#: 0.13 s median at a 256 x 256 scan, load 10 (the whole FFT was one step: 42 s for 800 pixels)
_FFT_PIXELS_PER_STEP = 8


def _iter_scan_fft(stack: np.ndarray, scale: np.float32) -> Job[np.ndarray]:
    """Job: ``fft2(stack / scale)`` over the scan axes, as ``(n_Q, n_pixels)``.

    Each pixel's transform is its own, so the pixels are done a few at a time with a step (a
    Cancel point) between; the values are those of one ``fft2`` of the whole stack.
    """
    ny, nx, n = stack.shape
    step = max(1, _FFT_PIXELS_PER_STEP * 256 * 256 // max(ny * nx, 1))
    g = None
    total = math.ceil(n / step)
    for i, a in enumerate(range(0, n, step)):
        piece = np.fft.fft2(stack[:, :, a : a + step] / scale, axes=(0, 1)).reshape(ny * nx, -1)
        if g is None:
            g = np.empty((ny * nx, n), piece.dtype)
        g[:, a : a + step] = piece
        yield Progress(i + 1, total, "SSB: Fourier transform over the scan")
    return g


def _wiener_term(
    num: np.ndarray, den: np.ndarray, power: np.ndarray, n_noisy: float, q_abs: np.ndarray, ring: float
) -> tuple[np.ndarray, float]:
    """The Wiener term ``eps(Q) = sigma^2 / S(|Q|)`` from the data (module docstring).

    ``num = sum_k G conj(a)``, ``den = sum_k |a|^2``, ``power = sum_k |G|^2`` per ``Q`` (``a``
    the side-band kernel). The least-squares fit ``c = num / den`` leaves the residual
    ``power - |num|^2 / den`` over ``n_noisy - 1`` degrees of freedom (``n_noisy``: the pixels
    that carry shot noise, in units of a pixel inside the disk): ``sigma^2``, the variance of a
    pixel inside the disk, is its median over the measured ``Q``; ``c``'s own noise is
    ``sigma^2 / den``. ``S`` per ring of width
    ``ring``: the ``den``-weighted mean of ``|c|^2 - sigma^2 / den``, at least 0. Returns
    ``(eps, sigma^2)``; ``eps`` is inf where nothing is measured or no signal is left.
    """
    measured = den > 1e-3 * den.max()
    measured[0] = False
    eps = np.full(num.shape, np.inf)
    if not measured.any():
        return eps, float("nan")
    d = den[measured]
    resid = np.maximum(power[measured] - np.abs(num[measured]) ** 2 / d, 0.0) / max(n_noisy - 1.0, 1.0)
    sigma2 = float(np.median(resid))
    signal = np.abs(num[measured]) ** 2 / d**2 - sigma2 / d
    rings = np.floor(q_abs[measured] / ring).astype(int)
    s_ring = np.bincount(rings, d * signal) / np.maximum(np.bincount(rings, d), 1e-300)
    s_q = np.maximum(s_ring[rings], 0.0)
    with np.errstate(divide="ignore"):
        eps[measured] = np.where(s_q > 0, sigma2 / np.where(s_q > 0, s_q, 1.0), np.inf)
    return eps, sigma2


ssb = eager(iter_ssb, "The object phase by single side band ptychography.")
