"""Kinematic engine and labels: known answers on fcc gold in [001]."""

import numpy as np
import pytest

from napari_4dstem.analysis.crystal.scattering import scattering_factor
from napari_4dstem.analysis.crystal.structure import bundled_crystal
from napari_4dstem.errors import Napari4DSTEMError
from napari_4dstem.simulation.engines import (
    SamplingError,
    SimulationRequest,
    atoms_in_box,
    bin_to_grid,
    box_geometry,
    get_engine,
)
from napari_4dstem.simulation.kinematic import excited_reflections
from napari_4dstem.simulation.labels import structure_factor_label

AU = bundled_crystal("Au")
A = AU.lattice[0, 0]


def _disk_centroid(img, cy, cx, r):
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    m = np.hypot(yy - cy, xx - cx) < r
    w = img * m
    return (w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()


@pytest.fixture(scope="module")
def req():
    # (200) at exactly 20 px: pixel = (2/a)/20
    return SimulationRequest(
        AU,
        thicknesses_A=(20.0, 40.0),
        energy_kev=300.0,
        convergence_mrad=1.0,
        shape=(96, 80),
        pixel_size_inv_A=(2 / A) / 20,
    )


def test_kinematic_disks_at_reciprocal_lattice(req):
    res = get_engine("kinematic").simulate(req)
    assert res.patterns.shape == (2, 1, 96, 80)
    assert res.probe.sum() == pytest.approx(1.0, rel=1e-5)
    assert res.origin_px == (48.0, 40.0)
    p = res.patterns[0, 0]
    r = req.probe_radius_px
    for dy, dx in [(0, 20), (20, 0), (-20, 0), (20, 20), (0, -20)]:
        cy, cx = _disk_centroid(p, 48 + dy, 40 + dx, r + 2)
        assert abs(cy - (48 + dy)) < 0.02 and abs(cx - (40 + dx)) < 0.02
    # (100) is forbidden in fcc: nothing at 10 px
    assert p[48, 50] < 1e-6 * p[48, 60]
    # the central disk holds what the reflections leave; thicker scatters more
    refl = excited_reflections(req, margin_px=r + 4)
    central = [res.patterns[i, 0][np.hypot(*np.mgrid[-48:48, -40:40]) < r + 6].sum() for i in range(2)]
    for i in range(2):
        assert central[i] == pytest.approx(1 - refl.intensity[i].sum(), abs=2e-3)
        assert refl.intensity[i].sum() < 1
    assert central[1] < central[0]
    assert res.patterns[0, 0].sum() <= 1.0 + 1e-5


def test_kinematic_strain_moves_disks(req):
    e = np.array([[0.02, 0.0], [0.0, -0.01]])
    res = get_engine("kinematic").simulate(
        SimulationRequest(
            AU,
            thicknesses_A=(20.0,),
            convergence_mrad=1.0,
            shape=req.shape,
            pixel_size_inv_A=req.pixel_size_inv_A,
            strain=e,
        )
    )
    p = res.patterns[0, 0]
    cy, cx = _disk_centroid(p, 48, 40 + 20 / 1.02, req.probe_radius_px + 1)
    assert cx == pytest.approx(40 + 20 / 1.02, abs=0.03)
    cy, cx = _disk_centroid(p, 48 + 20 / 0.99, 40, req.probe_radius_px + 1)
    assert cy == pytest.approx(48 + 20 / 0.99, abs=0.03)


def test_label_known_reflections(req):
    lab = structure_factor_label(req)
    hkl = {tuple(h) for h in lab.hkl.tolist()}
    assert (0, 0, 0) in hkl and (2, 0, 0) in hkl and (2, 2, 0) in hkl
    assert not any((h + k) % 2 for h, k, _ in hkl)  # fcc: h, k all even or all odd, l = 0 here
    assert all(ll == 0 for *_, ll in hkl)  # only the zero-order Laue zone survives the q_z weight
    # weight of (200) = f(g) exp(-B g^2/4) / f(0) (four atoms cancel)
    g = 2 / A
    i = lab.hkl.tolist().index([2, 0, 0])
    expect = (
        scattering_factor(79, np.array([g]))[0] * np.exp(-0.6 * g**2 / 4) / scattering_factor(79, np.array([0.0]))[0]
    )
    assert lab.weight[i] == pytest.approx(expect, rel=1e-6)
    assert (lab.qy[i], lab.qx[i]) == pytest.approx((48.0, 60.0), abs=1e-9)  # h along x (k_x)
    assert lab.image[48, 60] == pytest.approx(expect, rel=1e-3)
    assert lab.image[48, 40] == pytest.approx(1.0, rel=1e-3)
    assert lab.image[48, 50] == pytest.approx(0.0, abs=1e-6)


def test_label_qz_weight_on_a_tilted_crystal(req):
    # rotate about y by a small angle: (200) gets g_z = -sin(t) 2/a
    t = np.deg2rad(2.0)
    U = np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])
    lab0 = structure_factor_label(req)
    r = SimulationRequest(AU, orientation=U, shape=req.shape, pixel_size_inv_A=req.pixel_size_inv_A)
    lab = structure_factor_label(r)
    i0 = lab0.hkl.tolist().index([2, 0, 0])
    i = lab.hkl.tolist().index([2, 0, 0])
    gz = np.sin(t) * 2 / A
    assert lab.weight[i] / lab0.weight[i0] == pytest.approx(np.exp(-(gz**2) / (2 * 0.05**2)), rel=1e-6)


def test_request_validation():
    with pytest.raises(Napari4DSTEMError, match="rotation"):
        SimulationRequest(AU, orientation=np.ones((3, 3)))
    with pytest.raises(Napari4DSTEMError, match="thickness"):
        SimulationRequest(AU, thicknesses_A=(-1.0,))
    with pytest.raises(Napari4DSTEMError, match="unknown simulation engine"):
        get_engine("nope")


def test_box_geometry_and_binning():
    r = SimulationRequest(AU, shape=(64, 64), pixel_size_inv_A=0.02, convergence_mrad=2.0)
    geo = box_geometry(r, usable_fraction=0.5)
    assert geo.multiple % 2 == 1 and geo.box_A == pytest.approx(geo.multiple / 0.02)
    assert geo.grid >= 2 * 64 * geo.multiple
    # a delta at the engine origin stays at the detector origin after binning
    m = 3
    big = np.zeros((2 * 64 * m, 2 * 64 * m))
    big[64 * m, 64 * m] = 1.0
    big[64 * m + m, 64 * m - 2 * m] = 2.0
    out = bin_to_grid(big, multiple=m, shape=(64, 64))
    assert out[32, 32] == 1.0 and out[33, 30] == 2.0 and out.sum() == 3.0
    with pytest.raises(SamplingError, match="box_multiple"):
        box_geometry(
            SimulationRequest(AU, shape=(64, 64), pixel_size_inv_A=0.02, convergence_mrad=0.2, box_multiple=1),
            usable_fraction=0.5,
        )
    with pytest.raises(SamplingError, match="grid"):
        box_geometry(SimulationRequest(AU, shape=(2500, 2500), pixel_size_inv_A=0.001), usable_fraction=0.5)


def test_atoms_in_box_density():
    Z, xyz, _occ, _b = atoms_in_box(AU, orientation=np.eye(3), box_A=(40.0, 40.0, 20.0))
    assert set(Z.tolist()) == {79}
    assert len(Z) == pytest.approx(40 * 40 * 20 / AU.volume_A3 * 4, rel=0.05)
    assert xyz.min() >= 0 and xyz[:, 0].max() < 40 and xyz[:, 2].max() < 20
