"""The kinematic CBED engine: structure factors rendered as disks (the probe at each reflection).

Fast and dependency-free, for quick training sets and tests. For each reflection ``g`` of the
oriented, strained crystal (lab frame ``g' = F^-T U g``) with excitation error
``s = -(g_z + lambda |g|^2 / 2)``, the kinematic intensity of a plate of thickness ``t`` is::

    I_g = (lambda gamma |F_g| t / V)^2 sinc^2(t s)        (= (pi t / xi_g)^2 sinc^2(t s))

with ``F_g`` the electron structure factor in Angstrom (Peng 1996 scattering factors, see
:mod:`napari_4dstem.analysis.crystal.structure`), ``V`` the cell volume and ``gamma`` the relativistic
factor. Where the kinematic total ``S = sum I_g`` nears or passes 1 (thick or heavy crystals)
the intensities are scaled by ``(1 - exp(-S)) / S`` so the scattered total stays below the
beam (a bookkeeping fix, not dynamical theory). The pattern is ``(1 - sum I_g) P(k) + sum I_g P(k - g)``
with ``P`` the vacuum probe
(a disk of radius ``alpha / lambda`` with a 0.5 px logistic edge, summing to 1): disks add
incoherently, there are no rocking-curve fringes inside a disk and no dynamical coupling, so
it is a good model for thin crystals only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from .._docstrings import cite
from .engines import SimulationRequest, SimulationResult, engine_doc
from .samples import soft_disk

__all__ = [
    "KinematicEngine",
    "Reflections",
    "excited_reflections",
    "render_disks_clipped",
    "vacuum_probe",
]

M0C2_KEV = 510.99895


@dataclass(frozen=True, eq=False)
class Reflections:
    """Reflections of an oriented crystal on a detector grid.

    Attributes
    ----------
    hkl : ndarray ``(n, 3)`` int
        Miller indices.
    g_lab : ndarray ``(n, 3)``
        Lab-frame vectors in 1/A.
    structure_factor : ndarray ``(n,)`` complex
        ``F_g`` in Angstrom.
    excitation_error : ndarray ``(n,)``
        ``s_g`` in 1/A.
    qy, qx : ndarray ``(n,)``
        Detector positions in pixels.
    intensity : ndarray ``(n_thickness, n)``
        Kinematic intensities (fractions of the beam, scaled so that their sum stays under 1;
        see the module docstring).
    """

    hkl: np.ndarray
    g_lab: np.ndarray
    structure_factor: np.ndarray
    excitation_error: np.ndarray
    qy: np.ndarray
    qx: np.ndarray
    intensity: np.ndarray


@cite
def excited_reflections(
    request: SimulationRequest, *, k_max_inv_A: float | None = None, margin_px: float = 0.0
) -> Reflections:
    """Every reflection with ``0 < |g_xy| <= k_max`` (default: the pattern's corner), lab frame.

    Positions are detector pixels ``origin + g_xy / pixel_size`` (k_y, k_x).

    Parameters
    ----------
    request : SimulationRequest
        Crystal, orientation, strain, thicknesses, beam and detector grid.
    k_max_inv_A : float, optional
        In-plane reach in 1/A (default: the pattern's corner plus ``margin_px``).
    margin_px : float
        Extra reach beyond the corner, pixels (default 0).

    Returns
    -------
    Reflections
        The reflections with their kinematic intensities at every thickness.

    Notes
    -----
    ``g' = F^-T U g``; ``s = -(g_z + lambda |g|^2 / 2)``;
    ``I_g = (lambda gamma |F_g| t / V)^2 sinc^2(t s)``, then scaled by ``(1 - exp(-S)) / S``
    with ``S = sum I_g``.

    References
    ----------
    %(kirkland2010_1)s
    """
    px = request.pixel_size_inv_A
    H, W = request.shape
    if k_max_inv_A is None:
        k_max_inv_A = (math.hypot(H, W) / 2 + margin_px) * px
    crystal = request.crystal
    # strain shrinks some spacings: look a little further out in the unstrained crystal
    stretch = 1.0 + float(np.abs(request.strain).sum())
    refl = crystal.reciprocal_points(k_max_inv_A * stretch * 1.05, min_relative_intensity=1e-8)
    Finv = np.linalg.inv(request.deformation)
    g_lab = refl.g @ request.orientation.T @ Finv  # rows: g' = F^-T U g
    inplane = np.hypot(g_lab[:, 0], g_lab[:, 1]) <= k_max_inv_A
    g_lab = g_lab[inplane]
    F = refl.structure_factor[inplane]
    lam = request.wavelength_A
    s = -(g_lab[:, 2] + 0.5 * lam * np.sum(g_lab**2, axis=1))
    gamma = 1.0 + request.energy_kev / M0C2_KEV
    vol = crystal.volume_A3 * float(np.linalg.det(request.deformation))
    t = np.asarray(request.thicknesses_A, float)[:, None]
    inten = (lam * gamma * np.abs(F)[None] * t / vol) ** 2 * np.sinc(t * s[None]) ** 2
    # kinematic intensities add up to more than the beam in thick or heavy crystals: scale them
    # so the scattered total is 1 - exp(-S) (S the kinematic total), which keeps the small-S limit
    S = inten.sum(axis=1, keepdims=True)
    inten = inten * np.where(S > 0, -np.expm1(-S) / np.where(S > 0, S, 1.0), 1.0)
    oy, ox = request.origin_px
    return Reflections(
        hkl=refl.hkl[inplane],
        g_lab=g_lab,
        structure_factor=F,
        excitation_error=s,
        qy=oy + g_lab[:, 1] / px,
        qx=ox + g_lab[:, 0] / px,
        intensity=inten,
    )


@numba.njit(cache=True, nogil=True)
def _render_disks(out, cy, cx, amp, radius, edge):
    # out (n_t, H, W) += amp[t, d] * soft_disk(|k - c_d|), each disk clipped to the detector
    n_t, H, W = out.shape
    reach = radius + 8.0 * edge + 1.0
    for d in range(cy.size):
        y0 = max(0, math.floor(cy[d] - reach))
        y1 = min(H, math.ceil(cy[d] + reach) + 1)
        x0 = max(0, math.floor(cx[d] - reach))
        x1 = min(W, math.ceil(cx[d] + reach) + 1)
        for i in range(y0, y1):
            for j in range(x0, x1):
                r = math.sqrt((i - cy[d]) ** 2 + (j - cx[d]) ** 2)
                v = 0.5 * (1.0 - math.tanh((r - radius) / (2.0 * edge)))
                if v > 1e-12:
                    for t in range(n_t):
                        out[t, i, j] += amp[t, d] * v


def render_disks_clipped(
    centers: np.ndarray,
    amplitudes: np.ndarray,
    shape: tuple[int, int],
    *,
    radius_px: float,
    edge_px: float,
) -> np.ndarray:
    """Soft disks at ``centers``, one image per row of ``amplitudes``, clipped to the detector.

    Parameters
    ----------
    centers : ndarray ``(n, 2)``
        Disk centres ``(k_y, k_x)`` in pixels.
    amplitudes : ndarray ``(n_t, n)`` or ``(n,)``
        Peak value of each disk in each image.
    shape : (int, int)
        Image shape ``(k_y, k_x)``.
    radius_px : float
        Disk radius in pixels.
    edge_px : float
        Logistic edge width in pixels.

    Returns
    -------
    ndarray ``(n_t, k_y, k_x)`` float64
        The images; disks partly or wholly off the detector are clipped.
    """
    amp = np.atleast_2d(np.asarray(amplitudes, float))
    out = np.zeros((amp.shape[0], *shape))
    c = np.asarray(centers, float).reshape(-1, 2)
    _render_disks(
        out,
        np.ascontiguousarray(c[:, 0]),
        np.ascontiguousarray(c[:, 1]),
        amp,
        float(radius_px),
        float(edge_px),
    )
    return out


def vacuum_probe(
    shape: tuple[int, int],
    *,
    radius_px: float,
    origin_px: tuple[float, float],
    edge_px: float = 0.5,
) -> np.ndarray:
    """The vacuum probe on the detector: a soft disk summing to 1 (float64).

    Parameters
    ----------
    shape : (int, int)
        Detector shape ``(k_y, k_x)``.
    radius_px : float
        Disk radius in pixels.
    origin_px : (float, float)
        Centre ``(k_y, k_x)`` in pixels.
    edge_px : float
        Logistic edge width in pixels (default 0.5).

    Returns
    -------
    ndarray ``shape`` float64
        The probe, summing to 1.
    """
    ky, kx = np.mgrid[0 : shape[0], 0 : shape[1]]
    p = soft_disk(np.hypot(ky - origin_px[0], kx - origin_px[1]), radius_px, edge_px)
    return p / p.sum()


class KinematicEngine:
    """Kinematic CBED: kinematic intensities rendered as probe disks (see the module doc).

    Parameters
    ----------
    edge_px : float
        Logistic edge width of the disks, pixels (default 0.5).
    min_intensity : float
        Reflections weaker than this at every thickness are not drawn (default 1e-7).
    """

    name = "kinematic"

    def __init__(self, *, edge_px: float = 0.5, min_intensity: float = 1e-7):
        """Store the rendering settings."""
        self.edge_px = float(edge_px)
        self.min_intensity = float(min_intensity)

    def available(self) -> bool:
        """Always True: the engine needs no backend."""
        return True

    def require(self) -> None:
        """Nothing to check: the engine needs no backend."""
        return None

    @engine_doc
    def simulate(self, request: SimulationRequest) -> SimulationResult:
        """CBED patterns of ``request`` (the same at every probe position).

        Parameters
        ----------
        %(request)s

        Returns
        -------
        SimulationResult
            ``(1 - sum I_g) P(k) + sum I_g P(k - g)`` per thickness, fractions of the beam.
        """
        H, W = request.shape
        R = request.probe_radius_px
        origin = request.origin_px
        probe = vacuum_probe((H, W), radius_px=R, origin_px=origin, edge_px=self.edge_px)
        # amplitude that makes a rendered soft disk (peak value ~1) sum to 1
        peak = (
            1.0
            / render_disks_clipped(np.array([origin]), np.ones((1, 1)), (H, W), radius_px=R, edge_px=self.edge_px).sum()
        )
        refl = excited_reflections(request, margin_px=R + 4)
        keep = refl.intensity.max(axis=0) > self.min_intensity
        inten = refl.intensity[:, keep]  # (n_t, n)
        centers = np.stack([refl.qy[keep], refl.qx[keep]], -1)
        len(request.thicknesses_A)
        transmitted = np.clip(1.0 - inten.sum(axis=1), 0.0, None)  # (n_t,)
        all_c = np.concatenate([np.array([origin]), centers])
        all_i = np.concatenate([transmitted[:, None], inten], axis=1) * peak
        pats = render_disks_clipped(all_c, all_i, (H, W), radius_px=R, edge_px=self.edge_px)
        # a disk cut by the detector edge still carries its full intensity off the detector;
        # probe positions do not change a kinematic pattern (a perfect crystal)
        n_pos = len(request.probe_positions_A)
        patterns = np.repeat(pats[:, None], n_pos, axis=1).astype(np.float32)
        return SimulationResult(
            patterns=patterns,
            probe=probe.astype(np.float32),
            thicknesses_A=np.asarray(request.thicknesses_A),
            pixel_size_inv_A=request.pixel_size_inv_A,
            origin_px=origin,
            engine=self.name,
            params={**request.params(), "engine": self.name, "edge_px": self.edge_px},
        )
