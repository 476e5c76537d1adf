"""Point-group symmetry in Cartesian crystal coordinates: misorientation and fundamental zones.

Conventions
-----------
An orientation is a rotation matrix ``U`` that maps crystal Cartesian coordinates to the lab
frame ``(x = k_x, y = k_y, z = beam direction)`` (the convention of the simulated samples).
A crystal symmetry ``R`` (proper rotation, crystal frame) leaves the crystal unchanged, so ``U``
and ``U @ R`` are the same orientation. The misorientation angle of two orientations of one
crystal is ``min_R angle(U1^T U2 R)``.

Zone axes (the beam direction in the crystal frame, ``v = U^T z``) are sampled over the sphere
modulo the *proper* rotation group: a mirror image of a diffraction pattern is not an in-plane
rotation of it, so a sector reduced by the full Laue group would miss half the patterns of a
general orientation. The inverse pole figure (a direction, not an orientation) is reduced by
the Laue group (proper rotations and inversion).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "PointGroup",
    "fundamental_zone_axes",
    "misorientation_deg",
    "rotation_angle_deg",
    "sphere_points",
]


def _unique_mats(mats: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    out: list[np.ndarray] = []
    for m in mats:
        if not any(np.abs(m - o).max() < tol for o in out):
            out.append(m)
    return np.array(out)


@dataclass(frozen=True, eq=False)
class PointGroup:
    """A crystallographic point group as Cartesian matrices (crystal frame).

    Attributes
    ----------
    name : str
        Hermann-Mauguin symbol of the point group (``'m-3m'``, ``'6/mmm'``...).
    rotations : array (n, 3, 3)
        The proper rotations (the group that orientations are reduced by).
    laue : array (m, 3, 3)
        Proper rotations and their products with inversion (the Laue group).
    crystal_system : str
        ``'cubic'``, ``'hexagonal'``, ``'trigonal'``, ``'tetragonal'``, ``'orthorhombic'``,
        ``'monoclinic'`` or ``'triclinic'``.
    """

    name: str
    rotations: np.ndarray
    laue: np.ndarray
    crystal_system: str

    @classmethod
    def from_matrices(cls, mats: np.ndarray, name: str = "", crystal_system: str = "") -> PointGroup:
        """A point group from its Cartesian matrices (proper or improper).

        Parameters
        ----------
        mats : ndarray ``(n, 3, 3)``
            Symmetry operations in crystal Cartesian coordinates; improper ones are turned
            proper by ``-R``.
        name : str, optional
            Hermann-Mauguin symbol (default ``"order-n"``).
        crystal_system : str, optional
            Default: guessed from the group's order and rotation angles.

        Returns
        -------
        PointGroup
            With read-only ``rotations`` and ``laue`` matrices.
        """
        mats = np.asarray(mats, float).reshape(-1, 3, 3)
        dets = np.linalg.det(mats)
        proper = _unique_mats(np.where(dets[:, None, None] < 0, -mats, mats))
        laue = _unique_mats(np.concatenate([proper, -proper]))
        if not crystal_system:
            crystal_system = _system_from_order(len(proper), proper)
        for a in (proper, laue):
            a.setflags(write=False)
        return cls(name or f"order-{len(proper)}", proper, laue, crystal_system)

    @property
    def laue_name(self) -> str:
        """Hermann-Mauguin symbol of the group's Laue class (``'m-3m'``, ``'6/mmm'``...)."""
        return {
            "cubic": "m-3m" if len(self.rotations) == 24 else "m-3",
            "hexagonal": "6/mmm" if len(self.rotations) == 12 else "6/m",
            "trigonal": "-3m" if len(self.rotations) == 6 else "-3",
            "tetragonal": "4/mmm" if len(self.rotations) == 8 else "4/m",
            "orthorhombic": "mmm",
            "monoclinic": "2/m",
            "triclinic": "-1",
        }[self.crystal_system]


def _system_from_order(n: int, proper: np.ndarray) -> str:
    ang = rotation_angle_deg(proper)
    n3, n4, n6 = (int(np.sum(np.abs(ang - a) < 1)) for a in (120, 90, 60))
    if n3 >= 8:
        return "cubic"
    if n6:
        return "hexagonal"
    if n3:
        return "trigonal"
    if n4:
        return "tetragonal"
    return {4: "orthorhombic", 2: "monoclinic"}.get(n, "triclinic")


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Rotation angle (degrees, 0..180) of rotation matrices ``(..., 3, 3)``.

    Parameters
    ----------
    R : ndarray ``(..., 3, 3)``
        Rotation matrices.

    Returns
    -------
    ndarray ``(...)``
        ``arccos((trace R - 1) / 2)`` in degrees.
    """
    tr = np.trace(np.asarray(R), axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((tr - 1) / 2, -1, 1)))


def misorientation_deg(U1: np.ndarray, U2: np.ndarray, group: PointGroup | np.ndarray) -> np.ndarray:
    """Symmetry-reduced misorientation angle (degrees) between orientations of one crystal.

    Parameters
    ----------
    U1, U2 : ndarray ``(..., 3, 3)``
        Broadcastable stacks of orientations (crystal -> lab); NaN matrices give NaN.
    group : PointGroup or ndarray ``(n, 3, 3)``
        The point group, or its proper rotations.

    Returns
    -------
    ndarray ``(...)``
        ``min_R angle(U1^T U2 R)`` in degrees.

    Notes
    -----
    ``trace(U1^T U2 R)`` for every ``R`` at once (one ``einsum``); the largest trace gives the
    smallest angle.
    """
    rots = group.rotations if isinstance(group, PointGroup) else np.asarray(group)
    d = np.einsum("...ki,...kj->...ij", np.asarray(U1, float), np.asarray(U2, float))
    # trace(d @ R) for every R at once
    tr = np.einsum("...ij,gji->...g", d, rots)
    return np.degrees(np.arccos(np.clip((tr.max(axis=-1) - 1) / 2, -1, 1)))


def sphere_points(step_deg: float) -> np.ndarray:
    """Nearly uniform unit vectors on the sphere (Fibonacci lattice), about ``step_deg`` apart.

    Parameters
    ----------
    step_deg : float
        Spacing in degrees.

    Returns
    -------
    ndarray ``(n, 3)``
        Unit vectors, ``n = max(ceil(4 pi / step^2), 12)``.
    """
    step = np.radians(step_deg)
    n = max(int(np.ceil(4 * np.pi / step**2)), 12)
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


# a generic point: its Dirichlet cell under any crystallographic group is a fundamental region
_GENERIC = np.array([0.31, 0.17, 0.93]) / np.linalg.norm([0.31, 0.17, 0.93])


def fundamental_zone_axes(step_deg: float, group: PointGroup, *, use_laue: bool = False) -> np.ndarray:
    """Beam directions (crystal Cartesian unit vectors) covering the sphere modulo ``group``.

    Points of a uniform sphere grid are kept when they lie in the Dirichlet cell of a generic
    point under the proper rotations (or the Laue group with ``use_laue``), widened by half a
    step so that directions near the cell boundary are still within a step of a kept point.

    Parameters
    ----------
    step_deg : float
        Sphere-grid spacing in degrees (:func:`sphere_points`).
    group : PointGroup
        The crystal's point group.
    use_laue : bool
        Reduce by the Laue group instead of the proper rotations (default False).

    Returns
    -------
    ndarray ``(m, 3)``
        Unit zone-axis directions in crystal Cartesian coordinates.
    """
    pts = sphere_points(step_deg)
    ops = group.laue if use_laue else group.rotations
    f = _GENERIC
    normals = np.einsum("gji,j->gi", ops, f) - f  # R^T f - f for every R
    norm = np.linalg.norm(normals, axis=1)
    normals, norm = normals[norm > 1e-9], norm[norm > 1e-9]
    margin = np.sin(np.radians(0.5 * step_deg))
    keep = np.all(pts @ normals.T <= margin * norm, axis=1)
    return pts[keep]


def reduce_directions(v: np.ndarray, group: PointGroup, *, use_laue: bool = True) -> np.ndarray:
    """Map directions ``(..., 3)`` into the Dirichlet cell of the generic point.

    Each direction is replaced by its symmetry-equivalent closest to the generic point.
    """
    ops = group.laue if use_laue else group.rotations
    eq = np.einsum("gij,...j->...gi", ops, v)
    best = np.argmax(eq @ _GENERIC, axis=-1)
    return np.take_along_axis(eq, best[..., None, None], axis=-2)[..., 0, :]
