"""Provenance and scripts: what a result records of how it was made, and the script that makes
it again ("copy as Python")."""

from __future__ import annotations

import abc
import dataclasses
import datetime as _dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import CalibrationError, FileFormatError, Napari4DSTEMError
from .params import ACOMParams, DiskDetectionParams, NNDiskParams, ProbeSource, StrainParams


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
    reshape_to: tuple[int, int] | None = None  # the scan shape analysed (e.g. set in the Scan shape dock)

    @classmethod
    def of(
        cls, path: str | os.PathLike | None, *, kind: str = "datacube", scan_shape=None, reshape_to=None
    ) -> InputRef:
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
        to = None if reshape_to is None else tuple(int(v) for v in reshape_to)
        return cls(str(p.resolve()), size, mtime, kind, shape, to)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "mtime_utc": self.mtime_utc,
            "kind": self.kind,
            "scan_shape": list(self.scan_shape) if self.scan_shape else None,
            "reshape_to": list(self.reshape_to) if self.reshape_to else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputRef:
        shape, to = d.get("scan_shape"), d.get("reshape_to")
        return cls(
            d.get("path"),
            d.get("size_bytes"),
            d.get("mtime_utc"),
            d.get("kind", "datacube"),
            tuple(shape) if shape else None,
            tuple(to) if to else None,
        )


def _param_class(key: str):
    from .calibrate import CalibrationParams
    from .classify import ClassificationParams
    from .imaging import DPCParams, VirtualImageParams
    from .phase import PhaseParams

    return {
        "disks": DiskDetectionParams,
        "nn": NNDiskParams,
        "probe": ProbeSource,
        "strain": StrainParams,
        "acom": ACOMParams,
        "virtual": VirtualImageParams,
        "dpc": DPCParams,
        "calibrate": CalibrationParams,
        "classify": ClassificationParams,
        "phase": PhaseParams,
    }[key]


_KEYWORD = {"disks": "detection", "nn": "detection"}
_ARRAY_PROBE = "<image in memory>"
_ARRAY_MASK = "<mask in memory>"  # pipelines.imaging: a mask detector not read from a file
_WORKFLOW_FN = {
    "disks": "run_disks",
    "strain": "run_strain",
    "acom": "run_acom",
    "virtual": "run_virtual",
    "dpc": "run_dpc",
    "calibrate": "run_calibrate",
    "classify": "run_classification",
    "phase": "run_phase",
}


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
        params = {k: _param_class(k).from_dict(v) for k, v in (d.get("params") or {}).items()}
        return cls(
            d["workflow"],
            InputRef.from_dict(d["input"]),
            params,
            d.get("calibration"),
            d.get("software_version", "?"),
            d.get("created_utc", "?"),
        )

    def _check_reproducible(self) -> None:
        if self.input.path is None:
            raise Napari4DSTEMError("this result was not computed from a file: there is no script for it")
        cal = self.calibration
        if cal is not None and cal.get("origin_map_shape"):
            raise CalibrationError(
                "the calibration has a per-pattern origin map, which a script cannot spell out: "
                "save it with `napari-4dstem calibrate` and pass it as calibration="
            )
        virtual = self.params.get("virtual")
        if virtual is not None and any(d.get("path") == _ARRAY_MASK for d in virtual.detectors):
            raise Napari4DSTEMError(
                "a detector is a mask drawn in napari, not a file: save it as .npy and use "
                "MaskDetector(np.load(file)), or choose a disk, annulus, rectangle or point detector"
            )
        probe = self.params.get("probe")
        if probe is not None and probe.path is None and probe.node == _ARRAY_PROBE:
            raise Napari4DSTEMError(
                "the probe was an image in memory, not a file: save it (e.g. File > Save Selected "
                "Layers) and use ProbeSource(file)"
            )

    def relocated(self, folder: str | os.PathLike) -> Recipe:
        """The recipe with its input (and a probe file of the same folder) looked up in ``folder``
        (the same data on another machine)."""
        old = Path(self.input.path or "")
        new_in = dataclasses.replace(self.input, path=str(Path(folder) / old.name))
        params = dict(self.params)
        probe = params.get("probe")
        if isinstance(probe, ProbeSource) and probe.path is not None:
            params["probe"] = dataclasses.replace(probe, path=str(Path(folder) / Path(probe.path).name))
        return dataclasses.replace(self, input=new_in, params=params)

    def run(self, progress=None):
        """Make the result again from its input file: what :meth:`to_script` writes, run here.

        Raises when the input file is missing or its size differs from the one recorded."""
        from ..engine.jobs import run_job

        return run_job(self.iter_run(), progress)

    def iter_run(self):
        """Job form of :meth:`run` (for a worker with progress and Cancel)."""
        self._check_reproducible()
        from ..data.calibration import Calibration
        from . import acom, bragg, calibrate, classify, imaging, phase

        p = Path(self.input.path)
        if not p.exists():
            raise FileFormatError(p, "the input file of this result is not there (relocate the recipe)")
        if self.input.size_bytes is not None and p.is_file() and p.stat().st_size != self.input.size_bytes:
            raise FileFormatError(
                p, f"the input file changed: {p.stat().st_size} bytes, the result was made from {self.input.size_bytes}"
            )
        kw: dict[str, Any] = {}
        for k, v in self.params.items():
            kw[_KEYWORD.get(k, k)] = None if isinstance(v, ProbeSource) and v.path is None else v
        if self.calibration is not None:
            kw["calibration"] = Calibration.from_dict(self.calibration)
        if self.input.kind == "peaks":
            peaks = bragg.read_peaks(p)
            if self.workflow == "strain":
                return bragg.strain_from_peaks(peaks, kw.get("strain"), source=self.input)
            return (yield from acom.iter_acom(None, peaks=peaks, source=self.input, **kw))
        from ..io import open_datacube

        shape = {"scan_shape": tuple(self.input.scan_shape)} if self.input.scan_shape else {}
        dc = open_datacube(p, **shape)
        to = self.input.reshape_to
        if to is not None and tuple(dc.scan_shape) != tuple(to):
            dc = dc.reshape_scan(tuple(to))
        try:
            fn = {
                "disks": bragg.iter_disks,
                "strain": bragg.iter_strain,
                "acom": acom.iter_acom,
                "virtual": imaging.iter_virtual,
                "dpc": imaging.iter_dpc,
                "calibrate": calibrate.iter_calibrate,
                "classify": classify.iter_classification,
                "phase": phase.iter_phase,
            }[self.workflow]
            return (yield from fn(dc, source=self.input, **kw))
        finally:
            dc.close()

    def to_script(self, out: str | os.PathLike = "result.h5") -> str:
        """A Python script that recomputes the result headless and saves it to ``out``."""
        self._check_reproducible()
        cal = self.calibration
        names = {type(v).__name__ for v in self.params.values()}
        fn = (
            "strain_from_peaks"
            if (self.input.kind == "peaks" and self.workflow == "strain")
            else _WORKFLOW_FN[self.workflow]
        )
        names |= {fn} | ({"read_peaks"} if self.input.kind == "peaks" else set())
        lines = [
            f"# made by napari-4dstem {self.software_version} ({self.workflow}, {self.created_utc})",
            f"# input: {self.input.path} ({self.input.size_bytes} bytes, modified {self.input.mtime_utc})",
        ]
        top = [
            n
            for n in ("Calibration", "open_datacube")
            if (n == "Calibration" and cal is not None) or (n == "open_datacube" and self.input.kind == "datacube")
        ]
        imports = ([f"from napari_4dstem import {', '.join(top)}"] if top else []) + [
            f"from napari_4dstem.pipelines import {', '.join(sorted(names))}"
        ]
        lines += [*imports, ""]
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
            to = self.input.reshape_to
            if to is not None:  # the scan shape the result was computed on
                lines.append(f"if dc.scan_shape != {tuple(to)!r}:")
                lines.append(f"    dc = dc.reshape_scan({tuple(to)!r})")
            call = f"{fn}(" + _args(["dc", *kw])
        lines += [f"result = {call}", f"result.save({str(out)!r}, overwrite=True)", ""]
        return "\n".join(lines)


def _args(items: list[str]) -> str:
    return "\n" + "".join(f"    {a},\n" for a in items) + ")"


def _script_of(v: Any) -> str:
    return v.script() if hasattr(v, "script") else repr(v)


def _recipe_params(result_params: Mapping[str, Any], recipe: Recipe) -> dict[str, Any]:
    return {**result_params, "recipe": recipe.to_dict()}


class _Result(abc.ABC):
    """Shared by the result objects: save, script, provenance."""

    recipe: Recipe

    @abc.abstractmethod
    def objects(self) -> list:
        """The result's data objects (maps, peaks, ...) as :meth:`save` writes them."""

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write every part of the result to an EMD file (py4DSTEM opens it; so do napari and
        :func:`napari_4dstem.io.emd.read`); each node's parameters carry the recipe."""
        from ..io import emd

        return emd.write(path, *self.saved_objects(), overwrite=overwrite)

    def saved_objects(self) -> list:
        """The objects :meth:`save` writes: :meth:`objects` with the recipe in their params."""
        return [dataclasses.replace(o, params=_recipe_params(o.params, self.recipe)) for o in self.objects()]

    def to_script(self, out: str | os.PathLike = "result.h5") -> str:
        """The Python script that makes this result again, headless (see :class:`Recipe`)."""
        return self.recipe.to_script(out)


def recipe_of(obj: Any) -> Recipe | None:
    """The recipe stored with a saved result object (its ``params["recipe"]``), or None."""
    d = getattr(obj, "params", {}).get("recipe")
    return Recipe.from_dict(d) if isinstance(d, Mapping) else None


def script_from_file(path: str | os.PathLike, out: str | os.PathLike | None = None) -> str:
    """The script that recomputes a result file saved by a workflow (CLI, widget or library), or
    of a calibration JSON written by ``calibrate``."""
    import json

    from ..io import emd

    if Path(path).suffix.lower() == ".json":
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise FileFormatError(path, f"not a readable JSON file ({e})") from None
        if not isinstance(d, Mapping) or not isinstance(d.get("recipe"), Mapping):
            raise FileFormatError(path, "no recipe in this file (it was not written by `napari-4dstem calibrate`)")
        return Recipe.from_dict(d["recipe"]).to_script(out or Path(path).with_suffix(".h5"))

    objs = emd.read(path)
    for v in objs.values():
        if hasattr(v, "close"):
            v.close()
    for v in objs.values():
        r = recipe_of(v)
        if r is not None:
            return r.to_script(out or path)
    raise FileFormatError(path, "no recipe in this file (it was not written by a napari-4dstem workflow)")
