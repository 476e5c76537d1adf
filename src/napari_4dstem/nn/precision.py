"""The network's CPU arithmetic: the values of ``precision`` and its default.

A module of constants only (no torch, no numpy), so the command line's parser and the NN dock
can name the choices without importing the inference code. Used by
:class:`~napari_4dstem.pipelines.NNDiskParams`, ``napari-4dstem infer --precision`` and the
*NN disk detection* dock.
"""

from __future__ import annotations

PRECISIONS = ("float32", "bfloat16")
"""``"float32"``: the model's own arithmetic; ``"bfloat16"``: its convolutions in bfloat16
(about 1.6-2.3x faster on CPUs with native bfloat16, peaks within hundredths of a pixel of
float32's; docs/nn.md). CUDA and MC dropout always run float32."""

DEFAULT_PRECISION = "float32"
"""What :class:`~napari_4dstem.pipelines.NNDiskParams` uses unless told otherwise."""
