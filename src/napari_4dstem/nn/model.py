"""The FCU-Net-like model: a complex-valued U-Net fed by the pattern x probe correlation spectrum.

Forward pass for a batch of patterns ``(B, S, S)`` and their vacuum probe(s) ``(B|1, S, S)``,
the probe centred on pixel ``(S // 2, S // 2)``:

1. ``P = FFT(pattern)``, ``T = FFT(ifftshift(probe))`` (the probe moved to pixel (0, 0), so the
   correlation peaks sit at absolute disk positions); ``X = P conj(T) / |P conj(T)|^(1/2)``,
   the hybrid (power 1/2) cross-correlation spectrum, divided by its RMS per sample;
2. three complex input channels, depending on ``domain``:

   - ``"fourier"`` (the published FCU-Net arrangement, Munshi et al. 2022): the U-Net works on
     the spectrum itself (fftshifted): ``X``, ``|T|^2`` and the frequency radius ``|k|``; the
     output spectrum ``Y = H X + R`` (``H``, ``R`` the two complex head outputs) is brought
     back by an inverse FFT and its real part is the predicted image;
   - ``"real"`` (the default, and the bundled model): the U-Net works on the complex field
     ``IFFT(X) + i sqrt(pattern)`` (both normalised to a maximum of 1), i.e. the same
     correlation spectrum brought to real space, with the pattern as imaginary part; the
     prediction is ``Re(H z + R)``. It trains several times faster on a CPU budget (see
     docs/nn.md for the numbers), because convolutions in real space are translation
     equivariant, while in the spectrum a disk position is a phase ramp over all frequencies;

3. a complex U-Net (:class:`~.layers.ComplexConv2d`, CReLU, strided complex convolutions down,
   transposed complex convolutions up, skip connections by :func:`~.layers.complex_cat`),
   depth ``log2(size) - 4`` (bottleneck 16 x 16), width doubling per level, complex dropout in
   the decoder (MC-dropout at inference);
4. the predicted "structure factor" image ``(B, S, S)``: one Gaussian peak (sigma 1 px,
   height 1) per Bragg reflection at the disk centre.
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
    domain: str = "real"
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
            raise ModelError(f"unknown architecture {self.architecture!r} (this version knows fcunet-v1)")

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
