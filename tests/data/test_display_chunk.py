"""The scan chunk of a file's dask view for napari (``display_scan_chunk``): the storage chunk,
grown (in storage chunks) where it is so small that dask's graph costs more than the read
(review mend, session 13: a file in 2 x 2 scan chunks gave 262,144 dask chunks for 1024 x 1024)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem._layers import display_scan_chunk, grown_scan_chunk
from napari_4dstem.data.datacube import DataCube

h5py = pytest.importorskip("h5py")


@pytest.mark.parametrize(
    ("storage", "pattern_bytes", "want"),
    [
        ((2, 2), 64, (16, 16)),  # 8 x 8 uint8 patterns: to 4096 chunks (16 KiB each)
        ((8, 8), 64, (16, 16)),
        ((64, 64), 64, (64, 64)),  # 256 chunks already: one storage chunk a step
        ((2, 2), 128 * 128 * 2, (8, 4)),  # 32 KiB patterns: to 1 MiB a chunk
        ((8, 8), 128 * 128 * 2, (8, 8)),  # 2 MiB already
    ],
)
def test_the_display_chunk_grows_small_storage_chunks_only(storage, pattern_bytes, want):
    got = grown_scan_chunk((1024, 1024), storage, pattern_bytes)
    assert got == want
    assert got[0] % storage[0] == 0 and got[1] % storage[1] == 0


def test_a_small_scan_keeps_its_storage_chunk_and_a_chunk_never_passes_the_scan():
    assert grown_scan_chunk((32, 32), (8, 8), 64) == (8, 8)  # the bundled sample: 16 chunks
    # a thin scan: its short side stops at the whole axis (3, not a multiple of 2), its long one grows
    assert grown_scan_chunk((65536, 3), (2, 2), 4) == (16, 3)


def test_a_file_in_2_by_2_scan_chunks_opens_with_at_most_4096_dask_chunks(tmp_path):
    path = tmp_path / "small_chunks.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("d", shape=(256, 512, 8, 8), dtype=np.uint8, chunks=(2, 2, 8, 8))
        d[...] = np.arange(256 * 512 * 64, dtype=np.uint64).reshape(d.shape) % 251
    with h5py.File(path, "r") as f:
        dc = DataCube(f["d"])
        chunk = display_scan_chunk(dc)
        assert chunk == (8, 4)  # 128 x 256 chunks of 2 x 2 -> 32 x 128 = 4096 chunks
        a = dc.to_dask(chunk)
        assert a.npartitions <= 4096
        np.testing.assert_array_equal(np.asarray(a[117, 301]), f["d"][117, 301])
