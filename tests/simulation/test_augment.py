"""Augmentation: the warp moves a planted peak where the matrix says; seeds reproduce."""

import numpy as np
import pytest

from napari_4dstem.simulation.augment import (
    AugmentConfig,
    augment,
    augment_batch,
    draw_augmentation,
    plasmon_background,
    warp_images,
    warp_matrix,
    warp_points,
)
from napari_4dstem.simulation.kinematic import vacuum_probe

H, W = 160, 144
ORIGIN = (80.0, 72.0)


def _gauss(cy, cx, s=2.0):
    yy, xx = np.mgrid[0:H, 0:W]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s**2))


def _centroid(img):
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    return (img * yy).sum() / img.sum(), (img * xx).sum() / img.sum()


def test_warp_matrix_shape():
    A = warp_matrix(0.15, 30.0, 0.0)
    s = np.linalg.svd(A, compute_uv=False)
    assert s[0] / s[1] == pytest.approx(1.15) and np.linalg.det(A) == pytest.approx(1.0)
    # the long axis points 30 deg from +x towards +y: (y, x) = (sin 30, cos 30)
    v = np.array([np.sin(np.deg2rad(30)), np.cos(np.deg2rad(30))])
    assert np.linalg.norm(A @ v) == pytest.approx(np.sqrt(1.15))
    R = warp_matrix(0.0, 0.0, 90.0)  # +x turns into +y
    assert R @ np.array([0.0, 1.0]) == pytest.approx(np.array([1.0, 0.0]))


@pytest.mark.parametrize("e, phi, rot, shift", [(0.15, 30.0, 2.0, (3.3, -7.1)), (0.08, 120.0, -1.5, (-0.4, 9.2))])
def test_planted_peak_lands_where_the_matrix_says(e, phi, rot, shift):
    p = np.array([[55.3, 101.7]])
    A = warp_matrix(e, phi, rot)
    out = warp_images(_gauss(*p[0]), matrix=A, shift_px=shift, origin_px=ORIGIN)
    expect = warp_points(p, matrix=A, shift_px=shift, origin_px=ORIGIN)[0]
    assert expect == pytest.approx(np.array(ORIGIN) + A @ (p[0] - ORIGIN) + shift)
    assert _centroid(out) == pytest.approx(tuple(expect), abs=0.02)
    # the point inversion of the published warp would put it on the other side of the origin
    wrong = np.array(ORIGIN) - A @ (p[0] - ORIGIN) + shift
    assert np.hypot(*(np.array(_centroid(out)) - wrong)) > 10


def test_same_warp_on_pattern_probe_label_and_bragg():
    probe = vacuum_probe((H, W), radius_px=6, origin_px=ORIGIN).astype(np.float32)
    label = _gauss(50.0, 90.0, 1.0)
    pattern = _gauss(50.0, 90.0, 3.0) * 1e-3 + probe
    cfg = AugmentConfig(
        plasmon_weight=(0.0, 0.0),
        blur_sigma_px=(0, 0),
        read_noise=(0, 0),
        hot_dead_fraction=0,
        salt_pepper_fraction=0,
        dose_e=(1e12, 1e12),
    )
    s = augment(
        pattern,
        probe,
        label,
        seed=5,
        config=cfg,
        origin_px=ORIGIN,
        bragg_qy=np.array([50.0]),
        bragg_qx=np.array([90.0]),
    )
    A, sh = s.matrix, s.shift_px
    assert np.allclose(s.probe, warp_images(probe, matrix=A, shift_px=sh, origin_px=ORIGIN))
    assert np.allclose(s.label, warp_images(label, matrix=A, shift_px=sh, origin_px=ORIGIN))
    assert _centroid(s.label) == pytest.approx((s.bragg_qy[0], s.bragg_qx[0]), abs=0.03)
    # the probe centre moved by the shift only (it sits on the origin)
    assert _centroid(s.probe) == pytest.approx((ORIGIN[0] + sh[0], ORIGIN[1] + sh[1]), abs=0.02)
    # huge dose: counts / dose follows the warped pattern
    ref = warp_images(pattern, matrix=A, shift_px=sh, origin_px=ORIGIN)
    assert np.allclose(s.pattern / 1e12, ref, atol=1e-5)


def test_seeds_reproduce_and_differ():
    probe = vacuum_probe((H, W), radius_px=6, origin_px=ORIGIN).astype(np.float32)
    a = augment(probe, probe, probe, seed=11, origin_px=ORIGIN)
    b = augment(probe, probe, probe, seed=11, origin_px=ORIGIN)
    c = augment(probe, probe, probe, seed=12, origin_px=ORIGIN)
    assert np.array_equal(a.pattern, b.pattern) and a.params == b.params
    assert not np.array_equal(a.pattern, c.pattern)
    batch = augment_batch(
        np.stack([probe] * 3),
        np.stack([probe] * 3),
        np.stack([probe] * 3),
        seeds=[11, 12, 13],
        origin_px=ORIGIN,
        workers=2,
    )
    assert np.array_equal(batch[0].pattern, a.pattern) and np.array_equal(batch[1].pattern, c.pattern)


def test_drawn_ranges():
    cfg = AugmentConfig()
    draws = [draw_augmentation(cfg, s) for s in range(400)]
    dose = np.log10([d.dose_e for d in draws])
    assert 5 <= dose.min() < 5.5 and 9.5 < dose.max() <= 10
    assert max(np.hypot(*d.shift_px) for d in draws) <= 10
    assert max(d.ellipticity for d in draws) <= 0.15
    assert all(0.01 <= d.plasmon_weight <= 0.1 and 0.01 <= d.plasmon_width_inv_A <= 0.1 for d in draws)
    assert max(d.hot_fraction + d.dead_fraction for d in draws) <= 1e-3
    with pytest.raises(ValueError, match="dose"):
        AugmentConfig(dose_e=(10, 1))


def test_dose_noise_and_bad_pixels():
    flat = np.full((H, W), 1.0 / (H * W), np.float32)
    cfg = AugmentConfig(
        dose_e=(1e6, 1e6),
        plasmon_weight=(0, 0),
        shift_px=0,
        ellipticity=0,
        rotation_deg=0,
        blur_sigma_px=(0, 0),
        read_noise=(0, 0),
        hot_dead_fraction=0,
        salt_pepper_fraction=0,
    )
    s = augment(flat, flat, flat, seed=3, config=cfg, origin_px=ORIGIN)
    lam = 1e6 / (H * W)
    inner = s.pattern[5:-5, 5:-5]
    assert inner.mean() == pytest.approx(lam, rel=0.01)
    assert inner.var() == pytest.approx(lam, rel=0.1)  # Poisson: variance = mean
    cfg2 = AugmentConfig(
        dose_e=(1e6, 1e6),
        plasmon_weight=(0, 0),
        shift_px=0,
        ellipticity=0,
        rotation_deg=0,
        read_noise=(0, 0),
        hot_dead_fraction=1.0,
        salt_pepper_fraction=0,
        beam_stop_probability=1.0,
    )
    s2 = augment(flat, flat, flat, seed=4, config=cfg2, origin_px=ORIGIN)
    d = s2.params
    assert d.hot_fraction + d.dead_fraction > 0.01
    assert s2.mask is not None and s2.mask[int(ORIGIN[0]), int(ORIGIN[1])]
    assert np.all(s2.pattern[s2.mask] == 0)


def test_plasmon_background_centred_and_normalised():
    probe = vacuum_probe((H, W), radius_px=6, origin_px=ORIGIN)
    bg = plasmon_background(probe, width_inv_A=0.05, pixel_size_inv_A=0.01, origin_px=ORIGIN)
    assert bg.sum() == pytest.approx(1.0)
    cy, cx = _centroid(bg)
    assert abs(cy - ORIGIN[0]) < 0.3 and abs(cx - ORIGIN[1]) < 0.3
    assert bg[int(ORIGIN[0]), int(ORIGIN[1])] == pytest.approx(bg.max(), rel=0.02)
    # a wider Lorentzian spreads further out
    bg2 = plasmon_background(probe, width_inv_A=0.1, pixel_size_inv_A=0.01, origin_px=ORIGIN)
    assert bg2[int(ORIGIN[0]), int(ORIGIN[1])] < bg[int(ORIGIN[0]), int(ORIGIN[1])]
