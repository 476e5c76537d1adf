"""Point groups, symmetric misorientation, fundamental-zone coverage, Euler angles, IPF."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem.analysis.acom.ipf import ipf_colors, ipf_key_image
from napari_4dstem.analysis.acom.plan import (
    euler_bunge_deg,
    orientation_from_euler_bunge,
    rotation_z,
    zone_axis_orientation,
)
from napari_4dstem.analysis.crystal.structure import Crystal, bundled_crystal
from napari_4dstem.analysis.crystal.symmetry import fundamental_zone_axes, misorientation_deg
from napari_4dstem.simulation.samples import random_rotations


def _crystals():
    at = [("Fe", (0.1, 0.2, 0.3)), ("O", (0.27, 0.61, 0.83))]
    return {
        "cubic": bundled_crystal("Au"),
        "hexagonal": bundled_crystal("Ti"),
        "tetragonal": Crystal.from_parameters(
            4.0, 4.0, 6.0, atoms=[("Ti", (0, 0, 0)), ("O", (0.3, 0.3, 0))], spacegroup="P 42/m n m"
        ),
        "orthorhombic": Crystal.from_parameters(4.0, 5.0, 6.0, atoms=at, spacegroup="P m m m"),
        "monoclinic": Crystal.from_parameters(4.0, 5.0, 6.0, 90, 104, 90, atoms=at, spacegroup="P 1 2/m 1"),
        "triclinic": Crystal.from_parameters(4.0, 5.0, 6.0, 80, 95, 103, atoms=at),
    }


def test_point_groups_of_the_systems():
    orders = {
        "cubic": 24,
        "hexagonal": 12,
        "tetragonal": 8,
        "orthorhombic": 4,
        "monoclinic": 2,
        "triclinic": 1,
    }
    for system, c in _crystals().items():
        assert c.point_group.crystal_system == system
        assert len(c.point_group.rotations) == orders[system]


@pytest.mark.parametrize("system", ["cubic", "hexagonal", "tetragonal", "orthorhombic", "monoclinic", "triclinic"])
def test_fundamental_zone_covers_the_sphere(system):
    g = _crystals()[system].point_group
    step = 3.0
    axes = fundamental_zone_axes(step, g)
    # about 4 pi / (step^2 |G|) directions, not the whole sphere
    full = 4 * np.pi / np.radians(step) ** 2
    assert len(axes) < 1.6 * full / len(g.rotations)
    rng = np.random.default_rng(0)
    v = rng.normal(size=(2000, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    eq = np.einsum("gij,nj->ngi", g.rotations, v)
    cos = np.einsum("ngi,ai->nga", eq, axes).max(axis=(1, 2))
    worst = np.degrees(np.arccos(np.clip(cos, -1, 1))).max()
    assert worst < 0.8 * step


def test_misorientation_symmetry_and_angle():
    g = bundled_crystal("Au").point_group
    rng = np.random.default_rng(1)
    U = random_rotations(20, rng)
    for R in g.rotations:
        assert np.all(misorientation_deg(U, U @ R, g) < 1e-5)
    assert np.allclose(misorientation_deg(U, rotation_z(np.radians(10.0)) @ U, g), 10.0, atol=1e-6)
    # 50 deg about the cube axis is 40 deg once the 4-fold is taken into account
    assert np.allclose(misorientation_deg(U, U @ rotation_z(np.radians(50.0)), g), 40.0, atol=1e-4)
    mis = misorientation_deg(random_rotations(500, rng), random_rotations(500, rng), g)
    assert mis.max() <= 62.8 + 1e-6  # the largest cubic disorientation angle


def test_euler_round_trip_and_convention():
    rng = np.random.default_rng(2)
    U = random_rotations(50, rng)
    e = euler_bunge_deg(U)
    assert np.allclose(orientation_from_euler_bunge(e), U, atol=1e-9)
    # phi1 alone: g = Rz(phi1) (passive) and U = g^T: the crystal x axis lies at +phi1 in the lab
    U1 = orientation_from_euler_bunge(np.array([30.0, 0, 0]))
    assert np.allclose(U1 @ [1, 0, 0], [np.cos(np.radians(30)), np.sin(np.radians(30)), 0])
    assert np.all(np.isnan(euler_bunge_deg(np.full((3, 3), np.nan))))


def test_ipf_colours_of_zone_axes():
    g = bundled_crystal("Au").point_group
    # beam (z) along [001], [101], [111]: red, green, blue
    cols = ipf_colors(zone_axis_orientation(np.array([[0, 0, 1], [1, 0, 1], [1, 1, 1]])), g, direction="z")
    assert np.allclose(cols, np.eye(3), atol=1e-6)
    rng = np.random.default_rng(3)
    U = random_rotations(30, rng)
    for R in g.rotations[:5]:
        assert np.allclose(ipf_colors(U @ R, g, direction="x"), ipf_colors(U, g, direction="x"), atol=1e-6)
    key = ipf_key_image(g, size=64)
    assert key.shape == (64, 64, 4) and 0.2 < key[..., 3].mean() < 0.9
    hexkey = ipf_key_image(bundled_crystal("Ti").point_group, size=64)
    assert hexkey[..., 3].sum() > 0
