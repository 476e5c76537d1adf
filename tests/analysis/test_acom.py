"""ACOM: plan memory/persistence, planted orientations recovered, masks, phases, exports."""

from __future__ import annotations

import importlib.util
import re
import warnings

import numpy as np
import pytest

from napari_4dstem.analysis.acom.matching import kinematic_bragg_peaks, match_orientations
from napari_4dstem.analysis.acom.plan import (
    PlanTooLargeError,
    build_orientation_plan,
    estimate_plan_memory,
    load_orientation_plan,
    zone_axis_orientation,
)
from napari_4dstem.analysis.crystal.structure import bundled_crystal
from napari_4dstem.analysis.crystal.symmetry import misorientation_deg
from napari_4dstem.data.results import BraggPeaks
from napari_4dstem.simulation.samples import random_rotations, small_rotation, zone_axis_rotation

KMAX, THICK = 1.5, 50.0


@pytest.fixture(scope="module")
def au_plan():
    return build_orientation_plan(
        bundled_crystal("Au"), energy_kev=300, k_max_inv_A=KMAX, step_deg=2.0, thickness_A=THICK
    )


def test_plan_refuses_when_too_large():
    au = bundled_crystal("Au")
    with pytest.raises(PlanTooLargeError, match=r"coarser step \(about [0-9.]+ deg\)") as e:
        build_orientation_plan(au, energy_kev=300, k_max_inv_A=1.5, step_deg=0.5, max_memory_bytes=2**20)
    # the step it suggests does fit
    step = float(re.search(r"about ([0-9.]+) deg", str(e.value)).group(1))
    est = estimate_plan_memory(au, step_deg=step, k_max_inv_A=1.5, energy_kev=300)
    assert 0.5 < step and est["total_bytes"] <= 2**20


def test_plan_save_load(au_plan, tmp_path):
    path = au_plan.save(tmp_path / "plan.npz")
    back = load_orientation_plan(path)
    assert back.n_zones == au_plan.n_zones and back.n_inplane == 180
    assert np.array_equal(back.spot_weight, au_plan.spot_weight)
    assert back.crystal.point_group.name == "m-3m"
    assert back.params == au_plan.params
    # the crystal comes back whole: same structure factors, and the reloaded plan matches alike
    hkl = [[1, 1, 1], [2, 0, 0], [3, 1, 1]]
    assert np.allclose(back.crystal.structure_factors(hkl), au_plan.crystal.structure_factors(hkl), rtol=1e-12)
    _, pk = _random_peaks(au_plan.crystal, 6, 24)
    a, b = (match_orientations(pk, p, min_peaks=3) for p in (au_plan, back))
    assert np.array_equal(a.orientation, b.orientation, equal_nan=True)
    (tmp_path / "junk.npz").write_bytes(b"nope")
    with pytest.raises(Exception, match="junk.npz"):
        load_orientation_plan(tmp_path / "junk.npz")


def test_near_zone_axis_orientations_recovered(au_plan):
    au = au_plan.crystal
    rng = np.random.default_rng(11)
    axes = [(0, 0, 1), (0, 1, 1), (1, 1, 2), (0, 1, 2), (1, 2, 3), (0, 1, 3)]
    U = np.array([zone_axis_rotation(a, rng.uniform(0, 360), small_rotation(1.5, rng)) for a in axes * 8])
    pk = kinematic_bragg_peaks(au, U, k_max_inv_A=KMAX, thickness_A=THICK, position_noise_px=0.1, rng=rng)
    res = match_orientations(pk, au_plan, min_peaks=3)
    mis = misorientation_deg(res.orientation[0, :, 0], U, au.point_group).reshape(8, 6)
    rel = res.reliability[0].reshape(8, 6)
    # [001], [011]: unique answers, refined far below the 2 deg plan step
    unique = mis[:, [0, 1]]
    assert np.all(unique < 1.0) and np.median(unique) < 0.3
    # every wrong answer is a kinematically exact ambiguity of a zero-layer pattern (Sigma-3 twin
    # in <112>, ~37-38 deg in <012>, <013>, <123>) and is flagged by a reliability of ~0
    assert np.all(rel[mis > 2] < 0.01)
    assert np.all(mis[rel >= 0.01] < 2.0)


def test_random_orientations_accuracy(au_plan):
    au = au_plan.crystal
    rng = np.random.default_rng(5)
    U = random_rotations(200, rng)
    pk = kinematic_bragg_peaks(au, U, k_max_inv_A=KMAX, thickness_A=THICK, position_noise_px=0.1, rng=rng)
    coarse = match_orientations(pk, au_plan, min_peaks=3, refine=False)
    res = match_orientations(pk, au_plan, min_peaks=3)
    mis = np.nan_to_num(misorientation_deg(res.orientation[0, :, 0], U, au.point_group), nan=180.0)
    mis0 = np.nan_to_num(misorientation_deg(coarse.orientation[0, :, 0], U, au.point_group), nan=180.0)
    assert np.median(mis) < 0.3 < np.median(mis0)  # refinement is what brings it under 0.3 deg
    # kinematic zero-layer patterns can be truly ambiguous (e.g. Sigma-3 twins in <112>); the
    # reliability index flags them, and the reliable ones are right
    assert np.mean(mis < 2) > 0.8
    reliable = res.reliability[0] >= 0.01
    assert reliable.mean() > 0.5 and np.mean(mis[reliable] < 2) >= 0.98


def test_too_few_peaks_masked(au_plan):
    au = au_plan.crystal
    U = np.array([zone_axis_orientation([0, 0, 1]), zone_axis_orientation([0, 1, 1])])
    pk = kinematic_bragg_peaks(au, U, k_max_inv_A=KMAX, thickness_A=THICK)
    # keep only two peaks of the second pattern, and none at all for a third (empty) one
    rec = [
        pk.at(0, 0),
        {k: v[:2] for k, v in pk.at(0, 1).items()},
        {k: v[:0] for k, v in pk.at(0, 0).items()},
    ]
    few = BraggPeaks.from_lists(rec, (1, 3), calibration=pk.calibration)
    res = match_orientations(few, au_plan, min_peaks=5)
    assert res.valid.tolist() == [[True, False, False]]
    assert np.all(np.isnan(res.orientation[0, 1:])) and np.all(res.phase[0, 1:] == -1)
    assert np.all(res.correlation[0, 1:] == 0) and res.n_peaks[0, 2] == 0
    assert misorientation_deg(res.orientation[0, 0, 0], U[0], au.point_group) < 0.5


def test_phase_map_and_top_n():
    au, cu = bundled_crystal("Au"), bundled_crystal("Cu")
    plans = [
        build_orientation_plan(c, energy_kev=300, k_max_inv_A=KMAX, step_deg=3.0, thickness_A=THICK) for c in (au, cu)
    ]
    rng = np.random.default_rng(8)
    axes = [(0, 0, 1), (0, 1, 1), (0, 1, 2), (1, 2, 3)]
    U = np.array([zone_axis_rotation(a, rng.uniform(0, 360), small_rotation(1.0, rng)) for a in axes * 2])
    pk_au = kinematic_bragg_peaks(au, U, k_max_inv_A=KMAX, thickness_A=THICK)
    pk_cu = kinematic_bragg_peaks(cu, U, k_max_inv_A=KMAX, thickness_A=THICK)
    rec = [pk_au.at(0, i) for i in range(8)] + [pk_cu.at(0, i) for i in range(8)]
    pk = BraggPeaks.from_lists(rec, (2, 8), calibration=pk_au.calibration)
    res = match_orientations(pk, plans, min_peaks=3, n_matches=2)
    assert res.orientation.shape == (2, 8, 2, 3, 3)
    assert np.all(res.phase[0, :, 0] == 0) and np.all(res.phase[1, :, 0] == 1)
    assert np.all(res.correlation[..., 0] >= res.correlation[..., 1])
    assert res.phase_reliability.min() > 0


def test_outputs_ang_maps_grains(au_plan, tmp_path):
    au = au_plan.crystal
    rng = np.random.default_rng(4)
    A = zone_axis_rotation((0, 1, 2), 17.0)
    B = zone_axis_rotation((1, 2, 3), 61.0)
    U = np.array([A if x < 3 else B for y in range(3) for x in range(5)])
    pk = kinematic_bragg_peaks(au, U, scan_shape=(3, 5), k_max_inv_A=KMAX, thickness_A=THICK, rng=rng)
    res = match_orientations(pk, au_plan, min_peaks=3)
    grains = res.grain_map(threshold_deg=5)
    assert len(np.unique(grains)) == 2 and np.all(grains[:, :3] == grains[0, 0])
    mis = res.misorientation_to_neighbours()
    assert np.nanmax(mis[:, :2, 0]) < 1 and np.all(mis[:, 2, 0] > 5) and np.isnan(mis[:, 4, 0]).all()
    ipf = res.ipf_rgb("z")
    assert ipf.shape == (3, 5, 3) and np.allclose(ipf[:, :3], ipf[0, 0], atol=0.02)
    path = res.write_ang(tmp_path / "map.ang")
    lines = path.read_text().splitlines()
    assert any(line.startswith("# Symmetry") and line.split()[-1] == "43" for line in lines)
    data = np.loadtxt(path, comments="#")
    assert data.shape == (15, 10)
    assert np.allclose(np.degrees(data[:, :3]), res.euler_deg().reshape(-1, 3), atol=1e-3)
    maps = res.to_maps()
    from napari_4dstem.io import emd

    emd.write(tmp_path / "acom.h5", *maps)
    back = emd.read(tmp_path / "acom.h5")
    assert np.allclose(back["euler_bunge"].data, res.euler_deg(), equal_nan=True)


def _random_peaks(crystal, n, seed):
    rng = np.random.default_rng(seed)
    U = random_rotations(n, rng)
    pk = kinematic_bragg_peaks(crystal, U, k_max_inv_A=KMAX, thickness_A=THICK, position_noise_px=0.1, rng=rng)
    return U, pk


def test_top_n_matches_are_distinct_after_refinement(au_plan):
    group = au_plan.crystal.point_group
    _, pk = _random_peaks(au_plan.crystal, 60, 21)
    for overlap in ("candidates", "residual"):
        res = match_orientations(pk, au_plan, min_peaks=3, n_matches=3, separation_deg=5.0, overlap=overlap)
        orient, ok = res.orientation[0], res.phase[0] >= 0
        if overlap == "candidates":
            assert ok[:, 1].mean() > 0.5  # there are second matches to compare
        else:  # one grain per pattern: its peaks leave (almost) nothing to match
            assert ok[:, 1].mean() < 0.2
        for a, b in ((0, 1), (0, 2), (1, 2)):
            both = ok[:, a] & ok[:, b]
            assert np.all(misorientation_deg(orient[both, a], orient[both, b], group) > 5.0)
        if overlap == "candidates":  # alternatives for the same peaks, best first
            assert np.all(np.diff(res.correlation[0], axis=1)[ok[:, 1:]] <= 0)


def test_torch_scoring_gives_the_numba_top_matches(au_plan):
    pytest.importorskip("torch")
    from napari_4dstem.analysis.acom._torch import score_batches_torch
    from napari_4dstem.analysis.acom.matching import peaks_to_lab

    group = au_plan.crystal.point_group
    _, pk = _random_peaks(au_plan.crystal, 16, 22)
    kw = dict(min_peaks=3, n_matches=3, refine=False)
    a = match_orientations(pk, au_plan, device="numba", **kw)
    b = match_orientations(pk, au_plan, device="cpu", **kw)
    assert a.params["scoring_device"] == "numba" and b.params["scoring_device"] == "cpu"
    ok = a.phase[0] >= 0
    assert np.array_equal(ok, b.phase[0] >= 0) and ok[:, 0].all()
    mis = misorientation_deg(a.orientation[0][ok], b.orientation[0][ok], group)
    assert np.all(mis < 1e-3)
    assert np.allclose(a.correlation, b.correlation, rtol=1e-5, atol=1e-6)
    # batches cut small give the same scores as one batch
    off, gx, gy, amp = peaks_to_lab(pk, k_max_inv_A=KMAX, min_radius_inv_A=0.2)
    r, th = np.hypot(gx, gy), np.arctan2(gy, gx)
    runs = []
    for m in (2**20, 2**30):
        out = (np.full((16, 8), -1), np.zeros((16, 8)), np.zeros((16, 8)))
        kw = dict(tol_r=0.03, tol_pos=0.03, device="cpu", max_elements=m)
        runs.append((len(list(score_batches_torch(off, r, th, amp, au_plan, *out, **kw))), out))
    assert runs[0][0] > 1 and runs[1][0] == 1
    for x, y in zip(runs[0][1], runs[1][1], strict=True):
        assert np.allclose(x, y, rtol=1e-5, atol=1e-6)


def test_cuda_without_cuda_falls_back_to_numba(au_plan):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    _, pk = _random_peaks(au_plan.crystal, 4, 23)
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        res = match_orientations(pk, au_plan, min_peaks=3, device="cuda")
    assert res.params["scoring_device"] == "numba"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert match_orientations(pk, au_plan, min_peaks=3).params["scoring_device"] == "numba"


def test_intensity_power(au_plan):
    from napari_4dstem.analysis.acom.matching import _powered

    au = au_plan.crystal
    U, pk = _random_peaks(au, 60, 23)
    # template weights (|F|^2 S)^q, renormalised per zone
    p = _powered(au_plan, 0.25)
    assert np.allclose(p.spot_weight, np.sqrt(au_plan.spot_weight), rtol=1e-6)
    z0 = slice(au_plan.template_offsets[0], au_plan.template_offsets[len(au_plan.shell_radii)])
    assert np.isclose(p.template_norm[0], np.sqrt(np.sum(au_plan.spot_weight[z0].astype(float))))
    # compressed intensities still find kinematic orientations, less precisely (0.14-0.15 deg
    # median on own-model sets of 200-512 patterns, against 0.04 deg at 0.5)
    q25 = match_orientations(pk, au_plan, min_peaks=3, intensity_power=0.25)
    mis25 = np.nan_to_num(misorientation_deg(q25.orientation[0, :, 0], U, au.point_group), nan=180)
    assert np.median(mis25) < 0.3 and np.mean(mis25 < 2) > 0.8
    # "auto" (the default): these peaks follow the plan's own rocking curve (median best
    # correlation >= 0.95), so the ranking of 0.25 is kept and the first match refined again at
    # 0.5: the same answers, more precisely
    auto = match_orientations(pk, au_plan, min_peaks=3)
    assert auto.params["intensity_power"] == "auto" and auto.params["polish_power"] == 0.5
    assert auto.params["auto_median_correlation"] >= 0.95
    np.testing.assert_array_equal(auto.correlation, q25.correlation)
    np.testing.assert_array_equal(auto.reliability, q25.reliability)
    mis = np.nan_to_num(misorientation_deg(auto.orientation[0, :, 0], U, au.point_group), nan=180)
    assert np.mean(mis < 2) == np.mean(mis25 < 2)
    assert np.median(mis) < 0.5 * np.median(mis25)
    # thin-film peaks (sinc^2 rocking curve at 3x the plan's thickness): no second refinement,
    # "auto" is 0.25 exactly
    rng = np.random.default_rng(24)
    Uf = random_rotations(30, rng)
    recs = []
    for u in Uf:
        pat = au.kinematic_pattern(u, energy_kev=300, k_max_inv_A=KMAX, thickness_A=3 * THICK, shape="sinc")
        keep = (pat.intensity > 1e-3 * pat.intensity.max()) & (np.hypot(*pat.g_lab[:, :2].T) <= KMAX)
        g = pat.g_lab[keep]
        recs.append({"qy": 64.0 + g[:, 1] / 0.02, "qx": 64.0 + g[:, 0] / 0.02, "intensity": pat.intensity[keep]})
    film = BraggPeaks.from_lists(recs, (1, len(recs)), calibration=pk.calibration)
    a = match_orientations(film, au_plan, min_peaks=3)
    b = match_orientations(film, au_plan, min_peaks=3, intensity_power=0.25)
    assert a.params["auto_median_correlation"] < 0.95 and a.params["polish_power"] == 0.0
    np.testing.assert_array_equal(a.orientation, b.orientation)
    for bad in (0.0, 1.5, "amplitudes"):
        with pytest.raises(ValueError, match="intensity_power"):
            match_orientations(pk, au_plan, intensity_power=bad)
    if importlib.util.find_spec("torch") is not None:  # the torch scoring uses the same weights
        kw = dict(min_peaks=3, refine=False, intensity_power=0.25)
        a = match_orientations(pk, au_plan, device="numba", **kw)
        b = match_orientations(pk, au_plan, device="cpu", **kw)
        assert np.allclose(a.correlation, b.correlation, rtol=1e-5, atol=1e-6)


def test_matching_yields_its_maps_so_far_and_cancels_between_chunks(au_plan, monkeypatch):
    """Maps filling in (UX 20): the coarse score, then the refined correlation, of the patterns
    matched so far (raster order; NaN after); the final correlation is at least the last map's
    (this Lorentzian plan refines once more under a Gaussian fall-off and keeps the better).
    Closing the job (Cancel) drops the queued chunks instead of waiting for the whole plan."""
    import threading
    import time

    from napari_4dstem.analysis.acom import matching as acom
    from napari_4dstem.engine.jobs import run_job

    monkeypatch.setattr(acom, "PARTIAL_EVERY_S", 0.0)  # a map at every step
    _, pk = _random_peaks(au_plan.crystal, 400, 11)
    steps = []
    res = run_job(acom.iter_match_orientations(pk, [au_plan], min_peaks=3, n_threads=2), steps.append)
    parts = [s.partial for s in steps if s.partial is not None]
    names = [p.name for p in parts]
    assert names[0] == "matching score" and names[-1] == "correlation"
    assert names.index("correlation") > max(i for i, n in enumerate(names) if n == "matching score")
    for p in parts:
        assert p.data.shape == (1, 400)
        n_done = int(np.isfinite(p.data[0]).sum())
        assert np.isfinite(p.data[0, :n_done]).all() and p.fraction == n_done / 400  # a prefix
    assert parts[0].fraction < 1.0 and parts[-1].fraction == 1.0
    ok = res.valid[0]
    assert ok.sum() > 300 and np.all(res.correlation[0, ok, 0] >= parts[-1].data[0, ok] - 1e-6)

    calls = []
    lock = threading.Lock()
    score = acom._score_range

    def slow_score(i0, i1, *args):
        with lock:
            calls.append(i0)
        time.sleep(0.05)
        return score(i0, i1, *args)

    monkeypatch.setattr(acom, "_score_range", slow_score)
    job = acom.iter_match_orientations(pk, [au_plan], min_peaks=3, n_threads=2)
    while not next(job).message.startswith("matching"):
        pass
    t0 = time.perf_counter()
    job.close()
    took = time.perf_counter() - t0
    n = len(calls)
    time.sleep(0.1)
    assert len(calls) == n < 8  # of 8 chunks: the queued ones never ran
    assert took < 0.5  # the running chunks only (0.05 s each here)


def test_candidate_ranking_in_pieces_gives_the_same_map(au_plan, monkeypatch):
    """The ranking runs in pieces of patterns with a cancel point between them; each pattern
    is ranked on its own, so the map is the same as in one piece."""
    from napari_4dstem.analysis.acom import matching as acom

    _, pk = _random_peaks(au_plan.crystal, 60, 3)
    whole = match_orientations(pk, au_plan, min_peaks=3, n_matches=2)
    monkeypatch.setattr(acom, "_RANK_ROWS", 7)
    pieces = match_orientations(pk, au_plan, min_peaks=3, n_matches=2)
    np.testing.assert_array_equal(pieces.orientation, whole.orientation)
    np.testing.assert_array_equal(pieces.correlation, whole.correlation)
    np.testing.assert_array_equal(pieces.reliability, whole.reliability)
