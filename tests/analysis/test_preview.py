import numpy as np
import pytest

from napari_4dstem import DataCube
from napari_4dstem.analysis.virtual.detectors import (
    AnnulusDetector,
    DiskDetector,
    RectangleDetector,
)
from napari_4dstem.analysis.virtual.images import virtual_image
from napari_4dstem.analysis.virtual.preview import binned_detector, iter_preview_cube
from napari_4dstem.engine import run_job


def test_preview_is_exact_for_block_aligned_detectors_and_close_otherwise(rng):
    a = rng.poisson(4.0, (6, 7, 32, 36)).astype(np.uint16)
    dc = DataCube(a)
    prev = run_job(iter_preview_cube(dc, factor=4))
    assert prev.shape == (6, 7, 8, 9) and prev.dtype == np.uint32
    np.testing.assert_array_equal(prev.data, a.astype(np.uint32).reshape(6, 7, 8, 4, 9, 4).sum(axis=(3, 5)))
    rect = RectangleDetector((8, 20), (4, 28))  # block aligned: identical
    np.testing.assert_allclose(
        virtual_image(prev, binned_detector(rect, (32, 36), 4)).data, virtual_image(dc, rect).data
    )
    # a disk is not block aligned: the preview is the exact image up to its edge pixels
    disk = DiskDetector((15.3, 17.8), 7.0)
    p = virtual_image(prev, binned_detector(disk, (32, 36), 4)).data
    e = virtual_image(dc, disk).data
    assert np.corrcoef(p.ravel(), e.ravel())[0, 1] > 0.8
    assert abs(p.mean() / e.mean() - 1) < 0.05  # same expected counts (area preserved in mean)
    ann = AnnulusDetector((16.0, 18.0), 3.0, 12.0)
    assert virtual_image(prev, binned_detector(ann, (32, 36), 4)).data.shape == (6, 7)


def _naive(a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (a.astype(np.float64) * mask).sum(axis=(2, 3))


def test_strided_positions_one_sample_inside_each_block():
    from napari_4dstem.analysis.virtual.preview import strided_positions

    assert strided_positions(192, 4) == slice(2, 192, 4)
    assert strided_positions(37, 2) == slice(0, 37, 2)  # the last block is one position long
    for n in range(1, 40):
        for step in range(1, 12):
            pos = np.arange(n)[strided_positions(n, step)]
            assert len(pos) == -(-n // step)
            np.testing.assert_array_equal(pos // step, np.arange(len(pos)))  # one per block, in it


def test_scan_stride_meets_the_budget_with_the_smallest_step():
    from napari_4dstem.analysis.virtual.preview import scan_stride, strided_image

    # 192 x 192 whole 128 x 128 uint16 patterns (32 KiB): 32 MiB allows 32 x 32 samples -> step 6
    assert scan_stride((192, 192), 32768) == 6
    # only the 16 detector rows of a BF disk (4 KiB): 1/16 of the patterns -> step 4
    assert scan_stride((192, 192), 16 * 256) == 4
    assert scan_stride((4, 4), 100) == 4 and scan_stride((1, 1), 100) == 1
    assert scan_stride((100, 30), 10, fraction=1.0) == 1
    # no step within the budget (9/16 of a pattern; a pattern over 32 MiB): one pattern for the whole scan
    assert scan_stride((3, 3), 100) == 3 and scan_stride((64, 48), 2**26) == 64
    with pytest.raises(ValueError, match="fraction"):
        scan_stride((10, 10), 10, fraction=0.0)
    with pytest.raises(ValueError, match="step"):
        strided_image(np.zeros((4, 4, 8, 8)), DiskDetector((3.5, 3.5), 2.0), step=0)


def test_strided_image_is_exact_at_the_samples_and_spreads_them_over_their_blocks(rng, tmp_path):
    from napari_4dstem.analysis.virtual.preview import strided_image, strided_positions

    a = rng.integers(0, 60000, (37, 45, 24, 28)).astype(np.uint16)
    path = tmp_path / "cube.npy"
    np.save(path, a)
    mm = np.load(path, mmap_mode="r")
    for det in (
        DiskDetector((11.3, 14.0), 5.2),
        AnnulusDetector((12.0, 13.0), 3.0, 9.0),
        RectangleDetector((2, 9), (20, 27)),
    ):
        want = _naive(a, det.render((24, 28)))
        for step in (1, 2, 3, 4, 7):
            got = strided_image(mm, det, step=step)
            sy, sx = strided_positions(37, step), strided_positions(45, step)
            assert got.data.shape == (37, 45) and got.params["preview"]["step"] == step
            np.testing.assert_array_equal(got.data[sy, sx], want[sy, sx])  # exact at the samples
            ys = np.arange(37)[sy][np.arange(37) // step]  # the sample of each position's block
            xs = np.arange(45)[sx][np.arange(45) // step]
            np.testing.assert_array_equal(got.data, want[ys[:, None], xs[None, :]])
    # default step: at most 1/16 of the 37 x 45 patterns (104): step 4 samples 10 x 12 = 120, step 5 8 x 9
    assert strided_image(mm, DiskDetector((11.3, 14.0), 5.2)).params["preview"]["step"] == 5


def test_strided_image_reads_only_the_sampled_patterns_and_takes_dask(rng):
    import dask.array as da

    from napari_4dstem.analysis.virtual.preview import strided_image, strided_positions
    from napari_4dstem.errors import NonFiniteDataError

    a = rng.random((20, 18, 16, 16)).astype(np.float32)
    det = DiskDetector((7.5, 7.5), 4.0)
    sy, sx = strided_positions(20, 3), strided_positions(18, 3)
    bad = a.copy()
    keep = np.zeros((20, 18), bool)
    keep[sy, sx] = True
    bad[~keep] = np.nan  # every pattern that is not sampled
    try:
        virtual_image(bad, det)
        raise AssertionError("the exact image reads every pattern")
    except NonFiniteDataError:
        pass
    got = strided_image(bad, det, step=3).data  # never reads a NaN pattern
    # float32 sums: as exact as the exact image (integer data: equal, test above)
    np.testing.assert_allclose(got[sy, sx], _naive(a, det.render((16, 16)))[sy, sx], rtol=1e-6)
    lazy = strided_image(da.from_array(a, chunks=(5, 6, 16, 16)), det, step=3).data
    np.testing.assert_allclose(lazy, got, rtol=1e-6)


def test_strided_pays_only_where_a_storage_chunk_holds_one_scan_position(tmp_path):
    """A strided preview (one position in 4 x 4 or more) of data stored in chunks of several scan
    positions along y or x reads whole chunks, i.e. about the whole file: it does not pay there."""
    import dask.array as da
    import h5py

    from napari_4dstem.analysis.virtual.preview import strided_pays

    a = np.zeros((16, 16, 8, 8), np.uint16)
    assert strided_pays(DataCube(a).chunks)  # in memory / memory map: contiguous
    assert not strided_pays(DataCube(da.from_array(a, chunks=(8, 8, 8, 8))).chunks)  # our EMD writer's
    assert not strided_pays(DataCube(da.from_array(a, chunks=(1, 16, 8, 8))).chunks)  # whole scan rows
    assert strided_pays(DataCube(da.from_array(a, chunks=(1, 1, 8, 8))).chunks)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        assert not strided_pays(DataCube(f.create_dataset("a", data=a, chunks=(8, 8, 8, 8))).chunks)
        assert strided_pays(DataCube(f.create_dataset("b", data=a, chunks=(1, 1, 8, 8))).chunks)


def _planted(rng, scan=(48, 40), k=16):
    """Patterns whose BF-disk sum is a planted image: each pattern a random count ``v[y, x]``
    times one fixed pattern, so every virtual image is ``v`` times that pattern's detector sum."""
    v = rng.integers(1, 200, scan).astype(np.uint16)
    base = rng.integers(0, 5, (k, k)).astype(np.uint16)
    return v[:, :, None, None] * base, v, base


class _CountingStack:
    """A ``(n, k_y, k_x)`` frame stack that records which frames are read."""

    def __init__(self, frames):
        self.frames, self.read = frames, set()
        self.shape, self.dtype = frames.shape, frames.dtype

    def __getitem__(self, key):
        f = key[0] if isinstance(key, tuple) else key
        self.read.update(range(*f.indices(self.shape[0])) if isinstance(f, slice) else np.ravel(f).tolist())
        return self.frames[key]


def test_storage_chunks_tell_per_frame_readers_and_files_from_dask_chunks(rng, tmp_path):
    """The storage a read touches, not dask's chunks: a layer's dask view of an HDF5 file has the
    file's chunks; ARINA and Direct Electron MRC read frame by frame under dask chunks of 16 x 16."""
    import dask.array as da
    import h5py
    import zarr

    from napari_4dstem.analysis.virtual.preview import strided_pays
    from napari_4dstem.io._framestack import FrameStack4D
    from napari_4dstem.io.mrc import _IndexedFrames

    a, _, _ = _planted(rng, (16, 16), 8)
    assert DataCube(a).storage_chunks is None and DataCube(DataCube(a).to_dask()).storage_chunks is None
    arina = da.from_array(FrameStack4D([a.reshape(256, 8, 8)], (16, 16)), chunks=(16, 16, 8, 8), asarray=True,
                          fancy=False, name="arina-test")  # fmt: skip
    mrc = da.from_array(_IndexedFrames(a.reshape(256, 8, 8), np.arange(256).reshape(16, 16)),
                        chunks=(16, 16, 8, 8), asarray=True, fancy=False, name="mrc-test")  # fmt: skip
    for d in (arina, mrc):
        assert DataCube(d).chunks == (16, 16, 8, 8) and DataCube(d).storage_chunks == (1, 1, 8, 8)
        assert strided_pays(DataCube(d).storage_chunks)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        ds = f.create_dataset("a", data=a, chunks=(8, 8, 8, 8))
        view = DataCube(ds).to_dask()  # what a napari layer holds
        assert DataCube(view).storage_chunks == (8, 8, 8, 8) and not strided_pays((8, 8, 8, 8))
        assert DataCube(f.create_dataset("b", data=a)).storage_chunks is None  # contiguous
    with h5py.File(tmp_path / "c.h5", "r") as f:  # read-only: the engine reads its chunks from the file's map
        from napari_4dstem.engine.blocks import find_chunk_views, read_rows

        view = DataCube(f["a"]).to_dask()
        assert find_chunk_views(view) is not None and find_chunk_views(view.rechunk((4, 4, 8, 8))) is None
        np.testing.assert_array_equal(read_rows(view, slice(3, 13), slice(5, 9), slice(2, 5)), a[3:13, 5:9, 2:5])
    z = zarr.open(str(tmp_path / "c.zarr"), mode="w", shape=a.shape, chunks=(4, 4, 8, 8), dtype=a.dtype)
    assert DataCube(DataCube(z).to_dask()).storage_chunks == (4, 4, 8, 8)
    # a dask array that is more than a view of its source: dask's chunks (whole chunks computed)
    assert DataCube(arina.rechunk((8, 8, 8, 8))).storage_chunks == (8, 8, 8, 8)


def test_per_frame_readers_get_the_strided_preview_reading_only_the_sampled_frames(rng, counts_reached):
    import dask.array as da

    from napari_4dstem.analysis.virtual.preview import iter_strided_image, strided_positions, strided_steps
    from napari_4dstem.engine.jobs import Progress
    from napari_4dstem.io._framestack import FrameStack4D
    from napari_4dstem.io.mrc import _IndexedFrames

    a, v, base = _planted(rng, (48, 40), 16)
    det = DiskDetector((7.5, 7.5), 4.0)
    want = v * float((base * det.render((16, 16))).sum())
    for make in (
        lambda s: FrameStack4D([s], (48, 40)),
        lambda s: _IndexedFrames(s, np.arange(48 * 40).reshape(48, 40)),
    ):
        stack = _CountingStack(a.reshape(-1, 16, 16))
        d = da.from_array(make(stack), chunks=(16, 16, 16, 16), asarray=True, fancy=False, name=f"t-{id(stack)}")
        job = iter_strided_image(d, det)
        steps = []
        while True:
            try:
                steps.append(next(job))
                assert isinstance(steps[-1], Progress)
            except StopIteration as stop:
                got = stop.value
                break
        step = got.params["preview"]["step"]
        # every block's count once (waiting steps repeat a count while a block's reads run)
        assert step == 4 and counts_reached(steps) == list(range(1, strided_steps(d, det) + 1))
        sy, sx = strided_positions(48, step), strided_positions(40, step)
        np.testing.assert_array_equal(got.data[sy, sx], want[sy, sx])  # exact where sampled
        sampled = {y * 40 + x for y in range(48)[sy] for x in range(40)[sx]}
        assert stack.read == sampled  # only those frames: 1 in 16


class _ChunkedStack(_CountingStack):
    """A frame stack stored in chunks of ``per`` frames (``chunks`` as h5py says it)."""

    def __init__(self, frames, per: int):
        super().__init__(frames)
        self.chunks = (per, *frames.shape[1:])


def test_frame_stacks_report_the_scan_block_their_chunks_make_them_read(tmp_path):
    """#15: a frame stack (ARINA-like) whose HDF5 chunks hold several frames is read a chunk at a
    time: ``storage_chunks`` is the smallest scan block holding every chunk whole (it said one
    frame per read whatever the chunks were). Known answers: 8-frame chunks on a 40-wide scan
    are (1, 8) blocks; 6-frame chunks on a 16-wide scan need 3 rows (48 frames, the first
    multiple of both); 32 frames on an 8-wide scan 4 rows; two files of 100 and 60 frames in
    8-frame chunks (the second's chunks start at frame 100) only 8-row blocks (80 frames)."""
    import h5py

    from napari_4dstem.io._framestack import FrameStack4D

    a = np.arange(160 * 4 * 4, dtype=np.uint16).reshape(160, 4, 4)
    with h5py.File(tmp_path / "f.h5", "w") as f:

        def ds(name, n, per):
            kw = {"chunks": (per, 4, 4), "compression": "gzip"} if per else {}
            return f.create_dataset(name, data=a[:n], **kw)

        cases = [
            ([ds("one", 160, 1)], (4, 40), (1, 1)),  # ARINA's usual chunks: one frame
            ([ds("contiguous", 160, None)], (4, 40), (1, 1)),  # any frame alone
            ([a[:160]], (4, 40), (1, 1)),  # in memory
            ([ds("eight", 160, 8)], (4, 40), (1, 8)),
            ([ds("six", 96, 6)], (6, 16), (3, 16)),
            ([ds("thirty_two", 64, 32)], (8, 8), (4, 8)),
            ([ds("first", 100, 8), ds("second", 60, 8)], (16, 10), (8, 10)),
        ]
        for stacks, scan, unit in cases:
            fs = FrameStack4D(stacks, scan)
            assert fs.storage_chunks == (*unit, 4, 4), (stacks, scan)
            cy, cx = unit
            np.testing.assert_array_equal(fs[:cy, :cx], a[: scan[0] * scan[1]].reshape(*scan, 4, 4)[:cy, :cx])


def test_a_frame_stack_in_chunks_of_several_frames_gets_a_preview_of_whole_chunks(rng):
    """#15: the strided first view of an ARINA-like stack in chunks of 8 frames samples whole
    chunks (at most 1/16 of them), exact where read; as one frame per read it touched a
    quarter of the chunks (every chunk of every sampled row, two frames of each), each
    decompressed whole for its sampled frames."""
    import dask.array as da

    from napari_4dstem.analysis.virtual.preview import strided_image, strided_read_bytes, strided_steps
    from napari_4dstem.io._framestack import FrameStack4D

    a, v, base = _planted(rng, (48, 40), 16)
    det = DiskDetector((7.5, 7.5), 4.0)
    want = v * float((base * det.render((16, 16))).sum())
    stack = _ChunkedStack(a.reshape(-1, 16, 16), 8)
    fs = FrameStack4D([stack], (48, 40))
    d = da.from_array(fs, chunks=(16, 16, 16, 16), asarray=True, fancy=False, name="arina-chunks-of-8")
    assert DataCube(d).storage_chunks == (1, 8, 16, 16)
    got = strided_image(d, det)
    touched = {f // 8 for f in stack.read}
    n_chunks = 48 * 40 // 8
    assert got.params["preview"]["chunks"] == (1, 8) and got.params["preview"]["read"] == strided_steps(d, det)
    assert len(touched) * 16 <= n_chunks, (len(touched), n_chunks)
    assert stack.read == {f for c in touched for f in range(8 * c, 8 * c + 8)}  # whole chunks, nothing else
    assert strided_read_bytes(d) == len(touched) * 8 * a[0, 0].nbytes
    for c in touched:  # exact in every chunk read
        y, x = divmod(8 * c, 40)
        np.testing.assert_array_equal(got.data[y, x : x + 8], want[y, x : x + 8])


def test_the_strided_view_takes_numpy_keys_negative_ones_included(rng):
    """#15: ``_StridedView`` (the sampled patterns of a per-frame reader) indexed as numpy indexes
    the strided slice: negative integers and slice bounds count from the end, negative steps
    reverse (the source still read with ascending slices), an integer outside the axis raises
    IndexError. It took ``-1`` as an empty slice and a reversed slice as an empty one."""
    from napari_4dstem.analysis.virtual.preview import _StridedView
    from napari_4dstem.io._framestack import FrameStack4D

    a = rng.integers(0, 1000, (13, 11, 3, 4)).astype(np.uint16)
    sy, sx = slice(1, 13, 3), slice(2, None, 2)
    want = a[sy, sx]  # 4 x 5 positions
    stack = _CountingStack(a.reshape(-1, 3, 4))
    for src in (a, FrameStack4D([stack], (13, 11))):
        view = _StridedView(src, sy, sx)
        assert view.shape == want.shape
        for key in (
            -1,
            (-1, -1),
            (0, -5),
            (-4, 2),
            np.int64(-2),
            (slice(-3, None), slice(None, -2)),
            (slice(None, None, -1), slice(None)),
            (slice(None), slice(None, None, -2)),
            (slice(-1, -5, -2), slice(3, 0, -1)),
            (slice(2, 2), slice(None)),  # empty
            (slice(5, 1), 0),  # empty: a start past the stop
            (slice(None), slice(None), slice(1, 3), slice(None, None, 2)),  # detector axes as given
        ):
            np.testing.assert_array_equal(view[key], want[key], err_msg=repr(key))
        for bad in (4, -5, (0, 5), (0, -6)):
            with pytest.raises(IndexError):
                view[bad]


def test_chunked_files_get_a_preview_of_whole_storage_chunks_exact_where_read(rng, tmp_path):
    """HDF5 and zarr with storage chunks of several scan positions: whole chunks at a chunk-aligned
    stride (a bounded fraction of the file), exact in every chunk read, each other position the
    mean of its block's chunk."""
    import h5py
    import zarr

    from napari_4dstem.analysis.virtual.images import virtual_image
    from napari_4dstem.analysis.virtual.preview import strided_image, strided_steps

    a, v, base = _planted(rng, (96, 80), 64)  # 64 x 64 uint16 patterns: 8 KiB
    det = DiskDetector((31.5, 31.5), 9.0)
    want = virtual_image(a, det).data
    np.testing.assert_allclose(want, v * float((base * det.render((64, 64))).sum()))
    f = h5py.File(tmp_path / "c.h5", "w")
    z = zarr.open(str(tmp_path / "c.zarr"), mode="w", shape=a.shape, chunks=(4, 4, 64, 64), dtype=a.dtype)
    z[:] = a
    try:
        for data, (cy, cx) in (
            (DataCube(f.create_dataset("a", data=a, chunks=(8, 8, 64, 64))).to_dask(), (8, 8)),  # a layer's view
            (f.create_dataset("b", data=a, chunks=(1, 80, 64, 64)), (1, 80)),  # whole scan rows
            (z, (4, 4)),
        ):
            got = strided_image(data, det)
            pv = got.params["preview"]
            assert pv["chunks"] == (cy, cx) and got.name == "virtual_disk_chunks"
            assert pv["read"] * 16 <= pv["of"] and pv["read"] == strided_steps(data, det)  # <= 1/16 of the chunks
            m = pv["chunk_step"]
            gy, gx = -(-96 // cy), -(-80 // cx)
            rows = range(min(m // 2, (gy - 1) % m), gy, m)
            read = [(i, j) for i in rows for j in range(min(m // 2, (gx - 1) % m), gx, m)]
            assert len(read) == pv["read"]
            exact = np.zeros((96, 80), bool)
            for i, j in read:
                sl = np.s_[i * cy : (i + 1) * cy, j * cx : (j + 1) * cx]
                np.testing.assert_array_equal(got.data[sl], want[sl])  # exact in each chunk read
                exact[sl] = True
                block = np.s_[(i // m) * m * cy : (i // m + 1) * m * cy, (j // m) * m * cx : (j // m + 1) * m * cx]
                rest = ~exact[block]
                np.testing.assert_allclose(got.data[block][rest], want[sl].mean())  # its block: the chunk's mean
            assert exact.mean() <= 1 / 16
    finally:
        f.close()


@pytest.mark.parametrize("chunks", [(64, 64, 16, 16), (32, 32, 16, 16), (8, 8, 16, 16), None])
def test_the_planned_read_of_a_strided_preview_counts_whole_chunks(tmp_path, chunks):
    """``strided_read_bytes``: a dataset of one chunk (or 2 x 2) plans the whole file (its one
    sampled chunk is all of it: over any preview budget), 8 x 8 chunks of an 8 x 8 grid plan
    4 of 64 chunks (1/16), contiguous data 1/16 of its patterns."""
    import h5py

    from napari_4dstem.analysis.virtual.preview import strided_read_bytes

    a = np.arange(64 * 64 * 16 * 16, dtype=np.uint16).reshape(64, 64, 16, 16)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        ds = f.create_dataset("a", data=a, chunks=chunks) if chunks else f.create_dataset("a", data=a)
        got = strided_read_bytes(DataCube(ds))
    if chunks is None:  # contiguous: every 4th position on both axes, whole patterns
        assert got == 16 * 16 * a[0, 0].nbytes == a.nbytes // 16
    elif chunks[0] == 8:
        assert got == 4 * (8 * 8 * a[0, 0].nbytes) == a.nbytes // 16
    else:  # 1 of 1 chunks, or 1 of 4 (the 2 x 2 grid's fallback: one chunk, 1/4 of the file)
        assert got == (a.nbytes if chunks[0] == 64 else a.nbytes // 4)


def test_a_strided_preview_of_a_cold_memory_mapped_file_reads_only_the_sampled_pages(tmp_path):
    """#15: the strided first view of a memory-mapped file outside the page cache reads a few % of
    it. Its page faults went through the file's shared map, whose read-around (8 MiB a fault on
    this machine's disk) read the whole file for every 4th pattern; the sampled view now lies on a
    map of its own advised MADV_RANDOM (``engine.chunks.random_access_view``), same values."""
    import mmap
    import os

    from napari_4dstem.analysis.virtual.preview import strided_image
    from napari_4dstem.engine.chunks import mapped_file, random_access_view

    if not (hasattr(os, "posix_fadvise") and hasattr(mmap, "MADV_RANDOM") and os.path.exists("/proc/self/io")):
        pytest.skip("needs Linux: posix_fadvise, MADV_RANDOM and /proc/self/io")
    path = tmp_path / "cold.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(128, 128, 32, 64))  # 32 MiB
    rng = np.random.default_rng(7)
    vals = rng.integers(0, 1000, (128, 128, 32, 64), dtype=np.uint16)
    mm[:] = vals
    mm.flush()
    del mm
    det = DiskDetector((16.0, 32.0), 5.0)
    want = strided_image(DataCube(vals), det, step=4).data
    # the view: same values and strides over another map of the same file
    data = np.load(path, mmap_mode="r")
    view = random_access_view(data[1::4, 2::4, 3:20])
    np.testing.assert_array_equal(view, vals[1::4, 2::4, 3:20])
    assert mapped_file(view) is not None and mapped_file(view) is not mapped_file(data)
    in_ram = vals[::4]
    assert random_access_view(in_ram) is in_ram  # data in RAM: unchanged

    def read_bytes():
        with open("/proc/self/io") as f:
            return int(next(line for line in f if line.startswith("read_bytes")).split()[1])

    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # out of the page cache
    finally:
        os.close(fd)
    data = np.load(path, mmap_mode="r")
    before = read_bytes()
    got = strided_image(DataCube(data), det, step=4).data
    read = read_bytes() - before
    np.testing.assert_array_equal(got, want)
    # 1/16 of the patterns, 11 of 32 detector rows (4 KiB pages: 1 page of each 4 KiB pattern
    # row block): about 1/16 of the file plus page rounding, far from the whole 32 MiB
    assert read < path.stat().st_size / 4, read
