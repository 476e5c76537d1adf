"""Centre of mass, origin and descan fit, DPC rotation and iDPC on planted synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem import Calibration, DataCube
from napari_4dstem.analysis.virtual.com import center_of_mass
from napari_4dstem.analysis.virtual.detectors import DiskDetector
from napari_4dstem.analysis.virtual.dpc import (
    MIN_ROTATION_CONFIDENCE,
    IllConditionedRotationWarning,
    RotationFit,
    com_shifts,
    dpc,
    fit_dpc_rotation,
    idpc,
    rotate_to_scan,
)
from napari_4dstem.analysis.virtual.images import NonFiniteDataError
from napari_4dstem.analysis.virtual.origin import find_bf_disk, fit_origin_plane, measure_origin
from napari_4dstem.errors import CalibrationError, DataShapeError

DET = (48, 48)
C0 = np.array([23.3, 24.6])


def _beam_shift_field(scan):
    iy, ix = np.indices(scan, dtype=np.float64)
    return np.stack([1.5 * np.sin(2 * np.pi * ix / scan[1]), -1.2 * np.cos(2 * np.pi * iy / scan[0])], -1)


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_com_recovers_planted_beam_shift(dtype, synth):
    scan = (9, 11)
    shift = _beam_shift_field(scan)
    # no background: a flat background would pull the COM towards the detector centre
    cube = synth.disk_cube(C0 + shift, det=DET, background=0.0, dtype=dtype)
    com = center_of_mass(cube, scan_chunk=(4, 3))
    assert com.channels == ("com_y", "com_x", "intensity")
    got = np.stack([com.channel("com_y"), com.channel("com_x")], -1)
    # noise-free soft disks: the centroid of the sampled disk is the planted centre
    tol = 2e-3 if dtype == np.float32 else 0.02  # uint16 rounds every pixel to a count
    np.testing.assert_allclose(got, C0 + shift, atol=tol)
    ref = cube.astype(np.float64).sum(axis=(2, 3))
    np.testing.assert_allclose(com.channel("intensity"), ref, rtol=1e-10)


def test_com_inside_detector_ignores_bragg_disk(synth):
    scan = (5, 6)
    shift = _beam_shift_field(scan)
    cube = synth.disk_cube(C0 + shift, det=DET, bragg=[(0.0, 24.0, 30.0)], background=0.0, dtype=np.float32)
    whole = center_of_mass(cube)
    inside = center_of_mass(cube, detector=DiskDetector(tuple(C0), 13.0))
    assert np.abs(whole.channel("com_x") - (C0[1] + shift[..., 1])).max() > 1.0
    np.testing.assert_allclose(inside.channel("com_x"), C0[1] + shift[..., 1], atol=0.01)
    assert inside.params["detector"]["kind"] == "disk"


def test_com_zero_pattern_and_nan():
    a = np.zeros((2, 3, 8, 8), np.float32)
    a[0, 0, 2, 3] = 1
    com = center_of_mass(a)
    assert com.channel("com_y")[0, 0] == 2 and com.channel("com_x")[0, 0] == 3
    assert np.isnan(com.channel("com_y")[1, 1])  # no intensity: undefined
    a[1, 2, 4, 4] = np.nan
    with pytest.raises(NonFiniteDataError, match=r"\(1, 2\)"):
        center_of_mass(a)
    assert np.isnan(center_of_mass(a, nan_policy="propagate").channel("com_x")[1, 2])


def _plane(scan):
    iy, ix = np.indices(scan, dtype=np.float64)
    return np.stack([0.012 * iy - 0.02 * ix, -0.015 * iy + 0.006 * ix], -1)


@pytest.mark.parametrize("method", ["disk", "com"])
def test_descan_plane_recovered(method, synth):
    rng = np.random.default_rng(7)
    scan = (32, 32)
    plane = _plane(scan)
    # DPC-like contrast on top of the descan, plus a few wild patterns (outliers)
    jitter = rng.normal(0, 0.05, (*scan, 2))
    wild = rng.random(scan) < 0.03
    jitter[wild] += rng.uniform(-4, 4, (int(wild.sum()), 2))
    bragg = [(0.0, 19.0, 4.0), (19.0, 0.0, 4.0), (0.0, -19.0, 4.0), (-19.0, 0.0, 4.0)]
    # the COM of a whole pattern is pulled towards the detector centre by any background, so
    # the COM method gets none; the disk method subtracts it
    bg = 0.5 if method == "disk" else 0.0
    c0 = C0 + 8  # a 64 x 64 detector holds the Bragg disks whole
    cube = synth.disk_cube(c0 + plane + jitter, det=(64, 64), bragg=bragg, background=bg, rng=rng)
    cube = DataCube(cube.astype(np.uint16))
    measured = measure_origin(cube, method=method)
    fit = fit_origin_plane(measured)
    err = np.abs(fit.origin_map_px - (c0 + plane)).max()
    assert err < 0.02, err
    assert not fit.inliers[wild].any()  # the wild ones were rejected
    cal = fit.to_calibration(cube.calibration)
    np.testing.assert_allclose(cal.origin_map_px, fit.origin_map_px)
    assert np.allclose(cal.origin_px, (c0 + plane).mean(axis=(0, 1)), atol=0.02)


def test_disk_origin_per_pattern_accuracy(synth):
    rng = np.random.default_rng(3)
    centers = C0 + rng.uniform(-2, 2, (6, 7, 2))
    cube = synth.disk_cube(centers, det=DET, bragg=[(0.0, 21.0, 20.0)], dtype=np.float32)
    got = measure_origin(cube, method="disk").data
    np.testing.assert_allclose(got, centers, atol=0.01)


def test_find_bf_disk(synth):
    p = 50 * synth.soft_disk(DET, (20.4, 26.1), 9.0) + 1.0
    bf = find_bf_disk(p)
    # a coarse start for measure_origin: thresholding costs a few hundredths of a pixel
    assert np.allclose(bf.center_px, (20.4, 26.1), atol=0.05)
    assert abs(bf.radius_px - 9.0) < 0.3
    with pytest.raises(DataShapeError, match="flat"):
        find_bf_disk(np.ones(DET))


def test_plane_fit_input_checks():
    with pytest.raises(DataShapeError):
        fit_origin_plane(np.zeros((4, 4)))
    with pytest.raises(DataShapeError, match="too few"):
        fit_origin_plane(np.full((3, 3, 2), np.nan))
    m = np.zeros((4, 5, 2)) + np.array([3.0, 4.0])
    fit = fit_origin_plane(m, method="mean")
    np.testing.assert_allclose(fit.origin_map_px, m)
    assert fit.residual_rms_px < 1e-12


def _planted_phase(scan, rng, n_atoms=25):
    """A periodic phase of Gaussian 'atoms' and its exact gradient (rad per scan pixel)."""
    ny, nx = scan
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.fftfreq(nx)[None, :]
    pos = rng.uniform(0, 1, (n_atoms, 2)) * (ny, nx)
    spec = np.zeros(scan, complex)
    for py, px in pos:
        spec += np.exp(-2j * np.pi * (fy * py + fx * px))
    spec *= 8.0 * 2 * np.pi * 2.0**2 * np.exp(-2 * np.pi**2 * 2.0**2 * (fy**2 + fx**2))
    phi = np.fft.ifft2(spec).real
    gy = np.fft.ifft2(2j * np.pi * fy * spec).real
    gx = np.fft.ifft2(2j * np.pi * fx * spec).real
    return phi - phi.mean(), gy, gx


def _com_from_gradient(gy, gx, *, rotation_deg, flip, descan):
    """COM maps (detector px) whose rotation into scan axes gives ``(gy, gx) / (2 pi)``."""
    uy, ux = gy / (2 * np.pi), gx / (2 * np.pi)
    # inverse of rotate_to_scan: rotate back by -theta, then undo the flip
    vy, vx = rotate_to_scan(uy, ux, rotation_deg=-rotation_deg, flip=False)
    if flip:
        vx = -vx
    return np.stack([C0[0] + descan[..., 0] + vy, C0[1] + descan[..., 1] + vx], -1)


def test_rotate_to_scan_conventions():
    uy, ux = rotate_to_scan(np.array(0.0), np.array(1.0), rotation_deg=90)
    assert np.allclose((uy, ux), (1, 0))  # detector +x is scan +y
    uy, ux = rotate_to_scan(np.array(0.0), np.array(1.0), rotation_deg=0, flip=True)
    assert np.allclose((uy, ux), (0, -1))


@pytest.mark.parametrize(
    ("rotation_deg", "flip"),
    [(0.0, False), (23.7, False), (-61.0, True), (152.0, False), (-117.3, True)],
)
def test_rotation_recovered(rotation_deg, flip):
    rng = np.random.default_rng(11)
    scan = (48, 56)
    _, gy, gx = _planted_phase(scan, rng)
    com = _com_from_gradient(gy, gx, rotation_deg=rotation_deg, flip=flip, descan=_plane(scan))
    com += rng.normal(0, 0.005, com.shape)  # a little COM noise
    fit = fit_dpc_rotation(com)
    assert fit.flip == flip
    diff = (fit.rotation_deg - rotation_deg + 180) % 360 - 180
    assert abs(diff) < 0.5, fit
    assert fit.curl_rms < 0.2 * fit.curl_rms_other_flip
    # a real signal: the curl curve has a deep minimum, far above what noise gives (~1), and
    # the fit does not warn (filterwarnings = error)
    assert fit.curl_contrast > 0.9 and fit.confidence > 20, fit
    assert not fit.ill_conditioned
    cal = fit.to_calibration(Calibration())
    assert cal.rotation_deg == fit.rotation_deg and cal.flip == flip


def test_idpc_recovers_planted_phase():
    rng = np.random.default_rng(5)
    scan = (64, 48)
    phi, gy, gx = _planted_phase(scan, rng)
    descan = _plane(scan)
    com = _com_from_gradient(gy, gx, rotation_deg=30.0, flip=False, descan=descan)
    # origin known (the planted descan): Fourier integration of the exact periodic gradient
    # is exact to rounding
    cal = Calibration(origin_map_px=C0 + descan)
    d = dpc(com, calibration=cal, rotation_deg=30.0, flip=False, descan="calibration")
    np.testing.assert_allclose(d.channel("dpc_y") * 2 * np.pi, gy, atol=1e-9)
    phase = idpc(d, pad=False)
    assert phase.units == "a.u."
    assert np.abs(phase.data - phi).max() < 1e-9 * np.ptp(phi)
    # descan fitted from the COM map itself: the plane also takes the part of the signal that
    # looks like a plane, about 1e-3 of the phase range here
    d_plane = dpc(com, rotation_deg=30.0, flip=False, descan="plane")
    err = np.abs(idpc(d_plane, pad=False).data - phi).max() / np.ptp(phi)
    assert err < 3e-3, err
    # mirrored padding (for non-periodic scans) still follows the phase closely
    padded = idpc(d_plane, pad=True)
    assert np.corrcoef(padded.data.ravel(), phi.ravel())[0, 1] > 0.999
    damped = idpc(d, pad=False, regularization=1e-2)
    assert np.std(damped.data) < 0.9 * np.std(phase.data)


def test_idpc_ramp_with_padding_and_units():
    scan = (20, 30)
    gy = np.full(scan, 0.02)
    gx = np.full(scan, -0.01)
    cal = Calibration(
        scan_step=(0.5, 0.5),
        scan_units="A",
        k_pixel_size=0.01,
        k_units="1/A",
        beam_energy_kev=200.0,
    )
    com = RealSpaceMapFactory(np.stack([C0[0] + gy, C0[1] + gx, np.ones(scan)], -1), cal)
    d = dpc(com, rotation_deg=0.0, descan="none", units="1/A")
    np.testing.assert_allclose(d.channel("dpc_y"), (C0[0] + gy) * 0.01)
    phase = idpc(d, pad=True)
    assert phase.units == "rad"
    iy, ix = np.indices(scan)
    ramp = 2 * np.pi * 0.5 * 0.01 * ((C0[0] + 0.02) * iy + (C0[1] - 0.01) * ix)
    np.testing.assert_allclose(phase.data, ramp - ramp.mean(), atol=1e-6 * np.ptp(ramp))


def RealSpaceMapFactory(data, cal):
    from napari_4dstem.data.results import RealSpaceMap

    return RealSpaceMap(data, name="com", channels=("com_y", "com_x", "intensity"), calibration=cal)


def test_dpc_input_checks():
    com = np.zeros((4, 4, 3))
    with pytest.raises(CalibrationError, match="calibrated detector"):
        dpc(com, units="mrad")
    with pytest.raises(CalibrationError, match="origin"):
        com_shifts(com, descan="calibration")
    with pytest.raises(ValueError, match="descan"):
        com_shifts(com, descan="sideways")
    with pytest.raises(DataShapeError):
        dpc(np.zeros((4, 4)))
    with pytest.raises(DataShapeError, match="3x3"):
        fit_dpc_rotation(np.zeros((2, 5, 2)))
    with pytest.raises(DataShapeError, match="dpc"):
        idpc(RealSpaceMapFactory(com, Calibration()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rotation_fit_on_noise_warns_once(seed):
    # COM = origin + descan plane + noise, no DPC signal: the angle is arbitrary
    rng = np.random.default_rng(seed)
    scan = (32, 40)
    com = C0 + _plane(scan) + rng.normal(0, 0.05, (*scan, 2))
    with pytest.warns(IllConditionedRotationWarning, match=r"ill-conditioned: confidence") as rec:
        fit = fit_dpc_rotation(com)
    assert len([w for w in rec if issubclass(w.category, IllConditionedRotationWarning)]) == 1
    assert fit.ill_conditioned and fit.confidence < MIN_ROTATION_CONFIDENCE
    assert 0 <= fit.curl_contrast < 0.15


def test_rotation_fit_on_zero_com_warns():
    com = np.zeros((10, 12, 2)) + C0
    with pytest.warns(IllConditionedRotationWarning, match="no usable DPC signal"):
        fit = fit_dpc_rotation(com)
    assert fit.confidence == 0.0 and fit.curl_contrast == 0.0 and fit.ill_conditioned


def test_rotation_fit_confidence_is_backward_compatible():
    old = RotationFit(
        rotation_deg=1.0, flip=False, curl_rms=0.1, curl_rms_other_flip=0.2, div_rms=1.0, resolved_180=True
    )
    assert np.isnan(old.confidence) and np.isnan(old.curl_contrast) and old.ill_conditioned
