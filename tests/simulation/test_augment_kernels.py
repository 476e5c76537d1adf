"""The augmentation's own kernels: samplers with the right statistics, warp and blur against
scipy references, draws that depend only on the seed."""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy import ndimage, stats

from napari_4dstem.simulation import _augment_kernels as K
from napari_4dstem.simulation.augment import plasmon_background, warp_images, warp_matrix

N = 40_000


@pytest.mark.parametrize("lam", [0.02, 0.7, 4.0, 9.99, 10.0, 37.0, 600.0, 999.0, 3000.0])
def test_poisson_mean_and_variance(lam):
    x = K.sample_poisson(np.full(N, lam), 12345)
    assert np.all(x == np.round(x)) and x.min() >= 0
    assert abs(x.mean() - lam) < 4 * math.sqrt(lam / N)
    # the sample variance of N Poisson draws has a relative spread of about sqrt(2 / N)
    assert x.var() == pytest.approx(lam, rel=5 * math.sqrt(2 / N) + 1 / (lam * N) ** 0.5)


@pytest.mark.parametrize("lam", [3.0, 25.0, 400.0])
def test_poisson_follows_the_pmf(lam):
    x = K.sample_poisson(np.full(N, lam), 7).astype(int)
    ks, obs = np.unique(x, return_counts=True)
    exp = N * stats.poisson.pmf(ks, lam)
    keep = exp > 100
    assert keep.sum() >= 5
    # each bin's count within 5 sigma, and the chi-square of the well-filled bins plausible
    assert np.all(np.abs(obs[keep] - exp[keep]) < 5 * np.sqrt(exp[keep]))
    chi2 = (((obs[keep] - exp[keep]) ** 2) / exp[keep]).sum()
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-4


def test_read_noise_is_standard_normal():
    shape = (1000, 1000)
    zeros = np.zeros(shape, np.float32)
    z = K.count_noise(zeros, 1.0, 99, 1.0, np.empty(shape, np.float32)).ravel().astype(float)
    assert abs(z.mean()) < 5 / math.sqrt(z.size)
    assert z.var() == pytest.approx(1.0, abs=5 * math.sqrt(2 / z.size))
    assert (z**4).mean() == pytest.approx(3.0, abs=0.05)
    # two-sided tails within 5 sigma of their counts: the ziggurat's rectangles and wedges
    # (below r = 3.654) and its exact tail sampler (beyond)
    for t in (0.5, 1.0, 2.0, 3.0, 3.5, 3.8, 4.2):
        p = math.erfc(t / math.sqrt(2))
        assert abs((np.abs(z) > t).mean() - p) < 5 * math.sqrt(p / z.size)


def test_counts_depend_on_the_seed_only():
    lam = np.random.default_rng(0).random((64, 80)).astype(np.float32)

    def draw(seed):
        return K.count_noise(lam, 1e3, seed, 1.5, np.empty_like(lam))

    with ThreadPoolExecutor(2) as pool:
        a, b, c = pool.map(draw, [3, 3, 4])
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(a, draw(3))


@pytest.mark.parametrize("sigma", [0.3, 0.77, 1.0])
def test_blur_matches_scipy(sigma):
    img = np.random.default_rng(1).random((37, 51)).astype(np.float32)
    ref = ndimage.gaussian_filter(img.astype(float), sigma, mode="constant", truncate=3.0)
    out = K.gaussian_blur(img, sigma, 3.0, np.empty_like(img))
    np.testing.assert_allclose(out, ref, atol=2e-6)


def test_warp_matches_scipy_map_coordinates_on_an_awkward_shape():
    rng = np.random.default_rng(2)
    img = rng.random((3, 41, 29)).astype(np.float32)
    A = warp_matrix(0.12, 70.0, -1.7)
    c, sh = (20.3, 13.0), (1.7, -2.2)
    out = warp_images(img, matrix=A, shift_px=sh, origin_px=c)
    yy, xx = np.mgrid[0:41, 0:29].astype(float)
    src = np.linalg.inv(A) @ np.stack([yy.ravel() - c[0] - sh[0], xx.ravel() - c[1] - sh[1]])
    coords = (src + np.array(c)[:, None]).reshape(2, 41, 29)
    for k in range(3):
        ref = ndimage.map_coordinates(img[k].astype(float), coords, order=1, mode="grid-constant")
        np.testing.assert_allclose(out[k], ref, atol=1e-6)


def test_plasmon_background_odd_shape_and_narrow_kernel():
    yy, xx = np.mgrid[0:121, 0:97]
    probe = ((yy - 60.0) ** 2 + (xx - 48.0) ** 2 < 36).astype(np.float32)
    bg = plasmon_background(probe, width_inv_A=0.01, pixel_size_inv_A=0.01, origin_px=(60, 48))
    assert bg.shape == (121, 97) and bg.min() >= 0 and bg.sum() == pytest.approx(1.0, rel=1e-5)
    assert np.unravel_index(bg.argmax(), bg.shape) == pytest.approx((60, 48), abs=2)
