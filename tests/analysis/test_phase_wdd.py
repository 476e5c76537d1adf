"""WDD direct ptychography against planted thin objects (thin-object forward model).

300 kV, 20 mrad, scan step 0.25 A, 32 x 32 positions, 64 x 64 detector, amorphous objects. The
truth is the object phase at the probe positions; offset and linear ramp removed. Measured
(noise-free): correlation 0.96-0.98 from 0.1 to 2 rad per atom, on par with SSB (0.97); at
1e5 e/A^2 0.94 (SSB 0.95).
"""

import dask.array as da
import numpy as np
import pytest

from napari_4dstem import DataCube
from napari_4dstem.analysis.phase._common import phase_correlation_with_truth
from napari_4dstem.analysis.phase.forward import simulate_phase_dataset
from napari_4dstem.analysis.phase.wdd import wdd
from napari_4dstem.errors import CalibrationError


@pytest.fixture(scope="module")
def weak():
    return simulate_phase_dataset(scan_shape=(32, 32), step_A=0.25, phase_per_atom_rad=0.1, seed=1)


def test_wdd_recovers_a_weak_phase_object(weak):
    r = wdd(weak.datacube)
    assert r.data.shape == (32, 32) and r.units == "rad" and r.params["method"] == "wdd"
    corr, rms = phase_correlation_with_truth(r.data, weak.phase_at_scan)
    assert corr >= 0.95  # measured 0.963
    assert rms < 0.45 * weak.phase_at_scan.std()


def test_wdd_recovers_a_strong_phase_object_without_the_weak_phase_approximation():
    """2 rad per atom (phase std 0.43 rad, peaks near pi): no linearisation in WDD."""
    s = simulate_phase_dataset(scan_shape=(32, 32), step_A=0.25, phase_per_atom_rad=2.0, seed=1)
    corr, _ = phase_correlation_with_truth(wdd(s.datacube, regularization=1e-4).data, s.phase_at_scan)
    assert corr >= 0.95  # measured 0.976


def test_wdd_streams_uneven_chunks_and_lazy_data_to_the_same_result(weak):
    ref = wdd(weak.datacube).data
    lazy = DataCube(da.from_array(np.asarray(weak.datacube.data), chunks=(5, 7, 64, 64)), weak.datacube.calibration)
    np.testing.assert_allclose(wdd(lazy, scan_chunk=(5, 7), q_batch=37).data, ref, rtol=1e-3, atol=1e-5)


def test_wdd_corrects_a_known_defocus_and_a_rotated_scan():
    s = simulate_phase_dataset(
        scan_shape=(32, 32), step_A=0.25, phase_per_atom_rad=0.1, defocus_A=60.0, rotation_deg=25.0, seed=2
    )
    with_probe = phase_correlation_with_truth(wdd(s.datacube, probe=s.probe).data, s.phase_at_scan)[0]
    without = phase_correlation_with_truth(wdd(s.datacube).data, s.phase_at_scan)[0]
    assert with_probe >= 0.93
    assert with_probe > without + 0.03


def test_wdd_refuses_what_it_cannot_do(weak):
    with pytest.raises(ValueError, match="regularization"):
        wdd(weak.datacube, regularization=0.0)
    with pytest.raises(ValueError, match="k_max_alpha"):
        wdd(weak.datacube, k_max_alpha=0.5)
    cal = weak.datacube.calibration.replace(origin_px=(0.0, 0.0))
    with pytest.raises(CalibrationError, match="edge"):
        wdd(weak.datacube, calibration=cal)
