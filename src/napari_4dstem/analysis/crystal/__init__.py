"""Crystals: CIF structures, kinematic and Bloch-wave diffraction, scattering factors, symmetry.

Modules: ``structure``, ``scattering``, ``symmetry``, ``bloch``. Their public names are re-exported here and imported
on first use (PEP 562), so ``from napari_4dstem.analysis.crystal import X`` loads only the module that defines X.
"""

from __future__ import annotations

from ..._lazy import lazy_exports

# name -> the module that defines it (tests/analysis/test_layout.py checks this against each module's __all__)
_EXPORTS = {
    "BUNDLED_CRYSTALS": "structure",
    "Crystal": "structure",
    "CrystalError": "structure",
    "KinematicPattern": "structure",
    "ReciprocalPoints": "structure",
    "bundled_crystal": "structure",
    "lattice_from_parameters": "structure",
    "element_number": "scattering",
    "element_symbol": "scattering",
    "peng_coefficients": "scattering",
    "scattering_factor": "scattering",
    "PointGroup": "symmetry",
    "fundamental_zone_axes": "symmetry",
    "misorientation_deg": "symmetry",
    "rotation_angle_deg": "symmetry",
    "sphere_points": "symmetry",
    "BlochPattern": "bloch",
    "bloch_intensities": "bloch",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
