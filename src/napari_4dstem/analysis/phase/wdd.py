"""Direct ptychography by Wigner distribution deconvolution (WDD).

Unlike SSB (:mod:`.ssb`), WDD does not assume a weak phase object. With the conventions of
:mod:`.ssb` (``G(k, Q) = sum_R I(R, k) exp(-2 pi i Q.R) / N_R``, intensities in units of the
vacuum ``|P|^2``), a thin object ``O`` with spectrum ``o(q)`` and a probe ``P(k)`` give
(Rodenburg & Bates, Phil. Trans. R. Soc. A 339, 521 (1992), doi:10.1098/rsta.1992.0050;
Yang, Pennycook & Nellist, Ultramicroscopy 151, 232 (2015),
doi:10.1016/j.ultramic.2014.10.013)::

    G(k, Q) = sum_u A(k - u, Q) B(u, Q)       A(s, Q) = o(s) o*(s - Q),  B(u, Q) = P(u) P*(u + Q)

a convolution over the detector coordinate. Transformed to the detector's conjugate
coordinate ``r`` it is a product, ``H(r, Q) = chi_A(r, Q) chi_B(r, Q)`` (``chi`` the transform
over ``k``: the Wigner distributions of object and probe), so the object's part is found by
a Wiener deconvolution with the known probe::

    chi_A = H conj(chi_B) / (|chi_B|^2 + eps)

and transformed back, ``A(s, Q)``, evaluated at ``s = Q``, is ``o(Q) o*(0)``: the object
spectrum at every scan frequency, up to the constant ``o*(0) = sqrt(A(0, 0))``. The object is
the inverse transform over the scan, its phase the map returned. For a weak phase object this
reduces to SSB (``A(s, Q) = i Phi(Q) (delta(s - Q) - delta(s))``); for a strong one it keeps the
terms SSB drops. The detector window is the square of half-width ``k_max`` about the origin
(default twice the aperture: the pixels where ``G`` of a thin object carries most power),
streamed over scan chunks like SSB; the transforms over ``k`` are FFTs on that window with the
sub-pixel origin as a phase factor (exact), in batches of ``Q``; ``B`` is evaluated on the
aperture's pixels only.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

from ...data.calibration import Calibration
from ...data.results import RealSpaceMap
from ...engine.jobs import Job, Progress, eager
from ...errors import CalibrationError
from ._common import Geometry, iter_pixel_stack
from .probe import ProbeModel, probe_fourier, scan_to_detector

__all__ = ["iter_wdd", "wdd"]


def _window(geo: Geometry, half: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows and columns of the detector window of half-width ``half`` px about the origin.

    The window is shrunk to fit the detector.
    """
    cy, cx = (round(c) for c in geo.origin_px)
    ny, nx = geo.detector_shape
    half = int(min(half, cy, cx, ny - 1 - cy, nx - 1 - cx))
    if half < 2:
        raise CalibrationError(f"the origin {geo.origin_px} lies at the detector edge: WDD needs pixels around it")
    rows = np.arange(cy - half, cy + half + 1)
    cols = np.arange(cx - half, cx + half + 1)
    return rows, cols, half


def iter_wdd(
    datacube,
    *,
    probe: ProbeModel | None = None,
    calibration: Calibration | None = None,
    regularization: float = 1e-3,
    k_max_alpha: float = 2.0,
    edge_px: float = 1.0,
    q_batch: int = 64,
    scan_chunk: tuple[int, int] | None = None,
) -> Job[RealSpaceMap]:
    """Job: the object phase (rad) on the scan grid by Wigner distribution deconvolution.

    Parameters
    ----------
    datacube : DataCube ``(scan_y, scan_x, k_y, k_x)``
        Calibrated as for :func:`.ssb.iter_ssb` (scan step, detector pixel size, beam energy,
        convergence angle; origin, rotation and flip when set).
    probe : ProbeModel, optional
        Probe with its aberrations; default: from the calibration, aberration-free.
    calibration : Calibration, optional
        Used instead of the datacube's.
    regularization : float
        Wiener constant ``eps`` relative to the largest ``|chi_B|^2`` (the probe's Wigner
        distribution at ``Q = 0``, ``r = 0``): larger damps noise where the probe carries
        little information, smaller sharpens.
    k_max_alpha : float
        Half-width of the detector window, in units of the aperture radius.
    edge_px : float
        Width of the soft aperture edge of the model probe, detector pixels.
    q_batch : int
        Scan frequencies per batch (memory ``q_batch * m^2 * 32`` bytes for an ``m x m``
        window).

    scan_chunk : (int, int), optional
        Scan block read at a time (default: whole rows, about 32 MiB).

    Yields
    ------
    Progress
        Reading the window, then one step per batch of scan frequencies.

    Returns
    -------
    RealSpaceMap
        ``wdd_phase``: the phase of the reconstructed object (rad), mean removed, on the scan
        grid; ``params`` holds the method, probe and settings.

    Raises
    ------
    ValueError
        A regularization <= 0 or a window smaller than the aperture.
    CalibrationError
        The origin at the detector edge, or a bright-field disk of fewer than 3 pixels.

    Notes
    -----
    See the module docstring for the method.

    References
    ----------
    Rodenburg & Bates, Phil. Trans. R. Soc. A 339, 521 (1992); Yang, Pennycook & Nellist,
    Ultramicroscopy 151, 232 (2015).
    """
    if not (regularization > 0 and math.isfinite(regularization)):
        raise ValueError(f"regularization must be > 0, got {regularization!r}")
    if not (k_max_alpha >= 1.0 and math.isfinite(k_max_alpha)):
        raise ValueError(f"k_max_alpha must be >= 1 (the window holds the bright field), got {k_max_alpha!r}")
    cal = calibration or datacube.calibration
    geo = Geometry.of(datacube, cal)
    probe = probe or ProbeModel.from_calibration(cal)
    dk = geo.k_pixel_inv_A
    ka = probe.k_aperture_inv_A
    edge = edge_px * dk
    rows, cols, half = _window(geo, math.ceil(k_max_alpha * ka / dk))
    m = 2 * half + 1
    iy = np.repeat(rows, m)
    ix = np.tile(cols, m)
    stack = yield from iter_pixel_stack(datacube, iy, ix, scan_chunk=scan_chunk, message="reading the WDD window")
    ny, nx = geo.scan_shape
    n_q = ny * nx
    ky1 = (rows - geo.origin_px[0]) * dk  # detector axes, 1/A
    kx1 = (cols - geo.origin_px[1]) * dk
    KY, KX = np.meshgrid(ky1, kx1, indexing="ij")
    p0 = probe_fourier(KY, KX, probe, edge_inv_A=edge)  # (m, m)
    # intensities in units of the vacuum |P|^2, fitted on the bright-field pixels (as SSB)
    inside = np.hypot(KY, KX).ravel() <= ka
    if inside.sum() < 3:
        raise CalibrationError("the bright-field disk covers fewer than 3 detector pixels: check the calibration")
    mean_pattern = stack.mean(axis=(0, 1), dtype=np.float64)
    pv = np.abs(p0.ravel()) ** 2
    scale = float(np.sum(mean_pattern[inside] * pv[inside]) / np.sum(pv[inside] ** 2))
    g = sfft.fft2(stack / np.float32(scale * n_q), axes=(0, 1), workers=-1).reshape(n_q, m, m).astype(np.complex64)
    del stack
    # the conjugate coordinate r of the window: X(r) = sum_k X(k) exp(2 pi i k r), exact for a
    # sub-pixel origin
    r1 = (np.arange(m) - half) / (m * dk)

    # the same transform by FFT (28x fewer operations than the matrices for a 49 px window):
    # k_j r_l = (j - c)(l - half) / m with c the origin in window pixels, so
    # X(r_l) = m * ifft(X)[(l - half) mod m] * exp(-2 pi i c (l - half) / m) on each axis
    lag = np.arange(m) - half
    ph_y = np.exp(-2j * np.pi * (geo.origin_px[0] - rows[0]) * lag / m).astype(np.complex64)
    ph_x = np.exp(-2j * np.pi * (geo.origin_px[1] - cols[0]) * lag / m).astype(np.complex64)
    ph = (m * m) * ph_y[:, None] * ph_x[None, :]

    def to_r(x):  # (q, m, m) over k -> over r
        return sfft.fftshift(sfft.ifft2(x, axes=(-2, -1), workers=-1), axes=(-2, -1)) * ph

    qy_s = np.fft.fftfreq(ny, geo.step_A[0])
    qx_s = np.fft.fftfreq(nx, geo.step_A[1])
    qqy, qqx = np.meshgrid(qy_s, qx_s, indexing="ij")
    qy, qx = scan_to_detector(qqy.ravel(), qqx.ravel(), rotation_deg=geo.rotation_deg, flip=geo.flip)
    ap = np.flatnonzero(np.abs(p0.ravel()) > 0)  # the aperture's pixels in the window
    p0_ap = p0.ravel()[ap]
    chi_b0 = to_r((np.abs(p0) ** 2)[None].astype(np.complex64))[0]
    eps = regularization * float(np.max(np.abs(chi_b0) ** 2))
    spec = np.zeros(n_q, complex)
    total = math.ceil(n_q / q_batch)
    for i, a in enumerate(range(0, n_q, q_batch)):
        b = slice(a, a + q_batch)
        # B(k, Q) = P(k) P*(k + Q): zero where P(k) is, so P(k + Q) only at the aperture's pixels
        nb = len(qy[b])
        bq = np.zeros((nb, m * m), np.complex64)
        bq[:, ap] = p0_ap[None] * np.conj(
            probe_fourier(
                KY.ravel()[ap][None] + qy[b, None], KX.ravel()[ap][None] + qx[b, None], probe, edge_inv_A=edge
            )
        )
        both = to_r(np.concatenate([bq.reshape(nb, m, m), g[b]]))
        chi_b, h = both[:nb], both[nb:]
        chi_a = h * np.conj(chi_b) / (np.abs(chi_b) ** 2 + eps)
        # A(s = Q, Q) = (1 / m^2) sum_r chi_A(r, Q) exp(-2 pi i Q r)
        ey = np.exp(-2j * np.pi * qy[b, None] * r1[None, :])
        ex = np.exp(-2j * np.pi * qx[b, None] * r1[None, :])
        spec[b] = np.einsum("qab,qa,qb->q", chi_a, ey, ex, optimize=True) / (m * m)
        yield Progress(i + 1, total, "WDD deconvolution")
    o0 = math.sqrt(max(abs(spec[0]), 1e-30))  # A(0, 0) = |o(0)|^2
    obj = np.fft.ifft2((spec / o0).reshape(ny, nx)) * n_q
    phase = np.angle(obj * np.exp(-1j * np.angle(np.mean(obj))))
    phase -= phase.mean()
    params = dict(method="wdd", probe=probe.to_dict(), regularization=regularization,
                  k_max_alpha=k_max_alpha, edge_px=edge_px, window_px=m)  # fmt: skip
    return RealSpaceMap(phase, name="wdd_phase", units="rad",
                        calibration=cal.replace(origin_map_px=None), params=params)  # fmt: skip


wdd = eager(iter_wdd, "The object phase by Wigner distribution deconvolution.")
