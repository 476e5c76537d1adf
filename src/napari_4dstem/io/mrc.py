"""MRC stacks, with the Direct Electron (DE) 4D-STEM layout from ``<name>_info.txt``.

MRC2014 header (1024 bytes, decoded with mrcfile's definitions in the byte order of the machine
stamp): ``NX, NY, NZ`` (int32 at 0, 4, 8), ``MODE`` (int32 at 12: 0 int8,
1 int16, 2 float32, 6 uint16, 12 float16), ``NSYMBT`` extended-header bytes (int32 at 92),
``'MAP '`` at 208. Frames ``(NY, NX)`` follow at ``1024 + NSYMBT``, NZ of
them, rows as stored (the same orientation as rosettasciio).

Direct Electron writes ``<name>_movie.mrc`` with ``<name>_info.txt`` (``key = value`` lines)
and, for non-raster scans, ``<name>_scan_coordinates.csv`` (one ``x,y`` line per frame):

* ``Scan - Type = Raster``: the scan is ``(Scan - Size Y, Scan - Size X)`` (or the ``ROI``
  sizes when ``Scan - ROI Enable``), frames in raster order -> a zero-copy memmap view;
* other scan types (random, XY file, custom): frame ``i`` belongs at ``(y_i, x_i)`` of the csv.
  The scan is ``(max y + 1, max x + 1)``; a lazy index map puts each frame in place; positions
  never visited read as 0. When positions repeat (several passes), ``repeat=k`` picks pass k.

Without an info file an MRC stack of ``NZ`` frames opens as ``(1, NZ)`` unless ``scan_shape``
is given. Calibration: ``Specimen Pixel Size`` (nm) for the scan when the info file gives it.
"""

from __future__ import annotations

import io
import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..data.calibration import Calibration
from ..data.datacube import DataCube
from ..errors import FileFormatError
from ._helpers import (
    DEFAULT_SCAN_CHUNK,
    check_scan_shape,
    frame_memmap,
    header_calibration,
    lazy_frames,
    never_raises,
    read_head,
    read_small,
    require_regular,
)

__all__ = ["is_mrc", "read_datacube", "read_de_info", "read_header", "validate"]

# the modes a 4D-STEM stack comes in; mrcfile maps them to dtypes in the file's byte order;
# complex (3, 4) and packed 4-bit (101) are refused
_MODES = {0: "int8", 1: "int16", 2: "float32", 6: "uint16", 12: "float16"}
# a sparse custom scan may visit few of its positions, but not fewer than 1 in 64
_MAX_SCAN_AREA_PER_FRAME = 64


def _byte_order(head: bytes) -> str:
    """``<`` or ``>`` from the machine stamp (bytes 212-215), or guessed.

    ``<`` or ``>`` from the machine stamp (bytes 212-215); a blank or odd stamp (older writers) is guessed
    from which order gives a plausible mode and shape.
    """
    from mrcfile.utils import byte_order_from_machine_stamp

    try:
        return byte_order_from_machine_stamp(bytearray(head[212:216]))
    except ValueError:
        pass
    for order in ("<", ">"):
        nx, ny, nz, mode = struct.unpack(order + "4i", head[:16])
        if mode in _MODES and 0 < nx < 2**16 and 0 < ny < 2**16 and 0 < nz < 2**28:
            return order
    return "<"


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Parse the MRC header: ``nx, ny, nz, mode, dtype, data_offset, byte_order``.

    Parameters
    ----------
    path : str or path
        The file.

    Returns
    -------
    dict
        The header fields we use.

    Raises
    ------
    FileFormatError
        For a file shorter than 1024 bytes, no ``MAP`` stamp and no plausible shape, an
        unsupported mode, or an invalid shape or extended header size.

    Notes
    -----
    The 1024 bytes are decoded with mrcfile's header definition (``mrcfile.dtypes``) in the byte
    order of the file's machine stamp, and the data type with
    ``mrcfile.utils.data_dtype_from_header``, so big-endian stacks read right; the frames
    themselves stay a lazy memory map of ours.
    """
    from mrcfile.dtypes import HEADER_DTYPE
    from mrcfile.utils import data_dtype_from_header

    p = Path(path)
    head = read_head(p, 1024)
    if len(head) < 1024:
        raise FileFormatError(p, f"too short for an MRC header ({len(head)} of 1024 bytes)")
    order = _byte_order(head)
    header = np.frombuffer(head, dtype=HEADER_DTYPE.newbyteorder(order), count=1).view(np.recarray)[0]
    nx, ny, nz, mode = (int(header[k]) for k in ("nx", "ny", "nz", "mode"))
    nsymbt = int(header["nsymbt"])
    if bytes(header["map"]) != b"MAP " and not (0 < nx < 2**16 and 0 < ny < 2**16 and 0 < nz < 2**28):
        raise FileFormatError(p, "not an MRC file (no 'MAP' stamp and no plausible shape)")
    if mode not in _MODES:
        raise FileFormatError(
            p,
            f"unsupported MRC mode {mode}",
            "supported: " + ", ".join(f"{k} {v}" for k, v in _MODES.items()),
        )
    if nx < 1 or ny < 1 or nz < 1 or nsymbt < 0:
        raise FileFormatError(p, f"invalid MRC header: shape ({nz}, {ny}, {nx}), extended header {nsymbt}")
    return {
        "nx": nx, "ny": ny, "nz": nz, "mode": mode, "dtype": data_dtype_from_header(header).newbyteorder(order),
        "data_offset": 1024 + nsymbt, "byte_order": "little" if order == "<" else "big",
    }  # fmt: skip


def _prefix(p: Path) -> str:
    stem = p.stem
    return stem[: -len("_movie")] if stem.endswith("_movie") else stem


def _sidecar(p: Path, suffix: str) -> Path | None:
    cand = p.with_name(_prefix(p) + suffix)
    return cand if cand.is_file() else None


def read_de_info(path: str | os.PathLike) -> dict[str, str]:
    """The ``key = value`` pairs of a Direct Electron ``_info.txt`` file.

    Parameters
    ----------
    path : str or path
        The info file (a small regular file).

    Returns
    -------
    dict of str to str
        Keys and values, stripped.
    """
    p = Path(path)
    text = read_small(p, 4 * 2**20, "Direct Electron info file").decode("utf-8", errors="replace")
    out = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


@never_raises
def is_mrc(path: str | os.PathLike) -> bool:
    """True for an MRC stack of several frames (a single 2D image is not 4D-STEM). Never raises."""
    p = Path(path)
    if p.suffix.lower() not in (".mrc", ".mrcs"):
        return False
    return read_header(p)["nz"] > 1


def validate(path: str | os.PathLike) -> dict[str, Any]:
    """Check the data size against the header; return the header.

    Parameters
    ----------
    path : str or path
        The file.

    Returns
    -------
    dict
        The header (:func:`read_header`).

    Raises
    ------
    FileFormatError
        As :func:`read_header`, or when the file is shorter or longer than its frames need.
    """
    p = Path(path)
    h = read_header(p)
    need = h["data_offset"] + h["nx"] * h["ny"] * h["nz"] * h["dtype"].itemsize
    size = require_regular(p).st_size
    if size != need:
        # shorter: truncated; longer: the header's sizes were edited (or are not ours to
        # guess), and reading fewer frames than the file holds would silently drop data
        what = "truncated" if size < need else "longer than its header says"
        raise FileFormatError(
            p, f"{what}: the header promises {h['nz']} frames of {h['ny']} x {h['nx']} "
            f"{h['dtype']} after {h['data_offset']} header bytes ({need} bytes), the file has "
            f"{size} bytes",
        )  # fmt: skip
    return h


def _int(info: dict[str, str], key: str) -> int | None:
    try:
        return int(float(info[key]))
    except (KeyError, ValueError):
        return None


def _positions(p: Path, csv: Path | None, n: int) -> np.ndarray:
    if csv is None:
        raise FileFormatError(
            p, "non-raster Direct Electron scan without its _scan_coordinates.csv",
            f"copy {_prefix(p)}_scan_coordinates.csv next to it, or pass scan_shape=(ny, nx) "
            "to read the frames in acquisition order",
        )  # fmt: skip
    # one short 'x,y' line per frame: a bigger file is not a scan list of this movie
    blob = read_small(csv, 64 * n + 4096, "scan coordinate list")
    try:
        xy = np.loadtxt(io.BytesIO(blob), delimiter=",", dtype=np.int64, ndmin=2)
    except (ValueError, OverflowError) as e:
        raise FileFormatError(csv, f"unreadable scan coordinates ({e})") from None
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) == 0 or xy.min() < 0:
        raise FileFormatError(csv, "scan coordinates must be non-negative 'x,y' lines")
    if len(xy) != n:
        # fewer positions than frames would drop frames silently, more would invent them
        raise FileFormatError(
            csv, f"lists {len(xy)} positions but the movie has {n} frames",
            "pass scan_shape=(ny, nx) to read the frames in acquisition order",
        )  # fmt: skip
    area = (int(xy[:, 0].max()) + 1) * (int(xy[:, 1].max()) + 1)
    if area > max(_MAX_SCAN_AREA_PER_FRAME * n, 4096):
        # the position index costs 8 bytes a scan position: a corrupt line like
        # '20000,20000' must not allocate gigabytes for a few hundred frames
        raise FileFormatError(
            csv, f"positions span a {int(xy[:, 1].max()) + 1} x {int(xy[:, 0].max()) + 1} scan "
            f"for {n} frames: corrupt coordinates",
        )  # fmt: skip
    return xy[:, ::-1]  # (y, x)


class _IndexedFrames:
    """Array-like ``(sy, sx, ky, kx)``: ``index[y, x]`` is the frame there (-1: never visited)."""

    def __init__(self, frames: np.ndarray, index: np.ndarray):
        self._frames, self._index = frames, index
        self.dtype = frames.dtype
        self.shape = (*index.shape, *frames.shape[1:])
        self.ndim = 4

    @property
    def storage_chunks(self) -> tuple[int, int, int, int]:
        """One frame per read (``engine.chunks.storage_chunks``): only the frames asked for are read."""
        return (1, 1, *self.shape[2:])

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (4 - len(key))
        idx = self._index[key[0], key[1]]
        flat = np.asarray(idx).ravel()
        out = np.zeros((flat.size, *self.shape[2:]), dtype=self.dtype)
        ok = flat >= 0
        if ok.any():
            order = np.argsort(flat[ok])  # read the memmap in file order
            out[np.flatnonzero(ok)[order]] = self._frames[flat[ok][order]]
        out = out.reshape(*np.shape(idx), *self.shape[2:])
        return out[(Ellipsis, key[2], key[3])]


def read_datacube(
    path: str | os.PathLike,
    *,
    scan_shape: tuple[int, int] | None = None,
    repeat: int = 0,
    calibration: Calibration | None = None,
) -> DataCube:
    """Open an MRC stack (Direct Electron 4D-STEM movies included) lazily.

    Parameters
    ----------
    path : path
        The ``.mrc`` movie.
    scan_shape : (int, int), optional
        ``(scan_y, scan_x)`` for frames in raster order; overrides the info file and the csv.
    repeat : int
        Which pass to show when a custom scan visits positions several times.
    calibration : Calibration, optional
        Overrides the calibration from the info file.

    Returns
    -------
    DataCube
        ``(scan_y, scan_x, NY, NX)`` in the stored dtype.

    Raises
    ------
    FileFormatError
        As :func:`validate`, for a ``repeat`` beyond the scan's passes, or a scan shape
        (given, from the info file or the csv) that does not fit the frames.
    """
    p = Path(path)
    h = validate(p)
    frames = frame_memmap(
        p,
        offset=h["data_offset"],
        n_frames=h["nz"],
        frame_shape=(h["ny"], h["nx"]),
        dtype=h["dtype"],
    )
    info_path = _sidecar(p, "_info.txt")
    info = read_de_info(info_path) if info_path is not None else {}
    meta: dict[str, Any] = {"format": "MRC", "header": {k: v for k, v in h.items() if k != "dtype"}}
    if info:
        meta["format"] = "Direct Electron MRC"
        meta["de_info"] = info
    n = h["nz"]
    scanning = info.get("Scan - Enable", "Disable") == "Enable"
    raster = info.get("Scan - Type", "Raster") == "Raster"
    if scan_shape is not None or not info or not scanning or raster:
        guess = None
        if scanning and raster:
            roi = info.get("Scan - ROI Enable", "Disable") == "Enable"
            pre = "Scan - ROI Size" if roi else "Scan - Size"
            gy, gx = _int(info, pre + " Y"), _int(info, pre + " X")
            if gy and gx:
                if gy * gx > n:
                    raise FileFormatError(
                        p, f"truncated: {info_path.name} gives a {gy} x {gx} scan, the movie has {n} frames",
                        f"pass scan_shape=(ny, nx) with ny * nx <= {n}",
                    )  # fmt: skip
                guess = (gy, gx)
        sy, sx = check_scan_shape(p, n, scan_shape, guess=guess)
        data = lazy_frames(frames, (sy, sx))
        meta["scan_order"] = "raster"
    else:
        import dask.array as da

        yx = _positions(p, _sidecar(p, "_scan_coordinates.csv"), n)
        sy, sx = int(yx[:, 0].max()) + 1, int(yx[:, 1].max()) + 1
        flat = yx[:, 0] * sx + yx[:, 1]
        counts = np.bincount(flat, minlength=sy * sx)
        n_rep = int(counts.max())
        if not 0 <= repeat < n_rep:
            raise FileFormatError(p, f"repeat={repeat} asked, the scan has {n_rep} pass(es)")
        # pass number of each frame: how many times its position was seen before
        order = np.argsort(flat, kind="stable")
        starts = np.cumsum(counts) - counts
        rank = np.empty(len(flat), dtype=np.int64)
        rank[order] = np.arange(len(flat)) - starts[flat[order]]
        index = np.full(sy * sx, -1, dtype=np.int64)
        sel = rank == repeat
        index[flat[sel]] = np.flatnonzero(sel)
        arr = _IndexedFrames(frames, index.reshape(sy, sx))
        c = DEFAULT_SCAN_CHUNK
        data = da.from_array(
            arr, chunks=(min(sy, c), min(sx, c), h["ny"], h["nx"]), asarray=True, fancy=False,
            name=f"mrc-{p}-{repeat}",
        )  # fmt: skip
        meta.update(scan_order=info.get("Scan - Type"), repeats=n_rep, visited=int((index >= 0).sum()))
    if calibration is None:
        kw: dict[str, Any] = {}
        try:
            py = float(info.get("Specimen Pixel Size Y (nanometers)", "nan"))
            px = float(info.get("Specimen Pixel Size X (nanometers)", "nan"))
        except ValueError:
            py = px = math.nan
        if py > 0 and px > 0:
            kw.update(scan_step=(py, px), scan_units="nm")
        calibration = header_calibration(**kw)
    return DataCube(data, calibration, name=_prefix(p), metadata=meta, source=str(p))
