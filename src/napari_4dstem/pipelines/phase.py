"""The phase-retrieval workflow: parallax (tilt-corrected bright field), single-sideband or
iterative (multislice) ptychography, with a recipe like every other workflow (the CLI's
``phase`` and the Phase retrieval dock call it)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..analysis.phase.parallax import PARALLAX_VERSION, PARALLAX_VERSIONS
from ..data.calibration import Calibration
from ..engine.jobs import Job, Progress, eager
from .bragg import _cube, _recipe
from .params import _check, _finite, _Params
from .recipe import Recipe, _Result

logger = logging.getLogger(__name__)

PHASE_METHODS = ("parallax", "ssb", "wdd", "ptycho", "multislice-ptycho")


@dataclass(frozen=True)
class PhaseParams(_Params):
    """Phase retrieval of a calibrated dataset (beam energy, convergence angle, scan step and
    detector pixel size come from the calibration).

    Attributes
    ----------
    method : {"parallax", "ssb", "wdd", "ptycho", "multislice-ptycho"}
    defocus_A, astig_A, astig_angle_deg, cs_mm : probe aberrations (defocus > 0: underfocus)
    fit_defocus : measure defocus and astigmatism by parallax first (the probe update does not find
        a wrong defocus: docs/phase.md). None ("auto", the default): for the iterative methods when
        no defocus and no astigmatism is given, and the fit is used only when its defocus is
        distinguishable from 0 (``ParallaxResult.defocus_confident``: 3 standard errors and a
        bootstrap test of no aberrations), else the typed values are kept
        (in focus at 1e3-1e4 e/A^2 parallax measures noise); True: always the fit; False: the
        typed values. The maps' ``params["defocus_from"]`` say which was used
    upsample : parallax output grid factor
    regularization : SSB Wiener term: None (default) measures it from the data's noise and signal
        power (adapts to the dose); a number fixes it, relative to the largest side-band overlap
    wdd_regularization : WDD Wiener term (relative to the probe's largest |chi|^2)
    iterations, batch_size, modes, position_correction, device, threads : ptychography
    slices, slice_thickness_A : multislice ptychography
    loss, step_decay, full_batch : ptychography's noise model and steps (``"poisson"`` and
        ``full_batch=True`` for counted, low-dose data; see ``PtychoParams`` and docs/phase.md)
    pure_phase : ptychography: a pure phase object (``|O| = 1``; thin, weakly absorbing specimens)
    coarse_to_fine : ptychography: low-pass the object steps of the first half of the iterations at
        the aperture frequency (a low-dose setting; ``PtychoParams``)
    scan_region : ``(y0, y1, x0, x1)`` scan rows/columns analysed (None: the whole scan)
    parallax_version : the parallax refinement's algorithm (``iter_parallax``'s ``version``; default
        the newest, 3: the spectra of each image's periodic component and a stated 95 % defocus
        interval; 2: the rotation scanned over a half turn, the bootstrap drawn where the BF images
        vary most). A recipe saved before the field existed replays with version 1, the algorithm it
        was made with, so its auto-defocus decision does not change
    """

    method: str = "ssb"
    defocus_A: float = 0.0
    astig_A: float = 0.0
    astig_angle_deg: float = 0.0
    cs_mm: float = 0.0
    fit_defocus: bool | None = None
    upsample: int = 2
    regularization: float | None = None
    wdd_regularization: float = 1e-3
    iterations: int = 20
    batch_size: int = 64
    modes: int = 1
    position_correction: bool = False
    slices: int = 4
    slice_thickness_A: float = 10.0
    device: str = "cpu"
    threads: int | None = None
    scan_region: tuple[int, int, int, int] | None = None
    loss: str = "amplitude"
    step_decay: float = 0.0
    full_batch: bool = False
    pure_phase: bool = False
    coarse_to_fine: bool = False
    parallax_version: int = PARALLAX_VERSION

    def __post_init__(self):
        _check(self.method in PHASE_METHODS, f"method must be one of {PHASE_METHODS}, got {self.method!r}")
        for name in ("defocus_A", "astig_A", "astig_angle_deg", "cs_mm"):
            _check(_finite(getattr(self, name)), f"{name} must be a finite number, got {getattr(self, name)}")
        _check(isinstance(self.upsample, int) and self.upsample >= 1, f"upsample must be >= 1, got {self.upsample}")
        _check(
            self.regularization is None or (_finite(self.regularization) and self.regularization >= 0),
            f"SSB regularization must be None (measured) or >= 0, got {self.regularization}",
        )
        _check(
            _finite(self.wdd_regularization) and self.wdd_regularization > 0,
            f"WDD regularization must be > 0, got {self.wdd_regularization}",
        )
        for name in ("iterations", "batch_size", "modes", "slices"):
            v = getattr(self, name)
            _check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{name} must be >= 1, got {v}")
        _check(
            _finite(self.slice_thickness_A) and self.slice_thickness_A > 0,
            f"slice thickness must be > 0 A, got {self.slice_thickness_A}",
        )
        _check(
            self.parallax_version in PARALLAX_VERSIONS and not isinstance(self.parallax_version, bool),
            f"parallax_version must be one of {PARALLAX_VERSIONS}, got {self.parallax_version!r}",
        )
        _check(self.loss in ("amplitude", "poisson"), f"loss must be 'amplitude' or 'poisson', got {self.loss!r}")
        _check(_finite(self.step_decay) and self.step_decay >= 0, f"step decay must be >= 0, got {self.step_decay}")
        if self.scan_region is not None:
            r = tuple(int(v) for v in self.scan_region)
            _check(
                len(r) == 4 and 0 <= r[0] < r[1] and 0 <= r[2] < r[3],
                f"scan_region must be (y0, y1, x0, x1) with y0 < y1, x0 < x1, got {self.scan_region}",
            )
            object.__setattr__(self, "scan_region", r)

    @classmethod
    def from_dict(cls, d):
        """From a saved dict (a recipe); a dict without ``fit_defocus`` (recipes saved before the
        field existed, 6-7 Dec 2026) ran without the parallax fit: it replays so (False), not
        with the auto default that came later. A dict without ``parallax_version`` (saved before
        session 13) replays with version 1, the parallax refinement it was made with."""
        d = dict(d)
        d.setdefault("fit_defocus", False)
        d.setdefault("parallax_version", 1)
        return super().from_dict(d)

    def script(self) -> str:
        """The constructor call, ``parallax_version`` always spelled out: a script written now must
        replay this refinement, not whatever default a later version brings."""
        args = {**self.changed(), "parallax_version": int(self.parallax_version)}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in args.items())})"

    @property
    def fits_defocus(self) -> bool:
        """Whether the run measures defocus and astigmatism by parallax first (``fit_defocus``;
        None: the iterative methods when no defocus and no astigmatism is given)."""
        if self.fit_defocus is not None:
            return bool(self.fit_defocus)
        return self.method in ("ptycho", "multislice-ptycho") and self.defocus_A == 0 and self.astig_A == 0

    def ptycho_params(self, snapshot_every: int = 1):
        from ..analysis.phase.ptycho import PtychoParams

        multi = self.method == "multislice-ptycho"
        return PtychoParams(
            iterations=self.iterations,
            batch_size=self.batch_size,
            probe_modes=self.modes,
            position_correction=self.position_correction,
            slices=self.slices if multi else 1,
            slice_thickness_A=self.slice_thickness_A if multi else 0.0,
            device=self.device,
            threads=self.threads,
            snapshot_every=snapshot_every,
            loss=self.loss,
            step_decay=self.step_decay,
            full_batch=bool(self.full_batch),
            pure_phase=bool(self.pure_phase),
            coarse_to_fine=bool(self.coarse_to_fine),
        )


@dataclass(frozen=True, eq=False)
class PhaseResult(_Result):
    """The maps of a phase retrieval (``maps``: the phase, and for ptychography the probe), with
    the parallax fit (``parallax``: defocus, astigmatism; when it ran) and the ptychography run
    (``ptycho``: errors per iteration...; when it ran)."""

    maps: tuple
    parallax: Any
    ptycho: Any
    recipe: Recipe

    def objects(self) -> list:
        return list(self.maps)


def iter_phase(
    dc: Any,
    *,
    phase: PhaseParams = PhaseParams(),
    calibration: Calibration | None = None,
    source: Any = None,
    backend: Any = None,
    checkpoint: Any = None,
    snapshot_every: int = 1,
) -> Job[PhaseResult]:
    """Job: the phase of ``dc`` by ``phase.method``. ``checkpoint`` (ptychography: a .npz,
    resumed when present) and ``snapshot_every`` (ptychography: a
    :class:`~napari_4dstem.analysis.phase.ptycho.PtychoProgress` with the object every that many
    iterations, for live views) do not change the result."""
    from ..analysis.phase.parallax import iter_parallax
    from ..analysis.phase.probe import ProbeModel

    p = phase
    cube, cal, _ = _cube(dc, calibration)
    if p.scan_region is not None:
        y0, y1, x0, x1 = p.scan_region
        cube = cube.crop(scan_y=slice(y0, y1), scan_x=slice(x0, x1))
        cal = cube.calibration
    recipe = _recipe("phase", dc, {"phase": p}, calibration, source)
    probe = ProbeModel.from_calibration(
        cal, defocus_A=p.defocus_A, astig_A=p.astig_A, astig_angle_deg=p.astig_angle_deg, cs_mm=p.cs_mm
    )
    par = None
    defocus_from: dict = {"from": "typed"}
    if p.method == "parallax" or p.fits_defocus:
        par = yield from iter_parallax(
            cube, probe=probe, calibration=cal, upsample=p.upsample, version=p.parallax_version
        )
        if p.method == "parallax":
            return PhaseResult((par.image,), par, None, recipe)
        fitted = dict(defocus_A=par.defocus_A, defocus_se_A=par.defocus_se_A, confident=par.defocus_confident)
        if par.defocus_interval_A is not None:  # version 3 states one
            fitted["defocus_interval_A"] = list(par.defocus_interval_A)
        if p.fit_defocus is None and not par.defocus_confident:
            # auto: a fit not distinguishable from 0 is noise (in focus at low dose), one beyond the
            # trusted range (a probe wider than the field) a wrong optimum: keep the typed defocus
            why = par.image.params.get("fit", {}).get("confidence", {}).get("reason", "")
            reason = "parallax defocus not trusted" + (f" ({why})" if why else "")
            defocus_from = {"from": "typed", "parallax": fitted, "reason": reason}
            msg = (
                f"parallax defocus {par.defocus_A:.1f} +- {par.defocus_se_A:.1f} A is not trusted"
                f"{f' ({why})' if why else ''}: kept the typed defocus {p.defocus_A:g} A"
            )
            logger.info(msg)
            yield Progress(1, 1, msg)
        else:
            defocus_from = {"from": "parallax", "parallax": fitted}
            probe = ProbeModel(
                probe.energy_kev,
                probe.convergence_mrad,
                defocus_A=par.defocus_A,
                astig_A=par.astig_A,
                astig_angle_deg=par.astig_angle_deg,
                cs_mm=p.cs_mm,
            )
    defocus_from.update(defocus_A=probe.defocus_A, astig_A=probe.astig_A, astig_angle_deg=probe.astig_angle_deg)
    if p.method == "ssb":
        from ..analysis.phase.ssb import iter_ssb

        phase_map = yield from iter_ssb(cube, probe=probe, calibration=cal, regularization=p.regularization)
        return PhaseResult(_with_defocus((phase_map,), defocus_from), par, None, recipe)
    if p.method == "wdd":
        from ..analysis.phase.wdd import iter_wdd

        phase_map = yield from iter_wdd(cube, probe=probe, calibration=cal, regularization=p.wdd_regularization)
        return PhaseResult(_with_defocus((phase_map,), defocus_from), par, None, recipe)
    from ..analysis.phase.ptycho import iter_ptychography

    res = yield from iter_ptychography(
        cube, params=p.ptycho_params(snapshot_every), probe=probe, calibration=cal, checkpoint=checkpoint
    )
    return PhaseResult(_with_defocus(res.to_results(), defocus_from), par, res, recipe)


def _with_defocus(maps, defocus_from: dict) -> tuple:
    """The maps with ``params["defocus_from"]``: the aberrations used and where they came from
    (typed, or the parallax fit with its standard error and whether it passed the gate)."""
    import dataclasses

    return tuple(dataclasses.replace(m, params={**m.params, "defocus_from": dict(defocus_from)}) for m in maps)


run_phase = eager(iter_phase, "Phase reconstruction of a dataset.", name="run_phase")
