"""Known-answer tests of structure classification (features, classes, class count, mixing).

The synthetic scans plant classes (square lattices of soft disks: a reference, the same lattice
turned 4 deg, one with a 2.5 % larger spacing) on a known map, with nuisances that must not
split a class (a thickness gradient, per-reflection intensity drift, a strain gradient, descan)
and Poisson noise, then recover the map.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_4dstem.analysis.classify import (
    ClassifyParams,
    FeatureParams,
    bragg_features,
    classify,
    classify_features,
    compute_features,
    iter_class_means,
    to_emd_objects,
)
from napari_4dstem.data.results import BraggPeaks
from napari_4dstem.engine import run_job
from napari_4dstem.simulation.samples import render_disks

pytest.importorskip("sklearn")
from sklearn.metrics import adjusted_rand_score

DET = (64, 64)


def lattice(spacing, rot_deg, rmax=30.0):
    a = np.deg2rad(rot_deg)
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    ij = np.array([(i, j) for i in range(-4, 5) for j in range(-4, 5) if (i, j) != (0, 0)], float)
    g = ij * spacing @ R.T
    return g[np.hypot(*g.T) < rmax]  # (n, 2) as (x, y) px


def scene(truth, lattices, *, dose=3e4, mix=None, rng=None, descan=1.5, thickness=(0.4, 1.6), drift=0.3):
    """Patterns for a class map ``truth`` (scan_y, scan_x); ``mix`` (scan_y, scan_x, 2):
    optional (other class, fraction of the other) per pixel. uint16, Poisson."""
    rng = rng or np.random.default_rng(0)
    sy, sx = truth.shape
    o0 = np.array([DET[0] / 2 - 0.3, DET[1] / 2 + 0.2])
    n_max = max(len(g) for g in lattices) + 1

    def render(cls):
        cen = np.full((sy * sx, n_max, 2), np.nan)
        amp = np.zeros((sy * sx, n_max))
        for k, (i, j) in enumerate(np.ndindex(sy, sx)):
            g = lattices[cls[i, j]] * (1 + 0.004 * (i / sy - 0.5))  # strain gradient 0.4 %
            o = o0 + descan * np.array([i / sy, -j / sx])
            th = thickness[0] + (thickness[1] - thickness[0]) * j / sx
            wobble = 1 + drift * np.sin(np.arange(len(g)) * 1.7 + i / 6)
            cen[k, 0] = o
            cen[k, 1 : len(g) + 1] = o + g[:, ::-1]
            amp[k, 0] = max(0.2, 2.0 - th)
            amp[k, 1 : len(g) + 1] = th * wobble * np.exp(-np.hypot(*g.T) / 25)
        p = render_disks(cen, amp, DET, 2.5, 0.5) + 0.01
        return p / p.sum(axis=(1, 2), keepdims=True)

    pats = render(truth)
    if mix is not None:
        other = render(mix[..., 0].astype(int))
        f = mix[..., 1].reshape(-1, 1, 1)
        pats = (1 - f) * pats + f * other
    return rng.poisson(pats * dose).astype(np.uint16).reshape(sy, sx, *DET)


def three_classes(sy=24, sx=24):
    truth = np.zeros((sy, sx), int)
    truth[:, sx // 3 : 2 * sx // 3] = 1
    truth[sy // 2 :, 2 * sx // 3 :] = 2
    truth[: sy // 2, 2 * sx // 3 :] = 0
    lats = [lattice(12, 0), lattice(12, 4), lattice(12 * 1.025, 0)]
    return truth, lats


# -- features --------------------------------------------------------------------------------
def naive_pattern_features(p, origin, radius, b, inner):
    """Bilinear splat of every pixel centre onto bins of ``b`` px fixed to the origin."""
    n = int(np.ceil(2 * radius / b))
    out = np.zeros((n, n))
    for i in range(p.shape[0]):
        for j in range(p.shape[1]):
            dy, dx = i - origin[0], j - origin[1]
            d2 = dy * dy + dx * dx
            if d2 > radius**2 or d2 < inner**2:
                continue
            fy, fx = (dy + radius) / b - 0.5, (dx + radius) / b - 0.5
            y0, x0 = int(np.floor(fy)), int(np.floor(fx))
            for ky, wy in ((0, 1 - (fy - y0)), (1, fy - y0)):
                for kx, wx in ((0, 1 - (fx - x0)), (1, fx - x0)):
                    if 0 <= y0 + ky < n and 0 <= x0 + kx < n:
                        out[y0 + ky, x0 + kx] += p[i, j] * wy * wx
    return out.ravel()


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_pattern_features_match_naive_reference(dtype):
    rng = np.random.default_rng(1)
    data = (rng.random((5, 7, 21, 19)) * 50).astype(dtype)  # odd, non-square shapes
    origin = np.stack(np.broadcast_arrays(10.3 + rng.random((5, 7)), 8.6 + rng.random((5, 7))), -1)
    fp = FeatureParams("pattern", radius_px=7.5, bin_px=2.0, inner_px=1.5)
    f = compute_features(data, fp, origin_px=origin, scan_chunk=(2, 3))  # uneven chunks
    assert f.shape == (8, 8)
    for i, j in [(0, 0), (4, 6), (2, 3)]:
        ref = naive_pattern_features(data[i, j].astype(float), origin[i, j], 7.5, 2.0, 1.5)
        np.testing.assert_allclose(f.values[i, j], ref, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(f.total, data.sum(axis=(2, 3), dtype=np.float64), rtol=1e-6)


def test_features_stream_from_memmap_equal_in_memory(tmp_path):
    truth, lats = three_classes(8, 10)
    data = scene(truth, lats, dose=2e3)
    path = tmp_path / "d.npy"
    np.save(path, data)
    mm = np.load(path, mmap_mode="r")
    fp = FeatureParams("pattern", inner_px=4)
    a = compute_features(data, fp, origin_px=np.array([31.7, 32.2]))
    b = compute_features(mm, fp, origin_px=np.array([31.7, 32.2]), scan_chunk=(3, 4))
    np.testing.assert_array_equal(a.values, b.values)


def test_radial_profile_peaks_at_a_planted_ring():
    yy, xx = np.indices(DET)
    r = np.hypot(yy - 30.0, xx - 33.0)
    ring = np.exp(-0.5 * ((r - 17.0) / 0.7) ** 2)
    data = np.broadcast_to(ring, (2, 3, *DET)).astype(np.float32)
    f = compute_features(data, FeatureParams("radial", radius_px=28, bin_px=1.0), origin_px=np.array([30.0, 33.0]))
    prof = f.values[1, 2]
    # ring centres at (k + 0.5) px: the peak is the ring at 16.5 or 17.5
    assert abs((np.argmax(prof) + 0.5) - 17.0) <= 0.5 + 1e-9
    np.testing.assert_allclose(f.values[0, 0], prof)


def test_polar_features_are_rotation_invariant():
    g = lattice(11, 0)
    o = np.array([32.0, 32.0])
    cen = np.concatenate([o[None], o + g[:, ::-1]])[None]
    amp = np.concatenate([[1.0], np.linspace(0.2, 1.0, len(g))])[None]
    p = render_disks(cen, amp, DET, 2.5, 0.5)[0]
    data = np.stack([p, np.rot90(p, 1, axes=(0, 1)).copy()]).reshape(1, 2, *DET).astype(np.float32)
    # rot90 about the array centre (31.5, 31.5): origin of the turned pattern
    origin = np.array([[[32.0, 32.0], [31.0, 32.0]]])
    fp = FeatureParams("polar", radius_px=28, n_angles=64, n_harmonics=8)
    f = compute_features(data, fp, origin_px=origin)
    a, b = f.values[0, 0], f.values[0, 1]
    assert np.linalg.norm(a - b) < 0.08 * np.linalg.norm(a)
    # while the orientation-keeping features differ a lot
    fpat = compute_features(data, FeatureParams("pattern", radius_px=28, bin_px=2), origin_px=origin)
    pa, pb = fpat.values[0, 0], fpat.values[0, 1]
    assert np.linalg.norm(pa - pb) > 0.5 * np.linalg.norm(pa)


def test_bragg_features_count_each_disk_once():
    rng = np.random.default_rng(2)
    scan = (3, 4)
    counts = rng.integers(0, 6, size=12)
    recs = []
    for c in counts:
        q = rng.uniform(5, 59, size=(c, 2))
        recs.append({"qy": q[:, 0], "qx": q[:, 1], "intensity": rng.uniform(1, 1000, c)})
    peaks = BraggPeaks.from_lists(recs, scan)
    f = bragg_features(peaks, FeatureParams("bragg", radius_px=40.0, bin_px=4.0), origin_px=np.array([32.0, 32.0]))
    # every disk inside the radius adds exactly 1 whatever its intensity
    inside = [np.sum(np.hypot(r["qy"] - 32, r["qx"] - 32) <= 40) for r in recs]
    np.testing.assert_allclose(f.values.reshape(12, -1).sum(1), inside, atol=1e-5)


# -- classification ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def three_class_scan():
    truth, lats = three_classes()
    return truth, scene(truth, lats, dose=3e4, rng=np.random.default_rng(5))


def test_finds_three_close_classes_and_their_number(three_class_scan):
    truth, data = three_class_scan
    r = classify(data, features=FeatureParams("pattern", inner_px=5), params=ClassifyParams(max_classes=5))
    assert r.suggested_n_classes == 3
    assert r.n_classes == 3
    assert adjusted_rand_score(truth.ravel(), r.labels.ravel()) >= 0.95
    assert set(r.bic) == set(range(1, 6)) and set(r.silhouette) == set(range(2, 6))
    # class mean patterns: the mean of the raw patterns of each class
    for c in range(3):
        np.testing.assert_allclose(r.class_patterns[c], data[r.labels == c].mean(0), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("method", ["kmeans", "hierarchical", "gmm"])
def test_methods_with_the_number_given(method):
    # without intensity drifts (k-means and Ward assume round clusters; drifts: next test)
    truth, lats = three_classes(18, 18)
    data = scene(truth, lats, dose=3e4, descan=0.5, thickness=(1.0, 1.0), drift=0.0)
    r = classify(
        data,
        features=FeatureParams("pattern", inner_px=5),
        params=ClassifyParams(method=method, n_classes=3),
        class_means=False,
    )
    assert r.n_classes == 3 and (r.bic == {}) == (method != "gmm")
    assert adjusted_rand_score(truth.ravel(), r.labels.ravel()) >= 0.95


def test_gmm_with_the_number_given_merges_down_to_it(three_class_scan):
    truth, data = three_class_scan
    r = classify(
        data,
        features=FeatureParams("pattern", inner_px=5),
        params=ClassifyParams(n_classes=3, max_classes=5),
        class_means=False,
    )
    assert r.n_classes == 3
    assert adjusted_rand_score(truth.ravel(), r.labels.ravel()) >= 0.95
    r2 = classify(
        data,
        features=FeatureParams("pattern", inner_px=5),
        params=ClassifyParams(n_classes=2, max_classes=5),
        class_means=False,
    )
    assert r2.n_classes == 2 and r2.suggested_n_classes == 3


def test_nmf_decomposition_gives_non_negative_components():
    truth, lats = three_classes(18, 18)
    data = scene(truth, lats, dose=3e4, descan=0.5, thickness=(1.0, 1.0), drift=0.0)
    r = classify(
        data,
        features=FeatureParams("pattern", inner_px=5),
        params=ClassifyParams(decomposition="nmf", n_components=4, n_classes=3),
        class_means=False,
    )
    assert r.components.shape[0] == 4 and np.all(r.components >= 0) and np.all(r.loadings >= 0)
    assert adjusted_rand_score(truth.ravel(), r.labels.ravel()) >= 0.9


@pytest.mark.parametrize("kind", ["pattern", "pattern+angular"])
def test_drift_alone_does_not_split_a_class(kind):
    # one lattice; a strong thickness gradient, intensity drift, strain gradient and descan
    truth = np.zeros((20, 20), int)
    data = scene(truth, [lattice(12, 0)], dose=3e4, descan=3.0, thickness=(0.4, 1.6))
    r = classify(
        data, features=FeatureParams(kind, inner_px=6), params=ClassifyParams(max_classes=5), class_means=False
    )
    assert r.suggested_n_classes == 1
    assert min(r.bic, key=r.bic.get) > 1  # BIC alone would have split it


def test_mixing_fractions_at_a_boundary():
    sy, sx = 16, 24
    truth = np.zeros((sy, sx), int)
    truth[:, sx // 2 :] = 1
    # a boundary two columns wide (the probe's size) with known fractions of the other class
    mix = np.zeros((sy, sx, 2))
    fr = {sx // 2 - 1: 0.3, sx // 2: 0.25}
    for j, f in fr.items():
        mix[:, j, 0] = 1 - truth[0, j]
        mix[:, j, 1] = f
    lats = [lattice(12, 0), lattice(12 * 1.03, 0)]
    data = scene(truth, lats, dose=1e5, mix=mix, descan=0.0, thickness=(1.0, 1.0))
    r = classify(
        data, features=FeatureParams("pattern", inner_px=5), params=ClassifyParams(max_classes=4), class_means=False
    )
    assert r.n_classes == 2
    assert adjusted_rand_score(truth.ravel(), r.labels.ravel()) >= 0.95
    own = np.take_along_axis(r.mixing, r.labels[..., None], -1)[..., 0]
    for j, f in fr.items():
        assert abs(np.median(1 - own[:, j]) - f) < 0.06, (j, f, np.median(1 - own[:, j]))
    pure = [j for j in range(sx) if j not in fr]
    assert np.median(1 - own[:, pure]) < 0.03


def test_merge_classes_and_class_means(three_class_scan):
    _truth, data = three_class_scan
    r = classify(
        data, features=FeatureParams("pattern", inner_px=5), params=ClassifyParams(method="kmeans", n_classes=3)
    )
    m = r.merged([1, 2])
    assert m.n_classes == 2
    assert np.array_equal(m.labels == 1, r.labels == 1) or np.array_equal(
        m.labels == 1, (r.labels == 1) | (r.labels == 2)
    )
    joined = (r.labels == 1) | (r.labels == 2)
    np.testing.assert_array_equal(m.labels == 1, joined)
    np.testing.assert_allclose(m.class_patterns[1], data[joined].mean(0), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(m.probability.sum(-1), 1, atol=1e-5)
    means = run_job(iter_class_means(data, m.labels))
    np.testing.assert_allclose(means, m.class_patterns, rtol=1e-4, atol=1e-3)


def test_emd_export_reopens(tmp_path, three_class_scan):
    from napari_4dstem.io import emd

    _, data = three_class_scan
    r = classify(
        data, features=FeatureParams("pattern", inner_px=5), params=ClassifyParams(method="kmeans", n_classes=3)
    )
    path = emd.write(tmp_path / "cls.h5", *to_emd_objects(r))
    back = emd.read(path)
    np.testing.assert_array_equal(back["class_labels"].data, r.labels)
    np.testing.assert_allclose(back["class_probability"].data, r.probability)
    assert back["class_probability"].channels == ("class_0", "class_1", "class_2")
    np.testing.assert_allclose(back["class_2_mean"].data, r.class_patterns[2])
    np.testing.assert_allclose(back["component_0"].data, r.components[0])
    assert back["class_labels"].params["classify.method"] == "kmeans"
    assert back["class_labels"].params["n_classes"] == 3


def test_features_from_classify_features_are_reusable(three_class_scan):
    truth, data = three_class_scan
    f = compute_features(data, FeatureParams("pattern", inner_px=5), origin_px=np.array([31.7, 32.2]))
    r = classify_features(f, ClassifyParams(method="kmeans", n_classes=3, spatial=0))
    assert r.params["classify"]["spatial"] == 0
    assert r.labels.shape == truth.shape


def test_split_a_class_recovers_the_two_it_held(three_class_scan):
    # given two classes, two of the three real ones share a class; splitting that class into
    # two finds them again, and the pipeline replays the split from its recipe
    from napari_4dstem.pipelines import ClassificationParams, run_classification

    truth, data = three_class_scan
    res = run_classification(
        data, classify=ClassificationParams(features="pattern", inner_px=5, n_classes=2, max_classes=5)
    )
    two = res.classification
    assert two.n_classes == 2
    # the class holding two real ones: the one whose second most frequent true class is largest
    joined = max(range(2), key=lambda c: np.sort(np.bincount(truth[two.labels == c], minlength=3))[-2])
    split = run_job(res.iter_split(joined, 2, data))
    r = split.classification
    assert r.n_classes == 3 and split.recipe.params["classify"].merge == ((joined, -2),)
    assert adjusted_rand_score(truth.ravel(), r.labels.ravel()) >= 0.95
    # the other class is untouched; the parts are the class's two numbers
    np.testing.assert_array_equal(r.labels == 1 - joined, two.labels == 1 - joined)
    assert set(np.unique(r.labels[two.labels == joined])) == {joined, 2}
    np.testing.assert_allclose(r.probability.sum(-1), 1, atol=1e-5)
    for c in range(3):
        np.testing.assert_allclose(r.class_patterns[c], data[r.labels == c].mean(0), rtol=1e-4, atol=1e-3)
    again = run_classification(data, classify=split.recipe.params["classify"])
    np.testing.assert_array_equal(again.classification.labels, r.labels)
    with pytest.raises(ValueError, match="2 or more"):
        two.split(joined, 1)


def test_split_of_a_one_class_result_splits_the_whole_scan(three_class_scan):
    # with one class there is no rest of the scan to leave out of the merging: the split raised
    # IndexError (UX audit session 15, S9: the Split row's default on a 1-class result)
    from napari_4dstem.pipelines import ClassificationParams, run_classification

    truth, data = three_class_scan
    res = run_classification(data, classify=ClassificationParams(features="pattern", inner_px=5, n_classes=1))
    assert res.classification.n_classes == 1
    r = run_job(res.iter_split(0, 3, data)).classification
    assert r.n_classes == 3
    assert adjusted_rand_score(truth.ravel(), r.labels.ravel()) >= 0.95


# -- session 7: orientation, origin, hard cases at small size ----------------------------------
def soft_pattern(g, o, amps, bf=1.0):
    cen = np.concatenate([o[None], o + g[:, ::-1]])[None]
    amp = np.concatenate([[bf], amps])[None]
    return render_disks(cen, amp, DET, 2.5, 0.5)[0] + 0.01


def test_symmetry_centre_finds_the_direct_beam_when_a_bragg_disk_outshines_it():
    from napari_4dstem.analysis.classify.pipeline import symmetry_centre

    g = lattice(11, 7)
    rng = np.random.default_rng(3)
    o = np.array([30.4, 33.7])
    # a thick crystal: the unscattered beam at a fifth of the strongest disk, unequal disks
    p = soft_pattern(g, o, rng.uniform(0.3, 1.0, len(g)), bf=0.2)
    c = symmetry_centre(p)
    assert np.hypot(c[0] - o[0], c[1] - o[1]) < 0.3, c


def test_angular_features_shift_with_a_rotation_and_ignore_disk_intensities():
    o = np.array([32.0, 32.0])
    rng = np.random.default_rng(6)
    a = soft_pattern(lattice(11, 0), o, np.full(len(lattice(11, 0)), 0.8))
    turned = lattice(11, 4)
    b = soft_pattern(turned, o, rng.uniform(0.3, 1.5, len(turned)))  # turned 4 deg, other intensities
    data = np.stack([a, b]).reshape(1, 2, *DET).astype(np.float32)
    f = compute_features(data, FeatureParams("angular", radius_px=28, inner_px=5), origin_px=o)
    assert f.shape == (360,)
    fa, fb = f.values[0, 0].astype(float), f.values[0, 1].astype(float)
    # the profile of the turned pattern is the first one shifted by 4 sectors (1 deg each):
    # angles in the image (y down) turn the other way, so look at both signs
    cc = [np.dot(np.roll(fa, s) - fa.mean(), fb - fb.mean()) for s in range(-10, 11)]
    assert abs(abs(int(np.argmax(cc)) - 10) - 4) <= 1
    # every disk is a bump of about the same height whatever its intensity (0.3..1.5)
    bumps = fb[fb > 0.5]
    assert np.percentile(bumps, 90) < 1.0 and np.corrcoef(np.roll(fa, np.argmax(cc) - 10), fb)[0, 1] > 0.8


def test_grains_turned_3_deg_under_a_thickness_gradient_are_told_apart():
    # one lattice in three orientations 3 deg apart, a 4.5x thickness gradient with the direct
    # beam dimmer than the Bragg disks on the thick side, 30 % intensity drift, 2 px descan:
    # the angular block finds them and their number (seeds 11-13: ARI 1.000 and 3 classes each;
    # the pattern block alone 0.51-0.53 given the number, PCA + k-means on raw patterns 0.39)
    rng = np.random.default_rng(11)
    truth = np.zeros((16, 18), int)
    truth[:, 6:12] = 1
    truth[8:, 12:] = 2
    data = scene(
        truth, [lattice(12, 0), lattice(12, 3), lattice(12, 6)], dose=3e4, rng=rng, thickness=(0.4, 1.8), descan=2.0
    )
    r = classify(
        data, features=FeatureParams("pattern+angular"), params=ClassifyParams(max_classes=5), class_means=False
    )
    assert r.n_classes == 3
    assert adjusted_rand_score(truth.ravel(), r.labels.ravel()) >= 0.95


def test_three_classes_at_1e3_electrons_per_pattern():
    # the three close classes (4 deg, 2.5 %) at 1e3 electrons per pattern: seeds 8-10 give 3
    # classes and ARI 1.000 (PCA + k-means on raw patterns, given 3: 0.64)
    truth, lats = three_classes(20, 21)
    data = scene(truth, lats, dose=1e3, rng=np.random.default_rng(8))
    r = classify(data, params=ClassifyParams(max_classes=5), class_means=False)
    assert r.n_classes == 3
    assert adjusted_rand_score(truth.ravel(), r.labels.ravel()) >= 0.95


def test_boundary_band_component_joins_a_side():
    # components on a 12 x 12 scan: 0 left, 1 right, 2 a 2-px band between them whose mean is
    # 0.6 m0 + 0.4 m1 (a probe on the boundary), 3 a 2-px strip inside 1 whose mean is nobody's mix
    from napari_4dstem.analysis.classify.model import _boundary_bands

    lab = np.zeros((12, 12), int)
    lab[:, 5:7] = 2
    lab[:, 7:] = 1
    lab[:, 9:11] = 3
    rng = np.random.default_rng(0)
    m0, m1, m3 = rng.random((3, 50))
    means = np.stack([m0, m1, 0.6 * m0 + 0.4 * m1 + 0.001 * rng.random(50), m3])
    assert _boundary_bands(means, lab.ravel(), lab.shape) == [(2, 0, (0, 1))]
    # the same band made wide (6 px): no longer thin, so no band
    wide = np.zeros((12, 12), int)
    wide[:, 3:9] = 2
    wide[:, 9:] = 1
    assert _boundary_bands(means[:3], wide.ravel(), wide.shape) == []


def test_narrow_component_joins_the_nearest_neighbour_it_borders():
    # a 2-px terrace (component 2) between components 0 and 1, nearer 1 in feature space; a
    # 3-px one (3) inside 0; component 4 is 8 px wide: no join
    from napari_4dstem.analysis.classify.model import _thin_components

    lab = np.zeros((16, 24), int)
    lab[:, 3:6] = 3
    lab[:, 10:12] = 2
    lab[:, 12:16] = 1
    lab[:, 16:] = 4
    centres = np.array([[0.0, 0], [1.0, 0], [0.8, 0.1], [0.1, 0.0], [5.0, 5.0]])
    z = centres[lab.ravel()]
    assert dict(_thin_components(lab.ravel(), z, lab.shape, 5, width=4)) == {2: 1, 3: 0}
    assert _thin_components(lab.ravel(), z, lab.shape, 5, width=1) == []


def test_boundary_band_and_thickness_terrace_do_not_make_classes():
    # two lattices 2.5 % apart; a 2-px boundary band (60/40 mix) and, inside class 0, a 2-px
    # column where the Bragg disks are 3x brighter (a thickness terrace)
    sy, sx = 18, 24
    truth = np.zeros((sy, sx), int)
    truth[:, 14:] = 1
    mix = np.zeros((sy, sx, 2))
    mix[:, 13, 0], mix[:, 13, 1] = 1, 0.4
    mix[:, 14, 0], mix[:, 14, 1] = 0, 0.4
    lats = [lattice(12, 0), lattice(12 * 1.025, 0)]
    rng = np.random.default_rng(3)
    data = scene(truth, lats, dose=3e4, mix=mix, rng=rng, descan=1.0, thickness=(1.0, 1.0), drift=0.2)
    terrace = scene(truth[:, 5:7], lats, dose=3e4, rng=rng, descan=0.0, thickness=(3.0, 3.0), drift=0.2)
    data[:, 5:7] = terrace
    p = ClassifyParams(max_classes=6)
    r = classify(data, features=FeatureParams("pattern", inner_px=5), params=p, class_means=False)
    assert r.n_classes == 2
    pure = np.ones(sx, bool)
    pure[13:15] = False  # the mixed columns may go either way
    assert adjusted_rand_score(truth[:, pure].ravel(), r.labels[:, pure].ravel()) == 1.0
    # without the narrow-component rule the terrace is a class of its own
    r0 = classify(
        data, features=FeatureParams("pattern", inner_px=5), params=replace(p, min_width=0), class_means=False
    )
    assert r0.n_classes == 3


def test_maf_factors_put_large_regions_before_narrow_terraces_of_larger_variance():
    # three feature directions on a 24 x 24 scan: a two-region class map (left/right halves, step 1),
    # terraces 2 px wide alternating between two levels 2 apart (four times the class's variance), noise
    from napari_4dstem.analysis.classify.model import maf_factors

    sy = sx = 24
    rng = np.random.default_rng(1)
    jj = np.tile(np.arange(sx), (sy, 1))
    cls = (jj >= sx // 2).astype(float)
    stair = 2.0 * (jj // 2 % 2)
    z = np.stack([stair, cls, np.zeros_like(cls)], -1).reshape(-1, 3) + 0.05 * rng.standard_normal((sy * sx, 3))
    assert z[:, 0].var() > 3 * z[:, 1].var()  # the terraces have the larger variance: PCA puts it first
    f = maf_factors(z, (sy, sx), 2)
    assert f.shape == (sy * sx, 2)
    # the first factor is the class map (up to sign and scale), the second the terraces
    assert abs(np.corrcoef(f[:, 0], cls.ravel())[0, 1]) > 0.99
    assert abs(np.corrcoef(f[:, 1], stair.ravel())[0, 1]) > 0.99


def test_choose_space_keeps_the_factors_only_when_the_components_missed_large_regions():
    # the factors of the maf test's scan: a two-region class map and 2-px terraces of larger variance
    from napari_4dstem.analysis.classify.model import choose_space, maf_factors, space_score

    sy = sx = 24
    rng = np.random.default_rng(1)
    jj = np.tile(np.arange(sx), (sy, 1))
    ii = jj.T
    halves = (jj >= sx // 2).astype(int)
    stair = 2.0 * (jj // 2 % 2)
    z = np.stack([stair, halves, np.zeros(halves.shape)], -1).reshape(-1, 3)
    f = maf_factors(z + 0.05 * rng.standard_normal(z.shape), (sy, sx), 2)
    one = np.zeros(sy * sx, int)
    quarters = (halves + 2 * (ii >= sy // 2)).ravel()
    # one class explains nothing; a class per pixel everything; the halves the coherent factor (most of it)
    assert space_score(f, one) == pytest.approx(0.0, abs=1e-12)
    assert space_score(f, np.arange(sy * sx)) == pytest.approx(1.0)
    assert space_score(f, halves.ravel()) > 0.5
    # the components found one class, the factors the halves: the factors' classes are kept
    assert choose_space(f, {"components": one, "maf": halves.ravel()})[0] == "maf"
    # both found the halves, or the factors split them further (top/bottom: no structure): the components'
    assert choose_space(f, {"components": halves.ravel(), "maf": halves.ravel()})[0] == "components"
    chosen, scores = choose_space(f, {"components": halves.ravel(), "maf": quarters})
    assert chosen == "components" and scores["maf"] - scores["components"] < 0.1


def test_auto_space_returns_one_of_the_two_clusterings_and_says_which(three_class_scan):
    truth, data = three_class_scan
    fp = FeatureParams("pattern", inner_px=5)
    auto = classify(data, features=fp, params=ClassifyParams(space="auto", max_classes=5), class_means=False)
    chosen = auto.params["space_chosen"]
    assert set(auto.params["space_scores"]) == {"components", "maf"}
    alone = classify(data, features=fp, params=ClassifyParams(space=chosen, max_classes=5), class_means=False)
    np.testing.assert_array_equal(auto.labels, alone.labels)
    # three distinct classes in large regions: both spaces find them, so the components' classes are kept
    assert chosen == "components" and auto.n_classes == 3
    assert adjusted_rand_score(truth.ravel(), auto.labels.ravel()) >= 0.95
    with pytest.raises(ValueError, match="space"):
        ClassifyParams(space="factors")


def test_a_long_library_call_runs_in_a_thread_the_job_can_leave():
    # _in_thread yields a tick every poll while the call runs, returns the call's own result, and a job
    # closed at a tick returns at once (the call finishes in its thread)
    import threading
    import time

    from napari_4dstem.analysis.classify.model import _in_thread

    done = threading.Event()

    def slow(x):
        time.sleep(0.5)
        done.set()
        return x * 2

    gen = _in_thread(slow, lambda: "tick", 21, poll_s=0.05)
    ticks = 0
    try:
        while True:
            assert next(gen) == "tick"
            ticks += 1
    except StopIteration as e:
        assert e.value == 42
    assert ticks >= 5 and done.is_set()
    done.clear()
    gen = _in_thread(slow, lambda: "tick", 1, poll_s=0.05)
    assert next(gen) == "tick"
    t = time.perf_counter()
    gen.close()
    assert time.perf_counter() - t < 0.2 and not done.is_set()  # left before the call ended
    assert done.wait(2.0)  # which still ends in its thread


def test_split_of_classes_made_on_the_factors_re_clusters_the_components():
    # three bands (a lattice, the same turned 4 deg, the same 2.5 % larger); two classes made on the
    # maximum-autocorrelation factors join the turned and the larger lattice. Splitting that class
    # re-clusters its patterns' leading component scores, not the factors (session 11: on the factors
    # the split gave ARI 0.59, on the components 1.000): the factors are the scan's most coherent
    # directions and the two classes were joined there because they differ little along them
    _, lats = three_classes()
    truth = np.zeros((24, 24), int)
    truth[:, 8:16] = 1
    truth[:, 16:] = 2
    data = scene(truth, lats, dose=3e4, rng=np.random.default_rng(5))
    two = classify(
        data,
        features=FeatureParams("pattern", inner_px=5),
        params=ClassifyParams(space="maf", n_classes=2, max_classes=5),
        class_means=False,
    )
    assert two.params["space_chosen"] == "maf" and two.n_classes == 2
    joined = max(range(2), key=lambda c: np.sort(np.bincount(truth[two.labels == c], minlength=3))[-2])
    held = np.bincount(truth[two.labels == joined], minlength=3)
    assert np.sort(held)[-2] >= 150  # the class holds two real ones
    r = two.split(joined, 2)
    assert r.n_classes == 3
    assert adjusted_rand_score(truth.ravel(), r.labels.ravel()) >= 0.95


def test_fine_radial_block_moves_with_the_lattice_spacing_and_ignores_disk_intensities():
    # three patterns about the same sub-pixel origin: a lattice, the same with other disk intensities, and the
    # lattice 3 % larger; the fine radial block (0.5 px rings, running-maximum normalised) puts every ring of
    # disks at its radius as a bump of height about 1 whatever the intensities
    o = np.array([31.6, 32.3])
    rng = np.random.default_rng(8)
    g = lattice(11, 5)
    a = soft_pattern(g, o, np.full(len(g), 0.8))
    b = soft_pattern(g, o, rng.uniform(0.3, 1.5, len(g)))
    c = soft_pattern(g * 1.03, o, np.full(len(g), 0.8))
    data = np.stack([a, b, c]).reshape(1, 3, *DET).astype(np.float32)
    fp = FeatureParams("pattern+radial", radius_px=28, inner_px=5)
    f = compute_features(data, fp, origin_px=o)
    (_, p0, p1, pc), (_, r0, r1, rc) = f.meta["blocks"]
    assert (p0, p1, pc) == (0, f.params.n_side() ** 2, True) and (r0, r1, rc) == (p1, p1 + 56, False)
    prof = f.values[0, :, r0:r1].astype(float)
    r = (np.arange(r1 - r0) + 0.5) * 0.5
    # the pattern block is the pattern features alone
    alone = compute_features(data, FeatureParams("pattern", radius_px=28, inner_px=5), origin_px=o)
    np.testing.assert_allclose(f.values[..., :p1], alone.values, rtol=1e-6)

    def centroid(q, lo, hi):  # of the bump above half height between lo and hi px
        w = (r >= lo) & (r <= hi)
        y = np.clip(q[w] - 0.5, 0, None)
        return float((y * r[w]).sum() / y.sum())

    for lo, hi, radius in ((8.0, 13.5, 11.0), (13.5, 18.5, 11 * np.sqrt(2))):  # the first two rings of disks
        ca, cb, cc = (centroid(q, lo, hi) for q in prof)
        # (a disk's ring means lean outwards by a few tenths of a pixel: more of its area at larger radii)
        assert abs(ca - radius) < 0.5 and abs(cb - ca) < 0.1, (ca, cb)
        assert abs((cc - ca) - 0.03 * radius) < 0.15, (cc - ca, 0.03 * radius)
    # bumps of height about 1 whatever the intensities (0.3..1.5): the two profiles of one lattice agree
    assert 0.8 < prof[0].max() <= 1.0 and 0.8 < prof[1].max() <= 1.0
    assert np.corrcoef(prof[0], prof[1])[0, 1] > 0.95
    with pytest.raises(ValueError, match="radial"):
        FeatureParams("pattern+radial", radial_window_px=0.1)


def test_remerge_joins_a_cut_through_a_staircase_and_keeps_a_real_step():
    # session 12: the step test once more on the smoothed label map. Scores on a 24 x 24 scan: (a) one class
    # whose score climbs a thickness staircase (terraces 3 px wide, each 1.0 higher), cut in two at a terrace
    # step: the step across the cut is no larger than the steps beside it, so the two join; (b) two
    # structures, flat inside, 6.0 apart across the same border: kept apart
    from napari_4dstem.analysis.classify.model import _remerge_smoothed

    sy = sx = 24
    rng = np.random.default_rng(4)
    jj = np.tile(np.arange(sx), (sy, 1))
    labels = (jj >= 12).astype(int).ravel()
    prob = np.eye(2)[labels] * 0.9 + 0.05
    noise = 0.05 * rng.standard_normal((sy * sx, 2))
    stair = np.stack([(jj // 3).astype(float), np.zeros((sy, sx))], -1).reshape(-1, 2) + noise
    lab, pr = _remerge_smoothed(stair, labels, prob, (sy, sx), jump=30.0)
    assert np.all(lab == 0) and pr.shape == (sy * sx, 1)
    np.testing.assert_allclose(pr[:, 0], prob.sum(1))
    step = np.stack([6.0 * (jj >= 12), np.zeros((sy, sx))], -1).reshape(-1, 2) + noise
    lab, pr = _remerge_smoothed(step, labels, prob, (sy, sx), jump=30.0)
    assert np.array_equal(lab, labels) and pr is prob
    # a staircase whose cut falls on a step 2.5 x the others (a reflection extinguished there): still joined
    big = (jj // 3).astype(float) + 1.5 * (jj >= 12)
    lab, _ = _remerge_smoothed(
        np.stack([big, np.zeros((sy, sx))], -1).reshape(-1, 2) + noise, labels, prob, (sy, sx), 30.0
    )
    assert np.all(lab == 0)


def test_remerge_keeps_two_planted_lattices_and_never_splits_one_under_a_thickness_gradient():
    # end to end with the re-merge on: one lattice under a strong thickness gradient, intensity drift, strain
    # and descan stays one class; two lattices (the second turned 4 deg) in two halves under the same
    # nuisances stay two, the map exact off the boundary
    p = ClassifyParams(max_classes=5, remerge_jump=20.0)
    one = scene(np.zeros((20, 20), int), [lattice(12, 0)], dose=3e4, descan=3.0, thickness=(0.4, 1.6))
    r = classify(one, features=FeatureParams("pattern", inner_px=6), params=p, class_means=False)
    assert r.n_classes == 1
    truth = np.zeros((20, 24), int)
    truth[:, 12:] = 1
    two = scene(truth, [lattice(12, 0), lattice(12, 4)], dose=3e4, descan=2.0, thickness=(0.4, 1.6))
    r = classify(two, features=FeatureParams("pattern", inner_px=6), params=p, class_means=False)
    assert r.n_classes == 2 and r.suggested_n_classes == 2
    pure = np.ones(24, bool)
    pure[11:13] = False
    assert adjusted_rand_score(truth[:, pure].ravel(), r.labels[:, pure].ravel()) == 1.0


def test_recipes_carry_remerge_jump_and_old_ones_replay_without_it():
    """The pipeline's params record the step test on the smoothed map (default 20 since session
    12); a recipe saved before the field existed ran without it and replays so."""
    from napari_4dstem.pipelines.classify import ClassificationParams

    new = ClassificationParams()
    assert new.remerge_jump == 20.0 and new.classify_params().remerge_jump == 20.0
    d = new.to_dict()
    assert ClassificationParams.from_dict(d).remerge_jump == 20.0
    old = {k: v for k, v in d.items() if k != "remerge_jump"}
    back = ClassificationParams.from_dict(old)
    assert back.remerge_jump == 0.0 and back.classify_params().remerge_jump == 0.0
    assert ClassificationParams.from_dict({**d, "remerge_jump": 5.0}).classify_params().remerge_jump == 5.0
    # session 13: the re-merge's guard, likewise; a recipe saved before it existed replays without it
    g = ClassificationParams(remerge_separation=12.5)
    assert ClassificationParams.from_dict(g.to_dict()).classify_params().remerge_separation == 12.5
    old = {k: v for k, v in g.to_dict().items() if k != "remerge_separation"}
    assert ClassificationParams.from_dict(old).classify_params().remerge_separation == 0.0
    with pytest.raises(ValueError, match="remerge_separation"):
        ClassifyParams(remerge_separation=-1.0)


def test_remerge_guard_keeps_two_flat_structures_joined_by_a_wide_mixing_band():
    # session 13 (#21): two flat structures (two lattices a few % apart: scores 0 and 4 along one component)
    # joined by a linear mixing band 8 px wide, the smoothed map's border in the middle of the band. The step
    # across the border is no larger than the steps beside it (a ramp), so the step test alone merges them;
    # their interiors (away from the band) differ by far more than their own spread, so the guard keeps them.
    # One structure under a thickness gradient (the score climbs across the whole scan, linearly or in terraces,
    # and a second score bends with it) cut in two: its interiors differ by a few times their own spread, so the
    # guard lets the merge happen.
    from napari_4dstem.analysis.classify.model import REMERGE_SEPARATION as T
    from napari_4dstem.analysis.classify.model import _interior_separation, _remerge_smoothed

    sy, sx = 20, 32
    rng = np.random.default_rng(5)
    jj = np.tile(np.arange(sx), (sy, 1))
    labels = (jj >= 16).astype(int).ravel()
    prob = np.eye(2)[labels] * 0.9 + 0.05
    noise = 0.05 * rng.standard_normal((sy * sx, 3))
    band = np.clip((jj - 12 + 0.5) / 8, 0, 1)  # 0 left of column 12, 1 right of column 19
    flat = np.stack([4.0 * band, 0.5 * band, np.zeros((sy, sx))], -1).reshape(-1, 3) + noise
    lab, pr = _remerge_smoothed(flat, labels, prob, (sy, sx), 20.0)
    assert np.all(lab == 0)  # the step test alone: no step, merged (session 12's blind spot)
    assert _interior_separation(flat, labels, 0, 1, (sy, sx)) > 3 * T
    lab, pr = _remerge_smoothed(flat, labels, prob, (sy, sx), 20.0, separation=T)
    assert np.array_equal(lab, labels) and pr is prob
    for grad in (jj / 4.0, (jj // 3).astype(float)):  # a linear thickness gradient, then terraces 3 px wide
        one = np.stack([grad, 0.3 * np.sin(jj / 5.0), np.zeros((sy, sx))], -1).reshape(-1, 3) + noise
        assert _interior_separation(one, labels, 0, 1, (sy, sx)) < T
        lab, pr = _remerge_smoothed(one, labels, prob, (sy, sx), 20.0, separation=T)
        assert np.all(lab == 0) and pr.shape == (sy * sx, 1)


def _band_and_gradient_scans():
    """(a) two lattices 2.5 % apart, flat, joined by a linear mixing band 8 px wide; (b) one lattice under a
    strong thickness gradient, intensity drift, strain and descan; 14 x 30 scans, and (a)'s truth."""
    sy, sx, w = 14, 30, 8
    truth = np.zeros((sy, sx), int)
    truth[:, sx // 2 :] = 1
    f1 = np.clip((np.arange(sx) - (sx // 2 - w // 2) + 0.5) / w, 0, 1)  # fraction of lattice 1 per column
    mix = np.zeros((sy, sx, 2))
    mix[..., 0] = 1 - truth
    mix[..., 1] = np.where(truth == 0, f1, 1 - f1)
    lats = [lattice(12, 0), lattice(12 * 1.025, 0)]
    rng = np.random.default_rng(6)
    band = scene(truth, lats, dose=3e4, mix=mix, rng=rng, descan=1.0, thickness=(1.0, 1.0), drift=0.2)
    grad = scene(np.zeros((sy, sx), int), lats[:1], dose=3e4, rng=rng, descan=2.0, thickness=(0.4, 1.6))
    return band, grad, truth, (f1 == 0) | (f1 == 1)


def _cut_in_two_then_remerge(data, separation):
    """Classified with the count given (2), then the re-merge on the scores, as the classification's last step
    runs it with the count suggested: the labels cut in two and the re-merged labels."""
    from napari_4dstem.analysis.classify.model import _remerge_smoothed

    p = ClassifyParams(n_classes=2, space="components")
    r = classify(data, features=FeatureParams("pattern", inner_px=5), params=p, class_means=False)
    assert r.n_classes == 2
    n = r.labels.size
    z = r.loadings.reshape(n, -1)[:, : p.cluster_dims].astype(np.float64)
    out, _ = _remerge_smoothed(z, r.labels.ravel(), r.probability.reshape(n, -1), r.labels.shape, 20.0, separation)
    return r.labels, out.reshape(r.labels.shape)


def test_remerge_guard_still_joins_one_lattice_cut_along_its_thickness_gradient():
    # session 13 (#21), on patterns: one lattice under a thickness gradient, forced into two classes, is joined
    # by the guarded re-merge (its interiors differ by 8.7 times their spread here, below the threshold)
    from napari_4dstem.analysis.classify.model import REMERGE_SEPARATION

    _, grad, _, _ = _band_and_gradient_scans()
    _, out = _cut_in_two_then_remerge(grad, REMERGE_SEPARATION)
    assert np.all(out == out.flat[0])


@pytest.mark.xfail(
    strict=True,
    reason="open (#21, session 13): on patterns the two lattices' interiors differ by 6.5 times their spread "
    "(Poisson noise at 3e4 e-), less than the gradient cut's 8.7, so no threshold keeps the band pair and still "
    "joins the gradient; the guard works on planted scores only",
)
def test_remerge_guard_keeps_two_lattices_joined_by_a_wide_band_on_patterns():
    from napari_4dstem.analysis.classify.model import REMERGE_SEPARATION

    band, _, truth, pure = _band_and_gradient_scans()
    cut, _ = _cut_in_two_then_remerge(band, 0.0)
    # the count given finds the two lattices, split inside the band
    assert adjusted_rand_score(truth[:, pure].ravel(), cut[:, pure].ravel()) == 1.0
    _, out = _cut_in_two_then_remerge(band, REMERGE_SEPARATION)
    assert len(np.unique(out)) == 2


def _drain(gen):
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def test_pca_of_fewer_patterns_than_features_decomposes_the_small_gram_matrix(monkeypatch):
    """A 3 x 2 scan of 1296 features (the UX audit's blockfile, session 14 defect 4) paid a 1296 x 1296
    eigendecomposition, 20-27 s of a 23-37 s *Classify* on 2 loaded cores: fewer patterns than features now
    decompose the n x n Gram matrix (fails on the old code, which decomposed d x d). Planted: three directions
    with known variances; the scores, components and explained variance equal the covariance's own."""
    from napari_4dstem.analysis.classify import model

    rng = np.random.default_rng(7)
    n, d = 12, 300
    basis = np.linalg.qr(rng.standard_normal((d, 3)))[0].T  # orthonormal rows
    coef = rng.standard_normal((n, 3)) * np.array([9.0, 4.0, 2.0])
    x = (coef @ basis + 0.01 * rng.standard_normal((n, d)) + 5.0).astype(np.float32)
    shapes = []
    real = np.linalg.eigh

    def spy(a, *args, **kw):
        shapes.append(np.shape(a))
        return real(a, *args, **kw)

    monkeypatch.setattr(np.linalg, "eigh", spy)
    p = model.ClassifyParams(n_components=3)
    scores, comps, ratio = _drain(model._iter_pca(x, p, noise_var=1e-4))
    assert shapes and max(max(s) for s in shapes) <= n  # the Gram matrix, not the covariance
    # reference: the d x d covariance's eigendecomposition
    xc = x.astype(np.float64) - x.astype(np.float64).mean(0)
    ev, vec = real(xc.T @ xc / (n - 1))
    ev, vec = ev[::-1], vec[:, ::-1]
    np.testing.assert_allclose(ratio, ev[:3] / ev.sum(), rtol=1e-4)
    for i in range(3):
        sign = np.sign(comps[i] @ vec[:, i])
        np.testing.assert_allclose(sign * comps[i], vec[:, i], atol=2e-4)
        np.testing.assert_allclose(sign * scores[:, i], xc @ vec[:, i], rtol=1e-3, atol=1e-3)
    # the planted directions are what the components span
    np.testing.assert_allclose(np.abs(np.linalg.svd(comps @ basis.T, compute_uv=False)), 1.0, atol=1e-3)


def test_tiny_and_constant_scans_are_refused_in_plain_words():
    """Session 14, audit3 #8: a 1 x 2 scan said the origin fit's "only 2 finite origin
    measurements: too few to fit"; identical patterns (the legacy py4DSTEM test file, 2 x 3 of
    4 x 5 px; the 2 x 4 Merlin ROI) raised scipy's LinAlgError ("leading minor ... not positive
    definite")."""
    from napari_4dstem.errors import DataShapeError
    from napari_4dstem.pipelines import run_classification

    yy, xx = np.indices((16, 16))
    pattern = (50 * (np.hypot(yy - 8, xx - 8) <= 4) + 2).astype(np.uint16)
    with pytest.raises(DataShapeError, match=r"too few patterns to classify \(2\): need at least 3"):
        run_classification(np.broadcast_to(pattern, (1, 2, 16, 16)).copy())
    import warnings

    with pytest.raises(DataShapeError, match="the 8 patterns do not differ"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's "1 distinct cluster" on the way there
        run_classification(np.broadcast_to(pattern, (2, 4, 16, 16)).copy())
