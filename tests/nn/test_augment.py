"""Training augmentation (adapter over simulation.augment): the label follows the disks, the
probe gets the same warp and is re-centred as at inference, seeds reproduce, doses scale."""

import dataclasses

import numpy as np
import pytest

from napari_4dstem.engine.jobs import run_job
from napari_4dstem.nn.augment import Augment
from napari_4dstem.nn.model import ModelConfig
from napari_4dstem.nn.train import TrainConfig, _batch, iter_train
from napari_4dstem.simulation.augment import draw_augmentation, warp_images, warp_points
from napari_4dstem.simulation.shards import ShardSet, write_shard

S = 128
ORIGIN = (64.0, 64.0)
DISK = (41.3, 87.6)  # a Bragg disk, (k_y, k_x) px


def _blob(cy, cx, s):
    yy, xx = np.mgrid[0:S, 0:S]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s**2)).astype(np.float32)


def _centroid(img, around, r=7):
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    w = np.where(np.hypot(yy - around[0], xx - around[1]) <= r, img, 0.0)
    return np.array([(w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()])


def _sample():
    probe = _blob(*ORIGIN, 4.0)
    pattern = probe + 0.3 * _blob(*DISK, 2.0)
    label = _blob(*DISK, 1.0)
    return pattern, probe, label


CLEAN = Augment(
    dose=(1e9, 1e9),
    background=(0.0, 0.0),
    plasmon_weight=(0.0, 0.0),
    blur_sigma_px=(0.0, 0.0),
    read_noise=(0.0, 0.0),
    hot_dead_fraction=0.0,
    salt_pepper_fraction=0.0,
)


@pytest.mark.parametrize("shift, e, phi, rot", [((2.7, -3.1), 0.1, 35.0, 1.5), ((-1.2, 0.4), 0.06, 110.0, -2.0)])
def test_label_peak_follows_the_disk_under_a_planted_warp(shift, e, phi, rot):
    pattern, probe, label = _sample()
    planted = dataclasses.replace(
        draw_augmentation(CLEAN.config(), 0),
        shift_px=shift,
        ellipticity=e,
        ellipse_angle_deg=phi,
        rotation_deg=rot,
    )
    s = CLEAN.apply(
        pattern,
        probe,
        label,
        np.random.default_rng(0),
        origin_px=ORIGIN,
        params=planted,
        bragg_qy=np.array([DISK[0]]),
        bragg_qx=np.array([DISK[1]]),
    )
    expect = warp_points(np.array([DISK]), matrix=s.matrix, shift_px=shift, origin_px=ORIGIN)[0]
    assert (s.bragg_qy[0], s.bragg_qx[0]) == pytest.approx(tuple(expect))
    assert np.hypot(*(expect - np.array(DISK))) > 2  # it did move
    disk = _centroid(
        s.pattern - 1e9 * warp_images(probe, matrix=s.matrix, shift_px=shift, origin_px=ORIGIN),
        expect,
    )
    lab = _centroid(s.label, expect)
    assert np.abs(disk - expect).max() < 0.05 and np.abs(lab - expect).max() < 0.05
    assert np.abs(lab - disk).max() < 0.05
    # the probe: the same warp, noise-free
    np.testing.assert_allclose(
        s.probe, warp_images(probe, matrix=s.matrix, shift_px=shift, origin_px=ORIGIN), atol=1e-6
    )


def _shards(tmp_path, n=4, engine="kinematic"):
    """Shards as the simulation engines write them: patterns sum to 1."""
    pattern, probe, label = _sample()
    pats = np.stack([pattern / pattern.sum()] * n)
    b = [{"qy": [DISK[0]], "qx": [DISK[1]], "intensity": [0.3], "hkl": np.zeros((1, 3))}] * n
    meta = {"origin_px": np.array([ORIGIN] * n), "pixel_size_inv_A": np.full(n, 0.02)}
    d = tmp_path / "set"
    d.mkdir()
    write_shard(
        d / "shard-00000.h5",
        patterns=pats,
        probes=np.stack([probe] * n),
        labels=np.stack([label] * n),
        bragg=b,
        meta=meta,
        engine=engine,
    )
    return ShardSet(d)


def test_training_batch_warps_the_probe_and_recentres_it_as_inference_does(tmp_path):
    shards = _shards(tmp_path)
    aug = dataclasses.replace(CLEAN, dose=(1e6, 1e6), ellipticity=0.12, scale_to_max=True)
    x, y, pr = _batch(shards, [0, 1, 2], aug, np.random.default_rng(3))
    assert x.shape == y.shape == pr.shape == (3, S, S)
    yy, xx = np.mgrid[0:S, 0:S]
    ratios = []
    for p in pr:
        c = np.array([(p * yy).sum(), (p * xx).sum()]) / p.sum()
        assert np.abs(c - S // 2).max() < 0.05  # centred exactly, as probe_geometry does
        dy, dx = yy - c[0], xx - c[1]
        cov = np.array([[(p * dy * dy).sum(), (p * dy * dx).sum()], [0, (p * dx * dx).sum()]])
        cov[1, 0] = cov[0, 1]
        ev = np.linalg.eigvalsh(cov / p.sum())
        ratios.append(ev[1] / ev[0])
    # elliptic like the pattern's beam: the probe was warped, not only moved
    assert max(ratios) > 1.05 and not np.allclose(pr[0], pr[1])
    # doses relative to the brightest pixel: the central beam peaks near 1e6 counts
    assert x.max() == pytest.approx(1e6, rel=0.3)
    # the label's peak sits where the pattern's disk is, sample by sample
    for p, lab in zip(x, y, strict=True):
        near = np.unravel_index(np.argmax(lab), lab.shape)
        beam = _centroid(p, (S // 2, S // 2), r=12)
        disk = _centroid(p, near, r=4)
        assert np.abs(_centroid(lab, near, r=4) - disk).max() < 0.3
        assert np.hypot(*(beam - np.array(near))) > 20


def test_same_seed_same_sample_and_geometry_fixed_for_validation():
    pattern, probe, label = _sample()
    aug = Augment(scale_to_max=True)
    a = aug.apply(pattern, probe, label, np.random.default_rng(7))
    b = aug.apply(pattern, probe, label, np.random.default_rng(7))
    c = aug.apply(pattern, probe, label, np.random.default_rng(8))
    assert a.params == b.params and np.array_equal(a.pattern, b.pattern)
    assert np.array_equal(a.probe, b.probe) and np.array_equal(a.label, b.label)
    assert not np.array_equal(a.pattern, c.pattern)
    v = aug.without_geometry().apply(pattern, probe, label, np.random.default_rng(7))
    assert v.shift_px == (0.0, 0.0) and np.allclose(v.matrix, np.eye(2))
    np.testing.assert_array_equal(v.label, label)
    with pytest.raises(ValueError, match="dose"):
        Augment(dose=(10.0, 1.0))


def test_training_smoke_on_engine_shards(tmp_path):
    shards = _shards(tmp_path, n=6)
    cfg = TrainConfig(
        model=ModelConfig(size=S, width=1),
        epochs=1,
        steps_per_epoch=1,
        batch_size=2,
        strain_scan=None,
        val_max=1,
        warmup_steps=1,
    )
    res = run_job(iter_train(shards, out_dir=tmp_path / "run", config=cfg))
    assert res.steps_done == 1 and np.isfinite(res.history[0]["train_loss"])
