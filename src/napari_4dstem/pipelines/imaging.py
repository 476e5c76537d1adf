"""The imaging workflows: virtual images (several detectors, one pass) and centre of mass ->
DPC -> iDPC, with recipes like the Bragg and ACOM workflows."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..data.calibration import Calibration
from ..data.results import RealSpaceMap
from ..engine.jobs import Job, eager
from .bragg import _cube, _recipe
from .params import ParameterError, _check, _finite, _Params
from .recipe import _ARRAY_MASK, Recipe, _Result

NAN_POLICIES = ("raise", "propagate", "omit")


def detector_params(det: Any) -> dict[str, Any]:
    """A detector as the plain dict a recipe stores (a mask: the ``.npy`` file it came from,
    given as ``{"kind": "mask", "path": ...}``; a mask only in memory cannot be replayed)."""
    if isinstance(det, Mapping):
        return dict(det)
    d = det.to_params()
    if d["kind"] == "combined":  # its parts as a recipe stores them (a mask: its file)
        return {**d, "detectors": [detector_params(c) for c in det.detectors]}
    if d["kind"] == "mask":
        return {"kind": "mask", "path": getattr(det, "path", None) or _ARRAY_MASK, "name": d["name"]}
    return d


def detector_from_params(d: Mapping[str, Any]) -> Any:
    """The Detector of a recipe's dict (the inverse of :func:`detector_params`)."""
    from ..analysis.virtual import detectors as D

    kind = d.get("kind")
    try:
        if kind == "point":
            return D.PointDetector(tuple(d["center_px"]))
        if kind == "disk":
            return D.DiskDetector(tuple(d["center_px"]), d["radius_px"])
        if kind == "annulus":
            return D.AnnulusDetector(tuple(d["center_px"]), d["inner_px"], d["outer_px"])
        if kind == "rectangle":
            return D.RectangleDetector(tuple(d["rows"]), tuple(d["cols"]))
        if kind == "wedge":
            return D.WedgeDetector(tuple(d["center_px"]), d["inner_px"], d["outer_px"], d["start_deg"], d["end_deg"])
        if kind == "grid":
            return D.GridDetector(
                tuple(d["center_px"]), d["pitch_px"], d["radius_px"], tuple(d["shape"]), d.get("rotation_deg", 0.0)
            )
        if kind == "combined":
            return D.CombinedDetector(tuple(detector_from_params(c) for c in d["detectors"]), tuple(d["weights"]))
        if kind == "mask":
            if d.get("path") in (None, _ARRAY_MASK):
                raise ParameterError("a mask detector held only in memory cannot be replayed: save it as .npy")
            return D.mask_from_file(d["path"], name=d.get("name") or "mask")
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, ParameterError):
            raise
        raise ParameterError(f"bad {kind} detector {dict(d)}: {e}") from None
    raise ParameterError(f"unknown detector kind {kind!r}")


@dataclass(frozen=True)
class VirtualImageParams(_Params):
    """Virtual images.

    Attributes
    ----------
    detectors : dicts of :func:`detector_params` (point, disk, annulus, rectangle in detector
        pixels ``_px``; mask: a ``.npy`` path)
    names : channel names (None: the detector kinds)
    descan : shift every detector with the calibrated origin map
    nan_policy : {"raise", "propagate", "omit"}
    """

    detectors: tuple = ()
    names: tuple[str, ...] | None = None
    descan: bool = False
    nan_policy: str = "raise"

    def __post_init__(self):
        dets = tuple(detector_params(d) for d in self.detectors)
        _check(len(dets) >= 1, "give at least one detector")
        for d in dets:
            if d.get("path") != _ARRAY_MASK:
                detector_from_params(d)  # validated once, here
        object.__setattr__(self, "detectors", dets)
        if self.names is not None:
            names = tuple(str(n) for n in self.names)
            _check(
                len(names) == len(dets) and len(set(names)) == len(names),
                f"need {len(dets)} distinct channel names, got {names}",
            )
            object.__setattr__(self, "names", names)
        _check(self.nan_policy in NAN_POLICIES, f"nan_policy must be one of {NAN_POLICIES}, got {self.nan_policy!r}")

    def to_dict(self) -> dict[str, Any]:
        # detectors keyed "0", "1", ...: EMD metadata (and py4DSTEM's reader) hold dicts, not lists of dicts
        d = super().to_dict()
        d["detectors"] = {str(i): dict(x) for i, x in enumerate(self.detectors)}
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        dets = d.get("detectors", ())
        if isinstance(dets, Mapping):
            dets = [dets[k] for k in sorted(dets, key=int)]
        d["detectors"] = tuple(dict(x) for x in dets)
        return super().from_dict(d)


@dataclass(frozen=True, eq=False)
class VirtualResult(_Result):
    """Virtual images: one stack ``(scan_y, scan_x, n_detectors)``; saved as one map per detector."""

    stack: RealSpaceMap
    recipe: Recipe

    def objects(self) -> list:
        s = self.stack
        return [
            RealSpaceMap(
                s.data[..., k],
                name=f"virtual_{n}",
                units=s.units,
                calibration=s.calibration,
                params={**s.params, "detectors": None, "detector": s.params["detectors"][n]},
            )
            for k, n in enumerate(s.channels)
        ]

    def select(self, name: str, *, own_name: bool = False) -> VirtualResult:
        """The result of one detector (channel ``name``), with a recipe that makes only it.

        ``own_name``: the channel named as that detector alone names it (its kind) and a recipe
        without channel names, as :func:`run_virtual` of that one detector returns it.
        """
        s = self.stack
        try:
            k = list(s.channels).index(name)
        except ValueError:
            raise ParameterError(f"no detector named {name!r}; the result has {list(s.channels)}") from None
        v = self.recipe.params["virtual"]
        one = dataclasses.replace(v, detectors=(v.detectors[k],), names=None if own_name else (name,))
        channel = str(v.detectors[k]["kind"]) if own_name else name
        params = {**s.params, "detectors": {channel: s.params["detectors"][name]}}
        stack = RealSpaceMap(
            s.data[..., k : k + 1],
            name=s.name,
            units=s.units,
            channels=(channel,),
            calibration=s.calibration,
            params=params,
        )
        recipe = dataclasses.replace(self.recipe, params={**self.recipe.params, "virtual": one})
        return VirtualResult(stack, recipe)

    @property
    def image(self) -> RealSpaceMap:
        """The first detector's image (the only one of a one-detector result)."""
        return self.objects()[0]


def iter_virtual(
    dc: Any,
    *,
    virtual: VirtualImageParams,
    calibration: Calibration | None = None,
    source: Any = None,
    backend: Any = None,
    detectors: Any = None,
    partial: bool = False,
    kernel: str = "numba",
) -> Job[VirtualResult]:
    """Job: the virtual images of every detector of ``virtual`` in one pass over the data.

    ``detectors``: the Detector objects of ``virtual.detectors`` themselves, for mask detectors
    held only in memory (e.g. drawn in napari); the result's recipe then cannot be replayed.
    ``partial``: the first image so far rides on the Progress steps (it fills in while the job runs);
    a callable ``partial(sums, done)`` makes that map (``iter_virtual_images``).
    ``kernel``: ``"numpy"`` sums without numba (``iter_virtual_images``; same numbers for integer data)."""
    from ..analysis.virtual.images import iter_virtual_images

    cube, cal, _ = _cube(dc, calibration)
    if detectors is None:
        dets = [detector_from_params(d) for d in virtual.detectors]
    else:
        dets = list(detectors)
        if [detector_params(d) for d in dets] != list(virtual.detectors):
            raise ParameterError("the detectors given are not the ones of the parameters")
    stack = yield from iter_virtual_images(
        cube,
        dets,
        calibration=cal,
        descan=virtual.descan,
        nan_policy=virtual.nan_policy,
        names=virtual.names,
        backend=backend,
        partial=partial,
        kernel=kernel,
    )
    return VirtualResult(stack, _recipe("virtual", dc, {"virtual": virtual}, calibration, source))


run_virtual = eager(iter_virtual, "Virtual images of a dataset.", name="run_virtual")


@dataclass(frozen=True)
class DPCParams(_Params):
    """Centre of mass -> DPC -> iDPC.

    Attributes
    ----------
    rotation_deg : scan/detector rotation, degrees (None: the calibration's)
    flip : detector k_x mirrored (None: the calibration's)
    auto_rotation : fit rotation and flip by curl minimisation (overrides the two above)
    descan : {"plane", "mean", "calibration", "none"} how the origin is removed
    units : {"px", "mrad", "1/A"} units of the shifts
    bf_mask_radius_px : COM inside this radius around the origin only (None: whole detector)
    regularization : iDPC high-pass, (cycles per scan pixel)^2
    """

    rotation_deg: float | None = None
    flip: bool | None = None
    auto_rotation: bool = False
    descan: str = "plane"
    units: str = "px"
    bf_mask_radius_px: float | None = None
    regularization: float = 0.0

    def __post_init__(self):
        _check(
            self.rotation_deg is None or _finite(self.rotation_deg),
            f"rotation must be finite degrees, got {self.rotation_deg}",
        )
        _check(
            self.descan in ("plane", "mean", "calibration", "none"),
            f"descan must be plane, mean, calibration or none, got {self.descan!r}",
        )
        _check(self.units in ("px", "mrad", "1/A"), f"units must be px, mrad or 1/A, got {self.units!r}")
        _check(
            self.bf_mask_radius_px is None or (_finite(self.bf_mask_radius_px) and self.bf_mask_radius_px > 0),
            f"bright-field mask radius must be > 0 px, got {self.bf_mask_radius_px}",
        )
        _check(
            _finite(self.regularization) and self.regularization >= 0,
            f"iDPC regularization must be >= 0 (cycles/px)^2, got {self.regularization}",
        )


@dataclass(frozen=True, eq=False)
class DPCResult(_Result):
    """Centre of mass, DPC in scan axes and the iDPC phase (and the rotation used).

    ``rotation_confidence`` is the fit's :attr:`~napari_4dstem.analysis.virtual.dpc.RotationFit.confidence`
    with ``auto_rotation`` (NaN when the rotation was given).
    """

    com: RealSpaceMap
    dpc: RealSpaceMap
    phase: RealSpaceMap
    rotation_deg: float
    flip: bool
    recipe: Recipe
    rotation_confidence: float = float("nan")

    def objects(self) -> list:
        return [self.com, self.dpc, self.phase]


def dpc_from_com(com: RealSpaceMap, params: DPCParams, *, recipe: Recipe | None = None) -> DPCResult:
    """DPC and iDPC from a centre-of-mass map (no pass over the data: the live part of the dock)."""
    from ..analysis.virtual.dpc import dpc, fit_dpc_rotation, idpc

    rotation, flip, confidence = params.rotation_deg, params.flip, float("nan")
    if params.auto_rotation:
        fit = fit_dpc_rotation(com, descan=params.descan)
        rotation, flip, confidence = fit.rotation_deg, fit.flip, fit.confidence
    d = dpc(com, rotation_deg=rotation, flip=flip, descan=params.descan, units=params.units)
    phase = idpc(d, regularization=params.regularization)
    cal = com.calibration
    rot = float(rotation if rotation is not None else (cal.rotation_deg or 0.0))
    fl = bool(flip if flip is not None else cal.flip)
    recipe = recipe if recipe is not None else Recipe("dpc", _no_input(), {"dpc": params})
    if recipe.params.get("dpc") != params:
        import dataclasses

        recipe = dataclasses.replace(recipe, params={**recipe.params, "dpc": params})
    return DPCResult(com, d, phase, rot, fl, recipe, confidence)


def _no_input():
    from .recipe import InputRef

    return InputRef(None)


def iter_com(dc: Any, params: DPCParams, *, calibration: Calibration | None = None, backend: Any = None) -> Job:
    """Job: the centre of mass of every pattern (inside the bright-field mask of ``params``)."""
    from ..analysis.virtual.com import iter_center_of_mass
    from ..analysis.virtual.detectors import DiskDetector

    cube, cal, det_shape = _cube(dc, calibration)
    det = None
    if params.bf_mask_radius_px is not None:
        center = cal.origin_px or ((det_shape[0] - 1) / 2, (det_shape[1] - 1) / 2)
        det = DiskDetector(center, params.bf_mask_radius_px)
    return (yield from iter_center_of_mass(cube, detector=det, calibration=cal, backend=backend))


def iter_dpc(
    dc: Any,
    *,
    dpc: DPCParams | None = None,
    calibration: Calibration | None = None,
    com: RealSpaceMap | None = None,
    source: Any = None,
    backend: Any = None,
) -> Job[DPCResult]:
    """Job: centre of mass (skipped when ``com`` is given) -> DPC -> iDPC."""
    dpc = dpc or DPCParams()
    if com is None:
        com = yield from iter_com(dc, dpc, calibration=calibration, backend=backend)
    return dpc_from_com(com, dpc, recipe=_recipe("dpc", dc, {"dpc": dpc}, calibration, source))


run_dpc = eager(iter_dpc, "Centre of mass and DPC of a dataset.", name="run_dpc")
