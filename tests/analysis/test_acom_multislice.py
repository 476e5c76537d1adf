"""ACOM on dynamical (multislice) patterns: Bragg disks found by correlation, matched to the
kinematic plan. The bound is the measured figure with a margin (docs/performance.md,
"multislice patterns"; benchmarks/bench_acom_multislice.py)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem.analysis.acom.matching import match_orientations
from napari_4dstem.analysis.acom.plan import build_orientation_plan
from napari_4dstem.analysis.bragg.disks import find_bragg_disks
from napari_4dstem.analysis.bragg.probe import make_template
from napari_4dstem.analysis.crystal.structure import bundled_crystal
from napari_4dstem.analysis.crystal.symmetry import misorientation_deg
from napari_4dstem.data.calibration import Calibration
from napari_4dstem.data.datacube import DataCube
from napari_4dstem.simulation.engines import SimulationRequest
from napari_4dstem.simulation.multislice import MultisliceEngine
from napari_4dstem.simulation.samples import random_rotations

N, THICK_A, PIXEL, DOSE = 12, 100.0, 0.012, 1e5


@pytest.fixture(scope="module")
def thin_au_scan():
    """``N`` multislice patterns of 10 nm Au at random orientations (300 kV, 1.5 mrad,
    256 x 256 px of 0.012 1/A), Poisson noise at 1e5 electrons per pattern."""
    pytest.importorskip("torch")
    au = bundled_crystal("Au")
    rng = np.random.default_rng(2027)
    U = random_rotations(N, rng)
    eng = MultisliceEngine(device="cpu")
    pats, probe = [], None
    for i in range(N):
        r = eng.simulate(
            SimulationRequest(
                au,
                orientation=U[i],
                thicknesses_A=(THICK_A,),
                convergence_mrad=1.5,
                shape=(256, 256),
                pixel_size_inv_A=PIXEL,
            )
        )
        pats.append(r.patterns[0, 0])
        probe = r.probe
    data = rng.poisson(np.stack(pats) * DOSE).astype(np.float32)
    cal = Calibration(k_pixel_size=PIXEL, k_units="1/A", beam_energy_kev=300.0, origin_px=(128.0, 128.0))
    return DataCube(data.reshape(1, N, 256, 256), cal), probe * DOSE, U, au


@pytest.mark.slow
def test_acom_on_multislice_patterns(thin_au_scan):
    """Thin (10 nm) Au at random orientations, Poisson noise, disks found by correlation
    (``min_relative=3e-4``: the default 0.03 keeps only 1-2 disks of a thin sample), matched
    with the settings for dynamical patterns (excitation width 0.04 1/A, intensity_power 0.25).

    Measured on these 12 patterns: median 0.92 deg, 8 within 2 deg (the failures are 38-59 deg
    off, mostly low-Sigma CSL rotations such as the Sigma3 twin); the defaults (0.02 1/A, 0.5)
    give median 1.6 deg, 6 within 2 deg. On 64 such patterns (benchmark) the dynamical settings
    give 72 % within 2 deg, so the bounds leave a margin of one pattern and 0.6 deg.
    """
    cube, probe, U, au = thin_au_scan
    peaks = find_bragg_disks(cube, template=make_template(probe), min_relative=3e-4)
    assert np.median(peaks.counts()) >= 10  # central beam and ~15 Bragg disks per pattern
    plan = build_orientation_plan(au, energy_kev=300, k_max_inv_A=1.5, step_deg=2.0, excitation_width_inv_A=0.04)
    res = match_orientations(peaks, plan, min_peaks=3, intensity_power=0.25)
    mis = misorientation_deg(res.orientation[0, :, 0], U, au.point_group)
    mis = np.nan_to_num(mis, nan=180.0)
    assert np.median(mis) < 1.5
    assert np.sum(mis < 2.0) >= 7
