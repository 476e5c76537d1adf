"""Virtual imaging: detectors and their masks, virtual images and binned previews, centre of mass and DPC,
calibration of the detector (ring fit) and of the pattern origin (descan), Result-pane transforms.

Modules: ``detectors``, ``images``, ``preview``, ``com``, ``dpc``, ``statistics``, ``calibration``, ``origin``,
``transforms``. Their public names are re-exported here and imported on first use (PEP 562), so
``from napari_4dstem.analysis.virtual import X`` loads only the module that defines X.
"""

from __future__ import annotations

from ..._lazy import lazy_exports

# name -> the module that defines it (tests/analysis/test_layout.py checks this against each module's __all__)
_EXPORTS = {
    "PRESETS": "detectors",
    "AnnulusDetector": "detectors",
    "CombinedDetector": "detectors",
    "Detector": "detectors",
    "DiskDetector": "detectors",
    "GridDetector": "detectors",
    "MaskDetector": "detectors",
    "PointDetector": "detectors",
    "RectangleDetector": "detectors",
    "WedgeDetector": "detectors",
    "mask_from_file": "detectors",
    "mask_runs": "detectors",
    "preset_detector": "detectors",
    "NonFiniteDataError": "images",
    "as_datacube": "images",
    "descan_shifts": "images",
    "iter_virtual_image": "images",
    "iter_virtual_images": "images",
    "virtual_image": "images",
    "virtual_images": "images",
    "binned_detector": "preview",
    "iter_preview_cube": "preview",
    "center_of_mass": "com",
    "iter_center_of_mass": "com",
    "MIN_ROTATION_CONFIDENCE": "dpc",
    "IllConditionedRotationWarning": "dpc",
    "RotationFit": "dpc",
    "com_shifts": "dpc",
    "divergence_curl": "dpc",
    "fit_dpc_rotation": "dpc",
    "idpc": "dpc",
    "rotate_to_scan": "dpc",
    "RingFit": "calibration",
    "fit_ellipse_points": "calibration",
    "fit_ring": "calibration",
    "BFDisk": "origin",
    "OriginFit": "origin",
    "find_bf_disk": "origin",
    "fit_origin_plane": "origin",
    "iter_measure_origin": "origin",
    "measure_origin": "origin",
    "STATISTICS": "statistics",
    "detector_statistic": "statistics",
    "iter_detector_statistic": "statistics",
    "ewpc": "transforms",
    "fft_image": "transforms",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
