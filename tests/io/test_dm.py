"""Gatan DM3/DM4 4D reader, on synthetic files written here from the public tag-format
description (no real 4D DM file is available to check against; see io/dm.py)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from napari_4dstem.errors import FileFormatError
from napari_4dstem.io import detect_format, dm, open_datacube

_CODES = {np.dtype("<u2"): 4, np.dtype("<f4"): 6, np.dtype("<u4"): 5, np.dtype("u1"): 10}
_DATATYPE = {np.dtype("<u2"): 10, np.dtype("<f4"): 2, np.dtype("<u4"): 11, np.dtype("u1"): 6}  # DM pixel types


class _W:
    def __init__(self, v4):
        self.v4 = v4

    def word(self, v):
        return struct.pack(">Q" if self.v4 else ">I", v)

    def tag(self, kind, label, body):
        lab = label.encode()
        out = bytes([kind]) + struct.pack(">H", len(lab)) + lab
        if self.v4:
            out += struct.pack(">Q", len(body))
        return out + body

    def group(self, items):  # items: list of (label, value)
        body = b"\x00\x01" + self.word(len(items))
        for label, v in items:
            if isinstance(v, list):
                body += self.tag(20, label, self.group(v))
            else:
                body += self.tag(21, label, self.data(v))
        return body

    def data(self, v):
        if isinstance(v, np.ndarray):
            info = [20, _CODES[v.dtype], v.size]
            payload = v.tobytes()
        elif isinstance(v, str):  # units as a u2 array, as DM writes them
            arr = np.frombuffer(v.encode("utf-16-le"), "<u2")
            info, payload = [20, 4, arr.size], arr.tobytes()
        elif isinstance(v, float):
            info, payload = [6], struct.pack("<f", v)
        else:
            info, payload = [5], struct.pack("<I", v)
        return b"%%%%" + self.word(len(info)) + b"".join(self.word(i) for i in info) + payload


def _write_dm(path, data, *, v4, scales=(0.05, 0.05, 1.5, 2.0), units=("1/nm", "1/nm", "nm", "nm")):
    w = _W(v4)
    dims = list(data.shape[::-1])  # fastest first
    cal = [("", [("Origin", 0.0), ("Scale", float(s)), ("Units", u)]) for s, u in zip(scales, units)]
    thumb = np.arange(80 * 80, dtype="u1")
    image = [
        ("ImageData", [
            ("Calibrations", [("Dimension", cal)]),
            ("Data", np.ascontiguousarray(data)),
            ("DataType", _DATATYPE[data.dtype]),
            ("Dimensions", [("", d) for d in dims]),
        ]),
        ("Name", "4D scan"),
    ]  # fmt: skip
    thumb_im = [("ImageData", [("Data", thumb), ("Dimensions", [("", 80), ("", 80)])])]
    root = w.group([("ApplicationBounds", [("", 1)]), ("ImageList", [("", thumb_im), ("", image)])])
    head = struct.pack(">I", 4 if v4 else 3)
    head += struct.pack(">Q" if v4 else ">I", len(root)) + struct.pack(">I", 1)
    path.write_bytes(head + root + b"\x00" * 8)
    return path


@pytest.mark.parametrize("v4", [False, True])
def test_dm_4d_round_trip(tmp_path, v4):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 60000, size=(3, 5, 7, 9), dtype=np.uint16)
    p = _write_dm(tmp_path / f"scan.dm{4 if v4 else 3}", data, v4=v4)
    assert detect_format(p).name == "dm"
    dc = open_datacube(p)
    assert dc.shape == (3, 5, 7, 9) and dc.dtype == np.dtype("<u2")
    assert isinstance(dc.data, np.memmap)
    np.testing.assert_array_equal(np.asarray(dc.data), data)
    assert dc.calibration.scan_step == (2.0, 1.5) and dc.calibration.scan_units == "nm"
    assert dc.calibration.k_units == "1/A"
    assert dc.calibration.k_pixel_size == pytest.approx(0.005)
    tags = dm.read_tags(p)
    assert tags["ImageList"]["[1]"]["Name"] == "4D scan"
    assert open_datacube(p, scan_shape=(5, 3)).shape == (5, 3, 7, 9)


def test_dm_stack_and_bad_files(tmp_path):
    data = np.arange(6 * 4 * 4, dtype=np.float32).reshape(6, 4, 4)
    p = _write_dm(tmp_path / "stack.dm4", data, v4=True, scales=(1, 1, 1), units=("", "", ""))
    assert open_datacube(p).shape == (1, 6, 4, 4)
    assert open_datacube(p, scan_shape=(2, 3)).shape == (2, 3, 4, 4)
    raw = p.read_bytes()
    cut = tmp_path / "cut.dm4"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FileFormatError, match=r"cut\.dm4: "):
        open_datacube(cut)
    img2d = _write_dm(tmp_path / "img.dm3", np.zeros((8, 8), np.float32), v4=False, scales=(1, 1), units=("", ""))
    with pytest.raises(FileFormatError, match="no 3D or 4D image"):
        open_datacube(img2d)
