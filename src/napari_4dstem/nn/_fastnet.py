"""An inference-only twin of the real-domain FCU-Net: the same outputs, fewer operations.

:class:`FastFCUNet` is built from a trained :class:`~napari_4dstem.nn._fcunet.FCUNet` and
computes the same image (to float rounding) for inference on the CPU:

- the complex block weights ``[[Wr, -Wi], [Wi, Wr]]`` are assembled once, not at every call;
- the input spectrum uses real FFTs (``rfft2`` / ``irfft2``: the patterns and the probe are
  real, so the hybrid-correlation spectrum is Hermitian and half of it is enough), and the
  RMS normalisation reuses ``|X|`` instead of recomputing ``|X / sqrt|X||^2``;
- the first convolution reads only the two input channels that are not zero in the real
  domain (correlation and pattern: the third complex channel and every imaginary part are
  zero);
- ReLUs run in place, the output ``Re(H z + R)`` is formed from real tensors.

No dropout (Monte-Carlo dropout needs the module itself); the Fourier-domain arrangement is not
covered (:func:`fast_inference_net` returns None for it).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._fcunet import FCUNet
from .layers import ComplexConv2d, ComplexConvTranspose2d, _block
from .model import ModelError

__all__ = ["FastFCUNet", "fast_inference_net"]


def _conv(m: ComplexConv2d) -> tuple[torch.Tensor, torch.Tensor | None, int, int]:
    w = _block(m.wr, m.wi, dim_in=1).detach().clone()
    b = torch.cat([m.br, m.bi]).detach().clone() if m.br is not None else None
    return w, b, m.stride, m.padding


def _convt(m: ComplexConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    top = torch.cat([m.wr, m.wi], dim=1)
    bottom = torch.cat([-m.wi, m.wr], dim=1)
    return torch.cat([top, bottom], dim=0).detach().clone(), torch.cat([m.br, m.bi]).detach().clone()


class _Conv(nn.Module):
    def __init__(self, spec, relu: bool):
        super().__init__()
        w, b, self.stride, self.padding = spec
        self.weight = nn.Parameter(w.contiguous(memory_format=torch.channels_last), requires_grad=False)
        self.bias = None if b is None else nn.Parameter(b, requires_grad=False)
        self.relu = relu

    def forward(self, x):
        y = F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)
        return F.relu(y, inplace=True) if self.relu else y


class _UpCat(nn.Module):
    """The kernel-2, stride-2 transposed convolution, concatenated with the skip tensor.

    A stride-2 transposed convolution with a 2x2 kernel writes each input pixel's four output
    pixels from that pixel alone: one matrix product ``(pixels, c_in) @ (c_in, 4 c_out)`` over
    the channels-last input, whose rows are then placed into the 2x2 cells of the output. They
    go straight into the first channels of the channels-last buffer the decoder reads, the skip
    tensor into the others (``conv_transpose2d`` ran at a third of the convolutions' rate
    on the 2-core CPU, and the concatenation was a further copy).
    """

    def __init__(self, m: ComplexConvTranspose2d):
        super().__init__()
        w, b = _convt(m)  # (c_in, c_out, 2, 2), (c_out,)
        c_in, c_out = w.shape[:2]
        self.c_out = c_out
        # columns ordered (ky, kx, c_out)
        self.weight = nn.Parameter(w.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out).contiguous(), requires_grad=False)
        self.bias = nn.Parameter(b.repeat(4), requires_grad=False)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        bsz, c_in, h, w = x.shape
        c, cs = self.c_out, skip.shape[1]
        y = torch.addmm(self.bias, x.permute(0, 2, 3, 1).reshape(-1, c_in), self.weight)
        out = torch.empty((bsz, 2 * h, 2 * w, c + cs), dtype=y.dtype, device=y.device)
        # out[b, 2i + ky, 2j + kx, :c] = y[b, i, j, ky, kx, :]
        out.view(bsz, h, 2, w, 2, c + cs)[..., :c].copy_(y.view(bsz, h, w, 2, 2, c).permute(0, 1, 3, 2, 4, 5))
        out[..., c:].copy_(skip.permute(0, 2, 3, 1))
        return out.permute(0, 3, 1, 2)  # (B, C, H, W), channels-last in memory


def _block_convs(block, c_up: int | None = None) -> nn.Sequential:
    w, b, st, pad = _conv(block.a)
    if c_up is not None:
        # a decoder block reads the upsampled and the skip tensor: the packed complex input
        # [up_re, skip_re | up_im, skip_im] of the module is reordered to
        # [up_re, up_im | skip_re, skip_im], so a plain concatenation of the two whole tensors
        # feeds it (a concatenation of four channel slices of channels-last tensors was 14 % of
        # a forward pass)
        c_in = w.shape[1] // 2
        perm = [*range(c_up), *range(c_in, c_in + c_up), *range(c_up, c_in), *range(c_in + c_up, 2 * c_in)]
        w = w[:, perm].contiguous()
    convs = [_Conv((w, b, st, pad), True)]
    if block.b is not None:
        convs.append(_Conv(_conv(block.b), True))
    return nn.Sequential(*convs)


class FastFCUNet(nn.Module):
    """Inference twin of a real-domain :class:`FCUNet` (see the module docstring).

    ``forward(patterns (B, H, W), probes (1|B, H, W)) -> image (B, H, W)``; frames whose sides
    divide by ``2**depth``.
    """

    def __init__(self, net: FCUNet, dtype: torch.dtype = torch.float32):
        super().__init__()
        if net.config.domain != "real":
            raise ModelError("FastFCUNet covers real-domain models only")
        self.config = net.config
        w, b, s, p = _conv(net.inc.a)
        # input channels [re: corr, pattern, 0 | im: 0, 0, 0]: only the first two are read
        self.inc = _Conv((w[:, :2].contiguous(), b, s, p), True)
        self.down = nn.ModuleList(_Conv(_conv(d), True) for d in net.down)
        self.enc = nn.ModuleList(_block_convs(e) for e in net.enc)
        self.up = nn.ModuleList(_UpCat(u) for u in net.up)
        self.dec = nn.ModuleList(_block_convs(d, u.wr.shape[1]) for d, u in zip(net.dec, net.up, strict=True))
        # the 1x1 head as a matrix product over the channels of the channels-last features, and
        # only the three outputs used: Re H, Re R, Im H (Im R does not enter Re(H z + R))
        hw, hb, _, _ = _conv(net.head)
        keep = [0, 1, 2]
        self.head_w = nn.Parameter(hw[keep, :, 0, 0].t().contiguous(), requires_grad=False)
        self.head_b = nn.Parameter(hb[keep].clone(), requires_grad=False)
        # the convolutions' precision (bfloat16: about 2x faster where the CPU has native
        # bfloat16 dot products; the input spectrum and the head stay float32)
        self.dtype = dtype
        for mod in (self.inc, self.down, self.enc, self.up, self.dec):
            mod.to(dtype)

    def inputs(self, patterns: torch.Tensor, probes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised hybrid correlation and the square-rooted pattern, ``(B, H, W)`` each."""
        p = patterns.float()
        h, w = p.shape[-2:]
        X = torch.fft.rfft2(p) * torch.conj(torch.fft.rfft2(torch.fft.ifftshift(probes.float(), dim=(-2, -1))))
        a = X.abs()
        X = X / torch.sqrt(a.clamp_min(1e-12))
        # |X / sqrt(max(|X|, eps))|^2 = |X|^2 / max(|X|, eps); the half spectrum counts its
        # columns that stand for two (Hermitian pairs) twice
        a2 = a * a / a.clamp_min(1e-12)
        cw = torch.full((a.shape[-1],), 2.0, dtype=a.dtype, device=a.device)
        cw[0] = 1.0
        if w % 2 == 0:
            cw[-1] = 1.0
        ms = (a2 * cw).sum(dim=(-2, -1), keepdim=True) / (h * w)
        X = X / torch.sqrt(ms).clamp_min(1e-12)
        corr = torch.fft.irfft2(X, s=(h, w))
        corr = corr / corr.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        pn = torch.sqrt(p.clamp_min(0))
        pn = pn / pn.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        return corr, pn

    def forward(self, patterns: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
        m = 2**self.config.depth
        h, w = patterns.shape[-2:]
        if h % m or w % m:
            raise ModelError(
                f"this model takes frames whose sides are multiples of {m} (trained on "
                f"{self.config.size}x{self.config.size}), got {(h, w)}"
            )
        if tuple(probes.shape[-2:]) != (h, w):
            raise ModelError(f"probe {tuple(probes.shape[-2:])} and patterns {(h, w)} differ")
        corr, pn = self.inputs(patterns, probes)
        z = torch.stack([corr, pn], dim=1).to(self.dtype).contiguous(memory_format=torch.channels_last)
        x = self.inc(z)
        skips = []
        for down, enc in zip(self.down, self.enc, strict=True):
            skips.append(x)
            x = enc(down(x))
        for i in reversed(range(len(self.up))):
            x = self.dec[i](self.up[i](x, skips[i]))
        # channels-last features (B, C, H, W) are (B, H, W, C) in memory
        out = torch.addmm(self.head_b, x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).float(), self.head_w)
        out = out.view(x.shape[0], h, w, 3).float()
        # Re(H z + R), H = out0 + i out2, R = out1 + i out3, z = corr + i pn
        return out[..., 0] * corr - out[..., 2] * pn + out[..., 1]


def fast_inference_net(net, dtype: torch.dtype = torch.float32) -> FastFCUNet | None:
    """A :class:`FastFCUNet` of ``net`` (an FCUNet, real domain), else None."""
    if not isinstance(net, FCUNet) or net.config.domain != "real":
        return None
    return FastFCUNet(net, dtype).eval()
