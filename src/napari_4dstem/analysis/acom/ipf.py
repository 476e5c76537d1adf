"""Inverse-pole-figure (IPF) colours and their colour key.

A lab direction ``d`` (``'x'`` = k_x, ``'y'`` = k_y, ``'z'`` = beam) is expressed in the crystal
frame, ``c = U^T d``, reduced into the standard stereographic triangle of the key group and
coloured by its barycentric position between the triangle's corners (red, green, blue):

==============  ==================  =========================================
crystal system  key group           corners (red, green, blue)
==============  ==================  =========================================
cubic           m-3m                [001], [101], [111]
hexagonal       6/mmm               [0001], [10-10], [2-1-10]
trigonal        6/mmm               (hexagonal setting; -3m and -3 are subgroups)
tetragonal      4/mmm               [001], [100], [110]
orthorhombic    mmm                 [001], [100], [010]
monoclinic      mmm                 (b unique, along y; 2/m is a subgroup)
triclinic       mmm
==============  ==================  =========================================

For a Laue group smaller than its key group (m-3, 6/m, -3m, -3, 4/m, 2/m, -1) the colour is
still a symmetry invariant but directions that are not equivalent in the crystal can share a
colour; say so in figure captions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..crystal.symmetry import PointGroup

__all__ = ["ipf_colors", "ipf_key", "ipf_key_image"]

_DIRS = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}


def _closure(gens: list[np.ndarray]) -> np.ndarray:
    out = [np.eye(3)]
    frontier = [np.eye(3)]
    while frontier:
        new = []
        for a in frontier:
            for g in gens:
                m = np.round(g @ a, 12)
                if not any(np.abs(m - o).max() < 1e-9 for o in out):
                    out.append(m)
                    new.append(m)
        frontier = new
    return np.array(out)


def _rz(deg: float) -> np.ndarray:
    t = np.radians(deg)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])


_MY, _INV = np.diag([1.0, -1.0, 1.0]), -np.eye(3)
_KEYS = {
    "cubic": (
        lambda: _closure([np.array([[0, 0, 1.0], [1, 0, 0], [0, 1, 0]]), _rz(90), _MY, _INV]),
        [(0, 0, 1), (1, 0, 1), (1, 1, 1)],
        ("001", "101", "111"),
    ),
    "hexagonal": (
        lambda: _closure([_rz(60), _MY, _INV]),
        [(0, 0, 1), (np.cos(np.pi / 6), 0.5, 0), (1, 0, 0)],
        ("0001", "10-10", "2-1-10"),
    ),
    "tetragonal": (
        lambda: _closure([_rz(90), _MY, _INV]),
        [(0, 0, 1), (1, 0, 0), (1, 1, 0)],
        ("001", "100", "110"),
    ),
    "orthorhombic": (
        lambda: _closure([np.diag([-1.0, 1, 1]), _MY, _INV]),
        [(0, 0, 1), (1, 0, 0), (0, 1, 0)],
        ("001", "100", "010"),
    ),
}
_SYSTEM_KEY = {
    "cubic": "cubic",
    "hexagonal": "hexagonal",
    "trigonal": "hexagonal",
    "tetragonal": "tetragonal",
    "orthorhombic": "orthorhombic",
    "monoclinic": "orthorhombic",
    "triclinic": "orthorhombic",
}
_CACHE: dict[str, tuple[np.ndarray, np.ndarray, tuple[str, str, str]]] = {}


def ipf_key(group: PointGroup) -> tuple[np.ndarray, np.ndarray, tuple[str, str, str]]:
    """``(ops, corners, labels)`` of the IPF key of ``group``.

    Parameters
    ----------
    group : PointGroup
        The crystal's point group (its crystal system picks the key group).

    Returns
    -------
    ops : ndarray ``(g, 3, 3)``
        The key group's matrices (Laue group, Cartesian crystal frame).
    corners : ndarray ``(3, 3)``
        The standard triangle's unit corner vectors (red, green, blue).
    labels : (str, str, str)
        Their Miller labels.
    """
    key = _SYSTEM_KEY[group.crystal_system]
    if key not in _CACHE:
        make, corners, labels = _KEYS[key]
        c = np.array(corners, float)
        _CACHE[key] = (make(), c / np.linalg.norm(c, axis=1, keepdims=True), labels)
    return _CACHE[key]


def _colour(c: np.ndarray, ops: np.ndarray, corners: np.ndarray) -> np.ndarray:
    A, B, C = corners
    normals = np.array([np.cross(A, B), np.cross(B, C), np.cross(C, A)])
    normals *= np.sign(np.einsum("ij,ij->i", normals, [C, A, B]))[:, None]
    eq = np.einsum("gij,nj->ngi", ops, c)  # (n, g, 3)
    inside = np.einsum("ngi,ki->ngk", eq, normals).min(axis=-1)
    best = np.take_along_axis(eq, np.argmax(inside, axis=1)[:, None, None], axis=1)[:, 0]
    coef = np.clip(np.linalg.solve(corners.T, best.T).T, 0, None)
    coef /= np.maximum(coef.max(axis=1, keepdims=True), 1e-12)
    return np.sqrt(coef)


def ipf_colors(orientations: np.ndarray, group: PointGroup, *, direction: str | Sequence[float] = "z") -> np.ndarray:
    """RGB (..., 3) in 0..1 of the lab ``direction`` in the crystal frame of ``U (..., 3, 3)``.

    Parameters
    ----------
    orientations : ndarray ``(..., 3, 3)``
        Orientations ``U`` (crystal -> lab); non-finite ones are coloured black.
    group : PointGroup
        The crystal's point group.
    direction : {"x", "y", "z"} or (float, float, float)
        Lab direction (x = k_x, y = k_y, z = beam; default the beam).

    Returns
    -------
    ndarray ``(..., 3)``
        RGB in 0..1.

    Notes
    -----
    ``c = U^T d`` is moved by the key group's operation that puts it inside the standard
    triangle, its barycentric coordinates between the corners are clipped at 0, scaled to a
    maximum of 1 and square-rooted (the usual IPF colouring).
    """
    d = np.asarray(_DIRS[direction] if isinstance(direction, str) else direction, float)
    d = d / np.linalg.norm(d)
    U = np.asarray(orientations, float)
    shape = U.shape[:-2]
    U = U.reshape(-1, 3, 3)
    ok = np.all(np.isfinite(U), axis=(1, 2))
    out = np.zeros((len(U), 3))
    if ok.any():
        c = np.einsum("nji,j->ni", U[ok], d)  # U^T d
        ops, corners, _ = ipf_key(group)
        out[ok] = _colour(c, ops, corners)
    return out.reshape(*shape, 3)


def ipf_key_image(group: PointGroup, *, size: int = 256) -> np.ndarray:
    """The colour key: the standard triangle in stereographic projection as an RGBA image.

    Parameters
    ----------
    group : PointGroup
        The crystal's point group.
    size : int
        Image side in pixels (default 256).

    Returns
    -------
    ndarray ``(size, size, 4)``
        RGBA in 0..1, transparent outside the triangle; x to the right, corner 1 at bottom-left.
    """
    ops, corners, _ = ipf_key(group)
    proj = corners[:, :2] / (1 + corners[:, 2:3])
    lo, hi = proj.min(axis=0), proj.max(axis=0)
    span = (hi - lo).max() * 1.04
    X, Y = np.meshgrid(
        lo[0] + span * (np.arange(size) + 0.5) / size,
        lo[1] + span * (np.arange(size)[::-1] + 0.5) / size,
    )
    r2 = X**2 + Y**2
    d = np.stack([2 * X, 2 * Y, 1 - r2], -1) / (1 + r2)[..., None]
    A, B, C = corners
    normals = np.array([np.cross(A, B), np.cross(B, C), np.cross(C, A)])
    normals *= np.sign(np.einsum("ij,ij->i", normals, [C, A, B]))[:, None]
    inside = (d.reshape(-1, 3) @ normals.T).min(axis=1) >= -1e-9
    rgba = np.zeros((size * size, 4))
    rgba[inside, :3] = _colour(d.reshape(-1, 3)[inside], ops, corners)
    rgba[inside, 3] = 1.0
    return rgba.reshape(size, size, 4)
