"""Complex-valued layers for the FCU-Net (torch; import this module only where torch is wanted).

A complex tensor with ``C`` channels is stored as a real tensor ``(B, 2C, H, W)``: the ``C``
real parts first, then the ``C`` imaginary parts. That layout keeps every operation one real
``conv2d`` (fast on CPU and on GPU, and autocast-friendly, which complex dtypes are not):

- :class:`ComplexConv2d` computes ``W * z = (Wr * x - Wi * y) + i (Wi * x + Wr * y)`` for
  ``z = x + i y`` as one convolution with the block weight ``[[Wr, -Wi], [Wi, Wr]]``;
- :func:`complex_cat` concatenates complex tensors channel-wise as complex numbers: real parts
  with real parts, imaginary with imaginary. (A plain ``torch.cat`` of two ``[re | im]``
  tensors would give ``[re_a | im_a | re_b | im_b]`` and the next layer would read ``im_a`` as
  real parts -- the skip-connection bug this module exists to avoid.)
- :class:`ComplexDropout` drops a complex channel (both parts) with one mask;
- :func:`crelu` applies ReLU to both parts (the "CReLU" of Trabelsi et al. 2018).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "ComplexConv2d",
    "ComplexConvTranspose2d",
    "ComplexDropout",
    "complex_cat",
    "crelu",
    "from_complex",
    "split",
    "to_complex",
]


def split(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts ``(B, C, H, W)`` of a packed complex tensor ``(B, 2C, H, W)``."""
    c = z.shape[1] // 2
    return z[:, :c], z[:, c:]


def complex_cat(*zs: torch.Tensor) -> torch.Tensor:
    """Concatenate packed complex tensors along channels: ``[re_a, re_b, ..., im_a, im_b, ...]``."""
    parts = [split(z) for z in zs]
    return torch.cat([p[0] for p in parts] + [p[1] for p in parts], dim=1)


def to_complex(z: torch.Tensor) -> torch.Tensor:
    """Packed ``(B, 2C, H, W)`` -> complex dtype ``(B, C, H, W)``."""
    re, im = split(z)
    return torch.complex(re.float(), im.float())


def from_complex(z: torch.Tensor) -> torch.Tensor:
    """Complex dtype ``(B, C, H, W)`` -> packed real ``(B, 2C, H, W)``."""
    return torch.cat([z.real, z.imag], dim=1)


def crelu(z: torch.Tensor) -> torch.Tensor:
    return F.relu(z)


def _block(wr: torch.Tensor, wi: torch.Tensor, dim_in: int) -> torch.Tensor:
    # rows: outputs (re, im); columns: inputs (re, im)
    top = torch.cat([wr, -wi], dim=dim_in)
    bottom = torch.cat([wi, wr], dim=dim_in)
    return torch.cat([top, bottom], dim=1 - dim_in)


class ComplexConv2d(nn.Module):
    """Complex 2D convolution, ``c_in`` -> ``c_out`` complex channels, on packed tensors."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, *, stride: int = 1, bias: bool = True):
        super().__init__()
        k = kernel_size
        self.stride, self.padding = stride, k // 2
        # complex Glorot-like init: Var(W) = 1 / fan_in split over the two parts
        std = (1.0 / (c_in * k * k)) ** 0.5 / 2**0.5
        self.wr = nn.Parameter(torch.randn(c_out, c_in, k, k) * std)
        self.wi = nn.Parameter(torch.randn(c_out, c_in, k, k) * std)
        self.br = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.bi = nn.Parameter(torch.zeros(c_out)) if bias else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = _block(self.wr, self.wi, dim_in=1)
        b = torch.cat([self.br, self.bi]) if self.br is not None else None
        return F.conv2d(z, w, b, stride=self.stride, padding=self.padding)


class ComplexConvTranspose2d(nn.Module):
    """Complex transposed convolution (kernel 2, stride 2): doubles the spatial size."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        std = (1.0 / (c_in * 4)) ** 0.5 / 2**0.5
        # transposed-conv weights are (in, out, k, k)
        self.wr = nn.Parameter(torch.randn(c_in, c_out, 2, 2) * std)
        self.wi = nn.Parameter(torch.randn(c_in, c_out, 2, 2) * std)
        self.br = nn.Parameter(torch.zeros(c_out))
        self.bi = nn.Parameter(torch.zeros(c_out))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # y_re = Wr^T x - Wi^T y, y_im = Wi^T x + Wr^T y: inputs index dim 0, outputs dim 1
        top = torch.cat([self.wr, self.wi], dim=1)  # from x (re input)
        bottom = torch.cat([-self.wi, self.wr], dim=1)  # from y (im input)
        w = torch.cat([top, bottom], dim=0)
        b = torch.cat([self.br, self.bi])
        return F.conv_transpose2d(z, w, b, stride=2)


class ComplexDropout(nn.Module):
    """Drop whole complex channels (real and imaginary part together) with probability ``p``.

    Active in training, or always when ``always`` is set (Monte-Carlo dropout at inference).
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)
        self.always = False

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.p <= 0 or not (self.training or self.always):
            return z
        b, c2 = z.shape[:2]
        keep = (torch.rand(b, c2 // 2, 1, 1, device=z.device) >= self.p).to(z.dtype)
        keep = torch.cat([keep, keep], dim=1) / (1.0 - self.p)
        return z * keep
