"""Previews for interactive virtual imaging: binned on the detector, or strided over the scan.

While a detector is dragged, the image is first computed on a copy of the data binned
``factor x factor`` on the detector (``factor**2`` times fewer bytes), then exactly. The preview
detector is the block mean of the full-resolution mask, so by linearity the preview equals the
exact image wherever the mask is constant within each block, and differs only along its edges.

On a large lazy file nothing is binned yet when it opens: the first view is the exact detector
image at every ``step``-th scan position in y and x (:func:`iter_strided_image`), each value
spread over its ``step x step`` block of the scan, read in ``step**2`` times fewer patterns
(and, as every virtual image, only the detector rows the detector touches). That pays where
a position is read alone (memory maps, per-frame storage: :func:`strided_pays`); an HDF5 or
zarr file whose storage chunks hold several positions is sampled in whole storage chunks
instead, one chunk in ``m x m`` of the chunk grid, exact in the chunks read.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from ...data.calibration import Calibration
from ...data.datacube import DataCube
from ...data.results import RealSpaceMap
from ...engine import chunks as _chunks
from ...engine.blocks import read_rows
from ...engine.chunks import dask_source
from ...engine.jobs import Job, Progress, eager, job_doc
from .detectors import Detector, MaskDetector
from .images import as_datacube, iter_virtual_image

__all__ = [
    "binned_detector",
    "iter_preview_cube",
    "iter_strided_image",
    "scan_stride",
    "strided_image",
    "strided_pays",
    "strided_positions",
    "strided_steps",
]


def binned_detector(detector: Detector, detector_shape: tuple[int, int], factor: int) -> MaskDetector:
    """The weighted detector on a ``factor``-binned detector (block means of the full mask).

    Parameters
    ----------
    detector : Detector
        The full-resolution detector.
    detector_shape : (int, int)
        ``(k_y, k_x)`` of the full-resolution patterns.
    factor : int
        Binning factor on both detector axes.

    Returns
    -------
    MaskDetector
        Weights ``(k_y // factor, k_x // factor)``, named ``<kind>_binned<factor>``. Rows and
        columns beyond a multiple of ``factor`` are dropped, as :meth:`DataCube.bin` does; a mask
        lying only in that trimmed edge becomes its nearest block.

    Notes
    -----
    By linearity the virtual image of the binned data through these weights equals, up to the
    constant ``factor**2``, the exact image wherever the mask is constant within each block; it
    differs only along the mask's edges.
    """
    f = int(factor)
    m = detector.render(detector_shape).astype(np.float64)
    my, mx = m.shape[0] // f, m.shape[1] // f
    w = m[: my * f, : mx * f].reshape(my, f, mx, f).mean(axis=(1, 3))
    if not np.any(w):  # the mask lies in the trimmed edge: use the nearest block
        ys, xs = np.nonzero(m)
        w[min(int(ys.mean()) // f, my - 1), min(int(xs.mean()) // f, mx - 1)] = 1.0 / (f * f)
    return MaskDetector(w, name=f"{detector.kind}_binned{f}")


def iter_preview_cube(dc: DataCube, *, factor: int = 4) -> Job[DataCube]:
    """Job: an in-memory copy of ``dc`` binned ``factor x factor`` on the detector (counts summed).

    Parameters
    ----------
    dc : DataCube
        The data (lazy or in memory).
    factor : int
        Binning factor on both detector axes (default 4).

    Yields
    ------
    Progress
        One per block of scan rows.

    Returns
    -------
    DataCube
        The generator's return value: the binned copy in memory, named ``<name>_preview<factor>``.

    Notes
    -----
    Made row block by row block (the binned dask array computed one scan-row chunk at a time),
    so no float copy of the whole dataset ever exists.
    """
    binned = dc.bin(k=factor)
    out = np.empty(binned.shape, binned.dtype)
    d = binned.to_dask()
    step = max(1, d.chunks[0][0])
    total = -(-binned.shape[0] // step)
    for i, y0 in enumerate(range(0, binned.shape[0], step)):
        out[y0 : y0 + step] = d[y0 : y0 + step].compute(scheduler="threads")
        yield Progress(i + 1, total, "binned preview")
    return DataCube(out, binned.calibration, name=f"{dc.name}_preview{factor}")


def scan_stride(
    scan_shape: tuple[int, int], pattern_bytes: int, *, fraction: float = 1 / 16, max_bytes: int = 2**25
) -> int:
    """The scan stride of a strided preview: the smallest ``step`` whose sampled patterns fit the budget.

    Parameters
    ----------
    scan_shape : (int, int)
        ``(scan_y, scan_x)``.
    pattern_bytes : int
        Bytes read per pattern (the detector rows a detector touches, or the whole pattern).
    fraction : float
        At most this fraction of the scan's patterns is read (default 1/16: ``step >= 4``).
    max_bytes : int
        And at most this many bytes (default 32 MiB), whatever the scan's size.

    Returns
    -------
    int
        The smallest ``step >= 1`` for which ``ceil(scan_y / step) * ceil(scan_x / step)``
        patterns of ``pattern_bytes`` are at most ``fraction`` of the scan and at most
        ``max_bytes`` (1 when the whole scan is within both: every position is read). Where no
        step meets the budget (even one pattern is over it: a small scan, or a pattern over
        ``max_bytes``), ``max(scan_y, scan_x)``: one pattern is read, its value spread over
        the whole scan.

    Raises
    ------
    ValueError
        When ``fraction`` is not in (0, 1].
    """
    ny, nx = (int(v) for v in scan_shape)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    budget = min(fraction * ny * nx, max_bytes / max(int(pattern_bytes), 1))
    step = 1
    while math.ceil(ny / step) * math.ceil(nx / step) > budget and (step < ny or step < nx):
        step += 1
    return step


def strided_pays(chunks: tuple[int, ...] | None) -> bool:
    """Whether a strided preview reads a few % of data stored in ``chunks``.

    Parameters
    ----------
    chunks : tuple of int or None
        The storage chunk shape (:attr:`DataCube.storage_chunks`: h5py's or zarr's chunks, also
        behind a dask view of the file; ``(1, 1, k_y, k_x)`` for per-frame readers), None for
        data read at any position alone (numpy, memory maps).

    Returns
    -------
    bool
        True for contiguous data and for chunks of one scan position in ``scan_y`` and
        ``scan_x``; False when a chunk holds several positions along either: HDF5 and zarr
        read whole chunks, so a preview at every ``step``-th position (``step`` of 4 or more,
        one sample per ``step x step`` block) would touch nearly every chunk of an ``(8, 8, k, k)``
        chunking (our EMD writer's), i.e. read about the whole file beside the exact image
        (:func:`iter_strided_image` then samples whole storage chunks).
    """
    return chunks is None or (int(chunks[0]) == 1 and int(chunks[1]) == 1)


def strided_read_bytes(data: Any) -> int:
    """The bytes the default :func:`iter_strided_image` plans to read from ``data``, whole patterns.

    Parameters
    ----------
    data : DataCube or 4D array-like
        The data.

    Returns
    -------
    int
        For storage chunks of several scan positions (:func:`strided_pays` False): the chunks
        read times a chunk's bytes (whole chunks are read, so a single-chunk dataset plans its
        whole size); otherwise the sampled patterns times a whole pattern's bytes (an upper bound
        on the detector rows read). A caller that wants a cheap preview compares it with its
        budget: :func:`scan_stride` falls back to one chunk (or one pattern) when nothing fits.
    """
    cube, _ = as_datacube(data, None)
    ny, nx = cube.scan_shape
    pattern = math.prod(cube.detector_shape) * cube.dtype.itemsize
    chunks = cube.storage_chunks
    if not strided_pays(chunks):
        cy, cx, _, rows, cols = _chunk_plan(cube, chunks)
        return len(rows) * len(cols) * cy * cx * pattern
    step = scan_stride((ny, nx), pattern)
    return -(-ny // step) * -(-nx // step) * pattern


def strided_positions(n: int, step: int) -> slice:
    """The sampled positions of one scan axis: one per block ``[i * step, (i + 1) * step)``.

    Parameters
    ----------
    n : int
        Length of the axis.
    step : int
        Block size.

    Returns
    -------
    slice
        ``slice(offset, n, step)`` with ``offset = min(step // 2, (n - 1) % step)``: the middle of
        each block where the last (possibly shorter) block still holds its sample, so the
        ``ceil(n / step)`` samples are one per block.
    """
    step = max(int(step), 1)
    return slice(min(step // 2, (int(n) - 1) % step), int(n), step)


@job_doc
def iter_strided_image(
    data: Any,
    detector: Detector,
    *,
    step: int | None = None,
    calibration: Calibration | None = None,
) -> Job[RealSpaceMap]:
    """Job: a preview of the virtual image from every ``step``-th scan position, at full scan size.

    Parameters
    ----------
    %(data)s
    detector : Detector
        The virtual detector.
    step : int, optional
        Scan stride on both axes; by default :func:`scan_stride` for the detector rows the
        detector touches (at most 1/16 of the patterns and 32 MiB), or, for storage chunks of
        several scan positions (:func:`strided_pays` False), whole storage chunks (below).
    calibration : Calibration, optional
        Defaults to the DataCube's.

    Yields
    ------
    %(yields)s

    Returns
    -------
    RealSpaceMap ``(scan_y, scan_x)``
        The generator's return value: float64, units ``counts``, named ``virtual_<kind>_strided``.
        At each sampled position (:func:`strided_positions` on both axes) the exact value of
        :func:`~napari_4dstem.analysis.virtual.images.iter_virtual_image`; every other position
        holds the value of the sample of its ``step x step`` block. ``params``: the detector and
        ``preview = {"step": step, "offset": (oy, ox)}``. Sampled in storage chunks (``step``
        None, chunks of ``cy x cx`` positions): one chunk in each ``m x m`` block of the chunk grid
        (:func:`strided_positions` on the grid, ``m`` from :func:`scan_stride` for whole chunks of
        whole patterns: at most 1/16 of the chunks and 32 MiB) is read whole, exact at each of its
        positions; every other position holds the mean of its block's chunk; named
        ``virtual_<kind>_chunks``, ``preview = {"chunks": (cy, cx), "chunk_step": m, "read": n,
        "of": n_chunks}``.

    Raises
    ------
    ValueError
        When ``step < 1``; otherwise as
        :func:`~napari_4dstem.analysis.virtual.images.iter_virtual_image` on the sampled patterns.

    Notes
    -----
    The sampled patterns are a strided view of the data (numpy and memory maps: no copy, only
    the sampled patterns' pages are read; dask: a lazy slice). HDF5 and zarr data go through a
    dask view, which reads whole storage chunks: with chunks of many patterns the preview reads
    more than it keeps (:func:`strided_pays` says when it reads a few %). With
    ``NAPARI_4DSTEM_SAFE_READS`` a memory map is copied out with ``pread`` block by block, each
    block's whole byte span.
    """
    cube, cal = as_datacube(data, calibration)
    ny, nx = cube.scan_shape
    chunks = cube.storage_chunks
    if step is None and not strided_pays(chunks):
        return (yield from _iter_chunk_sampled(cube, detector, cal, chunks))
    if step is None:
        r0, r1 = detector.row_bounds(cube.detector_shape)
        step = scan_stride((ny, nx), (r1 - r0) * cube.detector_shape[1] * cube.dtype.itemsize)
    step = int(step)
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    sy, sx = strided_positions(ny, step), strided_positions(nx, step)
    sub = _sampled(cube, sy, sx)
    small = yield from iter_virtual_image(
        sub, detector, calibration=Calibration(), scan_chunk=_sample_blocks(sub.shape, detector, cube.dtype.itemsize)
    )
    by, bx = np.arange(ny) // step, np.arange(nx) // step
    out = np.asarray(small.data)[by[:, None], bx[None, :]]
    params = dict(small.params)
    params["preview"] = {"step": step, "offset": (sy.start, sx.start)}
    return RealSpaceMap(out, name=f"virtual_{detector.kind}_strided", units="counts", calibration=cal, params=params)


class _StridedView:
    """``src[sy, sx]`` (strided scan slices) as a lazy array.

    A block ``[by, bx, ...]`` of it is read as ``src[sy o by, sx o bx, ...]``, one call on the
    source, so a per-frame reader (or an HDF5/zarr dataset) reads only the sampled frames. (A
    dask slice of the readers' dask arrays read whole dask chunks: this dask computes the getter
    before the strided slice, ``tests/analysis/test_preview.py``.)
    """

    storage_chunks = None

    def __init__(self, src, sy: slice, sx: slice):
        self._src = src
        self._ys = range(*sy.indices(int(src.shape[0])))
        self._xs = range(*sx.indices(int(src.shape[1])))
        self.shape = (len(self._ys), len(self._xs), *(int(v) for v in src.shape[2:]))
        self.dtype = np.dtype(src.dtype)
        self.ndim = 4

    @staticmethod
    def _compose(r: range, k) -> tuple[slice, bool]:
        """``(source slice, reversed)`` of the positions ``r[k]``.

        The positions as an ascending slice of the source (h5py and the readers take no negative
        steps) and whether to reverse what it reads. Negative integers and slice bounds count
        from the end, as numpy's; an integer outside the axis raises IndexError.
        """
        if isinstance(k, slice):
            sub = r[k]
        else:
            i = operator.index(k)
            if not -len(r) <= i < len(r):
                raise IndexError(f"index {i} is out of bounds for an axis of size {len(r)}")
            sub = r[i % len(r) : i % len(r) + 1]
        if not len(sub):
            return slice(0, 0), False
        flip = sub.step < 0
        if flip:
            sub = sub[::-1]
        # the last position + 1, not the range's stop (range(2, 50, 4)[12:] stops past the axis)
        return slice(sub[0], sub[-1] + 1, sub.step), flip

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (4 - len(key))
        (sy, fy), (sx, fx) = self._compose(self._ys, key[0]), self._compose(self._xs, key[1])
        out = self._src[(sy, sx, *key[2:])]
        out = np.asarray(out.compute() if hasattr(out, "compute") else out)
        if fy or fx:
            out = out[:: -1 if fy else 1, :: -1 if fx else 1]
        return out[tuple(0 if isinstance(k, int | np.integer) else slice(None) for k in key[:2])]


def _sampled(cube: DataCube, sy: slice, sx: slice):
    """The sampled patterns ``[sy, sx]``: a numpy view, else a lazy strided view of the source.

    A dask array's own source where it is a plain view of one.
    """
    arr = cube.data
    if isinstance(arr, np.ndarray):
        # a mapped file: a map of its own with random-access advice, so a cold file gives only the
        # sampled pages, not 8 MiB of read-around each (the whole file, #15)
        return _chunks.random_access_view(arr[sy, sx])
    if hasattr(arr, "__dask_graph__"):
        src = dask_source(arr)
        return _StridedView(src, sy, sx) if src is not None else arr[sy, sx]
    return _StridedView(arr, sy, sx)


def _chunk_plan(cube: DataCube, chunks: tuple[int, ...]):
    """``(cy, cx, m, rows, cols)``: chunk shape, chunk stride, the grid's sampled rows and columns."""
    ny, nx = cube.scan_shape
    cy, cx = min(int(chunks[0]), ny), min(int(chunks[1]), nx)
    gy, gx = -(-ny // cy), -(-nx // cx)
    chunk_bytes = cy * cx * math.prod(cube.detector_shape) * cube.dtype.itemsize  # read whole
    m = scan_stride((gy, gx), chunk_bytes)
    return cy, cx, m, range(*strided_positions(gy, m).indices(gy)), range(*strided_positions(gx, m).indices(gx))


def _iter_chunk_sampled(cube: DataCube, detector: Detector, cal: Calibration, chunks: tuple[int, ...]):
    """The strided preview of data stored in chunks of several scan positions: whole chunks."""
    ny, nx = cube.scan_shape
    cy, cx, m, rows, cols = _chunk_plan(cube, chunks)
    total = len(rows) * len(cols)
    r0, r1 = detector.row_bounds(cube.detector_shape)
    src = cube.data
    if hasattr(src, "__dask_graph__"):
        src = dask_source(src) or src  # a layer's dask view of a file: read the file's dataset
    means = np.empty((len(rows), len(cols)))
    exact: list[tuple[slice, slice, np.ndarray]] = []
    params: dict = {}
    n = 0
    for a, ci in enumerate(rows):
        for b, cj in enumerate(cols):
            sy, sx = slice(ci * cy, min((ci + 1) * cy, ny)), slice(cj * cx, min((cj + 1) * cx, nx))
            # one storage chunk: only the detector's rows are copied (an uncompressed HDF5 chunk's
            # rows straight from the file's map, engine.blocks.read_rows), the rest left zero
            block = np.zeros((sy.stop - sy.start, sx.stop - sx.start, *cube.detector_shape), cube.dtype)
            block[:, :, r0:r1] = read_rows(src, sy, sx, slice(r0, r1))
            job = iter_virtual_image(block, detector, calibration=Calibration())
            while True:  # its own steps are not handed on: one step per chunk
                try:
                    next(job)
                except StopIteration as stop:
                    img = stop.value
                    break
            vals = np.asarray(img.data, dtype=np.float64)
            means[a, b] = vals.mean()
            exact.append((sy, sx, vals))
            params = dict(img.params)
            n += 1
            yield Progress(n, total, "preview: storage chunks")
    # each position's block of m x m chunks, and that block's sampled chunk
    by = np.minimum((np.arange(ny) // cy) // m, len(rows) - 1)
    bx = np.minimum((np.arange(nx) // cx) // m, len(cols) - 1)
    out = means[by[:, None], bx[None, :]]
    for sy, sx, vals in exact:
        out[sy, sx] = vals
    params["preview"] = {"chunks": (cy, cx), "chunk_step": m, "read": total, "of": -(-ny // cy) * -(-nx // cx)}
    return RealSpaceMap(out, name=f"virtual_{detector.kind}_chunks", units="counts", calibration=cal, params=params)


def strided_steps(data: Any, detector: Detector) -> int:
    """How many Progress steps :func:`iter_strided_image` (default ``step``) yields on ``data``.

    Parameters
    ----------
    data : DataCube or 4D array-like
        The data.
    detector : Detector
        The virtual detector.

    Returns
    -------
    int
        The number of steps (a progress bar's total: the preview's blocks, or its storage chunks).
    """
    cube, _ = as_datacube(data, None)
    chunks = cube.storage_chunks
    if not strided_pays(chunks):
        _, _, _, rows, cols = _chunk_plan(cube, chunks)
        return len(rows) * len(cols)
    ny, nx = cube.scan_shape
    r0, r1 = detector.row_bounds(cube.detector_shape)
    step = scan_stride((ny, nx), (r1 - r0) * cube.detector_shape[1] * cube.dtype.itemsize)
    shape = (-(-ny // step), -(-nx // step), *cube.detector_shape)
    by, bx = _sample_blocks(shape, detector, cube.dtype.itemsize)
    return -(-shape[0] // by) * -(-shape[1] // bx)


def _sample_blocks(shape: tuple[int, ...], detector: Detector, itemsize: int) -> tuple[int, int]:
    """The sampled patterns' blocks: about the engine's block size in bytes *read* (detector rows).

    Fixed here (not by the driver) so that :func:`strided_steps` knows their number.
    """
    r0, r1 = detector.row_bounds(tuple(shape[2:4]))
    n = max(1, _chunks._TARGET_BLOCK_BYTES // max(1, (r1 - r0) * int(shape[3]) * itemsize))
    bx = min(int(shape[1]), n)
    return min(int(shape[0]), max(1, n // bx)), bx


strided_image = eager(iter_strided_image, "A preview of the virtual image from every step-th scan position.")
