"""The calibration workflow: origin per pattern -> descan fit, ring ellipse / pixel size, DPC
rotation, with a recipe like every other workflow (the CLI's ``calibrate``, the Calibration &
DPC dock's origin step and the demo call it)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.calibration import Calibration
from ..data.results import RealSpaceMap
from ..engine.jobs import Job, eager
from .bragg import _cube, _recipe
from .params import _check, _finite, _Params
from .recipe import Recipe, _Result


@dataclass(frozen=True)
class CalibrationParams(_Params):
    """What to calibrate.

    Attributes
    ----------
    origin : {"disk", "com", "none"}
        Measure the origin of every pattern (bright-field disk centre or centre of mass).
    fit : {"plane", "mean"}
        Descan model fitted to the measured origins.
    ring_px : (r_min, r_max) or None
        Fit the ellipse of the ring between these radii (detector px) on the mean pattern.
    d_spacing_A : float or None
        The d-spacing of that ring (Angstrom): sets the detector pixel size (1/A).
    rotation : bool
        Fit the scan/detector rotation and flip from the DPC signal (curl minimisation).
    """

    origin: str = "disk"
    fit: str = "plane"
    ring_px: tuple[float, float] | None = None
    d_spacing_A: float | None = None
    rotation: bool = False

    def __post_init__(self):
        _check(self.origin in ("disk", "com", "none"), f"origin must be disk, com or none, got {self.origin!r}")
        _check(self.fit in ("plane", "mean"), f"fit must be plane or mean, got {self.fit!r}")
        if self.ring_px is not None:
            r = tuple(self.ring_px)
            _check(
                len(r) == 2 and all(_finite(v) for v in r) and 0 <= r[0] < r[1],
                f"ring_px must be (r_min, r_max) with 0 <= r_min < r_max, got {self.ring_px}",
            )
            object.__setattr__(self, "ring_px", (float(r[0]), float(r[1])))
        _check(
            self.d_spacing_A is None or (_finite(self.d_spacing_A) and self.d_spacing_A > 0),
            f"d_spacing_A must be > 0 Angstrom, got {self.d_spacing_A}",
        )
        _check(self.d_spacing_A is None or self.ring_px is not None, "a d-spacing needs the ring (ring_px)")


@dataclass(frozen=True, eq=False)
class CalibrationResult(_Result):
    """The calibration and what it was fitted from.

    ``origin`` is the measured origin per pattern (``origin_y, origin_x`` in detector px) and
    ``origin_fit`` its descan fit (:class:`~napari_4dstem.analysis.virtual.origin.OriginFit`); ``ring``
    a :class:`~napari_4dstem.analysis.virtual.calibration.RingFit`, ``rotation`` a
    :class:`~napari_4dstem.analysis.virtual.dpc.RotationFit` (each None when not asked for). ``base`` is
    the calibration the fits started from."""

    calibration: Calibration
    origin: RealSpaceMap | None
    origin_fit: Any
    ring: Any
    rotation: Any
    base: Calibration
    recipe: Recipe

    def objects(self) -> list:
        if self.origin is None:
            return []
        return [self.origin, self.origin_fit.to_map(self.origin.calibration)]

    def refit(self, fit: str) -> CalibrationResult:
        """The same measured origins with another descan model (no pass over the data); the
        ring and rotation are kept."""
        from ..analysis.virtual.origin import fit_origin_plane

        if self.origin is None:
            raise ValueError("no origin was measured")
        params = dataclasses.replace(self.recipe.params["calibrate"], fit=fit)
        ofit = fit_origin_plane(self.origin, method=fit)
        cal = ofit.to_calibration(self.base)
        if self.ring is not None:
            cal = self.ring.to_calibration(cal, d_spacing_A=params.d_spacing_A)
        if self.rotation is not None:
            cal = self.rotation.to_calibration(cal)
        recipe = dataclasses.replace(self.recipe, params={**self.recipe.params, "calibrate": params})
        return dataclasses.replace(self, calibration=cal, origin_fit=ofit, recipe=recipe)

    def calibration_dict(self) -> dict[str, Any]:
        """The calibration (origin map included) with the recipe that made it: what
        :meth:`save_json` writes and ``--calibration`` / :meth:`Calibration.from_dict` read."""
        return {**self.calibration.to_dict(include_origin_map=True), "recipe": self.recipe.to_dict()}

    def save_json(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the calibration as JSON (atomically), with its recipe."""
        from ..io._atomic import atomic_output

        with atomic_output(path, overwrite=overwrite) as tmp:
            Path(tmp).write_text(json.dumps(self.calibration_dict()))
        return Path(path)


def iter_calibrate(
    dc: Any,
    *,
    calibrate: CalibrationParams = CalibrationParams(),
    calibration: Calibration | None = None,
    source: Any = None,
    backend: Any = None,
) -> Job[CalibrationResult]:
    """Job: origin + descan fit, ring, rotation (as ``calibrate`` asks), one pass each."""
    from ..analysis.virtual.calibration import fit_ring
    from ..analysis.virtual.com import iter_center_of_mass
    from ..analysis.virtual.dpc import fit_dpc_rotation
    from ..analysis.virtual.origin import fit_origin_plane, iter_measure_origin

    cube, base, _ = _cube(dc, calibration)
    p = calibrate
    cal, origin, ofit, ring, rot = base, None, None, None, None
    if p.origin != "none":
        origin = yield from iter_measure_origin(cube, method=p.origin, calibration=base, backend=backend)
        ofit = fit_origin_plane(origin, method=p.fit)
        cal = ofit.to_calibration(cal)
    if p.ring_px is not None:
        mean = yield from cube.iter_reduce_patterns("mean")
        ring = fit_ring(mean, radius_range_px=p.ring_px, center_px=cal.origin_px)
        cal = ring.to_calibration(cal, d_spacing_A=p.d_spacing_A)
    if p.rotation:
        com = yield from iter_center_of_mass(cube, calibration=cal, backend=backend)
        rot = fit_dpc_rotation(com, calibration=cal, descan="calibration" if cal.origin_map_px is not None else "plane")
        cal = rot.to_calibration(cal)
    recipe = _recipe("calibrate", dc, {"calibrate": p}, calibration, source)
    return CalibrationResult(cal, origin, ofit, ring, rot, base, recipe)


run_calibrate = eager(iter_calibrate, "Calibration of a dataset.", name="run_calibrate")
