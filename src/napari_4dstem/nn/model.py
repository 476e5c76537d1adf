"""The FCU-Net-like model: a complex-valued U-Net on the pattern x probe correlation spectrum.

Forward pass for a batch of patterns ``(B, S, S)`` and their vacuum probe(s) ``(B|1, S, S)``,
both centred (unscattered beam at ``(S // 2, S // 2)``):

1. ``P = FFT(pattern)``, ``T = FFT(ifftshift(probe))`` (the probe moved to pixel (0, 0), so the
   correlation peaks sit at absolute disk positions); ``X = P conj(T)``, the cross-correlation
   spectrum, divided by its RMS per sample (the normalisation of Munshi et al. 2022);
2. three complex input channels, all fftshifted (DC at the centre): ``X``, ``|T|^2`` (what a
   Wiener-type deconvolution needs) and the frequency radius ``|k|`` (convolutions alone do not
   know where in k-space they are);
3. a complex U-Net (:class:`ComplexConv2d`, CReLU, strided complex convolutions down,
   transposed complex convolutions up, skip connections by :func:`complex_cat`), depth
   ``log2(size) - 4`` (bottleneck 16 x 16), width doubling per level;
4. a complex head with two outputs ``H`` and ``R``; the output spectrum is ``Y = H X + R``
   (a learned, input-dependent filter of the correlation plus a correction);
5. the predicted "structure factor" image is ``Re IFFT(Y)`` ``(B, S, S)``: one sharp peak per
   Bragg reflection at the disk centre.

``domain="real"`` is a variant for comparison: the same complex U-Net on the real-space
correlation image and the pattern (as complex channels), output its real part.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import Napari4DSTEMError

__all__ = ["MODEL_SIZES", "ModelConfig", "ModelError", "build_model"]

MODEL_SIZES = (128, 256, 512)


class ModelError(Napari4DSTEMError, ValueError):
    """A model file or configuration is unusable (wrong size, architecture or contents)."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an FCU-Net.

    Parameters
    ----------
    size : {128, 256, 512}
        Input and output size in pixels (square patterns).
    width : int
        Complex channels of the first level (doubled per level).
    dropout : float
        Complex-channel dropout in the decoder (and MC-dropout at inference).
    domain : {"fourier", "real"}
        Where the U-Net works (see the module docstring).
    label_sigma_px : float
        Width of the label peaks the model was trained on (used by inference refinement).
    """

    size: int = 128
    width: int = 8
    dropout: float = 0.1
    domain: str = "fourier"
    label_sigma_px: float = 1.0
    architecture: str = "fcunet-v1"

    def __post_init__(self):
        if self.size not in MODEL_SIZES:
            raise ModelError(f"model size must be one of {MODEL_SIZES}, got {self.size}")
        if self.width < 1:
            raise ModelError(f"width must be at least 1, got {self.width}")
        if not 0 <= self.dropout < 1:
            raise ModelError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.domain not in ("fourier", "real"):
            raise ModelError(f"domain must be 'fourier' or 'real', got {self.domain!r}")
        if self.architecture != "fcunet-v1":
            raise ModelError(
                f"unknown architecture {self.architecture!r} (this version knows fcunet-v1)"
            )

    @property
    def depth(self) -> int:
        """Number of down-sampling levels: ``log2(size) - 4`` (128 -> 3, 256 -> 4, 512 -> 5)."""
        return int(math.log2(self.size)) - 4

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ModelError(f"unknown model configuration fields {sorted(unknown)}")
        return cls(**d)


def build_model(config: ModelConfig):
    """A new :class:`FCUNet` torch module (torch imported here)."""
    from ._fcunet import FCUNet

    return FCUNet(config)
