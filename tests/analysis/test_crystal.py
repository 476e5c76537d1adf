"""Crystal: structure factors, symmetry, CIF reading, kinematic patterns."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem.analysis.crystal.scattering import scattering_factor
from napari_4dstem.analysis.crystal.structure import (
    Crystal,
    CrystalError,
    bundled_crystal,
    load_crystal,
)
from napari_4dstem.errors import FileFormatError

NACL_CIF = """data_NaCl
_cell_length_a 5.6402
_cell_length_b 5.6402
_cell_length_c 5.6402
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'F m -3 m'
loop_
_symmetry_equiv_pos_as_xyz
x,y,z
-x,-y,z
-x,y,-z
x,-y,-z
z,x,y
z,-x,-y
-z,-x,y
-z,x,-y
y,z,x
-y,z,-x
y,-z,-x
-y,-z,x
y,x,-z
-y,-x,-z
y,-x,z
-y,x,z
x,z,-y
-x,z,y
-x,-z,-y
x,-z,y
z,y,-x
z,-y,x
-z,y,x
-z,-y,-x
-x,-y,-z
x,y,-z
x,-y,z
-x,y,z
-z,-x,-y
-z,x,y
z,x,-y
z,-x,y
-y,-z,-x
y,-z,x
-y,z,x
y,z,-x
-y,-x,z
y,x,z
-y,x,-z
y,-x,-z
-x,-z,y
x,-z,-y
x,z,y
-x,z,-y
-z,-y,x
-z,y,-x
z,-y,-x
z,y,x
x,y+1/2,z+1/2
x+1/2,y,z+1/2
x+1/2,y+1/2,z
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
_atom_site_U_iso_or_equiv
Na1 Na 0 0 0 1 0.01
Cl1 Cl 0.5 0.5 0.5 1 0.01
"""


def test_fcc_and_diamond_extinctions():
    au = bundled_crystal("Au")
    F = np.abs(au.structure_factors([[1, 0, 0], [1, 1, 0], [1, 1, 1], [2, 0, 0]]))
    assert F[0] < 1e-9 and F[1] < 1e-9 and F[2] > 10 and F[3] > 10
    si = bundled_crystal("Si")
    F = np.abs(si.structure_factors([[2, 0, 0], [2, 2, 2], [1, 1, 1], [2, 2, 0]]))
    assert F[0] < 1e-9 and F[1] < 1e-9 and F[2] > 1 and F[3] > 1


def test_structure_factor_value_and_debye_waller():
    au = bundled_crystal("Au")
    g = np.linalg.norm(np.array([1, 1, 1]) / 4.0782)
    f = scattering_factor(79, g)
    expect = 4 * f * np.exp(-0.60 * g**2 / 4)
    assert abs(au.structure_factors([[1, 1, 1]])[0]) == pytest.approx(expect, rel=1e-9)
    cold = Crystal(au.lattice, au.numbers, au.positions, b_iso=0.0)
    assert abs(cold.structure_factors([[4, 2, 0]])[0]) > abs(au.structure_factors([[4, 2, 0]])[0])


def test_scattering_factor_mott_bethe_tail():
    # at large s, f_e -> 0.023934 (Z - f_x) / s^2; f_x of Au at s = 1.5 1/A is small vs Z
    s = 1.5
    fe = scattering_factor(79, 2 * s)
    assert 0.023934 * (79 - 30) / s**2 < fe < 0.023934 * 79 / s**2


def test_bundled_symmetry():
    for name, pg, n_rot, system in [
        ("Au", "m-3m", 24, "cubic"),
        ("Fe-bcc", "m-3m", 24, "cubic"),
        ("Si", "m-3m", 24, "cubic"),
        ("Ti-hcp", "6/mmm", 12, "hexagonal"),
    ]:
        c = bundled_crystal(name)
        assert c.point_group.name == pg
        assert len(c.point_group.rotations) == n_rot
        assert c.point_group.crystal_system == system
        R = c.point_group.rotations
        assert np.allclose(R @ R.swapaxes(1, 2), np.eye(3), atol=1e-9)
    assert bundled_crystal("Fe").spacegroup_number == 229
    assert bundled_crystal("Ti").spacegroup_number == 194


def test_cif_round_trip(tmp_path):
    p = tmp_path / "nacl.cif"
    p.write_text(NACL_CIF)
    c = load_crystal(p)
    assert len(c.numbers) == 8 and c.spacegroup_number == 225
    assert c.formula == "Na4Cl4"
    assert c.b_iso[0] == pytest.approx(8 * np.pi**2 * 0.01)
    # (111): 4 (f_Cl - f_Na) in magnitude (Cl at 1/2 1/2 1/2), (200): 4 (f_Na + f_Cl)
    F111, F200 = np.abs(c.structure_factors([[1, 1, 1], [2, 0, 0]]))
    assert F200 > 3 * F111 > 0


def test_bad_cif_and_empty_structure(tmp_path):
    bad = tmp_path / "bad.cif"
    bad.write_text("this is not a cif {{{")
    with pytest.raises(FileFormatError, match="bad.cif"):
        Crystal.from_cif(bad)
    empty = tmp_path / "empty.cif"
    empty.write_text(NACL_CIF.split("loop_\n_atom_site_label")[0])
    with pytest.raises(FileFormatError, match="no atom sites"):
        Crystal.from_cif(empty)
    with pytest.raises(CrystalError, match="no atoms"):
        Crystal.from_parameters(4, 4, 4, atoms=[])
    with pytest.raises(CrystalError, match="unknown bundled"):
        bundled_crystal("unobtainium")
    with pytest.raises(FileFormatError, match="no such CIF"):
        load_crystal(tmp_path / "missing.cif")


def test_kinematic_pattern_zone_axis():
    au = bundled_crystal("Au")
    U = np.eye(3)  # [001] along the beam
    p = au.kinematic_pattern(U, energy_kev=300, k_max_inv_A=1.2, thickness_A=100)
    zero = p.hkl[:, 2] == 0
    assert zero.sum() >= 8
    # the zero layer is 4-fold: {200} and {220} present, {200} all equally strong
    assert (zero & (np.abs(p.hkl).sum(1) == 2)).sum() == 4  # {200}
    is220 = (np.abs(p.hkl) == 2).sum(1) == 2
    assert (zero & is220).sum() == 4
    i200 = p.intensity[(np.abs(p.hkl) == [2, 0, 0]).all(1)]
    assert np.allclose(i200, i200[0])
    assert np.all(np.abs(p.excitation_error) < 0.03)
    px = p.detector_px(origin_px=(10.0, 20.0), k_pixel_size_inv_A=0.01)
    assert np.allclose(px[:, 1], 20 + p.g_lab[:, 0] / 0.01)
    sinc = au.kinematic_pattern(U, energy_kev=300, k_max_inv_A=1.2, thickness_A=100, shape="sinc")
    assert len(sinc.intensity) > 0


def test_spglib_global_error_flag_untouched(monkeypatch):
    # our symmetry search must not flip spglib's process-wide error mode for other callers
    import spglib.error

    monkeypatch.setattr(spglib.error, "OLD_ERROR_HANDLING", True)  # spglib 2.x's default
    fcc = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    au = Crystal(np.eye(3) * 4.08, [79] * 4, fcc, name="Au")  # fresh: no cached symmetry
    assert au.spacegroup_number == 225
    assert spglib.error.OLD_ERROR_HANDLING is True
    # a failure still reaches us as our one-line error (two atoms on one site)
    twin = Crystal(np.eye(3) * 4.0, [79, 79], [[0, 0, 0], [0, 0, 1e-9]], name="twin")
    with pytest.raises(CrystalError, match="twin: spglib could not find the symmetry"):
        _ = twin.spacegroup_number
    assert spglib.error.OLD_ERROR_HANDLING is True
