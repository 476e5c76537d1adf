"""The Bragg workflows: probe template -> disks (template correlation or the network) -> origin
-> Bragg vector map; then lattice -> per-pattern fit -> true strain."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.calibration import Calibration
from ..data.results import BraggPeaks, DiffractionImage, RealSpaceMap
from ..engine.jobs import Job, eager, run_job
from ..errors import FileFormatError, Napari4DSTEMError
from .params import DiskDetectionParams, NNDiskParams, ProbeSource, StrainParams
from .recipe import _ARRAY_PROBE, InputRef, Recipe, _Result


@dataclass(frozen=True, eq=False)
class DisksResult(_Result):
    """Bragg disks of every pattern and the Bragg vector map.

    ``origin`` is the origin measured from the central beam when the calibration has none
    (else None: the calibration's origin was used)."""

    peaks: BraggPeaks
    bvm: DiffractionImage
    origin: RealSpaceMap | None
    recipe: Recipe

    def objects(self) -> list:
        return [self.peaks, self.bvm] + ([self.origin] if self.origin is not None else [])


def _as_probe(probe: Any) -> tuple[ProbeSource | None, Any]:
    """(source for the recipe, image or None)."""
    if probe is None:
        return ProbeSource(), None
    if isinstance(probe, ProbeSource):
        return probe, probe.load()
    if isinstance(probe, str | os.PathLike):
        src = ProbeSource.parse(str(probe))
        return src, src.load()
    return None, probe  # an array: reproducible only by the caller


#: what the disk detection imports on first use (seconds under load)
_DISK_MODULES = ("napari_4dstem.analysis.bragg.probe", "napari_4dstem.analysis.bragg.disks")


def _iter_probe(probe: Any) -> Job[tuple[ProbeSource | None, Any]]:
    """:func:`_as_probe` as a job: a probe file is read in a thread (Cancel points while it
    reads)."""
    if isinstance(probe, ProbeSource | str | os.PathLike):
        from ..engine.jobs import iter_in_thread

        return (yield from iter_in_thread(_as_probe, probe, message="reading the probe"))
    return _as_probe(probe)


def iter_probe_template(dc: Any, probe: Any = None, *, kernel: str = "plain") -> Job:
    """Job: the correlation template from a probe image (array, DiffractionImage, ProbeSource)
    or, with ``probe=None``, from the bright-field disk of the mean pattern."""
    from ..engine.jobs import iter_imports

    # first use: scipy.optimize and the kernels' modules take seconds under load; reading a
    # probe file too (the whole file's metadata): in a thread, with Cancel points (UX 20)
    yield from iter_imports(_DISK_MODULES, "loading the disk detection...")
    from ..analysis.bragg.probe import make_template, template_from_bf_disk

    _, image = yield from _iter_probe(probe)
    if image is not None:
        return make_template(image, kind=kernel)
    mean = yield from dc.iter_reduce_patterns("mean")
    return template_from_bf_disk(mean, kind=kernel)


def probe_template(dc: Any, probe: Any = None, *, kernel: str = "plain") -> Any:
    """:func:`iter_probe_template` run to the end."""
    return run_job(iter_probe_template(dc, probe, kernel=kernel))


def detect_pattern(pattern: np.ndarray, template: Any, detection: DiskDetectionParams) -> np.ndarray:
    """Bragg disks of one pattern ``(k_y, k_x)`` (the live preview of the widgets): rows
    ``(qy, qx, intensity, correlation)``, shape ``(n, 4)``, strongest first."""
    from ..analysis.bragg.disks import detect_in_stack

    found, count = detect_in_stack(np.asarray(pattern)[None], template, parallel=False, **detection.detect_kwargs())
    return found[0, : int(count[0])]


def detect_pattern_nn(pattern: np.ndarray, probe: Any, detection: NNDiskParams) -> tuple[DiffractionImage, np.ndarray]:
    """Bragg disks of one pattern ``(k_y, k_x)`` found by the network with the keywords of a
    whole-scan run (:func:`iter_disks` with ``detection``), for the widgets' live overlay:
    ``(predicted image, rows)``, rows ``(qy, qx, intensity, correlation)`` as the run's peaks,
    shape ``(n, 4)``. ``probe``: as for :func:`iter_disks` (an image, a ProbeSource, a path)."""
    from ..nn.infer import predict_pattern

    _, image = _as_probe(probe)
    if image is None:
        raise Napari4DSTEMError("NN disk detection needs a vacuum probe image (the samples have 'probe')")
    img, found = predict_pattern(np.asarray(pattern), probe=image, **detection.nn_kwargs())
    rows = np.stack([found[k] for k in ("qy", "qx", "intensity", "correlation")], axis=1).reshape(-1, 4)
    return img, rows


def origin_or_none(peaks: BraggPeaks, calibration: Calibration | None = None) -> RealSpaceMap | None:
    """The origin measured from the central beam of every pattern when ``calibration`` (default
    the peaks') has none; None when it has one (then it is used)."""
    from ..analysis.bragg.disks import origin_from_peaks

    cal = calibration or peaks.calibration
    if cal.origin_px is not None or cal.origin_map_px is not None:
        return None
    return origin_from_peaks(peaks)


def _cube(dc: Any, calibration: Calibration | None, peaks: BraggPeaks | None = None):
    """(DataCube or None, calibration, detector shape); ``dc`` may be None when ``peaks`` are given."""
    if dc is None:
        if peaks is None:
            raise Napari4DSTEMError("give a datacube, or the Bragg peaks (peaks=...)")
        shape = peaks.params.get("detector_shape")
        if shape is None:
            raise Napari4DSTEMError("these Bragg peaks do not record their detector shape")
        return None, calibration or peaks.calibration, tuple(int(v) for v in shape)
    from ..analysis.virtual.images import as_datacube

    cube, cal = as_datacube(dc, calibration)
    return cube, cal, tuple(cube.shape[2:])


def _recipe(workflow, dc, params, calibration, source) -> Recipe:
    if isinstance(source, InputRef):
        ref = source
    else:
        ref = InputRef.of(source if source is not None else getattr(dc, "source", None))
    cal = None if calibration is None else calibration.to_dict()
    return Recipe(workflow, ref, params, cal)


def _find_peaks_job(cube, cal, detection, probe, *, device, backend, template=None, scan_chunk=None):
    if isinstance(detection, NNDiskParams):
        from ..engine.jobs import iter_imports

        # torch's first import: 5-15 s, in a thread with Cancel points (UX 20)
        yield from iter_imports(("napari_4dstem.nn.infer", "torch"), "loading torch...")
        from ..nn.infer import iter_find_bragg_disks_nn

        _, image = yield from _iter_probe(probe)
        if image is None:
            raise Napari4DSTEMError("NN disk detection needs a vacuum probe (probe=ProbeSource(file, node))")
        peaks = yield from iter_find_bragg_disks_nn(
            cube, probe=image, device=device, scan_chunk=scan_chunk, **detection.nn_kwargs()
        )
        return dataclasses.replace(peaks, calibration=cal)
    from ..analysis.bragg.disks import iter_find_bragg_disks

    if template is None:
        template = yield from iter_probe_template(cube, probe, kernel=detection.kernel)
    peaks = yield from iter_find_bragg_disks(
        cube,
        template=template,
        calibration=cal,
        device=device,
        backend=backend,
        scan_chunk=scan_chunk,
        **detection.detect_kwargs(),
    )
    return peaks


def _detection_params(detection, probe) -> dict[str, Any]:
    src, _ = _as_probe(probe)
    key = "nn" if isinstance(detection, NNDiskParams) else "disks"
    return {key: detection, "probe": src if src is not None else ProbeSource(None, _ARRAY_PROBE)}


def iter_disks(
    dc: Any,
    *,
    detection: DiskDetectionParams | NNDiskParams | None = None,
    probe: Any = None,
    calibration: Calibration | None = None,
    peaks: BraggPeaks | None = None,
    template: Any = None,
    source: Any = None,
    device: str | None = None,
    backend: Any = None,
    scan_chunk: tuple[int, int] | None = None,
) -> Job[DisksResult]:
    """Job: probe template -> Bragg disks of every pattern -> origin -> Bragg vector map.

    Parameters
    ----------
    dc : DataCube or 4D array
    detection : DiskDetectionParams (template correlation, default) or NNDiskParams (network)
    probe : ProbeSource, "FILE[:NODE]", probe image, or None (the bright-field disk; CC only)
    calibration : Calibration, optional (default the datacube's)
    peaks : BraggPeaks already found with these settings (the detection is skipped)
    template : the ProbeTemplate of ``probe`` and ``detection.kernel`` when already made
    source : input file for the recipe (default ``dc.source``)
    device, backend : where the work runs (not part of the recipe)
    scan_chunk : ``(rows, cols)`` of scan positions per block (progress, the disk-count map so
        far and Cancel come between blocks; not part of the recipe: the result does not depend
        on it)
    """
    from ..analysis.bragg.disks import bragg_vector_map

    detection = detection or DiskDetectionParams()
    cube, cal, det_shape = _cube(dc, calibration, peaks)
    if peaks is None:
        peaks = yield from _find_peaks_job(
            cube, cal, detection, probe, device=device, backend=backend, template=template, scan_chunk=scan_chunk
        )
    origin = origin_or_none(peaks)
    bvm = bragg_vector_map(peaks, origin=origin, shape=det_shape)
    recipe = _recipe("disks", dc, _detection_params(detection, probe), calibration, source)
    return DisksResult(peaks, bvm, origin, recipe)


run_disks = eager(iter_disks, "Bragg disks of a dataset.", name="run_disks")


def read_peaks(path: str | os.PathLike, name: str | None = None) -> BraggPeaks:
    """The Bragg peaks of an EMD file (from ``disks``, ``infer``, ``strain`` or ``acom``)."""
    from ..io import emd

    objs = emd.read(path)
    for v in objs.values():
        if hasattr(v, "close"):
            v.close()
    hits = [v for k, v in objs.items() if isinstance(v, BraggPeaks) and (name is None or k == name)]
    if not hits:
        raise FileFormatError(path, "no Bragg peaks in this file" + (f" named {name!r}" if name else ""))
    return hits[0]


# ------------------------------------------------------------------------------------------
# strain
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class StrainResult(_Result):
    """Lattice, per-pattern lattice fits and the true-strain maps (with the peaks they rest on)."""

    peaks: BraggPeaks
    lattice: Any  # analysis.bragg.lattice.Lattice
    fit: Any  # analysis.bragg.lattice.LatticeFit
    strain: Any  # analysis.bragg.strain.StrainMap
    recipe: Recipe
    bvm: DiffractionImage | None = None

    def objects(self) -> list:
        return [*self.strain.maps(), self.fit.to_map(), self.peaks] + ([self.bvm] if self.bvm is not None else [])


def find_lattice_for(peaks: BraggPeaks, params: StrainParams, bvm: DiffractionImage | None = None):
    """The lattice of ``params`` (your g1/g2, refined unless told not to) on the Bragg vector map."""
    from ..analysis.bragg.disks import bragg_vector_map
    from ..analysis.bragg.lattice import Lattice, find_lattice

    if params.g1 is not None and not params.refine_lattice:
        return Lattice(params.g1, params.g2, params={"method": "given", "refined": False})
    if bvm is None:
        bvm = bragg_vector_map(peaks, origin=origin_or_none(peaks))
    return find_lattice(bvm, g1=params.g1, g2=params.g2, refine=params.refine_lattice)


def iter_strain_from_peaks(
    peaks: BraggPeaks,
    strain: StrainParams | None = None,
    *,
    bvm: DiffractionImage | None = None,
    lattice: Any = None,
    recipe: Recipe | None = None,
    source: Any = None,
) -> Job[StrainResult]:
    """Job: lattice -> per-pattern lattice fit -> true strain, on Bragg peaks (from any detector:
    template correlation, or the network via ``napari-4dstem infer``).

    ``lattice`` (an :class:`~napari_4dstem.analysis.bragg.lattice.Lattice`) skips the lattice search;
    ``source`` is the peaks file for the recipe. Progress (and Cancel) after each pass of the
    lattice fit (:func:`~napari_4dstem.analysis.bragg.lattice.iter_fit_lattice`)."""
    from ..analysis.bragg.lattice import iter_fit_lattice
    from ..analysis.bragg.strain import strain_from_lattice

    strain = strain or StrainParams()
    lat = lattice if lattice is not None else find_lattice_for(peaks, strain, bvm)
    fit = yield from iter_fit_lattice(peaks, lat, weights=strain.fit_weights)
    sm = strain_from_lattice(
        fit, reference=strain.reference, frame_deg=strain.frame_deg, max_residual_px=strain.max_residual_px
    )
    if recipe is None:
        ref = source if isinstance(source, InputRef) else InputRef.of(source, kind="peaks")
        recipe = Recipe("strain", ref, {"strain": strain})
    else:
        recipe = dataclasses.replace(recipe, workflow="strain", params={**recipe.params, "strain": strain})
    return StrainResult(peaks, lat, fit, sm, recipe, bvm)


strain_from_peaks = eager(iter_strain_from_peaks, "Strain from Bragg peaks: lattice, per-pattern fit, true strain.")


def iter_strain(
    dc: Any,
    *,
    detection: DiskDetectionParams | NNDiskParams | None = None,
    probe: Any = None,
    strain: StrainParams | None = None,
    calibration: Calibration | None = None,
    peaks: BraggPeaks | None = None,
    source: Any = None,
    device: str | None = None,
    backend: Any = None,
) -> Job[StrainResult]:
    """Job: :func:`iter_disks`, then :func:`strain_from_peaks` (parameters as those)."""
    disks = yield from iter_disks(
        dc,
        detection=detection,
        probe=probe,
        calibration=calibration,
        peaks=peaks,
        source=source,
        device=device,
        backend=backend,
    )
    return strain_from_peaks(disks.peaks, strain, bvm=disks.bvm, recipe=disks.recipe)


run_strain = eager(iter_strain, "Strain map of a dataset.", name="run_strain")
