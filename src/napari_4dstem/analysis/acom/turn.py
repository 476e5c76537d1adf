"""The 180-deg turn of a match: which partner orientation explains the same peaks (issue #18).

Physics (docs/acom.md, "The turn about the beam"). A turn ``T`` by 180 deg about the beam maps a
lab reciprocal point ``(g_x, g_y, g_z)`` to ``(-g_x, -g_y, g_z)``: the turned pattern is the point
reflection of the original with the same excitation errors at the reflected positions. Off a
zone axis ``g_z(-g) = -g_z(g)``, so the pattern is not centrosymmetric (the Laue circle's centre
sits on one side) and ``T U`` itself is told from ``U`` by the side the bright reflections lie
on. The refinement fits that side, though: started from ``T U`` it tilts on to the *zone
partner* ``P = U R(z, 180 deg)``, the match turned by 180 deg about the zone axis ``z`` it is
near (in the crystal frame), whose beam direction is the match's mirrored through ``z``. ``P``
puts every reflection of the zero-order Laue zone of ``z`` on exactly the lab point where ``U``
puts its Friedel mate (``R(z, 180) g = -g`` for ``g`` normal to ``z``), so with Friedel's law
the two patterns agree reflection for reflection, whatever the rocking curve; only reflections
of the higher-order Laue zones (layers ``n != 0`` along ``z``, which ``P`` swaps for ``-n``)
tell them apart. Where ``z`` is a 2-, 4- or 6-fold axis of the crystal, ``P`` is ``U`` itself.

:func:`turn_partners` finds, for each match, the partner among the low-index zone axes near its
beam direction whose predicted pattern differs least from the match's, and that difference
``D`` (0: the same reflections at the same excitation errors; 1: no reflection in common).
A match whose partner is within the line (``D < 0.1`` by default) is *ambiguous*: the peaks
cannot decide between the two, and both are reported.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import numba
import numpy as np

from .plan import OrientationPlan, _reflections, _width_as

__all__ = ["TURN_LINE", "turn_arguments", "turn_partners", "zone_axes"]

#: the pattern difference below which a match and its zone partner are called ambiguous
#: (chosen on draw 18 of the thin-film sets, docs/acom.md)
TURN_LINE = 0.1


@functools.lru_cache(maxsize=16)
def _zone_axes_cached(lattice_key: tuple, rotations_key: tuple, n_max: int) -> tuple[np.ndarray, np.ndarray]:
    lattice = np.array(lattice_key).reshape(3, 3)
    rot = np.array(rotations_key).reshape(-1, 3, 3)
    uvw = []
    for p in itertools.product(range(-n_max, n_max + 1), repeat=3):
        if any(p) and math.gcd(math.gcd(abs(p[0]), abs(p[1])), abs(p[2])) == 1:
            # one of each +-pair (the zone is a line)
            first = next(x for x in p if x != 0)
            if first > 0:
                uvw.append(p)
    d = np.array(uvw, float) @ lattice
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    # R(z, pi) = 2 z z^T - 1: is it one of the crystal's rotations (then the partner is the match)?
    half = 2.0 * d[:, :, None] * d[:, None, :] - np.eye(3)
    even = np.array([np.any(np.all(np.abs(rot - h) < 1e-6, axis=(1, 2))) for h in half])
    return d, even


def zone_axes(crystal, n_max: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Unit zone-axis directions ``[uvw]`` (indices up to ``n_max``) in crystal Cartesian coordinates.

    Parameters
    ----------
    crystal : Crystal
        The structure (real-space lattice vectors as rows).
    n_max : int
        Largest index ``|u|, |v|, |w|`` (default 3).

    Returns
    -------
    directions : ndarray ``(m, 3)``
        One unit vector per zone (``[uvw]`` and ``[-u-v-w]`` are one zone).
    even : ndarray ``(m,)`` bool
        True where the 180-deg rotation about the zone is a symmetry of the crystal (a 2-, 4-
        or 6-fold axis: the zone partner is the orientation itself).
    """
    lat = np.asarray(crystal.lattice, float)
    rot = np.asarray(crystal.point_group.rotations, float)
    d, even = _zone_axes_cached(tuple(lat.ravel()), tuple(np.round(rot, 9).ravel()), int(n_max))
    return d.copy(), even.copy()


@numba.njit(nogil=True, cache=True)
def _visible(H, G, Famp, g2, lam, w, k_max, xs, ys, fs):  # pragma: no cover - numba
    # reflections of orientation H within 4 widths of the Ewald sphere and k_max in-plane: their
    # lab positions and weights Famp exp(-(s / w)^2); returns how many
    n = 0
    for g in range(G.shape[0]):
        x = H[0, 0] * G[g, 0] + H[0, 1] * G[g, 1] + H[0, 2] * G[g, 2]
        y = H[1, 0] * G[g, 0] + H[1, 1] * G[g, 1] + H[1, 2] * G[g, 2]
        z = H[2, 0] * G[g, 0] + H[2, 1] * G[g, 1] + H[2, 2] * G[g, 2]
        s = -(z + 0.5 * lam * g2[g])
        if abs(s) < 4.0 * w and x * x + y * y <= k_max * k_max:
            xs[n], ys[n] = x, y
            fs[n] = Famp[g] * math.exp(-((s / w) ** 2))
            n += 1
    return n


@numba.njit(nogil=True, cache=True)
def _one_way(xa, ya, fa, na, xb, yb, fb, nb, tol, num, den):  # pragma: no cover - numba
    # to (num, den): each of list a's |f - f of its nearest in list b within tol (0 if none)|, and f
    for i in range(na):
        best, bd = -1, tol * tol
        for j in range(nb):
            d = (xa[i] - xb[j]) ** 2 + (ya[i] - yb[j]) ** 2
            if d <= bd:
                best, bd = j, d
        num += abs(fa[i] - (fb[best] if best >= 0 else 0.0))
        den += fa[i]
    return num, den


@numba.njit(nogil=True, cache=True)
def _pattern_difference(xa, ya, fa, na, xb, yb, fb, nb, tol):  # pragma: no cover - numba
    # sum over both lists of |f - f_other at the same position (0 if none within tol)|, over the
    # total weight: 0 the same pattern, 1 nothing in common
    num, den = _one_way(xa, ya, fa, na, xb, yb, fb, nb, tol, 0.0, 0.0)
    num, den = _one_way(xb, yb, fb, nb, xa, ya, fa, na, tol, num, den)
    return num / den if den > 0 else 1.0


@numba.njit(nogil=True, cache=True)
def _turn_range(
    i0, i1, U, ok, Z, even, cos_max, n_near, G, Famp, g2, lam, w, k_max, tol, out_P, out_D, out_ang
):  # pragma: no cover - numba
    n_c = U.shape[1]
    n_z = Z.shape[0]
    n_g = G.shape[0]
    xa, ya, fa = np.empty(n_g), np.empty(n_g), np.empty(n_g)
    xb, yb, fb = np.empty(n_g), np.empty(n_g), np.empty(n_g)
    cosz = np.empty(n_z)
    P = np.empty((3, 3))
    for i in range(i0, i1):
        for c in range(n_c):
            out_D[i, c] = np.inf
            out_ang[i, c] = np.nan
            if not ok[i, c]:
                continue
            H = U[i, c]
            # the beam direction in the crystal frame: U^T e_z, the third row of U
            for j in range(n_z):
                cosz[j] = H[2, 0] * Z[j, 0] + H[2, 1] * Z[j, 1] + H[2, 2] * Z[j, 2]
            na = _visible(H, G, Famp, g2, lam, w, k_max, xa, ya, fa)
            for _k in range(n_near):
                # the nearest zone not tried yet, without an even-fold axis
                jb, cb = -1, cos_max
                for j in range(n_z):
                    if not even[j] and abs(cosz[j]) >= cb:
                        jb, cb = j, abs(cosz[j])
                if jb < 0:
                    break
                cosz[jb] = 0.0  # tried
                z0, z1, z2 = Z[jb, 0], Z[jb, 1], Z[jb, 2]
                # P = U R(z, pi), R = 2 z z^T - 1
                for r in range(3):
                    hz = H[r, 0] * z0 + H[r, 1] * z1 + H[r, 2] * z2
                    P[r, 0] = 2.0 * hz * z0 - H[r, 0]
                    P[r, 1] = 2.0 * hz * z1 - H[r, 1]
                    P[r, 2] = 2.0 * hz * z2 - H[r, 2]
                nb = _visible(P, G, Famp, g2, lam, w, k_max, xb, yb, fb)
                D = _pattern_difference(xa, ya, fa, na, xb, yb, fb, nb, tol)
                if D < out_D[i, c]:
                    out_D[i, c] = D
                    out_ang[i, c] = math.degrees(math.acos(min(1.0, cb)))
                    for r in range(3):
                        for t in range(3):
                            out_P[i, c, r, t] = P[r, t]


def turn_partners(
    plan: OrientationPlan, U: np.ndarray, ok: np.ndarray | None = None, **options: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The zone partner of each orientation and how much its pattern differs (module docstring).

    Parameters
    ----------
    plan, U, ok
        As :func:`turn_arguments`.
    **options
        ``n_max``, ``max_angle_deg``, ``n_near``, ``k_max_inv_A``, ``intensity_power``,
        ``tol_inv_A``: as :func:`turn_arguments` (the one signature of both).

    Returns
    -------
    partner : ndarray ``(n, k, 3, 3)``
        ``U R(z, 180 deg)`` for the chosen zone ``z``; NaN where there is none (no zone within
        the angle that is not an even-fold axis).
    difference : ndarray ``(n, k)``
        0..1, the weighted share of the two predicted patterns that differs; ``inf`` where
        there is no partner.
    zone_angle_deg : ndarray ``(n, k)``
        Angle of the beam from the chosen zone axis (NaN where none).
    """
    args, (P, D, ang) = turn_arguments(plan, U, ok, **options)
    _turn_range(0, len(P), *args)
    return P, D, ang


def turn_arguments(
    plan: OrientationPlan,
    U: np.ndarray,
    ok: np.ndarray | None = None,
    *,
    n_max: int = 3,
    max_angle_deg: float = 15.0,
    n_near: int = 3,
    k_max_inv_A: float | None = None,
    intensity_power: float = 0.25,
    tol_inv_A: float = 0.03,
) -> tuple[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The argument tuple of ``_turn_range`` (after its pattern range) and its outputs.

    :func:`turn_partners` runs the kernel on them in one range; the matcher runs it in chunks.

    Parameters
    ----------
    plan : OrientationPlan
        The plan of the phase (its crystal, energy, ``k_max`` and rocking-curve width).
    U : ndarray ``(n, k, 3, 3)``
        Orientations (crystal -> lab), e.g. every match of every pattern.
    ok : ndarray ``(n, k)`` bool, optional
        Which orientations to look at (default: the finite ones).
    n_max : int
        Zone axes ``[uvw]`` with indices up to this (default 3).
    max_angle_deg : float
        Only zones within this angle of the beam direction (default 15).
    n_near : int
        The nearest zones tried per orientation (default 3); the partner is the one whose
        pattern differs least.
    k_max_inv_A : float, optional
        In-plane reach (default the plan's).
    intensity_power : float
        Reflections are weighted ``|F|^(2 q) exp(-(s / w)^2)`` (``w`` the plan's width as a
        Gaussian; default ``q`` 0.25, the matcher's).
    tol_inv_A : float
        Two reflections closer than this are at the same position (default 0.03 1/A).

    Returns
    -------
    args : tuple
        The kernel's arguments after ``(i0, i1)``.
    outputs : tuple
        ``(partner, difference, zone_angle_deg)``, filled in place by the kernel (as
        :func:`turn_partners` returns them).
    """
    U = np.asarray(U, float)
    n, k = U.shape[:2]
    finite = np.all(np.isfinite(U), axis=(2, 3))
    ok = finite if ok is None else np.asarray(ok, bool) & finite
    crystal = plan.crystal
    Z, even = zone_axes(crystal, n_max)
    k_max = float(k_max_inv_A if k_max_inv_A is not None else plan.params["k_max_inv_A"])
    outs = (np.full((n, k, 3, 3), np.nan), np.full((n, k), np.inf), np.full((n, k), np.nan))
    args = (
        np.where(ok[..., None, None], U, 0.0),
        ok,
        Z,
        even,
        math.cos(math.radians(max_angle_deg)),
        int(n_near),
        *_reflections(plan, intensity_power),
        _width_as(plan, "gaussian"),
        k_max,
        float(tol_inv_A),
        *outs,
    )
    return args, outs
