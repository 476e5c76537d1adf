"""Training-set jobs: sample structures and microscope settings, simulate, write shards.

A :class:`TrainingSetSpec` describes the space to sample (crystals, orientations, thickness,
beam energy, convergence, defocus, pixel size, planted strain) and the engine. Pattern ``i``
draws its parameters from its own generator ``default_rng([seed, i])``, so the set is
deterministic from the seed, pattern ``i`` does not depend on how many patterns are asked for,
and a resumed job makes exactly the patterns the first run would have made.

:func:`simulate_training_set` is a job (a generator yielding :class:`Progress`): it runs the
engine on a pool of workers (threads, processes, or a dask.distributed client), writes shards
(:mod:`.shards`) in order as they fill, and records the spec in ``manifest.json``. Each shard is
written atomically, so a killed job loses at most the shard in progress; running the same job
on the same folder skips the complete shards.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.crystal.structure import Crystal, load_crystal
from ..engine.jobs import PARTIAL_EVERY_S, Job, PartialMap, Progress
from ..errors import FileFormatError, Napari4DSTEMError
from .engines import SimulationRequest, get_engine
from .labels import structure_factor_label
from .samples import random_rotations, small_rotation, zone_axis_rotation
from .shards import SHARD_FORMAT, read_manifest, write_manifest, write_shard

__all__ = [
    "PatternParams",
    "TrainingSetResult",
    "TrainingSetSpec",
    "plan_pattern",
    "simulate_pattern",
    "simulate_training_set",
]

MANIFEST_KIND = "napari-4dstem-training-set"


@dataclass(frozen=True)
class TrainingSetSpec:
    """The space a training set samples, and how it is simulated.

    Ranges ``(low, high)`` are drawn uniformly; ``energies_kev`` is a list of choices.
    ``crystals`` are bundled names (Au, Cu, Al, Si, Fe, Ti) or CIF paths. A fraction
    ``random_orientation_fraction`` of the patterns gets a uniformly random orientation; the
    others a zone axis from ``zone_axes`` (crystal directions ``[uvw]``) with a random in-plane
    rotation and a tilt of up to ``zone_axis_tilt_deg``. ``strain_max`` plants a random true
    strain with components uniform in ``[-strain_max, strain_max]``.

    Labels: reflections whose structure-factor weight (relative to ``000``) is at least
    ``label_min_weight``; ``label_heights`` ``"structure_factor"`` gives each peak that weight
    (the crystal4D target), ``"uniform"`` height 1 (a detection target: every listed
    reflection is a disk to find, as the proxy shards and the evaluation truth count them).

    Attributes
    ----------
    n_patterns, patterns_per_shard : int
        Patterns in the set and per shard (default 256, 64).
    crystals : tuple of str
        Bundled names or CIF paths.
    engine : str
        Simulation engine (:func:`~.engines.get_engine`; default ``"kinematic"``).
    shape : (int, int)
        Pattern shape ``(k_y, k_x)`` in pixels.
    pixel_size_inv_A : (float, float)
        Range of the detector pixel size, 1/A.
    zone_axes : tuple of (int, int, int)
        Zone axes ``[uvw]`` to draw from.
    random_orientation_fraction : float
        Share of uniformly random orientations, in [0, 1].
    zone_axis_tilt_deg : float
        Largest tilt off the zone axis, degrees.
    thickness_A : (float, float)
        Range of the thickness, Angstrom.
    energies_kev : tuple of float
        Beam energies to choose from, keV.
    convergence_mrad, defocus_A : (float, float)
        Ranges of the convergence semi-angle (mrad) and the defocus (Angstrom).
    strain_max : float
        Largest planted strain component (0: none).
    frozen_phonons : int
        Frozen-phonon configurations (multislice engines).
    label_sigma_qz_inv_A, label_peak_sigma_px, label_heights, label_min_weight
        The label's settings (:func:`~.labels.structure_factor_label`).
    seed : int
        The set's seed.

    Raises
    ------
    Napari4DSTEMError
        When a range is reversed, no crystal is given, a count, thickness, pixel size, angle or
        energy is not positive, ``label_heights`` is unknown, or the orientation settings
        cannot be drawn from.
    """

    n_patterns: int = 256
    patterns_per_shard: int = 64
    crystals: tuple[str, ...] = ("Au", "Cu", "Al", "Si", "Fe", "Ti")
    engine: str = "kinematic"
    shape: tuple[int, int] = (256, 256)
    pixel_size_inv_A: tuple[float, float] = (0.008, 0.016)
    zone_axes: tuple[tuple[int, int, int], ...] = ((0, 0, 1), (0, 1, 1), (1, 1, 1), (1, 1, 2))
    random_orientation_fraction: float = 0.3
    zone_axis_tilt_deg: float = 1.0
    thickness_A: tuple[float, float] = (20.0, 400.0)
    energies_kev: tuple[float, ...] = (80.0, 120.0, 200.0, 300.0)
    convergence_mrad: tuple[float, float] = (0.5, 5.0)
    defocus_A: tuple[float, float] = (-200.0, 200.0)
    strain_max: float = 0.0
    frozen_phonons: int = 1
    label_sigma_qz_inv_A: float = 0.05
    label_peak_sigma_px: float = 1.0
    label_heights: str = "structure_factor"
    label_min_weight: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        """Normalise the fields (tuples of floats) and refuse a space that cannot be sampled."""
        set_ = object.__setattr__
        set_(self, "crystals", tuple(str(c) for c in self.crystals))
        set_(self, "shape", tuple(int(s) for s in self.shape))
        set_(self, "zone_axes", tuple(tuple(int(v) for v in z) for z in self.zone_axes))
        set_(self, "energies_kev", tuple(float(e) for e in self.energies_kev))
        for name in ("pixel_size_inv_A", "thickness_A", "convergence_mrad", "defocus_A"):
            v = getattr(self, name)
            v = (float(v), float(v)) if np.isscalar(v) else tuple(float(x) for x in v)
            if len(v) != 2 or v[0] > v[1]:
                raise Napari4DSTEMError(f"{name} must be a range (low, high), got {v}")
            set_(self, name, v)
        if not self.crystals:
            raise Napari4DSTEMError("give at least one crystal (a bundled name or a CIF file)")
        if self.n_patterns < 1 or self.patterns_per_shard < 1:
            raise Napari4DSTEMError("n_patterns and patterns_per_shard must be at least 1")
        if min(self.thickness_A) <= 0 or min(self.pixel_size_inv_A) <= 0:
            raise Napari4DSTEMError("thickness and pixel size must be positive")
        if min(self.convergence_mrad) <= 0 or not self.energies_kev or min(self.energies_kev) <= 0:
            raise Napari4DSTEMError("convergence angles and energies must be positive")
        if self.label_heights not in ("structure_factor", "uniform"):
            raise Napari4DSTEMError(
                f"label_heights must be 'structure_factor' or 'uniform', got {self.label_heights!r}"
            )
        if not 0 <= self.random_orientation_fraction <= 1:
            raise Napari4DSTEMError("random_orientation_fraction must be within [0, 1]")
        if self.random_orientation_fraction < 1 and not self.zone_axes:
            raise Napari4DSTEMError("give zone axes or set random_orientation_fraction to 1")

    @property
    def n_shards(self) -> int:
        """Shards the set fills."""
        return math.ceil(self.n_patterns / self.patterns_per_shard)

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON data (tuples as lists, as the manifest stores it)."""
        import json

        return json.loads(json.dumps(asdict(self)))  # tuples -> lists, as the manifest stores

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingSetSpec:
        """The spec that :meth:`to_dict` wrote."""
        return cls(**{k: (tuple(map(tuple, v)) if k == "zone_axes" else v) for k, v in d.items()})


@dataclass(frozen=True, eq=False)
class PatternParams:
    """The drawn parameters of one pattern.

    Attributes
    ----------
    index : int
        The pattern's index in the set.
    seed : int
        Its own seed (frozen phonons).
    crystal : str
        Bundled name or CIF path.
    orientation : ndarray ``(3, 3)``
        ``U``: crystal Cartesian -> lab.
    zone_axis : (int, int, int) or None
        The zone axis drawn, None for a random orientation.
    thickness_A, energy_kev, convergence_mrad, defocus_A, pixel_size_inv_A : float
        Thickness (Angstrom), beam energy (keV), convergence (mrad), defocus (Angstrom) and
        detector pixel size (1/A).
    strain : ndarray ``(2, 2)``
        Planted true strain (x, y components).
    """

    index: int
    seed: int
    crystal: str
    orientation: np.ndarray
    zone_axis: tuple[int, int, int] | None
    thickness_A: float
    energy_kev: float
    convergence_mrad: float
    defocus_A: float
    pixel_size_inv_A: float
    strain: np.ndarray = field(default_factory=lambda: np.zeros((2, 2)))


def plan_pattern(spec: TrainingSetSpec, index: int) -> PatternParams:
    """The parameters of pattern ``index``: a pure function of ``(spec, index)``.

    Parameters
    ----------
    spec : TrainingSetSpec
        The space to sample.
    index : int
        The pattern's index.

    Returns
    -------
    PatternParams
        Drawn from ``numpy.random.default_rng([spec.seed, index])``.
    """
    rng = np.random.default_rng([spec.seed, index])
    seed = int(rng.integers(0, 2**31 - 1))
    crystal = spec.crystals[int(rng.integers(len(spec.crystals)))]
    if rng.uniform() < spec.random_orientation_fraction:
        U, za = random_rotations(1, rng)[0], None
    else:
        za = spec.zone_axes[int(rng.integers(len(spec.zone_axes)))]
        tilt = small_rotation(spec.zone_axis_tilt_deg, rng) if spec.zone_axis_tilt_deg > 0 else None
        U = zone_axis_rotation(za, float(rng.uniform(0, 360)), tilt)
    e = np.zeros((2, 2))
    if spec.strain_max > 0:
        exx, eyy, exy = rng.uniform(-spec.strain_max, spec.strain_max, 3)
        e = np.array([[exx, exy], [exy, eyy]])
    return PatternParams(
        index=index,
        seed=seed,
        crystal=crystal,
        orientation=U,
        zone_axis=za,
        thickness_A=float(rng.uniform(*spec.thickness_A)),
        energy_kev=float(spec.energies_kev[int(rng.integers(len(spec.energies_kev)))]),
        convergence_mrad=float(rng.uniform(*spec.convergence_mrad)),
        defocus_A=float(rng.uniform(*spec.defocus_A)),
        pixel_size_inv_A=float(rng.uniform(*spec.pixel_size_inv_A)),
        strain=e,
    )


@functools.lru_cache(maxsize=64)
def _crystal(spec_str: str) -> Crystal:
    return load_crystal(spec_str)


def _crystal_name(spec_str: str) -> str:
    return Path(spec_str).stem if spec_str.lower().endswith(".cif") else spec_str


def simulate_pattern(spec: TrainingSetSpec, params: PatternParams) -> dict[str, Any]:
    """Simulate one pattern with its probe, label, Bragg list and shard metadata.

    Parameters
    ----------
    spec : TrainingSetSpec
        Engine, shape and label settings.
    params : PatternParams
        The pattern's drawn parameters (:func:`plan_pattern`).

    Returns
    -------
    dict
        ``pattern``, ``probe``, ``label`` (``(H, W)`` float32), ``bragg`` (``qy, qx,
        intensity, hkl``), ``meta`` (:data:`~.shards.SHARD_META_FIELDS`) and ``engine``.

    Raises
    ------
    Napari4DSTEMError
        On an invalid request or unknown engine (or a missing backend).
    """
    request = SimulationRequest(
        _crystal(params.crystal),
        orientation=params.orientation,
        thicknesses_A=(params.thickness_A,),
        energy_kev=params.energy_kev,
        convergence_mrad=params.convergence_mrad,
        defocus_A=params.defocus_A,
        shape=spec.shape,
        pixel_size_inv_A=params.pixel_size_inv_A,
        strain=params.strain,
        frozen_phonons=spec.frozen_phonons,
        seed=params.seed,
    )
    result = get_engine(spec.engine).simulate(request)
    label = structure_factor_label(
        request,
        sigma_qz_inv_A=spec.label_sigma_qz_inv_A,
        peak_sigma_px=spec.label_peak_sigma_px,
        min_weight=spec.label_min_weight,
        heights=spec.label_heights,
    )
    meta = {
        "crystal": _crystal_name(params.crystal)[:64],
        "orientation": params.orientation,
        "thickness_A": params.thickness_A,
        "energy_kev": params.energy_kev,
        "convergence_mrad": params.convergence_mrad,
        "defocus_A": params.defocus_A,
        "pixel_size_inv_A": params.pixel_size_inv_A,
        "strain": params.strain,
        "origin_px": np.asarray(result.origin_px, float),
        "seed": params.seed,
    }
    return {
        "pattern": result.patterns[0, 0],
        "probe": result.probe,
        "label": label.image,
        "bragg": label.bragg(0),
        "meta": meta,
        "engine": result.engine,
    }


def _simulate_index(spec: TrainingSetSpec, index: int) -> dict[str, Any]:
    return simulate_pattern(spec, plan_pattern(spec, index))


@dataclass(frozen=True)
class TrainingSetResult:
    """What a training-set job did: the folder, shards written now and found complete.

    Attributes
    ----------
    folder : Path
        The training-set folder.
    n_patterns : int
        Patterns in the set.
    shards_written : tuple of str
        Shards written by this run.
    shards_skipped : tuple of str
        Complete shards found and kept.
    seconds : float
        Wall time of the run.
    """

    folder: Path
    n_patterns: int
    shards_written: tuple[str, ...]
    shards_skipped: tuple[str, ...]
    seconds: float


def shard_name(k: int) -> str:
    """File name of shard ``k`` (``shard-00000.h5``)."""
    return f"shard-{k:05d}.h5"


def _shard_complete(path: Path, n: int) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return (
                f.attrs.get("format") == SHARD_FORMAT
                and bool(f.attrs.get("complete", False))
                and int(f.attrs["n"]) == n
            )
    except (OSError, KeyError, ValueError):
        return False


class _Pool:
    """Threads, processes or a dask client behind ``submit``/``cancel``/``close``."""

    def __init__(self, workers: int, executor: str, client=None):
        self.client = client
        self.ex = None
        if client is not None:
            return
        if executor == "threads":
            from concurrent.futures import ThreadPoolExecutor

            self.ex = ThreadPoolExecutor(max(1, workers))
        elif executor == "processes":
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self.ex = ProcessPoolExecutor(max(1, workers), mp_context=mp.get_context("spawn"))
        elif executor != "serial":
            raise Napari4DSTEMError(f"executor must be 'serial', 'threads' or 'processes', got {executor!r}")

    def submit(self, fn, *args):
        if self.client is not None:
            return self.client.submit(fn, *args, pure=False)
        if self.ex is None:
            return _Done(fn, args)
        return self.ex.submit(fn, *args)

    def close(self, cancel: bool):
        if self.ex is not None:
            self.ex.shutdown(wait=not cancel, cancel_futures=cancel)


class _Done:
    """A lazily computed 'future' for the serial executor."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def result(self):
        return self.fn(*self.args)

    def cancel(self):
        return True


def simulate_training_set(
    spec: TrainingSetSpec,
    folder: str | os.PathLike,
    *,
    workers: int = 1,
    executor: str = "threads",
    client: Any = None,
    overwrite: bool = False,
) -> Job[TrainingSetResult]:
    """Job: simulate ``spec`` into shards in ``folder`` (created if needed).

    Running it again on the same folder resumes: complete shards are kept, the rest made. A
    folder holding a different spec is refused unless ``overwrite`` (which deletes its shards).
    ``executor`` is ``'serial'``, ``'threads'`` or ``'processes'`` (``workers`` of them);
    ``client`` a dask.distributed ``Client`` used instead. Closing the generator cancels the
    pending work (shards already written stay).

    Parameters
    ----------
    spec : TrainingSetSpec
        What to simulate.
    folder : str or PathLike
        The training-set folder.
    workers : int
        Parallel workers (default 1).
    executor : {"serial", "threads", "processes"}
        How the workers run (default threads).
    client : dask.distributed.Client, optional
        Run on this cluster instead.
    overwrite : bool
        Replace a folder holding another spec (default False).

    Yields
    ------
    Progress
        One per pattern.

    Returns
    -------
    TrainingSetResult
        The generator's return value.

    Raises
    ------
    FileFormatError
        When the output is not a folder, holds another spec (without ``overwrite``), or a
        shard cannot be written (disk full).
    Napari4DSTEMError
        On an unknown executor.
    """
    t0 = time.perf_counter()
    root = Path(folder)
    if root.exists() and not root.is_dir():
        raise FileFormatError(root, "the training-set output exists and is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        old = read_manifest(root)
        if old.get("spec") != spec.to_dict():
            if not overwrite:
                raise FileFormatError(
                    root,
                    "the folder holds a training set with other parameters",
                    "choose another folder, or overwrite=True (--overwrite) to replace it",
                )
            for p in root.glob("shard-*.h5"):
                p.unlink()
    # check every crystal and the engine before any work (bad CIF, missing engine)
    for c in spec.crystals:
        _crystal(c)
    get_engine(spec.engine)
    manifest = {
        "kind": MANIFEST_KIND,
        "format": SHARD_FORMAT,
        "spec": spec.to_dict(),
        "seed_rule": "pattern i draws from numpy default_rng([spec.seed, i]) (plan_pattern)",
        "n_patterns": spec.n_patterns,
        "shards": [
            {
                "file": shard_name(k),
                "first": k * spec.patterns_per_shard,
                "n": min(spec.patterns_per_shard, spec.n_patterns - k * spec.patterns_per_shard),
            }
            for k in range(spec.n_shards)
        ],
        "complete": False,
        "versions": _versions(spec.engine),
    }
    write_manifest(root, manifest)

    todo: list[int] = []
    skipped: list[str] = []
    for entry in manifest["shards"]:
        if _shard_complete(root / entry["file"], entry["n"]):
            skipped.append(entry["file"])
        else:
            todo.append(manifest["shards"].index(entry))
    total = spec.n_patterns
    done = total - sum(manifest["shards"][k]["n"] for k in todo)
    yield Progress(done, total, f"{len(skipped)} shards already complete" if skipped else "simulating")

    pool = _Pool(workers, executor, client)
    window = max(2, 2 * workers)
    written: list[str] = []
    shown = -1e9  # when a pattern was last attached to a Progress
    cancelled = True
    try:
        queue = [
            i
            for k in todo
            for i in range(
                manifest["shards"][k]["first"],
                manifest["shards"][k]["first"] + manifest["shards"][k]["n"],
            )
        ]
        futures: dict[int, Any] = {}
        pos = 0
        for k in todo:
            entry = manifest["shards"][k]
            items = []
            for i in range(entry["first"], entry["first"] + entry["n"]):
                while pos < len(queue) and len(futures) < window + entry["n"]:
                    futures[queue[pos]] = pool.submit(_simulate_index, spec, queue[pos])
                    pos += 1
                fut = futures.pop(i)
                while isinstance(fut, Future) and not fut.done():
                    # a slow engine (seconds a pattern): a step every WAIT_STEP_S, so a cancel
                    # does not wait for the pattern (its thread ends it unseen)
                    futures_wait([fut], timeout=WAIT_STEP_S)
                    if not fut.done():
                        yield Progress(done, total, f"simulating {entry['file']}")
                items.append(fut.result())
                done += 1
                now, partial = time.perf_counter(), None
                if now - shown >= PARTIAL_EVERY_S:  # the newest pattern, for a live view
                    shown, partial = now, newest_pattern_map(items[-1], done / total)
                yield Progress(done, total, f"simulating {entry['file']}", partial=partial)
            _write(root, entry["file"], items)
            written.append(entry["file"])
        cancelled = False
    finally:
        if cancelled:
            for f in futures.values():
                f.cancel()
        pool.close(cancel=cancelled)
    manifest["complete"] = True
    write_manifest(root, manifest)
    return TrainingSetResult(root, spec.n_patterns, tuple(written), tuple(skipped), time.perf_counter() - t0)


NEWEST_PATTERN = "newest simulated pattern"
WAIT_STEP_S = 0.1  # the job yields at least this often while a pattern is simulated (Cancel)


def newest_pattern_map(item: dict[str, Any], fraction: float) -> PartialMap:
    """A simulated pattern as the training-set job's partial result (a live view of the run).

    Parameters
    ----------
    item : dict
        One simulated pattern (:func:`simulate_pattern`'s output).
    fraction : float
        The share of the set simulated.

    Returns
    -------
    PartialMap
        ``log10`` of the pattern's intensity (floored at 1e-6 of its maximum), float32; its
        ``units`` name the crystal and thickness (e.g. ``"log10 intensity: Au, 120 A"``).
    """
    pat = np.asarray(item["pattern"], np.float64)
    logp = np.log10(np.maximum(pat, max(float(pat.max()) * 1e-6, 1e-12))).astype(np.float32)
    m = item["meta"]
    what = f"log10 intensity: {Path(str(m['crystal'])).stem}, {float(m['thickness_A']):.0f} A"
    lo, hi = float(logp.min()), float(logp.max())
    return PartialMap(NEWEST_PATTERN, logp, what, (lo, hi if hi > lo else lo + 1.0), fraction)


def _write(root: Path, name: str, items: Sequence[dict[str, Any]]) -> None:
    meta = {k: np.stack([np.asarray(it["meta"][k]) for it in items]) for k in items[0]["meta"]}
    try:
        write_shard(
            root / name,
            patterns=np.stack([it["pattern"] for it in items]),
            probes=np.stack([it["probe"] for it in items]),
            labels=np.stack([it["label"] for it in items]),
            bragg=[it["bragg"] for it in items],
            meta=meta,
            engine=items[0]["engine"],
            overwrite=True,
        )
    except OSError as e:
        kept = sorted(p.name for p in root.glob("shard-*.h5") if p.name != name)
        why = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else str(e)
        raise FileFormatError(
            root / name,
            f"could not write the shard: {why}; the {len(kept)} shards written before it are "
            "complete and nothing of this one is left",
            "free space (or choose another folder) and run the same command to resume",
        ) from None


def _versions(engine: str) -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("napari-4dstem", "numpy", "pyprismatic", "abtem"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    out["engine"] = engine
    return out
