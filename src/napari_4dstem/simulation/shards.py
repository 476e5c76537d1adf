"""Training-set shards: the contract between simulation jobs and neural-network training.

A training set is a folder with ``manifest.json`` and shards ``shard-00000.h5``, ... Each shard
is one HDF5 file written atomically (temporary file, then rename), so a shard is either complete
or absent: a killed job loses at most the shard in progress.

Shard layout (format ``napari-4dstem-shard``, version 1)::

    /patterns      float32 (n, H, W)   simulated CBED pattern, noise-free, before augmentation
    /probes        float32 (n, H, W)   vacuum probe image for each pattern, same sampling
    /labels        float32 (n, H, W)   target "structure factor" image (one peak per reflection)
    /bragg/offsets int64   (n + 1,)    CSR offsets of each pattern's Bragg reflections
    /bragg/qy, /bragg/qx   float64     reflection positions in pixels (row, column)
    /bragg/intensity       float64     kinematic or simulated intensity of the reflection
    /bragg/hkl     int32   (m, 3)      Miller indices
    /meta/<field>  (n, ...)            per-pattern parameters (see SHARD_META_FIELDS)
    attrs: format, version, engine, n, shape, complete (written last, True)

Axis order ``(k_y, k_x)``; the unscattered beam sits at the pattern centre
``((H - 1) / 2, (W - 1) / 2)`` unless ``meta/origin_px`` says otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import DataShapeError, FileFormatError
from ..io._atomic import atomic_output

__all__ = [
    "SHARD_FORMAT",
    "SHARD_META_FIELDS",
    "ShardSet",
    "TrainingSample",
    "read_manifest",
    "write_manifest",
    "write_shard",
]

SHARD_FORMAT = "napari-4dstem-shard"
SHARD_VERSION = 1
# per-pattern metadata: name -> (trailing shape, dtype, meaning)
SHARD_META_FIELDS: dict[str, tuple[tuple[int, ...], str, str]] = {
    "crystal": ((), "S64", "crystal name"),
    "orientation": ((3, 3), "f8", "U: crystal Cartesian -> lab (x = k_x, y = k_y, z = beam)"),
    "thickness_A": ((), "f8", "sample thickness in Angstrom"),
    "energy_kev": ((), "f8", "beam energy in keV"),
    "convergence_mrad": ((), "f8", "probe convergence semi-angle in mrad"),
    "defocus_A": ((), "f8", "probe defocus in Angstrom"),
    "pixel_size_inv_A": ((), "f8", "detector pixel size in 1/Angstrom"),
    "strain": ((2, 2), "f8", "planted true strain e (x, y components), zeros if none"),
    "origin_px": ((2,), "f8", "unscattered beam position (k_y, k_x) in pixels"),
    "seed": ((), "i8", "random seed of this pattern"),
}


@dataclass(frozen=True)
class TrainingSample:
    """One pattern of a training set with its probe, label, reflections and parameters.

    Attributes
    ----------
    pattern, probe, label : ndarray ``(H, W)`` float32
        The noise-free pattern, its vacuum probe and its label image.
    bragg : dict
        ``qy``, ``qx`` (pixels), ``intensity``, ``hkl`` of its reflections.
    meta : dict
        Its fields of :data:`SHARD_META_FIELDS`.
    """

    pattern: np.ndarray
    probe: np.ndarray
    label: np.ndarray
    bragg: dict[str, np.ndarray]
    meta: dict[str, Any]


def write_shard(
    path: str | os.PathLike,
    *,
    patterns: np.ndarray,
    probes: np.ndarray,
    labels: np.ndarray,
    bragg: Sequence[Mapping[str, np.ndarray]],
    meta: Mapping[str, Sequence[Any] | np.ndarray],
    engine: str,
    overwrite: bool = False,
) -> Path:
    """Write one shard atomically.

    Parameters
    ----------
    path : str or PathLike
        The shard file (``.h5``).
    patterns, probes, labels : ndarray ``(n, H, W)``
        Noise-free patterns, vacuum probes and label images (stored as float32, gzip).
    bragg : sequence of mapping
        One mapping per pattern with ``qy``, ``qx``, ``intensity`` and ``hkl`` (``(m_i, 3)``).
    meta : mapping
        Field names of :data:`SHARD_META_FIELDS` to per-pattern values (missing fields are
        filled with NaN / zeros / empty strings).
    engine : str
        The simulation engine, recorded in the attributes.
    overwrite : bool
        Replace an existing file (default False).

    Returns
    -------
    Path
        The written shard.

    Raises
    ------
    DataShapeError
        When the arrays' shapes disagree, the Bragg lists do not match the patterns, or a meta
        field is unknown or of the wrong shape.
    OutputExistsError
        When the file exists and ``overwrite`` is False.
    """
    patterns = np.asarray(patterns, np.float32)
    probes = np.asarray(probes, np.float32)
    labels = np.asarray(labels, np.float32)
    if patterns.ndim != 3:
        raise DataShapeError(f"patterns must be (n, H, W), got {patterns.shape}")
    n = patterns.shape[0]
    if probes.shape != patterns.shape or labels.shape != patterns.shape:
        raise DataShapeError(f"patterns {patterns.shape}, probes {probes.shape} and labels {labels.shape} must match")
    if len(bragg) != n:
        raise DataShapeError(f"{n} patterns need {n} Bragg lists, got {len(bragg)}")
    unknown = set(meta) - set(SHARD_META_FIELDS)
    if unknown:
        raise DataShapeError(f"unknown shard metadata fields {sorted(unknown)}")
    counts = [len(np.atleast_1d(b["qy"])) for b in bragg]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def cat(key, dtype, tail=()):
        parts = [np.asarray(b[key], dtype).reshape(-1, *tail) for b in bragg]
        return np.concatenate(parts) if parts else np.zeros((0, *tail), dtype)

    with atomic_output(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(
            format=SHARD_FORMAT, version=SHARD_VERSION, engine=engine, n=n, shape=patterns.shape[1:], complete=False
        )
        opts = {"chunks": (1, *patterns.shape[1:]), "compression": "gzip", "compression_opts": 1, "shuffle": True}
        f.create_dataset("patterns", data=patterns, **opts)
        f.create_dataset("probes", data=probes, **opts)
        f.create_dataset("labels", data=labels, **opts)
        g = f.create_group("bragg")
        g["offsets"] = offsets
        g["qy"], g["qx"] = cat("qy", np.float64), cat("qx", np.float64)
        g["intensity"] = cat("intensity", np.float64)
        g["hkl"] = cat("hkl", np.int32, (3,))
        m = f.create_group("meta")
        for name, (tail, dtype, doc) in SHARD_META_FIELDS.items():
            if name in meta:
                v = np.asarray(meta[name], dtype=dtype)
                if v.shape != (n, *tail):
                    raise DataShapeError(f"meta {name!r} must have shape {(n, *tail)}, got {v.shape}")
            else:
                fill = b"" if dtype.startswith("S") else (0 if dtype == "i8" else np.nan)
                if name == "strain":
                    fill = 0.0
                v = np.full((n, *tail), fill, dtype=dtype)
            m.create_dataset(name, data=v).attrs["doc"] = doc
        f.attrs["complete"] = True
    return Path(path)


class ShardSet:
    """Lazy read access to the complete shards of a training-set folder (or a list of files).

    Incomplete or foreign files are skipped (listed in ``skipped``). ``len`` and indexing go
    over all patterns of all shards; files are opened on access, so a ShardSet can be handed to
    worker processes (e.g. a torch DataLoader).

    Parameters
    ----------
    source : str, PathLike or sequence of them
        A training-set folder (its ``shard-*.h5``), a shard file, or several, joined in order.

    Attributes
    ----------
    files : list of Path
        The complete shards.
    counts : list of int
        Patterns per shard.
    skipped : list of (Path, str)
        Files left out and why.

    Raises
    ------
    FileFormatError
        When a source does not exist or no complete shard is found.
    """

    def __init__(self, source: str | os.PathLike | Sequence[str | os.PathLike]):
        """Find the complete shards of ``source`` and count their patterns."""
        # a folder stands for its shards; several folders and files are joined in order
        files = []
        for item in [source] if isinstance(source, str | os.PathLike) else source:
            root = Path(item)
            if not root.exists():
                raise FileFormatError(root, "no such training-set folder or shard")
            files += sorted(root.glob("shard-*.h5")) if root.is_dir() else [root]
        self.files: list[Path] = []
        self.counts: list[int] = []
        self.skipped: list[tuple[Path, str]] = []
        for p in files:
            try:
                with h5py.File(p, "r") as f:
                    if f.attrs.get("format") != SHARD_FORMAT:
                        raise ValueError("not a napari-4dstem shard")
                    if not bool(f.attrs.get("complete", False)):
                        raise ValueError("incomplete shard")
                    self.counts.append(int(f.attrs["n"]))
                    self.files.append(p)
            except (OSError, ValueError, KeyError) as e:
                self.skipped.append((p, str(e)))
        if not self.files:
            raise FileFormatError(
                source if not isinstance(source, list) else ", ".join(map(str, source)),
                "no complete training shards",
                "run `napari-4dstem simulate` first",
            )
        self._starts = np.concatenate([[0], np.cumsum(self.counts)])

    def __len__(self) -> int:
        """The number of patterns in all shards."""
        return int(self._starts[-1])

    def locate(self, i: int) -> tuple[Path, int]:
        """The shard file of pattern ``i`` (negative counts from the end) and its index there."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"pattern {i} out of range for {len(self)} patterns")
        i %= len(self)
        k = int(np.searchsorted(self._starts, i, side="right") - 1)
        return self.files[k], i - int(self._starts[k])

    def __getitem__(self, i: int) -> TrainingSample:
        """Pattern ``i`` with its probe, label, reflections and metadata (read on access)."""
        path, j = self.locate(i)
        with h5py.File(path, "r") as f:
            off = f["bragg/offsets"]
            a, b = int(off[j]), int(off[j + 1])
            bragg = {k: f[f"bragg/{k}"][a:b] for k in ("qy", "qx", "intensity", "hkl")}
            meta = {k: f[f"meta/{k}"][j] for k in f["meta"]}
            meta["crystal"] = meta["crystal"].decode() if isinstance(meta["crystal"], bytes) else meta["crystal"]
            return TrainingSample(f["patterns"][j], f["probes"][j], f["labels"][j], bragg, meta)

    def __iter__(self) -> Iterator[TrainingSample]:
        """Every pattern in order."""
        for i in range(len(self)):
            yield self[i]


def write_manifest(folder: str | os.PathLike, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` (job parameters, shard list) atomically.

    Parameters
    ----------
    folder : str or PathLike
        The training-set folder.
    manifest : mapping
        JSON-able values (numpy arrays, scalars and paths are converted).

    Returns
    -------
    Path
        ``folder/manifest.json``.
    """
    path = Path(folder) / "manifest.json"
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, default=_json_default))
    return path


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """Read ``manifest.json`` of a training-set folder.

    Parameters
    ----------
    folder : str or PathLike
        The training-set folder.

    Returns
    -------
    dict
        The manifest.

    Raises
    ------
    FileFormatError
        When the manifest is missing or not valid JSON.
    """
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise FileFormatError(path, "no manifest.json in the training-set folder")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FileFormatError(path, f"corrupt manifest ({e})") from None


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot store {type(o).__name__} in the manifest")
