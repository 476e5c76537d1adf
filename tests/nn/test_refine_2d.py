"""Session 12: the 2D Gaussian sub-pixel fit of the network's peaks (cross term included) against
the 3-point fit per axis, on planted Gaussians whose centres are known."""

import numpy as np

from napari_4dstem.analysis.bragg.peaks import find_peaks, refine_peaks
from napari_4dstem.nn.infer import refine_gaussian_2d


def _blobs(centres, cov, shape=(40, 40)):
    yy, xx = np.indices(shape, dtype=float)
    inv = np.linalg.inv(cov)
    img = np.zeros(shape)
    for cy, cx in centres:
        d = np.stack([yy - cy, xx - cx], -1)
        img += np.exp(-0.5 * np.einsum("...i,ij,...j->...", d, inv, d))
    return img[None] + 1e-6


def test_2d_fit_finds_turned_elliptic_peaks_the_axis_fit_misses():
    centres = [(10.3, 12.7), (25.6, 28.2), (14.45, 30.55)]
    th = np.deg2rad(35)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    cov = R @ np.diag([2.5**2, 0.9**2]) @ R.T  # elongated, turned off the axes
    img = _blobs(centres, cov)
    table = find_peaks(img, edge_px=2, min_spacing_px=4, min_relative=0.1, max_peaks=10)
    axis = refine_peaks(img, table, method="gaussian").yx
    two = refine_gaussian_2d(img, table, axis)
    k = int(table.count[0])
    truth = np.asarray(centres)
    err = lambda yx: np.linalg.norm(yx[0, :k, None] - truth[None], axis=-1).min(1)  # noqa: E731
    assert err(two).max() < 1e-6  # a Gaussian's log is a quadratic: exact
    assert err(axis).max() > 0.05  # the per-axis fit is off by the cross term


def test_2d_fit_equals_the_axis_fit_on_round_peaks_and_falls_back_off_a_maximum():
    img = _blobs([(12.2, 20.9)], np.eye(2))
    table = find_peaks(img, edge_px=2, min_spacing_px=4, min_relative=0.1, max_peaks=4)
    axis = refine_peaks(img, table, method="gaussian").yx
    two = refine_gaussian_2d(img, table, axis)
    np.testing.assert_allclose(two[0, 0], axis[0, 0], atol=1e-9)
    np.testing.assert_allclose(two[0, 0], (12.2, 20.9), atol=1e-9)
    # a flat patch (no maximum): the fallback positions are kept
    flat = np.ones((1, 20, 20))
    t2 = find_peaks(img, edge_px=2, min_spacing_px=4, min_relative=0.1, max_peaks=4)
    np.testing.assert_array_equal(refine_gaussian_2d(flat, t2, axis)[0, 0], axis[0, 0])
