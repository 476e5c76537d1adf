"""A corrupted LZ4 stream inside a well-framed bitshuffle/LZ4 chunk of the real ARINA file
(#19): every read path (a pattern, dask, the engine) raises our FileFormatError naming the
file and the frame; the other frames still read exactly."""

from __future__ import annotations

import shutil
import struct

import h5py
import hdf5plugin  # noqa: F401 - the bitshuffle filter
import numpy as np
import pytest

from napari_4dstem.engine.driver import map_scan
from napari_4dstem.engine.jobs import run_job
from napari_4dstem.errors import FileFormatError
from napari_4dstem.io import open_datacube
from napari_4dstem.io._framestack import _bad_framing


def _total(block, *, row0, parallel):
    return block.sum(axis=(2, 3), dtype=np.float64)


@pytest.fixture
def corrupt_arina(realdata, tmp_path):
    src = realdata / "arina"
    for name in ("test_00_master.h5", "test_00_data_000001.h5"):
        shutil.copy(src / name, tmp_path / name)
    data = tmp_path / "test_00_data_000001.h5"
    with h5py.File(data, "r") as f:
        ds = f["entry/data/data"]
        where = {}
        ds.id.chunk_iter(lambda c: where.__setitem__(int(c.chunk_offset[0]), (c.byte_offset, c.size)))
        clean = ds[()]
        nbytes, unit = ds.chunks[1] * ds.chunks[2] * ds.dtype.itemsize, 8 * ds.dtype.itemsize
    off, size = where[5]
    blob = bytearray(data.read_bytes())
    chunk = bytes(blob[off : off + size])
    assert _bad_framing(chunk, nbytes, unit) is None
    # the first block's LZ4 stream: its token now asks for 15 + 255 + 255 literals, more bytes
    # than the block holds; the block sizes (the framing we check ourselves) are unchanged
    n0 = struct.unpack_from(">I", chunk, 12)[0]
    assert n0 > 4
    p = off + 16
    blob[p : p + 3] = b"\xf0\xff\xff"
    data.write_bytes(bytes(blob))
    assert _bad_framing(bytes(blob[off : off + size]), nbytes, unit) is None  # still well framed
    return tmp_path / "test_00_master.h5", clean


def test_a_corrupt_lz4_stream_is_our_error_on_every_read_path(corrupt_arina):
    master, clean = corrupt_arina
    dc = open_datacube(master, scan_chunk=1)  # one frame per dask chunk
    try:
        assert dc.shape == (4, 4, 192, 192)
        # frame 5 is scan position (1, 1); every other frame reads as before (a dask chunk
        # holding frame 5 fails as a whole: with the default chunks, all 16 frames here)
        np.testing.assert_array_equal(dc.pattern(0, 0), clean[0])
        np.testing.assert_array_equal(dc.pattern(3, 3), clean[15])
        with pytest.raises(FileFormatError, match=r"data_000001\.h5: frame 5 of /entry/data/data cannot be decoded"):
            dc.pattern(1, 1)
        with pytest.raises(FileFormatError, match="frame 5 of /entry/data/data cannot be decoded"):
            dc.data[1:2].compute()  # dask over the frame stack
        with pytest.raises(FileFormatError, match="frame 5 of /entry/data/data cannot be decoded"):
            run_job(map_scan(dc, _total))  # the engine
        np.testing.assert_array_equal(np.asarray(dc.data[2:4]).reshape(8, 192, 192), clean[8:16])
    finally:
        dc.close()


def test_engine_reports_storage_read_failures_as_our_error(tmp_path):
    # a plain h5py dataset whose compressed chunk is damaged (no reader in between)
    p = tmp_path / "z.h5"
    a = np.arange(2 * 3 * 8 * 8, dtype=np.uint16).reshape(2, 3, 8, 8)
    with h5py.File(p, "w") as f:
        f.create_dataset("d", data=a, chunks=(1, 1, 8, 8), compression="gzip")
        off = f["d"].id.get_chunk_info(4).byte_offset
    blob = bytearray(p.read_bytes())
    blob[off : off + 8] = b"\xff" * 8  # not a zlib stream any more
    p.write_bytes(bytes(blob))
    with h5py.File(p, "r") as f:
        with pytest.raises(FileFormatError, match=r"z\.h5: cannot read scan block \[0:2, 0:3\] \(OSError"):
            run_job(map_scan(f["d"], _total, scan_chunk=(2, 3)))
