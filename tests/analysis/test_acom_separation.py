"""Zone partners and the separation of two kinematic patterns in the noise (issue #18)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_4dstem.analysis.acom.separation import (
    ThinFilmPattern,
    pattern_separation,
    thin_film_pattern,
    zone_partner,
)
from napari_4dstem.analysis.crystal.structure import bundled_crystal
from napari_4dstem.analysis.crystal.symmetry import misorientation_deg
from napari_4dstem.data.calibration import electron_wavelength_A


def _by_hkl(p):
    return {tuple(int(v) for v in h): i for i, h in enumerate(p.hkl)}


def _sub(p, sel):
    return ThinFilmPattern(p.xy[sel], p.fraction[sel], p.hkl[sel], p.s[sel])


@pytest.mark.parametrize("uvw, tilt_deg", [([0, 0, 1], 2.0), ([1, 1, 1], 3.0), ([1, 1, 2], 4.0)])
def test_zone_partner_puts_each_zolz_reflection_on_its_friedel_mates_point(uvw, tilt_deg, orient):
    c = bundled_crystal("Au")
    z = np.asarray(uvw, float) @ c.lattice  # the zone axis [uvw] in crystal Cartesian
    U = orient.beam_along(orient.axis_rotation(np.cross(z, [0.2, 0.7, 0.1]), np.radians(tilt_deg)) @ z)
    P = zone_partner(U, z)
    pu = thin_film_pattern(c, U, thickness_A=200.0)
    pp = thin_film_pattern(c, P, thickness_A=200.0)
    iu, ip = _by_hkl(pu), _by_hkl(pp)
    zolz = [h for h in ip if np.dot(h, uvw) == 0]
    assert len(zolz) >= 10
    for h in zolz:
        mate = tuple(-v for v in h)
        assert mate in iu, h
        i, j = ip[h], iu[mate]
        np.testing.assert_allclose(pp.xy[i], pu.xy[j], atol=1e-12)  # the same lab point
        assert pp.s[i] == pytest.approx(pu.s[j], abs=1e-12)  # the same excitation error
        assert pp.fraction[i] == pytest.approx(pu.fraction[j], rel=1e-9)  # Friedel: |F(g)| = |F(-g)|
    # so the ZOLZ patterns are the same in the noise of any dose
    zu = _sub(pu, np.array([np.dot(h, uvw) == 0 for h in pu.hkl]))
    zp = _sub(pp, np.array([np.dot(h, uvw) == 0 for h in pp.hkl]))
    sep = pattern_separation(zu, zp, dose=1e7, background=1e3, k_pixel_size=0.02)
    assert sep.bhattacharyya < 1e-9 and sep.n_unmatched == 0 and sep.max_shift_px < 1e-9
    assert sep.success_bound == pytest.approx(0.5)
    full = pattern_separation(pu, pp, dose=1e5, background=10.0, k_pixel_size=0.02)
    if uvw == [0, 0, 1]:
        # a 4-fold axis of Au: the partner is the orientation itself, whole pattern and all
        assert misorientation_deg(P, U, c.point_group) < 1e-3
        assert full.bhattacharyya < 1e-9
    else:
        # a different orientation: the higher-order Laue zones tell them apart at 1e5 electrons
        assert misorientation_deg(P, U, c.point_group) > 10
        assert full.bhattacharyya > 5 and full.bayes_error_high < 0.01


def test_thin_film_pattern_known_intensity_at_the_bragg_condition(orient):
    c = bundled_crystal("Au")
    U = orient.beam_along([0.0, 0.0, 1.0])
    t = 150.0
    p = thin_film_pattern(c, U, thickness_A=t, k_max_inv_A=1.0)
    g = thin_film_pattern(c, U, thickness_A=t, k_max_inv_A=1.0, shape="gaussian")
    lam = electron_wavelength_A(300.0)
    refl = c.reciprocal_points(1.05)
    i = int(np.argmin(np.abs(p.s)))
    k = np.flatnonzero(np.all(refl.hkl == p.hkl[i], axis=1))[0]
    strength = (t * lam * (1 + 300 / 510.99895) * abs(refl.structure_factor[k]) / c.volume_A3) ** 2
    x = p.s[i] * t
    assert p.fraction[i] == pytest.approx(strength * np.sinc(x) ** 2, rel=1e-9)
    assert g.fraction[i] == pytest.approx(strength * np.exp(-(x**2)), rel=1e-9)
    assert np.all(np.hypot(*p.xy.T) <= 1.0)
    with pytest.raises(ValueError):
        thin_film_pattern(c, U, thickness_A=t, shape="lorentzian")


def test_separation_of_one_spot_against_background_is_the_poisson_bhattacharyya():
    one = ThinFilmPattern(np.array([[0.5, 0.0]]), np.array([1e-3]), np.zeros((1, 3), int), np.zeros(1))
    none = ThinFilmPattern(np.zeros((0, 2)), np.zeros(0), np.zeros((0, 3), int), np.zeros(0))
    N, bg = 1e4, 1.0
    sep = pattern_separation(one, none, dose=N, background=bg, k_pixel_size=0.02)
    want = 0.5 * (np.sqrt(N * 1e-3 + bg) - np.sqrt(bg)) ** 2
    assert sep.bhattacharyya == pytest.approx(want)
    assert sep.n_unmatched == 1 and sep.n_matched == 0
    assert sep.bayes_error_low <= sep.bayes_error_high == pytest.approx(0.5 * np.exp(-want))
    # the same spot 1 px away: only the position tells them apart, 2-D Gaussians of width sigma
    moved = dataclasses.replace(one, xy=np.array([[0.52, 0.0]]))
    sep = pattern_separation(one, moved, dose=N, background=bg, k_pixel_size=0.02)
    sig = 0.05 + 1.5 / np.sqrt(N * 1e-3)
    assert sep.bhattacharyya == pytest.approx(1.0 / (8 * sig**2))
    assert sep.n_matched == 1 and sep.max_shift_px == pytest.approx(1.0)
    # two spots of one pattern within a pixel are one peak
    split = ThinFilmPattern(
        np.array([[0.5, 0.002], [0.5, -0.002]]), np.array([5e-4, 5e-4]), np.zeros((2, 3), int), np.zeros(2)
    )
    assert pattern_separation(one, split, dose=N, background=bg, k_pixel_size=0.02).bhattacharyya < 1e-12


def test_detection_line_and_censoring_only_lose_information():
    from napari_4dstem.analysis.acom.separation import detection_line

    line = detection_line(10.0)  # X - 10 >= 5 sqrt(X) + 1
    assert line - 10 >= 5 * np.sqrt(line) + 1 and not (line - 11 >= 5 * np.sqrt(line - 1) + 1)
    N, bg = 1e5, 10.0
    none = ThinFilmPattern(np.zeros((0, 2)), np.zeros(0), np.zeros((0, 3), int), np.zeros(0))
    for f in (1e-5, 1e-4, 3e-4, 1e-3):
        spot = ThinFilmPattern(np.array([[0.5, 0.0]]), np.array([f]), np.zeros((1, 3), int), np.zeros(1))
        full = pattern_separation(spot, none, dose=N, background=bg, k_pixel_size=0.02)
        seen = pattern_separation(spot, none, dose=N, background=bg, k_pixel_size=0.02, detection_counts=line)
        assert 0 <= seen.bhattacharyya <= full.bhattacharyya + 1e-12
        if f == 1e-5:  # 1 count over 10: never detected either way, nothing to tell apart
            assert seen.bhattacharyya < 1e-9 < full.bhattacharyya
        if f == 1e-3:  # 110 counts against 10: the spot is missed only when Poisson(110) < line
            from scipy.stats import poisson

            want = -0.5 * np.log(poisson.cdf(line - 1, N * f + bg))
            assert seen.bhattacharyya == pytest.approx(want, rel=1e-3)
