"""How far apart two orientations' kinematic patterns are in the noise of a dose (issue #18).

What no kinematic matcher can do: tell two orientations apart whose patterns are the same
within the counting noise. :func:`thin_film_pattern` draws the kinematic thin-film pattern of an
orientation (every reflection within the detector's in-plane reach, as a fraction of the beam,
``(t lambda gamma |F| / V)^2 S(s t)`` with the sinc^2 or the Gaussian shape), and
:func:`pattern_separation` measures two such patterns against each other at ``N`` electrons over a
diffuse background: spots of each pattern closer than ``merge_px`` are merged (one detected
peak), the two lists are paired by position within ``pair_px``, and each bin (a pair, or a spot
of one pattern with background only in the other) is a Poisson count. The Bhattacharyya distance
of the two count distributions (plus, for paired spots, that of their Gaussian position scatter)
bounds the error of the best possible test between the two orientations, with equal priors
(Hellman-Raviv / Kailath)::

    (1 - sqrt(1 - BC^2)) / 2  <=  P_error  <=  BC / 2,   BC = exp(-B)

so ``1 - P_error_low`` is the most often *any* method - knowing the thickness, the intensity
model and that the answer is one of the two - can be right on such a pair. With
``detection_counts`` the counts below the detection line are censored (a peak list holds only
detected peaks; :func:`detection_line`); without it every count is seen. Noise peaks are ignored
(they only lose information), so either way it is an upper bound. The position term is counted for
every pair, detected or not (again only more information).

:func:`zone_partner` is the orientation turned by 180 deg about a crystal direction ``z``
(``U R(z, 180 deg)``, :mod:`.turn`): for every reflection ``g`` normal to ``z`` (the zero-order
Laue zone) it puts ``g`` on the lab point, excitation error included, where ``U`` puts ``-g``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...data.calibration import electron_wavelength_A

__all__ = [
    "PatternSeparation",
    "ThinFilmPattern",
    "detection_line",
    "pattern_separation",
    "thin_film_pattern",
    "zone_partner",
]

_REST_KEV = 510.99895


def zone_partner(U: np.ndarray, zone: np.ndarray) -> np.ndarray:
    """``U R(z, 180 deg)``: the orientation turned by 180 deg about the crystal direction ``z``.

    Parameters
    ----------
    U : ndarray ``(..., 3, 3)``
        Orientations (crystal -> lab).
    zone : ndarray ``(3,)``
        The axis in crystal Cartesian coordinates (any length; e.g. ``uvw @ crystal.lattice``).

    Returns
    -------
    ndarray ``(..., 3, 3)``
        The partner orientations.
    """
    z = np.asarray(zone, float)
    z = z / np.linalg.norm(z)
    return np.asarray(U, float) @ (2.0 * np.outer(z, z) - np.eye(3))


@dataclass(frozen=True)
class ThinFilmPattern:
    """A kinematic thin-film pattern: one row per reflection within the in-plane reach.

    Attributes
    ----------
    xy : ndarray ``(m, 2)``
        Lab in-plane position ``(g_x, g_y)`` in 1/A.
    fraction : ndarray ``(m,)``
        Fraction of the incident beam in the reflection.
    hkl : ndarray ``(m, 3)``
        Miller indices.
    s : ndarray ``(m,)``
        Excitation error in 1/A.
    """

    xy: np.ndarray
    fraction: np.ndarray
    hkl: np.ndarray
    s: np.ndarray


def thin_film_pattern(
    crystal,
    U: np.ndarray,
    *,
    thickness_A: float,
    energy_kev: float = 300.0,
    k_max_inv_A: float = 1.5,
    shape: str = "sinc2",
) -> ThinFilmPattern:
    """Kinematic pattern of a film of ``crystal`` at orientation ``U`` as fractions of the beam.

    ``I_g = (t lambda gamma |F_g| / V)^2 S(s_g t)`` with ``S`` = sinc^2 (``"sinc2"``, a film of
    uniform thickness) or ``exp(-x^2)`` (``"gaussian"``); every reflection with ``|g| <= 1.05
    k_max`` whose lab in-plane position is within ``k_max`` (no cut on the excitation error).

    Parameters
    ----------
    crystal : Crystal
        The structure (its Debye-Waller factors are used as they are).
    U : ndarray ``(3, 3)``
        Orientation (crystal -> lab).
    thickness_A : float
        Film thickness in Angstrom.
    energy_kev : float
        Beam energy (default 300).
    k_max_inv_A : float
        In-plane reach in 1/A (default 1.5).
    shape : {"sinc2", "gaussian"}
        Rocking-curve shape (default "sinc2").

    Returns
    -------
    ThinFilmPattern

    Raises
    ------
    ValueError
        For an unknown shape.
    """
    if shape not in ("sinc2", "gaussian"):
        raise ValueError(f"shape must be 'sinc2' or 'gaussian', got {shape!r}")
    lam = electron_wavelength_A(energy_kev)
    gamma = 1.0 + energy_kev / _REST_KEV
    refl = crystal.reciprocal_points(k_max_inv_A * 1.05)
    g_lab = refl.g @ np.asarray(U, float).T
    s = -(g_lab[:, 2] + 0.5 * lam * np.sum(refl.g**2, 1))
    strength = (thickness_A * lam * gamma * np.abs(refl.structure_factor) / crystal.volume_A3) ** 2
    prof = np.sinc(thickness_A * s) ** 2 if shape == "sinc2" else np.exp(-((s * thickness_A) ** 2))
    keep = np.hypot(g_lab[:, 0], g_lab[:, 1]) <= k_max_inv_A
    return ThinFilmPattern(g_lab[keep, :2], (strength * prof)[keep], refl.hkl[keep], s[keep])


@dataclass(frozen=True)
class PatternSeparation:
    """Two patterns measured against each other at a dose (:func:`pattern_separation`).

    Attributes
    ----------
    bhattacharyya : float
        Bhattacharyya distance ``B`` of the two data distributions (counts and positions).
    bayes_error_low, bayes_error_high : float
        Bounds on the error of the best test between the two, equal priors.
    n_matched : int
        Bins where both patterns carry at least ``threshold`` of the beam.
    n_unmatched : int
        Bins where one pattern carries at least ``threshold`` and the other less.
    max_shift_px : float
        Largest position difference of the matched bins, in pixels (0 if none).
    max_z : float
        Largest ``|N f_a - N f_b| / sqrt(mean counts)`` over all bins (background included).
    """

    bhattacharyya: float
    bayes_error_low: float
    bayes_error_high: float
    n_matched: int
    n_unmatched: int
    max_shift_px: float
    max_z: float

    @property
    def success_bound(self) -> float:
        """The most often any method can pick the right one of the two: ``1 - bayes_error_low``."""
        return 1.0 - self.bayes_error_low


def _merge(xy: np.ndarray, f: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    # spots closer than radius become one (the brightest first takes every unused spot within
    # radius; intensity-weighted position); spots with no neighbour stay as they are
    from scipy.spatial import cKDTree

    if len(f) < 2:
        return xy.reshape(-1, 2), f
    tree = cKDTree(xy)
    pairs = tree.query_pairs(radius, output_type="ndarray")
    if len(pairs) == 0:
        return xy, f
    involved = np.unique(pairs)
    alone = np.ones(len(f), bool)
    alone[involved] = False
    used = np.zeros(len(f), bool)
    out_xy, out_f = [xy[alone]], [f[alone]]
    for i in involved[np.argsort(-f[involved], kind="stable")]:
        if used[i]:
            continue
        near = np.array(tree.query_ball_point(xy[i], radius * (1 - 1e-12)), int)
        near = near[~used[near]]
        used[near] = True
        w = f[near]
        out_xy.append(((xy[near] * w[:, None]).sum(0) / max(w.sum(), 1e-300))[None])
        out_f.append(w.sum()[None])
    return np.concatenate(out_xy), np.concatenate(out_f)


def detection_line(background: float, sigma: float = 5.0) -> int:
    """The least raw count ``X`` a peak is detected with: ``X - bg >= sigma sqrt(X) + 1``.

    Parameters
    ----------
    background : float
        Mean background counts of the spot.
    sigma : float
        Significance (default 5, the ACOM disk defaults').

    Returns
    -------
    int
    """
    r = 0.5 * (sigma + math.sqrt(sigma * sigma + 4.0 * (background + 1.0)))  # sqrt(X) at equality
    x = max(0, math.floor(r * r) - 2)
    while x - background < sigma * math.sqrt(x) + 1.0:
        x += 1
    return x


def _poisson_distance(ma: np.ndarray, mb: np.ndarray, line: int | None) -> float:
    # sum over bins of -ln BC of Poisson(ma) against Poisson(mb), counts below `line` censored
    full = 0.5 * (np.sqrt(ma) - np.sqrt(mb)) ** 2
    if line is None or line <= 0 or len(ma) == 0:
        return float(np.sum(full))
    from scipy.special import gammaln
    from scipy.stats import poisson

    x = np.arange(line)[None, :]
    la = x * np.log(ma)[:, None] - ma[:, None] - gammaln(x + 1)
    lb = x * np.log(mb)[:, None] - mb[:, None] - gammaln(x + 1)
    low = np.exp(0.5 * (la + lb)).sum(1)  # the uncensored overlap below the line
    seen = np.maximum(np.exp(-full) - low, 0.0)
    hidden = np.sqrt(poisson.cdf(line - 1, ma) * poisson.cdf(line - 1, mb))
    return float(np.sum(-np.log(np.maximum(seen + hidden, 1e-300))))


def pattern_separation(
    a: ThinFilmPattern,
    b: ThinFilmPattern,
    *,
    dose: float,
    background: float,
    k_pixel_size: float,
    merge_px: float = 1.0,
    pair_px: float = 1.5,
    threshold: float = 5e-4,
    position_noise_px: tuple[float, float] = (0.05, 1.5),
    detection_counts: int | None = None,
) -> PatternSeparation:
    """How well the patterns ``a`` and ``b`` can be told apart at ``dose`` electrons (module docstring).

    Parameters
    ----------
    a, b : ThinFilmPattern
        The two predicted patterns (:func:`thin_film_pattern`).
    dose : float
        Electrons per pattern ``N``.
    background : float
        Mean background counts per spot (e.g. ``1e-4 N``).
    k_pixel_size : float
        Detector pixel in 1/A.
    merge_px : float
        Spots of one pattern closer than this (pixels) are one peak (default 1).
    pair_px : float
        Spots of the two patterns closer than this (pixels) are the same bin (default 1.5).
    threshold : float
        Beam fraction for the matched / unmatched counts (default 5e-4).
    position_noise_px : (float, float)
        Position scatter per axis ``c0 + c1 / sqrt(counts)`` pixels (default 0.05 + 1.5 /
        sqrt(counts)).
    detection_counts : int, optional
        A peak list's view: a bin whose raw count (background included) is below this is not
        detected, and all that is seen of it is that (the count distribution censored below the
        line; default None: every count is seen). E.g. the ACOM disk defaults' 5-sigma test
        ``X - bg >= 5 sqrt(X) + 1`` (:func:`detection_line`).

    Returns
    -------
    PatternSeparation
    """
    from scipy.spatial import cKDTree

    px = float(k_pixel_size)
    xa, fa = _merge(a.xy, a.fraction, merge_px * px)
    xb, fb = _merge(b.xy, b.fraction, merge_px * px)
    ia = np.full(len(fa), -1)
    ib = np.full(len(fb), -1)
    if len(fa) and len(fb):
        d, j = cKDTree(xb).query(xa, distance_upper_bound=pair_px * px)
        for i in np.argsort(d):  # the closest pairs first, one partner each
            if np.isfinite(d[i]) and ib[j[i]] < 0:
                ia[i], ib[j[i]] = j[i], i
    paired = ia >= 0
    # bins: pairs, then a's own, then b's own
    fa_bin = np.concatenate([fa[paired], fa[~paired], np.zeros(int(np.sum(ib < 0)))])
    fb_bin = np.concatenate([fb[ia[paired]], np.zeros(int(np.sum(~paired))), fb[ib < 0]])
    ma, mb = dose * fa_bin + background, dose * fb_bin + background
    B = _poisson_distance(ma, mb, detection_counts)
    shift = np.hypot(*(xa[paired] - xb[ia[paired]]).T) / px if paired.any() else np.zeros(0)
    if paired.any():
        c = np.maximum(0.5 * dose * (fa[paired] + fb[ia[paired]]), 1.0)
        sig = position_noise_px[0] + position_noise_px[1] / np.sqrt(c)
        B += float(np.sum(shift**2 / (8.0 * sig**2)))  # two 2-D Gaussians of the same width
    bc = math.exp(-B)
    both = (fa_bin >= threshold) & (fb_bin >= threshold)
    one = (fa_bin >= threshold) != (fb_bin >= threshold)
    both_paired = both[: int(paired.sum())]
    z = np.abs(ma - mb) / np.sqrt(0.5 * (ma + mb))
    return PatternSeparation(
        bhattacharyya=B,
        bayes_error_low=0.5 * (1.0 - math.sqrt(max(0.0, 1.0 - bc * bc))),
        bayes_error_high=0.5 * bc,
        n_matched=int(both.sum()),
        n_unmatched=int(one.sum()),
        max_shift_px=float(shift[both_paired].max()) if both_paired.any() else 0.0,
        max_z=float(z.max()) if len(z) else 0.0,
    )
