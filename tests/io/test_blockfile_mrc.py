"""NanoMegas blockfile and (Direct Electron) MRC readers against rosettasciio."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from napari_4dstem.errors import FileFormatError
from napari_4dstem.io import detect_format, open_datacube


def _sha(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(a)).tobytes()).hexdigest()


# Derived once with rosettasciio 0.15.0 (rsciio.blockfile.file_reader; LiberTEM reads the same
# bytes): (shape, sum, sha256 of the C-ordered uint8 data, scan step nm, detector cm/px).
BLO = {
    "test1.blo": ((3, 2, 144, 144), 5164570,
                  "ca07b9990b105ee65a89c0d0ec8c241c56cf7e4ffb8b4828bff49be92a93d183", 12.8),
    "test2.blo": ((2, 3, 5, 5), 2952,
                  "aa97841f7c7908bb78715031bf1d3234f9eb1150fcec83800231a8a546008b24", 64.0),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BLO))
def test_blockfile_matches_rosettasciio(realdata, name):
    shape, total, sha, step = BLO[name]
    path = realdata / "blockfile" / name
    assert detect_format(path).name == "blockfile"
    dc = open_datacube(path)
    assert dc.shape == shape and dc.dtype == np.uint8
    assert isinstance(dc.data, np.ndarray)  # memmap view, 6-byte record headers skipped
    assert int(np.asarray(dc.data).sum()) == total
    assert _sha(dc.data) == sha
    assert dc.calibration.scan_step == (step, step) and dc.calibration.scan_units == "nm"
    assert dc.metadata["detector_pixel_cm"] == pytest.approx(0.016062, abs=1e-6)


def test_blockfile_truncated(realdata, tmp_path):
    src = (realdata / "blockfile" / "test1.blo").read_bytes()
    p = tmp_path / "cut.blo"
    p.write_bytes(src[: len(src) - 144 * 144])
    with pytest.raises(FileFormatError, match=r"cut\.blo: truncated.*5 complete patterns"):
        open_datacube(p)
    dc = open_datacube(p, scan_shape=(1, 5))
    np.testing.assert_array_equal(
        np.asarray(dc.data).reshape(5, 144, 144),
        np.asarray(open_datacube(realdata / "blockfile" / "test1.blo").data).reshape(6, 144, 144)[:5],
    )


# Derived once with rosettasciio 0.15.0 (rsciio.mrc.file_reader with metadata_file=<name>_info.txt
# and scan_file=<name>_scan_coordinates.csv): (shape, sum, sha256). For Custom rsciio returns
# (5, 5, 2, 16, 16) with the pass as third axis: data[:, :, k] for repeat=k.
MRC = {
    ("20241021_00405_movie.mrc", 0): ((4, 8, 4, 8), 15872,
        "4c2ca5d3a41f5d255f2a3cc8fee8601d5af1594d24f90a1c0247f467dda362b8"),
    ("ROI_Random_Scan_movie.mrc", 0): ((29, 12, 16, 16), 104477835,
        "68a2fb24dea3ed716b23b4194d3961cdc161485e74c3b58f62af7a3197dfd060"),
    ("Custom_movie.mrc", 0): ((5, 5, 16, 16), 4503163,
        "e6c784cf4ab71757d0a8c37ac78bf2d705bc0c242d0ea8ac43e95fe80bd26273"),
    ("Custom_movie.mrc", 1): ((5, 5, 16, 16), 4503267,
        "66b5f9f578cddcfedb6b04ea1dc904b3efd33ae5f61f1c026d92139836ca0651"),
}  # fmt: skip


@pytest.mark.parametrize("key", sorted(MRC))
def test_mrc_matches_rosettasciio(realdata, key):
    name, rep = key
    shape, total, sha = MRC[key]
    path = realdata / "mrc" / name
    assert detect_format(path).name == "mrc"
    dc = open_datacube(path, repeat=rep) if rep else open_datacube(path)
    assert dc.shape == shape and dc.dtype == np.dtype("<u2")
    assert int(np.asarray(dc.data).sum(dtype=np.int64)) == total
    assert _sha(dc.data) == sha


def test_mrc_plain_stack_and_errors(realdata, tmp_path):
    # the random scan read as a plain stack: rsciio without the info file gives (348, 16, 16)
    shutil.copy(realdata / "mrc" / "ROI_Random_Scan_movie.mrc", tmp_path / "stack.mrc")
    dc = open_datacube(tmp_path / "stack.mrc")
    assert dc.shape == (1, 348, 16, 16)
    assert _sha(dc.data) == "35d49914173eb65f490538edb223c43cc3c4f30bb50abd9a71263a2a3066d359"
    assert open_datacube(tmp_path / "stack.mrc", scan_shape=(12, 29)).shape == (12, 29, 16, 16)
    # a random scan whose coordinates file is missing
    for suffix in ("_movie.mrc", "_info.txt"):
        shutil.copy(realdata / "mrc" / f"ROI_Random_Scan{suffix}", tmp_path / f"R{suffix}")
    with pytest.raises(FileFormatError, match="_scan_coordinates.csv"):
        open_datacube(tmp_path / "R_movie.mrc")
    # a 2D HAADF image is not claimed as 4D-STEM
    assert detect_format(realdata / "mrc" / "HAADFscan.mrc") is None
    # truncated movie
    data = (realdata / "mrc" / "20241021_00405_movie.mrc").read_bytes()
    (tmp_path / "t_movie.mrc").write_bytes(data[:-10])
    with pytest.raises(FileFormatError, match=r"t_movie\.mrc: truncated"):
        open_datacube(tmp_path / "t_movie.mrc")


@pytest.mark.parametrize("dtype", [">u2", "<u2", ">f4", ">i2", "<f2"])
def test_mrc_in_either_byte_order_reads_exactly(tmp_path, dtype):
    """A stack written by mrcfile (any byte order, the machine stamp says which) reads exactly."""
    mrcfile = pytest.importorskip("mrcfile")
    rng = np.random.default_rng(3)
    frames = (rng.random((6, 5, 7)) * 1000).astype(dtype)
    path = tmp_path / "stack.mrc"
    with mrcfile.new(str(path)) as m:
        m.set_data(frames)
    dc = open_datacube(path, scan_shape=(2, 3))
    assert dc.shape == (2, 3, 5, 7)
    assert dc.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(np.asarray(dc.data), frames.reshape(2, 3, 5, 7))
    assert dc.metadata["header"]["byte_order"] == ("big" if dtype[0] == ">" else "little")


def test_mrc_complex_mode_is_refused_with_the_modes_we_read(tmp_path):
    mrcfile = pytest.importorskip("mrcfile")
    path = tmp_path / "c.mrc"
    with mrcfile.new(str(path)) as m:
        m.set_data(np.zeros((3, 4, 4), np.complex64))
    with pytest.raises(FileFormatError, match="unsupported MRC mode 4"):
        open_datacube(path, format="mrc", scan_shape=(1, 3))
