"""The engine driver: local and dask.distributed backends against a numpy reference."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from napari_4dstem import DataCube
from napari_4dstem.engine.driver import PerPattern, block_slices, is_distributed, map_scan
from napari_4dstem.engine.jobs import run_job
from napari_4dstem.engine.kernels import as_kernel_input, com_block


def _row_max_minus(pattern, *, offset, scale):
    # a per-pattern function with a per-pattern argument (offset) and a constant (scale)
    return np.array([pattern.max() - offset, pattern.sum() * scale])


def _com_kernel(block, *, row0, parallel):
    out = np.empty((*block.shape[:2], 3))
    com_block(as_kernel_input(block), row0, out, parallel=parallel)
    return out


def _reference_com(a, rows=slice(None)):
    a = a[:, :, rows].astype(np.float64)
    r0 = rows.start or 0
    yy = np.arange(a.shape[2])[:, None] + r0
    xx = np.arange(a.shape[3])[None, :]
    tot = a.sum(axis=(2, 3))
    return np.stack([tot, (a * yy).sum(axis=(2, 3)) / tot, (a * xx).sum(axis=(2, 3)) / tot], axis=-1)


def test_block_slices_cover_scan_once():
    blocks = block_slices((7, 10), (3, 4))
    seen = np.zeros((7, 10), int)
    for sy, sx in blocks:
        seen[sy, sx] += 1
    assert np.all(seen == 1)
    assert len(blocks) == 3 * 3


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.float32, ">u2"])
@pytest.mark.parametrize("chunk", [None, (2, 3), (5, 1)])
def test_map_scan_com_matches_numpy(rng, dtype, chunk):
    a = rng.integers(1, 200, (5, 7, 9, 11)).astype(dtype)
    got = run_job(map_scan(a, _com_kernel, out_tail=(3,), scan_chunk=chunk))
    np.testing.assert_allclose(got, _reference_com(a), rtol=1e-12)


def test_map_scan_reads_only_the_row_window(rng):
    a = rng.integers(1, 200, (4, 3, 12, 5)).astype(np.uint16)
    got = run_job(map_scan(a, _com_kernel, out_tail=(3,), k_rows=(3, 8), scan_chunk=(3, 2)))
    np.testing.assert_allclose(got, _reference_com(a, slice(3, 8)), rtol=1e-12)


@pytest.mark.parametrize("storage", ["dask", "h5py", "zarr", "datacube"])
def test_map_scan_lazy_storage(rng, tmp_path, storage):
    a = rng.integers(0, 50, (6, 5, 8, 7)).astype(np.uint16)
    if storage == "dask":
        import dask.array as da

        data = da.from_array(a, chunks=(2, 3, 8, 7))
    elif storage == "h5py":
        f = h5py.File(tmp_path / "a.h5", "w")
        data = f.create_dataset("a", data=a, chunks=(2, 2, 8, 7))
    elif storage == "zarr":
        import zarr

        data = zarr.open(str(tmp_path / "a.zarr"), mode="w", shape=a.shape, chunks=(3, 2, 8, 7), dtype=a.dtype)
        data[...] = a
    else:
        data = DataCube(a)
    got = run_job(map_scan(data, _com_kernel, out_tail=(3,), k_rows=(1, 7)))
    np.testing.assert_allclose(got, _reference_com(a, slice(1, 7)), rtol=1e-12)
    if storage == "h5py":
        f.close()


def test_per_pattern_kernel_with_scan_kwargs(rng):
    a = rng.integers(0, 255, (5, 4, 6, 6)).astype(np.uint8)
    offset = rng.normal(size=(5, 4))
    kern = PerPattern(_row_max_minus, scan_keys=("offset",))
    got = run_job(
        map_scan(
            a,
            kern,
            out_tail=(2,),
            kwargs={"scale": 0.5},
            scan_kwargs={"offset": offset},
            scan_chunk=(2, 3),
        )
    )
    ref = np.stack([a.max(axis=(2, 3)) - offset, a.sum(axis=(2, 3)) * 0.5], axis=-1)
    np.testing.assert_allclose(got, ref)


def test_map_scan_progress_and_cancel(rng, counts_reached):
    a = rng.integers(0, 9, (6, 6, 4, 4)).astype(np.uint16)
    steps = []
    run_job(map_scan(a, _com_kernel, out_tail=(3,), scan_chunk=(2, 3), message="com"), steps.append)
    assert counts_reached(steps) == list(range(1, 7)) and steps[-1].done == 6
    assert all(p.total == 6 and p.message == "com" for p in steps)

    calls = []

    def counting(block, *, row0, parallel):
        calls.append(block.shape)
        return _com_kernel(block, row0=row0, parallel=parallel)

    job = map_scan(a, counting, out_tail=(3,), scan_chunk=(2, 3), backend="serial")
    next(job)
    next(job)
    job.close()  # cancel between steps: no more blocks are computed
    assert len(calls) == 2


def _total_so_far(out, done):
    from napari_4dstem.engine.jobs import PartialMap

    return PartialMap.of("total", out[:, :, 0], done, units="counts")


@pytest.mark.parametrize("backend", ["serial", None])
def test_map_scan_partial_map_fills_in_block_by_block(rng, monkeypatch, backend, counts_reached):
    """Maps filling in: each block's step carries the map so far, exact where its blocks are
    written and NaN where not yet; the last is the whole map; at most every PARTIAL_EVERY_S; a
    waiting step (threads mode, while a block runs) carries none."""
    from napari_4dstem.engine import driver

    a = rng.integers(0, 9, (6, 6, 4, 4)).astype(np.uint16)
    total = a.sum(axis=(2, 3)).astype(np.float32)
    monkeypatch.setattr(driver, "PARTIAL_EVERY_S", 0.0)  # every step
    steps = []
    out = run_job(
        map_scan(a, _com_kernel, out_tail=(3,), scan_chunk=(2, 3), backend=backend, partial=_total_so_far), steps.append
    )
    blocks = block_slices((6, 6), (2, 3))
    assert counts_reached(steps) == list(range(1, 7))
    assert [p.done for p in steps if p.partial is not None] == list(range(1, 7))  # a map per block
    for p in steps:
        m = p.partial
        if m is None:
            continue
        assert m.name == "total" and m.units == "counts" and m.data.dtype == np.float32
        done = np.zeros((6, 6), bool)
        for sy, sx in blocks[: p.done]:
            done[sy, sx] = True
        np.testing.assert_array_equal(m.data[done], total[done])
        assert np.isnan(m.data[~done]).all()
        assert m.fraction == pytest.approx(p.done / 6)
        assert m.limits == (total[done].min(), total[done].max())
    np.testing.assert_array_equal(steps[-1].partial.data, out[:, :, 0].astype(np.float32))
    # throttled: with a long interval only the first and the last step carry one
    monkeypatch.setattr(driver, "PARTIAL_EVERY_S", 3600.0)
    steps = []
    run_job(map_scan(a, _com_kernel, out_tail=(3,), scan_chunk=(2, 3), partial=_total_so_far), steps.append)
    assert [p.done for p in steps if p.partial is not None] == [1, 6]
    # without ``partial`` no step carries one
    steps = []
    run_job(map_scan(a, _com_kernel, out_tail=(3,), scan_chunk=(2, 3)), steps.append)
    assert all(p.partial is None for p in steps)


def test_map_scan_with_partial_still_cancels_between_blocks(rng):
    a = rng.integers(0, 9, (6, 6, 4, 4)).astype(np.uint16)
    calls = []

    def counting(block, *, row0, parallel):
        calls.append(block.shape)
        return _com_kernel(block, row0=row0, parallel=parallel)

    job = map_scan(a, counting, out_tail=(3,), scan_chunk=(2, 3), backend="serial", partial=_total_so_far)
    assert next(job).partial is not None
    next(job)
    job.close()
    assert len(calls) == 2


def test_threads_mode_cancel_stops_queued_blocks(rng):
    # threads mode queues the next block's pieces before collecting the current block; a
    # cancel must drop what is queued, leave what runs to end in its thread, and leave the pool
    # usable
    import threading

    from napari_4dstem.engine.driver import _pool, n_threads

    a = rng.integers(0, 9, (12, 8, 4, 4)).astype(np.uint16)
    lock = threading.Lock()
    calls = []

    def counting(block, *, row0, parallel):
        with lock:
            calls.append(block.shape)
        return _com_kernel(block, row0=row0, parallel=parallel)

    job = map_scan(a, counting, out_tail=(3,), scan_chunk=(2, 8))  # 6 blocks of 16 patterns
    first = next(job)
    while first.done < 1:  # a waiting step (a first call's compile)
        first = next(job)
    assert first.done == 1
    job.close()
    n_after_close = len(calls)
    for f in [_pool().submit(lambda: None) for _ in range(n_threads())]:
        f.result(timeout=10)  # the pool is usable, and whatever ran at the close has ended
    # no queued piece started after the close: at most one a pool thread was already taken
    assert len(calls) <= n_after_close + n_threads()
    assert sum(s[0] * s[1] for s in calls) <= 2 * 16  # at most the two queued blocks


def test_threads_mode_waits_for_a_slow_block_in_steps_and_cancels_in_it(rng, counts_reached):
    """A block whose pieces run long (a slow kernel, a first call's compile, a loaded machine) is
    waited for in steps of WAIT_STEP_S with the count of blocks written so far and no map, so a
    Cancel (the job closed at a step) returns at once: the queued pieces never start, those
    running end in their threads. (Orientation's Run on all once waited 0.59 s for a block.)"""
    import threading
    import time

    from napari_4dstem.engine import driver
    from napari_4dstem.engine.jobs import WAIT_STEP_S

    a = rng.integers(0, 9, (8, 8, 4, 4)).astype(np.uint16)
    slow, lock, calls = threading.Event(), threading.Lock(), []

    def kernel(block, *, row0, parallel):
        with lock:
            calls.append(time.perf_counter())
        if slow.is_set():
            time.sleep(0.15)
        return _com_kernel(block, row0=row0, parallel=parallel)

    want = run_job(map_scan(a, _com_kernel, out_tail=(3,), scan_chunk=(4, 8)))
    # the whole job: the same result, a count per block, waiting steps between (no map on them)
    slow.set()
    steps, t0 = [], time.perf_counter()
    job = map_scan(a, kernel, out_tail=(3,), scan_chunk=(4, 8), partial=_total_so_far)  # 2 blocks
    got = run_job(job, steps.append)
    took = time.perf_counter() - t0
    np.testing.assert_array_equal(got, want)
    assert counts_reached(steps) == [1, 2]
    waiting = [p for p in steps if p.partial is None]
    assert len(waiting) >= 2 and all(p.total == 2 for p in steps)  # old code: one step a block
    assert len(steps) >= len(waiting) + 2
    assert [p.done for p in steps if p.partial is not None] == [1, 2]  # no map before a block is written
    assert took >= 2 * driver.PIECES * 0.15 - 0.05  # the pieces did run long: 4 a thread, 2 blocks
    # Cancel at the first waiting step: the close returns without waiting for the block
    calls.clear()
    job = map_scan(a, kernel, out_tail=(3,), scan_chunk=(4, 8))
    p = next(job)
    assert p.done == 0, "a step while the first block runs"
    t0 = time.perf_counter()
    job.close()
    closed = time.perf_counter() - t0
    started = len(calls)
    time.sleep(0.5)
    print(f"close took {1e3 * closed:.1f} ms; pieces started {started} then {len(calls)}")
    assert closed < WAIT_STEP_S  # old code: no step before the block's end, and the close waited for pieces
    assert len(calls) <= started + driver.n_threads() < 2 * driver.PIECES * driver.n_threads()


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    # processes=False: two in-process workers (threads); spawning processes costs seconds on
    # this 2-core machine and would test pickling of the data, not the engine
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.mark.parametrize("lazy", [False, True])
def test_distributed_equals_local(rng, client, lazy):
    a = rng.integers(0, 1000, (9, 7, 10, 12)).astype(np.uint16)
    data = a
    if lazy:
        import dask.array as da

        data = da.from_array(a, chunks=(4, 4, 10, 12))
    local = run_job(map_scan(data, _com_kernel, out_tail=(3,), scan_chunk=(4, 3), k_rows=(2, 9)))
    steps = []
    dist = run_job(
        map_scan(data, _com_kernel, out_tail=(3,), scan_chunk=(4, 3), k_rows=(2, 9), backend=client),
        steps.append,
    )
    np.testing.assert_array_equal(dist, local)
    assert len(steps) == 9 and steps[-1].done == 9
    # the map so far on a cluster (blocks finish in any order): complete at the last step
    steps = []
    run_job(
        map_scan(
            data, _com_kernel, out_tail=(3,), scan_chunk=(4, 3), k_rows=(2, 9), backend=client, partial=_total_so_far
        ),
        steps.append,
    )
    np.testing.assert_array_equal(steps[-1].partial.data, local[:, :, 0].astype(np.float32))


def test_distributed_per_pattern(rng, client):
    a = rng.integers(0, 255, (4, 5, 6, 6)).astype(np.uint8)
    offset = rng.normal(size=(4, 5))
    kern = PerPattern(_row_max_minus, scan_keys=("offset",))
    kw = {
        "out_tail": (2,),
        "kwargs": {"scale": 2.0},
        "scan_kwargs": {"offset": offset},
        "scan_chunk": (3, 2),
    }
    local = run_job(map_scan(a, kern, **kw))
    dist = run_job(map_scan(a, kern, backend=client, **kw))
    np.testing.assert_array_equal(dist, local)


@pytest.mark.parametrize("storage", ["npy", "npy_view", "h5py"])
def test_distributed_workers_open_the_file(rng, client, tmp_path, storage):
    from napari_4dstem.engine.distributed import file_source

    a = rng.integers(0, 1000, (9, 7, 10, 12)).astype(np.uint16)
    if storage == "h5py":
        with h5py.File(tmp_path / "a.h5", "w") as f:
            f.create_dataset("g/a", data=a, chunks=(2, 3, 10, 12))
        f = h5py.File(tmp_path / "a.h5", "r")
        data = f["g/a"]
    else:
        np.save(tmp_path / "a.npy", a)
        data = np.load(tmp_path / "a.npy", mmap_mode="r")
        if storage == "npy_view":  # a view that starts inside the file
            data, a = data[3:], a[3:]
    src = file_source(data)
    assert src is not None and src[1] == str(tmp_path / ("a.h5" if storage == "h5py" else "a.npy"))
    kw = {"out_tail": (3,), "scan_chunk": (4, 3), "k_rows": (2, 9)}
    dist = run_job(map_scan(data, _com_kernel, backend=client, **kw))
    np.testing.assert_allclose(dist, _reference_com(a, slice(2, 9)), rtol=1e-12)
    if storage == "h5py":
        f.close()


def test_file_source_refuses_what_a_worker_cannot_open(rng, tmp_path):
    from napari_4dstem.engine.distributed import file_source

    a = rng.integers(0, 9, (4, 4, 3, 3)).astype(np.uint8)
    np.save(tmp_path / "a.npy", a)
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert file_source(a) is None  # in RAM
    assert file_source(mm[:, ::2]) is None  # not contiguous
    assert file_source(mm)[2] == 128  # the .npy header


@pytest.mark.slow
def test_distributed_worker_processes_read_the_file(rng, tmp_path):
    # real worker processes: only the path travels, each worker opens the file itself
    distributed = pytest.importorskip("distributed")
    from napari_4dstem.analysis.virtual.detectors import DiskDetector
    from napari_4dstem.analysis.virtual.images import virtual_image

    a = rng.integers(0, 1000, (16, 12, 20, 24)).astype(np.uint16)
    np.save(tmp_path / "a.npy", a)
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    det = DiskDetector((9.5, 11.0), 5.0)
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as c,
    ):
        got = virtual_image(mm, det, backend=c, scan_chunk=(4, 12)).data
    ref = a[:, :, det.render(a.shape[2:])].sum(axis=-1, dtype=np.float64)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("mode", ["local", "prange", "serial"])
def test_local_modes_agree(rng, mode):
    # blocks of one scan row and of many rows, so both ways of splitting a block are used
    a = rng.integers(0, 1000, (9, 13, 10, 12)).astype(np.uint16)
    ref = _reference_com(a)
    for chunk in [(1, 13), (9, 13), (4, 5)]:
        got = run_job(map_scan(a, _com_kernel, out_tail=(3,), scan_chunk=chunk, backend=mode))
        np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_unknown_backend(rng):
    a = rng.integers(0, 9, (3, 3, 4, 4)).astype(np.uint16)
    assert is_distributed("tcp://x:1")
    with pytest.raises(ValueError, match="backend"):
        run_job(map_scan(a, _com_kernel, out_tail=(3,), backend=42))


def test_worker_allocator_tuning_only_under_dask_malloc_settings(monkeypatch):
    """The mmap threshold is raised once, only where a malloc tunable froze it (dask workers)."""
    import ctypes

    from napari_4dstem.engine import distributed as dist

    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    for env, expected in [
        ({}, []),
        ({"MALLOC_TRIM_THRESHOLD_": "65536", "MALLOC_MMAP_THRESHOLD_": "4096"}, []),
        ({"MALLOC_TRIM_THRESHOLD_": "65536"}, [(-3, 32 * 2**20)]),
    ]:
        calls.clear()
        for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_"):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setattr(dist, "_ALLOCATOR_TUNED", False)
        dist._tune_allocator()
        dist._tune_allocator()  # once per process
        assert calls == expected
