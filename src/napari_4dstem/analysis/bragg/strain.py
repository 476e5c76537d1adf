"""Strain maps from per-pattern lattice fits.

Convention (the same as :mod:`napari_4dstem.simulation.samples`, so its ``truth_strain`` scores
us directly): vectors in (x, y) components with ``x = k_x = scan_x`` and ``y = k_y = scan_y``
(detector and scan axes aligned, or rotated into the scan frame with the calibration's
``rotation_deg`` / ``flip``). The real-space deformation gradient of a pattern relative to
the reference is ``F = R(theta) (I + e)``, ``e = [[e_xx, e_xy], [e_xy, e_yy]]`` symmetric, and
reciprocal vectors transform as ``g' = F^-T g``. With ``G`` the matrix of columns g1, g2:

    F = (G_ref G^-1)^T,   theta = atan2(F_yx - F_xy, F_xx + F_yy),   I + e = R(-theta) F

(the right polar decomposition). ``e`` is the TRUE (engineering, small-or-not) strain, the
stretch minus one: a lattice spacing 1 % longer gives ``e_xx = 0.01`` exactly, not
``0.01 / 1.01`` (py4DSTEM reports the latter, ``e / (1 + e)``, from reciprocal vectors).
``theta`` is in radians, positive from +x towards +y. ``frame_deg`` reports ``e`` in axes
turned by that angle from +x towards +y: ``e' = Q^T e Q``, ``Q = R(frame_deg)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..._docstrings import cite
from ...data.results import RealSpaceMap
from ...errors import DataShapeError, Napari4DSTEMError
from ..virtual.dpc import rotate_to_scan
from .lattice import FIT_REASONS, Lattice, LatticeFit

__all__ = ["STRAIN_CHANNELS", "StrainError", "StrainMap", "reference_mask", "strain_from_lattice"]

STRAIN_CHANNELS = ("e_xx", "e_yy", "e_xy", "theta_rad")
REFERENCE_REASON = 4
REASONS = {**FIT_REASONS, REFERENCE_REASON: "outside the valid strain area"}


class StrainError(Napari4DSTEMError, ValueError):
    """The strain cannot be computed (e.g. a reference region with no valid lattice fits)."""


@dataclass(frozen=True, eq=False)
class StrainMap:
    """A strain map and what it rests on.

    Attributes
    ----------
    strain : RealSpaceMap ``(scan_y, scan_x, 4)``
        Channels ``e_xx``, ``e_yy``, ``e_xy`` (true strain, dimensionless) and ``theta_rad``;
        NaN where the lattice fit failed.
    confidence : RealSpaceMap ``(scan_y, scan_x, 2)``
        ``residual_px`` (weighted RMS lattice-fit residual; lower is better) and ``n_peaks``.
    reason : ndarray ``(scan_y, scan_x)`` uint8
        0 valid, else a key of :data:`REASONS` saying why the pattern is masked.
    g1_ref, g2_ref : (float, float)
        Reference lattice vectors ``(y, x)`` px (in the frame the strain was computed in).
    params : dict
        Convention, reference, frame and the lattice fit's parameters.
    """

    strain: RealSpaceMap
    confidence: RealSpaceMap
    reason: np.ndarray
    g1_ref: tuple[float, float]
    g2_ref: tuple[float, float]
    params: dict = field(default_factory=dict)

    def channel(self, name: str) -> np.ndarray:
        """One channel of :data:`STRAIN_CHANNELS` as ``(scan_y, scan_x)``."""
        return self.strain.channel(name)

    def maps(self) -> list[RealSpaceMap]:
        """The results to save (strain, confidence, reason)."""
        reason = RealSpaceMap(
            self.reason.astype(np.int32),
            name="strain_reason",
            units="",
            calibration=self.strain.calibration,
            params={"reasons": REASONS},
        )
        return [self.strain, self.confidence, reason]


def reference_mask(reference: Any, scan_shape: tuple[int, int]) -> np.ndarray | None:
    """A boolean mask over the scan from ``None`` (all), a mask, or a rectangle.

    Parameters
    ----------
    reference : None, bool ndarray ``(scan_y, scan_x)`` or (int, int, int, int)
        The whole scan, a mask, or a rectangle ``(row0, row1, col0, col1)`` in scan pixels
        (half-open, like slices).
    scan_shape : (int, int)
        ``(scan_y, scan_x)``.

    Returns
    -------
    ndarray ``(scan_y, scan_x)`` bool or None
        The mask; None for the whole scan.

    Raises
    ------
    DataShapeError
        When a mask does not match the scan, or ``reference`` is none of the above.
    StrainError
        When the rectangle holds no scan position.
    """
    if reference is None:
        return None
    r = np.asarray(reference)
    if r.dtype == bool:
        if r.shape != tuple(scan_shape):
            raise DataShapeError(f"reference mask shape {r.shape} does not match the scan {tuple(scan_shape)}")
        return r
    if r.shape == (4,):
        y0, y1, x0, x1 = (int(v) for v in r)
        m = np.zeros(scan_shape, bool)
        m[max(y0, 0) : y1, max(x0, 0) : x1] = True
        if not m.any():
            raise StrainError(
                f"the reference rectangle {(y0, y1, x0, x1)} holds no scan position of {tuple(scan_shape)}"
            )
        return m
    raise DataShapeError(
        "reference must be None (median of all), a boolean mask (scan_y, scan_x), a rectangle "
        f"(row0, row1, col0, col1) or a Lattice; got shape {r.shape}"
    )


def _to_xy_matrix(g1: np.ndarray, g2: np.ndarray) -> np.ndarray:
    """``(..., 2, 2)`` with columns g1, g2 and rows (x, y) from (y, x) vectors."""
    return np.stack([np.stack([g1[..., 1], g2[..., 1]], -1), np.stack([g1[..., 0], g2[..., 0]], -1)], -2)


@cite
def strain_from_lattice(
    fit: LatticeFit,
    *,
    reference: Any = None,
    frame_deg: float = 0.0,
    rotation_deg: float | None = None,
    flip: bool | None = None,
    max_residual_px: float | None = None,
) -> StrainMap:
    """Strain and rotation of every pattern relative to a reference lattice.

    Parameters
    ----------
    fit : LatticeFit
        From :func:`~napari_4dstem.analysis.bragg.lattice.fit_lattice`.
    reference : None, bool mask ``(scan_y, scan_x)``, ``(row0, row1, col0, col1)`` or Lattice
        The unstrained lattice: the median of the valid fits over the mask / rectangle (None:
        over the whole scan), or given vectors.
    frame_deg : float
        Report ``e`` in axes turned by this angle from +x towards +y (0: scan axes).
    rotation_deg, flip : optional
        Detector axes in scan axes (as :class:`~napari_4dstem.data.calibration.Calibration`);
        default the calibration's (0, False when unset). The vectors are turned into the scan
        frame before the strain is computed.
    max_residual_px : float, optional
        Mask patterns whose lattice-fit residual is above this.

    Returns
    -------
    StrainMap
        ``e_xx, e_yy, e_xy`` (true strain, dimensionless) and ``theta_rad`` (radians) per
        pattern ``(scan_y, scan_x, 4)``, NaN where masked, with the confidence and reasons.

    Raises
    ------
    StrainError
        When the reference region has no valid lattice fit, or the reference vectors are
        parallel.
    DataShapeError
        When ``reference`` is not a valid mask or rectangle.

    Notes
    -----
    With ``G`` and ``G_ref`` the (x, y) matrices of columns g1, g2 (turned into the scan frame),
    ``F = (G_ref G^-1)^T`` is the real-space deformation gradient; its right polar
    decomposition gives ``theta = atan2(F_yx - F_xy, F_xx + F_yy)`` and ``I + e = R(-theta) F``,
    symmetrised. ``e`` is the stretch minus one (see the module docstring for how this differs
    from ``e / (1 + e)``). Vectorised over the scan, ``O(scan_y scan_x)``.

    References
    ----------
    %(pekin2017_1)s
    %(savitzky2021_2)s
    """
    cal = fit.calibration
    rot = rotation_deg if rotation_deg is not None else (getattr(cal, "rotation_deg", None) or 0.0)
    fl = bool(flip) if flip is not None else bool(getattr(cal, "flip", False))

    def to_scan(v):
        if rot == 0.0 and not fl:
            return v
        uy, ux = rotate_to_scan(v[..., 0], v[..., 1], rotation_deg=rot, flip=fl)
        return np.stack([uy, ux], -1)

    g1, g2 = to_scan(np.asarray(fit.g1)), to_scan(np.asarray(fit.g2))
    scan_shape = g1.shape[:2]
    reason = np.array(fit.reason, dtype=np.uint8)
    if max_residual_px is not None:
        reason[(reason == 0) & ~(fit.residual_px <= float(max_residual_px))] = REFERENCE_REASON
    valid = reason == 0
    if isinstance(reference, Lattice):
        r1 = to_scan(np.asarray(reference.g1))
        r2 = to_scan(np.asarray(reference.g2))
        ref_desc: Any = {"g1": list(reference.g1), "g2": list(reference.g2)}
        n_ref = 0
    else:
        mask = reference_mask(reference, scan_shape)
        region = valid if mask is None else (valid & mask)
        n_ref = int(region.sum())
        if n_ref == 0:
            total = int(valid.size if mask is None else mask.sum())
            why = ", ".join(
                f"{int((reason[mask if mask is not None else slice(None)] == c).sum())} {t}"
                for c, t in REASONS.items()
                if c and (reason[mask if mask is not None else slice(None)] == c).any()
            )
            raise StrainError(
                f"the reference region ({total} scan positions) has no valid lattice fit ({why}); choose another region"
            )
        r1 = np.median(g1[region], axis=0)
        r2 = np.median(g2[region], axis=0)
        ref_desc = "median of all valid fits" if mask is None else f"median of {n_ref} valid fits in the mask"
    G0 = _to_xy_matrix(np.asarray(r1), np.asarray(r2))
    if abs(np.linalg.det(G0)) < 1e-12:
        raise StrainError("the reference lattice vectors are parallel")
    G = _to_xy_matrix(g1, g2)
    Gs = np.where(valid[..., None, None], G, G0)
    F = np.swapaxes(G0 @ np.linalg.inv(Gs), -1, -2)
    theta = np.arctan2(F[..., 1, 0] - F[..., 0, 1], F[..., 0, 0] + F[..., 1, 1])
    c, s = np.cos(theta), np.sin(theta)
    # U = R(-theta) F
    U00 = c * F[..., 0, 0] + s * F[..., 1, 0]
    U01 = c * F[..., 0, 1] + s * F[..., 1, 1]
    U10 = -s * F[..., 0, 0] + c * F[..., 1, 0]
    U11 = -s * F[..., 0, 1] + c * F[..., 1, 1]
    exx, eyy, exy = U00 - 1.0, U11 - 1.0, 0.5 * (U01 + U10)
    if frame_deg:
        p = math.radians(frame_deg)
        cp, sp = math.cos(p), math.sin(p)
        exx, eyy, exy = (
            cp * cp * exx + 2 * cp * sp * exy + sp * sp * eyy,
            sp * sp * exx - 2 * cp * sp * exy + cp * cp * eyy,
            (cp * cp - sp * sp) * exy + cp * sp * (eyy - exx),
        )
    data = np.stack([exx, eyy, exy, theta], -1)
    data[~valid] = np.nan
    params = {
        "convention": "true strain: F = R(theta)(I + e), g' = F^-T g; x = k_x = scan_x, y = k_y = scan_y",
        "reference": ref_desc,
        "n_reference": n_ref,
        "frame_deg": float(frame_deg),
        "rotation_deg": float(rot),
        "flip": fl,
        "max_residual_px": max_residual_px,
        "g1_ref_px_yx": [float(v) for v in r1],
        "g2_ref_px_yx": [float(v) for v in r2],
        "lattice_fit": fit.params,
    }
    kw = {} if cal is None else {"calibration": cal}
    strain = RealSpaceMap(data, name="strain", units="", channels=STRAIN_CHANNELS, params=params, **kw)
    conf = RealSpaceMap(
        np.stack([fit.residual_px, fit.n_peaks.astype(float)], -1),
        name="strain_confidence",
        units="px",
        channels=("residual_px", "n_peaks"),
        params={"meaning": "lattice-fit residual"},
        **kw,
    )
    return StrainMap(strain, conf, reason, tuple(float(v) for v in r1), tuple(float(v) for v in r2), params)
