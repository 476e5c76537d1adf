"""Bragg disks: probe templates, correlation and peak finding, lattice vectors and their fits, strain maps.

Modules: ``probe``, ``peaks``, ``disks``, ``lattice``, ``strain``. Their public names are re-exported here and imported
on first use (PEP 562), so ``from napari_4dstem.analysis.bragg import X`` loads only the module that defines X.
"""

from __future__ import annotations

from ..._lazy import lazy_exports

# name -> the module that defines it (tests/analysis/test_layout.py checks this against each module's __all__)
_EXPORTS = {
    "KERNEL_KINDS": "probe",
    "ProbeTemplate": "probe",
    "make_template": "probe",
    "template_from_bf_disk": "probe",
    "REFINE_METHODS": "peaks",
    "PeakTable": "peaks",
    "compact_rows": "peaks",
    "disk_counts": "peaks",
    "find_peaks": "peaks",
    "fit_disks": "peaks",
    "keep_significant": "peaks",
    "refine_peaks": "peaks",
    "bragg_vector_map": "disks",
    "correlate": "disks",
    "detect_in_stack": "disks",
    "find_bragg_disks": "disks",
    "iter_find_bragg_disks": "disks",
    "origin_from_peaks": "disks",
    "FIT_REASONS": "lattice",
    "Lattice": "lattice",
    "LatticeError": "lattice",
    "LatticeFit": "lattice",
    "find_lattice": "lattice",
    "fit_lattice": "lattice",
    "STRAIN_CHANNELS": "strain",
    "StrainError": "strain",
    "StrainMap": "strain",
    "reference_mask": "strain",
    "strain_from_lattice": "strain",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
