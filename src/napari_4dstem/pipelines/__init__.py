"""One function per user workflow, shared by the command line, the demo and the napari widgets.

Each workflow takes frozen parameter dataclasses (validated once, units in the field names) and
returns a result object that saves itself (:meth:`save`, an EMD file that py4DSTEM also opens)
and knows the short script that reproduces it (:meth:`to_script`, the "copy as Python" of the
GUI). The workflows:

- :func:`iter_disks` / :func:`run_disks`: probe template -> Bragg disks (template correlation,
  :class:`DiskDetectionParams`; or the neural network, :class:`NNDiskParams`) -> origin ->
  Bragg vector map. :class:`DisksResult`.
- :func:`iter_strain` / :func:`run_strain`: the disks, then lattice -> per-pattern lattice fit
  -> true strain (:class:`StrainParams`). :class:`StrainResult`. :func:`strain_from_peaks` does
  the second half on peaks you already have (from ``disks`` or ``infer``).
- :func:`iter_calibrate` / :func:`run_calibrate`: origin per pattern -> descan fit, ring
  ellipse / pixel size, DPC rotation (:class:`CalibrationParams`). :class:`CalibrationResult`.
- :func:`iter_classification` / :func:`run_classification`: features -> decomposition ->
  clustering -> class means, then merges (:class:`ClassificationParams`).
  :class:`ClassificationResult`.
- :func:`iter_phase` / :func:`run_phase`: parallax, SSB or iterative (multislice)
  ptychography (:class:`PhaseParams`). :class:`PhaseResult`.
- :func:`iter_acom` / :func:`run_acom`: the disks (by default :meth:`DiskDetectionParams.for_acom`)
  -> orientation plans -> matching (:class:`ACOMParams`). :class:`ACOMRun`.

Every result records a :class:`Recipe`: the workflow, the input file (path, size, mtime), the
parameters, the calibration, the software version and the time. It is stored with the saved
result (``params["recipe"]``), so :func:`script_from_file` gives the script of a saved file.

Layer: above ``analysis``/``nn``, below ``cli`` and ``widgets`` (DESIGN.md); imports no Qt.
Modules: ``params`` (the dataclasses), ``recipe`` (provenance, scripts), ``bragg`` (disks,
strain), ``acom`` (orientation maps), ``imaging`` (virtual images, COM/DPC/iDPC), ``session`` (a workspace as a
JSON file of recipes).
"""

from __future__ import annotations

from .acom import (
    ACOMRun,
    PatternCheck,
    acom_calibration,
    acom_match_maps,
    check_from_run,
    detector_reach_inv_A,
    iter_acom,
    iter_acom_pattern,
    iter_plans,
    read_acom,
    run_acom,
)
from .bragg import (
    DisksResult,
    StrainResult,
    detect_pattern,
    detect_pattern_nn,
    find_lattice_for,
    iter_disks,
    iter_probe_template,
    iter_strain,
    iter_strain_from_peaks,
    origin_or_none,
    probe_template,
    read_peaks,
    run_disks,
    run_strain,
    strain_from_peaks,
)
from .calibrate import CalibrationParams, CalibrationResult, iter_calibrate, run_calibrate
from .classify import (
    ClassificationParams,
    ClassificationResult,
    iter_classification,
    run_classification,
)
from .imaging import (
    DPCParams,
    DPCResult,
    VirtualImageParams,
    VirtualResult,
    detector_from_params,
    detector_params,
    dpc_from_com,
    iter_com,
    iter_dpc,
    iter_virtual,
    run_dpc,
    run_virtual,
)
from .params import (
    ACOMParams,
    DiskDetectionParams,
    NNDiskParams,
    ParameterError,
    ProbeSource,
    StrainParams,
)
from .phase import PHASE_METHODS, PhaseParams, PhaseResult, iter_phase, run_phase
from .recipe import InputRef, Recipe, recipe_of, script_from_file
from .session import Session, SessionEntry

__all__ = [
    "PHASE_METHODS",
    "ACOMParams",
    "ACOMRun",
    "CalibrationParams",
    "CalibrationResult",
    "ClassificationParams",
    "ClassificationResult",
    "DPCParams",
    "DPCResult",
    "DiskDetectionParams",
    "DisksResult",
    "InputRef",
    "NNDiskParams",
    "ParameterError",
    "PatternCheck",
    "PhaseParams",
    "PhaseResult",
    "ProbeSource",
    "Recipe",
    "Session",
    "SessionEntry",
    "StrainParams",
    "StrainResult",
    "VirtualImageParams",
    "VirtualResult",
    "acom_calibration",
    "acom_match_maps",
    "check_from_run",
    "detect_pattern",
    "detect_pattern_nn",
    "detector_from_params",
    "detector_params",
    "detector_reach_inv_A",
    "dpc_from_com",
    "find_lattice_for",
    "iter_acom",
    "iter_acom_pattern",
    "iter_calibrate",
    "iter_classification",
    "iter_com",
    "iter_disks",
    "iter_dpc",
    "iter_phase",
    "iter_plans",
    "iter_probe_template",
    "iter_strain",
    "iter_strain_from_peaks",
    "iter_virtual",
    "origin_or_none",
    "probe_template",
    "read_acom",
    "read_peaks",
    "recipe_of",
    "run_acom",
    "run_calibrate",
    "run_classification",
    "run_disks",
    "run_dpc",
    "run_phase",
    "run_strain",
    "run_virtual",
    "script_from_file",
    "strain_from_peaks",
]
