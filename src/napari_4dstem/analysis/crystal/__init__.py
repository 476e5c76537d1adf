"""Crystals: CIF structures, kinematic and Bloch-wave diffraction, scattering factors, symmetry.

The ``__all__`` of each module named below is re-exported here and imported on first use (PEP 562), so
``from napari_4dstem.analysis.crystal import X`` loads only the module that defines X.
"""

from __future__ import annotations

from ..._lazy import lazy_modules

__getattr__, __dir__ = lazy_modules(__name__, ("structure", "scattering", "symmetry", "bloch"))
