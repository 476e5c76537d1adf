"""EMD 1.0 HDF5 files in the layout py4DSTEM 0.14 (emdfile) reads and writes.

Layout (what py4DSTEM writes, and what we write)::

    /                      attrs emd_group_type="file", version_major=1, version_minor=0, UUID
    /<root>                emd_group_type="root"
      metadatabundle/calibration          py4DSTEM Calibration (R_pixel_size, Q_pixel_size,
                                          qx0/qy0 origin, a/b/theta ellipse, QR_rotation...)
      metadatabundle/napari_4dstem_calibration   our Calibration, field by field (exact)
      <datacube>           emd_group_type="array", python_class="DataCube": data, dim0..dim3
        <map>              python_class="RealSlice": a RealSpaceMap (+ gen_params metadata)
        <image>            python_class="DiffractionSlice": a DiffractionImage
        <peaks>            python_class="BraggVectors": _v_uncal ragged peak lists

Axis names: py4DSTEM calls the four axes ``(Rx, Ry, Qx, Qy)`` with *x first* meaning the first
array axis; the array order is the same as ours, ``(scan_y, scan_x, k_y, k_x)``. So py4DSTEM's
``qx0`` (origin along the first detector axis) is our origin ``k_y``, and a py4DSTEM Bragg
vector's ``qx`` is our ``qy``. The mapping is done here and nowhere else.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from numbers import Number
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..data.calibration import Calibration
from ..data.datacube import DataCube
from ..data.results import BraggPeaks, DiffractionImage, RealSpaceMap
from ..engine.chunks import iter_scan_blocks
from ..engine.jobs import Progress
from ..errors import CalibrationError, DataShapeError, FileFormatError
from ._atomic import atomic_output, write_doc
from ._h5safe import check_dataset, read_attr
from ._helpers import HDF5_SIGNATURE, never_raises, read_head, require_regular

__all__ = [
    "EMDNode",
    "is_emd",
    "list_nodes",
    "read",
    "read_calibration",
    "read_datacube",
    "read_provenance",
    "write",
]

_OUR_CAL = "napari_4dstem_calibration"
_OUR_META = "napari_4dstem"
_R_UNITS_TO_P4 = {"px": "pixels", "A": "A", "nm": "nm", "um": "um"}
_Q_UNITS_TO_P4 = {"px": "pixels", "1/A": "A^-1", "mrad": "mrad"}
# HDF5 chunk cache when we open a file: holds several (8, 8, Qy, Qx) chunks so that stepping
# the scan position in napari does not re-decompress the same chunk.
_RDCC_NBYTES = 64 * 2**20


def _attr(obj, key, default=None):
    # h5py allocates an attribute's declared shape, and libhdf5 each variable-length string's
    # declared length, before reading: a corrupt dataspace in a 17 KB file asked for 1.5 GB, a
    # corrupt string length for 2.2 GB. read_attr checks both against the file first.
    return read_attr(obj, key, default)


# ------------------------------------------------------------------------------------------
# metadata groups (emdfile's typed datasets)
# ------------------------------------------------------------------------------------------
def _write_item(grp: h5py.Group, k: str, v: Any) -> None:
    if isinstance(v, Mapping):
        sub = grp.create_group(k)
        sub.attrs["type"] = "dict"
        for kk, vv in v.items():
            _write_item(sub, str(kk), vv)
    elif v is None:
        grp.create_dataset(k, data=b"_None").attrs["type"] = "None"
    elif isinstance(v, str):
        grp.create_dataset(k, data=v.encode("utf-8")).attrs["type"] = "string"
    elif isinstance(v, bool | np.bool_):
        grp.create_dataset(k, data=bool(v), dtype=bool).attrs["type"] = "bool"
    elif isinstance(v, Number):
        grp.create_dataset(k, data=v).attrs["type"] = "number"
    elif isinstance(v, np.ndarray):
        grp.create_dataset(k, data=v).attrs["type"] = "array"
    elif isinstance(v, tuple | list):
        kind = "tuple" if isinstance(v, tuple) else "list"
        items = list(v)
        if all(isinstance(x, str) for x in items) and items:
            sub = grp.create_group(k)
            sub.attrs["type"] = f"{kind}_of_strings"
            sub.attrs["length"] = len(items)
            for i, s in enumerate(items):
                sub.create_dataset(str(i), data=s.encode("utf-8"))
        elif all(isinstance(x, Number) for x in items):
            grp.create_dataset(k, data=np.asarray(items)).attrs["type"] = kind
        else:
            sub = grp.create_group(k)
            sub.attrs["type"] = f"{kind}_of_arrays"
            sub.attrs["length"] = len(items)
            for i, x in enumerate(items):
                sub.create_dataset(str(i), data=np.asarray(x))
    else:
        # anything else is kept as its text so a result file always says what made it
        grp.create_dataset(k, data=repr(v).encode("utf-8")).attrs["type"] = "string"


def _write_metadata(node: h5py.Group, name: str, items: Mapping[str, Any], cls="Metadata"):
    bundle = node.require_group("metadatabundle")
    bundle.attrs["emd_group_type"] = "metadatabundle"
    grp = bundle.create_group(name)
    grp.attrs["emd_group_type"] = "metadata"
    grp.attrs["python_class"] = cls
    for k, v in items.items():
        _write_item(grp, str(k), v)
    return grp


def _register_filters(f: h5py.File | None = None) -> None:
    """Register hdf5plugin's filters (Blosc2, bitshuffle/LZ4, zstd...) with h5py when ``f`` needs one.

    Register hdf5plugin's filters with h5py, so that a compressed EMD opens whether or not another
    reader imported hdf5plugin first. With an open file ``f``, only when one of its datasets uses a
    filter HDF5 does not have (:func:`_needs_filter_plugin`): importing hdf5plugin cost 0.18 s of
    the GUI thread at napari's first Open of a gzip or uncompressed file, which needs none (#15).
    It is imported here, on the thread that opens the file, never later in a worker reading chunks.
    """
    if f is not None and not _needs_filter_plugin(f):
        return
    try:
        import hdf5plugin  # noqa: F401
    except ImportError:  # optional: only compressed files need it, and h5py says which filter
        pass


def _needs_filter_plugin(f: h5py.File) -> bool:
    """Whether a dataset of ``f`` uses a filter that HDF5 has not registered (True when in doubt)."""
    missing: list[int] = []

    def visit(_name, obj) -> None:
        if isinstance(obj, h5py.Dataset):
            plist = obj.id.get_create_plist()
            for i in range(plist.get_nfilters()):
                code = int(plist.get_filter(i)[0])
                if not h5py.h5z.filter_avail(code):
                    missing.append(code)

    try:
        f.visititems(visit)
    except Exception:
        return True
    return bool(missing)


def _eager(dset) -> Any:
    """``dset[()]`` after checking that the file can hold it.

    ``dset[()]`` after checking that its declared size is not more than twice the file's (and its
    variable-length references against the file's global heap).
    """
    if isinstance(dset, h5py.Dataset):
        check_dataset(dset)
    return dset[()]


def _read_item(obj) -> Any:
    t = _attr(obj, "type")
    if t == "dict":
        return {k: _read_item(v) for k, v in obj.items()}
    if t == "None":
        return None
    if isinstance(obj, h5py.Dataset):
        check_dataset(obj, f"metadata {obj.name}")
    if t in ("string",):
        v = obj[()]
        return v.decode("utf-8") if isinstance(v, bytes) else str(v)
    if t == "bool":
        return bool(obj[()])
    if t == "number":
        return obj[()].item()
    if t == "array":
        return obj[()]
    if t in ("tuple", "list"):
        v = obj[()]
        v = v.tolist() if isinstance(v, np.ndarray) else [v]
        return tuple(v) if t == "tuple" else v
    if t is not None and t.endswith(("_of_strings", "_of_arrays", "_of_tuples")):
        n = min(int(_attr(obj, "length", len(obj))), len(obj))
        vals = [_eager(obj[str(i)]) for i in range(n)]
        vals = [v.decode("utf-8") if isinstance(v, bytes) else v for v in vals]
        if t.endswith("_of_tuples"):
            vals = [tuple(np.atleast_1d(v).tolist()) if np.ndim(v) else v.item() for v in vals]
        return tuple(vals) if t.startswith("tuple") else vals
    if isinstance(obj, h5py.Dataset):
        return obj[()]
    return None


def _read_metadata(node: h5py.Group) -> dict[str, dict[str, Any]]:
    """All metadata groups under a node's metadatabundle, as ``{name: {key: value}}``."""
    bundle = node.get("metadatabundle")
    if bundle is None:
        return {}
    out = {}
    for name, grp in bundle.items():
        if isinstance(grp, h5py.Group):
            try:
                out[name] = {k: _read_item(v) for k, v in grp.items()}
            except (KeyError, ValueError, TypeError, AttributeError, OSError) as e:
                if isinstance(e, FileFormatError):
                    raise
                raise FileFormatError(
                    node.file.filename, f"unreadable metadata group {grp.name} ({type(e).__name__}: {e})"
                ) from None
    return out


# ------------------------------------------------------------------------------------------
# calibration <-> py4DSTEM Calibration and our exact record
# ------------------------------------------------------------------------------------------
def _wrap_deg(a: float) -> float:
    """Angle in (-180, 180]."""
    a = math.fmod(a, 360.0)
    if a <= -180.0:
        a += 360.0
    elif a > 180.0:
        a -= 360.0
    return a


def rotation_to_py4dstem(rotation_deg: float, flip: bool) -> float:
    """py4DSTEM's ``QR_rotation_degrees`` for our ``(rotation_deg, flip)``.

    Ours (``analysis/virtual/dpc.py``): mirror ``k_x`` if ``flip``, then rotate ``(v_x, v_y)`` by
    ``+rotation_deg`` into scan axes. py4DSTEM (``BraggVectors.cal``): rotate
    ``(qx, qy) = (v_y, v_x)``, or the swapped ``(v_x, v_y)`` if ``QR_flip``, by
    ``QR_rotation`` into ``(Rx, Ry) = (scan_y, scan_x)``. Equating the two gives
    ``QR = -rotation`` without flip and ``QR = -(rotation + 90)`` with it.
    """
    return _wrap_deg(-rotation_deg - (90.0 if flip else 0.0))


def rotation_from_py4dstem(qr_rotation_deg: float, flip: bool) -> float:
    """Our ``rotation_deg`` for py4DSTEM's ``QR_rotation_degrees`` (inverse of the above)."""
    return _wrap_deg(-qr_rotation_deg - (90.0 if flip else 0.0))


def _calibration_items_p4(cal: Calibration, target_paths: list[str]) -> dict[str, Any]:
    items: dict[str, Any] = {
        "R_pixel_size": float(cal.scan_step[0]) if cal.scan_step else 1.0,
        "R_pixel_units": _R_UNITS_TO_P4[cal.scan_units],
        "Q_pixel_size": float(cal.k_pixel_size) if cal.k_pixel_size else 1.0,
        "Q_pixel_units": _Q_UNITS_TO_P4[cal.k_units],
        "QR_flip": bool(cal.flip),
        "_root_treepath": "",
        "_target_paths": list(target_paths),
    }
    if cal.rotation_deg is not None:
        p4_deg = rotation_to_py4dstem(cal.rotation_deg, cal.flip)
        items["QR_rotation_degrees"] = p4_deg
        items["QR_rotation"] = math.radians(p4_deg)
    if cal.origin_px is not None:
        items["qx0_mean"], items["qy0_mean"] = (float(v) for v in cal.origin_px)
    if cal.origin_map_px is not None:
        items["qx0"] = np.ascontiguousarray(cal.origin_map_px[..., 0])
        items["qy0"] = np.ascontiguousarray(cal.origin_map_px[..., 1])
    if cal.ellipse is not None:
        a, b, th = cal.ellipse
        # py4DSTEM's theta is the angle of the a axis from its x axis (our k_y) in radians;
        # ours is measured from k_x towards k_y, so the two are complementary.
        items["a"], items["b"], items["theta"] = a, b, math.radians(90.0 - th)
    if cal.convergence_semiangle_mrad is not None:
        items["convergence_semiangle_mrad"] = float(cal.convergence_semiangle_mrad)
        try:
            items["probe_semiangle"] = cal.convergence_semiangle_mrad / cal.k_pixel_size_in("mrad")
        except CalibrationError:
            pass
    return items


def _our_calibration_items(cal: Calibration) -> dict[str, Any]:
    d = cal.to_dict()
    d.pop("origin_map_shape", None)
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}


def _calibration_from_items(ours: Mapping[str, Any] | None, p4: Mapping[str, Any] | None, scan_shape) -> Calibration:
    origin_map = None
    if p4 is not None and isinstance(p4.get("qx0"), np.ndarray) and isinstance(p4.get("qy0"), np.ndarray):
        if p4["qx0"].shape == tuple(scan_shape) and p4["qy0"].shape == tuple(scan_shape):
            origin_map = np.stack([p4["qx0"], p4["qy0"]], axis=-1)
    if ours is not None:
        kw = dict(ours)
        kw["origin_map_px"] = origin_map
        return Calibration.from_dict(kw)
    if p4 is None:
        return Calibration()
    units_r = {"pixels": "px", "A": "A", "nm": "nm", "um": "um"}.get(p4.get("R_pixel_units"), "px")
    units_q = {"pixels": "px", "A^-1": "1/A", "mrad": "mrad"}.get(p4.get("Q_pixel_units"), "px")
    r, q = p4.get("R_pixel_size"), p4.get("Q_pixel_size")
    kw: dict[str, Any] = {
        "scan_step": (r, r) if units_r != "px" and r else None,
        "scan_units": units_r if r else "px",
        "k_pixel_size": q if units_q != "px" and q else None,
        "k_units": units_q if q else "px",
        "flip": bool(p4.get("QR_flip", False)),
        "origin_map_px": origin_map,
    }
    if units_r == "px":
        kw["scan_step"] = None
    if units_q == "px":
        kw["k_pixel_size"] = None
    if p4.get("QR_rotation_degrees") is not None:
        kw["rotation_deg"] = rotation_from_py4dstem(p4["QR_rotation_degrees"], kw["flip"])
    elif p4.get("QR_rotation") is not None:
        kw["rotation_deg"] = rotation_from_py4dstem(math.degrees(p4["QR_rotation"]), kw["flip"])
    if origin_map is None and p4.get("qx0_mean") is not None and p4.get("qy0_mean") is not None:
        kw["origin_px"] = (p4["qx0_mean"], p4["qy0_mean"])
    if all(p4.get(k) is not None for k in ("a", "b", "theta")):
        kw["ellipse"] = (p4["a"], p4["b"], 90.0 - math.degrees(p4["theta"]))
    if p4.get("convergence_semiangle_mrad") is not None:
        kw["convergence_semiangle_mrad"] = p4["convergence_semiangle_mrad"]
    return Calibration(**kw)


# ------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EMDNode:
    """One node of an EMD file: its HDF5 path, py4DSTEM class and data shape.

    Attributes
    ----------
    path : str
        HDF5 path of the node's group.
    python_class : str
        The py4DSTEM class it was written as (``DataCube``, ``RealSlice``...), or ``""``.
    group_type : str
        EMD ``emd_group_type`` (``"array"``, ``"pointlistarray"``...).
    shape : tuple of int or None
        Shape of its data (None when it has no array).
    """

    path: str
    python_class: str
    group_type: str
    shape: tuple[int, ...] | None


@never_raises
def is_emd(path: str | os.PathLike) -> bool:
    """Cheap sniff: an HDF5 file whose root says ``emd_group_type = 'file'``. Never raises."""
    if read_head(path, 8) != HDF5_SIGNATURE:  # regular files only: no FIFO hang
        return False
    with h5py.File(path, "r") as f:
        return _attr(f, "emd_group_type") == "file"


def _open(path: str | os.PathLike) -> h5py.File:
    p = Path(path)
    if not p.exists():
        raise FileFormatError(p, "no such file")
    if p.is_dir():
        raise FileFormatError(p, "is a folder, not an EMD/HDF5 file")
    require_regular(p)
    try:
        f = h5py.File(p, "r", rdcc_nbytes=_RDCC_NBYTES)
    except OSError as e:
        raise FileFormatError(p, f"not a readable HDF5 file, truncated or corrupt ({e})") from None
    _register_filters(f)
    if _attr(f, "emd_group_type") != "file":
        f.close()
        raise FileFormatError(p, "HDF5 file without EMD 1.0 root attributes (emd_group_type='file')")
    major = _attr(f, "version_major")
    try:
        major = None if major is None else int(major)
    except (TypeError, ValueError):
        f.close()
        raise FileFormatError(p, f"EMD version {major!r} is not a number") from None
    if major is not None and major != 1:
        f.close()
        raise FileFormatError(p, f"EMD version {major} is not supported (need 1.x)")
    return f


def _walk(f: h5py.File) -> list[EMDNode]:
    nodes: list[EMDNode] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Group):
            gt = _attr(obj, "emd_group_type")
            if gt in ("array", "custom", "pointlistarray", "pointlist", "custom_pointlistarray"):
                d = obj.get("data")
                shape = tuple(d.shape) if isinstance(d, h5py.Dataset) else None
                nodes.append(EMDNode("/" + name, str(_attr(obj, "python_class", "")), gt, shape))

    f.visititems(visit)
    return nodes


def list_nodes(path: str | os.PathLike) -> list[EMDNode]:
    """Every data node in an EMD file (datacubes, maps, peak lists) without reading data.

    Parameters
    ----------
    path : str or path
        The EMD file.

    Returns
    -------
    list of EMDNode
        In the file's order.

    Raises
    ------
    FileFormatError
        For a missing file, a folder, a file that is not readable HDF5, or HDF5 without EMD 1.x
        root attributes.
    """
    with _open(path) as f:
        return _walk(f)


def _root_of(f: h5py.File, node_path: str) -> h5py.Group:
    top = node_path.strip("/").split("/")[0]
    return f[top]


def _calibration_for(f: h5py.File, node_path: str, scan_shape) -> Calibration:
    md = _read_metadata(_root_of(f, node_path))
    try:
        return _calibration_from_items(md.get(_OUR_CAL), md.get("calibration"), scan_shape)
    except (CalibrationError, TypeError, ValueError) as e:
        raise FileFormatError(f.filename, f"invalid calibration in the file: {e}") from None


def _find_datacube(f: h5py.File, node: str | None) -> EMDNode:
    nodes = _walk(f)
    if node is not None:
        for n in nodes:
            if n.path.rstrip("/") == "/" + node.strip("/") or n.path.split("/")[-1] == node:
                if n.shape is None or len(n.shape) != 4:
                    raise FileFormatError(f.filename, f"node {n.path} is not a 4D datacube (shape {n.shape})")
                return n
        raise FileFormatError(f.filename, f"no node named {node!r}", f"nodes: {[n.path for n in nodes]}")
    cubes = [n for n in nodes if n.python_class == "DataCube" and n.shape and len(n.shape) == 4]
    cubes = cubes or [n for n in nodes if n.group_type == "array" and n.shape and len(n.shape) == 4]
    if not cubes:
        found = ", ".join(f"{n.path} {n.shape}" for n in nodes) or "none"
        raise FileFormatError(f.filename, f"no 4D datacube in this EMD file (nodes: {found})")
    return cubes[0]


def read_datacube(path: str | os.PathLike, *, node: str | None = None) -> DataCube:
    """Open the (first, or named) 4D datacube of an EMD file lazily (h5py behind the array).

    Parameters
    ----------
    path : str or path
        The EMD file.
    node : str, optional
        The node's name or HDF5 path (default: the first py4DSTEM DataCube, else the first 4D
        array).

    Returns
    -------
    DataCube
        Over the HDF5 dataset, with the file's calibration and our metadata; the file stays
        open until :meth:`DataCube.close` is called.

    Raises
    ------
    FileFormatError
        As :func:`list_nodes`; for no 4D datacube (or none named ``node``), a virtual dataset
        that maps a missing file, unallocated data, or an invalid calibration.
    """
    f = _open(path)
    try:
        info = _find_datacube(f, node)
        dset = f[info.path]["data"]
        _check_sources(f, dset)
        _check_allocated(f, dset)
        cal = _calibration_for(f, info.path, dset.shape[:2])
        meta = _read_metadata(f[info.path])
        ours = meta.get(_OUR_META, {})
        return DataCube(
            dset,
            cal,
            name=info.path.rstrip("/").split("/")[-1],
            metadata={"emd_node": info.path, **{k: v for k, v in ours.items() if k != "result_type"}},
            source=str(path),
            on_close=_closer(f),
        )
    except Exception:
        f.close()
        raise


def _closer(f: h5py.File):
    """Close the file and the direct-chunk memory maps made for its datasets."""
    name = f.filename

    def close():
        from ._h5direct import drop_readers

        drop_readers(name)
        f.close()

    return close


def _check_allocated(f: h5py.File, dset: h5py.Dataset) -> None:
    """Refuse a datacube whose storage is not all written.

    The datacube's storage must be written: a contiguous dataset whole, a chunked one every chunk. A small
    file declaring a huge, never written dataset (or one cut short by a killed writer) would otherwise open
    and read as fill values.
    """
    if dset.is_virtual:
        return
    if dset.chunks is None:
        have, need = dset.id.get_storage_size(), dset.size * dset.dtype.itemsize
        what = "bytes"
    else:
        need = math.prod(-(-int(s) // int(c)) for s, c in zip(dset.shape, dset.chunks, strict=True))
        have = dset.id.get_num_chunks() if need < 2**40 else 0
        what = "chunks"
    if have < need:
        raise FileFormatError(
            f.filename, f"datacube {dset.name} {tuple(dset.shape)} has only {have} of its {need} "
            f"{what} stored: the file was not completely written, or its shape was altered",
        )  # fmt: skip


def _check_sources(f: h5py.File, dset: h5py.Dataset) -> None:
    """Refuse a virtual dataset with a missing source file or dataset.

    A virtual dataset must have every source file and dataset it maps: HDF5 returns fill values for a missing
    one, which would open as silently wrong data.
    """
    if not dset.is_virtual:
        return
    here = Path(f.filename).parent
    for vs in dset.virtual_sources():
        src = Path(f.filename) if vs.file_name == "." else here / vs.file_name
        if not src.is_file():
            raise FileFormatError(f.filename, f"virtual dataset {dset.name} maps the missing file {vs.file_name}")
        try:
            with h5py.File(src, "r") as g:
                ok = isinstance(g.get(vs.dset_name), h5py.Dataset)
        except OSError:
            ok = False
        if not ok:
            raise FileFormatError(
                f.filename, f"virtual dataset {dset.name} maps {vs.file_name}:{vs.dset_name}, "
                "which does not exist",
            )  # fmt: skip


def read_calibration(path: str | os.PathLike) -> Calibration:
    """The calibration stored with the first datacube (or first root) of an EMD file.

    Parameters
    ----------
    path : str or path
        The EMD file.

    Returns
    -------
    Calibration
        Ours when the file records it, else converted from py4DSTEM's calibration.

    Raises
    ------
    FileFormatError
        As :func:`list_nodes`, or for an invalid calibration.
    """
    with _open(path) as f:
        nodes = _walk(f)
        if not nodes:
            return Calibration()
        cubes = [n for n in nodes if n.shape and len(n.shape) == 4]
        n = cubes[0] if cubes else nodes[0]
        scan_shape = n.shape[:2] if n.shape and len(n.shape) >= 2 else ()
        return _calibration_for(f, n.path, scan_shape)


def _read_peaks(grp: h5py.Group, cal: Calibration, name: str, params) -> BraggPeaks:
    dset = grp["_v_uncal"]["data"]
    raw = _eager(dset)
    scan_shape = tuple(dset.shape)
    lists = raw.reshape(-1)
    counts = np.array([len(x) for x in lists], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    cols: dict[str, np.ndarray] = {}
    for ours, theirs in (("qy", "qx"), ("qx", "qy"), ("intensity", "intensity"), ("correlation", "correlation")):
        parts = [x[theirs] if x.dtype.names and theirs in x.dtype.names else np.full(len(x), np.nan) for x in lists]
        cols[ours] = np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)
    return BraggPeaks(scan_shape, offsets, name=name, calibration=cal, params=params, **cols)


def read_provenance(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """What every result node of a file records of how it was made.

    Parameters
    ----------
    path : str or path
        The EMD file.

    Returns
    -------
    dict of str to dict
        ``{node_name: {software, software_version, written_utc, input_file, input_size_bytes,
        input_mtime_utc}}`` for the nodes that record it.

    Raises
    ------
    FileFormatError
        As :func:`list_nodes`.
    """
    with _open(path) as f:
        out = {}
        for n in _walk(f):
            ours = _read_metadata(f[n.path]).get(_OUR_META, {})
            keep = {k: v for k, v in ours.items() if k.startswith(("software", "written", "input_"))}
            if keep:
                out[n.path.rstrip("/").split("/")[-1]] = keep
        return out


def read(path: str | os.PathLike) -> dict[str, Any]:
    """Everything in an EMD file.

    Parameters
    ----------
    path : str or path
        The EMD file.

    Returns
    -------
    dict of str to object
        ``{node_name: DataCube | RealSpaceMap | DiffractionImage | BraggPeaks}``. Datacubes stay
        lazy (close them when done); results are read into memory.

    Raises
    ------
    FileFormatError
        As :func:`list_nodes` and :func:`read_datacube`.
    """
    f = _open(path)
    out: dict[str, Any] = {}
    keep_open = False
    try:
        for n in _walk(f):
            grp = f[n.path]
            name = n.path.rstrip("/").split("/")[-1]
            md = _read_metadata(grp)
            params = md.get("gen_params", {})
            ours = md.get(_OUR_META, {})
            if n.python_class == "BraggVectors" or "_v_uncal" in grp:
                shape = tuple(grp["_v_uncal"]["data"].shape)
                out[name] = _read_peaks(grp, _calibration_for(f, n.path, shape), name, params)
                continue
            if n.shape is None or n.group_type != "array":
                continue
            if len(n.shape) == 4:
                keep_open = True
                out[name] = DataCube(
                    grp["data"],
                    _calibration_for(f, n.path, n.shape[:2]),
                    name=name,
                    metadata={"emd_node": n.path},
                    source=str(path),
                    on_close=_closer(f),
                )
                continue
            data = _eager(grp["data"])
            kind = ours.get("result_type") or (
                "DiffractionImage" if n.python_class in ("DiffractionSlice", "Probe") else "RealSpaceMap"
            )
            units = ours.get("units", _attr(grp["data"], "units", "") or "")
            if kind == "DiffractionImage" and data.ndim == 2:
                cal = _calibration_for(f, n.path, ())
                out[name] = DiffractionImage(data, name=name, units=units, calibration=cal, params=params)
            elif data.ndim in (2, 3):
                channels = ()
                if data.ndim == 3:
                    labels = grp.get("dim2")
                    if isinstance(labels, h5py.Dataset) and labels.dtype.kind in "SOU":
                        channels = tuple(x.decode() if isinstance(x, bytes) else str(x) for x in _eager(labels))
                    else:
                        channels = tuple(f"c{i}" for i in range(data.shape[2]))
                cal = _calibration_for(f, n.path, data.shape[:2])
                out[name] = RealSpaceMap(
                    data, name=name, units=units, channels=channels, calibration=cal, params=params
                )
    except Exception:
        f.close()
        raise
    if not keep_open:
        f.close()
    return out


# ------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------
def _default_write_chunks(shape: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    sy, sx, qy, qx = shape
    frame = qy * qx
    k = 16 if frame <= 64 * 64 else 8 if frame <= 256 * 256 else 4 if frame <= 512 * 512 else 1
    return (min(sy, k), min(sx, k), qy, qx)


def _dims(node: h5py.Group, dims: Iterable[tuple[np.ndarray, str, str]]) -> None:
    for i, (vec, name, units) in enumerate(dims):
        d = node.create_dataset(f"dim{i}", data=np.asarray(vec))
        d.attrs["name"] = name
        d.attrs["units"] = units


def _new_group(parent: h5py.Group, name: str, group_type: str, cls: str) -> h5py.Group:
    if name in parent:
        raise DataShapeError(f"two objects named {name!r} in one file; give them distinct names")
    g = parent.create_group(name)
    g.attrs["emd_group_type"] = group_type
    g.attrs["python_class"] = cls
    return g


def _write_datacube(parent: h5py.Group, dc: DataCube, chunks, compression, progress) -> h5py.Group:
    node = _new_group(parent, dc.name, "array", "DataCube")
    chunks = tuple(chunks) if chunks else _default_write_chunks(dc.shape)
    opts: dict[str, Any] = {}
    if compression == "gzip":
        opts = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    elif compression not in (None, "none"):
        opts = {"compression": compression}
    dset = node.create_dataset("data", shape=dc.shape, dtype=dc.dtype, chunks=chunks, **opts)
    dset.attrs["units"] = "pixel intensity"
    cal = dc.calibration
    (ry, rx), (ru, _) = (cal.scan_step or (1.0, 1.0)), (_R_UNITS_TO_P4[cal.scan_units],) * 2
    q = cal.k_pixel_size or 1.0
    qu = _Q_UNITS_TO_P4[cal.k_units]
    _dims(node, [([0.0, ry], "Rx", ru), ([0.0, rx], "Ry", ru), ([0.0, q], "Qx", qu), ([0.0, q], "Qy", qu)])
    # stream whole rows of chunks (about 64 MiB at a time): each chunk is compressed once
    frame_bytes = dc.detector_shape[0] * dc.detector_shape[1] * dc.dtype.itemsize
    cols = (64 * 2**20 // max(1, chunks[0] * frame_bytes)) // chunks[1] * chunks[1]
    block = (chunks[0], min(dc.shape[1], max(chunks[1], cols)))
    total = math.ceil(dc.shape[0] / block[0]) * math.ceil(dc.shape[1] / block[1])
    for i, (sy, sx, b) in enumerate(iter_scan_blocks(dc.data, block)):
        dset[sy, sx] = b
        if progress is not None:
            progress(Progress(i + 1, total, f"writing {dc.name}"))
    if dc.metadata:
        meta = {k: v for k, v in dc.metadata.items() if isinstance(v, str | Number | bool | np.ndarray)}
        if meta:
            _write_metadata(node, _OUR_META, meta)
    return node


def input_record(path: str | os.PathLike | None) -> dict[str, Any]:
    """What a result file records of its input: path, size and modification time (UTC)."""
    if path is None:
        return {}
    p = Path(path)
    out: dict[str, Any] = {"input_file": str(p.resolve())}
    try:
        st = p.stat()
    except OSError:
        return out
    if p.is_file():
        out["input_size_bytes"] = int(st.st_size)
    out["input_mtime_utc"] = datetime.fromtimestamp(st.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def _value_units(units: str) -> str:
    # "" is a dimensionless quantity (strain, correlation), not py4DSTEM's default "intensity"
    return units or "dimensionless"


def _write_map(parent: h5py.Group, m: RealSpaceMap, prov: Mapping[str, Any]) -> None:
    node = _new_group(parent, m.name, "array", "RealSlice")
    node.create_dataset("data", data=m.data).attrs["units"] = _value_units(m.units)
    cal = m.calibration
    (ry, rx), ru = (cal.scan_step or (1.0, 1.0)), _R_UNITS_TO_P4[cal.scan_units]
    dims = [([0.0, ry], "Rx", ru), ([0.0, rx], "Ry", ru)]
    _dims(node, dims)
    if m.data.ndim == 3:
        d = node.create_dataset("dim2", data=[c.encode("utf-8") for c in m.channels])
        d.attrs["name"] = "_labels_"
        d.attrs["units"] = "none"
    _write_metadata(node, "gen_params", m.params)
    _write_metadata(
        node,
        _OUR_META,
        {"result_type": "RealSpaceMap", "units": m.units, "channels": list(m.channels) or None, **prov},
    )


def _write_image(parent: h5py.Group, im: DiffractionImage, prov: Mapping[str, Any]) -> None:
    node = _new_group(parent, im.name, "array", "DiffractionSlice")
    node.create_dataset("data", data=im.data).attrs["units"] = _value_units(im.units)
    cal = im.calibration
    q, qu = cal.k_pixel_size or 1.0, _Q_UNITS_TO_P4[cal.k_units]
    _dims(node, [([0.0, q], "Qx", qu), ([0.0, q], "Qy", qu)])
    _write_metadata(node, "gen_params", im.params)
    _write_metadata(node, _OUR_META, {"result_type": "DiffractionImage", "units": im.units, **prov})


def _write_peaks(parent: h5py.Group, p: BraggPeaks, detector_shape, prov: Mapping[str, Any]) -> None:
    node = _new_group(parent, p.name, "custom", "BraggVectors")
    pla = _new_group(node, "_v_uncal", "custom_pointlistarray", "PointListArray")
    # py4DSTEM's qx is along the first detector axis: our qy
    dt = np.dtype([("qx", np.float64), ("qy", np.float64), ("intensity", np.float64), ("correlation", np.float64)])
    dset = pla.create_dataset("data", shape=p.scan_shape, dtype=h5py.vlen_dtype(dt))
    flat = np.empty(p.n_peaks, dtype=dt)
    flat["qx"], flat["qy"], flat["intensity"], flat["correlation"] = p.qy, p.qx, p.intensity, p.correlation
    values = np.empty(p.scan_shape[0] * p.scan_shape[1], dtype=object)
    for i in range(len(values)):
        values[i] = flat[p.offsets[i] : p.offsets[i + 1]]
    dset[...] = values.reshape(p.scan_shape)
    _write_metadata(node, "_braggvectors_shape", {"Rshape": tuple(p.scan_shape), "Qshape": tuple(detector_shape)})
    _write_metadata(node, "gen_params", p.params)
    _write_metadata(node, _OUR_META, {"result_type": "BraggPeaks", **prov})


@write_doc
def write(
    path: str | os.PathLike,
    *objects: DataCube | RealSpaceMap | DiffractionImage | BraggPeaks,
    overwrite: bool = False,
    root: str | None = None,
    chunks: tuple[int, int, int, int] | None = None,
    compression: str | None = None,
    progress: Callable[[Progress], Any] | None = None,
    source: str | os.PathLike | None = None,
) -> Path:
    """Write objects to a new EMD 1.0 file that py4DSTEM 0.14 reads, atomically.

    A DataCube (at most one) becomes the parent node of the results, as py4DSTEM does.
    The root calibration is taken from the datacube, else from the first result.

    Parameters
    ----------
    path : str or path
        The output file.
    *objects : DataCube, RealSpaceMap, DiffractionImage or BraggPeaks
        What to write (at most one DataCube; distinct names).
    %(overwrite)s
    root : str, optional
        Name of the root group (default ``<datacube name>_root``, or ``napari_4dstem_root``).
    chunks : 4-tuple, optional
        HDF5 chunks of the datacube; default ``(8-16, 8-16, k_y, k_x)``.
    compression : {None, "gzip", "lzf"}
        Compression of the datacube (results are small and stored plainly).
    progress : callable, optional
        Called with each :class:`~napari_4dstem.engine.jobs.Progress` while the datacube is
        copied.
    source : path, optional
        The input file the results were computed from (default: the datacube's source). Every
        result node records it (path, size, mtime) with the software version and the time.

    Returns
    -------
    %(written)s

    Raises
    ------
    ValueError
        With nothing to write, or more than one DataCube.
    TypeError
        For an object of another type.
    DataShapeError
        For two objects of the same name.
    %(exists)s
    """
    if not objects:
        raise ValueError("nothing to write")
    cubes = [o for o in objects if isinstance(o, DataCube)]
    if len(cubes) > 1:
        raise ValueError("an EMD file written by napari-4dstem holds at most one DataCube")
    for o in objects:
        if not isinstance(o, DataCube | RealSpaceMap | DiffractionImage | BraggPeaks):
            raise TypeError(f"cannot write {type(o).__name__} to EMD")
    cube = cubes[0] if cubes else None
    first = cube or objects[0]
    cal: Calibration = first.calibration
    det_shape = cube.detector_shape if cube is not None else None
    if det_shape is None:
        det_shape = next((o.data.shape for o in objects if isinstance(o, DiffractionImage)), (0, 0))
    root_name = root or (f"{cube.name}_root" if cube is not None else "napari_4dstem_root")
    from .. import __version__

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if source is None and cube is not None:
        source = cube.source
    prov = {"software": "napari-4dstem", "software_version": __version__, "written_utc": now, **input_record(source)}
    with atomic_output(path, overwrite=overwrite) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["emd_group_type"] = "file"
            f.attrs["version_major"] = 1
            f.attrs["version_minor"] = 0
            f.attrs["UUID"] = str(uuid.uuid4())
            f.attrs["authoring_program"] = "napari-4dstem"
            f.attrs["authoring_user"] = ""
            f.attrs["napari_4dstem_version"] = __version__
            f.attrs["written_utc"] = now
            r = f.create_group(root_name)
            r.attrs["emd_group_type"] = "root"
            r.attrs["python_class"] = "Root"
            parent = r
            targets = []
            if cube is not None:
                parent = _write_datacube(r, cube, chunks, compression, progress)
                targets.append("/" + cube.name)
            for o in objects:
                if o is cube:
                    continue
                if isinstance(o, RealSpaceMap):
                    _write_map(parent, o, prov)
                elif isinstance(o, DiffractionImage):
                    _write_image(parent, o, prov)
                else:
                    _write_peaks(parent, o, det_shape, prov)
                rel = parent.name[len(r.name) :] + "/" + o.name
                targets.append(rel if rel.startswith("/") else "/" + rel)
            _write_metadata(r, "calibration", _calibration_items_p4(cal, targets), cls="Calibration")
            _write_metadata(r, _OUR_CAL, _our_calibration_items(cal))
    return Path(path)
