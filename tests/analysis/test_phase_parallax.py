"""Parallax / tilt-corrected BF: planted defocus, astigmatism and rotation recovered.

Data: our thin-object forward model (analysis.phase.forward), 300 kV, 20 mrad, an amorphous
weak phase object, scan step 0.5 A, 32 x 32 positions, 64 x 64 detector.
"""

import math

import numpy as np
import pytest

from napari_4dstem.analysis.phase.forward import simulate_phase_dataset
from napari_4dstem.analysis.phase.parallax import _decompose, parallax
from napari_4dstem.errors import CalibrationError


@pytest.mark.parametrize("defocus_A", [0.0, 50.0, 120.0, -150.0])
def test_parallax_recovers_planted_defocus_within_1_nm(defocus_A):
    s = simulate_phase_dataset(scan_shape=(32, 32), defocus_A=defocus_A, step_A=0.5, seed=3)
    r = parallax(s.datacube)
    # the target: within 1 nm of the simulated defocus (measured: within 0.2 nm)
    assert r.defocus_A == pytest.approx(defocus_A, abs=10.0)
    if abs(defocus_A) < 60:
        # the shift model alone is biased near focus (+15 A at 5 nm, +40 A at 0): the
        # transfer-model refinement is what brings it within 1 nm
        assert abs(r.image.params["fit"]["shift_fit"]["defocus_A"] - defocus_A) > abs(r.defocus_A - defocus_A)
    assert r.astig_A < 5.0
    assert abs(r.rotation_residual_deg) < 1.0
    assert r.image.data.shape == (64, 64)
    assert r.image.calibration.scan_step == (0.25, 0.25)
    if abs(defocus_A) < 60:
        return  # near focus the images hardly shift: nothing more to check
    # the measured shifts follow d = lambda * defocus * k (in scan pixels)
    lam = s.probe.wavelength_A
    expected = lam * defocus_A * r.k_inv_A / 0.5
    resid = (r.shifts_px - r.shifts_px.mean(0)) - (expected - expected.mean(0))
    assert np.sqrt(np.mean(resid**2)) < 0.15 * np.abs(expected).max()


def test_parallax_recovers_astigmatism_and_an_unaccounted_rotation():
    s = simulate_phase_dataset(
        scan_shape=(32, 32), defocus_A=150.0, astig_A=30.0, astig_angle_deg=20.0, rotation_deg=10.0, step_A=0.5, seed=4
    )
    r = parallax(s.datacube, calibration=s.datacube.calibration.replace(rotation_deg=0.0))
    assert r.defocus_A == pytest.approx(150.0, abs=10.0)
    assert r.astig_A == pytest.approx(30.0, abs=5.0)
    assert r.astig_angle_deg == pytest.approx(20.0, abs=5.0)
    assert r.rotation_residual_deg == pytest.approx(10.0, abs=1.0)
    # with the right rotation in the calibration nothing is left over
    r2 = parallax(s.datacube)
    assert abs(r2.rotation_residual_deg) < 1.0


def test_decompose_inverts_the_shift_model():
    # M = R(theta) S with S = -C, C = -defocus I + astig [[-cos2a, sin2a], [sin2a, cos2a]]
    df, a, ang, th = 80.0, 12.0, 33.0, -7.0
    c2, s2 = np.cos(np.radians(2 * ang)), np.sin(np.radians(2 * ang))
    cm = -df * np.eye(2) + a * np.array([[-c2, s2], [s2, c2]])
    t = np.radians(th)
    rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    out = _decompose(rot @ -cm)
    np.testing.assert_allclose(out, (df, a, ang, th), atol=1e-9)


def test_parallax_needs_a_calibrated_dataset():
    s = simulate_phase_dataset(scan_shape=(8, 8), step_A=0.5)
    cube = s.datacube
    from napari_4dstem import DataCube

    bare = DataCube(cube.data, cube.calibration.replace(convergence_semiangle_mrad=None))
    with pytest.raises(CalibrationError, match="convergence"):
        parallax(bare)


# The defocus gate (ParallaxResult.defocus_confident: |defocus| >= 3 jackknife standard errors and
# a parametric bootstrap test of "no aberrations" at p <= 0.05). Data: the 16 x 16 thin-object scan
# of the ptychography tests (0.5 A step, 48 px detector). Designed on seeds 1 and 4 (4: the
# in-focus 1e4 scan of the review); the thresholds (3 SE, p 0.05, 19 bootstrap draws) were fixed
# beforehand, not tuned; these tests use seed 5, held out (measured values in the comments).
def _small(defocus_A, dose, seed=5):
    return simulate_phase_dataset(
        scan_shape=(16, 16), detector_px=48, step_A=0.5, defocus_A=defocus_A, seed=seed, dose_e_per_A2=dose
    )


@pytest.mark.parametrize(("defocus_A", "dose"), [(50.0, None), (100.0, None), (200.0, None), (50.0, 1e4)])
def test_defocus_gate_passes_a_planted_defocus(defocus_A, dose):
    r = parallax(_small(defocus_A, dose).datacube)
    # the 1 nm; measured 48.5, 95.7, 194 noise-free, 44.7 at 1e4 (SE 0.1-0.4 A)
    assert r.defocus_A == pytest.approx(defocus_A, abs=10.0)
    assert r.defocus_confident and abs(r.defocus_A) >= 3 * r.defocus_se_A
    conf = r.image.params["fit"]["confidence"]
    assert conf["confident"] and conf["p_value"] <= 0.05


@pytest.mark.parametrize("dose", [1e3, 1e4])
def test_defocus_gate_stops_a_noise_fit_in_focus(dose):
    r = parallax(_small(0.0, dose).datacube)
    # measured: 1e4 1.3 +- 1.7 A (p 1.0), 1e3 20 +- 300 A (p 0.6): both not distinguishable from 0
    assert not r.defocus_confident
    assert r.image.params["fit"]["confidence"]["confident"] is False


def test_fit_confidence_stops_a_fit_at_the_grid_edge_or_beyond_the_trusted_range():
    """The best defocus on the searched grid's edge (the true one may lie beyond: the review's
    planted 500 A once read 393 A there with SE 0) or beyond the trusted range is not confident,
    however small its standard error (floored at 0.5 A)."""
    from napari_4dstem.analysis.phase.parallax import _fit_confidence

    null = np.linspace(0.0, 1.0, 19)
    ok = _fit_confidence(393.0, np.full(4, 393.0), 10.0, null, reach_A=434.0, trusted_A=600.0)
    assert ok["confident"] and ok["defocus_se_A"] == 0.5 and ok["reason"] == ""
    edge = _fit_confidence(393.0, np.full(4, 393.0), 10.0, null, at_edge=True, reach_A=434.0)
    assert not edge["confident"] and "edge" in edge["reason"]
    far = _fit_confidence(-700.0, np.full(4, -700.0), 10.0, null, trusted_A=630.0)
    assert not far["confident"] and not far["within_trusted_range"] and "wider than" in far["reason"]


def test_a_defocus_beyond_the_old_grid_is_found():
    """Planted 500 A on a 16 A field (32 x 32 scan, seed 21, noise-free; the review's case): the
    grid reached max(300 A, 1.5 x the shift fit's defocus) and the fit stopped at its edge (393 A,
    gated off). The grid now reaches 2.5 x the trusted defocus (630 A here), and the fit finds it
    (measured 487.0 +- 0.5 A; the finite field reads it 2.6 % short, as noise-free 20 nm on 8 A)."""
    s = simulate_phase_dataset(scan_shape=(32, 32), defocus_A=500.0, step_A=0.5, seed=21)
    r = parallax(s.datacube)
    conf = r.image.params["fit"]["confidence"]
    assert r.defocus_A == pytest.approx(500.0, abs=20.0)
    assert conf["grid_reach_A"] > 1500 and not conf["at_grid_edge"] and conf["within_trusted_range"]
    assert r.defocus_confident


@pytest.mark.parametrize(("defocus_A", "seed"), [(800.0, 21), (-800.0, 22), (1200.0, 1)])
def test_a_probe_wider_than_the_field_is_gated_off(defocus_A, seed):
    """Planted +-800 A on a 16 A field (32 x 32 scan at 0.5 A): the probe (32 A across) is wider
    than the field, most BF pixels' images are shifted by more than half of it, and the old fit
    read -212.6, +216.8 and -218.9 A (wrong optima inside its 300 A grid) and passed the gate.
    Now the grid reaches 2.5 x the trusted defocus (630 A: half the BF pixels shifted by at most
    half the field), the fit lands beyond it (measured 771, -770 and 1154 A) and the gate says why
    it is off (at 1.5 x the 1200 A read -603 A, inside the range, and passed)."""
    s = simulate_phase_dataset(scan_shape=(32, 32), defocus_A=defocus_A, step_A=0.5, seed=seed)
    r = parallax(s.datacube)
    conf = r.image.params["fit"]["confidence"]
    assert not r.defocus_confident and conf["confident"] is False
    assert not conf["within_trusted_range"] and conf["trusted_defocus_A"] == pytest.approx(630.0, rel=0.05)
    assert "wider than" in conf["reason"]
    assert np.sign(r.defocus_A) == np.sign(defocus_A)  # no longer the wrong sign


@pytest.mark.parametrize("seed", [1, 5])
def test_low_dose_defocus_is_not_shortened_by_the_shift_fields_rotation(seed):
    """At 1e4 e/A^2 on the 16 x 16 scan (8 A field) the cross-correlation shifts are noise (shift
    fit r2 < 0.01) and their fitted rotation too (28 and -32 deg on seeds 1 and 5); the transfer
    fit made at that rotation read a planted 100 A as 68.8 and 67.8 A (cos 30 deg short, the rest
    into astigmatism: 48 and 55 A). The refinement now also searches at the calibration's rotation
    and keeps the rotation that captures more energy (measured 102.3 and 98.5 A)."""
    r = parallax(_small(100.0, 1e4, seed=seed).datacube)
    fit = r.image.params["fit"]
    assert abs(fit["shift_fit"]["rotation_residual_deg"]) > 5.0  # the noisy shift field's rotation
    # the calibration's (right) rotation is found: since version 2 the rotation is scanned and
    # refined, no longer one of two candidates (measured -1.2 and -2.0 deg)
    assert abs(fit["confidence"]["rotation_deg"]) < 3.0 and abs(r.rotation_residual_deg) < 3.0
    assert r.defocus_A == pytest.approx(100.0, abs=10.0)  # the 1 nm
    assert r.astig_A < 15.0


def test_the_bootstrap_yields_between_surrogates_and_stops_at_once():
    """Cancel reaches a job only where it yields. The bootstrap drew its 19 surrogates and
    evaluated them in one step (about 20 s and 0.5 GB at a 256 x 256 scan, review); it now yields
    after each surrogate and each grid chunk, on at most 64 x 64 positions: every step of the
    bootstrap well under 0.5 s (measured 0.07-0.09 s at load 8 on a 64 x 64 scan), and closing the
    job there (what the dock's Cancel does) ends it at once."""
    import time

    from napari_4dstem.analysis.phase.parallax import iter_parallax

    s = simulate_phase_dataset(scan_shape=(32, 32), defocus_A=100.0, step_A=0.5, seed=3)
    job = iter_parallax(s.datacube)
    stamps = []
    try:
        while True:
            p = next(job)
            stamps.append((time.perf_counter(), p.message))
    except StopIteration as done:
        r = done.value
    assert r.defocus_A == pytest.approx(100.0, abs=10.0)
    boot = [i for i, (_, m) in enumerate(stamps) if "against noise" in m]
    assert len(boot) >= 19 + 1  # one a surrogate, then the grid chunks
    gaps = [stamps[i][0] - stamps[i - 1][0] for i in boot[1:]]
    assert max(gaps) < 0.5, gaps
    # cancelled at the first surrogate: the generator ends there, nothing more runs
    job = iter_parallax(s.datacube)
    for p in job:
        if "against noise" in p.message:
            break
    t = time.perf_counter()
    job.close()
    assert time.perf_counter() - t < 0.1
    with pytest.raises(StopIteration):
        next(job)


# Session 13 (version 2 of the refinement). A rotation the calibration does not hold: the data
# simulated at 20 deg, the calibration saying 0 (the review's case: version 1 searched only the
# calibration's and the shift field's rotation, which is noise at 1e4, kept 0 and read 82 A for
# 100 A with 26-30 A of astigmatism, confident). Not held out: docs/phase.md (session 13) lists
# seeds 1, 3, 5 and 6 as the ones the rotation work (the 10 deg step, the 3 deg SE limit) was
# designed on, seed 3 among them; the held-out figures are bench_parallax_defocus.py's (seeds 31-43).
def test_a_rotation_the_calibration_misses_is_found_or_the_fit_is_not_trusted():
    s = simulate_phase_dataset(
        scan_shape=(16, 16), detector_px=48, step_A=0.5, defocus_A=100.0, seed=3, dose_e_per_A2=1e4, rotation_deg=20.0
    )
    r = parallax(s.datacube, calibration=s.datacube.calibration.replace(rotation_deg=0.0))
    conf = r.image.params["fit"]["confidence"]
    # measured: rotation 20.3 deg (SE 1.2), 99.3 +- 2.7 A, astigmatism 2.1 A, confident (version 1:
    # rotation 0, 96.3 A with 19.1 A of astigmatism, confident)
    assert r.rotation_residual_deg == pytest.approx(20.0, abs=3.0)
    assert r.astig_A < 10.0
    if r.defocus_confident:  # never a confident wrong answer
        assert r.defocus_A == pytest.approx(100.0, abs=10.0)
        assert conf["rotation_determined"] and conf["rotation_se_deg"] <= 3.0
    # version 1 replays the old search: the calibration's rotation kept, and it checked no rotation,
    # so its confidence does not say the rotation is determined (it said True, SE NaN: review)
    old = parallax(s.datacube, calibration=s.datacube.calibration.replace(rotation_deg=0.0), version=1)
    assert old.rotation_residual_deg == 0.0 and old.image.params["version"] == 1
    old_conf = old.image.params["fit"]["confidence"]
    assert old_conf["rotation_determined"] is None and old_conf["rotation_se_deg"] is None
    assert conf["rotation_residual_deg"] == pytest.approx(r.rotation_residual_deg)


@pytest.mark.parametrize(("rotation_deg", "defocus_A"), [(88.0, 100.0), (-92.0, -100.0)])
def test_a_rotation_near_a_quarter_turn_is_kept_within_90_deg_and_not_trusted(rotation_deg, defocus_A):
    """A half turn of the scan is the same shift field with the aberrations' sign flipped, so the
    defocus's sign is defined only by keeping the rotation within +-90 deg of the calibration's. The
    refined rotation was not wrapped: data at 88 deg (calibration 0, 1e5 e/A^2) read -98 A for
    +100 A at -92.1 deg, confident (review, seed 3). Now the rotation is wrapped (88 deg, +100 A;
    data at -92 deg is data at 88 deg with -100 A: that is what it reads), and a rotation more than
    45 deg from the calibration's is not trusted: the sign is a guess there. Seed 8 (the review's
    was 3); measured 95.9 A at 87.9 deg and -95.0 A at 87.4 deg, both gated off (before: -95.9 A at
    -92.1 deg and -95.0 A at 87.4 deg, both confident)."""
    s = simulate_phase_dataset(scan_shape=(16, 16), detector_px=48, step_A=0.5, defocus_A=100.0, seed=8,
                               dose_e_per_A2=1e5, rotation_deg=rotation_deg)  # fmt: skip
    r = parallax(s.datacube, calibration=s.datacube.calibration.replace(rotation_deg=0.0))
    conf = r.image.params["fit"]["confidence"]
    assert -90.0 <= r.rotation_residual_deg < 90.0
    assert r.rotation_residual_deg == pytest.approx(88.0, abs=3.0)
    assert r.defocus_A == pytest.approx(defocus_A, abs=10.0)
    assert not r.defocus_confident and "sign" in conf["reason"]
    assert conf["rotation_within_sign_range"] is False


def test_wrap_rotation_and_the_gate_on_a_rotation_far_from_the_calibration():
    from napari_4dstem.analysis.phase.parallax import _fit_confidence, _wrap_rotation

    assert _wrap_rotation(-92.1, 0.0) == pytest.approx(87.9)
    assert _wrap_rotation(90.0, 0.0) == -90.0 and _wrap_rotation(-90.0, 0.0) == -90.0
    assert _wrap_rotation(19.2096327499193, 0.0) == 19.2096327499193  # unchanged, to the bit
    assert _wrap_rotation(-71.0, 20.0) == pytest.approx(109.0)
    null = np.linspace(0.0, 1.0, 19)
    kw = dict(rotation_deg=60.0, reach_A=800.0, trusted_A=600.0, left_out_rotation_deg=np.full(4, 60.0))
    ok = _fit_confidence(100.0, np.full(4, 100.0), 10.0, null, rotation_residual_deg=40.0, **kw)
    assert ok["confident"] and ok["rotation_within_sign_range"]
    far = _fit_confidence(100.0, np.full(4, 100.0), 10.0, null, rotation_residual_deg=-60.0, **kw)
    assert not far["confident"] and not far["rotation_within_sign_range"] and "sign" in far["reason"]
    v1 = _fit_confidence(100.0, np.full(4, 100.0), 10.0, null, reach_A=800.0, trusted_A=600.0)
    assert v1["confident"] and v1["rotation_determined"] is None and v1["rotation_se_deg"] is None


def test_fit_confidence_stops_an_undetermined_rotation():
    from napari_4dstem.analysis.phase.parallax import _fit_confidence

    null = np.linspace(0.0, 1.0, 19)
    kw = dict(rotation_deg=20.0, reach_A=800.0, trusted_A=600.0)
    ok = _fit_confidence(100.0, np.full(4, 100.0), 10.0, null, left_out_rotation_deg=np.array([19, 20, 21, 20.0]), **kw)
    assert ok["confident"] and ok["rotation_determined"] and ok["rotation_se_deg"] < 3.0
    wide = _fit_confidence(
        100.0, np.full(4, 100.0), 10.0, null, left_out_rotation_deg=np.array([5, 20, 35, 20.0]), **kw
    )
    assert not wide["confident"] and not wide["rotation_determined"] and "rotation" in wide["reason"]


def test_the_bootstrap_window_is_where_the_bf_images_vary():
    """The bootstrap's 64 x 64 block: where the BF images vary most, not the scan's centre."""
    from napari_4dstem.analysis.phase.parallax import _signal_window

    rng = np.random.default_rng(0)
    imgs = 0.01 * rng.standard_normal((6, 96, 96))  # noise everywhere (vacuum)
    imgs[:, 50:90, 4:40] += rng.standard_normal((6, 40, 36))  # the specimen in one corner
    y0, x0 = _signal_window(imgs, np.arange(6), 64, 64)
    assert y0 <= 50 and y0 + 64 >= 90 and x0 <= 4 and x0 + 64 >= 40
    assert _signal_window(np.zeros((6, 128, 128)), np.arange(6), 64, 64) == (32, 32)  # flat: the centre


def test_the_bootstrap_window_is_on_a_darker_specimen_not_a_brighter_vacuum():
    """A specimen scatters out of the BF disk: every BF pixel's image is darker there, alike. The
    window scored the squared images summed over the pixels, so a vacuum corner 10 % brighter than
    the specimen won (review: 77-100 % of the window vacuum). Scored by the variance across the
    pixels at each position, the shared brightness cancels and the specimen (each pixel sees it
    shifted) wins. 128 x 128 scan, vacuum in the top-left 56 x 56 corner, 24 pixels, each seeing the
    same smooth texture (3 % contrast) shifted by its own parallax, Poisson-like noise."""
    from scipy.ndimage import gaussian_filter, shift

    from napari_4dstem.analysis.phase.parallax import _signal_window

    rng = np.random.default_rng(11)
    n, size, corner = 24, 128, 56
    texture = gaussian_filter(rng.standard_normal((size + 16, size + 16)), 1.5)
    texture *= 0.03 / texture.std()
    specimen = np.ones((size, size), bool)
    specimen[:corner, :corner] = False
    angles = 2 * np.pi * np.arange(n) / n
    imgs = np.empty((n, size, size))
    for i, a in enumerate(angles):
        t = shift(texture, (3 * np.sin(a), 3 * np.cos(a)), order=1, mode="wrap")[8:-8, 8:-8]
        level = np.where(specimen, 0.9 * (1 + t), 1.0)  # the specimen 10 % darker, its texture shifted
        imgs[i] = level + 0.01 * rng.standard_normal((size, size))
    imgs = imgs / imgs.mean(axis=(1, 2), keepdims=True) - 1  # as parallax normalises them
    y0, x0 = _signal_window(imgs, np.arange(n), 64, 64)
    block = np.zeros((size, size), bool)
    block[y0 : y0 + 64, x0 : x0 + 64] = True
    assert (block & ~specimen).sum() == 0, (y0, x0)  # no vacuum in the window


@pytest.mark.slow
def test_a_vacuum_centre_does_not_stop_a_clear_defocus():
    """The review's case: a 128 x 128 scan whose central positions are vacuum, 1e5 e/A^2, planted
    300 A. Version 1 drew the bootstrap on the central 64 x 64 positions (vacuum: its null as
    large as the fit's gain) and said "not confident" (298.6 +- 1.1 A, p 0.65 in the review); the
    block where the BF images vary most holds the specimen."""
    import math

    from napari_4dstem.analysis.phase.forward import probe_positions_px, random_atoms_phase
    from napari_4dstem.analysis.phase.probe import ProbeModel

    scan, det, bf, hole, seed = 128, 32, 8.0, 80, 3
    pixel_A = 1.0 / (det * ProbeModel(300.0, 20.0).k_aperture_inv_A / bf)
    pad = det // 2 + 4
    pos = probe_positions_px((scan, scan), step_A=(0.5, 0.5), pixel_A=pixel_A) + pad
    shape = tuple(math.ceil(v) + det // 2 + pad + 2 for v in pos.max(axis=0))
    ph = random_atoms_phase(shape, pixel_A=pixel_A, seed=seed)
    a, b = (math.ceil((scan + sign * hole) / 2 * 0.5 / pixel_A + pad) for sign in (-1, 1))
    ph[a:b, a:b] = 0.0  # vacuum where the central 80 x 80 positions are
    s = simulate_phase_dataset(scan_shape=(scan, scan), detector_px=det, bf_radius_px=bf, step_A=0.5,
                               defocus_A=300.0, seed=seed, dose_e_per_A2=1e5, phase=ph)  # fmt: skip
    r = parallax(s.datacube)
    conf = r.image.params["fit"]["confidence"]
    assert r.defocus_A == pytest.approx(300.0, abs=10.0)
    assert r.defocus_confident, conf["reason"]
    y0, x0 = conf["bootstrap_origin"]
    assert (y0, x0) != (32, 32)  # not the centre


@pytest.mark.slow
def test_the_bootstrap_window_on_a_simulated_scan_with_a_darker_specimen():
    """The review's case on simulated data: a 128 x 128 scan (0.5 A, 32 px detector, 1e5 e/A^2,
    planted 300 A) with vacuum at the top-left 56 x 56 positions, the specimen's counts x 0.9
    (scattered out of the BF disk). The summed squares put the window at (0, 0), 77 % vacuum
    (seeds 9 and 10, not used before); the variance across the pixels keeps it on the specimen, where
    it is without the darkening."""
    import math

    from napari_4dstem.analysis.phase._common import Geometry, bf_pixels
    from napari_4dstem.analysis.phase.forward import probe_positions_px, random_atoms_phase
    from napari_4dstem.analysis.phase.parallax import _signal_window
    from napari_4dstem.analysis.phase.probe import ProbeModel

    scan, det, bf, corner, seed = 128, 32, 8.0, 56, 9
    pixel_A = 1.0 / (det * ProbeModel(300.0, 20.0).k_aperture_inv_A / bf)
    pad = det // 2 + 4
    pos = probe_positions_px((scan, scan), step_A=(0.5, 0.5), pixel_A=pixel_A) + pad
    shape = tuple(math.ceil(v) + det // 2 + pad + 2 for v in pos.max(axis=0))
    ph = random_atoms_phase(shape, pixel_A=pixel_A, seed=seed)
    b = math.ceil(corner * 0.5 / pixel_A + pad)
    ph[:b, :b] = 0.0
    s = simulate_phase_dataset(scan_shape=(scan, scan), detector_px=det, bf_radius_px=bf, step_A=0.5,
                               defocus_A=300.0, seed=seed, dose_e_per_A2=1e5, phase=ph)  # fmt: skip
    geo = Geometry.of(s.datacube, s.datacube.calibration)
    iy, ix = bf_pixels(geo, ProbeModel.from_calibration(s.datacube.calibration), fraction=0.9)
    vac = np.zeros((scan, scan), bool)
    vac[:corner, :corner] = True
    d = np.asarray(s.datacube.data, np.float64)[:, :, iy, ix]
    d[~vac] *= 0.9
    imgs = np.moveaxis(d, -1, 0)
    imgs = imgs / imgs.mean(axis=(1, 2), keepdims=True) - 1
    y0, x0 = _signal_window(imgs, np.arange(len(iy)), 64, 64)
    assert not vac[y0 : y0 + 64, x0 : x0 + 64].any(), (y0, x0)


# Session 14 (version 3): confident fits 1-2 nm off the planted defocus (issue #20). Cause found on
# the 16 x 16 tuning scans (seeds 1-6 and 31-33, noise-free and 1e4): a bias of the transfer fit, not
# of the cross-correlation (the refinement does not use the shifts' sub-pixel values). A scan is not
# periodic; the FFT wraps it, and the jumps between opposite edges sit at the same place in every
# BF pixel's image, a shared unshifted feature that pulls the fitted defocus toward 0 (noise-free
# 200 A read 193.7-194.5 A on seeds 1-3; on a 32 x 32 field 196.5-197.6 A). Version 3 fits each
# image's periodic component (Moisan's periodic-plus-smooth decomposition): 197.5-197.6 A and
# 198.7-199.2 A. And the SE was the jackknife's only (0.5 A, its floor, noise-free): every pixel
# group shares the finite field's error, so the interval it implied missed. Version 3 adds a
# finite-field term and states a 95 % interval (Student's t, 3 degrees of freedom).
def test_the_periodic_component_has_no_edge_jumps_and_keeps_a_periodic_image():
    from napari_4dstem.analysis.phase.parallax import _smooth_component_fft

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:20]
    # a periodic image (whole cycles) has a smooth component of its own edge jumps only, and a
    # constant adds nothing
    per = np.cos(2 * np.pi * 3 * xx / 20) * np.sin(2 * np.pi * 2 * yy / 16)
    ramp = 0.3 * xx - 0.2 * yy + 5.0
    u = per + ramp + 0.01 * rng.standard_normal(per.shape)
    p = np.real(np.fft.ifft2(np.fft.fft2(u) - _smooth_component_fft(u)))
    # the wrapped jumps of the ramp (0.3 * 19 across x, 0.2 * 15 across y) are gone from p's
    # spectrum: its energy on the axis lines (where an edge jump puts a 1/Q cross) drops
    spec_u, spec_p = np.abs(np.fft.fft2(u - u.mean())), np.abs(np.fft.fft2(p - p.mean()))
    axes = np.zeros(u.shape, bool)
    axes[0, :] = axes[:, 0] = True
    axes[0, 0] = False
    assert np.sum(spec_p[axes] ** 2) < 0.05 * np.sum(spec_u[axes] ** 2)
    # away from the edges p is the image less a smooth field: the periodic pattern is kept
    inner = (slice(4, 12), slice(4, 16))
    c = np.corrcoef((p - p.mean())[inner].ravel(), per[inner].ravel())[0, 1]
    assert c > 0.9
    # an image without edge jumps (constant) has no smooth component
    assert np.allclose(_smooth_component_fft(np.full((8, 8), 3.0)), 0.0)


@pytest.mark.parametrize("seed", [7, 8])
def test_noise_free_defocus_is_no_longer_read_short_by_the_fields_edges(seed):
    """Planted 200 A on the 16 x 16 scan (8 A field, 63 % of the 315 A trusted defocus), noise-free,
    seeds 7 and 8 (not used in the tuning): version 2 read it 1.5-3.5 % short with SE 0.5 A
    (193.7-194.5 A on seeds 1-3), so "confident" held a 6 A error 12 SE wide. Version 3 (the
    default) reads it within 4 A and the planted value lies in its stated 95 % interval."""
    s = _small(200.0, None, seed=seed)
    r = parallax(s.datacube)
    assert r.defocus_A == pytest.approx(200.0, abs=4.0)
    assert r.image.params["version"] == 3
    assert r.defocus_confident
    lo, hi = r.defocus_interval_A
    assert lo <= 200.0 <= hi and hi - lo < 30.0  # the interval says something (measured ~25 A wide)
    conf = r.image.params["fit"]["confidence"]
    assert conf["defocus_se_A"] == pytest.approx(math.hypot(conf["defocus_se_jackknife_A"],
                                                            conf["defocus_systematic_A"]))  # fmt: skip
    # version 2 replays without an interval, and reads it shorter
    old = parallax(s.datacube, version=2)
    assert old.defocus_interval_A is None and "defocus_interval_A" not in old.image.params["fit"]["confidence"]
    assert old.defocus_A < r.defocus_A - 1.0


def test_a_confident_wrong_low_dose_fit_is_now_right_or_not_confident():
    """Session 13's held-out confident-wrong case: 1e3 e/A^2 (62 electrons a pattern), planted 200 A,
    data rotated 20 deg, the calibration saying 0, seed 32 (16 x 16 scan, 0.25 rad per atom).
    Version 2 read 225.1 +- 3.3 A at 9.8 deg, confident (its left-out groups agreed: 222.7-228.1 A).
    Version 3: either within its interval (and 1 nm) or not confident (measured: 278.6 A, the
    left-out groups spread -518 to 150 A, rotation 79 deg: not confident)."""
    s = simulate_phase_dataset(scan_shape=(16, 16), detector_px=48, step_A=0.5, defocus_A=200.0, seed=32,
                               dose_e_per_A2=1e3, rotation_deg=20.0)  # fmt: skip
    r = parallax(s.datacube, calibration=s.datacube.calibration.replace(rotation_deg=0.0))
    if r.defocus_confident:
        assert abs(r.defocus_A - 200.0) <= 10.0
        lo, hi = r.defocus_interval_A
        assert lo <= 200.0 <= hi
    else:
        assert r.image.params["fit"]["confidence"]["reason"]


def test_fit_confidence_states_an_interval_with_the_finite_field_term():
    from napari_4dstem.analysis.phase.parallax import T95_3DOF, _fit_confidence

    null = np.linspace(0.0, 1.0, 19)
    left = np.array([199.0, 201.0, 200.0, 200.0])
    v2 = _fit_confidence(200.0, left, 10.0, null)
    assert "defocus_interval_A" not in v2
    v3 = _fit_confidence(200.0, left, 10.0, null, systematic_A=4.0)
    se_jack = math.sqrt(3 / 4 * 2.0)
    assert v3["defocus_se_jackknife_A"] == pytest.approx(se_jack)
    assert v3["defocus_se_A"] == pytest.approx(math.hypot(se_jack, 4.0))
    assert v3["defocus_interval_A"] == pytest.approx([200.0 - T95_3DOF * v3["defocus_se_A"],
                                                      200.0 + T95_3DOF * v3["defocus_se_A"]])  # fmt: skip
    assert v3["interval_level"] == 0.95 and v3["confident"]


# Review of #20: the smooth component against a direct implementation of Moisan's definition (the
# boundary image v, its 2-D FFT divided by the periodic Laplacian's symbol, the DC set to 0), on
# random images of odd, even and non-square sizes, a stack included
def _moisan_smooth_fft(u):
    h, w = u.shape
    v = np.zeros_like(u)
    v[0, :] += u[-1, :] - u[0, :]
    v[-1, :] += u[0, :] - u[-1, :]
    v[:, 0] += u[:, -1] - u[:, 0]
    v[:, -1] += u[:, 0] - u[:, -1]
    den = 2 * np.cos(2 * np.pi * np.arange(h) / h)[:, None] + 2 * np.cos(2 * np.pi * np.arange(w) / w)[None, :] - 4
    den[0, 0] = 1.0
    s = np.fft.fft2(v) / den
    s[0, 0] = 0.0
    return s


@pytest.mark.parametrize("shape", [(4, 4), (5, 7), (16, 20), (17, 9), (3, 33)])
def test_the_smooth_component_is_moisans(shape):
    from napari_4dstem.analysis.phase.parallax import _smooth_component_fft

    u = np.random.default_rng(sum(shape)).standard_normal((3, *shape)) + 2.0
    got = _smooth_component_fft(u)
    for i in range(3):
        want = _moisan_smooth_fft(u[i])
        np.testing.assert_allclose(got[i], want, rtol=0, atol=1e-12 * np.abs(want).max())
        # p = u - s is periodic: its periodic Laplacian is u's free-boundary one (no edge jumps)
        p = u[i] - np.real(np.fft.ifft2(got[i]))
        lap_p = sum(np.roll(p, s, a) for s in (1, -1) for a in (0, 1)) - 4 * p
        pad = np.pad(u[i], 1, mode="edge")
        lap_free = pad[:-2, 1:-1] + pad[2:, 1:-1] + pad[1:-1, :-2] + pad[1:-1, 2:] - 4 * u[i]
        np.testing.assert_allclose(lap_p, lap_free, atol=1e-9)


def test_the_smooth_component_allocates_one_array_of_the_chunks_size():
    """Its docstring's (and ``_spectra``'s 32 MiB chunk bound's) claim: the second outer product
    was a whole-chunk temporary, a peak of twice the result (measured 32.5 MiB for 16 MiB)."""
    import tracemalloc

    from napari_4dstem.analysis.phase.parallax import _smooth_component_fft

    u = np.random.default_rng(0).standard_normal((16, 128, 160))
    tracemalloc.start()
    try:
        out = _smooth_component_fft(u)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.25 * out.nbytes, (peak, out.nbytes)


def test_a_nan_in_the_bright_field_is_refused_not_fitted():
    """Review of #20: one NaN detector pixel inside the BF disk (planted 100 A) made every spectrum
    NaN, and the fit returned defocus 0.0 +- 0.5 A with a stated "95 % interval -1.6 to 1.6 A", a
    number the data never held. The project's rule for NaN where an analysis reads it
    (``NonFiniteDataError``, as the virtual images) now holds here."""
    from napari_4dstem.errors import NonFiniteDataError

    s = simulate_phase_dataset(scan_shape=(12, 10), detector_px=48, step_A=0.5, defocus_A=100.0, seed=5)
    data = np.array(s.datacube.data, dtype=np.float32)
    data[3, 4, 24, 24] = np.nan  # the disk's centre at one scan position
    cube = type(s.datacube)(data, s.datacube.calibration)
    with pytest.raises(NonFiniteDataError, match=r"\(3, 4\)"):
        parallax(cube)
    data[3, 4, 24, 24] = s.datacube.data[3, 4, 24, 24]
    data[3, 4, 0, 0] = np.inf  # outside the BF disk: not read, the fit runs
    assert abs(parallax(type(s.datacube)(data, s.datacube.calibration)).defocus_A - 100.0) < 10.0
