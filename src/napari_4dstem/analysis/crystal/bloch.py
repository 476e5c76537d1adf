"""Dynamical (Bloch-wave) spot intensities of a crystal for a plane wave, any orientation.

Method (high-energy, forward-scattering approximation; e.g. Spence & Zuo, *Electron
Microdiffraction*, ch. 3): the wave in the crystal is a sum of Bloch waves over the beams ``g``
near the Ewald sphere; their amplitudes solve ``A c = 2 K gamma c`` with the structure matrix

    A_gg = 2 K s_g,     A_gh = U_(g-h)  (g != h),     U_g = gamma_rel conj(F_g) / (pi V_cell)

(``F_g`` the electron structure factor of :meth:`Crystal.structure_factors`, Angstrom; ``s_g``
the excitation error as in the kinematic model, ``K = 1 / lambda``). Without absorption ``A`` is
Hermitian: ``A = C diag(w) C^H`` and the beams at thickness ``t`` are ``psi(t) = C exp(i pi w t
/ K) C^H e_000``, so a whole thickness series costs one eigendecomposition.

Beams: every lattice vector of the conventional cell within ``1.3 k_max`` in the plane and
``excitation_max`` of the Ewald sphere that is *connected to the direct beam* through non-zero
couplings. Centring absences (fcc mixed-parity ``hkl``) are never connected and drop out;
reflections that are kinematically forbidden but reached by double diffraction (Si 002) stay.

What it is for: spot intensities of thick crystals where the kinematic ``|F|^2 S(s)`` is wrong
(``docs/acom.md`` compares both with our multislice). Mean inner potential, absorption and the
probe's convergence are left out (a convergent probe: average over incident tilts).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..._docstrings import cite
from ...data.calibration import electron_wavelength_A

__all__ = ["BlochPattern", "bloch_intensities"]

_ELECTRON_REST_KEV = 510.99895


@dataclasses.dataclass(frozen=True)
class BlochPattern:
    """Beams of one orientation: row 0 is the direct beam ``000``.

    Attributes
    ----------
    hkl : ndarray ``(n, 3)`` int
        Miller indices of the beams.
    g_lab : ndarray ``(n, 3)`` float
        Reciprocal vectors in 1/A, lab frame: x = k_x, y = k_y, z = beam.
    excitation_error : ndarray ``(n,)`` float
        Excitation errors ``s_g`` in 1/A.
    intensity : ndarray ``(n_t, n)`` float
        Beam intensities as fractions of the incident beam, summing to 1 over all beams.
    thicknesses_A : ndarray ``(n_t,)`` float
        The thicknesses in Angstrom.
    """

    hkl: np.ndarray
    g_lab: np.ndarray
    excitation_error: np.ndarray
    intensity: np.ndarray
    thicknesses_A: np.ndarray


def _lattice_hkl(crystal, radius_inv_A: float) -> np.ndarray:
    n = np.ceil(radius_inv_A * np.linalg.norm(crystal.lattice, axis=1)).astype(int)
    grids = np.meshgrid(*(np.arange(-m, m + 1) for m in n), indexing="ij")
    hkl = np.stack(grids, -1).reshape(-1, 3)
    gn = np.linalg.norm(hkl @ crystal.reciprocal, axis=1)
    return hkl[(gn > 0) & (gn <= radius_inv_A)]


def _connected_to_first(coupled: np.ndarray) -> np.ndarray:
    """Nodes reachable from node 0 in the graph of the boolean adjacency matrix."""
    seen = np.zeros(len(coupled), bool)
    seen[0] = True
    front = seen.copy()
    while front.any():
        nxt = coupled[front].any(axis=0) & ~seen
        seen |= nxt
        front = nxt
    return seen


@cite
def bloch_intensities(
    crystal,
    orientation: np.ndarray,
    *,
    energy_kev: float,
    thicknesses_A,
    k_max_inv_A: float,
    excitation_max_inv_A: float = 0.05,
    beams_hkl: np.ndarray | None = None,
) -> BlochPattern:
    """Dynamical beam intensities of ``crystal`` at ``orientation`` (crystal -> lab), plane wave.

    Parameters
    ----------
    crystal : Crystal
        The structure (:class:`~napari_4dstem.analysis.crystal.structure.Crystal`).
    orientation : ndarray ``(3, 3)``
        Rotation matrix from crystal Cartesian to lab coordinates.
    energy_kev : float
        Beam energy in keV.
    thicknesses_A : float or sequence of float
        Thickness or thicknesses in Angstrom; one eigendecomposition serves them all.
    k_max_inv_A : float
        Beams up to ``1.3 k_max`` in the plane are included (the outer ones feed the inner
        ones by double diffraction); report only those within ``k_max``.
    excitation_max_inv_A : float
        Beams within this distance of the Ewald sphere, in 1/A (default 0.05).
    beams_hkl : ndarray ``(n, 3)`` int, optional
        Explicit beams (``000`` is added first), e.g. two-beam conditions; all of them are
        used, connected or not.

    Returns
    -------
    BlochPattern
        The beams (direct beam first) with their intensities at every thickness.

    Notes
    -----
    Builds the structure matrix ``A_gg = 2 K s_g``, ``A_gh = U_(g-h)`` with
    ``U_g = gamma conj(F_g) / (pi V)`` (see the module docstring), keeps the beams connected
    to ``000``, diagonalises the Hermitian ``A = C diag(w) C^H`` (``numpy.linalg.eigh``,
    ``O(n^3)``) and evaluates ``psi(t) = C exp(i pi w t / K) C^H e_000`` for all ``t``.

    References
    ----------
    .. [1] J. C. H. Spence and J. M. Zuo, *Electron Microdiffraction*, Plenum (1992), ch. 3.
    %(kirkland2010_2)s
    """
    U = np.asarray(orientation, float)
    t = np.atleast_1d(np.asarray(thicknesses_A, float))
    lam = electron_wavelength_A(energy_kev)
    K = 1.0 / lam
    if beams_hkl is None:
        hkl = _lattice_hkl(crystal, 1.3 * k_max_inv_A)
    else:
        hkl = np.asarray(beams_hkl, np.int64).reshape(-1, 3)
        hkl = hkl[np.any(hkl != 0, axis=1)]
    g = hkl @ crystal.reciprocal
    g_lab = g @ U.T
    s = -(g_lab[:, 2] + 0.5 * lam * np.sum(g**2, axis=1))
    if beams_hkl is None:
        near = (np.abs(s) <= excitation_max_inv_A) & (np.hypot(g_lab[:, 0], g_lab[:, 1]) <= 1.3 * k_max_inv_A)
        hkl, g_lab, s = hkl[near], g_lab[near], s[near]
    hkl = np.vstack([np.zeros((1, 3), np.int64), hkl])
    g_lab = np.vstack([np.zeros((1, 3)), g_lab])
    s = np.concatenate([[0.0], s])
    diff = (hkl[:, None, :] - hkl[None, :, :]).reshape(-1, 3)
    uniq, inv = np.unique(diff, axis=0, return_inverse=True)
    gamma_rel = 1.0 + energy_kev / _ELECTRON_REST_KEV
    Ug = gamma_rel * np.conj(crystal.structure_factors(uniq)) / (math.pi * crystal.volume_A3)
    A = Ug[inv.ravel()].reshape(len(hkl), len(hkl))
    if beams_hkl is None:
        scale = np.abs(A).max()
        keep = _connected_to_first(np.abs(A) > 1e-9 * scale)
        hkl, g_lab, s, A = hkl[keep], g_lab[keep], s[keep], A[np.ix_(keep, keep)]
    A[np.diag_indices(len(hkl))] = 2.0 * K * s
    w, C = np.linalg.eigh(A)
    phase = np.exp(1j * math.pi / K * np.outer(t, w))  # (n_t, n_bloch)
    psi = (phase * np.conj(C[0])) @ C.T  # (n_t, n_beams)
    return BlochPattern(hkl, g_lab, s, np.abs(psi) ** 2, t)
