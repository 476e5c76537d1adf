"""FEI TIA .emi/.ser: real files written by TIA against rosettasciio, and synthetic series written
here from the format description (2D scans, old 4-byte offsets, irregular element offsets)."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from napari_4dstem.cli import main
from napari_4dstem.errors import FileFormatError
from napari_4dstem.io import detect_format, open_datacube, tia


def _sha(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(a)).tobytes()).hexdigest()


# Derived once with rosettasciio 0.15.0 (rsciio.tia.file_reader on the .emi and on the .ser; both
# give the same): (shape, sum, sha256 of the C-ordered int32 data). rsciio returns the rows top
# first (the file stores them bottom first), as we do.
TIA = {
    "128x128x5-diffraction_preview": ((5, 128, 128), 9416326,
        "4f77bfb6e831f7889b268e00d882859a3bc3c4bf1c081858d5c035d577a123bc"),
    "128x128-TEM_search": ((128, 128), 169637782,
        "05cde6f1d478aedbd6357e1d8c481c4a9eee19fdf2aff2eac174652968a3e099"),
    "128x128_TEM_acquire-sum1": ((128, 128), 464056,
        "9d50d87095fefaf03d2876f191cb3c4fdd9cecd863eca0db30266b1739908e74"),
}  # fmt: skip
FILES = [(name, suffix) for name in TIA for suffix in (".emi", "_1.ser")]


@pytest.mark.parametrize(("name", "suffix"), FILES, ids=[n + s for n, s in FILES])
def test_tia_real_files_match_rosettasciio(realdata, name, suffix):
    shape, total, sha = TIA[name]
    path = realdata / "tia" / "new" / f"{name}{suffix}"
    assert detect_format(path).name == "tia"
    frames = tia.read_frames(path)
    assert isinstance(frames, np.ndarray) and not frames.flags.writeable
    assert frames.dtype == np.dtype("<i4") and frames.shape == (shape[0] if len(shape) == 3 else 1, 128, 128)
    assert int(frames.sum()) == total and _sha(frames) == sha
    if len(shape) == 2:
        with pytest.raises(FileFormatError, match=r"holds a single 128 x 128 image, not a 4D-STEM"):
            open_datacube(path)
        return
    dc = open_datacube(path)
    assert dc.shape == (1, 5, 128, 128) and dc.dtype == np.dtype("<i4")
    assert _sha(dc.data[0]) == sha
    # 42464134.6 1/m in the element header = 0.042464 1/nm (rsciio's scale) = 0.0042464 1/A
    assert dc.calibration.k_pixel_size == pytest.approx(0.0042464134612716, rel=1e-12)
    assert dc.calibration.k_units == "1/A"
    if suffix == ".emi":  # the accelerating voltage is in the .emi
        assert dc.calibration.beam_energy_kev == 200.0
        assert dc.metadata["emi"]["mode"] == "TEM uP SA Zoom Diffraction"
    assert dc.reshape_scan((1, 5)).mean_pattern().sum() == pytest.approx(total / 5)


def _ser(path, frames, *, dims, version=0x0220, gaps=None, tag_type=0x4152):
    """A SER file of ``frames`` (n, y, x) int16 (bottom row stored first), series ``dims``
    (fastest first: (size, delta_m, units)) and optional extra bytes before each element."""
    n, ny, nx = frames.shape
    off_fmt = "<q" if version >= 0x0220 else "<i"
    head = struct.pack("<HHHIIii", 0x4949, 0x0197, version, 0x4122, tag_type, n, n)
    body = b""
    for size, delta, units in dims:
        desc = b"Position" if units == "m" else b"Number"
        body += struct.pack("<iddii", size, 0.0, delta, 0, len(desc)) + desc
        body += struct.pack("<i", len(units)) + units.encode()
    start = len(head) + struct.calcsize(off_fmt) + 4 + len(body)
    table = start
    pos = table + 2 * n * struct.calcsize(off_fmt)
    elements, offsets, tags = b"", [], []
    for i in range(n):
        pad = (gaps or [0] * n)[i]
        elements += b"\0" * pad
        offsets.append(pos + len(elements))
        elements += struct.pack("<ddiddihII", 0.0, 2e7, 0, 0.0, 2e7, 0, 5, nx, ny)
        elements += np.ascontiguousarray(frames[i, ::-1]).astype("<i2").tobytes()
        tags.append(pos + len(elements))
        elements += struct.pack("<ii", 0x4152, i)
    out = head + struct.pack(off_fmt, table) + struct.pack("<i", len(dims)) + body
    out += np.array(offsets, off_fmt).tobytes() + np.array(tags, off_fmt).tobytes() + elements
    path.write_bytes(out)
    return path


@pytest.mark.parametrize(("version", "gaps"), [(0x0220, None), (0x0210, None), (0x0220, [0, 8, 0, 3, 0, 16])])
def test_tia_scan_layouts(tmp_path, version, gaps):
    rng = np.random.default_rng(5)
    frames = rng.integers(-300, 3000, size=(6, 5, 4)).astype(np.int16)
    p = _ser(tmp_path / "scan_1.ser", frames, dims=[(3, 2e-9, "m"), (2, 4e-9, "m")],
             version=version, gaps=gaps)  # fmt: skip
    assert detect_format(p).name == "tia"
    dc = open_datacube(p)
    assert dc.shape == (2, 3, 5, 4) and dc.dtype == np.dtype("<i2")  # x is the fastest dimension
    np.testing.assert_array_equal(np.asarray(dc.data), frames.reshape(2, 3, 5, 4))
    assert dc.calibration.scan_step == pytest.approx((4.0, 2.0)) and dc.calibration.scan_units == "nm"
    assert dc.calibration.k_pixel_size == pytest.approx(2e-3)
    assert open_datacube(p, scan_shape=(3, 2)).shape == (3, 2, 5, 4)


def test_tia_refusals(tmp_path):
    frames = np.arange(2 * 3 * 3, dtype=np.int16).reshape(2, 3, 3)
    p = _ser(tmp_path / "s_1.ser", frames, dims=[(2, 1.0, "")])
    raw = p.read_bytes()
    cut = tmp_path / "cut_1.ser"
    cut.write_bytes(raw[:-20])
    with pytest.raises(FileFormatError, match=r"cut_1\.ser: truncated: image data end at byte"):
        open_datacube(cut)
    spectra = tmp_path / "spec_1.ser"
    spectra.write_bytes(raw[:6] + struct.pack("<I", 0x4120) + raw[10:])
    with pytest.raises(FileFormatError, match=r"spec_1\.ser: holds spectra"):
        open_datacube(spectra)
    three = _ser(tmp_path / "t_1.ser", np.zeros((3, 3, 3), np.int16), dims=[(3, 1.0, "")])
    offs = tia.read_header(three)["data_offsets"]
    b = bytearray(three.read_bytes())
    b[int(offs[1]) + 40 : int(offs[1]) + 42] = struct.pack("<H", 7)  # element 1 claims float32
    three.write_bytes(bytes(b))
    with pytest.raises(FileFormatError, match=r"t_1\.ser: image 1 is 3 x 3 float32, image 0 is 3 x 3 int16"):
        open_datacube(three)
    emi = tmp_path / "lonely.emi"
    emi.write_bytes(b"<ObjectInfo></ObjectInfo>")
    assert detect_format(emi) is None
    with pytest.raises(FileFormatError, match=r"lonely\.emi: its series file lonely_1\.ser is missing"):
        open_datacube(emi, format="tia")


def test_tia_info_cli(realdata, capsys):
    path = realdata / "tia" / "new" / "128x128x5-diffraction_preview.emi"
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "(tia)" in out and "(1, 5, 128, 128)" in out and "int32" in out
