"""Training labels: the "structure factor image" and the Bragg reflection list of a pattern.

The target the network learns (after the crystal4D / FCU-Net idea) is the magnitude of the 3D
Fourier transform of the projected potential near the zero-order Laue zone. We compute it
kinematically over reciprocal-lattice points rather than by Fourier-transforming a windowed
potential: every reflection ``g`` of the oriented, strained crystal (lab frame) gets the weight

    w_g = |F_g| exp(-g_z^2 / (2 sigma_z^2)) / |F_000|,     sigma_z = 0.05 1/A by default,

(``F`` the electron structure factor, Peng 1996; ``g_z`` along the beam) and is rendered as a
sharp Gaussian peak (``peak_sigma_px``, default 1 px) of height ``w_g`` at its detector position
``origin + g_xy / pixel_size``. The unscattered beam is the peak ``000`` of height 1. A window
of finite size only widens these peaks, so the kinematic form is the sum over the
transform's delta functions with the window's shape put back as the Gaussian peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .engines import SimulationRequest
from .kinematic import excited_reflections

__all__ = ["LabelResult", "render_peaks", "structure_factor_label"]


@dataclass(frozen=True, eq=False)
class LabelResult:
    """The label image and its reflections.

    Attributes
    ----------
    image : ndarray ``(H, W)`` float32
        The label image.
    qy, qx : ndarray ``(n,)``
        Peak positions in pixels, the origin first.
    weight : ndarray ``(n,)``
        Structure-factor weights (the peak heights, unless drawn uniform).
    intensity : ndarray ``(n_thickness, n)``
        Kinematic intensities of the same reflections (the transmitted beam for ``000``).
    hkl : ndarray ``(n, 3)`` int
        Miller indices (``000`` first).
    """

    image: np.ndarray
    qy: np.ndarray
    qx: np.ndarray
    weight: np.ndarray
    intensity: np.ndarray
    hkl: np.ndarray

    def bragg(self, thickness_index: int = 0) -> dict[str, np.ndarray]:
        """The reflections as a shard Bragg mapping (``qy, qx, intensity, hkl``).

        Parameters
        ----------
        thickness_index : int
            Which thickness's intensities (default the first).

        Returns
        -------
        dict
            ``qy``, ``qx`` (pixels), ``intensity``, ``hkl``.
        """
        return {
            "qy": self.qy,
            "qx": self.qx,
            "intensity": self.intensity[thickness_index],
            "hkl": self.hkl,
        }


def render_peaks(centers: np.ndarray, heights: np.ndarray, shape: tuple[int, int], *, sigma_px: float) -> np.ndarray:
    """Gaussian peaks of the given heights at sub-pixel ``centers`` (n, 2) (k_y, k_x).

    Parameters
    ----------
    centers : ndarray ``(n, 2)``
        Peak centres ``(k_y, k_x)`` in pixels.
    heights : ndarray ``(n,)``
        Peak heights.
    shape : (int, int)
        Image shape.
    sigma_px : float
        Gaussian standard deviation in pixels.

    Returns
    -------
    ndarray ``shape`` float64
        The sum of the peaks, each drawn within ``ceil(4 sigma) + 1`` pixels of its centre.
    """
    H, W = shape
    out = np.zeros((H, W))
    if len(centers) == 0:
        return out
    half = math.ceil(4 * sigma_px) + 1
    win = np.arange(-half, half + 1)
    cy, cx = centers[:, 0], centers[:, 1]
    iy, ix = np.round(cy).astype(int), np.round(cx).astype(int)
    yy = iy[:, None, None] + win[None, :, None]
    xx = ix[:, None, None] + win[None, None, :]
    g = (
        np.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / (2 * sigma_px**2))
        * heights[:, None, None]
    )
    yy, xx = np.broadcast_arrays(yy, xx)
    ok = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
    np.add.at(out, (yy[ok], xx[ok]), g[ok])
    return out


def structure_factor_label(
    request: SimulationRequest,
    *,
    sigma_qz_inv_A: float = 0.05,
    peak_sigma_px: float = 1.0,
    min_weight: float = 1e-3,
    heights: str = "structure_factor",
) -> LabelResult:
    """The structure-factor label of a request (see the module docstring).

    Reflections whose weight is under ``min_weight`` (relative to ``000``) or whose peak
    centre is off the detector are left out of both the image and the list.

    Parameters
    ----------
    request : SimulationRequest
        Crystal, orientation, strain, beam and detector grid.
    sigma_qz_inv_A : float
        Width ``sigma_z`` of the weight along the beam, 1/A (default 0.05).
    peak_sigma_px : float
        Width of the drawn peaks in pixels (default 1).
    min_weight : float
        Smallest kept weight relative to ``000`` (default 1e-3).
    heights : {"structure_factor", "uniform"}
        Draw each peak at its weight, or every kept peak at height 1 (a detection target).

    Returns
    -------
    LabelResult
        The label image and its reflections.

    Notes
    -----
    ``w_g = |F_g| exp(-g_z^2 / (2 sigma_z^2)) / |F_000|`` for the reflections of
    :func:`~.kinematic.excited_reflections`, rendered by :func:`render_peaks`; the target of
    the FCU-Net of Munshi et al. [1]_.

    References
    ----------
    .. [1] J. Munshi et al., "Disentangling multiple scattering with deep learning: application
       to strain mapping from electron diffraction patterns", arXiv:2202.00204 (2022).
    """
    refl = excited_reflections(request)
    F000 = abs(complex(request.crystal.structure_factors(np.zeros((1, 3)))[0]))
    w = np.abs(refl.structure_factor) * np.exp(-(refl.g_lab[:, 2] ** 2) / (2 * sigma_qz_inv_A**2))
    w = w / F000
    H, W = request.shape
    on = (refl.qy >= 0) & (refl.qy <= H - 1) & (refl.qx >= 0) & (refl.qx <= W - 1)
    keep = on & (w >= min_weight)
    oy, ox = request.origin_px
    qy = np.concatenate([[oy], refl.qy[keep]])
    qx = np.concatenate([[ox], refl.qx[keep]])
    weight = np.concatenate([[1.0], w[keep]])
    inten = refl.intensity[:, keep]
    transmitted = np.clip(1.0 - refl.intensity.sum(axis=1), 0.0, None)[:, None]
    intensity = np.concatenate([transmitted, inten], axis=1)
    hkl = np.concatenate([np.zeros((1, 3), np.int64), refl.hkl[keep]]).astype(np.int32)
    drawn = weight if heights == "structure_factor" else np.ones_like(weight)
    image = render_peaks(np.stack([qy, qx], -1), drawn, (H, W), sigma_px=peak_sigma_px)
    return LabelResult(image.astype(np.float32), qy, qx, weight, intensity, hkl)
