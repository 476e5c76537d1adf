"""Session 10 (#17): the network's per-peak confidence as lattice-fit weights, and the fast
inference twin of the FCU-Net (same outputs as the module)."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from napari_4dstem.analysis.bragg.lattice import Lattice, LatticeError, fit_lattice
from napari_4dstem.analysis.bragg.peaks import PeakTable
from napari_4dstem.data.results import BraggPeaks
from napari_4dstem.nn._fastnet import FastFCUNet, fast_inference_net
from napari_4dstem.nn.infer import peak_confidence
from napari_4dstem.nn.model import ModelConfig, ModelError, build_model
from napari_4dstem.nn.registry import load_model
from napari_4dstem.pipelines import NNDiskParams


def _gauss(shape, centre, h, s):
    yy, xx = np.indices(shape)
    return h * np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * s * s))


def test_confidence_is_height_times_sharpness_relative_to_the_label_peak():
    # three Gaussian peaks (height, width): the log-parabola through 5 pixels is exact on them
    peaks = [((10, 12), 1.0, 1.0), ((30, 40), 0.5, 1.0), ((20, 25), 0.8, 2.0)]
    img = sum(_gauss((48, 64), c, h, s) for c, h, s in peaks)[None]
    yx = np.full((1, 4, 2), np.nan)
    yx[0, :3] = [c for c, _, _ in peaks]
    table = PeakTable(yx, np.full((1, 4), np.nan), np.array([3]))
    conf = peak_confidence(np.clip(img, 1e-6, None), table, label_sigma_px=1.0)
    want = [h / s**2 for _, h, s in peaks]
    np.testing.assert_allclose(conf[0, :3], want, rtol=1e-3)
    assert np.isnan(conf[0, 3])
    # a wider label peak: a peak as wide as the label counts as sharp
    conf2 = peak_confidence(np.clip(img, 1e-6, None), table, label_sigma_px=2.0)
    np.testing.assert_allclose(conf2[0, 2], 0.8, rtol=1e-3)


@pytest.mark.parametrize("label_sigma", [1.0, 2.0])
def test_a_one_pixel_spike_gets_at_most_four_times_the_label_peaks_sharpness(label_sigma):
    # the label peak (height 1, width label_sigma) and a one-pixel spike of height 1 (its
    # neighbours at the 1e-6 floor: log curvature ~28, uncapped 28 x label_sigma^2)
    img = _gauss((48, 64), (12, 14), 1.0, label_sigma)
    img[34, 44] = 1.0
    yx = np.array([[[12.0, 14.0], [34.0, 44.0]]])
    table = PeakTable(yx, np.ones((1, 2)), np.array([2]))
    conf = peak_confidence(np.clip(img, 1e-6, None)[None], table, label_sigma_px=label_sigma)
    np.testing.assert_allclose(conf[0], [1.0, 4.0], rtol=1e-3)


def _lattice_peaks(intensity, correlation, params):
    # one pattern: a square lattice of 12 px, g known; one bad peak moved by 2 px
    hk = [(h, k) for h in (-1, 0, 1) for k in (-1, 0, 1)]
    q = np.array([[64 + 12 * h, 64 + 12 * k] for h, k in hk], float)
    q[1] += (2.0, 0.0)  # peak (-1, 0) off by 2 px
    return BraggPeaks(
        (1, 1), np.array([0, len(q)]), q[:, 0], q[:, 1], np.asarray(intensity, float),
        np.asarray(correlation, float), params=params,
    )  # fmt: skip


def test_fit_weights_auto_follows_the_peak_finder_and_the_confidence_downweights():
    lat = Lattice((12.0, 0.0), (0.0, 12.0))
    inten = np.full(9, 100.0)
    corr = np.ones(9)
    corr[1] = 1e-4  # the network is not sure of the moved peak
    nn = _lattice_peaks(inten, corr, {"fit_weights": "intensity*correlation"})
    plain = dataclasses.replace(nn, params={})
    kw = {"outlier_sigma": math.inf, "origin": (64.0, 64.0)}
    f_nn = fit_lattice(nn, lat, **kw)
    f_plain = fit_lattice(plain, lat, **kw)
    assert f_nn.params["weights"] == "intensity*correlation"
    assert f_plain.params["weights"] == "intensity"
    # counts x confidence: the moved peak has no pull; counts alone: equal weights, it pulls g1
    np.testing.assert_allclose(f_nn.g1[0, 0], (12.0, 0.0), atol=2e-3)
    assert abs(f_plain.g1[0, 0, 0] - 12.0) > 0.1
    # explicit weights win over the recorded ones
    f_int = fit_lattice(nn, lat, weights="intensity", **kw)
    np.testing.assert_allclose(f_int.g1, f_plain.g1)
    with pytest.raises(LatticeError, match=r"weights must be one of .*got 'counts'$"):
        fit_lattice(nn, lat, weights="counts", **kw)
    # a bad recorded value under "auto": the message says where it came from
    odd = dataclasses.replace(nn, params={"fit_weights": "counts"})
    with pytest.raises(LatticeError, match=r"got 'counts' in peaks.params\["):
        fit_lattice(odd, lat, **kw)


def _perturbed_model():
    # another size, width and dropout than the shipped model; every weight and bias (the biases
    # start at zero, so a twin that dropped or misplaced one would still agree) perturbed
    net = build_model(ModelConfig(size=256, width=3, dropout=0.3, domain="real"))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
        assert all(bool(p.all()) for n, p in net.named_parameters() if n.endswith(("br", "bi")))
    return net


@pytest.mark.parametrize(
    ("model", "frame"),
    [("shipped", (128, 128)), ("shipped", (96, 136)), ("shipped", (256, 256)), ("perturbed", (256, 256)),
     ("perturbed", (192, 272))],
)  # fmt: skip
def test_fast_twin_gives_the_modules_output(model, frame):
    net = load_model(None).module if model == "shipped" else _perturbed_model()
    fast = fast_inference_net(net)
    assert isinstance(fast, FastFCUNet)
    rng = np.random.default_rng(0)
    yy, xx = np.indices(frame)
    probe = (np.hypot(yy - frame[0] // 2, xx - frame[1] // 2) <= 8).astype(np.float32)
    x = rng.poisson(5 * probe[None] + 0.3, (3, *frame)).astype(np.float32)
    with torch.inference_mode():
        # the module's first call in a process is off its later calls by up to 3.6e-5 of the peak
        # in about 3 processes of 10 (the twin's is not; 2-core CPU, torch CPU build): warm it
        net.eval()(torch.as_tensor(x), torch.as_tensor(probe)[None])
        a = net(torch.as_tensor(x), torch.as_tensor(probe)[None]).numpy()
        b = fast(torch.as_tensor(x), torch.as_tensor(probe)[None]).numpy()
    # measured (float32 rounding, 2-core CPU): shipped 4-7e-7, perturbed 1.9-2.5e-6 of the peak
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()


def test_fast_twin_only_for_real_domain_models():
    four = build_model(ModelConfig(size=128, width=2, domain="fourier"))
    assert fast_inference_net(four) is None
    with pytest.raises(ModelError, match="real-domain"):
        FastFCUNet(four)


def test_fast_twin_checks_the_frame_and_the_probe_as_the_module_does():
    lm = load_model(None)
    fast = fast_inference_net(lm.module)
    x = torch.zeros((1, 128, 128))
    with pytest.raises(ModelError, match=r"multiples of 8 \(trained on 128x128\), got \(124, 128\)"):
        fast(torch.zeros((1, 124, 128)), torch.zeros((1, 124, 128)))
    with pytest.raises(ModelError, match=r"probe \(96, 96\) and patterns \(128, 128\) differ"):
        fast(x, torch.zeros((1, 96, 96)))
    with pytest.raises(ValueError, match=r"probe \(96, 96\) and patterns \(128, 128\) differ"):
        lm.module(x, torch.zeros((1, 96, 96)))


def test_nn_params_keywords_are_the_fields():
    p = NNDiskParams(min_relative=0.2, scale="bin", batch_size=8)
    kw = p.nn_kwargs()
    assert kw == {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}
    assert kw["min_relative"] == 0.2 and kw["scale"] == "bin" and kw["batch_size"] == 8


def test_nn_peaks_carry_the_confidence_of_their_predicted_peaks_and_the_fit_weights():
    from napari_4dstem.nn.infer import predict_pattern
    from napari_4dstem.nn.synthetic import make_thick_strained_scan

    s = make_thick_strained_scan(scan_shape=(1, 2), thickness_nm=5.0, seed=21)
    pat = np.asarray(s.datacube.data[0, 1])
    img, found = predict_pattern(pat, probe=s.probe)
    assert img.params["frame_step_px"] == 1.0 and len(found["qy"]) >= 4  # 128 px, disks unscaled
    # the confidence from the image returned: height x sharpness at the peak's own pixel
    o = img.params["frame_origin_px"]
    yx = np.stack([found["qy"] - o[0], found["qx"] - o[1]], -1)[None]
    table = PeakTable(np.rint(yx), np.zeros(yx.shape[:2]), np.array([yx.shape[1]]))
    want = peak_confidence(np.clip(img.data, 1e-6, None)[None], table)
    np.testing.assert_allclose(found["correlation"], want[0], rtol=1e-6)
    assert 0.2 < np.median(found["correlation"]) < 2.0  # near the label peak's 1
    from napari_4dstem.nn.infer import find_bragg_disks_nn

    bp = find_bragg_disks_nn(s.datacube, probe=s.probe)
    assert bp.params["fit_weights"] == "intensity*correlation"


def test_frames_up_to_twice_the_trained_side_keep_the_batch_size():
    from napari_4dstem.nn.infer import Geometry, _frame_batch

    def geo(hw):
        return Geometry(128, 1, (0, 0), (0.0, 0.0), hw, 8.0, scale=1.0, centre_px=(0.0, 0.0), canvas=hw)

    assert _frame_batch(32, geo((256, 256))) == 32
    assert _frame_batch(32, geo((512, 512))) == 8
    assert _frame_batch(2, geo((1024, 1024))) == 1


def test_without_a_probe_radius_the_intensity_is_the_networks_height_and_the_fit_weights_it(monkeypatch):
    # a hand-made Geometry without a probe radius: no disk counts; the intensity falls back to
    # the predicted image's height at the peak (as before session 10), not the confidence, and
    # the recorded fit weights are that height alone (not height x confidence)
    import napari_4dstem.nn.infer as infer
    from napari_4dstem.nn.synthetic import make_thick_strained_scan

    s = make_thick_strained_scan(scan_shape=(1, 2), thickness_nm=5.0, seed=21)
    pats = np.asarray(s.datacube.data, np.float32).reshape(2, *s.datacube.shape[2:])
    lm = load_model(None)
    geo, pm = infer.probe_geometry(s.probe, pats.shape[1:], lm.module.config.size)
    nan_geo = dataclasses.replace(geo, probe_radius_px=math.nan)
    kw = {"edge_px": 8.0, "min_spacing_px": 6.0, "min_significance": None}
    a, na, _, _ = infer.detect_in_stack_nn(pats, lm.module, geo, pm, **kw)
    b, nb, img, _ = infer.detect_in_stack_nn(pats, lm.module, nan_geo, pm, **kw)
    np.testing.assert_array_equal(na, nb)
    assert nb.min() >= 4
    for i in range(2):
        pa, pb = a[i, : na[i]], b[i, : nb[i]]
        np.testing.assert_array_equal(pa[:, [0, 1, 3]], pb[:, [0, 1, 3]])  # positions, confidence
        assert np.median(pa[:, 2]) > 100.0  # disk counts (0 for the faint ones kept here)
        assert np.isin(pb[:, 2], img[i].astype(np.float64)).all()  # pixels of the predicted image
        assert 0.05 <= pb[:, 2].min() and pb[:, 2].max() < 1.5  # heights: min_absolute 0.05; label peak 1
        assert not np.allclose(pb[:, 2], pb[:, 3])
    real = infer._geometry_for

    def no_radius(*args, **kwargs):
        g, p = real(*args, **kwargs)
        return dataclasses.replace(g, probe_radius_px=math.nan), p

    monkeypatch.setattr(infer, "_geometry_for", no_radius)
    bp = infer.find_bragg_disks_nn(s.datacube, probe=s.probe, check_domain=False)
    assert bp.params["fit_weights"] == "intensity"
    assert "height" in bp.params["intensity"]
    assert bp.n_peaks >= 8 and np.nanmax(bp.intensity) < 1.5
