"""Bragg disks: probe templates, correlation and peak finding, lattice vectors and their fits, strain maps.

The ``__all__`` of each module named below is re-exported here and imported on first use (PEP 562), so
``from napari_4dstem.analysis.bragg import X`` loads only the module that defines X.
"""

from __future__ import annotations

from ..._lazy import lazy_modules

__getattr__, __dir__ = lazy_modules(__name__, ("probe", "peaks", "disks", "lattice", "strain"))
