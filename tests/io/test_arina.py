"""DECTRIS ARINA reader: the real (all-zero) test file and synthetic bitshuffle/LZ4 files."""

from __future__ import annotations

import h5py
import hdf5plugin
import numpy as np
import pytest

from napari_4dstem.errors import FileFormatError
from napari_4dstem.io import arina, detect_format, open_datacube


def test_arina_real_file(realdata):
    # rosettasciio 0.15 gives (4, 4, 192, 192), every pixel 0 (it casts the stored uint32 to
    # uint16; we keep uint32). The master's pixel_mask and flatfield are (192, 192).
    master = realdata / "arina" / "test_00_master.h5"
    assert detect_format(master).name == "arina"
    assert detect_format(master.with_name("test_00_data_000001.h5")).name == "arina"
    with open_datacube(master) as dc:
        assert dc.shape == (4, 4, 192, 192)
        assert dc.dtype == np.uint32
        assert dc.metadata["scan_shape_from"] == "square scan assumed"
        assert int(np.asarray(dc.data).sum()) == 0
        assert dc.metadata["pixel_mask"].shape == (192, 192)
        assert dc.metadata["flatfield"].shape == (192, 192)
        assert dc.metadata["compression"] == "bslz4"
        assert dc.calibration.beam_energy_kev == 300.0
    with open_datacube(master, scan_shape=(2, 8)) as dc:
        assert dc.shape == (2, 8, 192, 192)


def _write_arina(tmp_path, frames_per_file, *, qy=24, qx=20, dtype=np.uint32, ntrigger=None):
    """Master + data files laid out as the ARINA software writes them (bitshuffle/LZ4)."""
    rng = np.random.default_rng(7)
    chunks = []
    for i, n in enumerate(frames_per_file, start=1):
        data = rng.integers(0, 5000, size=(n, qy, qx)).astype(dtype)
        chunks.append(data)
        with h5py.File(tmp_path / f"scan_data_{i:06d}.h5", "w") as f:
            f.create_dataset(
                "entry/data/data",
                data=data,
                chunks=(1, qy, qx),
                **hdf5plugin.Bitshuffle(cname="lz4"),
            )
    total = sum(frames_per_file)
    with h5py.File(tmp_path / "scan_master.h5", "w") as f:
        f.create_group("entry/data")
        for i in range(1, len(frames_per_file) + 1):
            f[f"entry/data/data_{i:06d}"] = h5py.ExternalLink(f"scan_data_{i:06d}.h5", "/entry/data/data")
        det = f.create_group("entry/instrument/detector")
        det["description"] = b"Dectris ARINA CZT"
        det["x_pixel_size"] = 1e-4
        spec = det.create_group("detectorSpecific")
        spec["nimages"] = np.uint64(1)
        spec["ntrigger"] = np.uint64(ntrigger or total)
        spec["photon_energy"] = 200000.0
        spec["pixel_mask"] = (rng.random((qy, qx)) > 0.9).astype(np.uint32)
        spec["flatfield"] = rng.random((qy, qx)).astype(np.float32)
    return tmp_path / "scan_master.h5", np.concatenate(chunks)


def test_arina_synthetic_bitshuffle_lz4(tmp_path):
    master, frames = _write_arina(tmp_path, [40, 40, 20])
    with h5py.File(tmp_path / "scan_data_000001.h5") as f:
        assert "32008" in f["entry/data/data"]._filters  # really bitshuffle-compressed
    with open_datacube(master, scan_shape=(10, 10)) as dc:
        assert dc.shape == (10, 10, 24, 20)
        assert dc.dtype == np.uint32
        assert dc.calibration.beam_energy_kev == 200.0
        np.testing.assert_array_equal(np.asarray(dc.data), frames.reshape(10, 10, 24, 20))
        # a chunk that straddles two data files, a strided slice and a single pattern
        np.testing.assert_array_equal(np.asarray(dc.data[3:5, 5:9]), frames.reshape(10, 10, 24, 20)[3:5, 5:9])
        np.testing.assert_array_equal(dc.pattern(7, 3), frames[73])
        np.testing.assert_array_equal(dc.sum_pattern(), frames.sum(0, dtype=np.float64))
        with h5py.File(master) as f:
            np.testing.assert_array_equal(
                dc.metadata["pixel_mask"],
                f["entry/instrument/detector/detectorSpecific/pixel_mask"][()],
            )
    # 100 frames is a perfect square: opened as 10 x 10 without a scan_shape
    with open_datacube(master) as dc:
        assert dc.shape == (10, 10, 24, 20)
    assert set(arina.read_detector_arrays(master)) == {"pixel_mask", "flatfield"}


def test_arina_chunks_and_scan_shape_errors(tmp_path):
    master, _ = _write_arina(tmp_path, [12 * 40])
    with open_datacube(master) as dc:
        assert dc.shape == (1, 480, 24, 20)  # not square and no metadata
    with open_datacube(master, scan_shape=(12, 40)) as dc:
        assert dc.data.chunksize == (12, 21, 24, 20)  # about 16 * 16 patterns per chunk
    with pytest.raises(FileFormatError, match=r"scan_master\.h5.*pass a scan_shape"):
        open_datacube(master, scan_shape=(20, 40))


def test_arina_missing_or_short_data_file(tmp_path):
    master, _ = _write_arina(tmp_path, [10, 10], ntrigger=25)
    with pytest.raises(FileFormatError, match=r"promises 25 frames.*hold 20"):
        open_datacube(master)
    (tmp_path / "scan_data_000002.h5").unlink()
    with pytest.raises(FileFormatError, match=r"scan_data_000002\.h5.*missing"):
        open_datacube(master)
