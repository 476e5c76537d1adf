import math

import numpy as np
import pytest

from napari_4dstem import Calibration
from napari_4dstem.data.calibration import electron_wavelength_A
from napari_4dstem.errors import CalibrationError


def test_wavelength_known_values():
    # tabulated relativistic wavelengths (pm): 200 kV 2.5079, 300 kV 1.9687
    assert electron_wavelength_A(200) == pytest.approx(0.025079, abs=2e-6)
    assert electron_wavelength_A(300) == pytest.approx(0.019687, abs=2e-6)


def test_units_normalised_and_validated():
    c = Calibration(scan_step=(1, 2), scan_units="Å", k_pixel_size=0.1, k_units="A^-1")
    assert c.scan_units == "A" and c.k_units == "1/A" and c.scan_step == (1.0, 2.0)
    with pytest.raises(CalibrationError, match="unknown detector unit 'furlong'"):
        Calibration(k_pixel_size=1, k_units="furlong")
    with pytest.raises(CalibrationError, match="scan_units 'nm' given without scan_step"):
        Calibration(scan_units="nm")
    with pytest.raises(CalibrationError, match="positive"):
        Calibration(k_pixel_size=-1, k_units="mrad")
    with pytest.raises(CalibrationError, match="origin_map_px must have shape"):
        Calibration(origin_map_px=np.zeros((3, 3)))


def test_mrad_conversion_round_trip(calibrated):
    lam = electron_wavelength_A(200)
    mrad = calibrated.k_pixel_size_in("mrad")
    assert mrad == pytest.approx(0.02 * lam * 1000)
    back = calibrated.replace(k_pixel_size=mrad, k_units="mrad").k_pixel_size_in("1/A")
    assert back == pytest.approx(0.02)
    with pytest.raises(CalibrationError, match="needs the beam energy"):
        calibrated.replace(beam_energy_kev=None).k_pixel_size_in("mrad")


def test_origin_map_is_frozen_and_sets_mean(rng):
    om = rng.normal(10, 1, (4, 5, 2))
    c = Calibration(origin_map_px=om)
    assert c.origin_px == pytest.approx(tuple(om.mean(axis=(0, 1))))
    with pytest.raises(ValueError):
        c.origin_map_px[0, 0, 0] = 1.0
    assert c.origin_at(1, 2) == pytest.approx(tuple(om[1, 2]))


def test_equality_and_dict_round_trip(calibrated):
    assert calibrated == Calibration.from_dict(calibrated.to_dict())
    assert calibrated != calibrated.replace(rotation_deg=0.0)
    with pytest.raises(CalibrationError, match="unknown calibration fields"):
        Calibration.from_dict({"bogus": 1})


def test_napari_kwargs_and_back(calibrated):
    kw = calibrated.napari_kwargs("4d")
    assert kw["axis_labels"] == ("scan_y", "scan_x", "k_y", "k_x")
    assert kw["scale"] == (1.5, 2.0, 0.02, 0.02)
    assert kw["units"] == ("nanometer", "nanometer", "inverse_angstrom", "inverse_angstrom")
    back = Calibration.from_napari(kw["scale"], kw["units"], base=calibrated)
    assert back == calibrated
    assert calibrated.napari_kwargs("scan")["scale"] == (1.5, 2.0)
    assert calibrated.napari_kwargs("k")["units"] == ("inverse_angstrom", "inverse_angstrom")
    # layers made before the unit was ours (pint's "1 / angstrom") still read back
    old = ("nanometer", "nanometer", "1 / angstrom", "1 / angstrom")
    assert Calibration.from_napari(kw["scale"], old, base=calibrated) == calibrated
    assert Calibration().napari_kwargs()["units"] == ("pixel",) * 4


def test_scan_step_nm():
    assert Calibration(scan_step=(5, 5), scan_units="A").scan_step_nm() == (0.5, 0.5)
    assert Calibration().scan_step_nm() is None
    assert math.isclose(Calibration(scan_step=(1, 2), scan_units="um").scan_step_nm()[1], 2000)


def test_napari_unit_keeps_inverse_lengths_plain():
    """pint writes "1/nm" with compact prefixes ("750 1/µm" on the Result pane's FFT scale bar);
    the plain inverse units read as given."""
    pint = pytest.importorskip("pint")
    from napari_4dstem.data.calibration import napari_unit

    reg = pint.get_application_registry()
    assert f"{(0.75 * reg('1/nm')).to_compact():g~#P}" != "0.75 nm⁻¹"  # the defect
    assert napari_unit("1/nm") == "inverse_nanometer"
    assert f"{(0.75 * reg(napari_unit('1/nm'))).to_compact():g~#P}" == "0.75 nm⁻¹"
    assert f"{(0.2 * reg(napari_unit('1/um'))).to_compact():g~#P}" == "0.2 µm⁻¹"
    assert napari_unit("1/A") == "inverse_angstrom"
    assert napari_unit("nm") == "nanometer"
    assert napari_unit("px") == "pixel"
    assert napari_unit(None) is None
