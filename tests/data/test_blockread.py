"""Dask over memmaps reads per block: no anonymous copy of the file, truncation is an error."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from napari_4dstem import DataCube
from napari_4dstem.errors import FileFormatError, Napari4DSTEMError
from napari_4dstem.io import open_datacube


@pytest.fixture
def npy_file(tmp_path):
    a = np.random.default_rng(3).integers(0, 1000, (24, 20, 64, 48), dtype=np.uint16)  # 2.9 MB
    p = tmp_path / "c.npy"
    np.save(p, a)
    return p, a


def _peak_alloc(fn):
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_to_dask_over_memmap_allocates_no_copy(npy_file):
    p, a = npy_file
    dc = open_datacube(p)
    assert isinstance(dc.data, np.memmap)
    DataCube(np.zeros((2, 2, 2, 2))).bin(k=2)  # imports dask outside the measurement
    x, peak = _peak_alloc(dc.to_dask)
    # dask's from_array copies a plain memmap (a.nbytes here); the block reader copies nothing
    assert peak < a.nbytes / 10, peak
    np.testing.assert_array_equal(x.compute(), a)
    _, peak_bin = _peak_alloc(lambda: dc.bin(k=2))
    assert peak_bin < a.nbytes / 10
    ref = a.reshape(24, 20, 32, 2, 24, 2).sum(axis=(3, 5), dtype=np.uint32)
    np.testing.assert_array_equal(dc.bin(k=2).data.compute(), ref)
    np.testing.assert_array_equal(
        np.asarray(dc.crop(scan_y=slice(2, 7), k_x=slice(3, 20)).data.compute()), a[2:7, :, :, 3:20]
    )


def test_truncated_while_open_raises_not_sigbus(npy_file):
    p, _a = npy_file
    dc = open_datacube(p)
    x = dc.to_dask()
    with open(p, "r+b") as fh:
        fh.truncate(p.stat().st_size // 2)
    with pytest.raises(FileFormatError, match="truncated while open") as ei:
        x.compute()
    assert isinstance(ei.value, Napari4DSTEMError)


def test_in_memory_numpy_still_works(rng):
    a = rng.random((3, 4, 5, 6), dtype=np.float32)
    d = DataCube(a).to_dask((2, 3))
    assert d.chunks[0] == (2, 1)
    np.testing.assert_array_equal(d.compute(), a)
