"""The held-out multislice strained scan used to compare the NN and correlation paths."""

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_4dstem.nn.evaluate import compare_on_scan, make_multislice_strained_scan


def test_multislice_strained_scan_has_its_truth():
    scans = make_multislice_strained_scan(
        scan_shape=(2, 3),
        thicknesses_A=(20.0, 40.0),
        size=64,
        pixel_size_inv_A=0.03,
        device="cpu",
        seed=1,
        central_counts=3000.0,
    )
    assert len(scans) == 2
    a, b = scans
    assert a.datacube.data.shape == (2, 3, 64, 64) and a.datacube.data.dtype == np.uint16
    assert not np.array_equal(a.datacube.data, b.datacube.data)  # other thickness
    assert a.centers.shape[0] == 6 and a.centers.shape[2] == 2
    # the planted strain: zero in the reference corner, e_xx grows along x
    st = a.strain.data
    assert st[0, 0, 0] == 0 and st[0, 2, 0] > 0.01
    # the truth disks of the first pattern: the direct beam at the centre, reflections inside
    c = a.centers[0]
    c = c[np.all(np.isfinite(c), axis=1)]
    assert np.allclose(c[0], 32) and len(c) >= 5
    # Poisson counts at the stated dose: a vacuum disk would hold 3000 counts/px
    assert 1000 < a.datacube.data[0, 0, 30:35, 30:35].mean() < 4500
    # at a 50x lower dose fewer disks are there to be found (a subset of the same reflections)
    low = make_multislice_strained_scan(
        scan_shape=(2, 3),
        thicknesses_A=(20.0,),
        size=64,
        pixel_size_inv_A=0.03,
        device="cpu",
        seed=1,
        central_counts=60.0,
    )[0]
    n_hi = np.isfinite(a.centers[..., 0]).sum()
    n_lo = np.isfinite(low.centers[..., 0]).sum()
    assert n_lo < n_hi
    assert np.all(np.isfinite(a.centers[..., 0])[np.isfinite(low.centers[..., 0])])
    r = compare_on_scan(a)
    for path in ("correlation", "nn"):
        assert 0 <= r[path]["f1_1px"] <= 1 and r[path]["patterns_per_s"] > 0


@pytest.mark.parametrize("shape", [(5, 5), (6, 6), (12, 12), (16, 16), (4, 7), (3, 8)])
def test_planted_reference_is_every_unstrained_pattern_and_only_those(shape):
    from napari_4dstem.nn.synthetic import planted_reference
    from napari_4dstem.simulation.samples import planted_strain

    st = planted_strain(shape)
    zero = (st["e_xx"] == 0) & (st["e_yy"] == 0) & (st["e_xy"] == 0) & (st["theta"] == 0)
    r0, r1, c0, c1 = planted_reference(shape)
    mask = np.zeros(shape, bool)
    mask[r0:r1, c0:c1] = True
    assert np.array_equal(mask, zero)
    if shape == (5, 5):
        assert mask.sum() == 4  # ny // 4 rows and columns would keep one pattern


def _lattice_peaks(gs, size=128):
    """BraggPeaks of exact lattices ``gs`` ``(n, 2, 2)`` (g1, g2 per pattern) about the centre."""
    from napari_4dstem.data.results import BraggPeaks

    o = np.array([63.5, 63.5])
    rows = []
    for g in gs:
        pts = np.array([o + h * g[0] + k * g[1] for h in range(-3, 4) for k in range(-3, 4)])
        rows.append(pts[np.all((pts > 8) & (pts < size - 9), axis=1)])
    off = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    yx = np.concatenate(rows)
    w = np.where(np.hypot(*(yx - o).T) < 1e-6, 10.0, 1.0)
    return BraggPeaks(
        (1, len(gs)), off, yx[:, 0], yx[:, 1], w, np.full(len(yx), np.nan), params={"detector_shape": (size, size)}
    )


def test_lattice_error_splits_a_common_bias_from_the_pattern_to_pattern_scatter():
    from napari_4dstem.analysis.bragg.lattice import Lattice, fit_lattice
    from napari_4dstem.nn.metrics import _peaks_from_centres, lattice_error

    g_true = np.array([[0.5, 20.0], [19.0, -1.0]])
    n = 6
    truth = _lattice_peaks([g_true] * n)
    # every pattern 0.5 % too large (a common bias), g1 of alternate patterns off by +-0.1 px in y
    delta, eps = 0.005, 0.1
    est = []
    for p in range(n):
        g = g_true * (1 + delta)
        g[0, 0] += eps * (1 if p % 2 else -1)
        est.append(g)
    lat = Lattice(tuple(g_true[0]), tuple(g_true[1]))
    fit = fit_lattice(_lattice_peaks(est), lat)
    cent = [np.stack([truth.qy[a:b], truth.qx[a:b]], 1) for a, b in zip(truth.offsets[:-1], truth.offsets[1:])]
    r = lattice_error(fit, _peaks_from_centres(cent, truth))
    common = delta * np.sqrt((np.sum(g_true[0] ** 2) + np.sum(g_true[1] ** 2)) / 2)
    assert r["g_common_px"] == pytest.approx(common, rel=1e-6)
    assert r["g_scatter_px"] == pytest.approx(eps / np.sqrt(2), rel=1e-6)
    assert r["g_rmse_px"] == pytest.approx(np.hypot(common, eps / np.sqrt(2)), rel=1e-6)
