"""The orientation-mapping workflow (ACOM): disks -> origin -> plans -> matching; the check of
one pattern; reading a saved map back with every top-N match."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.calibration import Calibration
from ..data.results import BraggPeaks, RealSpaceMap
from ..engine.jobs import Job, Progress, as_part, run_job
from ..errors import CalibrationError, FileFormatError
from .bragg import (
    _cube,
    _detection_params,
    _find_peaks_job,
    _recipe,
    detect_pattern,
    origin_or_none,
)
from .params import ACOMParams, DiskDetectionParams, NNDiskParams
from .recipe import InputRef, Recipe, _Result


@dataclass(frozen=True, eq=False)
class ACOMRun(_Result):
    """An orientation map with the peaks and plans it came from.

    ``save`` writes the maps of the best match (Euler, orientation, correlation, reliability,
    phase, grains, IPF x/y/z RGB), every match of the top N (``acom_matches_*`` stacks) and the
    peaks; :func:`read_acom` rebuilds the :class:`~napari_4dstem.analysis.acom.result.ACOMResult`."""

    result: Any  # analysis.acom.result.ACOMResult
    peaks: BraggPeaks
    plans: tuple
    k_max_inv_A: float
    recipe: Recipe

    def objects(self) -> list:
        return [*self.result.to_maps(), *acom_match_maps(self.result), self.peaks]


def acom_match_maps(res: Any) -> list[RealSpaceMap]:
    """Every match of the top N as stacks over the scan (what :func:`read_acom` reads back)."""
    n = res.orientation.shape[2]
    cal = res.calibration
    params = {**res.params, "crystals": [c.name for c in res.crystals], "n_matches": n}
    tag = [f"m{m}" for m in range(n)]
    return [
        RealSpaceMap(
            res.orientation.reshape(*res.scan_shape, n * 9),
            name="acom_matches_orientation",
            channels=tuple(f"{t}_U{i}{j}" for t in tag for i in range(1, 4) for j in range(1, 4)),
            calibration=cal,
            params=params,
        ),
        RealSpaceMap(
            res.correlation, name="acom_matches_correlation", channels=tuple(tag), calibration=cal, params=params
        ),
        RealSpaceMap(
            res.phase.astype(np.int32), name="acom_matches_phase", channels=tuple(tag), calibration=cal, params=params
        ),
        RealSpaceMap(
            res.n_matched.astype(np.int32),
            name="acom_matches_n_matched",
            channels=tuple(tag),
            calibration=cal,
            params=params,
        ),
        RealSpaceMap(
            res.residual_inv_A,
            name="acom_matches_residual",
            units="1/A",
            channels=tuple(tag),
            calibration=cal,
            params=params,
        ),
        RealSpaceMap(
            np.stack([res.reliability, res.phase_reliability, res.n_peaks], -1),
            name="acom_matches_quality",
            channels=("reliability", "phase_reliability", "n_peaks"),
            calibration=cal,
            params=params,
        ),
    ]


def read_acom(path: str | os.PathLike, crystals: Any = None) -> Any:
    """The ACOMResult of a file written by :meth:`ACOMRun.save` (all top-N matches).

    ``crystals`` (names, CIF paths or Crystal objects) default to the names recorded in the file
    (bundled crystals; a CIF crystal needs its file)."""
    from ..analysis.acom.result import ACOMResult
    from ..analysis.crystal.structure import load_crystal
    from ..io import emd

    objs = emd.read(path)
    try:
        o = objs["acom_matches_orientation"]
    except KeyError:
        raise FileFormatError(path, "no ACOM result (acom_matches_* nodes) in this file") from None
    n = int(o.params["n_matches"])
    sy, sx = o.scan_shape
    recipe = o.params.get("recipe") or {}
    names = crystals or o.params.get("crystals") or (recipe.get("params", {}).get("acom", {}).get("crystals"))
    q = objs["acom_matches_quality"]
    params = {k: v for k, v in o.params.items() if k not in ("crystals", "n_matches")}
    return ACOMResult(
        orientation=o.data.reshape(sy, sx, n, 3, 3).copy(),
        correlation=objs["acom_matches_correlation"].data.copy(),
        phase=objs["acom_matches_phase"].data.astype(np.int64),
        reliability=q.channel("reliability").copy(),
        phase_reliability=q.channel("phase_reliability").copy(),
        n_peaks=q.channel("n_peaks").astype(np.int64),
        n_matched=objs["acom_matches_n_matched"].data.astype(np.int64),
        residual_inv_A=objs["acom_matches_residual"].data.copy(),
        crystals=tuple(load_crystal(c) for c in names),
        calibration=o.calibration,
        params=params,
    )


def acom_calibration(cal: Calibration, peaks: BraggPeaks) -> Calibration:
    """The calibration, with the origin measured from the peaks when none is calibrated
    (patterns without a central beam get the median origin)."""
    om = origin_or_none(peaks, cal)
    if om is None:
        return cal
    o = om.data
    if not np.isfinite(o).any():
        raise CalibrationError("no central beam found in the patterns: calibrate the origin first")
    return cal.replace(origin_map_px=np.where(np.isfinite(o), o, np.nanmedian(o, axis=(0, 1))))


def detector_reach_inv_A(cal: Calibration, detector_shape: tuple[int, int]) -> float:
    """The largest |g| (1/A) inside the detector in every direction from the (mean) origin."""
    oy, ox = cal.origin_px if cal.origin_px is not None else np.nanmedian(cal.origin_map_px, axis=(0, 1))
    ny, nx = detector_shape
    return float(min(oy, ox, ny - 1 - oy, nx - 1 - ox) * cal.k_pixel_size_in("1/A"))


def iter_plans(params: ACOMParams, energy_kev: float, k_max_inv_A: float, crystals: Any = None) -> Job[tuple]:
    """Job: the orientation plan of every crystal of ``params`` (or of the Crystal objects given)."""
    from ..analysis.acom.plan import iter_build_orientation_plan
    from ..analysis.crystal.structure import load_crystal

    crystals = [load_crystal(c) for c in (crystals or params.crystals)]
    plans = []
    for k, crystal in enumerate(crystals):
        job = iter_build_orientation_plan(crystal, **params.plan_kwargs(energy_kev, k_max_inv_A))
        plans.append((yield from as_part(job, k, len(crystals))))  # progress over all crystals
    yield Progress(len(crystals), len(crystals), "plan built")
    return tuple(plans)


def acom_calibration_missing(cal: Calibration) -> list[str]:
    """The calibration keys ACOM needs that ``cal`` lacks (empty: complete), for one error naming all."""
    missing = []
    if cal.k_pixel_size is None or cal.k_units == "px":
        missing.append("the detector pixel size (k_pixel_size with k_units '1/A' or 'mrad')")
    if cal.beam_energy_kev is None:
        missing.append("the beam energy (beam_energy_kev)")
    return missing


def iter_acom(
    dc: Any,
    *,
    acom: ACOMParams | None = None,
    detection: DiskDetectionParams | NNDiskParams | None = None,
    probe: Any = None,
    calibration: Calibration | None = None,
    peaks: BraggPeaks | None = None,
    plans: tuple | None = None,
    template: Any = None,
    source: Any = None,
    device: str | None = None,
    backend: Any = None,
    scan_chunk: tuple[int, int] | None = None,
) -> Job[ACOMRun]:
    """Job: Bragg disks (default :meth:`DiskDetectionParams.for_acom`) -> origin -> plans ->
    orientation (and phase) of every pattern.

    ``peaks`` and ``plans`` already made with these settings skip those steps; ``device`` picks
    where the correlation and the scoring run ("cpu": numba kernels, "cuda": torch);
    ``scan_chunk`` the scan block of the disk detection (as :func:`iter_disks`)."""
    from ..analysis.acom.matching import iter_match_orientations
    from ..analysis.crystal.structure import load_crystal

    acom = acom or ACOMParams()
    crystals = None if plans is not None else [load_crystal(c) for c in acom.crystals]  # bad CIFs fail first
    detection = detection or DiskDetectionParams.for_acom()
    cube, cal, det_shape = _cube(dc, calibration, peaks)
    if acom.energy_kev is not None:
        cal = cal.replace(beam_energy_kev=acom.energy_kev)
    missing = acom_calibration_missing(cal)
    if missing:
        raise CalibrationError(
            f"ACOM needs {' and '.join(missing)} in the calibration (CLI: --calibration FILE.json, e.g. "
            '{"k_pixel_size": 0.02, "k_units": "1/A", "beam_energy_kev": 300}; docs/acom.md, "Calibration JSON")'
        )
    if peaks is None:
        peaks = yield from _find_peaks_job(
            cube, cal, detection, probe, device=device, backend=backend, template=template, scan_chunk=scan_chunk
        )
    mcal = acom_calibration(cal, peaks)
    k_max = acom.k_max_inv_A or detector_reach_inv_A(mcal, det_shape)
    if plans is None:
        plans = yield from iter_plans(acom, mcal.beam_energy_kev, k_max, crystals)
    scoring = "numba" if device == "cpu" else device
    res = yield from iter_match_orientations(
        peaks, list(plans), calibration=mcal, device=scoring, **acom.match_kwargs()
    )
    if dc is None:  # from a peaks file: the detection is not part of the recipe
        ref = source if isinstance(source, InputRef) else InputRef.of(source, kind="peaks")
        recipe = Recipe("acom", ref, {"acom": acom}, None if calibration is None else calibration.to_dict())
    else:
        recipe = _recipe("acom", dc, {"acom": acom, **_detection_params(detection, probe)}, calibration, source)
    return ACOMRun(res, peaks, tuple(plans), float(k_max), recipe)


@dataclass(frozen=True, eq=False)
class PatternCheck:
    """The orientation check of one pattern: its peaks and its best matches."""

    iy: int
    ix: int
    peaks_yx: np.ndarray  # (n, 2) detector pixels
    intensity: np.ndarray  # (n,)
    origin_px: tuple[float, float] | None
    result: Any  # ACOMResult of a (1, 1) scan; None without an origin


def iter_acom_pattern(
    pattern: np.ndarray,
    *,
    iy: int,
    ix: int,
    template: Any,
    plans: tuple,
    calibration: Calibration,
    acom: ACOMParams | None = None,
    detection: DiskDetectionParams | None = None,
) -> Job[PatternCheck]:
    """Job: the ACOM of the one pattern at scan position ``(iy, ix)`` (the check before a run),
    with the same disk settings and origin rule as :func:`iter_acom`."""
    from ..analysis.acom.matching import iter_match_orientations
    from ..analysis.bragg.disks import origin_from_peaks

    acom = acom or ACOMParams()
    detection = detection or DiskDetectionParams.for_acom()
    cal = calibration
    yield Progress(0, 1, f"Bragg disks of pattern ({iy}, {ix})")
    rows = detect_pattern(pattern, template, detection)
    rec = {"qy": rows[:, 0], "qx": rows[:, 1], "intensity": rows[:, 2], "correlation": rows[:, 3]}
    one = BraggPeaks.from_lists([rec], (1, 1), calibration=cal, params={"detector_shape": list(np.shape(pattern))})
    if cal.origin_map_px is not None:
        origin = tuple(float(v) for v in cal.origin_map_px[iy, ix])
    elif cal.origin_px is not None:
        origin = tuple(float(v) for v in cal.origin_px)
    else:
        o = origin_from_peaks(one).data[0, 0]
        origin = (float(o[0]), float(o[1])) if np.isfinite(o).all() else None
    result = None
    if origin is not None:
        result = yield from iter_match_orientations(
            one,
            list(plans),
            calibration=cal.replace(origin_map_px=None),
            origin_px=origin,
            **acom.match_kwargs(),
        )
    return PatternCheck(iy, ix, rows[:, :2].copy(), rows[:, 2].copy(), origin, result)


def check_from_run(run: ACOMRun, iy: int, ix: int) -> PatternCheck:
    """The :class:`PatternCheck` of scan position ``(iy, ix)`` as the run found it: its peaks,
    origin and top-N matches, read from the run (no matching again; what the napari dock shows
    when the scan moves over a finished map)."""
    import dataclasses

    res = run.result
    sy, sx = res.scan_shape
    if not (0 <= iy < sy and 0 <= ix < sx):
        raise IndexError(f"scan position {(iy, ix)} is outside the map {(sy, sx)}")
    one = {}
    for f in dataclasses.fields(res):
        v = getattr(res, f.name)
        if isinstance(v, np.ndarray) and v.ndim >= 2 and v.shape[:2] == (sy, sx):
            one[f.name] = v[iy : iy + 1, ix : ix + 1]
    cal = res.calibration
    if cal.origin_map_px is not None:
        o = np.asarray(cal.origin_map_px[iy, ix], float)
        origin = (float(o[0]), float(o[1])) if np.isfinite(o).all() else None
        one["calibration"] = cal.replace(origin_map_px=None, origin_px=origin)
    else:
        origin = None if cal.origin_px is None else tuple(float(v) for v in cal.origin_px)
    sub = dataclasses.replace(res, **one)
    p = run.peaks.at(iy, ix)
    yx = np.stack([p["qy"], p["qx"]], axis=1).astype(float) if len(p["qy"]) else np.zeros((0, 2))
    return PatternCheck(iy, ix, yx, np.asarray(p["intensity"], float).copy(), origin, sub)


def run_acom(dc: Any, *, progress: Callable[[Progress], Any] | None = None, **kwargs: Any) -> ACOMRun:
    """:func:`iter_acom` run to the end."""
    return run_job(iter_acom(dc, **kwargs), progress)
