"""Proxy data at a finer detector sampling: the same physics, twice the pixels (issue #8,
"what a larger model buys" needs 128 and 256 models trained and tested on the same content)."""

import numpy as np

from napari_4dstem.nn.synthetic import (
    make_thick_strained_scan,
    simulate_training_patterns,
    write_training_shards,
)
from napari_4dstem.nn.train import default_augment
from napari_4dstem.simulation.shards import ShardSet


def test_training_pattern_at_256_is_the_128_pattern_sampled_twice_as_finely():
    a = simulate_training_patterns(6, size=128, seed=5)
    b = simulate_training_patterns(6, size=256, seed=5)
    n_same = 0
    for ca, cb in zip(a.centers, b.centers, strict=True):
        # the same reflections (the label's border test may differ by half a pixel) ...
        pa = {tuple(np.round(2 * (c - 64), 6)) for c in ca}
        pb = {tuple(np.round(c - 128, 6)) for c in cb}
        assert len(pa & pb) >= max(len(pa), len(pb)) - 2
        n_same += len(pa & pb)
    assert n_same > 20
    # ... and the same intensities: the 256 pattern binned 2x is close to the 128 one
    binned = b.patterns.reshape(6, 128, 2, 128, 2).mean(axis=(2, 4))
    err = np.abs(binned - a.patterns).mean() / a.patterns.mean()
    assert err < 0.1, err


def test_thick_scan_sampling_keeps_geometry_and_dose_per_area():
    a = make_thick_strained_scan(scan_shape=(3, 3), seed=4, noise=False)
    b = make_thick_strained_scan(scan_shape=(3, 3), size=256, sampling=2, seed=4, noise=False)
    np.testing.assert_allclose(b.centers - 128, 2 * (a.centers - 64), atol=1e-9)
    da, db = np.asarray(a.datacube.data, float), np.asarray(b.datacube.data, float)
    # the same electrons per pattern (to the edge of the detector), a quarter per pixel
    np.testing.assert_allclose(db.sum(axis=(2, 3)), da.sum(axis=(2, 3)), rtol=0.02)
    assert b.datacube.calibration.k_pixel_size == a.datacube.calibration.k_pixel_size / 2


def test_default_augment_of_256_proxy_shards_has_the_same_physical_ranges(tmp_path):
    write_training_shards(tmp_path / "s128", n_patterns=2, size=128, seed=0)
    write_training_shards(tmp_path / "s256", n_patterns=2, size=256, seed=0)
    a = default_augment(ShardSet(tmp_path / "s128"))
    b = default_augment(ShardSet(tmp_path / "s256"))
    assert a.dose == (20.0, 300.0) and a.max_shift_px == 4.0  # 128: unchanged
    np.testing.assert_allclose(b.dose, np.array(a.dose) / 4)
    np.testing.assert_allclose(b.background, np.array(a.background) / 4)
    np.testing.assert_allclose(b.blur_sigma_px, np.array(a.blur_sigma_px) * 2)
    assert b.max_shift_px == 8.0 and b.pixel_size_inv_A == a.pixel_size_inv_A / 2
    assert b.read_noise == a.read_noise and not b.scale_to_max
