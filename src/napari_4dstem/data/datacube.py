"""The DataCube: a lazy 4D array ``(scan_y, scan_x, k_y, k_x)`` plus its Calibration."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..engine.chunks import (
    default_scan_chunk,
    iter_scan_blocks,
    mapped_file,
    n_blocks,
    native_chunks,
    read_mapped,
    storage_chunks,
)
from ..engine.jobs import Job, Progress, run_job
from ..errors import DataShapeError, FileFormatError, Napari4DSTEMError
from ._blockread import block_source
from .calibration import AXIS_LABELS, Calibration

__all__ = ["DataCube", "as_4d_array", "scan_factorizations"]


def as_4d_array(data: Any, *, what: str = "data") -> Any:
    """Check that ``data`` is a 4D array-like (numpy, memmap, h5py, zarr, dask) and return it.

    Parameters
    ----------
    data : array-like
        Anything with ``shape``, ``dtype`` and ``__getitem__``.
    what : str
        How errors name it (default ``"data"``).

    Returns
    -------
    array-like
        ``data`` itself (never copied).

    Raises
    ------
    DataShapeError
        When ``data`` is not an array, not 4D, or has an empty axis.
    """
    for attr in ("shape", "dtype", "__getitem__"):
        if not hasattr(data, attr):
            raise DataShapeError(f"{what} is not an array (it has no {attr!r}): {type(data).__name__}")
    shape = tuple(int(s) for s in data.shape)
    if len(shape) != 4:
        raise DataShapeError(f"{what} must be 4D (scan_y, scan_x, k_y, k_x), got {len(shape)}D with shape {shape}")
    if min(shape) < 1:
        raise DataShapeError(f"{what} has an empty axis: shape {shape}")
    return data


def scan_factorizations(n: int) -> list[tuple[int, int]]:
    """Every scan shape ``(ny, nx)`` with ``ny * nx == n``, squarest first.

    Parameters
    ----------
    n : int
        Number of patterns.

    Returns
    -------
    list of (int, int)
        The factor pairs, by ``|ny - nx|`` and then the wider first.
    """
    n = int(n)
    pairs = [(a, n // a) for a in range(1, n + 1) if n % a == 0]
    return sorted(pairs, key=lambda p: (abs(p[0] - p[1]), -p[1]))


def _sum_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype that holds sums of ``dtype`` values without overflow (for binning)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return np.dtype(np.uint32)
    if dtype.kind == "u":
        return np.dtype(np.uint32) if dtype.itemsize <= 2 else np.dtype(np.uint64)
    if dtype.kind == "i":
        return np.dtype(np.int32) if dtype.itemsize <= 2 else np.dtype(np.int64)
    return dtype


def _reduction(op: str, summary: str, dtype: str) -> Callable[..., np.ndarray]:
    """A DataCube method running :meth:`DataCube.iter_reduce_patterns` ``(op)`` to its end."""

    def reduce(self: DataCube, progress: Callable[[Progress], Any] | None = None) -> np.ndarray:
        return run_job(self.iter_reduce_patterns(op), progress)

    reduce.__name__ = f"{op}_pattern"
    reduce.__qualname__ = f"DataCube.{op}_pattern"
    reduce.__doc__ = f"""{summary}

    Parameters
    ----------
    progress : callable, optional
        Called with each :class:`~napari_4dstem.engine.jobs.Progress`.

    Returns
    -------
    ndarray ``(k_y, k_x)``{dtype}
        :meth:`iter_reduce_patterns` ``("{op}")`` run to its end.
    """
    return reduce


class DataCube:
    """A 4D-STEM dataset: diffraction patterns on a 2D scan, kept lazy in its native dtype.

    Parameters
    ----------
    data : array-like of shape (scan_y, scan_x, k_y, k_x)
        numpy array, memmap, h5py Dataset, zarr array or dask array. It is never copied.
    calibration : Calibration, optional
        Physical units; uncalibrated pixels by default.
    name : str
        Name used for napari layers and file nodes.
    metadata : mapping, optional
        Free-form metadata read from the file (detector settings, headers...).
    source : str, optional
        Path of the file the data came from.
    on_close : callable, optional
        Called once by :meth:`close` (a reader's way to release its file).

    Raises
    ------
    DataShapeError
        When ``data`` is not a 4D array, or the calibration's origin map has another scan shape.
    TypeError
        When ``calibration`` is not a Calibration.
    """

    def __init__(
        self,
        data: Any,
        calibration: Calibration | None = None,
        *,
        name: str = "datacube",
        metadata: Mapping[str, Any] | None = None,
        source: str | None = None,
        on_close: Callable[[], None] | None = None,
    ):
        self._data = as_4d_array(data)
        self.calibration = calibration if calibration is not None else Calibration()
        if not isinstance(self.calibration, Calibration):
            raise TypeError(f"calibration must be a Calibration, got {type(calibration).__name__}")
        om = self.calibration.origin_map_px
        if om is not None and om.shape[:2] != self.scan_shape:
            raise DataShapeError(f"origin map shape {om.shape[:2]} does not match the scan shape {self.scan_shape}")
        self.name = str(name)
        self.metadata = dict(metadata or {})
        self.source = source
        self._on_close = on_close

    # -- basic properties ---------------------------------------------------------------------
    @property
    def data(self) -> Any:
        """The underlying lazy array (numpy, memmap, h5py, zarr or dask)."""
        return self._data

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(scan_y, scan_x, k_y, k_x)``."""
        return tuple(int(s) for s in self._data.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        """The stored dtype."""
        return np.dtype(self._data.dtype)

    @property
    def scan_shape(self) -> tuple[int, int]:
        """``(scan_y, scan_x)``."""
        return self.shape[:2]  # type: ignore[return-value]

    @property
    def detector_shape(self) -> tuple[int, int]:
        """``(k_y, k_x)``."""
        return self.shape[2:]  # type: ignore[return-value]

    @property
    def n_patterns(self) -> int:
        """``scan_y * scan_x``."""
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self) -> int:
        """Size of the data in bytes (as stored, uncompressed)."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def chunks(self) -> tuple[int, ...] | None:
        """Storage chunk shape, or None for contiguous data (numpy, memmap)."""
        return native_chunks(self._data)

    @property
    def storage_chunks(self) -> tuple[int, ...] | None:
        """The unit a read touches (:func:`~napari_4dstem.engine.chunks.storage_chunks`).

        None for data read at any position alone, ``(1, 1, k_y, k_x)`` for per-frame storage, an
        HDF5 or zarr file's chunks (also behind a dask view of it), else dask's chunks.
        """
        return storage_chunks(self._data)

    @property
    def axis_labels(self) -> tuple[str, str, str, str]:
        """The axis names, ``("scan_y", "scan_x", "k_y", "k_x")``."""
        return AXIS_LABELS

    def __repr__(self) -> str:
        """Name, shape, dtype, storage type and calibration."""
        kind = type(self._data).__module__.split(".")[0] + "." + type(self._data).__name__
        return (
            f"DataCube(name={self.name!r}, shape={self.shape} (scan_y, scan_x, k_y, k_x), "
            f"dtype={self.dtype}, storage={kind}, calibration={self.calibration!r})"
        )

    # -- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Release the file behind the data (if the reader opened one).

        Returns
        -------
        None
            The reader's release runs once; later calls do nothing.
        """
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    def __enter__(self) -> DataCube:
        """The DataCube itself (``with`` closes it at the end)."""
        return self

    def __exit__(self, *exc) -> None:
        """Close the DataCube (:meth:`close`)."""
        self.close()

    # -- access -------------------------------------------------------------------------------
    def default_scan_chunk(self) -> tuple[int, int]:
        """Scan block of about 32 MiB, aligned with the storage chunks.

        Returns
        -------
        (int, int)
            ``(ny, nx)`` (:func:`~napari_4dstem.engine.chunks.default_scan_chunk`).
        """
        return default_scan_chunk(self.shape, self.dtype.itemsize, self.chunks)

    def to_dask(self, scan_chunk: tuple[int, int] | None = None):
        """A dask array over the data with chunks ``(ny, nx, k_y, k_x)`` (whole patterns).

        Parameters
        ----------
        scan_chunk : (int, int), optional
            Scan chunk shape (default :meth:`default_scan_chunk`; a dask array keeps its own chunks
            unless one is given).

        Returns
        -------
        dask.array.Array
            Lazy, in the stored dtype; numpy and memmap data are wrapped so that dask reads them
            block by block (a memmap is never copied whole into RAM).
        """
        import dask.array as da

        by, bx = scan_chunk or self.default_scan_chunk()
        chunks = (by, bx, *self.detector_shape)
        if isinstance(self._data, da.Array):
            return self._data.rechunk(chunks) if scan_chunk is not None else self._data
        # numpy/memmap data goes in wrapped: dask would copy a whole memmap into RAM first
        src = block_source(self._data)
        meta = np.empty((0,) * 4, dtype=self.dtype)
        return da.from_array(src, chunks=chunks, asarray=True, fancy=False, name=False, meta=meta)

    def pattern(self, iy: int, ix: int) -> np.ndarray:
        """The diffraction pattern at scan position ``(iy, ix)`` (negative indices allowed).

        Parameters
        ----------
        iy, ix : int
            Scan position.

        Returns
        -------
        ndarray ``(k_y, k_x)``
            In the stored dtype; a memory-mapped file's pattern is copied out with ``pread``.

        Raises
        ------
        IndexError
            When the position is outside the scan.
        FileFormatError
            When the storage library cannot read it.
        """
        iy, ix = self._check_position(iy, ix)
        with self._reading():
            out = self._data[iy, ix]
            if isinstance(out, np.ndarray):
                # a mapped file's pattern is copied out with pread: the caller (napari) may
                # hold it while another program truncates the file (no SIGBUS, ever)
                mf = mapped_file(out)
                return out if mf is None else mf.read(out)
            return np.asarray(out.compute() if hasattr(out, "compute") else out)

    @contextlib.contextmanager
    def _reading(self):
        """Report a storage library's read failure as FileFormatError naming the file.

        A corrupt HDF5 chunk raises OSError; it is reported like every other malformed input.
        """
        try:
            yield
        except Napari4DSTEMError:
            raise
        except (OSError, RuntimeError) as e:
            raise FileFormatError(self.source or self.name, f"cannot read the data ({type(e).__name__}: {e})") from e

    def _check_position(self, iy: int, ix: int) -> tuple[int, int]:
        ny, nx = self.scan_shape
        if not (-ny <= iy < ny and -nx <= ix < nx):
            raise IndexError(f"scan position ({iy}, {ix}) is outside the scan of shape {(ny, nx)}")
        return int(iy) % ny, int(ix) % nx

    def region_pattern(
        self, scan_y: slice = slice(None), scan_x: slice = slice(None), *, reduce: str = "mean"
    ) -> np.ndarray:
        """Mean, sum or max pattern over a rectangle of scan positions (a real-space ROI).

        Parameters
        ----------
        scan_y, scan_x : slice
            The rectangle (default the whole scan).
        reduce : {"mean", "sum", "max"}
            The reduction.

        Returns
        -------
        ndarray ``(k_y, k_x)``
            float64 for mean and sum, the stored dtype for max.

        Raises
        ------
        DataShapeError
            For an empty region.
        ValueError
            For an unknown ``reduce``.
        """
        ys = range(*scan_y.indices(self.shape[0]))
        xs = range(*scan_x.indices(self.shape[1]))
        if len(ys) == 0 or len(xs) == 0:
            raise DataShapeError(f"empty scan region {scan_y}, {scan_x} for scan shape {self.scan_shape}")
        with self._reading():
            block = read_mapped(np.asarray(_compute(self._data[scan_y, scan_x])))
        if reduce == "mean":
            return block.mean(axis=(0, 1), dtype=np.float64)
        if reduce == "sum":
            return block.sum(axis=(0, 1), dtype=np.float64)
        if reduce == "max":
            return block.max(axis=(0, 1))
        raise ValueError(f"reduce must be 'mean', 'sum' or 'max', got {reduce!r}")

    def iter_masked_pattern(
        self, mask: np.ndarray, *, reduce: str = "mean", rows_per_block: int | None = None
    ) -> Job[np.ndarray]:
        """Job: the mean, sum or max pattern over the scan positions where ``mask`` is True.

        Parameters
        ----------
        mask : bool array ``(scan_y, scan_x)``
            The region, e.g. an ellipse or polygon drawn on real space.
        reduce : {"mean", "sum", "max"}
            The reduction.
        rows_per_block : int, optional
            Scan rows read at a time (default: those of :meth:`default_scan_chunk`).

        Yields
        ------
        Progress
            One per band of rows with positions in the region.

        Returns
        -------
        ndarray ``(k_y, k_x)``
            The generator's return value: float64 for mean and sum (sums in float64), the stored
            dtype for max. Only the mask's bounding box is read, a band of rows at a time.

        Raises
        ------
        DataShapeError
            When the mask has another shape than the scan, or covers no position.
        ValueError
            For an unknown ``reduce``.
        """
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != tuple(self.scan_shape):
            raise DataShapeError(f"region mask {mask.shape} does not match the scan {tuple(self.scan_shape)}")
        if reduce not in ("mean", "sum", "max"):
            raise ValueError(f"reduce must be 'mean', 'sum' or 'max', got {reduce!r}")
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            raise DataShapeError("the region covers no scan position")
        r0, r1, c0, c1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        step = rows_per_block or max(1, (self.default_scan_chunk()[0]))
        acc = None
        total = math.ceil((r1 - r0) / step)
        for i, a in enumerate(range(r0, r1, step)):
            b = min(a + step, r1)
            m = mask[a:b, c0:c1]
            if not m.any():
                continue
            with self._reading():
                block = read_mapped(np.asarray(_compute(self._data[a:b, c0:c1])))
            sel = block[m]  # (n, k_y, k_x)
            if reduce == "max":
                part = sel.max(axis=0)
                acc = part if acc is None else np.maximum(acc, part)
            else:
                part = sel.sum(axis=0, dtype=np.float64)
                acc = part if acc is None else acc + part
            yield Progress(i + 1, total, f"region {reduce}")
        return acc / ys.size if reduce == "mean" else acc

    # -- chunked reductions -------------------------------------------------------------------
    def iter_reduce_patterns(self, op: str = "mean", *, scan_chunk=None) -> Job[np.ndarray]:
        """Job: reduce all patterns to one ``(k_y, k_x)`` image (``mean``, ``sum`` or ``max``).

        Parameters
        ----------
        op : {"mean", "sum", "max"}
            The reduction.
        scan_chunk : (int, int), optional
            Scan block read at a time (default :meth:`default_scan_chunk`).

        Yields
        ------
        Progress
            One per block of the scan.

        Returns
        -------
        ndarray ``(k_y, k_x)``
            The generator's return value: float64 for mean and sum, the stored dtype for max.
            Streams the scan in blocks in the native dtype; sums accumulate exactly (integer counts
            in uint32/uint64 per block) and in float64 across blocks.

        Raises
        ------
        ValueError
            For an unknown ``op``.
        """
        if op not in ("mean", "sum", "max"):
            raise ValueError(f"op must be 'mean', 'sum' or 'max', got {op!r}")
        scan_chunk = scan_chunk or self.default_scan_chunk()
        total = n_blocks(self.shape, scan_chunk)
        acc = None
        for i, (_, _, block) in enumerate(iter_scan_blocks(self._data, scan_chunk)):
            if op == "max":
                part = block.max(axis=(0, 1))
                acc = part if acc is None else np.maximum(acc, part)
            else:
                part = _block_sum(block)
                acc = part if acc is None else acc + part
            yield Progress(i + 1, total, f"{op} pattern")
        if op == "mean":
            acc = acc / self.n_patterns
        return acc

    mean_pattern = _reduction("mean", "Mean diffraction pattern (float64), computed in chunks.", " float64")
    sum_pattern = _reduction("sum", "Sum of all diffraction patterns (float64), computed in chunks.", " float64")
    max_pattern = _reduction("max", "Maximum diffraction pattern (native dtype), computed in chunks.", "")

    # -- lazy transformations -----------------------------------------------------------------
    def crop(
        self,
        *,
        scan_y: slice = slice(None),
        scan_x: slice = slice(None),
        k_y: slice = slice(None),
        k_x: slice = slice(None),
    ) -> DataCube:
        """A lazy cropped DataCube; the calibration's origin follows the detector crop.

        Parameters
        ----------
        scan_y, scan_x, k_y, k_x : slice
            Contiguous slices (step 1) of each axis (default whole).

        Returns
        -------
        DataCube
            Over a dask view of the data; origin and origin map shifted by the detector crop (the
            map cropped to the scan crop).

        Raises
        ------
        DataShapeError
            For a strided or empty slice.
        """
        slices = (scan_y, scan_x, k_y, k_x)
        ranges = [range(*s.indices(n)) for s, n in zip(slices, self.shape, strict=True)]
        for r, label, s in zip(ranges, AXIS_LABELS, slices, strict=True):
            if r.step != 1:
                raise DataShapeError(f"crop takes contiguous slices; {label} got step {r.step}")
            if len(r) == 0:
                raise DataShapeError(f"crop along {label} with {s} is empty")
        cal = self.calibration
        oy, ox = ranges[2].start, ranges[3].start
        changes: dict[str, Any] = {}
        if cal.origin_map_px is not None:
            m = cal.origin_map_px[scan_y, scan_x] - np.array([oy, ox])
            changes["origin_map_px"] = m
            changes["origin_px"] = tuple(np.nanmean(m, axis=(0, 1)))
        elif cal.origin_px is not None:
            changes["origin_px"] = (cal.origin_px[0] - oy, cal.origin_px[1] - ox)
        data = self.to_dask()[scan_y, scan_x, k_y, k_x]
        return DataCube(data, cal.replace(**changes), name=self.name, metadata=self.metadata, source=self.source)

    def reshape_scan(self, scan_shape: tuple[int, int]) -> DataCube:
        """A lazy view with the same patterns in raster order on another scan shape.

        For files whose header lacks the scan shape (they open as ``(1, n)``).

        Parameters
        ----------
        scan_shape : (int, int)
            The new ``(scan_y, scan_x)``; it must hold the same number of patterns (see
            :func:`scan_factorizations`).

        Returns
        -------
        DataCube
            ``self`` when the shape is unchanged; a numpy reshape or a dask view otherwise (the
            origin map reshaped too).

        Raises
        ------
        DataShapeError
            When the shape holds another number of patterns (the valid shapes are listed).
        """
        ny, nx = (int(v) for v in scan_shape)
        if ny < 1 or nx < 1 or ny * nx != self.n_patterns:
            raise DataShapeError(
                f"scan shape {(ny, nx)} holds {ny * nx} patterns, the data has {self.n_patterns}; "
                f"valid shapes: {scan_factorizations(self.n_patterns)[:8]}"
            )
        if (ny, nx) == self.scan_shape:
            return self
        if isinstance(self._data, np.ndarray):
            data = self._data.reshape(ny, nx, *self.detector_shape)
        else:
            data = self.to_dask().reshape(ny, nx, *self.detector_shape)
        cal = self.calibration
        if cal.origin_map_px is not None:
            cal = cal.replace(origin_map_px=cal.origin_map_px.reshape(ny, nx, 2))
        return DataCube(data, cal, name=self.name, metadata=self.metadata, source=self.source)

    def bin(self, *, k: int = 1, scan: int = 1) -> DataCube:
        """A lazy binned DataCube: sums of ``scan x scan`` positions and ``k x k`` pixels.

        Parameters
        ----------
        k : int
            Detector binning factor (default 1).
        scan : int
            Scan binning factor (default 1).

        Returns
        -------
        DataCube
            ``self`` for factors 1; else a dask view with axes not divisible by the factor trimmed
            at the end, integer data summed into a wider integer type (counts never overflow), and
            the calibration scaled to match (scan step, pixel size, origin and origin map).

        Raises
        ------
        ValueError
            For a factor below 1.
        DataShapeError
            For a factor larger than the axis.
        """
        k, scan = int(k), int(scan)
        if k < 1 or scan < 1:
            raise ValueError(f"bin factors must be >= 1, got k={k}, scan={scan}")
        sy, sx, qy, qx = self.shape
        if sy < scan or sx < scan or qy < k or qx < k:
            raise DataShapeError(f"bin factors (scan={scan}, k={k}) exceed the shape {self.shape}")
        if k == 1 and scan == 1:
            return self
        ny, nx, my, mx = sy // scan, sx // scan, qy // k, qx // k
        d = self.to_dask()[: ny * scan, : nx * scan, : my * k, : mx * k]
        acc = _sum_dtype(self.dtype)
        d = d.astype(acc).reshape(ny, scan, nx, scan, my, k, mx, k).sum(axis=(1, 3, 5, 7), dtype=acc)
        cal = self.calibration
        changes: dict[str, Any] = {}
        if cal.scan_step is not None:
            changes["scan_step"] = (cal.scan_step[0] * scan, cal.scan_step[1] * scan)
        if cal.k_pixel_size is not None:
            changes["k_pixel_size"] = cal.k_pixel_size * k
        if cal.origin_map_px is not None:
            m = cal.origin_map_px[: ny * scan, : nx * scan]
            m = m.reshape(ny, scan, nx, scan, 2).mean(axis=(1, 3))
            changes["origin_map_px"] = (m + 0.5) / k - 0.5
            changes["origin_px"] = None
        if cal.origin_px is not None and cal.origin_map_px is None:
            changes["origin_px"] = tuple((o + 0.5) / k - 0.5 for o in cal.origin_px)
        return DataCube(d, cal.replace(**changes), name=self.name, metadata=self.metadata, source=self.source)


def _block_sum(block: np.ndarray) -> np.ndarray:
    """Sum of a block's patterns, as float64.

    Integer counts are summed in uint32 when that cannot overflow (about twice as fast as
    summing into float64), else in uint64; floats in float64.
    """
    flat = block.reshape(-1, *block.shape[2:])
    if flat.dtype.kind in "ub":
        limit = np.iinfo(flat.dtype).max if flat.dtype.kind == "u" else 1
        acc = np.uint32 if flat.shape[0] * int(limit) < 2**32 else np.uint64
        return flat.sum(axis=0, dtype=acc).astype(np.float64)
    return flat.sum(axis=0, dtype=np.float64)


def _compute(x):
    return x.compute() if hasattr(x, "compute") else x
