"""Datacubes in the HDF5 layouts of py4DSTEM before 0.14 (0.9 to 0.13).

py4DSTEM 0.14 writes EMD 1.0 (``io/emd.py``). Earlier releases wrote (read from py4DSTEM's own
legacy readers, whose layouts we follow; no code copied):

* **0.9 to 0.12**: a top-level group (usually ``4DSTEM_experiment``) with attributes
  ``emd_group_type = 2``, ``version_major = 0``, ``version_minor``; datacubes at
  ``<top>/data/datacubes/<name>/data`` (4D, ``(Rx, Ry, Qx, Qy)`` = our axis order), with dim
  vectors ``dim1`` to ``dim4`` (attributes ``name``, ``units``).
* **0.13**: a top-level group with ``emd_group_type = 'root'`` and ``version_minor = 13``;
  arrays are groups with ``emd_group_type = 1`` and ``py4dstem_class`` (``DataCube``) holding
  ``data`` and ``dim0`` to ``dim3``; metadata groups (``emd_group_type = 0``) hold typed
  datasets, among them ``calibration`` (``R_pixel_size``, ``Q_pixel_size``, units, ...).

The datacube opens lazily (h5py behind the array). The calibration comes from a 0.13
``calibration`` group when there is one, else from the dim vectors when their units are
lengths (nm, A) or inverse lengths (A^-1).

Status: checked only on files written here from this description; no real pre-0.14 file was
available (the real ``py4DSTEM_size2x3x4x5.h5`` is 0.14 EMD 1.0 and opens through ``emd``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py

from ..data.calibration import Calibration
from ..data.datacube import DataCube
from ..errors import CalibrationError, FileFormatError
from ._helpers import HDF5_SIGNATURE, check_eager, header_calibration, never_raises, read_head, require_regular
from .emd import _attr, _calibration_from_items, _check_allocated, _check_sources, _read_item

__all__ = ["is_legacy_py4dstem", "read_datacube", "version"]


def _version(g: h5py.Group) -> tuple[int, int] | None:
    try:
        return int(_attr(g, "version_major")), int(_attr(g, "version_minor"))
    except (TypeError, ValueError):
        return None


def _tops(f: h5py.File) -> list[tuple[str, tuple[int, int]]]:
    """Top-level groups that are pre-0.14 py4DSTEM trees, with their versions."""
    out = []
    for k, g in f.items():
        if not isinstance(g, h5py.Group):
            continue
        gt, v = _attr(g, "emd_group_type"), _version(g)
        if v is None or v[0] != 0:
            continue
        if (gt == "root" and v[1] == 13) or (_is_int(gt, 2) and 9 <= v[1] <= 12):
            out.append((k, v))
    return out


def _is_int(v: Any, n: int) -> bool:
    try:
        return not isinstance(v, str) and int(v) == n
    except (TypeError, ValueError):
        return False


@never_raises
def is_legacy_py4dstem(path: str | os.PathLike) -> bool:
    """True for an HDF5 file written by py4DSTEM 0.9 to 0.13. Never raises."""
    if read_head(path, 8) != HDF5_SIGNATURE:
        return False
    with h5py.File(path, "r") as f:
        return bool(_tops(f))


def version(path: str | os.PathLike) -> tuple[int, int]:
    """``(0, minor)`` of the first py4DSTEM tree in the file.

    Parameters
    ----------
    path : str or path
        An HDF5 file.

    Returns
    -------
    (int, int)
        The py4DSTEM version that wrote it.

    Raises
    ------
    FileFormatError
        When the file has no py4DSTEM 0.9-0.13 tree.
    """
    with h5py.File(path, "r") as f:
        tops = _tops(f)
        if not tops:
            raise FileFormatError(path, "not a py4DSTEM 0.9-0.13 file")
        return tops[0][1]


def _cubes(f: h5py.File, top: str, v: tuple[int, int]) -> list[h5py.Group]:
    g = f[top]
    if v[1] <= 12:
        dcs = g.get("data/datacubes")
        cands = [dcs[k] for k in sorted(dcs)] if isinstance(dcs, h5py.Group) else []
    else:
        cands = []
        g.visititems(lambda _, o: cands.append(o) if isinstance(o, h5py.Group)
                     and _is_int(_attr(o, "emd_group_type"), 1)
                     and _attr(o, "py4dstem_class") == "DataCube" else None)  # fmt: skip
    return [c for c in cands if isinstance(c.get("data"), h5py.Dataset) and c["data"].ndim == 4]


def _calibration(f: h5py.File, top: str, cube: h5py.Group, v: tuple[int, int]) -> Calibration:
    found: list[h5py.Group] = []
    f[top].visititems(lambda n, o: found.append(o) if isinstance(o, h5py.Group)
                      and n.split("/")[-1].lower() == "calibration"
                      and _is_int(_attr(o, "emd_group_type"), 0) else None)  # fmt: skip
    if found:
        items = {k: _read_item(d) for k, d in found[0].items()}
        try:
            return _calibration_from_items(None, items, cube["data"].shape[:2])
        except (CalibrationError, TypeError, ValueError) as e:
            raise FileFormatError(f.filename, f"invalid calibration in the file: {e}") from None
    # dim vectors: dim1..dim4 (0.9-0.12) or dim0..dim3 (0.13)
    first = 1 if v[1] <= 12 else 0
    steps, units = [], []
    for i in range(first, first + 4):
        d = cube.get(f"dim{i}")
        if not isinstance(d, h5py.Dataset) or d.ndim != 1 or d.shape[0] < 2:
            steps.append(None)
            units.append("")
            continue
        check_eager(f.filename, 2 * d.dtype.itemsize, f"dim vector {d.name}")
        a = d[:2].astype(float)
        steps.append(float(a[1] - a[0]))
        units.append(str(_attr(d, "units", "")).strip("[] ").replace("_", ""))
    kw: dict[str, Any] = {}
    r_units = {"nm": "nm", "A": "A", "Å": "A"}
    if steps[0] and steps[1] and units[0] in r_units and units[0] == units[1]:
        kw.update(scan_step=(abs(steps[0]), abs(steps[1])), scan_units=r_units[units[0]])
    if steps[2] and units[2] in ("A^-1", "1/A") and units[2] == units[3] and steps[2] == steps[3]:
        kw.update(k_pixel_size=abs(steps[2]), k_units="1/A")
    return header_calibration(**kw)


def read_datacube(path: str | os.PathLike, *, node: str | None = None) -> DataCube:
    """Open the (first, or the one named ``node``) datacube of a py4DSTEM 0.9-0.13 file lazily.

    Parameters
    ----------
    path : str or path
        The HDF5 file.
    node : str, optional
        The datacube's name (default the first).

    Returns
    -------
    DataCube
        Over the HDF5 dataset, with the calibration of the 0.13 calibration group or the dim
        vectors; the file stays open until :meth:`DataCube.close` is called.

    Raises
    ------
    FileFormatError
        For a file that is not readable HDF5 or has no legacy py4DSTEM group, no datacube (or
        none named ``node``), or non-numeric values.
    """
    p = Path(path)
    require_regular(p)
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise FileFormatError(p, f"not a readable HDF5 file, truncated or corrupt ({e})") from None
    try:
        tops = _tops(f)
        if not tops:
            raise FileFormatError(p, "not a py4DSTEM 0.9-0.13 file (no legacy py4DSTEM group)")
        top, v = tops[0]
        cubes = _cubes(f, top, v)
        if node is not None:
            cubes = [c for c in cubes if c.name.split("/")[-1] == node or c.name == node]
        if not cubes:
            names = [c.name for c in _cubes(f, top, v)]
            what = f"no datacube named {node!r} (datacubes: {names})" if node else "no 4D datacube"
            raise FileFormatError(p, f"py4DSTEM 0.{v[1]} file with {what}")
        cube = cubes[0]
        dset = cube["data"]
        if dset.dtype.kind not in "uifb":
            raise FileFormatError(p, f"datacube {cube.name} holds {dset.dtype} values, not numbers")
        _check_sources(f, dset)  # as for EMD 1.0: no fill values opened as data
        _check_allocated(f, dset)
        cal = _calibration(f, top, cube, v)
        meta = {"format": f"py4DSTEM 0.{v[1]} HDF5", "node": cube.name,
                "units": str(_attr(dset, "units", ""))}  # fmt: skip
        return DataCube(dset, cal, name=cube.name.split("/")[-1], metadata=meta, source=str(p),
                        on_close=f.close)  # fmt: skip
    except Exception:
        f.close()
        raise
