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
- :func:`iter_acom` / :func:`run_acom`: the disks (by default :meth:`DiskDetectionParams.for_acom`)
  -> orientation plans -> matching (:class:`ACOMParams`). :class:`ACOMRun`.

Every result records a :class:`Recipe`: the workflow, the input file (path, size, mtime), the
parameters, the calibration, the software version and the time. It is stored with the saved
result (``params["recipe"]``), so :func:`script_from_file` gives the script of a saved file.

Layer: above ``analysis``/``nn``, below ``cli`` and ``widgets`` (DESIGN.md); imports no Qt.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .data.calibration import Calibration
from .data.results import BraggPeaks, DiffractionImage, RealSpaceMap
from .engine.jobs import Job, Progress, run_job
from .errors import CalibrationError, FileFormatError, Napari4DSTEMError

__all__ = [
    "ACOMParams",
    "ACOMRun",
    "DiskDetectionParams",
    "DisksResult",
    "InputRef",
    "NNDiskParams",
    "ProbeSource",
    "Recipe",
    "StrainParams",
    "StrainResult",
    "iter_acom",
    "iter_disks",
    "iter_probe_template",
    "iter_strain",
    "read_peaks",
    "run_acom",
    "run_disks",
    "run_strain",
    "script_from_file",
    "strain_from_peaks",
]

SUBPIXEL_METHODS = ("fit", "parabolic", "gaussian", "upsample", "none")
KERNELS = ("plain", "gaussian", "ring")


class ParameterError(Napari4DSTEMError, ValueError):
    """A workflow parameter is out of range (the message names it, with its unit)."""


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ParameterError(msg)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class _Params:
    """Shared by the parameter dataclasses: dicts of the fields, and their script form."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        _check(not unknown, f"{cls.__name__}: unknown parameters {sorted(unknown)}")
        return cls(**{k: _tuple(v) for k, v in d.items()})

    def changed(self) -> dict[str, Any]:
        """The fields that differ from the class defaults (what a script has to spell out)."""
        base = type(self)()
        return {
            f.name: _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if _plain(getattr(self, f.name)) != _plain(getattr(base, f.name))
        }

    def script(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.changed().items())
        return f"{type(self).__name__}({args})"


def _plain(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _tuple(v: Any) -> Any:
    return tuple(_tuple(x) for x in v) if isinstance(v, list) else v


# ------------------------------------------------------------------------------------------
# parameters
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiskDetectionParams(_Params):
    """How Bragg disks are found by template correlation (one set for CLI, widgets and demo).

    Attributes
    ----------
    kernel : {"plain", "gaussian", "ring"}
        Correlation kernel made from the probe.
    correlation_power : float, 0..1
        1 cross-correlation, 0 phase correlation, in between hybrid.
    subpixel : {"fit", "parabolic", "gaussian", "upsample", "none"}
        Sub-pixel refinement ("fit": Poisson maximum-likelihood disk fit).
    min_relative : float, 0..1
        Drop peaks below this fraction of the pattern's strongest correlation peak.
    min_significance : float or None, noise standard deviations
        Keep only peaks whose disk stands this many noise SDs above its surroundings;
        None: no test (0 is not "off": it keeps any disk brighter than its ring).
    min_spacing_px, edge_px : detector pixels, None: the disk radius
        Minimum peak spacing; margin to the detector border.
    max_peaks : int
        At most this many peaks per pattern (the strongest).
    min_absolute : float
        Drop peaks whose correlation is below this.
    upsample_factor : int
        Fine-grid factor of ``subpixel="upsample"``.
    poisson : bool
        Poisson weights in the "fit" (False: least squares).
    detect_bin : int or None
        Bin the patterns by this factor to find the disks (None: automatic).
    """

    kernel: str = "plain"
    correlation_power: float = 1.0
    subpixel: str = "fit"
    min_relative: float = 0.03
    min_significance: float | None = None
    min_spacing_px: float | None = None
    edge_px: int | None = None
    max_peaks: int = 100
    min_absolute: float = 0.0
    upsample_factor: int = 16
    poisson: bool = True
    detect_bin: int | None = None

    def __post_init__(self):
        _check(self.kernel in KERNELS, f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        _check(self.subpixel in SUBPIXEL_METHODS,
               f"subpixel must be one of {SUBPIXEL_METHODS}, got {self.subpixel!r}")
        _check(_finite(self.correlation_power) and 0.0 <= self.correlation_power <= 1.0,
               f"correlation power must be in 0..1, got {self.correlation_power}")
        _check(_finite(self.min_relative) and 0.0 <= self.min_relative <= 1.0,
               f"min relative intensity must be a fraction in 0..1, got {self.min_relative}")
        _check(self.min_significance is None or (_finite(self.min_significance) and self.min_significance >= 0),
               f"min significance must be >= 0 noise SDs (or None: no test), got {self.min_significance}")
        _check(self.min_spacing_px is None or (_finite(self.min_spacing_px) and self.min_spacing_px > 0),
               f"min spacing must be > 0 px (or None: the disk radius), got {self.min_spacing_px}")
        _check(self.edge_px is None or (isinstance(self.edge_px, int) and self.edge_px >= 0),
               f"edge margin must be a whole number of px >= 0 (or None: the disk radius), got {self.edge_px}")
        _check(isinstance(self.max_peaks, int) and self.max_peaks >= 1,
               f"max peaks must be a whole number >= 1, got {self.max_peaks}")
        _check(_finite(self.min_absolute) and self.min_absolute >= 0,
               f"min absolute correlation must be >= 0, got {self.min_absolute}")
        _check(isinstance(self.upsample_factor, int) and self.upsample_factor >= 1,
               f"upsample factor must be a whole number >= 1, got {self.upsample_factor}")
        _check(self.detect_bin is None or (isinstance(self.detect_bin, int) and self.detect_bin >= 1),
               f"detect bin must be a whole number >= 1 (or None), got {self.detect_bin}")

    @classmethod
    def for_acom(cls, **changes: Any) -> DiskDetectionParams:
        """Defaults for orientation mapping: Bragg disks orders of magnitude weaker than the
        central beam (``min_relative`` 3e-4 with a significance test of 5 SDs; docs/acom.md)."""
        from .analysis.acom import ACOM_DISK_DEFAULTS

        return cls(**{**ACOM_DISK_DEFAULTS, **changes})

    def detect_kwargs(self) -> dict[str, Any]:
        """Keywords of :func:`~napari_4dstem.analysis.bragg.iter_find_bragg_disks` and
        :func:`~napari_4dstem.analysis.bragg.detect_in_stack` (all fields but the kernel)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "kernel"}


@dataclass(frozen=True)
class NNDiskParams(_Params):
    """How Bragg disks are found by the neural network (FCU-Net).

    Attributes
    ----------
    model : str or None
        Registry name[@version] or a model file; None: the bundled default.
    mc_samples : int
        Monte-Carlo dropout passes (0: off).
    min_relative : float, 0..1
        Drop predicted peaks below this fraction of the strongest.
    min_absolute : float
        Drop predicted peaks below this height.
    min_significance : float or None, noise standard deviations
        Keep a peak only where the raw pattern holds a disk this significant (None: every
        peak the network marks).
    min_spacing_px, edge_px : detector pixels, None: automatic
    max_peaks : int
    batch_size : int
        Patterns per network call.
    """

    model: str | None = None
    mc_samples: int = 0
    min_relative: float = 0.1
    min_absolute: float = 0.05
    min_significance: float | None = 5.0
    min_spacing_px: float | None = None
    edge_px: float | None = None
    max_peaks: int = 100
    batch_size: int = 32

    def __post_init__(self):
        _check(self.model is None or isinstance(self.model, str), f"model must be a name or path, got {self.model!r}")
        _check(isinstance(self.mc_samples, int) and self.mc_samples >= 0,
               f"MC samples must be a whole number >= 0, got {self.mc_samples}")
        _check(_finite(self.min_relative) and 0.0 <= self.min_relative <= 1.0,
               f"min relative must be a fraction in 0..1, got {self.min_relative}")
        _check(_finite(self.min_absolute) and self.min_absolute >= 0, f"min absolute must be >= 0, got {self.min_absolute}")
        _check(self.min_significance is None or (_finite(self.min_significance) and self.min_significance >= 0),
               f"min significance must be >= 0 noise SDs (or None: no test), got {self.min_significance}")
        _check(self.min_spacing_px is None or (_finite(self.min_spacing_px) and self.min_spacing_px > 0),
               f"min spacing must be > 0 px, got {self.min_spacing_px}")
        _check(self.edge_px is None or (_finite(self.edge_px) and self.edge_px >= 0), f"edge must be >= 0 px, got {self.edge_px}")
        _check(isinstance(self.max_peaks, int) and self.max_peaks >= 1, f"max peaks must be >= 1, got {self.max_peaks}")
        _check(isinstance(self.batch_size, int) and self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class ProbeSource(_Params):
    """Where the probe comes from: a node of an EMD file, a ``.npy`` image, or (``path=None``)
    the bright-field disk of the mean pattern."""

    path: str | None = None
    node: str = "probe"

    def __post_init__(self):
        if self.path is not None:
            object.__setattr__(self, "path", str(self.path))

    @classmethod
    def parse(cls, spec: str | None) -> ProbeSource:
        """From the command line's ``FILE[:NAME]`` (None: the bright-field disk)."""
        if not spec:
            return cls()
        path, _, name = str(spec).partition(":")
        return cls(path, name or "probe")

    def load(self) -> np.ndarray | DiffractionImage | None:
        """The probe image (None for the bright-field disk)."""
        if self.path is None:
            return None
        if self.path.lower().endswith(".npy"):
            return np.load(self.path)
        from .io import emd

        objs = emd.read(self.path)
        try:
            hits = [v for k, v in objs.items() if k == self.node or k.split("/")[-1] == self.node]
            if not hits or not isinstance(hits[0], DiffractionImage | RealSpaceMap):
                raise FileFormatError(self.path, f"no 2D node {self.node!r} in the file (have {sorted(objs)})")
            return hits[0]
        finally:
            for v in objs.values():
                if hasattr(v, "close"):
                    v.close()

    def script(self) -> str:
        return "None" if self.path is None else f"ProbeSource({self.path!r}" + (
            ")" if self.node == "probe" else f", node={self.node!r})")


@dataclass(frozen=True)
class StrainParams(_Params):
    """Lattice and strain.

    Attributes
    ----------
    reference : (row0, row1, col0, col1) or None
        Unstrained reference rectangle of the scan (scan pixels, ends exclusive); None: the
        median of all valid fits.
    g1, g2 : (y, x) detector pixels, or None (found on the Bragg vector map)
        Your lattice vectors; refined on the map unless ``refine_lattice`` is False.
    refine_lattice : bool
    frame_deg : degrees
        Report the strain in axes turned by this angle from +x towards +y.
    max_residual_px : detector pixels or None
        Mask patterns whose lattice-fit residual is larger.
    """

    reference: tuple[int, int, int, int] | None = None
    g1: tuple[float, float] | None = None
    g2: tuple[float, float] | None = None
    refine_lattice: bool = True
    frame_deg: float = 0.0
    max_residual_px: float | None = None

    def __post_init__(self):
        if self.reference is not None:
            ref = tuple(int(v) for v in self.reference)
            _check(len(ref) == 4 and ref[0] < ref[1] and ref[2] < ref[3] and min(ref) >= 0,
                   f"reference must be (row0, row1, col0, col1) with row0 < row1, col0 < col1, got {self.reference}")
            object.__setattr__(self, "reference", ref)
        _check((self.g1 is None) == (self.g2 is None), "give both g1 and g2, or neither")
        for name in ("g1", "g2"):
            v = getattr(self, name)
            if v is not None:
                v = tuple(float(x) for x in v)
                _check(len(v) == 2 and all(math.isfinite(x) for x in v), f"{name} must be (y, x) px, got {v}")
                object.__setattr__(self, name, v)
        _check(_finite(self.frame_deg), f"frame angle must be finite degrees, got {self.frame_deg}")
        _check(self.max_residual_px is None or (_finite(self.max_residual_px) and self.max_residual_px > 0),
               f"max residual must be > 0 px, got {self.max_residual_px}")


@dataclass(frozen=True)
class ACOMParams(_Params):
    """Orientation mapping.

    Attributes
    ----------
    crystals : bundled names (Au, Cu, Al, Si, Fe-bcc, Ti-hcp) or CIF paths; several: phase map
    step_deg, inplane_step_deg : zone-axis and in-plane steps of the plan, degrees
    k_max_inv_A : largest |g| used, 1/Angstrom (None: the detector's reach from the origin)
    thickness_nm : sample thickness for the excitation errors, nm
    energy_kev : beam energy, keV (None: the calibration's)
    n_matches : orientations kept per pattern (overlapping grains)
    min_peaks : patterns with fewer peaks are masked
    max_memory_mb : refuse plans larger than this, MiB
    """

    crystals: tuple[str, ...] = ("Au",)
    step_deg: float = 2.0
    inplane_step_deg: float | None = None
    k_max_inv_A: float | None = None
    thickness_nm: float = 5.0
    energy_kev: float | None = None
    n_matches: int = 1
    min_peaks: int = 5
    max_memory_mb: float = 2048.0

    def __post_init__(self):
        crystals = (self.crystals,) if isinstance(self.crystals, str) else tuple(str(c) for c in self.crystals)
        _check(len(crystals) >= 1, "give at least one crystal")
        object.__setattr__(self, "crystals", crystals)
        _check(_finite(self.step_deg) and 0 < self.step_deg <= 30, f"plan step must be in (0, 30] deg, got {self.step_deg}")
        _check(self.inplane_step_deg is None or (_finite(self.inplane_step_deg) and 0 < self.inplane_step_deg <= 30),
               f"in-plane step must be in (0, 30] deg, got {self.inplane_step_deg}")
        _check(self.k_max_inv_A is None or (_finite(self.k_max_inv_A) and self.k_max_inv_A > 0),
               f"k_max must be > 0 1/A, got {self.k_max_inv_A}")
        _check(_finite(self.thickness_nm) and self.thickness_nm > 0, f"thickness must be > 0 nm, got {self.thickness_nm}")
        _check(self.energy_kev is None or (_finite(self.energy_kev) and self.energy_kev > 0),
               f"beam energy must be > 0 keV, got {self.energy_kev}")
        _check(isinstance(self.n_matches, int) and self.n_matches >= 1, f"n_matches must be >= 1, got {self.n_matches}")
        _check(isinstance(self.min_peaks, int) and self.min_peaks >= 1, f"min peaks must be >= 1, got {self.min_peaks}")
        _check(_finite(self.max_memory_mb) and self.max_memory_mb > 0, f"max memory must be > 0 MiB, got {self.max_memory_mb}")

    def plan_kwargs(self, energy_kev: float, k_max_inv_A: float) -> dict[str, Any]:
        """Keywords of :func:`~napari_4dstem.analysis.orientation.build_orientation_plan`."""
        return {
            "energy_kev": float(energy_kev),
            "k_max_inv_A": float(k_max_inv_A),
            "step_deg": self.step_deg,
            "inplane_step_deg": self.inplane_step_deg,
            "thickness_A": 10.0 * self.thickness_nm,
            "max_memory_bytes": self.max_memory_mb * 2**20,
        }


# ------------------------------------------------------------------------------------------
# provenance and recipes
# ------------------------------------------------------------------------------------------
def _utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class InputRef:
    """The input file of a result: path, size and modification time (enough to notice that the
    file changed), and what it was (a 4D datacube or a file of Bragg peaks)."""

    path: str | None
    size_bytes: int | None = None
    mtime_utc: str | None = None
    kind: str = "datacube"  # or "peaks"
    scan_shape: tuple[int, int] | None = None  # given to open_datacube (raw files)

    @classmethod
    def of(cls, path: str | os.PathLike | None, *, kind: str = "datacube", scan_shape=None) -> InputRef:
        if path is None:
            return cls(None, kind=kind)
        p = Path(path)
        try:
            st = p.stat()
            size = st.st_size if p.is_file() else None
            mtime = _dt.datetime.fromtimestamp(st.st_mtime, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        except OSError:
            size, mtime = None, None
        shape = None if scan_shape is None else tuple(int(v) for v in scan_shape)
        return cls(str(p.resolve()), size, mtime, kind, shape)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size_bytes": self.size_bytes, "mtime_utc": self.mtime_utc,
                "kind": self.kind, "scan_shape": list(self.scan_shape) if self.scan_shape else None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputRef:
        shape = d.get("scan_shape")
        return cls(d.get("path"), d.get("size_bytes"), d.get("mtime_utc"), d.get("kind", "datacube"),
                   tuple(shape) if shape else None)


_PARAM_CLASSES = {
    "disks": DiskDetectionParams, "nn": NNDiskParams, "probe": ProbeSource,
    "strain": StrainParams, "acom": ACOMParams,
}
_KEYWORD = {"disks": "detection", "nn": "detection"}
_ARRAY_PROBE = "<image in memory>"
_WORKFLOW_FN = {"disks": "run_disks", "strain": "run_strain", "acom": "run_acom"}


@dataclass(frozen=True)
class Recipe:
    """How a result was made: workflow, input, parameters, calibration, version and time.

    ``to_script()`` is the short script (public API only) that makes the result again."""

    workflow: str
    input: InputRef
    params: Mapping[str, Any]  # {"disks"|"nn"|"probe"|"strain"|"acom": parameter object}
    calibration: Mapping[str, Any] | None = None  # as given (None: the file's own)
    software_version: str = __version__
    created_utc: str = field(default_factory=_utc_now)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "input": self.input.to_dict(),
            "params": {k: v.to_dict() for k, v in self.params.items()},
            "calibration": None if self.calibration is None else dict(self.calibration),
            "software": "napari-4dstem",
            "software_version": self.software_version,
            "created_utc": self.created_utc,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recipe:
        params = {k: _PARAM_CLASSES[k].from_dict(v) for k, v in (d.get("params") or {}).items()}
        return cls(d["workflow"], InputRef.from_dict(d["input"]), params, d.get("calibration"),
                   d.get("software_version", "?"), d.get("created_utc", "?"))

    def to_script(self, out: str | os.PathLike = "result.h5") -> str:
        """A Python script that recomputes the result headless and saves it to ``out``."""
        if self.input.path is None:
            raise Napari4DSTEMError("this result was not computed from a file: there is no script for it")
        cal = self.calibration
        if cal is not None and cal.get("origin_map_shape"):
            raise CalibrationError(
                "the calibration has a per-pattern origin map, which a script cannot spell out: "
                "save it with `napari-4dstem calibrate` and pass it as calibration="
            )
        names = {type(v).__name__ for v in self.params.values()}
        fn = "strain_from_peaks" if (self.input.kind == "peaks" and self.workflow == "strain") else _WORKFLOW_FN[self.workflow]
        names |= {fn} | ({"read_peaks"} if self.input.kind == "peaks" else set())
        lines = [
            f"# made by napari-4dstem {self.software_version} ({self.workflow}, {self.created_utc})",
            f"# input: {self.input.path} ({self.input.size_bytes} bytes, modified {self.input.mtime_utc})",
        ]
        top = [n for n in ("Calibration", "open_datacube")
               if (n == "Calibration" and cal is not None) or (n == "open_datacube" and self.input.kind == "datacube")]
        imports = ([f"from napari_4dstem import {', '.join(top)}"] if top else []) + [
            f"from napari_4dstem.pipelines import {', '.join(sorted(names))}"]
        lines += [*imports, ""]
        probe = self.params.get("probe")
        if probe is not None and probe.path is None and probe.node == _ARRAY_PROBE:
            raise Napari4DSTEMError(
                "the probe was an image in memory, not a file: save it (e.g. File > Save Selected "
                "Layers) and use ProbeSource(file)"
            )
        kw = [f"{_KEYWORD.get(k, k)}={_script_of(v)}" for k, v in self.params.items()]
        if cal is not None:
            kw.append(f"calibration=Calibration.from_dict({dict(cal)!r})")
        if self.input.kind == "peaks":
            lines.append(f"peaks = read_peaks({self.input.path!r})")
            if fn == "strain_from_peaks":
                call = "strain_from_peaks(" + _args(["peaks", *(k for k in kw if not k.startswith("calibration"))])
            else:
                call = f"{fn}(" + _args(["None", "peaks=peaks", *kw])
        else:
            shape = "" if self.input.scan_shape is None else f", scan_shape={tuple(self.input.scan_shape)!r}"
            lines.append(f"dc = open_datacube({self.input.path!r}{shape})")
            call = f"{fn}(" + _args(["dc", *kw])
        lines += [f"result = {call}", f"result.save({str(out)!r}, overwrite=True)", ""]
        return "\n".join(lines)


def _args(items: list[str]) -> str:
    return "\n" + "".join(f"    {a},\n" for a in items) + ")"


def _script_of(v: Any) -> str:
    return v.script() if hasattr(v, "script") else repr(v)


def _recipe_params(result_params: Mapping[str, Any], recipe: Recipe) -> dict[str, Any]:
    return {**result_params, "recipe": recipe.to_dict()}


class _Result:
    """Shared by the result objects: save, script, provenance."""

    recipe: Recipe

    def objects(self) -> list:  # pragma: no cover - overridden
        raise NotImplementedError

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write every part of the result to an EMD file (py4DSTEM opens it; so do napari and
        :func:`napari_4dstem.io.emd.read`); each node's parameters carry the recipe."""
        from .io import emd

        return emd.write(path, *self.saved_objects(), overwrite=overwrite)

    def saved_objects(self) -> list:
        """The objects :meth:`save` writes: :meth:`objects` with the recipe in their params."""
        return [dataclasses.replace(o, params=_recipe_params(o.params, self.recipe)) for o in self.objects()]

    def to_script(self, out: str | os.PathLike = "result.h5") -> str:
        """The Python script that makes this result again, headless (see :class:`Recipe`)."""
        return self.recipe.to_script(out)


# ------------------------------------------------------------------------------------------
# disks
# ------------------------------------------------------------------------------------------
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


def iter_probe_template(dc: Any, probe: Any = None, *, kernel: str = "plain") -> Job:
    """Job: the correlation template from a probe image (array, DiffractionImage, ProbeSource)
    or, with ``probe=None``, from the bright-field disk of the mean pattern."""
    from .analysis.probe import make_template, template_from_bf_disk

    _, image = _as_probe(probe)
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
    from .analysis.bragg import detect_in_stack

    found, count = detect_in_stack(np.asarray(pattern)[None], template, parallel=False, **detection.detect_kwargs())
    return found[0, : int(count[0])]


def origin_or_none(peaks: BraggPeaks, calibration: Calibration | None = None) -> RealSpaceMap | None:
    """The origin measured from the central beam of every pattern when ``calibration`` (default
    the peaks') has none; None when it has one (then it is used)."""
    from .analysis.bragg import origin_from_peaks

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
    from .analysis.virtual import as_datacube

    cube, cal = as_datacube(dc, calibration)
    return cube, cal, tuple(cube.shape[2:])


def _recipe(workflow, dc, params, calibration, source) -> Recipe:
    if isinstance(source, InputRef):
        ref = source
    else:
        ref = InputRef.of(source if source is not None else getattr(dc, "source", None))
    cal = None if calibration is None else calibration.to_dict()
    return Recipe(workflow, ref, params, cal)


def _find_peaks_job(cube, cal, detection, probe, *, device, backend, template=None):
    if isinstance(detection, NNDiskParams):
        from .nn.infer import iter_find_bragg_disks_nn

        _, image = _as_probe(probe)
        if image is None:
            raise Napari4DSTEMError("NN disk detection needs a vacuum probe (probe=ProbeSource(file, node))")
        d = detection
        peaks = yield from iter_find_bragg_disks_nn(
            cube, probe=image, model=d.model, min_relative=d.min_relative, min_absolute=d.min_absolute,
            min_spacing_px=d.min_spacing_px, min_significance=d.min_significance, edge_px=d.edge_px,
            max_peaks=d.max_peaks, batch_size=d.batch_size, mc_samples=d.mc_samples, device=device,
        )
        return dataclasses.replace(peaks, calibration=cal)
    from .analysis.bragg import iter_find_bragg_disks

    if template is None:
        template = yield from iter_probe_template(cube, probe, kernel=detection.kernel)
    peaks = yield from iter_find_bragg_disks(
        cube, template=template, calibration=cal, device=device, backend=backend, **detection.detect_kwargs()
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
    """
    from .analysis.bragg import bragg_vector_map

    detection = detection or DiskDetectionParams()
    cube, cal, det_shape = _cube(dc, calibration, peaks)
    if peaks is None:
        peaks = yield from _find_peaks_job(cube, cal, detection, probe, device=device, backend=backend,
                                           template=template)
    origin = origin_or_none(peaks)
    bvm = bragg_vector_map(peaks, origin=origin, shape=det_shape)
    recipe = _recipe("disks", dc, _detection_params(detection, probe), calibration, source)
    return DisksResult(peaks, bvm, origin, recipe)


def run_disks(dc: Any, *, progress: Callable[[Progress], Any] | None = None, **kwargs: Any) -> DisksResult:
    """:func:`iter_disks` run to the end."""
    return run_job(iter_disks(dc, **kwargs), progress)


def read_peaks(path: str | os.PathLike, name: str | None = None) -> BraggPeaks:
    """The Bragg peaks of an EMD file (from ``disks``, ``infer``, ``strain`` or ``acom``)."""
    from .io import emd

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
    lattice: Any  # analysis.lattice.Lattice
    fit: Any  # analysis.lattice.LatticeFit
    strain: Any  # analysis.strain.StrainMap
    recipe: Recipe
    bvm: DiffractionImage | None = None

    def objects(self) -> list:
        return [*self.strain.maps(), self.fit.to_map(), self.peaks] + ([self.bvm] if self.bvm is not None else [])


def find_lattice_for(peaks: BraggPeaks, params: StrainParams, bvm: DiffractionImage | None = None):
    """The lattice of ``params`` (your g1/g2, refined unless told not to) on the Bragg vector map."""
    from .analysis.bragg import bragg_vector_map
    from .analysis.lattice import Lattice, find_lattice

    if params.g1 is not None and not params.refine_lattice:
        return Lattice(params.g1, params.g2, params={"method": "given", "refined": False})
    if bvm is None:
        bvm = bragg_vector_map(peaks, origin=origin_or_none(peaks))
    return find_lattice(bvm, g1=params.g1, g2=params.g2, refine=params.refine_lattice)


def strain_from_peaks(
    peaks: BraggPeaks,
    strain: StrainParams | None = None,
    *,
    bvm: DiffractionImage | None = None,
    lattice: Any = None,
    recipe: Recipe | None = None,
    source: Any = None,
) -> StrainResult:
    """Lattice -> per-pattern lattice fit -> true strain, on Bragg peaks (from any detector:
    template correlation, or the network via ``napari-4dstem infer``).

    ``lattice`` (an :class:`~napari_4dstem.analysis.lattice.Lattice`) skips the lattice search;
    ``source`` is the peaks file for the recipe."""
    from .analysis.lattice import fit_lattice
    from .analysis.strain import strain_from_lattice

    strain = strain or StrainParams()
    lat = lattice if lattice is not None else find_lattice_for(peaks, strain, bvm)
    fit = fit_lattice(peaks, lat)
    sm = strain_from_lattice(fit, reference=strain.reference, frame_deg=strain.frame_deg,
                             max_residual_px=strain.max_residual_px)
    if recipe is None:
        ref = source if isinstance(source, InputRef) else InputRef.of(source, kind="peaks")
        recipe = Recipe("strain", ref, {"strain": strain})
    else:
        recipe = dataclasses.replace(recipe, workflow="strain", params={**recipe.params, "strain": strain})
    return StrainResult(peaks, lat, fit, sm, recipe, bvm)


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
    disks = yield from iter_disks(dc, detection=detection, probe=probe, calibration=calibration, peaks=peaks,
                                  source=source, device=device, backend=backend)
    return strain_from_peaks(disks.peaks, strain, bvm=disks.bvm, recipe=disks.recipe)


def run_strain(dc: Any, *, progress: Callable[[Progress], Any] | None = None, **kwargs: Any) -> StrainResult:
    """:func:`iter_strain` run to the end."""
    return run_job(iter_strain(dc, **kwargs), progress)


# ------------------------------------------------------------------------------------------
# ACOM
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ACOMRun(_Result):
    """An orientation map with the peaks and plans it came from.

    ``save`` writes the maps of the best match (Euler, orientation, correlation, reliability,
    phase, grains, IPF x/y/z RGB), every match of the top N (``acom_matches_*`` stacks) and the
    peaks; :func:`read_acom` rebuilds the :class:`~napari_4dstem.analysis.acom_result.ACOMResult`."""

    result: Any  # analysis.acom_result.ACOMResult
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
        RealSpaceMap(res.orientation.reshape(*res.scan_shape, n * 9), name="acom_matches_orientation",
                     channels=tuple(f"{t}_U{i}{j}" for t in tag for i in range(1, 4) for j in range(1, 4)),
                     calibration=cal, params=params),
        RealSpaceMap(res.correlation, name="acom_matches_correlation", channels=tuple(tag), calibration=cal,
                     params=params),
        RealSpaceMap(res.phase.astype(np.int32), name="acom_matches_phase", channels=tuple(tag), calibration=cal,
                     params=params),
        RealSpaceMap(res.n_matched.astype(np.int32), name="acom_matches_n_matched", channels=tuple(tag),
                     calibration=cal, params=params),
        RealSpaceMap(res.residual_inv_A, name="acom_matches_residual", units="1/A", channels=tuple(tag),
                     calibration=cal, params=params),
        RealSpaceMap(np.stack([res.reliability, res.phase_reliability, res.n_peaks], -1),
                     name="acom_matches_quality", channels=("reliability", "phase_reliability", "n_peaks"),
                     calibration=cal, params=params),
    ]


def read_acom(path: str | os.PathLike, crystals: Any = None) -> Any:
    """The ACOMResult of a file written by :meth:`ACOMRun.save` (all top-N matches).

    ``crystals`` (names, CIF paths or Crystal objects) default to the names recorded in the file
    (bundled crystals; a CIF crystal needs its file)."""
    from .analysis.acom_result import ACOMResult
    from .analysis.crystal import load_crystal
    from .io import emd

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
    from .analysis.crystal import load_crystal
    from .analysis.orientation import build_orientation_plan

    crystals = [load_crystal(c) for c in (crystals or params.crystals)]
    plans = []
    for k, crystal in enumerate(crystals):
        yield Progress(k, len(crystals), f"building the orientation plan of {crystal.name}")
        plans.append(build_orientation_plan(crystal, **params.plan_kwargs(energy_kev, k_max_inv_A)))
    yield Progress(len(crystals), len(crystals), "plan built")
    return tuple(plans)


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
) -> Job[ACOMRun]:
    """Job: Bragg disks (default :meth:`DiskDetectionParams.for_acom`) -> origin -> plans ->
    orientation (and phase) of every pattern.

    ``peaks`` and ``plans`` already made with these settings skip those steps; ``device`` picks
    where the correlation and the scoring run ("cpu": numba kernels, "cuda": torch)."""
    from .analysis.acom import iter_match_orientations
    from .analysis.crystal import load_crystal

    acom = acom or ACOMParams()
    crystals = None if plans is not None else [load_crystal(c) for c in acom.crystals]  # bad CIFs fail first
    detection = detection or DiskDetectionParams.for_acom()
    cube, cal, det_shape = _cube(dc, calibration, peaks)
    if acom.energy_kev is not None:
        cal = cal.replace(beam_energy_kev=acom.energy_kev)
    if cal.beam_energy_kev is None:
        raise CalibrationError("ACOM needs the beam energy (in the calibration, or ACOMParams(energy_kev=...))")
    try:
        cal.k_pixel_size_in("1/A")
    except CalibrationError as e:
        raise CalibrationError(f"orientation mapping needs a calibrated detector: {e}") from None
    if peaks is None:
        peaks = yield from _find_peaks_job(cube, cal, detection, probe, device=device, backend=backend,
                                           template=template)
    mcal = acom_calibration(cal, peaks)
    k_max = acom.k_max_inv_A or detector_reach_inv_A(mcal, det_shape)
    if plans is None:
        plans = yield from iter_plans(acom, mcal.beam_energy_kev, k_max, crystals)
    scoring = "numba" if device == "cpu" else device
    res = yield from iter_match_orientations(peaks, list(plans), calibration=mcal, n_matches=acom.n_matches,
                                             min_peaks=acom.min_peaks, device=scoring)
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
    from .analysis.acom import iter_match_orientations
    from .analysis.bragg import origin_from_peaks

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
            one, list(plans), calibration=cal.replace(origin_map_px=None), origin_px=origin,
            n_matches=acom.n_matches, min_peaks=acom.min_peaks,
        )
    return PatternCheck(iy, ix, rows[:, :2].copy(), rows[:, 2].copy(), origin, result)


def run_acom(dc: Any, *, progress: Callable[[Progress], Any] | None = None, **kwargs: Any) -> ACOMRun:
    """:func:`iter_acom` run to the end."""
    return run_job(iter_acom(dc, **kwargs), progress)


# ------------------------------------------------------------------------------------------
# saved files
# ------------------------------------------------------------------------------------------
def recipe_of(obj: Any) -> Recipe | None:
    """The recipe stored with a saved result object (its ``params["recipe"]``), or None."""
    d = getattr(obj, "params", {}).get("recipe")
    return Recipe.from_dict(d) if isinstance(d, Mapping) else None


def script_from_file(path: str | os.PathLike, out: str | os.PathLike | None = None) -> str:
    """The script that recomputes a result file saved by a workflow (CLI, widget or library)."""
    from .io import emd

    objs = emd.read(path)
    for v in objs.values():
        if hasattr(v, "close"):
            v.close()
    for v in objs.values():
        r = recipe_of(v)
        if r is not None:
            return r.to_script(out or path)
    raise FileFormatError(path, "no recipe in this file (it was not written by a napari-4dstem workflow)")
