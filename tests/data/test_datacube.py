import dask.array as da
import h5py
import numpy as np
import pytest

from napari_4dstem import DataCube
from napari_4dstem.engine import Progress, run_job
from napari_4dstem.errors import DataShapeError


def test_rejects_non_4d_with_clear_message():
    with pytest.raises(DataShapeError, match=r"must be 4D .* got 3D with shape \(2, 3, 4\)"):
        DataCube(np.zeros((2, 3, 4)))
    with pytest.raises(DataShapeError, match="not an array"):
        DataCube([1, 2, 3])
    with pytest.raises(DataShapeError, match="empty axis"):
        DataCube(np.zeros((2, 0, 4, 4)))


def test_properties(small_cube):
    assert small_cube.shape == (7, 9, 13, 11)
    assert small_cube.scan_shape == (7, 9) and small_cube.detector_shape == (13, 11)
    assert small_cube.dtype == np.uint16 and small_cube.n_patterns == 63
    assert small_cube.nbytes == 7 * 9 * 13 * 11 * 2
    assert small_cube.chunks is None
    assert "scan_y, scan_x, k_y, k_x" in repr(small_cube)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.float32])
@pytest.mark.parametrize("scan_chunk", [(1, 1), (2, 4), (3, 5), (7, 9)])
def test_reductions_match_numpy(rng, dtype, scan_chunk):
    a = (rng.random((7, 9, 13, 11)) * 200).astype(dtype)
    dc = DataCube(a)
    progress = []
    mean = run_job(dc.iter_reduce_patterns("mean", scan_chunk=scan_chunk), progress.append)
    np.testing.assert_allclose(mean, a.mean(axis=(0, 1), dtype=np.float64), rtol=1e-12)
    assert progress[-1] == Progress(progress[-1].total, progress[-1].total, "mean pattern")
    np.testing.assert_array_equal(run_job(dc.iter_reduce_patterns("max", scan_chunk=scan_chunk)), a.max(axis=(0, 1)))
    np.testing.assert_allclose(dc.sum_pattern(), a.sum(axis=(0, 1), dtype=np.float64))


def test_reductions_on_h5py_and_dask(tmp_path, rng):
    a = rng.poisson(5, (6, 10, 8, 8)).astype(np.uint16)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("d", data=a, chunks=(4, 4, 8, 8))
    with h5py.File(tmp_path / "x.h5", "r") as f:
        dc = DataCube(f["d"])
        assert dc.chunks == (4, 4, 8, 8)
        np.testing.assert_allclose(dc.mean_pattern(), a.mean(axis=(0, 1)))
        np.testing.assert_array_equal(dc.pattern(-1, 3), a[-1, 3])
    dd = DataCube(da.from_array(a, chunks=(3, 3, 8, 8)))
    np.testing.assert_array_equal(dd.max_pattern(), a.max(axis=(0, 1)))


def test_pattern_and_region(small_cube):
    a = np.asarray(small_cube.data)
    np.testing.assert_array_equal(small_cube.pattern(2, 3), a[2, 3])
    with pytest.raises(IndexError, match="outside the scan"):
        small_cube.pattern(7, 0)
    np.testing.assert_allclose(small_cube.region_pattern(slice(1, 4), slice(2, 5)), a[1:4, 2:5].mean(axis=(0, 1)))
    np.testing.assert_array_equal(
        small_cube.region_pattern(slice(0, 2), slice(0, 2), reduce="max"), a[:2, :2].max(axis=(0, 1))
    )
    with pytest.raises(DataShapeError, match="empty scan region"):
        small_cube.region_pattern(slice(3, 3), slice(None))


def test_bin_sums_counts_and_scales_calibration(small_cube):
    a = np.asarray(small_cube.data)
    b = small_cube.bin(k=2, scan=3)
    assert b.shape == (2, 3, 6, 5)
    expected = a[:6, :9, :12, :10].astype(np.uint32).reshape(2, 3, 3, 3, 6, 2, 5, 2).sum(axis=(1, 3, 5, 7))
    np.testing.assert_array_equal(np.asarray(b.data), expected)
    assert b.dtype == np.uint32  # no overflow of uint16 sums
    assert b.calibration.scan_step == (4.5, 6.0)
    assert b.calibration.k_pixel_size == pytest.approx(0.04)
    om = small_cube.calibration.origin_map_px[:6, :9].reshape(2, 3, 3, 3, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(b.calibration.origin_map_px, (om + 0.5) / 2 - 0.5)
    assert small_cube.bin() is small_cube
    with pytest.raises(DataShapeError):
        small_cube.bin(k=20)


def test_crop_is_lazy_and_moves_origin(small_cube):
    c = small_cube.crop(scan_y=slice(1, 5), k_y=slice(2, 12), k_x=slice(1, None))
    assert c.shape == (4, 9, 10, 10)
    assert isinstance(c.data, da.Array)
    np.testing.assert_array_equal(np.asarray(c.data), np.asarray(small_cube.data)[1:5, :, 2:12, 1:])
    np.testing.assert_allclose(c.calibration.origin_map_px, small_cube.calibration.origin_map_px[1:5] - [2, 1])
    with pytest.raises(DataShapeError, match="empty"):
        small_cube.crop(k_x=slice(5, 5))


def test_to_dask_chunks(small_cube):
    d = small_cube.to_dask((2, 4))
    assert d.chunksize == (2, 4, 13, 11)
    np.testing.assert_array_equal(d.compute(), np.asarray(small_cube.data))


def test_sum_of_saturated_counts_does_not_overflow():
    # 90000 tiny frames in one block: a uint32 accumulator would overflow, uint64 must be used
    a = np.full((300, 300, 2, 2), 65535, np.uint16)
    np.testing.assert_array_equal(DataCube(a).sum_pattern(), np.full((2, 2), 65535.0 * 90000))
    b = np.full((30, 30, 4, 4), 255, np.uint8)
    np.testing.assert_array_equal(DataCube(b).mean_pattern(), np.full((4, 4), 255.0))


def test_scan_factorizations_and_reshape(rng):
    from napari_4dstem.data.datacube import scan_factorizations

    assert scan_factorizations(12)[:3] == [(3, 4), (4, 3), (2, 6)]
    assert set(scan_factorizations(7)) == {(1, 7), (7, 1)}
    a = rng.integers(0, 9, (1, 12, 5, 6), dtype=np.uint16)
    dc = DataCube(a)
    r = dc.reshape_scan((3, 4))
    assert r.shape == (3, 4, 5, 6)
    np.testing.assert_array_equal(r.pattern(2, 1), a[0, 9])  # raster order kept
    lazy = DataCube(da.from_array(a, chunks=(1, 5, 5, 6))).reshape_scan((4, 3))
    np.testing.assert_array_equal(np.asarray(lazy.data), a.reshape(4, 3, 5, 6))
    with pytest.raises(DataShapeError, match=r"holds 10 patterns, the data has 12; valid shapes: \[\(3, 4\)"):
        dc.reshape_scan((2, 5))


def test_streaming_a_memmap_releases_its_pages_without_changing_results(tmp_path, rng):
    from napari_4dstem.engine.chunks import _mmap_of, release_pages

    a = rng.integers(0, 1000, (9, 10, 16, 16), dtype=np.uint16)
    np.save(tmp_path / "m.npy", a)
    mm = np.load(tmp_path / "m.npy", mmap_mode="r")
    view = mm[2:5, 3:7]
    assert _mmap_of(view) is not None and _mmap_of(a) is None
    release_pages(view)  # pages go; the data is read back from the file on next access
    np.testing.assert_array_equal(view, a[2:5, 3:7])
    np.testing.assert_allclose(DataCube(mm).mean_pattern(), a.mean(axis=(0, 1)))
    release_pages(np.zeros(3))  # not mapped: nothing to do


@pytest.mark.parametrize("reduce", ["mean", "sum", "max"])
def test_masked_pattern_matches_numpy_over_any_region(reduce, tmp_path):
    """A real-space region of any shape (here a ring of positions and a single one): the masked
    mean/sum/max equals numpy's over those positions, in memory and from a lazy .npy."""
    from napari_4dstem import open_datacube
    from napari_4dstem.data.datacube import DataCube
    from napari_4dstem.engine.jobs import run_job

    rng = np.random.default_rng(5)
    data = rng.integers(0, 1000, (11, 9, 6, 7)).astype(np.uint16)
    yy, xx = np.mgrid[:11, :9]
    ring = (np.hypot(yy - 5, xx - 4) < 4) & (np.hypot(yy - 5, xx - 4) > 1.5)
    one = np.zeros((11, 9), bool)
    one[10, 0] = True
    np.save(tmp_path / "d.npy", data)
    lazy = open_datacube(tmp_path / "d.npy")
    try:
        for cube in (DataCube(data), lazy):
            for m in (ring, one):
                got = run_job(cube.iter_masked_pattern(m, reduce=reduce, rows_per_block=3))
                sel = data[m]
                want = {"mean": sel.mean(0, dtype=np.float64), "sum": sel.sum(0, dtype=np.float64), "max": sel.max(0)}[
                    reduce
                ]
                np.testing.assert_array_equal(got, want)
        with pytest.raises(DataShapeError, match="covers no scan position"):
            run_job(lazy.iter_masked_pattern(np.zeros((11, 9), bool)))
        with pytest.raises(DataShapeError, match="does not match the scan"):
            run_job(lazy.iter_masked_pattern(np.ones((3, 3), bool)))
    finally:
        lazy.close()
