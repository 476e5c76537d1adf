"""File formats: one module per format, each with detect -> validate -> open.

:func:`open_datacube` picks the format by a cheap look inside the file, never by the extension
alone. Readers return a lazy DataCube; writers are atomic and never overwrite silently.
"""

from __future__ import annotations

import inspect
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data.datacube import DataCube
from ..errors import FileFormatError, Napari4DSTEMError
from . import (  # noqa: F401 (_h5direct: HDF5 chunk views for the engine)
    _h5direct,
    arina,
    blockfile,
    dm,
    emd,
    empad,
    mib,
    mrc,
    npy,
    p4legacy,
    raw,
    tia,
    tvips,
    zarr_store,
)

__all__ = ["FORMATS", "Format", "detect_format", "open_datacube", "save_datacube"]


@dataclass(frozen=True)
class Format:
    """A file format: ``detect(path) -> bool`` (cheap, never raises) and ``open(path, **kw)``."""

    name: str
    description: str
    extensions: tuple[str, ...]
    detect: Callable[[str], bool]
    open: Callable[..., DataCube]


FORMATS: list[Format] = [
    # detector formats first: their sniffers are specific (the ARINA master is also HDF5)
    Format(
        "mib",
        "Quantum Detectors Merlin MIB (+ .hdr)",
        (".mib", ".hdr"),
        mib.is_mib,
        mib.read_datacube,
    ),
    Format(
        "arina",
        "DECTRIS ARINA HDF5 master + data files",
        (".h5",),
        arina.is_arina,
        arina.read_datacube,
    ),
    Format(
        "empad",
        "EMPAD .xml header + .raw frames",
        (".xml", ".raw"),
        empad.is_empad,
        empad.read_datacube,
    ),
    Format(
        "blockfile",
        "NanoMegas ASTAR blockfile",
        (".blo",),
        blockfile.is_blockfile,
        blockfile.read_datacube,
    ),
    Format(
        "mrc",
        "MRC stack / Direct Electron 4D-STEM movie (+ _info.txt)",
        (".mrc", ".mrcs"),
        mrc.is_mrc,
        mrc.read_datacube,
    ),
    Format(
        "dm",
        "Gatan DigitalMicrograph DM3/DM4 (3D/4D)",
        (".dm3", ".dm4"),
        dm.is_dm4d,
        dm.read_datacube,
    ),
    Format(
        "tia",
        "FEI TIA image series (.emi + _N.ser)",
        (".emi", ".ser"),
        tia.is_tia,
        tia.read_datacube,
    ),
    Format(
        "tvips",
        "TVIPS recorder stream (_000.tvips, _001...)",
        (".tvips",),
        tvips.is_tvips,
        tvips.read_datacube,
    ),
    # raw binary: never detected (nothing to sniff); open with format="raw" and the layout
    Format(
        "raw",
        "raw binary (user-given shape/dtype/header)",
        (".raw", ".bin", ".dat"),
        raw.is_raw,
        raw.read_datacube,
    ),
    Format("emd", "EMD 1.0 / py4DSTEM HDF5", (".h5", ".hdf5", ".emd"), emd.is_emd, emd.read_datacube),
    Format(
        "py4dstem-legacy",
        "py4DSTEM 0.9-0.13 HDF5",
        (".h5", ".hdf5"),
        p4legacy.is_legacy_py4dstem,
        p4legacy.read_datacube,
    ),
    Format("npy", "NumPy 4D array (memmap)", (".npy",), npy.is_npy4d, npy.read_datacube),
    Format("zarr", "Zarr store", (".zarr",), zarr_store.is_zarr4d, zarr_store.read_datacube),
]


def _kind(path: str | os.PathLike) -> str | None:
    """``"file"``, ``"dir"`` or None (missing, or a FIFO, socket or device: never opened)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return None


def detect_format(path: str | os.PathLike) -> Format | None:
    """The format of ``path``, found by looking inside it; None when no reader claims it.

    Only regular files (and folders, for zarr) are looked into: a FIFO or a device is never
    opened, so detection cannot hang or read forever.
    """
    p = str(path)
    if _kind(p) is None:
        return None
    for fmt in FORMATS:
        if fmt.detect(p):
            return fmt
    return None


def open_datacube(path: str | os.PathLike, *, format: str | None = None, **kwargs) -> DataCube:
    """Open a 4D-STEM file lazily as a DataCube, detecting its format.

    Raises :class:`~napari_4dstem.errors.FileFormatError` naming the file and the problem.
    """
    p = Path(path)
    if not p.exists():
        raise FileFormatError(p, "no such file")
    if _kind(p) is None:
        raise FileFormatError(p, "is not a regular file (a FIFO, socket or device)")
    if format is not None:
        by_name = {f.name: f for f in FORMATS}
        if format not in by_name:
            raise FileFormatError(p, f"unknown format {format!r}", f"known: {sorted(by_name)}")
        fmt = by_name[format]
    else:
        fmt = detect_format(p)
    if fmt is None:
        known = ", ".join(f"{f.description} ({' '.join(f.extensions)})" for f in FORMATS)
        raise FileFormatError(p, "not a 4D-STEM file napari-4dstem can read", f"readable: {known}")
    try:
        inspect.signature(fmt.open).bind(str(p), **kwargs)
    except TypeError as e:
        raise Napari4DSTEMError(f"{p}: the {fmt.name} reader does not take these options ({e})") from None
    try:
        return fmt.open(str(p), **kwargs)
    except (Napari4DSTEMError, MemoryError):
        raise
    except Exception as e:
        # the readers validate what they read; anything else a malformed file provokes in a
        # library below them (h5py, zarr, numpy) is reported as a file problem, in one line
        raise FileFormatError(p, f"cannot be read as {fmt.name} ({type(e).__name__}: {e})") from e


def save_datacube(path: str | os.PathLike, dc: DataCube, *, overwrite: bool = False, **kwargs) -> Path:
    """Save a DataCube; the format follows the extension (.h5/.hdf5/.emd, .npy, .zarr)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".h5", ".hdf5", ".emd"):
        return emd.write(path, dc, overwrite=overwrite, **kwargs)
    if suffix == ".npy":
        return npy.write(path, dc, overwrite=overwrite)
    if suffix == ".zarr":
        return zarr_store.write(path, dc, overwrite=overwrite)
    raise FileFormatError(path, f"cannot write extension {suffix!r}", "use .h5, .npy or .zarr")
