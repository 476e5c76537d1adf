"""Probe templates: centring, normalisation, kernels, radial disk model, bad input."""

import numpy as np
import pytest

from napari_4dstem.analysis.bragg.probe import make_template, template_from_bf_disk
from napari_4dstem.data.results import DiffractionImage
from napari_4dstem.errors import DataShapeError


def _probe(synth, center, shape=(96, 96), radius=8.0, counts=None, rng=None):
    p = 960.0 * synth.soft_disk(shape, center, radius) + 8.0
    return rng.poisson(p).astype(np.uint16) if rng is not None else p


def test_plain_template_is_centred_normalised_and_measures_the_disk(synth):
    t = make_template(_probe(synth, (40.3, 51.7)))
    assert t.kind == "plain" and t.kernel.shape == (96, 96)
    assert t.kernel.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(t.params["center_px"], (40.3, 51.7), atol=1e-3)
    assert t.radius_px == pytest.approx(8.0, abs=1e-3)
    assert t.edge_px == pytest.approx(0.5, abs=1e-3)
    # centred on (0, 0): the kernel is point-symmetric about the origin (up to the ringing of
    # the sub-pixel Fourier shift of a 0.5 px edge, about 1 % of the plateau)
    flipped = np.roll(t.kernel[::-1, ::-1], (1, 1), axis=(0, 1))
    np.testing.assert_allclose(flipped, t.kernel, atol=0.02 * t.kernel.max())
    yy, xx = np.indices(t.kernel.shape)
    w = np.fft.fftshift(t.kernel)
    cy, cx = (w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()
    np.testing.assert_allclose((cy, cx), (48, 48), atol=1e-3)
    # the radial model is the planted logistic profile
    r = np.arange(len(t.profile)) * t.profile_step_px
    inner = r < t.support_px - 1
    np.testing.assert_allclose(t.profile[inner], 1 / (1 + np.exp((r[inner] - 8) / 0.5)), atol=1e-4)


def test_noisy_probe_and_diffraction_image_input(synth, rng):
    img = DiffractionImage(_probe(synth, (48.0, 47.5), rng=rng))
    t = make_template(img)
    np.testing.assert_allclose(t.params["center_px"], (48.0, 47.5), atol=0.03)
    assert t.radius_px == pytest.approx(8.0, abs=0.05)
    assert t.edge_px == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("kind", ["gaussian", "ring"])
def test_zero_sum_kernels(synth, kind):
    t = make_template(_probe(synth, (48, 48)), kind=kind)
    assert abs(t.kernel.sum()) < 1e-9
    assert t.kernel[0, 0] > 0  # positive in the disk
    with pytest.raises(ValueError):
        make_template(_probe(synth, (48, 48)), kind="nope")


def test_template_from_the_mean_patterns_bright_field_disk(synth):
    mean = 60 * synth.soft_disk((96, 96), (47.2, 48.9), 8.0) + 0.5
    mean += 6 * synth.soft_disk((96, 96), (47.2 + 24, 48.9), 8.0)  # a Bragg disk nearby
    t = template_from_bf_disk(mean)
    np.testing.assert_allclose(t.params["center_px"], (47.2, 48.9), atol=0.02)
    assert t.radius_px == pytest.approx(8.0, abs=0.05)
    assert "bright-field" in t.params["source"]


def test_bad_probes_raise_clear_errors(synth):
    with pytest.raises(DataShapeError, match="2D"):
        make_template(np.zeros((3, 4, 5)))
    with pytest.raises(DataShapeError, match="no probe disk|flat"):
        make_template(np.ones((64, 64)))
    t = make_template(_probe(synth, (48, 48)))
    with pytest.raises(DataShapeError, match="larger than the patterns"):
        t.kernel_for((16, 16))
    assert t.kernel_for((64, 80)).shape == (64, 80)
    assert t.kernel_for((64, 80)).sum() == pytest.approx(1.0)
