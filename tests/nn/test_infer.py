"""Inference plumbing: detector <-> model frame geometry, probe checks, BraggPeaks output."""

import numpy as np
import pytest
import torch

from napari_4dstem.data.results import BraggPeaks
from napari_4dstem.nn.infer import (
    ProbeError,
    find_bragg_disks_nn,
    predict_pattern,
    probe_geometry,
    to_model_frame,
)
from napari_4dstem.nn.model import ModelConfig, build_model
from napari_4dstem.nn.registry import LoadedModel
from napari_4dstem.simulation.samples import soft_disk


def _probe(shape, center, radius=6.0):
    yy, xx = np.indices(shape)
    return 100 * soft_disk(np.hypot(yy - center[0], xx - center[1]), radius, 0.5)


@pytest.mark.parametrize(
    ("shape", "centre", "bin_"),
    [
        ((128, 128), (64, 64), 1),
        ((128, 128), (62.6, 65.2), 1),
        ((100, 90), (50, 45), 1),
        ((256, 256), (128, 128), 2),
        ((200, 150), (101.3, 74.0), 2),
        ((512, 300), (255, 150), 4),
    ],
)
def test_model_frame_round_trip(shape, centre, bin_):
    geo, pm = probe_geometry(_probe(shape, centre), shape, 128)
    assert geo.bin == bin_
    # the probe lands on the model centre, to within half a model pixel
    yy, xx = np.indices(pm.shape)
    w = pm / pm.sum()
    # the probe is shifted onto the model centre (the network was trained so); measured
    # <= 0.05 model px here (binned small disks are the worst)
    assert abs((w * yy).sum() - 64) < 0.06 and abs((w * xx).sum() - 64) < 0.06
    # a bright bin-aligned block anywhere on the detector maps back onto itself
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = int(rng.integers(10, shape[0] // bin_ - 10)) * bin_
        x = int(rng.integers(10, shape[1] // bin_ - 10)) * bin_
        pat = np.zeros((1, *shape))
        pat[0, y : y + bin_, x : x + bin_] = 1.0
        m = to_model_frame(pat, geo)[0]
        if m.max() == 0:  # cropped away (detector larger than the model field of view)
            continue
        iy, ix = np.unravel_index(np.argmax(m), m.shape)
        back = geo.to_detector(np.array([iy, ix], float))
        np.testing.assert_allclose(back, [y + (bin_ - 1) / 2, x + (bin_ - 1) / 2], atol=1e-9)


def test_probe_problems_are_clear_errors():
    with pytest.raises(ProbeError, match="not centred"):
        probe_geometry(_probe((128, 128), (20, 100)), (128, 128), 128)
    with pytest.raises(ProbeError, match="flat"):
        probe_geometry(np.ones((128, 128)), (128, 128), 128)
    with pytest.raises(ProbeError, match="differ in shape"):
        probe_geometry(_probe((128, 128), (64, 64)), (96, 96), 128)
    bad = _probe((128, 128), (64, 64))
    bad[3, 3] = np.nan
    with pytest.raises(ProbeError, match="NaN"):
        probe_geometry(bad, (128, 128), 128)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = ModelConfig(size=128, width=1, dropout=0.2)
    return LoadedModel(build_model(cfg).eval(), cfg, "tiny", "0", "", {})


def test_scan_inference_returns_braggpeaks_on_a_lazy_cube(tiny, tmp_path):
    import dask.array as da

    rng = np.random.default_rng(1)
    shape = (96, 112)  # awkward: non-square, smaller than the model (padded)
    data = rng.poisson(2.0, (3, 5, *shape)).astype(np.uint16)
    lazy = da.from_array(data, chunks=(2, 2, *shape))
    bp = find_bragg_disks_nn(lazy, probe=_probe(shape, (48, 56)), model=tiny, max_peaks=7)
    assert isinstance(bp, BraggPeaks) and bp.scan_shape == (3, 5)
    assert bp.counts().max() <= 7
    assert np.all((bp.qy >= 0) & (bp.qy <= shape[0] - 1) & (bp.qx >= 0) & (bp.qx <= shape[1] - 1))
    assert bp.params["model"] == "tiny" and bp.params["detector_shape"] == list(shape)
    # the same patterns one by one give the same peaks (batching does not change results)
    bp1 = find_bragg_disks_nn(data, probe=_probe(shape, (48, 56)), model=tiny, max_peaks=7, batch_size=1)
    np.testing.assert_allclose(bp1.qy, bp.qy, atol=1e-4)


def test_mc_dropout_gives_an_uncertainty_map(tiny):
    pat = np.random.default_rng(2).poisson(3.0, (128, 128)).astype(float)
    img, res = predict_pattern(pat, probe=_probe((128, 128), (64, 64)), model=tiny, mc_samples=4)
    # the model frame: the probe disk (radius 6) resampled to 8 px, frame sides multiples of 8
    assert img.data.shape == (176, 176) and img.params["scale"] > 1.3
    assert res["std"].shape == img.data.shape and np.all(res["std"] >= 0) and res["std"].max() > 0
    _, res0 = predict_pattern(pat, probe=_probe((128, 128), (64, 64)), model=tiny)
    assert "std" not in res0


@pytest.mark.gpu
def test_cuda_inference_matches_cpu(tiny):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    pat = np.random.default_rng(3).poisson(3.0, (1, 1, 128, 128)).astype(np.float32)
    pr = _probe((128, 128), (64, 64))
    a = find_bragg_disks_nn(pat, probe=pr, model=tiny, device="cpu")
    b = find_bragg_disks_nn(pat, probe=pr, model=tiny, device="cuda")
    np.testing.assert_allclose(a.qy, b.qy, atol=1e-2)


def test_cuda_request_without_cuda_falls_back_with_a_warning(tiny):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    pat = np.random.default_rng(3).poisson(3.0, (1, 1, 128, 128)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        bp = find_bragg_disks_nn(pat, probe=_probe((128, 128), (64, 64)), model=tiny, device="cuda")
    assert bp.scan_shape == (1, 1)
