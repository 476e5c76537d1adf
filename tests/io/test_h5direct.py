"""Uncompressed HDF5 chunks read through a memory map equal h5py's reads, or h5py is used."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from napari_4dstem import DataCube
from napari_4dstem.analysis.virtual.detectors import AnnulusDetector, DiskDetector
from napari_4dstem.analysis.virtual.images import virtual_images
from napari_4dstem.engine.blocks import read_rows
from napari_4dstem.io import emd
from napari_4dstem.io._h5direct import direct_reader


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_emd_chunks_read_directly_equal_h5py(tmp_path, rng, dtype):
    a = (rng.random((13, 11, 20, 18)) * 1000).astype(dtype)  # uneven: edge chunks
    path = tmp_path / "cube.h5"
    emd.write(path, DataCube(a, name="cube"))
    with emd.read_datacube(path) as dc:
        ds = dc.data
        reader = direct_reader(ds)
        assert reader is not None  # our EMD files qualify: uncompressed, whole-pattern chunks
        for sy, sx, rows in [
            (slice(0, 13), slice(0, 11), slice(0, 20)),
            (slice(3, 9), slice(2, 11), slice(5, 12)),
            (slice(8, 13), slice(0, 1), slice(19, 20)),
        ]:
            np.testing.assert_array_equal(reader.read(sy, sx, rows), ds[sy, sx, rows])
            np.testing.assert_array_equal(read_rows(ds, sy, sx, rows), a[sy, sx, rows])
        dets = [DiskDetector((10.0, 9.0), 3.0), AnnulusDetector((10.0, 9.0), 3.0, 9.0)]
        got = virtual_images(dc, dets, scan_chunk=(4, 5)).data
    mask = [d.render(a.shape[2:]) for d in dets]
    ref = np.stack([a[:, :, m].sum(-1, dtype=np.float64) for m in mask], -1)
    np.testing.assert_allclose(got, ref, rtol=2e-6)


def test_unwritten_chunks_read_as_the_fill_value(tmp_path, rng):
    path = tmp_path / "partial.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("d", shape=(8, 8, 6, 6), chunks=(4, 4, 6, 6), dtype=np.uint16, fillvalue=7)
        ds[0:4, 0:4] = rng.integers(0, 100, (4, 4, 6, 6))
    with h5py.File(path, "r") as f:
        ds = f["d"]
        reader = direct_reader(ds)
        assert reader is not None
        np.testing.assert_array_equal(reader.read(slice(0, 8), slice(0, 8), slice(1, 5)), ds[:, :, 1:5])
        assert np.all(reader.read(slice(4, 8), slice(4, 8), slice(0, 6)) == 7)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"chunks": (2, 2, 6, 6), "compression": "gzip"},  # filtered
        {"chunks": (2, 2, 3, 6)},  # chunks split the pattern
        {},  # contiguous, not chunked
    ],
)
def test_other_layouts_are_read_by_h5py(tmp_path, rng, kwargs):
    a = rng.integers(0, 100, (4, 4, 6, 6)).astype(np.uint16)
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("d", data=a, **kwargs)
    with h5py.File(path, "r") as f:
        assert direct_reader(f["d"]) is None
        np.testing.assert_array_equal(read_rows(f["d"], slice(1, 3), slice(0, 4), slice(2, 5)), a[1:3, :, 2:5])


@pytest.mark.parametrize("backend", [None, "prange"])
def test_kernels_on_chunk_views_equal_in_memory(tmp_path, rng, backend):
    # many chunks, cut by the scan's edges, a per-pattern argument (descan shifts) sliced to
    # every chunk, and COM (a kernel over all rows): the zero-copy chunk path (threads mode)
    # and the copy path (prange) give what the same data in memory gives
    from napari_4dstem import Calibration
    from napari_4dstem.analysis.virtual.com import center_of_mass

    a = rng.integers(0, 500, (7, 8, 20, 18)).astype(np.uint16)
    path = tmp_path / "chunks.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("d", data=a, chunks=(2, 3, 20, 18))
    shifts = rng.uniform(-2.0, 2.0, (7, 8, 2))
    cal = Calibration(origin_px=(10.0, 9.0), origin_map_px=shifts + np.array([10.0, 9.0]))
    dets = [DiskDetector((10.0, 9.0), 3.0), AnnulusDetector((10.0, 9.0), 2.0, 8.0)]
    with h5py.File(path, "r") as f:
        assert direct_reader(f["d"]) is not None
        lazy = DataCube(f["d"], cal)
        for descan in (False, True):
            got = virtual_images(lazy, dets, descan=descan, backend=backend).data
            ref = virtual_images(DataCube(a, cal), dets, descan=descan).data
            np.testing.assert_allclose(got, ref, rtol=1e-12)
        np.testing.assert_allclose(center_of_mass(lazy, backend=backend).data, center_of_mass(DataCube(a, cal)).data)


def test_distributed_workers_run_on_chunk_views(tmp_path, rng):
    import distributed

    a = rng.integers(0, 500, (7, 8, 20, 18)).astype(np.uint16)
    path = tmp_path / "chunks.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("d", data=a, chunks=(2, 3, 20, 18))
    dets = [DiskDetector((10.0, 9.0), 3.0), AnnulusDetector((10.0, 9.0), 2.0, 8.0)]
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
        h5py.File(path, "r") as f,
    ):
        got = virtual_images(DataCube(f["d"]), dets, backend=client, scan_chunk=(4, 6)).data
    ref = virtual_images(DataCube(a), dets).data
    np.testing.assert_array_equal(got, ref)
