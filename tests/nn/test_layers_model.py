"""Complex layers against complex arithmetic; the FCU-Net's shapes, sizes and gradients."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_4dstem.nn.layers import (
    ComplexConv2d,
    ComplexConvTranspose2d,
    ComplexDropout,
    complex_cat,
    from_complex,
    to_complex,
)
from napari_4dstem.nn.model import ModelConfig, ModelError, build_model


def _rand_complex(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))


def test_complex_conv_is_complex_multiplication():
    conv = ComplexConv2d(3, 2, 3)
    z = _rand_complex(2, 3, 9, 7)
    out = to_complex(conv(from_complex(z)))
    w = torch.complex(conv.wr, conv.wi)
    b = torch.complex(conv.br, conv.bi)
    # the same convolution in complex arithmetic: sum over inputs of w * z (cross-correlation)
    zp = torch.nn.functional.pad(z, (1, 1, 1, 1))
    ref = torch.zeros(2, 2, 9, 7, dtype=torch.complex64)
    for dy in range(3):
        for dx in range(3):
            ref += torch.einsum("oi,bihw->bohw", w[:, :, dy, dx], zp[:, :, dy : dy + 9, dx : dx + 7])
    ref += b[None, :, None, None]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_complex_transposed_conv_is_complex_multiplication():
    up = ComplexConvTranspose2d(2, 3)
    z = _rand_complex(1, 2, 4, 5, seed=1)
    out = to_complex(up(from_complex(z)))
    assert out.shape == (1, 3, 8, 10)
    w = torch.complex(up.wr, up.wi)  # (in, out, 2, 2)
    ref = torch.einsum("bihw,ioyx->bohywx", z, w).reshape(1, 3, 8, 10)
    ref = ref + torch.complex(up.br, up.bi)[None, :, None, None]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_complex_concatenation_keeps_real_and_imaginary_parts_apart():
    a = _rand_complex(1, 2, 3, 3, seed=2)
    b = _rand_complex(1, 3, 3, 3, seed=3)
    cat = to_complex(complex_cat(from_complex(a), from_complex(b)))
    torch.testing.assert_close(cat, torch.cat([a, b], dim=1))
    # the naive concatenation of packed tensors is *not* the complex concatenation
    naive = to_complex(torch.cat([from_complex(a), from_complex(b)], dim=1))
    assert not torch.allclose(naive, torch.cat([a, b], dim=1))


def test_complex_dropout_drops_both_parts_together():
    d = ComplexDropout(0.5)
    d.train()
    z = from_complex(_rand_complex(4, 16, 2, 2, seed=4))
    out = d(z)
    re, im = out[:, :16], out[:, 16:]
    dropped_re = (re == 0).all(dim=(2, 3))
    assert torch.equal(dropped_re, (im == 0).all(dim=(2, 3)))
    assert 0 < dropped_re.float().mean() < 1
    d.eval()
    assert torch.equal(d(z), z)
    d.always = True  # MC dropout
    assert not torch.equal(d(z), z)


@pytest.mark.parametrize(("size", "depth"), [(128, 3), (256, 4), (512, 5)])
def test_depth_follows_the_size(size, depth):
    assert ModelConfig(size=size).depth == depth


def test_bad_configurations_are_refused():
    with pytest.raises(ModelError, match="size"):
        ModelConfig(size=100)
    with pytest.raises(ModelError, match="domain"):
        ModelConfig(domain="wavelet")
    with pytest.raises(ModelError, match="unknown"):
        ModelConfig.from_dict({"size": 128, "colour": "red"})


@pytest.mark.parametrize("domain", ["fourier", "real"])
def test_forward_shape_and_gradients_reach_every_parameter(domain):
    torch.manual_seed(0)
    m = build_model(ModelConfig(size=128, width=2, domain=domain))
    x = torch.rand(2, 128, 128)
    probe = torch.zeros(1, 128, 128)
    probe[0, 60:68, 60:68] = 1
    out = m(x, probe)
    assert out.shape == (2, 128, 128) and out.dtype == torch.float32
    out.pow(2).mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    # fully convolutional: frames whose sides divide by 2**depth (8) run, others are refused,
    # and the probe must have the patterns' shape
    with pytest.raises(ValueError, match="multiples of 8"):
        m(torch.rand(1, 100, 100), torch.zeros(1, 100, 100))
    with pytest.raises(ValueError, match="differ"):
        m(torch.rand(1, 64, 64), probe)
    assert m(torch.rand(1, 64, 64), torch.zeros(1, 64, 64)).shape == (1, 64, 64)


def test_mc_dropout_gives_different_samples_only_when_on():
    torch.manual_seed(0)
    m = build_model(ModelConfig(size=128, width=2, dropout=0.3)).eval()
    x, pr = torch.rand(1, 128, 128), torch.rand(1, 128, 128)
    with torch.no_grad():
        assert torch.equal(m(x, pr), m(x, pr))
        m.set_mc_dropout(True)
        assert not torch.equal(m(x, pr), m(x, pr))


def test_importing_nn_does_not_import_torch():
    code = (
        "import sys, napari_4dstem.nn, napari_4dstem.nn.model, napari_4dstem.nn.registry; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_complex_layers_match_numpy_reference_dtype():
    # the packed layout works with float64 too (used nowhere, but must not silently break)
    conv = ComplexConv2d(1, 1, 1).double()
    z = from_complex(_rand_complex(1, 1, 2, 2, seed=5)).double()
    w = complex(conv.wr.item(), conv.wi.item())
    ref = w * (z[:, 0] + 1j * z[:, 1]).numpy()
    out = conv(z).detach().numpy()
    np.testing.assert_allclose(out[:, 0] + 1j * out[:, 1], ref)
