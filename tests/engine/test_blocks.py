"""Chunk views: a reader hands the engine views of its storage chunks through a registered
finder (the engine knows no file format), and the kernels run on them as on the array."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem.engine import blocks
from napari_4dstem.engine.blocks import (
    find_chunk_views,
    read_rows,
    register_chunk_views,
    run_block,
    slice_scan_kwargs,
)
from napari_4dstem.engine.driver import map_scan
from napari_4dstem.engine.jobs import run_job

CHUNKS = (2, 3)


class _Stored:
    """A lazy 4D array (not numpy) whose reader keeps it as chunks of whole patterns; any
    read through its own slicing is counted."""

    def __init__(self, a):
        self.a = a
        self.shape, self.dtype, self.ndim = a.shape, a.dtype, 4
        self.chunks = (*CHUNKS, *a.shape[2:])
        self.sliced = 0
        self.views = _Views(a)

    def __getitem__(self, idx):
        self.sliced += 1
        return self.a[idx]


class _Views:
    """What a reader gives the engine (the :class:`ChunkViews` protocol)."""

    def __init__(self, a):
        self.a = a
        self.viewed = self.read_calls = 0
        self.released: list = []

    def chunk_views(self, sy, sx, *, contiguous=True):
        y0, y1, _ = sy.indices(self.a.shape[0])
        x0, x1, _ = sx.indices(self.a.shape[1])
        cy, cx = CHUNKS
        for gy in range(y0 // cy * cy, y1, cy):
            a0, a1 = max(y0, gy), min(y1, gy + cy)
            for gx in range(x0 // cx * cx, x1, cx):
                b0, b1 = max(x0, gx), min(x1, gx + cx)
                self.viewed += 1
                pats = self.a[a0:a1, b0:b1]
                if contiguous:
                    pats = np.ascontiguousarray(pats)
                yield slice(a0 - y0, a1 - y0), slice(b0 - x0, b1 - x0), pats, (gy, gx)

    def release(self, tokens):
        self.released.extend(tokens)

    def read(self, sy, sx, rows):
        self.read_calls += 1
        return self.a[sy, sx, rows].copy()


def _finder(arr):
    return arr.views if isinstance(arr, _Stored) else None


def _moments(block, *, row0, parallel, weight):
    # total and first row moment of each pattern (absolute rows), times a per-pattern weight
    b = block.astype(np.float64)
    rows = np.arange(row0, row0 + b.shape[2], dtype=np.float64)
    tot = b.sum(axis=(2, 3))
    return np.stack([tot * weight, (b.sum(axis=3) * rows).sum(axis=2)], axis=-1)


@pytest.fixture
def finder(monkeypatch):
    monkeypatch.setattr(blocks, "_FINDERS", list(blocks._FINDERS))
    assert register_chunk_views(_finder) is _finder
    register_chunk_views(_finder)  # once only
    assert blocks.chunk_view_finders().count(_finder) == 1
    return _finder


def _reference(a, weight):
    b = a.astype(np.float64)
    rows = np.arange(a.shape[2], dtype=np.float64)
    return np.stack([b.sum(axis=(2, 3)) * weight, (b.sum(axis=3) * rows).sum(axis=2)], axis=-1)


def test_threads_engine_runs_on_the_readers_chunk_views(rng, finder):
    a = rng.integers(0, 1000, (7, 8, 6, 5)).astype(np.uint16)  # chunks cut at both edges
    weight = rng.random((7, 8))
    stored = _Stored(a)
    got = run_job(
        map_scan(
            stored,
            _moments,
            out_tail=(2,),
            scan_kwargs={"weight": weight},
            k_rows=(1, 4),
            k_rows_exact=False,
            scan_chunk=(4, 6),
        )
    )
    np.testing.assert_allclose(got, _reference(a, weight), rtol=1e-12)
    assert stored.sliced == 0 and stored.views.read_calls == 0  # every pattern from a view
    # blocks (4, 6) over chunks (2, 3) of a (7, 8) scan: each of the 4 x 3 chunks viewed once,
    # then released
    assert stored.views.viewed == 12
    assert sorted(stored.views.released) == sorted((gy, gx) for gy in range(0, 7, 2) for gx in range(0, 8, 3))


def test_block_reads_go_through_the_readers_views(rng, finder):
    a = rng.integers(0, 1000, (5, 4, 6, 5)).astype(np.uint16)
    stored = _Stored(a)
    np.testing.assert_array_equal(read_rows(stored, slice(1, 4), slice(0, 3), slice(2, 5)), a[1:4, 0:3, 2:5])
    assert stored.views.read_calls == 1 and stored.sliced == 0
    # the copy path of the engine (one numba-parallel call per block) reads the same way
    weight = np.ones((5, 4))
    got = run_job(
        map_scan(stored, _moments, out_tail=(2,), scan_kwargs={"weight": weight}, scan_chunk=(2, 4), backend="prange")
    )
    np.testing.assert_allclose(got, _reference(a, weight), rtol=1e-12)
    assert stored.sliced == 0 and stored.views.read_calls == 1 + 3


def test_without_a_finder_the_array_is_sliced(rng, monkeypatch):
    monkeypatch.setattr(blocks, "_FINDERS", [])
    a = rng.integers(0, 1000, (5, 4, 6, 5)).astype(np.uint16)
    stored = _Stored(a)
    assert find_chunk_views(stored) is None
    weight = np.ones((5, 4))
    got = run_job(
        map_scan(stored, _moments, out_tail=(2,), scan_kwargs={"weight": weight}, k_rows_exact=False, scan_chunk=(2, 4))
    )
    np.testing.assert_allclose(got, _reference(a, weight), rtol=1e-12)
    assert stored.sliced == 3 and stored.views.viewed == 0


def test_numpy_arrays_never_ask_the_finders(rng, monkeypatch):
    asked = []
    monkeypatch.setattr(blocks, "_FINDERS", [lambda arr: asked.append(arr)])
    a = rng.integers(0, 9, (2, 2, 3, 3)).astype(np.uint8)
    assert find_chunk_views(a) is None and asked == []
    skw = slice_scan_kwargs({"w": np.arange(4.0).reshape(2, 2)}, slice(1, 2), slice(0, 2))
    assert skw["w"].tolist() == [[2.0, 3.0]]
    out = run_block(a[1:2], _moments, 0, False, {}, {"weight": skw["w"]})
    np.testing.assert_allclose(out, _reference(a[1:2], skw["w"]))
