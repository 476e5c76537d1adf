"""Fine-tuning a disk-detection network on the user's own data (issue #17 item 4).

The bundled models were trained on simulations; on a new instrument, crystal or dose they may
miss disks (the model card's domain says where they were validated). Fine-tuning adapts one to
the user's data without any simulation:

1. **Labels from correlation.** A few hundred patterns are drawn from the scan (or from a region
   the user picks: a thin area, where template correlation is reliable), and their disks are
   found with the correlation detector (:func:`~napari_4dstem.analysis.bragg.disks.
   detect_in_stack`, with the user's :class:`~napari_4dstem.pipelines.params.DiskDetectionParams`).
   Patterns whose disks the user corrected by hand (added, deleted or moved in napari) are always
   in the set, with the corrected positions as their labels.
2. **The model's frame.** Each pattern, its probe and its disk positions are resampled exactly as
   inference resamples them (:func:`~napari_4dstem.nn.infer.normalised_geometry` with the base
   model's card: the probe disk at the radius the network was trained on), cropped to the
   model's ``size x size`` about the unscattered beam, and written as training shards (the
   :mod:`~napari_4dstem.simulation.shards` format, engine ``"user-correlation"``) with labels
   drawn like the training labels (a unit Gaussian of sigma 1 px per disk).
3. **Training** starts from the base model's weights (:func:`~napari_4dstem.nn.train.iter_train`
   with ``init``), without the synthetic noise augmentation (the patterns already carry the
   detector's own noise), and the result is written to the user's model folder as
   ``<name>-<version>.pt`` with a card: the base model, the data, the labelling parameters, the
   loss history and a domain widened to include the data it was tuned on.

The job yields :class:`~napari_4dstem.engine.jobs.Progress` (labelling, then one step per
training step with the loss) so the napari widget and the command line show it live.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.jobs import Job, Progress
from ..errors import DataShapeError, Napari4DSTEMError

__all__ = [
    "FineTuneConfig",
    "FineTuneResult",
    "correlation_training_set",
    "iter_finetune",
    "read_corrections",
    "write_corrections",
]

CORRECTIONS_FORMAT = "napari-4dstem disk labels"

ENGINE = "user-correlation"


@dataclass(frozen=True)
class FineTuneConfig:
    """What to fine-tune and how.

    Attributes
    ----------
    base : str or None
        The model to start from (registry name[@version] or a ``.pt`` file); None: the bundled
        default.
    n_patterns : int
        Patterns drawn from the scan (or the region) for training and validation.
    epochs, batch_size, lr, warmup_steps, seed, threads, device
        As :class:`~napari_4dstem.nn.train.TrainConfig`; a lower learning rate than training
        from scratch (the weights start good).
    min_peaks : int
        Patterns where correlation finds fewer disks (the central one included) are left out:
        they teach the network little and are often vacuum or thick, unreliable areas.
    val_fraction : float
        Share of the patterns held out to report the validation loss.
    """

    base: str | None = None
    n_patterns: int = 256
    epochs: int = 4
    batch_size: int = 8
    lr: float = 5e-4
    warmup_steps: int = 20
    min_peaks: int = 3
    val_fraction: float = 0.1
    seed: int = 0
    threads: int | None = None
    device: str | None = None

    def __post_init__(self):
        if not (isinstance(self.n_patterns, int) and self.n_patterns >= 4):
            raise ValueError(f"n_patterns must be a whole number >= 4, got {self.n_patterns!r}")
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ValueError(f"epochs must be a whole number >= 1, got {self.epochs!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be a whole number >= 1, got {self.batch_size!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not (isinstance(self.min_peaks, int) and self.min_peaks >= 1):
            raise ValueError(f"min_peaks must be a whole number >= 1, got {self.min_peaks!r}")
        if not (0.0 < self.val_fraction < 1.0):
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")


@dataclass
class FineTuneResult:
    """The fine-tuned model: its file (in the user model folder), name, version and card."""

    path: Path
    name: str
    version: str
    card: dict
    n_train: int
    n_val: int
    history: list = field(default_factory=list)
    wall_s: float = 0.0


def _pick_positions(scan_shape: tuple[int, int], region: np.ndarray | None, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` scan positions ``(m, 2)`` drawn without repetition from ``region`` (all)."""
    if region is None:
        mask = np.ones(scan_shape, bool)
    else:
        mask = np.asarray(region, bool)
        if mask.shape != tuple(scan_shape):
            raise DataShapeError(f"region mask {mask.shape} does not match the scan {tuple(scan_shape)}")
    where = np.argwhere(mask)
    if len(where) < 4:
        raise Napari4DSTEMError(f"the region holds {len(where)} scan position(s); fine-tuning needs at least 4")
    rng = np.random.default_rng(seed)
    take = rng.choice(len(where), size=min(n, len(where)), replace=False)
    return where[np.sort(take)]


def correlation_training_set(
    patterns: np.ndarray,
    probe: np.ndarray,
    folder: str | os.PathLike,
    *,
    base: Any,
    detection: Any = None,
    min_peaks: int = 3,
    per_shard: int = 128,
    labels: Sequence[np.ndarray | None] | None = None,
) -> dict[str, Any]:
    """Label ``patterns (n, k_y, k_x)`` by correlation and write them as training shards.

    ``labels`` (one entry per pattern, or None) gives disk positions ``(m, 2)`` in detector pixels
    ``(k_y, k_x)`` that replace the correlation's for that pattern: labels corrected by hand. A
    corrected pattern is kept whatever ``min_peaks`` says (the user has looked at it) when at
    least one of its disks lies in the model's field of view.

    ``base`` is the :class:`~napari_4dstem.nn.registry.LoadedModel` whose frame (size, depth,
    normalised disk radius from its card) the shards are resampled to; ``detection`` the
    :class:`~napari_4dstem.pipelines.params.DiskDetectionParams` of the correlation labels
    (default: :func:`~napari_4dstem.analysis.bragg.disks.detect_in_stack`'s defaults, a plain
    template). Returns a summary: patterns kept, disks per pattern, the
    geometry (scale, probe radius) and the labelling parameters.
    """
    from ..analysis.bragg.disks import detect_in_stack
    from ..analysis.bragg.probe import make_template
    from ..simulation.shards import write_manifest, write_shard
    from .infer import _geometry_for, to_model_frame
    from .synthetic import render_label

    p = np.asarray(patterns, np.float32)
    if p.ndim != 3:
        raise DataShapeError(f"patterns must be (n, k_y, k_x), got shape {p.shape}")
    probe = np.asarray(probe, np.float32)
    if probe.shape != p.shape[1:]:
        raise DataShapeError(f"probe {probe.shape} must have the patterns' shape {p.shape[1:]}")
    # a DiskDetectionParams (the pipelines' type, duck-typed: nn sits below pipelines)
    kernel, kw = ("plain", {}) if detection is None else (detection.kernel, detection.detect_kwargs())
    template = make_template(probe, kind=kernel)
    peaks, counts = detect_in_stack(p, template, **kw)
    if labels is not None and len(labels) != len(p):
        raise DataShapeError(f"labels: {len(labels)} entries for {len(p)} patterns")
    size = int(base.config.size)
    geo, _ = _geometry_for(probe, p.shape[1:], base, "auto", None, 1024)
    frames = to_model_frame(p, geo)
    probe_frame = to_model_frame(probe[None], geo)[0]
    H, W = frames.shape[1:]
    y0, x0 = H // 2 - size // 2, W // 2 - size // 2
    if y0 < 0 or x0 < 0:
        raise Napari4DSTEMError(f"the model frame {H}x{W} is smaller than the model ({size} px)")
    frames = frames[:, y0 : y0 + size, x0 : x0 + size]
    probe_frame = probe_frame[y0 : y0 + size, x0 : x0 + size]
    keep, centres, bragg = [], [], []
    n_hand = 0
    for i in range(len(p)):
        given = None if labels is None or labels[i] is None else np.asarray(labels[i], float).reshape(-1, 2)
        if given is not None:
            given = given[np.all(np.isfinite(given), axis=1)]
            iy = np.clip(np.round(given[:, 0]).astype(int), 0, p.shape[1] - 1)
            ix = np.clip(np.round(given[:, 1]).astype(int), 0, p.shape[2] - 1)
            q = np.column_stack([given, p[i, iy, ix]])
            need = 1
        else:
            q = peaks[i, : int(counts[i])]
            q = q[np.isfinite(q[:, 0])]
            need = min_peaks
        if len(q) < need:
            continue
        my = (q[:, 0] - geo.centre_px[0]) * geo.scale + H // 2 - y0
        mx = (q[:, 1] - geo.centre_px[1]) * geo.scale + W // 2 - x0
        inside = (my >= 0) & (my <= size - 1) & (mx >= 0) & (mx <= size - 1)
        if inside.sum() < need:
            continue
        n_hand += given is not None
        keep.append(i)
        centres.append(np.stack([my[inside], mx[inside]], -1))
        bragg.append({"qy": my[inside], "qx": mx[inside], "intensity": q[inside, 2],
                      "hkl": np.zeros((int(inside.sum()), 3), int)})  # fmt: skip
    if len(keep) < 4:
        raise Napari4DSTEMError(
            f"correlation found >= {min_peaks} disks in only {len(keep)} of {len(p)} patterns: "
            "pick a region with clear disks (thin, on zone), or lower min_relative"
        )
    m = max(len(c) for c in centres)
    cc = np.full((len(keep), m, 2), np.nan)
    for j, c in enumerate(centres):
        cc[j, : len(c)] = c
    labels = render_label(cc, np.ones(cc.shape[:2]), (size, size), 1.0)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    pats = frames[keep]
    for k, a in enumerate(range(0, len(keep), per_shard)):
        sl = slice(a, a + per_shard)
        n = len(pats[sl])
        path = write_shard(
            folder / f"shard-{k:05d}.h5", patterns=pats[sl], probes=np.repeat(probe_frame[None], n, 0),
            labels=labels[sl], bragg=bragg[sl], meta={"origin_px": np.tile([size // 2, size // 2], (n, 1))},
            engine=ENGINE,
        )  # fmt: skip
        names.append(path.name)
    summary = {
        "patterns_labelled": len(p),
        "patterns_kept": len(keep),
        "disks_per_pattern": float(np.mean([len(c) for c in centres])),
        "scale": float(geo.scale),
        "probe_radius_px": float(geo.probe_radius_px),
        "detector_px": [int(s) for s in p.shape[1:]],
        "detection": {"kernel": kernel, **kw},
        "min_peaks": int(min_peaks),
        "hand_corrected": int(n_hand),
    }
    write_manifest(folder, {"engine": ENGINE, "n_patterns": len(keep), "size": size, "shards": names,
                            "generator": "napari_4dstem.nn.finetune.correlation_training_set", **summary})  # fmt: skip
    return summary


def write_corrections(path: str | os.PathLike, corrections: Mapping[tuple[int, int], np.ndarray]) -> Path:
    """Save disk positions corrected by hand as JSON (what ``finetune --labels`` reads).

    Parameters
    ----------
    path : str or path
        The ``.json`` file to write (replaced atomically).
    corrections : mapping
        ``(iy, ix) -> (m, 2)`` disk positions ``(k_y, k_x)`` in detector pixels.

    Returns
    -------
    Path
        The file written.
    """
    from ..io._atomic import atomic_output

    path = Path(path)
    doc = {
        "format": CORRECTIONS_FORMAT,
        "version": 1,
        "units": "detector pixels, (k_y, k_x)",
        "patterns": [
            {"scan": [int(iy), int(ix)], "disks": np.asarray(v, float).reshape(-1, 2).tolist()}
            for (iy, ix), v in sorted(corrections.items())
        ],
    }
    with atomic_output(path, overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return path


def read_corrections(path: str | os.PathLike) -> dict[tuple[int, int], np.ndarray]:
    """Read hand-corrected disk positions written by :func:`write_corrections`.

    Parameters
    ----------
    path : str or path
        The JSON file.

    Returns
    -------
    dict
        ``(iy, ix) -> (m, 2)`` disk positions in detector pixels.

    Raises
    ------
    FileFormatError
        When the file is not such a JSON document (the message names what is wrong).
    """
    from ..errors import FileFormatError

    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FileFormatError(path, f"not a JSON file of disk labels: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != CORRECTIONS_FORMAT:
        raise FileFormatError(path, f"not a {CORRECTIONS_FORMAT!r} file (its 'format' key)")
    out: dict[tuple[int, int], np.ndarray] = {}
    for k, entry in enumerate(doc.get("patterns", [])):
        try:
            iy, ix = (int(v) for v in entry["scan"])
            disks = np.asarray(entry["disks"], float).reshape(-1, 2)
        except (KeyError, TypeError, ValueError) as e:
            raise FileFormatError(
                path, f"pattern entry {k}: needs 'scan': [iy, ix] and 'disks': [[ky, kx], ...] ({e})"
            ) from None
        if not np.all(np.isfinite(disks)):
            raise FileFormatError(path, f"pattern entry {k} at {(iy, ix)}: disk positions must be finite")
        out[(iy, ix)] = disks
    return out


def _widened(domain: dict, key: str, value: float | None) -> None:
    if value is None or not math.isfinite(value):
        return
    lo, hi = domain.get(key, (value, value))
    domain[key] = [min(float(lo), value), max(float(hi), value)]


def iter_finetune(
    datacube: Any,
    probe: Any,
    *,
    name: str,
    version: str = "1",
    config: FineTuneConfig = FineTuneConfig(),
    detection: Any = None,
    region: np.ndarray | None = None,
    work_dir: str | os.PathLike | None = None,
    corrections: Mapping[tuple[int, int], np.ndarray] | None = None,
) -> Job[FineTuneResult]:
    """Job: fine-tune ``config.base`` on ``datacube`` with correlation labels; save it as
    ``name``/``version`` in the user model folder (see the module docstring).

    ``probe`` is the vacuum probe ``(k_y, k_x)`` (an array or DiffractionImage); ``region`` an
    optional boolean ``(scan_y, scan_x)`` mask of the positions to draw from (a thin area);
    ``work_dir`` keeps the shards and checkpoints (default: a temporary folder, removed);
    ``corrections`` maps scan positions ``(iy, ix)`` to disk positions ``(m, 2)`` in detector
    pixels corrected by hand: those patterns are always in the training set (inside the region or
    not, counted in ``n_patterns``) with these labels instead of the correlation's.
    """
    from ..analysis.virtual.images import as_datacube
    from .registry import DEFAULT_MODEL, load_model, user_model_path
    from .train import TrainConfig, export_model, iter_train

    t0 = time.perf_counter()
    target = user_model_path(name, version)  # validates the name before any work
    if target.exists():
        raise Napari4DSTEMError(f"a user model {name}-{version} exists ({target}); choose another version")
    dc, _ = as_datacube(datacube)
    pr = np.asarray(getattr(probe, "data", probe), np.float32)
    if pr.shape != dc.detector_shape:
        raise DataShapeError(f"probe {pr.shape} must have the detector's shape {dc.detector_shape}")
    base_name = config.base or DEFAULT_MODEL
    base = load_model(base_name)
    hand = {}
    for (iy, ix), v in (corrections or {}).items():
        if not (0 <= int(iy) < dc.scan_shape[0] and 0 <= int(ix) < dc.scan_shape[1]):
            raise DataShapeError(f"a corrected pattern at {(iy, ix)} lies outside the scan {dc.scan_shape}")
        hand[(int(iy), int(ix))] = np.asarray(v, float).reshape(-1, 2)
    n_drawn = max(0, config.n_patterns - len(hand))
    drawn = (
        _pick_positions(dc.scan_shape, region, n_drawn + len(hand), config.seed) if n_drawn else np.zeros((0, 2), int)
    )
    drawn = [tuple(int(v) for v in yx) for yx in drawn if tuple(int(v) for v in yx) not in hand][:n_drawn]
    pos = np.array([*hand, *drawn], int).reshape(-1, 2)
    given = [hand.get((int(iy), int(ix))) for iy, ix in pos]
    yield Progress(0, len(pos), f"reading {len(pos)} patterns")
    patterns = np.empty((len(pos), *dc.detector_shape), np.float32)
    for j, (iy, ix) in enumerate(pos):
        patterns[j] = np.asarray(dc.data[int(iy), int(ix)], np.float32)
        if j % 32 == 31:
            yield Progress(j + 1, len(pos), "reading patterns")
    yield Progress(len(pos), len(pos), "labelling by correlation")
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="n4d-finetune-")
        work = Path(tmp.name)
    else:
        work = Path(work_dir)
    try:
        summary = correlation_training_set(
            patterns, pr, work / "shards", base=base, detection=detection, min_peaks=config.min_peaks,
            labels=given if hand else None,
        )  # fmt: skip
        n_kept = summary["patterns_kept"]
        tcfg = TrainConfig(
            model=base.config, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
            warmup_steps=config.warmup_steps, val_fraction=config.val_fraction,
            val_max=max(1, round(config.val_fraction * n_kept)), strain_scan=None, seed=config.seed,
            device=config.device, threads=config.threads, init=base_name,
        )  # fmt: skip
        train = iter_train(work / "shards", out_dir=work / "train", config=tcfg, resume=False, augment=_Identity())
        result = yield from train
        card = _card(base, base_name, name, version, dc, summary, config, result, patterns, pr)
        path = export_model(result.checkpoint, target, card=card)
    finally:
        if tmp is not None:
            tmp.cleanup()
    n_val = tcfg.val_max
    return FineTuneResult(path, name, str(version), card, n_kept - n_val, n_val, list(result.history),
                          time.perf_counter() - t0)  # fmt: skip


class _Identity:
    """No augmentation: the user's patterns already carry their detector's noise (and the
    held-out ones are scored as they are, against their correlation labels)."""

    validate_as_is = True

    def __call__(self, pattern, label, rng):
        return pattern, label


def _card(base, base_name, name, version, dc, summary, config, result, patterns, probe) -> dict:
    from .infer import estimate_dose_per_disk

    domain = dict(base.card.get("domain", {})) if isinstance(base.card, dict) else {}
    cal = dc.calibration
    _widened(domain, "detector_radius_px", summary["probe_radius_px"])
    _widened(domain, "detector_px", float(max(summary["detector_px"])))
    _widened(domain, "energy_kev", cal.beam_energy_kev)
    _widened(domain, "convergence_mrad", cal.convergence_semiangle_mrad)
    _widened(domain, "dose_per_disk", estimate_dose_per_disk(patterns[: min(len(patterns), 64)]))
    base_version = base.card.get("version", "") if isinstance(base.card, dict) else ""
    return {
        "name": name,
        "version": str(version),
        "description": f"{base_name} fine-tuned on {dc.name} with correlation labels",
        "fine_tuned_from": f"{base.card.get('name', base_name)}@{base_version}".rstrip("@"),
        "training_set": f"{summary['patterns_kept']} patterns of {dc.source or dc.name}, disks found by correlation"
        + (f" ({summary['hand_corrected']} corrected by hand)" if summary.get("hand_corrected") else ""),
        "fine_tune": {
            **summary,
            "config": dataclasses.asdict(config),
            "source": dc.source,
            "scan_shape": list(dc.scan_shape),
        },
        "intended_use": "disk detection on data like the one it was tuned on",
        "limitations": "labels are correlation's: the network learns correlation's disks on this data, "
        "including its misses; check its recall against correlation on a held-out region",
        "licence": "user",
        "domain": domain,
    }
