"""TVIPS recorder streams: rosettasciio's test recordings (one file, split in three, the other
header variant) against rosettasciio, and synthetic streams written here from the layout."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from napari_4dstem.cli import main
from napari_4dstem.errors import FileFormatError
from napari_4dstem.io import detect_format, open_datacube, tvips


def _sha(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(a)).tobytes()).hexdigest()


# Derived once with rosettasciio 0.15.0 (rsciio.tvips.file_reader): (frames, frame shape, sum,
# sha256 of the C-ordered uint16 data). The split recording gives the same as the whole one.
TVIPS = {
    "test_tvips_2345_000.tvips": (6, (4, 5), 7140,
        "881037d206276be1ba7d7cf00e006aed220e1bd6b955da1b75c4903f8afd279d"),
    "test_tvips_2233_000.tvips": (4, (3, 3), 630,
        "a66e1e79d181ee5cb0942167b5532288c1cad68c9d318b7b4f0e351230c12e59"),
    "test_tvips_2345_split_000.tvips": (6, (4, 5), 7140,
        "881037d206276be1ba7d7cf00e006aed220e1bd6b955da1b75c4903f8afd279d"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TVIPS))
def test_tvips_matches_rosettasciio(realdata, name):
    n, frame, total, sha = TVIPS[name]
    path = realdata / "tvips" / name
    assert detect_format(path).name == "tvips"
    dc = open_datacube(path)
    assert dc.shape == (1, n, *frame) and dc.dtype == np.dtype("<u2")
    assert int(np.asarray(dc.data).sum()) == total and _sha(dc.data) == sha
    assert dc.calibration.beam_energy_kev == 200.0  # ht in the main header
    assert dc.mean_pattern().sum() == pytest.approx(total / n)


def test_tvips_split_recording(realdata):
    whole = np.asarray(open_datacube(realdata / "tvips" / "test_tvips_2345_000.tvips").data)[0]
    last = realdata / "tvips" / "test_tvips_2345_split_002.tvips"
    assert detect_format(last).name == "tvips"  # any part opens the whole recording
    assert [f.name for f in tvips.stream_files(last)] == [f"test_tvips_2345_split_{i:03d}.tvips" for i in range(3)]
    assert [s.shape[0] for s in tvips.read_frames(last)] == [1, 3, 2]
    dc = open_datacube(last, frame_offset=1, scan_shape=(2, 2))  # a scan after one stray frame
    assert dc.shape == (2, 2, 4, 5)
    np.testing.assert_array_equal(np.asarray(dc.data), whole[1:5].reshape(2, 2, 4, 5))
    np.testing.assert_array_equal(dc.data[1, 0], whole[3])
    blank = open_datacube(last, frame_offset=-2, scan_shape=(2, 4))  # two frames before the first
    got = np.asarray(blank.data).reshape(8, 4, 5)
    assert not got[:2].any()
    np.testing.assert_array_equal(got[2:], whole)
    with pytest.raises(FileFormatError, match=r"frame_offset=6 drops every one of the 6 frames"):
        open_datacube(last, frame_offset=6)


def _stream(path, frames, *, version=2, fh=60, bits=16):
    _, ny, nx = frames.shape
    head = struct.pack("<13I", 256, version, nx, ny, bits, 0, 0, 1, 1, 15, 300, 80, fh)
    head = head.ljust(256, b"\0")
    dt = "<u2" if bits == 16 else "u1"
    body = b"".join(struct.pack("<3I", i, 0, 0).ljust(fh if version == 2 else 12, b"\0")
                    + f.astype(dt).tobytes() for i, f in enumerate(frames))  # fmt: skip
    path.write_bytes(head + body)
    return path


@pytest.mark.parametrize(("version", "bits"), [(1, 16), (2, 8)])
def test_tvips_header_versions_and_depths(tmp_path, version, bits):
    frames = (np.arange(6 * 3 * 7) % 251).reshape(6, 3, 7)
    p = _stream(tmp_path / "rec_000.tvips", frames, version=version, bits=bits, fh=40)
    dc = open_datacube(p, scan_shape=(2, 3))
    assert dc.shape == (2, 3, 3, 7) and dc.dtype == np.dtype("u1" if bits == 8 else "<u2")
    np.testing.assert_array_equal(np.asarray(dc.data), frames.reshape(2, 3, 3, 7))
    assert dc.calibration.beam_energy_kev == 300.0


def test_tvips_refusals(tmp_path):
    frames = np.ones((3, 4, 4))
    p = _stream(tmp_path / "cut_000.tvips", frames)
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(FileFormatError, match=r"cut_000\.tvips: truncated or split inside a frame.*2 complete"):
        open_datacube(p)
    bad = _stream(tmp_path / "b_000.tvips", frames, bits=32)
    with pytest.raises(FileFormatError, match=r"32 bits per pixel is not supported"):
        open_datacube(bad)
    junk = tmp_path / "j_000.tvips"
    junk.write_bytes(b"\0" * 300)
    assert detect_format(junk) is None


def test_tvips_info_cli(realdata, capsys):
    assert main(["info", str(realdata / "tvips" / "test_tvips_2345_split_000.tvips")]) == 0
    out = capsys.readouterr().out
    assert "(tvips)" in out and "(1, 6, 4, 5)" in out and "uint16" in out


def test_tvips_parts_and_frame_headers_checked(realdata, tmp_path):
    src = realdata / "tvips"
    for i in (0, 2):  # the middle part is missing
        (tmp_path / f"r_{i:03d}.tvips").write_bytes((src / f"test_tvips_2345_split_{i:03d}.tvips").read_bytes())
    with pytest.raises(FileFormatError, match=r"r_000\.tvips: part _001 of this recording is missing"):
        open_datacube(tmp_path / "r_000.tvips")
    whole = (src / "test_tvips_2345_000.tvips").read_bytes()
    shifted = tmp_path / "s_000.tvips"  # one frame's worth of bytes inserted inside frame 2
    shifted.write_bytes(whole[: 256 + 230] + whole[256 + 100 : 256 + 200] + whole[256 + 230 :])
    with pytest.raises(FileFormatError, match=r"s_000\.tvips: frame \d does not start with a TVIPS frame header"):
        open_datacube(shifted)
