"""Bloch-wave intensities against closed forms: unitarity, two beams, the kinematic limit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_4dstem.analysis.acom.plan import zone_axis_orientation
from napari_4dstem.analysis.crystal.bloch import bloch_intensities
from napari_4dstem.analysis.crystal.structure import bundled_crystal
from napari_4dstem.data.calibration import electron_wavelength_A

E = 300.0
K = 1.0 / electron_wavelength_A(E)
GAMMA = 1.0 + E / 510.99895


def _Ug(crystal, hkl):
    return GAMMA * abs(crystal.structure_factors(np.array([hkl]))[0]) / (math.pi * crystal.volume_A3)


@pytest.mark.parametrize("zone", [(0, 0, 1), (0, 1, 1), (1, 1, 1), (1, 2, 3)])
def test_intensities_sum_to_one(zone):
    au = bundled_crystal("Au")
    p = bloch_intensities(
        au,
        zone_axis_orientation(np.array(zone, float)),
        energy_kev=E,
        thicknesses_A=[10, 100, 300, 600],
        k_max_inv_A=1.5,
    )
    np.testing.assert_allclose(p.intensity.sum(axis=1), 1.0, atol=1e-9)
    assert np.array_equal(p.hkl[0], [0, 0, 0]) and p.intensity.shape == (4, len(p.hkl))


def test_two_beam_pendelloesung():
    # beams 000 and 200 only: I_g = U^2 / W^2 sin^2(pi t W / K), W^2 = (K s)^2 + U^2
    au = bundled_crystal("Au")
    t = np.linspace(0, 800, 41)
    for tilt_deg in (0.0, 0.4, -0.3):
        c, s_ = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
        Ry = np.array([[c, 0, s_], [0, 1, 0], [-s_, 0, c]])
        p = bloch_intensities(au, Ry, energy_kev=E, thicknesses_A=t, k_max_inv_A=1.5, beams_hkl=[[2, 0, 0]])
        U = _Ug(au, (2, 0, 0))
        W = math.hypot(K * p.excitation_error[1], U)
        expect = (U / W) ** 2 * np.sin(math.pi * t * W / K) ** 2
        np.testing.assert_allclose(p.intensity[:, 1], expect, atol=1e-10)


def test_thin_crystal_is_kinematic():
    # first order: I_g = (pi U_g / K)^2 sin^2(pi s t) / (pi s)^2
    au = bundled_crystal("Au")
    U = zone_axis_orientation(np.array([1.0, 2.0, 5.0]))
    t = 4.0
    p = bloch_intensities(au, U, energy_kev=E, thicknesses_A=t, k_max_inv_A=1.5)
    for k in range(1, len(p.hkl)):
        s = p.excitation_error[k]
        kin = (math.pi * _Ug(au, p.hkl[k]) / K) ** 2 * (t * np.sinc(s * t)) ** 2
        assert p.intensity[0, k] == pytest.approx(kin, rel=0.05, abs=1e-7)


def test_beams_by_coupling_not_by_structure_factor():
    # fcc: mixed-parity hkl are never coupled to 000 (absent); diamond Si [110]: 002 is
    # kinematically forbidden but reached through 111 + (-1-1 1) (double diffraction)
    au = bundled_crystal("Au")
    p = bloch_intensities(
        au,
        zone_axis_orientation(np.array([0.0, 0.0, 1.0])),
        energy_kev=E,
        thicknesses_A=100,
        k_max_inv_A=1.5,
    )
    parity = p.hkl % 2
    assert np.all((parity == parity[:, :1]).all(axis=1))
    si = bundled_crystal("Si")
    assert abs(si.structure_factors(np.array([[0, 0, 2]]))[0]) < 1e-9
    p = bloch_intensities(
        si,
        zone_axis_orientation(np.array([1.0, -1.0, 0.0])),
        energy_kev=E,
        thicknesses_A=200,
        k_max_inv_A=1.5,
    )
    rows = {tuple(h): i for i, h in enumerate(p.hkl)}
    assert (0, 0, 2) in rows and p.intensity[0, rows[(0, 0, 2)]] > 1e-4
