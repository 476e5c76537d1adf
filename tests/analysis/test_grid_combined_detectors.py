"""Grid-of-apertures and combined (weighted) detectors against masks drawn by hand in numpy
(UX points 6 and 9)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem.analysis.virtual.detectors import (
    AnnulusDetector,
    CombinedDetector,
    DiskDetector,
    GridDetector,
    RectangleDetector,
)
from napari_4dstem.analysis.virtual.images import virtual_image, virtual_images
from napari_4dstem.errors import DataShapeError
from napari_4dstem.pipelines import ParameterError, detector_from_params, detector_params

DET = (64, 80)


def _disk(center, r):
    yy, xx = np.mgrid[0 : DET[0], 0 : DET[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= r * r


def test_grid_without_rotation_is_the_union_of_its_disks():
    g = GridDetector((32.0, 40.0), pitch_px=10.0, radius_px=3.0, shape=(2, 3))
    # rows at 32 -/+ 5, columns at 40 - 10, 40, 40 + 10
    want = [(27, 30), (27, 40), (27, 50), (37, 30), (37, 40), (37, 50)]
    np.testing.assert_allclose(g.centers(), want)
    mask = np.zeros(DET, bool)
    for c in want:
        mask |= _disk(c, 3.0)
    np.testing.assert_array_equal(g.render(DET), mask)
    assert g.render(DET).sum() == 6 * 29  # 29 pixel centres within 3 px of a pixel centre
    assert [d.center_px for d in g.apertures()] == [tuple(map(float, c)) for c in want]


def test_grid_rotation_turns_the_lattice_from_kx_towards_ky():
    g = GridDetector((32.0, 40.0), pitch_px=10.0, radius_px=2.0, shape=(2, 3), rotation_deg=90.0)
    # at 90 degrees the columns run along +k_y and the rows along -k_x
    want = [(22, 45), (32, 45), (42, 45), (22, 35), (32, 35), (42, 35)]
    np.testing.assert_allclose(g.centers(), want, atol=1e-12)
    g30 = GridDetector((32.0, 40.0), pitch_px=12.0, radius_px=2.0, shape=(1, 2), rotation_deg=30.0)
    step = g30.centers()[1] - g30.centers()[0]
    np.testing.assert_allclose(step, [12 * np.sin(np.pi / 6), 12 * np.cos(np.pi / 6)])


def test_one_image_per_aperture_adds_up_to_the_grid_image(rng):
    a = rng.integers(0, 1000, (5, 6, *DET)).astype(np.uint16)
    g = GridDetector((31.5, 39.0), pitch_px=9.0, radius_px=4.0, shape=(3, 3), rotation_deg=17.0)
    whole = virtual_image(a, g).data
    ref = a.astype(np.int64)[:, :, g.render(DET)].sum(axis=-1)
    np.testing.assert_array_equal(whole, ref)
    stack = virtual_images(a, g.apertures()).data
    assert stack.shape == (5, 6, 9)
    for k, c in enumerate(g.centers()):
        np.testing.assert_array_equal(stack[..., k], a.astype(np.int64)[:, :, _disk(c, 4.0)].sum(axis=-1))
    np.testing.assert_array_equal(stack.sum(axis=-1), ref)  # pitch > 2 r: no pixel in two apertures


def test_combined_detector_is_the_weighted_sum_of_masks(rng):
    a = rng.normal(10, 3, (4, 5, *DET)).astype(np.float32)
    disk = DiskDetector((30.0, 41.0), 6.0)
    ring = AnnulusDetector((30.0, 41.0), 6.0, 14.0)
    box = RectangleDetector((-3, 5), (70, 90))  # partly off the pattern
    det = CombinedDetector((disk, ring, box), (1.0, -1.0, 0.5))
    w = _disk((30, 41), 6.0).astype(float) - (_disk((30, 41), 14.0) & ~_disk((30, 41), 6.0))
    w[0:5, 70:80] += 0.5
    assert det.weighted
    np.testing.assert_array_equal(det.render(DET), w)
    got = virtual_image(a, det).data
    ref = np.tensordot(a.astype(np.float64), w, axes=((2, 3), (0, 1)))
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-3)


def test_round_trips_and_clear_errors():
    g = GridDetector((32.0, 40.0), 10.0, 3.0, (2, 3), 12.5)
    c = CombinedDetector((g, DiskDetector((30.0, 40.0), 5.0)), (1.0, -2.0))
    for det in (g, c):
        back = detector_from_params(detector_params(det))
        np.testing.assert_array_equal(back.render(DET), det.render(DET))

    with pytest.raises(ValueError, match="one weight per detector"):
        CombinedDetector((g,), (1.0, 2.0))
    with pytest.raises(ValueError, match="two positive ints"):
        GridDetector((1.0, 1.0), 5.0, 1.0, (0, 3))
    with pytest.raises(ValueError, match="positive"):
        GridDetector((1.0, 1.0), -5.0, 1.0)
    d = DiskDetector((30.0, 40.0), 5.0)
    with pytest.raises(DataShapeError, match="covers no pixel"):
        CombinedDetector((d, d), (1.0, -1.0)).render(DET)
    with pytest.raises(ParameterError, match="bad grid detector"):
        detector_from_params({"kind": "grid", "center_px": [1, 2]})


def test_plugin_api_detector_info_round_trips_grid_and_combined():
    pytest.importorskip("psygnal")  # the plugin API comes with napari (psygnal), not with the core install
    from napari_4dstem.plugin_api import DetectorInfo

    g = GridDetector((32.0, 40.0), 10.0, 3.0, (2, 3), 12.5)
    c = CombinedDetector((g, DiskDetector((30.0, 40.0), 5.0)), (1.0, -2.0))
    for det in (g, c):
        np.testing.assert_array_equal(DetectorInfo.from_detector(det).to_detector().render(DET), det.render(DET))
