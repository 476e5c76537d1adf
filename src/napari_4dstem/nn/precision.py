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

DEFAULT_PRECISION = "bfloat16"
"""The default of :class:`~napari_4dstem.pipelines.NNDiskParams`,
:func:`~napari_4dstem.nn.infer.find_bragg_disks_nn` and ``predict_pattern`` since session 12:
on held-out scans drawn for the decision (GaN [0001] multislice, 75-degree proxy lattices at
4.5 and 16 px disks) its strain error, recall and position error were within the rule fixed
beforehand (docs/nn.md, "bfloat16 by default"). On a CPU without native bfloat16 float32 runs
instead (the peaks' ``params["precision"]`` says which ran)."""
