"""The 180-deg turn of a match: the zone partner and the ambiguity flag (issue #18)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem.analysis.acom.matching import kinematic_bragg_peaks, match_orientations
from napari_4dstem.analysis.acom.plan import build_orientation_plan, rotation_z
from napari_4dstem.analysis.acom.turn import TURN_LINE, turn_partners, zone_axes
from napari_4dstem.analysis.crystal.structure import bundled_crystal
from napari_4dstem.analysis.crystal.symmetry import misorientation_deg
from napari_4dstem.data.results import BraggPeaks
from napari_4dstem.simulation.samples import random_rotations


@pytest.fixture(scope="module")
def au():
    c = bundled_crystal("Au")
    return c, build_orientation_plan(c, energy_kev=300, k_max_inv_A=1.5, step_deg=2.0)


def _peaks_sorted(c, U):
    pk = kinematic_bragg_peaks(c, U[None], k_max_inv_A=1.5, thickness_A=100.0, origin_px=(128.0, 128.0))
    p = pk.at(0, 0)
    order = np.lexsort((np.round(p["qx"], 6), np.round(p["qy"], 6)))
    return np.stack([p["qy"][order], p["qx"][order], p["intensity"][order]], 1)


def test_zone_axes_mark_the_even_fold_axes(au):
    c, _ = au
    Z, even = zone_axes(c, 3)
    a = np.asarray(c.lattice)[0, 0]
    for uvw, want in (([0, 0, 1], True), ([1, 1, 0], True), ([1, 1, 1], False), ([1, 1, 2], False)):
        d = np.asarray(uvw, float) / np.linalg.norm(uvw)
        j = np.argmax(np.abs(Z @ d))
        assert np.isclose(abs(Z[j] @ d), 1.0), (uvw, a)
        assert even[j] == want, uvw


def test_near_zone_partner_draws_the_same_pattern_and_is_flagged(au, orient):
    c, plan = au
    d = orient.axis_rotation([1, -1, 0], np.radians(2.0)) @ np.array([1.0, 1.0, 1.0])
    U = orient.beam_along(d)
    P, D, ang = turn_partners(plan, U[None, None])
    assert ang[0, 0] == pytest.approx(2.0, abs=0.01)
    assert D[0, 0] < 1e-6  # the same reflections at the same excitation errors
    assert misorientation_deg(P[0, 0], U, c.point_group) > 30  # yet a different orientation
    # the partner is U turned by 180 deg about the beam and tilted by twice the zone angle
    assert misorientation_deg(P[0, 0], rotation_z(np.pi) @ U, c.point_group) == pytest.approx(4.0, abs=0.05)
    # drawn independently by the kinematic generator: the same peak list, peak for peak
    np.testing.assert_allclose(_peaks_sorted(c, P[0, 0]), _peaks_sorted(c, U), rtol=1e-6, atol=1e-6)
    pk = kinematic_bragg_peaks(c, U[None], k_max_inv_A=1.5, thickness_A=100.0, origin_px=(128.0, 128.0))
    res = match_orientations(pk, plan, min_peaks=3)
    assert res.turn_ambiguous[0, 0, 0]
    got = res.orientation[0, 0, 0]
    partner = res.turn_partner[0, 0, 0]
    either = min(misorientation_deg(got, U, c.point_group), misorientation_deg(partner, U, c.point_group))
    assert either < 1.0
    maps = {m.name: m for m in res.to_maps()}
    assert maps["turn_ambiguous"].data.tolist() == [[1]]


def test_off_zone_pattern_and_its_turn_are_decided(au):
    c, plan = au
    Us = random_rotations(40, np.random.default_rng(5))
    _, D, _ = turn_partners(plan, Us[:, None])
    U = Us[int(np.argmax(np.where(np.isfinite(D[:, 0]), D[:, 0], -1.0)))]
    assert np.max(D[np.isfinite(D)]) > 3 * TURN_LINE
    turned = rotation_z(np.pi) @ U
    pk = kinematic_bragg_peaks(c, np.stack([U, turned]), k_max_inv_A=1.5, thickness_A=100.0, origin_px=(128.0, 128.0))
    res = match_orientations(pk, plan, min_peaks=3)
    assert not res.turn_ambiguous[0, :, 0].any()
    for j, want in enumerate((U, turned)):
        got = res.orientation[0, j, 0]
        assert misorientation_deg(got, want, c.point_group) < 1.0
        assert misorientation_deg(got, rotation_z(np.pi) @ want, c.point_group) > 10.0


def test_turn_line_zero_skips_the_partners(au):
    c, plan = au
    Us = random_rotations(3, np.random.default_rng(2))
    pk = kinematic_bragg_peaks(c, Us, k_max_inv_A=1.5, thickness_A=100.0, origin_px=(128.0, 128.0))
    a = match_orientations(pk, plan, min_peaks=3)
    b = match_orientations(pk, plan, min_peaks=3, turn_line=0)
    np.testing.assert_array_equal(a.orientation, b.orientation)
    assert not b.turn_ambiguous.any() and np.isnan(b.turn_partner).all()
    assert a.params["turn_line"] == TURN_LINE and b.params["turn_line"] == 0


def test_each_grain_of_a_pair_gets_its_own_turn(au, orient):
    c, plan = au
    near = orient.beam_along(orient.axis_rotation([1, -1, 0], np.radians(2.0)) @ np.array([1.0, 1.0, 1.0]), phi=1.1)
    Us = random_rotations(40, np.random.default_rng(5))
    _, D, _ = turn_partners(plan, Us[:, None])
    far = Us[int(np.argmax(np.where(np.isfinite(D[:, 0]), D[:, 0], -1.0)))]
    assert misorientation_deg(near, far, c.point_group) > 15
    kw = dict(k_max_inv_A=1.5, thickness_A=100.0, origin_px=(128.0, 128.0))
    a, b = kinematic_bragg_peaks(c, near[None], **kw).at(0, 0), kinematic_bragg_peaks(c, far[None], **kw).at(0, 0)
    rec = {k: np.concatenate([a[k], b[k]]) for k in ("qy", "qx")}
    rec["intensity"] = np.concatenate([0.6 * a["intensity"], 0.4 * b["intensity"]])
    pk = BraggPeaks.from_lists([rec], (1, 1), calibration=kinematic_bragg_peaks(c, far[None], **kw).calibration)
    res = match_orientations(pk, plan, min_peaks=3, n_matches=2)
    U, P, amb = res.orientation[0, 0], res.turn_partner[0, 0], res.turn_ambiguous[0, 0]
    g = c.point_group
    # which match is which grain: the near-zone grain is the match or its partner
    k_near = int(
        np.argmin([min(misorientation_deg(U[k], near, g), misorientation_deg(P[k], near, g)) for k in range(2)])
    )
    k_far = 1 - k_near
    assert min(misorientation_deg(U[k_near], near, g), misorientation_deg(P[k_near], near, g)) < 1.0
    assert misorientation_deg(U[k_far], far, g) < 1.0
    assert amb[k_near] and not amb[k_far]
