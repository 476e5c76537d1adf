"""The FCU-Net torch module (see :mod:`.model` for the design)."""

from __future__ import annotations

import torch
from torch import nn

from .layers import ComplexConv2d, ComplexConvTranspose2d, ComplexDropout, complex_cat, crelu
from .model import ModelConfig

__all__ = ["FCUNet", "prepare_inputs"]


class _Block(nn.Module):
    """One or two complex 3x3 convolutions with CReLU (one at full resolution, where they cost
    the most), then complex-channel dropout."""

    def __init__(self, c_in: int, c_out: int, dropout: float = 0.0, n_conv: int = 2):
        super().__init__()
        self.a = ComplexConv2d(c_in, c_out)
        self.b = ComplexConv2d(c_out, c_out) if n_conv == 2 else None
        self.drop = ComplexDropout(dropout)

    def forward(self, z):
        h = crelu(self.a(z))
        if self.b is not None:
            h = crelu(self.b(h))
        return self.drop(h)


def _radius_map(size: int, device) -> torch.Tensor:
    f = torch.fft.fftshift(torch.fft.fftfreq(size, device=device))
    return torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2) * 2.0  # 1 at the Nyquist edge


def prepare_inputs(patterns: torch.Tensor, probes: torch.Tensor, domain: str):
    """Model inputs (packed complex ``(B, 6, S, S)``) and the normalised spectrum ``X``.

    ``X = P conj(T) / |P conj(T)|^(1/2)`` (hybrid correlation, power 1/2: the central beam no
    longer dwarfs weak reflections), divided by its RMS per sample.
    """
    p = patterns.float()
    t = torch.fft.ifftshift(probes.float(), dim=(-2, -1))
    P = torch.fft.fft2(p)
    T = torch.fft.fft2(t)
    X = P * torch.conj(T)
    X = X / torch.sqrt(torch.abs(X).clamp_min(1e-12))
    rms = torch.sqrt(torch.mean(X.real**2 + X.imag**2, dim=(-2, -1), keepdim=True)).clamp_min(1e-12)
    X = X / rms
    b, s = X.shape[0], X.shape[-1]
    if domain == "fourier":
        T2 = (T.real**2 + T.imag**2).expand(b, s, s)
        T2 = T2 / T2.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        Xs = torch.fft.fftshift(X, dim=(-2, -1))
        re = torch.stack(
            [
                Xs.real,
                torch.fft.fftshift(T2, dim=(-2, -1)),
                _radius_map(s, X.device).expand(b, s, s),
            ],
            dim=1,
        )
        im = torch.stack([Xs.imag, torch.zeros_like(Xs.real), torch.zeros_like(Xs.real)], dim=1)
    else:
        corr = torch.fft.ifft2(X).real
        corr = corr / corr.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        pn = torch.sqrt(p.clamp_min(0))  # square root: weak disks visible next to the central one
        pn = pn / pn.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        zero = torch.zeros_like(pn)
        re = torch.stack([corr, pn, zero], dim=1)
        im = torch.stack([zero, zero, zero], dim=1)
    return torch.cat([re, im], dim=1), X


class FCUNet(nn.Module):
    """Complex U-Net: ``forward(patterns (B, S, S), probes (B|1, S, S)) -> image (B, S, S)``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        w, d = config.width, config.depth
        chans = [w * 2**i for i in range(d + 1)]
        self.inc = _Block(3, chans[0], n_conv=1)
        self.down = nn.ModuleList(ComplexConv2d(chans[i], chans[i], 3, stride=2) for i in range(d))
        self.enc = nn.ModuleList(_Block(chans[i], chans[i + 1]) for i in range(d))
        self.up = nn.ModuleList(ComplexConvTranspose2d(chans[i + 1], chans[i]) for i in range(d))
        self.dec = nn.ModuleList(
            _Block(2 * chans[i], chans[i], config.dropout, n_conv=1 if i == 0 else 2) for i in range(d)
        )
        self.head = ComplexConv2d(chans[0], 2, 1)

    def set_mc_dropout(self, on: bool) -> None:
        for m in self.modules():
            if isinstance(m, ComplexDropout):
                m.always = bool(on)

    def forward(self, patterns: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
        s = self.config.size
        h, w = patterns.shape[-2:]
        # fully convolutional: any frame whose sides divide by 2**depth runs (scale-normalised
        # inference uses frames of other sizes); the Fourier arrangement needs a square one
        m = 2**self.config.depth
        if h % m or w % m or (self.config.domain == "fourier" and h != w):
            raise ValueError(
                f"this model takes frames whose sides are multiples of {m}"
                f"{' and square' if self.config.domain == 'fourier' else ''} (trained on "
                f"{s}x{s}), got {(h, w)}"
            )
        if tuple(probes.shape[-2:]) != (h, w):
            raise ValueError(f"probe {tuple(probes.shape[-2:])} and patterns {(h, w)} differ")
        z, X = prepare_inputs(patterns, probes, self.config.domain)
        skips = []
        h = self.inc(z)
        for down, enc in zip(self.down, self.enc, strict=True):
            skips.append(h)
            h = enc(crelu(down(h)))
        for i in reversed(range(len(self.up))):
            h = self.up[i](h)
            h = self.dec[i](complex_cat(h, skips[i]))
        out = self.head(h).float()
        c = out.shape[1] // 2  # 2 complex channels: H, R
        H = torch.complex(out[:, 0], out[:, c])
        R = torch.complex(out[:, 1], out[:, c + 1])
        if self.config.domain == "fourier":
            Xs = torch.fft.fftshift(X, dim=(-2, -1))
            Y = torch.fft.ifftshift(H * Xs + R, dim=(-2, -1))
            return torch.fft.ifft2(Y).real * s  # * s: unit-height peaks need O(1) outputs
        # real domain: the complex field (correlation + i pattern) filtered by H, plus R
        zin = torch.complex(z[:, 0].float(), z[:, 1].float())
        return (H * zin + R).real
