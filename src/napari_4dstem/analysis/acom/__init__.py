"""Orientation mapping (ACOM): orientation plan, matching, result with maps and exports, IPF.

The orientation plan, matching peaks to it, the result with its maps and exports,
inverse-pole-figure colours.

Modules: ``plan``, ``matching``, ``result``, ``turn``, ``separation``, ``ipf``. Their public names are re-exported
here and imported on first use (PEP 562), so ``from napari_4dstem.analysis.acom import X`` loads only the module
that defines X.
"""

from __future__ import annotations

from ..._lazy import lazy_exports

# name -> the module that defines it (tests/analysis/test_layout.py checks this against each module's __all__)
_EXPORTS = {
    "ROCKING_CURVES": "plan",
    "OrientationPlan": "plan",
    "PlanTooLargeError": "plan",
    "build_orientation_plan": "plan",
    "estimate_plan_memory": "plan",
    "euler_bunge_deg": "plan",
    "gaussian_width_inv_A": "plan",
    "iter_build_orientation_plan": "plan",
    "load_orientation_plan": "plan",
    "orientation_from_euler_bunge": "plan",
    "rocking_profile": "plan",
    "rotation_z": "plan",
    "zone_axis_orientation": "plan",
    "ACOM_DISK_DEFAULTS": "matching",
    "ACOMResult": "result",
    "iter_match_orientations": "matching",
    "kinematic_bragg_peaks": "matching",
    "match_orientations": "matching",
    "peaks_to_lab": "matching",
    "TURN_LINE": "turn",
    "turn_arguments": "turn",
    "turn_partners": "turn",
    "zone_axes": "turn",
    "PatternSeparation": "separation",
    "ThinFilmPattern": "separation",
    "detection_line": "separation",
    "pattern_separation": "separation",
    "thin_film_pattern": "separation",
    "zone_partner": "separation",
    "ipf_colors": "ipf",
    "ipf_key": "ipf",
    "ipf_key_image": "ipf",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
