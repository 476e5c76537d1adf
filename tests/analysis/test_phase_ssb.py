"""SSB direct ptychography against a planted weak phase object (thin-object forward model).

300 kV, 20 mrad, scan step 0.25 A, 32 x 32 positions, 64 x 64 detector; an amorphous object
with 0.1 rad per atom. The truth is the object phase at the probe positions; the comparison
removes the offset and linear ramp (undetermined by the method).
"""

import dask.array as da
import numpy as np
import pytest

from napari_4dstem import DataCube
from napari_4dstem.analysis.phase._common import phase_correlation_with_truth
from napari_4dstem.analysis.phase.forward import simulate_phase_dataset
from napari_4dstem.analysis.phase.ssb import ssb


@pytest.fixture(scope="module")
def focused():
    return simulate_phase_dataset(scan_shape=(32, 32), step_A=0.25, phase_per_atom_rad=0.1, seed=1)


def test_ssb_recovers_a_weak_phase_object(focused):
    s = focused
    r = ssb(s.datacube)
    assert r.data.shape == (32, 32) and r.units == "rad"
    corr, rms = phase_correlation_with_truth(r.data, s.phase_at_scan)
    # measured 0.98; the goal for a thin noise-free object is >= 0.95
    assert corr >= 0.95
    assert rms < 0.35 * s.phase_at_scan.std()
    assert r.params["method"] == "ssb"


def test_ssb_streams_uneven_chunks_and_lazy_data_to_the_same_result(focused):
    s = focused
    ref = ssb(s.datacube).data
    lazy = DataCube(da.from_array(np.asarray(s.datacube.data), chunks=(5, 7, 64, 64)), s.datacube.calibration)
    np.testing.assert_allclose(ssb(lazy, scan_chunk=(5, 7)).data, ref, rtol=1e-4, atol=1e-6)


def test_ssb_corrects_a_known_defocus():
    s = simulate_phase_dataset(scan_shape=(32, 32), step_A=0.25, phase_per_atom_rad=0.1, defocus_A=60.0, seed=2)
    with_probe = phase_correlation_with_truth(ssb(s.datacube, probe=s.probe).data, s.phase_at_scan)[0]
    without = phase_correlation_with_truth(ssb(s.datacube).data, s.phase_at_scan)[0]
    assert with_probe >= 0.93
    assert with_probe > without + 0.03


def test_ssb_with_a_rotated_scan():
    s = simulate_phase_dataset(scan_shape=(32, 32), step_A=0.25, phase_per_atom_rad=0.1, rotation_deg=25.0, seed=1)
    corr, _ = phase_correlation_with_truth(ssb(s.datacube).data, s.phase_at_scan)
    assert corr >= 0.95


def test_ssb_at_a_dose_of_1e6_per_A2():
    s = simulate_phase_dataset(scan_shape=(32, 32), step_A=0.25, phase_per_atom_rad=0.1, seed=1, dose_e_per_A2=1e6)
    corr, _ = phase_correlation_with_truth(ssb(s.datacube).data, s.phase_at_scan)
    assert corr >= 0.85  # measured 0.93 (Poisson noise, 62500 electrons per pattern)


@pytest.fixture(scope="module")
def low_dose():
    # 1e4 e/A^2 at 0.25 A steps: 625 electrons a pattern, about 1.4 in a bright-field pixel
    return simulate_phase_dataset(scan_shape=(32, 32), step_A=0.25, phase_per_atom_rad=0.1, seed=3, dose_e_per_A2=1e4)


def test_ssb_measures_the_shot_noise_it_filters(low_dose):
    s = low_dose
    r = ssb(s.datacube)
    # Poisson: a pixel's variance is its mean count; over the scan, var G(k, Q) = N_R <I> / scale^2 with
    # scale = <I> (top-hat probe): sigma^2 = N_R / <I>, <I> the mean count of pixels well inside the disk
    data = np.asarray(s.datacube.data, float)
    ky, kx = np.indices(data.shape[2:]) - data.shape[2] // 2
    inner = np.hypot(ky, kx) < 0.8 * 12.0
    expected = data.shape[0] * data.shape[1] / data[:, :, inner].mean()
    assert r.params["noise_variance"] == pytest.approx(expected, rel=0.1)


def test_ssb_wiener_term_from_the_data_beats_the_fixed_one_at_low_dose(low_dose, focused):
    s = low_dose
    measured = phase_correlation_with_truth(ssb(s.datacube).data, s.phase_at_scan)[0]
    fixed = phase_correlation_with_truth(ssb(s.datacube, regularization=0.05).data, s.phase_at_scan)[0]
    assert measured > fixed + 0.05
    # noise-free: the measured term leaves the deconvolution as it was (within 0.01)
    clean = phase_correlation_with_truth(ssb(focused.datacube).data, focused.phase_at_scan)[0]
    before = phase_correlation_with_truth(ssb(focused.datacube, regularization=0.05).data, focused.phase_at_scan)[0]
    assert clean >= before - 0.01 and clean >= 0.95
