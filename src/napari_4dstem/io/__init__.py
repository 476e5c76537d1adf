"""File formats: one module per format, each with detect -> validate -> open.

:func:`open_datacube` picks the format by a cheap look inside the file, never by the extension
alone. Readers return a lazy DataCube; writers are atomic and never overwrite silently.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data.datacube import DataCube
from ..errors import FileFormatError, Napari4DSTEMError
from . import _h5direct  # noqa: F401 (HDF5 chunk views for the engine; imports no h5py)
from ._helpers import HDF5_SIGNATURE, read_head

# the format modules, imported when a file needs them (``io.emd`` etc. still work: ``__getattr__``):
# napari calls our reader on its GUI thread, and importing them all at the first Open (h5py, the
# XML parser, every reader) cost about 0.3 s of GUI CPU before even an .npy file opened (#15)
_SUBMODULES = (
    "arina",
    "blockfile",
    "dm",
    "emd",
    "empad",
    "mib",
    "mrc",
    "npy",
    "p4legacy",
    "raw",
    "tia",
    "tvips",
    "zarr_store",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_ARINA_DATA = re.compile(r".*_data_\d+(\.h5|\.hdf5)$")


def _maybe_hdf5(path) -> bool:
    """Whether ``path`` starts with the HDF5 signature (never raises).

    What every HDF5 sniffer here checks first, made without importing h5py: a file that fails it
    is none of the HDF5 formats.
    """
    try:
        return read_head(path, 8) == HDF5_SIGNATURE
    except Exception:
        return False


def _maybe_arina(path) -> bool:
    """Whether ``path`` may be ARINA: HDF5, or named as a data file ``<name>_data_NNNNNN.h5``.

    The ARINA sniffer's first check (a data file's master, beside it, is what it reads).
    """
    return _maybe_hdf5(path) or _ARINA_DATA.match(Path(path).name) is not None


class _Lazy:
    """``module.name`` of this package, imported at its first call.

    A detector may first ask the cheap ``sniff``: a False there means the real detector would say
    False too (the same check, made before importing the module). ``inspect.signature`` sees the
    real function's.
    """

    def __init__(self, module: str, name: str, sniff: Callable[[str], bool] | None = None):
        self.module, self.name, self.sniff = module, name, sniff

    def target(self) -> Callable:
        return getattr(importlib.import_module(f"{__name__}.{self.module}"), self.name)

    def __call__(self, *args, **kwargs):
        if self.sniff is not None and not self.sniff(*args):
            return False
        return self.target()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.target())

    def __repr__(self) -> str:
        return f"<{__name__}.{self.module}.{self.name}>"


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
        _Lazy("mib", "is_mib"),
        _Lazy("mib", "read_datacube"),
    ),
    Format(
        "arina",
        "DECTRIS ARINA HDF5 master + data files",
        (".h5",),
        _Lazy("arina", "is_arina", _maybe_arina),
        _Lazy("arina", "read_datacube"),
    ),
    Format(
        "empad",
        "EMPAD .xml header + .raw frames",
        (".xml", ".raw"),
        _Lazy("empad", "is_empad"),
        _Lazy("empad", "read_datacube"),
    ),
    Format(
        "blockfile",
        "NanoMegas ASTAR blockfile",
        (".blo",),
        _Lazy("blockfile", "is_blockfile"),
        _Lazy("blockfile", "read_datacube"),
    ),
    Format(
        "mrc",
        "MRC stack / Direct Electron 4D-STEM movie (+ _info.txt)",
        (".mrc", ".mrcs"),
        _Lazy("mrc", "is_mrc"),
        _Lazy("mrc", "read_datacube"),
    ),
    Format(
        "dm",
        "Gatan DigitalMicrograph DM3/DM4 (3D/4D)",
        (".dm3", ".dm4"),
        _Lazy("dm", "is_dm4d"),
        _Lazy("dm", "read_datacube"),
    ),
    Format(
        "tia",
        "FEI TIA image series (.emi + _N.ser)",
        (".emi", ".ser"),
        _Lazy("tia", "is_tia"),
        _Lazy("tia", "read_datacube"),
    ),
    Format(
        "tvips",
        "TVIPS recorder stream (_000.tvips, _001...)",
        (".tvips",),
        _Lazy("tvips", "is_tvips"),
        _Lazy("tvips", "read_datacube"),
    ),
    # raw binary: never detected (nothing to sniff); open with format="raw" and the layout
    Format(
        "raw",
        "raw binary (user-given shape/dtype/header)",
        (".raw", ".bin", ".dat"),
        _Lazy("raw", "is_raw"),
        _Lazy("raw", "read_datacube"),
    ),
    Format(
        "emd",
        "EMD 1.0 / py4DSTEM HDF5",
        (".h5", ".hdf5", ".emd"),
        _Lazy("emd", "is_emd", _maybe_hdf5),
        _Lazy("emd", "read_datacube"),
    ),
    Format(
        "py4dstem-legacy",
        "py4DSTEM 0.9-0.13 HDF5",
        (".h5", ".hdf5"),
        _Lazy("p4legacy", "is_legacy_py4dstem", _maybe_hdf5),
        _Lazy("p4legacy", "read_datacube"),
    ),
    Format("npy", "NumPy 4D array (memmap)", (".npy",), _Lazy("npy", "is_npy4d"), _Lazy("npy", "read_datacube")),
    Format("zarr", "Zarr store", (".zarr",), _Lazy("zarr_store", "is_zarr4d"), _Lazy("zarr_store", "read_datacube")),
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
    from . import emd, npy, zarr_store

    suffix = Path(path).suffix.lower()
    if suffix in (".h5", ".hdf5", ".emd"):
        return emd.write(path, dc, overwrite=overwrite, **kwargs)
    if suffix == ".npy":
        return npy.write(path, dc, overwrite=overwrite)
    if suffix == ".zarr":
        return zarr_store.write(path, dc, overwrite=overwrite)
    raise FileFormatError(path, f"cannot write extension {suffix!r}", "use .h5, .npy or .zarr")
