"""Wedge (annular sector) and mask-from-file detectors (UX point 6). Known answers: the wedge's
pixels decided one by one with math.atan2 in plain Python; masks read back from the files a
test wrote; clear one-line errors on a wrong shape or format."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_4dstem.analysis.virtual.detectors import AnnulusDetector, WedgeDetector, mask_from_file
from napari_4dstem.analysis.virtual.images import virtual_image
from napari_4dstem.errors import DataShapeError
from napari_4dstem.pipelines import detector_from_params, detector_params


def _naive_wedge(shape, cy, cx, r_in, r_out, a0, a1):
    span = 360.0 if abs(a1 - a0) == 360 else (a1 - a0) % 360.0
    m = np.zeros(shape, bool)
    for r in range(shape[0]):
        for c in range(shape[1]):
            d = math.hypot(r - cy, c - cx)
            phi = math.degrees(math.atan2(r - cy, c - cx))
            m[r, c] = r_in < d <= r_out and (phi - a0) % 360.0 <= span
    return m


@pytest.mark.parametrize(
    "params",
    [
        ((15.5, 16.0), 3.0, 12.0, 10.0, 80.0),  # a quarter-ish sector below-right of the centre
        ((14.2, 17.7), 0.0, 9.5, 350.0, 20.0),  # crossing 0 deg, inner radius 0
        ((16.0, 16.0), 2.0, 10.0, -135.0, -45.0),  # negative angles: the sector above the centre
        ((16.0, 15.0), 4.0, 11.0, 30.0, 390.0),  # the whole annulus
    ],
)
def test_wedge_mask_equals_the_pixel_rule(params):
    center, r_in, r_out, a0, a1 = params
    det = WedgeDetector(center, r_in, r_out, a0, a1)
    m = det.render((32, 33))
    np.testing.assert_array_equal(m, _naive_wedge((32, 33), *center, r_in, r_out, a0, a1))
    if abs(a1 - a0) == 360:
        np.testing.assert_array_equal(m, AnnulusDetector(center, r_in, r_out).render((32, 33)))


def test_wedge_geometry_image_params_and_errors():
    det = WedgeDetector((16.0, 16.0), 2.0, 10.0, -135.0, -45.0)
    m = det.render((32, 32))
    assert not m[16:, :].any() and m[8, 16]  # above the centre (k_y < c_y), on its axis
    assert det.span_deg == 90.0 and WedgeDetector((0, 0), 0, 1, 350, 10).span_deg == 20.0
    # the outline: the outer arc from start to end, the inner arc back
    poly = det.polygon()
    r = np.hypot(poly[:, 0] - 16.0, poly[:, 1] - 16.0)
    np.testing.assert_allclose(np.sort(np.unique(np.round(r, 9))), [2.0, 10.0])
    np.testing.assert_allclose(
        poly[0], (16.0 + 10 * math.sin(math.radians(-135)), 16 + 10 * math.cos(math.radians(-135)))
    )
    rng = np.random.default_rng(1)
    cube = rng.poisson(5.0, (3, 4, 32, 32)).astype(np.uint16)
    np.testing.assert_array_equal(virtual_image(cube, det).data, (cube * m).sum(axis=(2, 3)))
    assert detector_from_params(detector_params(det)) == det
    for bad in [(3.0, 2.0, 0, 90), (0.0, 5.0, 10, 10), (0.0, 5.0, 0, 400), (0.0, 5.0, float("nan"), 10)]:
        with pytest.raises(ValueError):
            WedgeDetector((5, 5), *bad)


def test_mask_from_npy_and_the_shape_check(tmp_path):
    w = np.zeros((20, 24), np.float32)
    w[3:9, 5:15] = np.linspace(0.5, 1.5, 60).reshape(6, 10)
    np.save(tmp_path / "weights.npy", w)
    det = mask_from_file(tmp_path / "weights.npy", (20, 24))
    assert det.weighted and det.name == "weights"
    np.testing.assert_array_equal(det.render((20, 24)), w.astype(np.float64))
    # the recipe keeps the file: replayed exactly
    again = detector_from_params(detector_params(det))
    np.testing.assert_array_equal(again.render((20, 24)), det.render((20, 24)))
    with pytest.raises(DataShapeError, match=r"has shape \(20, 24\), the detector is \(32, 32\)"):
        mask_from_file(tmp_path / "weights.npy", (32, 32))
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4)))
    with pytest.raises(DataShapeError, match="a detector mask is 2D"):
        mask_from_file(tmp_path / "cube.npy")
    (tmp_path / "m.txt").write_text("1 0")
    with pytest.raises(DataShapeError, match=r"\.npy or \.tif"):
        mask_from_file(tmp_path / "m.txt")
    with pytest.raises(DataShapeError, match="no mask file"):
        mask_from_file(tmp_path / "missing.npy")


def test_mask_from_tif(tmp_path):
    """A .tif mask (tifffile comes with napari; a core install without it says so)."""
    tifffile = pytest.importorskip("tifffile")
    b = np.zeros((20, 24), bool)
    b[3:9, 5:15] = True
    tifffile.imwrite(tmp_path / "mask.tif", b.astype(np.uint8))
    det = mask_from_file(tmp_path / "mask.tif", (20, 24))
    np.testing.assert_array_equal(det.render((20, 24)) != 0, b)
    again = detector_from_params(detector_params(det))
    np.testing.assert_array_equal(again.render((20, 24)), det.render((20, 24)))
