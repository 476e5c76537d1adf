"""Bragg disk detection: known-answer positions, Cramer-Rao efficiency, recall, bad input."""

import warnings

import numpy as np
import pytest

from napari_4dstem.analysis.bragg.disks import (
    _correlate_torch,
    bragg_vector_map,
    correlate,
    find_bragg_disks,
    origin_from_peaks,
)
from napari_4dstem.analysis.bragg.peaks import find_peaks, refine_peaks
from napari_4dstem.analysis.bragg.probe import make_template
from napari_4dstem.errors import DataShapeError
from napari_4dstem.simulation.samples import make_strained_crystal, soft_disk

DET = (64, 64)


def _template():
    yy, xx = np.indices(DET)
    return make_template(960 * soft_disk(np.hypot(yy - 32, xx - 32), 8.0, 0.5) + 8)


def _disk_patterns(rng, n, *, amp, background=0.5, noise=True):
    """n patterns, one disk each at a random sub-pixel position near the centre."""
    c = 32 + rng.uniform(-4, 4, (n, 2))
    yy, xx = np.indices(DET)
    lam = background + amp * soft_disk(np.hypot(yy - c[:, 0, None, None], xx - c[:, 1, None, None]), 8.0, 0.5)
    data = rng.poisson(lam).astype(np.uint16) if noise else lam.astype(np.float32)
    return data.reshape(1, n, *DET), c, lam


def _crlb_per_axis(amp, background, center=(32.3, 31.6)):
    """Cramer-Rao bound on one coordinate: 1 / sqrt(sum (d mu / d c_x)^2 / mu)."""
    yy, xx = np.indices(DET, dtype=float)
    r = np.hypot(yy - center[0], xx - center[1])
    mu = background + amp * soft_disk(r, 8.0, 0.5)
    dprof = -amp / (4 * 0.5) / np.cosh((r - 8) / 1.0) ** 2
    dmu = dprof * (-(xx - center[1]) / np.maximum(r, 1e-9))
    return 1 / np.sqrt(np.sum(dmu**2 / mu))


def _errors(peaks, truth):
    qy, qx = peaks.qy, peaks.qx
    assert np.all(peaks.counts() == 1)
    return np.stack([qy, qx], -1) - truth


@pytest.mark.parametrize(("subpixel", "tol"), [("fit", 1e-4), ("upsample", 0.005), ("parabolic", 0.05)])
def test_noise_free_positions(rng, subpixel, tol):
    data, truth, _ = _disk_patterns(rng, 40, amp=10, noise=False)
    bp = find_bragg_disks(data, template=_template(), subpixel=subpixel)
    err = _errors(bp, truth)
    assert np.abs(err).max() < tol
    assert bp.params["subpixel"] == subpixel and bp.scan_shape == (1, 40)


def test_poisson_fit_reaches_the_cramer_rao_bound(rng):
    amp, bg, n = 8.0, 0.5, 400
    data, truth, _ = _disk_patterns(rng, n, amp=amp, background=bg)
    # one weak disk per pattern: no central beam to set the relative threshold against
    bp = find_bragg_disks(data, template=_template(), min_relative=0.2)
    err = _errors(bp, truth)
    rms = np.sqrt(np.mean(err**2))
    bound = _crlb_per_axis(amp, bg)
    # 800 error samples: the RMS is known to about +-2.5 % (1 sigma); the ML fit is efficient
    assert rms / bound < 1.10, (rms, bound)
    assert np.abs(err.mean(axis=0)).max() < 3 * bound / np.sqrt(n)
    # the parabolic refinement of the correlation is measurably worse
    par = find_bragg_disks(data, template=_template(), subpixel="parabolic", min_relative=0.2)
    assert np.sqrt(np.mean(_errors(par, truth) ** 2)) > 1.05 * rms


def test_native_dtypes_give_the_same_peaks(rng):
    data, _, _ = _disk_patterns(rng, 6, amp=10)
    t = _template()
    a = find_bragg_disks(data, template=t)
    b = find_bragg_disks(data.astype(np.float32), template=t)
    np.testing.assert_allclose(a.qy, b.qy, atol=1e-6)
    np.testing.assert_allclose(a.qx, b.qx, atol=1e-6)


def _truth_disks(sample, edge):
    """Visible truth disk centres per pattern (y, x) from the sample's truth lattice."""
    org = sample.truth[1].data.reshape(-1, 2)
    lat = sample.truth[2].data.reshape(-1, 4)
    n = 6
    hk = np.array([(h, k) for h in range(-n, n + 1) for k in range(-n, n + 1)])
    g1, g2 = lat[:, None, 0:2], lat[:, None, 2:4]
    c = org[:, None] + hk[None, :, :1] * g1 + hk[None, :, 1:] * g2
    return c


@pytest.mark.parametrize(
    ("spacing", "angle", "counts"),
    [
        (24.0, 7.0, (4.0, 12.0)),
        (20.0, 0.0, (4.0, 12.0)),
        (28.0, 33.0, (3.0, 8.0)),
        (26.0, -15.0, (6.0, 20.0)),
    ],
)
def test_recall_and_no_false_positives(spacing, angle, counts):
    s = make_strained_crystal(
        scan_shape=(6, 6),
        spacing_px=spacing,
        lattice_angle_deg=angle,
        bragg_counts=counts,
        seed=int(spacing * 10 + angle),
    )
    bp = find_bragg_disks(s.datacube, template=make_template(s.probe))
    edge = bp.params["edge_px"]
    allc = _truth_disks(s, edge)
    pos = bp.position_index()
    found = np.stack([bp.qy, bp.qx], -1)
    d = np.linalg.norm(allc[pos] - found[:, None], axis=-1).min(axis=1)
    assert d.max() < 1.0, "a detection matches no disk (false positive)"
    # every disk whose centre is well inside the edge margin is found (render limit: |g| < 68 px)
    inside = np.all((allc >= edge + 1) & (allc <= 127 - edge - 1), axis=-1)
    inside &= np.linalg.norm(allc - s.truth[1].data.reshape(-1, 1, 2), axis=-1) < 0.5 * 128 - 2
    for i in range(36):
        want = allc[i][inside[i]]
        got = found[pos == i]
        dd = np.linalg.norm(want[:, None] - got[None], axis=-1).min(axis=1)
        assert dd.max() < 1.0, f"pattern {i}: missed {int((dd >= 1).sum())} disk(s)"


def test_empty_and_flat_patterns_give_no_peaks(rng):
    data = np.zeros((2, 3, *DET), np.uint16)
    data[0, 0] = rng.poisson(0.5, DET)  # background only: weak noise maxima but no disk
    data[1, 1] = 7
    bp = find_bragg_disks(data, template=_template(), min_absolute=2.0)
    assert bp.n_peaks == 0 and bp.counts().shape == (2, 3)


def test_template_larger_than_the_patterns_is_a_clear_error(rng):
    data = np.zeros((1, 1, 16, 16), np.uint16)
    with pytest.raises(DataShapeError, match="larger than the patterns"):
        find_bragg_disks(data, template=_template())


def test_phase_and_hybrid_correlation_find_the_disks(rng):
    data, truth, _ = _disk_patterns(rng, 8, amp=20)
    for p in (0.0, 0.5):
        bp = find_bragg_disks(data, template=_template(), correlation_power=p, min_relative=0.5)
        assert np.abs(_errors(bp, truth)).max() < 0.3


def test_peak_finding_on_any_correlation_like_image():
    # e.g. a neural network's output: sharp blobs at known positions, no template involved
    yy, xx = np.indices((48, 48))
    pts = np.array([[10.3, 12.6], [30.7, 20.2], [24.0, 38.45]])
    img = sum(np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.2**2)) * a for (y, x), a in zip(pts, (1, 0.6, 0.3)))
    t = find_peaks(np.stack([img, img[::-1]]), edge_px=3, min_spacing_px=4, min_relative=0.2)
    assert list(t.count) == [3, 3]
    r = refine_peaks(np.stack([img, img[::-1]]).astype(np.float32), t, method="gaussian")
    np.testing.assert_allclose(r.yx[0, :3], pts, atol=1e-3)  # sorted strongest first
    assert np.all(np.diff(r.value[0, :3]) < 0) and np.all(np.isnan(r.yx[0, 3:]))


def test_torch_correlation_matches_scipy(rng):
    pytest.importorskip("torch")
    p = rng.poisson(3.0, (4, 32, 40)).astype(np.float32)
    k = np.zeros((32, 40))
    k[:3, :3] = 1
    k[-2:, -2:] = 0.5
    for power in (1.0, 0.5):
        a = correlate(p, k, power=power)
        b = _correlate_torch(p, k, power=power, device="cpu", return_spectra=False)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_cuda_request_without_cuda_falls_back_with_a_warning(rng):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    data, truth, _ = _disk_patterns(rng, 3, amp=20)
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        bp = find_bragg_disks(data, template=_template(), device="cuda")
    assert np.abs(_errors(bp, truth)).max() < 0.3


@pytest.mark.gpu
def test_cuda_correlation_matches_cpu(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    data, _truth, _ = _disk_patterns(rng, 16, amp=20)
    a = find_bragg_disks(data, template=_template())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = find_bragg_disks(data, template=_template(), device="cuda")
    np.testing.assert_allclose(a.qy, b.qy, atol=1e-4)


def test_bragg_vector_map_and_origin_from_peaks():
    s = make_strained_crystal(scan_shape=(8, 8), noise=False)
    bp = find_bragg_disks(s.datacube, template=make_template(s.probe))
    org = origin_from_peaks(bp)
    np.testing.assert_allclose(org.data, s.truth[1].data, atol=1e-3)
    bvm = bragg_vector_map(bp, origin=org)
    assert bvm.data.shape == (128, 128)
    assert bvm.data.sum() == pytest.approx(np.nansum(bp.intensity[np.abs(bp.qy - 64) < 60]), rel=0.05)
    # the central beam lands on (64, 64) and the (1, 0) spot 24 px away along g1
    assert bvm.data[64, 64] == bvm.data.max()
    g1 = s.truth[0].params["g1_ref_px_yx"]
    y, x = 64 + g1[0], 64 + g1[1]
    assert bvm.data[round(y) - 1 : round(y) + 2, round(x) - 1 : round(x) + 2].sum() > 0
    big = bragg_vector_map(bp, origin=org, sampling=2, weights="count")
    assert big.data.shape == (256, 256) and big.data.sum() == pytest.approx(bp.n_peaks, rel=0.05)
    with pytest.raises(DataShapeError, match="no origin"):
        bragg_vector_map(bp)


def test_min_significance_keeps_weak_disks_and_drops_noise(rng):
    # a strong central beam and four Bragg disks 1e-3 of it above a Poisson background: with a
    # low min_relative the noise floods in; the disk test keeps exactly the planted disks
    size = 128
    yy, xx = np.indices((size, size))
    centres = [(64.0, 64.0), (64.0, 28.0), (64.0, 100.0), (28.0, 64.0), (100.0, 64.0)]
    amps = [20000.0, 30.0, 30.0, 30.0, 30.0]
    lam = np.full((size, size), 3.0)
    for (cy, cx), a in zip(centres, amps):
        lam += a * soft_disk(np.hypot(yy - cy, xx - cx), 6.0, 0.5)
    data = rng.poisson(np.broadcast_to(lam, (2, 3, size, size))).astype(np.float32)
    tmpl = make_template(20000.0 * soft_disk(np.hypot(yy - 64, xx - 64), 6.0, 0.5))
    loose = find_bragg_disks(data, template=tmpl, min_relative=1e-5)
    sig = find_bragg_disks(data, template=tmpl, min_relative=1e-5, min_significance=5.0)
    planted = np.array(centres)
    for iy in range(2):
        for ix in range(3):
            yx = np.stack([sig.at(iy, ix)["qy"], sig.at(iy, ix)["qx"]], 1)
            d = np.linalg.norm(yx[:, None] - planted[None], axis=2)
            assert len(yx) == 5 and np.all(d.min(axis=1) < 1.0)  # all planted, nothing else
            assert np.all(d.min(axis=0) < 1.0)
            assert len(loose.at(iy, ix)["qy"]) > 10  # the noise peaks the test removes
    assert sig.params["min_significance"] == 5.0


def test_negative_count_background_gives_finite_intensities_and_the_planted_disks(rng):
    """Session 14, audit3 #2: on the FEI TIA int32 file (negative counts) 55-60 of the 100
    candidates of a pattern came back with NaN intensity (their disk fit failed: noise maxima),
    and the Bragg dock's NaN point sizes made napari raise. Planted disks on a background of
    zero-mean noise with negative counts: the disks are found where planted with about their
    integrated counts, and every kept candidate's intensity is finite and >= 0."""
    from napari_4dstem.pipelines import DiskDetectionParams, detect_pattern

    shape = (96, 96)
    yy, xx = np.indices(shape)
    template = make_template(1000 * soft_disk(np.hypot(yy - 48, xx - 48), 4.0, 0.5))
    truth = np.array([[30.3, 29.6], [30.8, 66.2], [65.4, 31.1], [66.1, 65.7]])
    amp = 400.0
    clean = sum(amp * soft_disk(np.hypot(yy - y, xx - x), 4.0, 0.5) for y, x in truth)
    pattern = np.round(clean + rng.normal(0.0, 25.0, shape)).astype(np.int32)
    assert pattern.min() < -50  # the defect's trigger class: signed counts below zero
    rows = detect_pattern(pattern, template, DiskDetectionParams(min_relative=0.0, max_peaks=60))
    assert len(rows) > len(truth)  # noise candidates too (where the fit fails)
    assert np.isfinite(rows).all() and (rows[:, 2] >= 0).all()
    area = np.sum(soft_disk(np.hypot(yy - 48, xx - 48), 4.0, 0.5))
    for y, x in truth:
        d = np.hypot(rows[:, 0] - y, rows[:, 1] - x)
        j = int(np.argmin(d))
        assert d[j] < 0.25
        assert rows[j, 2] == pytest.approx(amp * area, rel=0.15)
