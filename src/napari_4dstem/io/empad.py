"""EMPAD (Electron Microscope Pixel Array Detector) ``.xml`` header + ``.raw`` frames.

Layout: the ``.raw`` file is a plain sequence of frames of 130 x 128 little-endian float32;
the last 2 rows of each frame hold per-frame metadata, so a frame record is a (128, 128)
image followed by a 2 x 128 footer. We open it as a structured memmap (frame field + footer
field) and view the frame field: nothing is read or copied to open it.

The ``.xml`` header names the raw file (``<raw_file filename=...>``) and the scan:

* ``<scan_parameters><series_count>`` -> a series of ``n`` frames, shape ``(1, n)``;
* ``<pix_x>``/``<pix_y>`` -> scan ``(pix_y, pix_x)``;
* otherwise a raw file name ``scan_x<nx>_y<ny>.raw`` -> scan ``(ny, nx)`` (EMPAD 1.2.x).

Calibration: the scan step from the full scan field of view (``fov / n`` for older headers,
``fov / scale_factor / max(ny, nx)`` for EMPAD 1.2.x, as the EMPAD software defines it), the
detector pixel in mrad from ``calibrated_diffraction_angle`` (rad) when present, and the beam
energy from the high voltage. Orientation: rows as stored (the same as rosettasciio).
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Any

from ..data.calibration import Calibration
from ..data.datacube import DataCube
from ..errors import FileFormatError
from ._helpers import (
    check_scan_shape,
    frame_memmap,
    header_calibration,
    lazy_frames,
    never_raises,
    read_head,
    read_small,
    require_regular,
)

__all__ = ["FRAME_ROWS", "is_empad", "read_datacube", "read_xml", "validate"]

FRAME_ROWS, FRAME_COLS, META_ROWS = 128, 128, 2
_RECORD_BYTES = (FRAME_ROWS + META_ROWS) * FRAME_COLS * 4


def _xml_for(path: Path) -> Path:
    """The ``.xml`` header for ``path`` (itself, or an xml next to a ``.raw`` that names it)."""
    if path.suffix.lower() == ".xml":
        return path
    for cand in sorted(path.parent.glob("*.xml")):
        try:
            info = read_xml(cand)
        except FileFormatError:
            continue
        if info["raw_filename"] == path.name:
            return cand
    raise FileFormatError(
        path,
        "EMPAD .raw file without an .xml header naming it",
        "open the .xml file written with it",
    )


def read_xml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse an EMPAD ``.xml`` header: raw file name, scan shape or series count, calibration.

    Parameters
    ----------
    path : str or path
        The ``.xml`` header (a regular file of at most 8 MiB).

    Returns
    -------
    dict
        ``raw_filename``, ``scan_shape`` (``(ny, nx)`` or None), ``series_count`` (or None),
        ``scan_step_m`` (or None), ``k_pixel_mrad`` (or None), ``high_voltage_V`` (or None)
        and ``version``.

    Raises
    ------
    FileFormatError
        For XML that does not parse, no ``<raw_file filename=...>``, or a numeric field that is
        not a number.
    """
    import xml.etree.ElementTree as ET  # here: sniffing other formats' files never needs the XML parser

    p = Path(path)
    blob = read_small(p, 8 * 2**20, "EMPAD .xml header")  # regular files only: no FIFO hang
    try:
        root = ET.fromstring(blob)
    except (ET.ParseError, ValueError) as e:
        raise FileFormatError(p, f"not a readable EMPAD .xml header ({e})") from None
    raw = root.find("raw_file")
    if raw is None or not raw.get("filename"):
        raise FileFormatError(p, "EMPAD .xml header has no <raw_file filename=...>")

    def num(tag: str, conv=float):
        el = root.find(tag)
        if el is None or el.text is None:
            return None
        try:
            return conv(el.text.strip())
        except ValueError:
            raise FileFormatError(p, f"EMPAD header field <{tag}> is not a number: {el.text!r}") from None

    info: dict[str, Any] = {
        "raw_filename": raw.get("filename").strip(),
        "scan_shape": None,
        "series_count": None,
        "version": (root.findtext("software_version") or "").strip(),
        "scan_step_m": None,
        "k_pixel_mrad": None,
        "high_voltage_V": None,
    }
    series = num("scan_parameters/series_count", int)
    pix_x, pix_y = num("pix_x", int), num("pix_y", int)
    if series is not None:
        info["series_count"] = series
    elif pix_x is not None and pix_y is not None:
        info["scan_shape"] = (pix_y, pix_x)
    else:
        m = re.fullmatch(r"scan_x(\d+)_y(\d+)\.raw", info["raw_filename"])
        if m:
            info["scan_shape"] = (int(m.group(2)), int(m.group(1)))
    shape = info["scan_shape"]
    fov_old = root.findtext("iom_measurements/optics.get_full_scan_field_of_view")
    fov_x = num("iom_measurements/full_scan_field_of_view/x")
    factor = num("iom_measurements/full_scan_field_of_view/scale_factor")
    if shape is not None:
        try:
            if fov_old:
                fov = ast.literal_eval(fov_old.strip())
                info["scan_step_m"] = (float(fov[1]) / shape[0], float(fov[0]) / shape[1])
            elif fov_x and factor:
                step = fov_x / factor / max(shape)
                info["scan_step_m"] = (step, step)
        except (ValueError, SyntaxError, TypeError, IndexError, ZeroDivisionError):
            info["scan_step_m"] = None
    angle = num("iom_measurements/calibrated_diffraction_angle")
    if angle:
        info["k_pixel_mrad"] = angle * 1000.0
    hv = num("iom_measurements/source.get_voltage") or num("iom_measurements/high_voltage")
    info["high_voltage_V"] = hv
    return info


@never_raises
def is_empad(path: str | os.PathLike) -> bool:
    """True for an EMPAD ``.xml`` header (or a ``.raw`` that one names). Never raises."""
    p = Path(path)
    if p.suffix.lower() == ".xml":
        head = read_head(p, 4096)
        if b"<raw_file" not in head and b"<root" not in head:
            return False
        return read_xml(p)["raw_filename"].lower().endswith(".raw")
    if p.suffix.lower() == ".raw":
        _xml_for(p)
        return True
    return False


def validate(path: str | os.PathLike) -> tuple[dict[str, Any], Path, int]:
    """Check the raw file against the header; return ``(header info, raw path, n_frames)``.

    Parameters
    ----------
    path : str or path
        The ``.xml`` header, or the ``.raw`` file (the header naming it is looked up).

    Returns
    -------
    info : dict
        The header (:func:`read_xml`).
    raw : Path
        The raw file.
    n_frames : int
        Whole 130 x 128 float32 frame records in it.

    Raises
    ------
    FileFormatError
        When no header names the file, the raw file is missing, its size is not a whole number
        of frames, or it holds fewer frames than the header promises.
    """
    xml = _xml_for(Path(path))
    info = read_xml(xml)
    raw = xml.parent / info["raw_filename"]
    if not raw.is_file():
        raise FileFormatError(xml, f"EMPAD raw file {info['raw_filename']} is missing", f"copy it next to {xml.name}")
    size = require_regular(raw).st_size
    n, rest = divmod(size, _RECORD_BYTES)
    if rest:
        raise FileFormatError(
            raw,
            f"size {size} bytes is not a whole number of EMPAD frames of 130 x 128 float32 "
            f"({_RECORD_BYTES} bytes): truncated or not EMPAD data",
        )
    if info["series_count"] is not None:
        expected = info["series_count"]
    elif info["scan_shape"] is not None:
        expected = info["scan_shape"][0] * info["scan_shape"][1]
    else:
        expected = None
    if expected is not None and n < expected:
        raise FileFormatError(raw, f"truncated: the header {xml.name} promises {expected} frames, the file holds {n}")
    return info, raw, n


def read_datacube(
    path: str | os.PathLike,
    *,
    scan_shape: tuple[int, int] | None = None,
    calibration: Calibration | None = None,
) -> DataCube:
    """Open an EMPAD dataset lazily from its ``.xml`` header (or its ``.raw``).

    Parameters
    ----------
    path : path
        The ``.xml`` header, or the ``.raw`` file (the header naming it is looked up).
    scan_shape : (int, int), optional
        ``(scan_y, scan_x)``; needed for headers that give neither a scan nor a series.
    calibration : Calibration, optional
        Overrides the calibration read from the header.

    Returns
    -------
    DataCube
        Shape ``(scan_y, scan_x, 128, 128)`` float32, a zero-copy memmap view.

    Raises
    ------
    FileFormatError
        As :func:`validate`, or when the scan shape is unknown or does not fit the frames.
    """
    info, raw, n = validate(path)
    if info["series_count"] is not None:
        guess = (1, info["series_count"])
    else:
        guess = info["scan_shape"]
    if scan_shape is None and guess is None:
        raise FileFormatError(
            raw,
            "the EMPAD header gives no scan shape",
            f"pass scan_shape=(ny, nx) with ny * nx <= {n}",
        )
    sy, sx = check_scan_shape(raw, n, scan_shape, guess=guess)
    frames = frame_memmap(
        raw,
        offset=0,
        n_frames=n,
        frame_shape=(FRAME_ROWS, FRAME_COLS),
        dtype="<f4",
        frame_footer=META_ROWS * FRAME_COLS * 4,
    )
    data = lazy_frames(frames, (sy, sx))
    if calibration is None:
        kw: dict[str, Any] = {}
        if info["scan_step_m"] is not None and info["series_count"] is None:
            kw.update(scan_step=tuple(s * 1e9 for s in info["scan_step_m"]), scan_units="nm")
        if info["k_pixel_mrad"]:
            kw.update(k_pixel_size=info["k_pixel_mrad"], k_units="mrad")
        if info["high_voltage_V"]:
            kw["beam_energy_kev"] = info["high_voltage_V"] / 1000.0
        calibration = header_calibration(**kw)
    meta = {"format": "EMPAD", "frames_in_file": n, "header": info, "raw_file": str(raw)}
    return DataCube(data, calibration, name=raw.stem, metadata=meta, source=str(raw))
