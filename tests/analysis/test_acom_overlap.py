"""Overlapping grains (#18): planted two-grain peak lists, both grains among the top 2."""

from __future__ import annotations

import numpy as np

from napari_4dstem.analysis.acom.matching import kinematic_bragg_peaks, match_orientations
from napari_4dstem.analysis.acom.plan import build_orientation_plan
from napari_4dstem.analysis.crystal.structure import bundled_crystal
from napari_4dstem.analysis.crystal.symmetry import misorientation_deg
from napari_4dstem.data.results import BraggPeaks
from napari_4dstem.simulation.samples import random_rotations

KMAX, THICK = 1.5, 50.0


def _two_grains(crystal, n, seed):
    """Peak lists of two grains > 15 deg apart, grain 1 weighted w in 0.5-0.7, 2 by 1 - w."""
    rng = np.random.default_rng(seed)
    U1 = random_rotations(n, rng)
    U2 = random_rotations(n, rng)
    bad = misorientation_deg(U1, U2, crystal.point_group) <= 15
    while bad.any():
        U2[bad] = random_rotations(int(bad.sum()), rng)
        bad = misorientation_deg(U1, U2, crystal.point_group) <= 15
    w = rng.uniform(0.5, 0.7, n)
    kw = dict(k_max_inv_A=KMAX, thickness_A=THICK, position_noise_px=0.1, rng=rng)
    a, b = kinematic_bragg_peaks(crystal, U1, **kw), kinematic_bragg_peaks(crystal, U2, **kw)
    recs = []
    for i in range(n):
        pa, pb = a.at(0, i), b.at(0, i)
        recs.append(
            {
                "qy": np.concatenate([pa["qy"], pb["qy"]]),
                "qx": np.concatenate([pa["qx"], pb["qx"]]),
                "intensity": np.concatenate([w[i] * pa["intensity"], (1 - w[i]) * pb["intensity"]]),
            }
        )
    return U1, U2, BraggPeaks.from_lists(recs, (1, n), calibration=a.calibration)


def _both_found(res, U1, U2, g, tol_deg):
    U = res.orientation[0]
    m = lambda k, t: np.nan_to_num(misorientation_deg(U[:, k], t, g), nan=180.0)  # noqa: E731
    return ((m(0, U1) < tol_deg) & (m(1, U2) < tol_deg)) | ((m(0, U2) < tol_deg) & (m(1, U1) < tol_deg))


def test_both_overlapping_grains_among_the_top_two():
    au = bundled_crystal("Au")
    plan = build_orientation_plan(au, energy_kev=300, k_max_inv_A=KMAX, step_deg=3.0, thickness_A=THICK)
    U1, U2, pk = _two_grains(au, 60, 31)
    g = au.point_group
    res = match_orientations(pk, plan, min_peaks=3, n_matches=2)
    alt = match_orientations(pk, plan, min_peaks=3, n_matches=2, overlap="candidates")
    assert res.params["overlap"] == "residual" and res.params["pair_candidates"] == 3
    # measured with seed 31: both within 2 deg 0.85 (residual; 0.83 with pair_candidates=1)
    # against 0.32 within 5 deg for the alternatives of one grain
    assert _both_found(res, U1, U2, g, 2.0).mean() >= 0.8
    assert _both_found(alt, U1, U2, g, 5.0).mean() < _both_found(res, U1, U2, g, 5.0).mean() - 0.4


def test_both_overlapping_hcp_grains_within_two_degrees():
    ti = bundled_crystal("Ti-hcp")
    plan = build_orientation_plan(ti, energy_kev=300, k_max_inv_A=KMAX, step_deg=3.0, thickness_A=THICK)
    U1, U2, pk = _two_grains(ti, 60, 31)
    res = match_orientations(pk, plan, min_peaks=3, n_matches=3)
    # measured 0.88 (seed 31); a third match, where asked, is never one of the first two grains
    assert _both_found(res, U1, U2, ti.point_group, 2.0).mean() >= 0.8
    U, ok = res.orientation[0], res.phase[0] >= 0
    for k in (0, 1):
        both = ok[:, 2] & ok[:, k]
        assert np.all(misorientation_deg(U[both, 2], U[both, k], ti.point_group) > 5.0)


def test_alternative_names_the_180_degree_turn_about_the_beam():
    """A very thin crystal (2 nm: excitation width 0.05 1/A, far wider than the Ewald sphere's
    curvature of ~0.01 1/A at 1 1/A) gives nearly centrosymmetric patterns: the orientation
    turned by 180 deg about the beam explains the same peaks and must be named as such."""
    from napari_4dstem.analysis.acom.plan import rotation_z

    au = bundled_crystal("Au")
    plan = build_orientation_plan(au, energy_kev=300, k_max_inv_A=KMAX, step_deg=3.0, thickness_A=20.0)
    rng = np.random.default_rng(41)
    U = random_rotations(40, rng)
    pk = kinematic_bragg_peaks(au, U, k_max_inv_A=KMAX, thickness_A=20.0, position_noise_px=0.1, rng=rng)
    res = match_orientations(pk, plan, min_peaks=3)
    kind, alt = res.alternative_kind[0], res.alternative[0]
    assert set(np.unique(kind)) <= {0, 1, 2}
    flip = kind == 1
    assert flip.mean() > 0.8  # measured: 40 of 40 (at 10 nm: 29 of 40, 10 others)
    best = res.orientation[0, :, 0]
    d = misorientation_deg(alt[flip], rotation_z(np.pi) @ best[flip], au.point_group)
    assert np.all(d < 5.0)
    assert np.all(np.isnan(alt[kind == 0]))
