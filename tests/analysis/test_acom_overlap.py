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
    assert res.params["pair_score"] == "joint"
    # measured with seed 31: both within 2 deg 0.83 (the joint pair, session 9; 0.85 with the
    # explained share of session 8, 0.83 with pair_candidates=1) against 0.32 within 5 deg for the
    # alternatives of one grain
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


def test_joint_pair_score_is_one_for_the_planted_pair():
    """Known answer: peaks at every reflection of two grains the joint score counts, with the
    intensities of its own model times a weight per grain, give the planted pair the cosine 1
    (each grain's scale fitted), the shares ``c^2`` in proportion to each grain's fitted
    amplitudes, and every pair with a decoy (random, or a grain turned 25 deg about the beam)
    less."""
    from napari_4dstem.analysis.acom import matching
    from napari_4dstem.analysis.acom.plan import rotation_z
    from napari_4dstem.data.calibration import electron_wavelength_A
    from napari_4dstem.engine.jobs import run_job

    au = bundled_crystal("Au")
    plan = build_orientation_plan(au, energy_kev=300, k_max_inv_A=KMAX, step_deg=3.0, thickness_A=THICK)
    q = 0.25  # intensity power
    w = matching._PAIR_WIDTH * plan.params["excitation_width_inv_A"]  # a Lorentzian plan
    refl = au.reciprocal_points(KMAX * 1.05)
    lam = electron_wavelength_A(300.0)
    rng = np.random.default_rng(8)
    n = 12
    U = random_rotations(4 * n, rng).reshape(n, 4, 3, 3)  # grain 1, grain 2, two decoys
    pool = np.concatenate([U, (rotation_z(np.radians(25.0)) @ U[:, 0])[:, None]], axis=1)
    weights = rng.uniform(0.5, 0.7, n)
    xs, ys, amps, off, expect = [], [], [], [0], []
    for i in range(n):
        sums = []
        for k, wt in ((0, weights[i]), (1, 1.0 - weights[i])):
            v = refl.g @ U[i, k].T
            s = -(v[:, 2] + 0.5 * lam * np.sum(refl.g**2, axis=1))
            near = (np.abs(s) < 30.0 * w) & (np.hypot(v[:, 0], v[:, 1]) <= KMAX)
            model = np.abs(refl.structure_factor[near]) ** 2 / (1.0 + (s[near] / w) ** 2)  # intensity
            xs.append(v[near, 0])
            ys.append(v[near, 1])
            amps.append((wt * model) ** q)
            sums.append(wt ** (2 * q) * np.sum(model ** (2 * q)))
        off.append(off[-1] + sum(len(a) for a in amps[-2:]))
        expect.append(sums[0] / sum(sums))
    args = (np.array(off), np.concatenate(xs), np.concatenate(ys), np.concatenate(amps))
    kw = dict(tol_pos=1e-4, k_max=KMAX, intensity_power=q, separation=[7.5], n_threads=1, chunk=4, progress=None)
    a, b, score, ca, cb = run_job(
        matching._joint_pairs_job([plan], pool, np.ones((n, 5), bool), np.zeros((n, 5), np.int64), *args, **kw)
    )
    assert np.all(a == 0) and np.all(b == 1)
    np.testing.assert_allclose(score, 1.0, rtol=1e-9)
    np.testing.assert_allclose(ca**2 / (ca**2 + cb**2), expect, rtol=1e-9)
    # without grain 2, the best pair holds grain 1 and a decoy, and scores less
    ok = np.ones((n, 5), bool)
    ok[:, 1] = False
    a2, b2, score2, _, _ = run_job(matching._joint_pairs_job([plan], pool, ok, np.zeros((n, 5), np.int64), *args, **kw))
    assert np.all(a2 == 0) and np.all(b2 > 1)
    assert np.all(score2 < 0.99)


def test_wide_ranking_score_is_one_for_peaks_of_its_own_model():
    """Known answer for ``rank_width``: peaks at every reflection the wide score counts, with its
    own model's intensities, give the true orientation the cosine 1 and a decoy (the same turned
    25 deg about the beam) less; with ``rank_width=12`` the matcher still finds own-model grains."""
    from napari_4dstem.analysis.acom import matching
    from napari_4dstem.analysis.acom.plan import rotation_z
    from napari_4dstem.data.calibration import electron_wavelength_A
    from napari_4dstem.engine.jobs import run_job

    au = bundled_crystal("Au")
    plan = build_orientation_plan(au, energy_kev=300, k_max_inv_A=KMAX, step_deg=3.0, thickness_A=THICK)
    w = 12.0 * plan.params["excitation_width_inv_A"]
    refl = au.reciprocal_points(KMAX * 1.05)
    lam = electron_wavelength_A(300.0)
    n = 8
    U = random_rotations(n, np.random.default_rng(9))
    xs, ys, amps, off = [], [], [], [0]
    for i in range(n):
        v = refl.g @ U[i].T
        s = -(v[:, 2] + 0.5 * lam * np.sum(refl.g**2, axis=1))
        near = (np.abs(s) < 30.0 * w) & (np.hypot(v[:, 0], v[:, 1]) <= KMAX)
        xs.append(v[near, 0])
        ys.append(v[near, 1])
        amps.append((np.abs(refl.structure_factor[near]) ** 2 / (1.0 + (s[near] / w) ** 2)) ** 0.25)
        off.append(off[-1] + int(near.sum()))
    cands = np.stack([U, rotation_z(np.radians(25.0)) @ U], axis=1)
    job = matching._wide_scores_job(
        plan,
        np.array(off),
        np.concatenate(xs),
        np.concatenate(ys),
        np.concatenate(amps),
        cands,
        np.ones((n, 2), bool),
        width=12.0,
        intensity_power=0.25,
        k_max=KMAX,
        tol_pos=1e-4,
        n_threads=1,
        chunk=4,
        progress=None,
    )
    score = run_job(job)
    np.testing.assert_allclose(score[:, 0], 1.0, rtol=1e-9)
    assert np.all(score[:, 1] < 0.9)
    # end to end on own-model peaks (5 nm, 0.1 px noise): the wider ranking keeps them right
    rng = np.random.default_rng(10)
    Ut = random_rotations(30, rng)
    pk = kinematic_bragg_peaks(au, Ut, k_max_inv_A=KMAX, thickness_A=THICK, position_noise_px=0.1, rng=rng)
    res = match_orientations(pk, plan, min_peaks=3, rank_width=12.0)
    assert res.params["rank_width"] == 12.0
    mis = misorientation_deg(res.orientation[0, :, 0], Ut, au.point_group)
    assert np.mean(mis < 2.0) >= 0.8  # measured 26 of 30 (27 of 30 with rank_width=0)


def test_joint_pair_score_matches_a_pair_by_pair_reference():
    """The joint score (which finds each peak's nearest reflection once per candidate) against a
    plain pair-by-pair evaluation: every peak to the nearest predicted reflection of either grain
    within the tolerance (the first grain on a tie), each grain's cosine with every peak in the
    norm; peaks near reflections of several candidates and stray peaks included."""
    from napari_4dstem.analysis.acom import matching
    from napari_4dstem.data.calibration import electron_wavelength_A
    from napari_4dstem.engine.jobs import run_job

    au = bundled_crystal("Au")
    plan = build_orientation_plan(au, energy_kev=300, k_max_inv_A=KMAX, step_deg=3.0, thickness_A=THICK)
    q, tol = 0.25, 0.03
    w = matching._PAIR_WIDTH * plan.params["excitation_width_inv_A"]  # a Lorentzian plan
    refl = au.reciprocal_points(KMAX * 1.05)
    F = np.abs(refl.structure_factor) ** (2 * q)
    lam = electron_wavelength_A(300.0)
    rng = np.random.default_rng(21)
    n, n_p = 6, 5
    pool = random_rotations(n * n_p, rng).reshape(n, n_p, 3, 3)

    def predicted(U):
        v = refl.g @ U.T
        s = -(v[:, 2] + 0.5 * lam * np.sum(refl.g**2, axis=1))
        near = (np.abs(s) < 30.0 * w) & (np.hypot(v[:, 0], v[:, 1]) <= KMAX)
        return v[near, :2], F[near] * (1.0 + (s[near] / w) ** 2) ** (-q)

    xs, ys, amps, off = [], [], [], [0]
    for i in range(n):  # peaks near the strongest reflections of the first three candidates, and strays
        pts = []
        for k in range(3):
            v, m = predicted(pool[i, k])
            pts.append(v[np.argsort(-m)[:8]] + rng.normal(0, 0.01, (min(8, len(m)), 2)))
        pts.append(rng.uniform(-KMAX, KMAX, (4, 2)))
        pts = np.concatenate(pts)
        xs.append(pts[:, 0])
        ys.append(pts[:, 1])
        amps.append(rng.uniform(0.2, 1.0, len(pts)))
        off.append(off[-1] + len(pts))
    args = (np.array(off), np.concatenate(xs), np.concatenate(ys), np.concatenate(amps))
    kw = dict(tol_pos=tol, k_max=KMAX, intensity_power=q, separation=[7.5], n_threads=1, chunk=4, progress=None)
    ok = np.ones((n, n_p), bool)
    a, b, score, ca, cb = run_job(
        matching._joint_pairs_job([plan], pool, ok, np.zeros((n, n_p), np.int64), *args, **kw)
    )
    for i in range(n):
        px, py, pa = xs[i], ys[i], amps[i]
        pred = [predicted(pool[i, c]) for c in range(n_p)]
        best = (-1.0, -1, -1, 0.0, 0.0)
        for c1 in range(n_p):
            for c2 in range(c1 + 1, n_p):
                if misorientation_deg(pool[i, c1], pool[i, c2], au.point_group) <= 7.5:
                    continue
                d = [
                    ((px[:, None] - v[None, :, 0]) ** 2 + (py[:, None] - v[None, :, 1]) ** 2) / tol**2
                    for v, _ in (pred[c1], pred[c2])
                ]
                obs = [np.zeros(len(pred[c1][1])), np.zeros(len(pred[c2][1]))]
                for p in range(len(px)):
                    j1, j2 = np.argmin(d[0][p]), np.argmin(d[1][p])
                    d1, d2 = d[0][p, j1], d[1][p, j2]
                    if d2 < min(d1, 1.0):
                        obs[1][j2] += pa[p] ** 2
                    elif d1 < 1.0:
                        obs[0][j1] += pa[p] ** 2
                cs = [
                    np.sum(np.sqrt(o) * m) / np.sqrt(np.sum(m**2) * np.sum(pa**2))
                    for o, (_, m) in zip(obs, (pred[c1], pred[c2]))
                ]
                sc = np.hypot(*cs)
                if sc > best[0]:
                    best = (sc, c1, c2, cs[0], cs[1])
        assert (a[i], b[i]) == best[1:3]
        np.testing.assert_allclose([score[i], ca[i], cb[i]], [best[0], best[3], best[4]], rtol=1e-9)


def test_two_matches_keep_the_single_grain_answer_on_single_grains():
    """Asking for two matches must not change the first match of a pattern with one grain: the
    joint pair replaces it only where the second grain explains a clear share of the pattern
    (``pair_gain``). Before session 11 the pair choice moved it by > 5 deg in 37-56 % of
    single-grain thin-film patterns (draw 18)."""
    au = bundled_crystal("Au")
    plan = build_orientation_plan(au, energy_kev=300, k_max_inv_A=KMAX, step_deg=3.0, thickness_A=THICK)
    rng = np.random.default_rng(52)
    U = random_rotations(40, rng)
    pk = kinematic_bragg_peaks(au, U, k_max_inv_A=KMAX, thickness_A=THICK, position_noise_px=0.1, rng=rng)
    one = match_orientations(pk, plan, min_peaks=3)
    two = match_orientations(pk, plan, min_peaks=3, n_matches=2)
    assert two.params["pair_gain"] == 0.02
    a, b = one.orientation[0, :, 0], two.orientation[0, :, 0]
    same = np.all((a == b) | (np.isnan(a) & np.isnan(b)), axis=(1, 2))
    # measured 40 of 40 identical (bit for bit); with pair_gain=-inf (the pair everywhere, as before
    # session 11) 27 of 40
    assert same.mean() >= 0.95
    np.testing.assert_array_equal(one.reliability, two.reliability)
    always = match_orientations(pk, plan, min_peaks=3, n_matches=2, pair_gain=-np.inf)
    moved = ~np.all(np.nan_to_num(always.orientation[0, :, 0]) == np.nan_to_num(a), axis=(1, 2))
    assert moved.mean() > 1.0 - same.mean()


def test_cli_writes_every_match_of_planted_overlaps(tmp_path):
    """``acom --n-matches 3`` on a peaks file writes three matches per pattern; the planted pair
    of grains is among the first two."""
    from napari_4dstem.cli import main
    from napari_4dstem.io import emd

    au = bundled_crystal("Au")
    U1, U2, pk = _two_grains(au, 16, 33)
    recs = [pk.at(0, i) for i in range(16)]  # a peaks file records the detector it came from
    pk = BraggPeaks.from_lists(recs, (1, 16), calibration=pk.calibration, params={"detector_shape": [256, 256]})
    src = emd.write(tmp_path / "peaks.h5", pk)
    out = tmp_path / "acom.h5"
    args = ["-q", "acom", str(src), str(out), "--crystal", "Au", "--step", "3", "--thickness-nm", "5"]
    rc = main([*args, "--min-peaks", "3", "--n-matches", "3", "--k-max", str(KMAX)])
    assert rc == 0
    res = emd.read(out)
    assert res["acom_matches_orientation"].data.shape == (1, 16, 27)
    ph = res["acom_matches_phase"].data
    assert ph.shape == (1, 16, 3) and np.all(ph[..., :2] >= 0)
    U = res["acom_matches_orientation"].data.reshape(16, 3, 3, 3)
    g = au.point_group
    m = lambda k, t: np.nan_to_num(misorientation_deg(U[:, k], t, g), nan=180.0)  # noqa: E731
    both = ((m(0, U1) < 5) & (m(1, U2) < 5)) | ((m(0, U2) < 5) & (m(1, U1) < 5))
    assert both.mean() >= 0.6  # measured 14 of 16 (seed 33; the API gives the same)
