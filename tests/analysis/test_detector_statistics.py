"""Per-detector responses beyond the sum (UX point 10): Max, Min and Std over the detector's
pixels, and the divergence and curl of the DPC field. Known answers: naive numpy over the same
pixels, and planted linear/quadratic fields whose derivatives are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem import DataCube
from napari_4dstem.analysis.virtual.detectors import (
    AnnulusDetector,
    DiskDetector,
    MaskDetector,
    RectangleDetector,
)
from napari_4dstem.analysis.virtual.dpc import divergence_curl
from napari_4dstem.analysis.virtual.statistics import detector_statistic, iter_detector_statistic
from napari_4dstem.data.results import RealSpaceMap
from napari_4dstem.engine.jobs import run_job
from napari_4dstem.errors import DataShapeError, Napari4DSTEMError


@pytest.fixture(scope="module")
def cube():
    rng = np.random.default_rng(3)
    return rng.poisson(20.0, (9, 7, 24, 26)).astype(np.uint16)


@pytest.mark.parametrize(
    "det",
    [DiskDetector((11.3, 12.8), 5.5), AnnulusDetector((12.0, 13.0), 3.0, 9.0), RectangleDetector((2, 9), (20, 26))],
)
def test_max_min_std_equal_numpy_over_the_detector_pixels(cube, det):
    mask = det.render(cube.shape[2:]).astype(bool)
    vals = cube[:, :, mask].astype(np.float64)
    for stat, ref in (("max", vals.max(-1)), ("min", vals.min(-1)), ("std", vals.std(-1))):
        out = detector_statistic(cube, det, stat)
        assert out.data.shape == cube.shape[:2] and out.params["response"] == stat
        if stat == "std":
            np.testing.assert_allclose(out.data, ref, rtol=1e-12)
        else:
            np.testing.assert_array_equal(out.data, ref)


def test_std_of_a_weighted_mask_and_small_scan_blocks(cube):
    """Weighted detector: std with the weights; blocks of 2x3 patterns give the same map."""
    w = np.zeros(cube.shape[2:])
    w[5:15, 4:12] = np.linspace(0.1, 2.0, 80).reshape(10, 8)
    det = MaskDetector(w)
    vals = cube[:, :, 5:15, 4:12].astype(np.float64)
    mean = (vals * w[5:15, 4:12]).sum((2, 3)) / w.sum()
    ref = np.sqrt(((vals - mean[..., None, None]) ** 2 * w[5:15, 4:12]).sum((2, 3)) / w.sum())
    out = run_job(iter_detector_statistic(DataCube(cube), det, "std", scan_chunk=(2, 3)))
    np.testing.assert_allclose(out.data, ref, rtol=1e-12)
    assert detector_statistic(cube, det, "max").data.max() == cube[:, :, 5:15, 4:12].max()


def test_statistic_input_errors(cube):
    with pytest.raises(Napari4DSTEMError, match="unknown statistic"):
        detector_statistic(cube, DiskDetector((10, 10), 3), "median")
    with pytest.raises(Napari4DSTEMError, match="covers no pixel"):
        detector_statistic(cube, MaskDetector(np.zeros(cube.shape[2:], bool)), "max")


def test_divergence_and_curl_of_planted_fields():
    ny, nx = 11, 13
    y, x = np.mgrid[0:ny, 0:nx].astype(float)
    # radial u = c (x, y): div = 2c, curl = 0; rotation u = c (-y, x): div = 0, curl = 2c
    for uy, ux, div, curl in ((0.3 * y, 0.3 * x, 0.6, 0.0), (0.7 * x, -0.7 * y, 0.0, 1.4)):
        d = RealSpaceMap(
            np.stack([uy, ux, np.hypot(uy, ux), np.zeros_like(ux)], axis=-1),
            units="mrad",
            channels=("dpc_y", "dpc_x", "magnitude", "angle_deg"),
        )
        out = divergence_curl(d)
        assert out.channels == ("divergence", "curl") and out.units == "mrad/scan px"
        np.testing.assert_allclose(out.channel("divergence"), div, atol=1e-12)
        np.testing.assert_allclose(out.channel("curl"), curl, atol=1e-12)
    # quadratic: u_x = x^2, u_y = x y -> div = 2x + x = 3x, curl = y (exact inside the scan)
    out = divergence_curl(np.stack([x * y, x**2], axis=-1))
    np.testing.assert_allclose(out.channel("divergence")[1:-1, 1:-1], (3 * x)[1:-1, 1:-1], atol=1e-12)
    np.testing.assert_allclose(out.channel("curl")[1:-1, 1:-1], y[1:-1, 1:-1], atol=1e-12)
    with pytest.raises(DataShapeError):
        divergence_curl(np.zeros((1, 5, 2)))
