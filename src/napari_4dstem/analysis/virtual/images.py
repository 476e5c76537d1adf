"""Virtual imaging: sum each diffraction pattern over a virtual detector.

``image[iy, ix] = sum_{k} mask[k - s(iy, ix)] * pattern[iy, ix, k]``

where ``s`` is the per-pattern detector shift (zero, or with ``descan=True`` the fitted origin
``Calibration.origin_map_px[iy, ix]`` minus the mean origin ``Calibration.origin_px``: the
detector follows the unscattered beam). Sub-pixel shifts move the mask bilinearly. Pixels that
a shift moves off the detector count as zero.

Binary detectors are summed over their horizontal runs of pixels (no multiplication, only the
pixels inside); weighted detectors over their bounding box. Only the detector rows a detector
(plus its largest shift) touches are read. Sums accumulate in float64 and are exact for
integer data. See ``docs/virtual-imaging.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...data.calibration import Calibration
from ...data.datacube import DataCube
from ...data.results import RealSpaceMap
from ...engine.driver import map_scan
from ...engine.jobs import Job, PartialMap, eager, job_doc
from ...engine.kernels import (
    as_kernel_input,
    row_accumulator,
    runs_sum_block,
    weighted_sum_block,
)
from ...errors import CalibrationError, NonFiniteDataError
from .detectors import Detector, mask_runs

__all__ = [
    "NonFiniteDataError",
    "as_datacube",
    "descan_shifts",
    "iter_virtual_image",
    "iter_virtual_images",
    "virtual_image",
    "virtual_images",
]

_NO_SHIFT = np.zeros((0, 0))
NAN_POLICIES = ("raise", "propagate", "omit")


def as_datacube(data: Any, calibration: Calibration | None = None) -> tuple[DataCube, Calibration]:
    """``data`` as a DataCube (wrapping a bare 4D array) and the calibration to use.

    Parameters
    ----------
    data : DataCube or array-like ``(scan_y, scan_x, k_y, k_x)``
        The 4D-STEM data.
    calibration : Calibration, optional
        Overrides the DataCube's calibration.

    Returns
    -------
    cube : DataCube
        ``data`` itself, or a DataCube wrapping the array (default calibration).
    calibration : Calibration
        ``calibration`` when given, else the cube's.

    Raises
    ------
    TypeError
        When ``calibration`` is not a Calibration.
    """
    cube = data if isinstance(data, DataCube) else DataCube(data)
    cal = calibration if calibration is not None else cube.calibration
    if not isinstance(cal, Calibration):
        raise TypeError(f"calibration must be a Calibration, got {type(cal).__name__}")
    return cube, cal


def descan_shifts(cal: Calibration, scan_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-pattern detector shift ``origin_map_px - origin_px`` as two ``(scan_y, scan_x)`` arrays.

    Parameters
    ----------
    cal : Calibration
        Holds the fitted origin map ``origin_map_px`` and the mean origin ``origin_px``.
    scan_shape : (int, int)
        ``(scan_y, scan_x)`` of the data.

    Returns
    -------
    shift_y, shift_x : ndarray ``(scan_y, scan_x)`` float64
        Detector pixels to move the detector by, at each scan position (C-contiguous).

    Raises
    ------
    CalibrationError
        When there is no origin map, its scan shape differs from ``scan_shape``, or it has NaN.
    """
    if cal.origin_map_px is None:
        raise CalibrationError(
            "descan correction needs an origin map (Calibration.origin_map_px); measure it with "
            "napari_4dstem.analysis.virtual.origin.measure_origin and fit_origin_plane"
        )
    om = cal.origin_map_px
    if om.shape[:2] != tuple(scan_shape):
        raise CalibrationError(f"origin map shape {om.shape[:2]} does not match the scan {scan_shape}")
    if not np.all(np.isfinite(om)):
        raise CalibrationError("the origin map has NaN values; fit it with a plane first")
    ref = np.asarray(cal.origin_px, dtype=float)
    return (
        np.ascontiguousarray(om[..., 0] - ref[0]),
        np.ascontiguousarray(om[..., 1] - ref[1]),
    )


def _multi_kernel(block, *, row0, parallel, specs, shift_y=_NO_SHIFT, shift_x=_NO_SHIFT, blas=True, numpy=False):
    """Kernel for :func:`map_scan`: one channel per detector spec.

    ``numpy``: without numba (:func:`_numpy_sums`), unless the patterns are shifted (descan).
    """
    block = as_kernel_input(block)
    if numpy and shift_y.size == 0:
        return _numpy_sums(block, row0, specs)
    out = np.empty((block.shape[0], block.shape[1], len(specs)))
    tmp = np.empty(block.shape[:2])
    use_blas = blas and block.dtype.kind == "f" and shift_y.size == 0 and block.flags.c_contiguous
    for k, spec in enumerate(specs):
        if use_blas and spec[-1] >= _BLAS_MIN_FRACTION:
            # float data, no shift, a detector covering much of the rows read: a BLAS
            # matrix-vector product reads memory faster than a numba loop can. Only the
            # detector's own rows: a strided (n, rows x k_x) view, which BLAS reads with a
            # leading dimension, so rows outside the detector are never loaded
            a, b = _spec_rows(spec, row0, block.shape[2])
            rows = block[:, :, a:b].reshape(block.shape[0] * block.shape[1], -1)  # a view
            w = _full_weights(spec, row0 + a, b - a, block.shape[3], block.dtype)
            out[..., k] = (rows @ w).reshape(block.shape[:2])
            continue
        if spec[0] == "runs":
            _, rr, c0, c1, _ = spec
            zero = row_accumulator(block.dtype, weighted=False)
            runs_sum_block(block, row0, rr, c0, c1, shift_y, shift_x, zero, tmp, parallel=parallel)
        else:
            _, w, r0, cc0, _ = spec
            zero = row_accumulator(block.dtype, weighted=True)
            w = w.astype(zero.dtype, copy=False)  # float32 weights for float32 data
            weighted_sum_block(block, row0, w, r0, cc0, shift_y, shift_x, zero, tmp, parallel=parallel)
        out[..., k] = tmp
    return out


def _numpy_sums(block, row0: int, specs) -> np.ndarray:
    """The detector sums of a block with numpy alone.

    Each scan row's patterns (the detector's rows only) times the mask as float64 weights. Integer
    data convert exactly to float64 and every product of a binary mask is exact, so the sums equal
    the numba kernels' (float64 accumulators) while they stay below 2**53; weighted masks and
    float data agree to rounding (another summation order).
    For a first image while the kernels of its dtype still compile (``kernel="numpy"`` of
    :func:`iter_virtual_images`): 7.8-16.8 s of compiling on a first int32 or uint8 file (#15).
    """
    out = np.empty((block.shape[0], block.shape[1], len(specs)))
    for k, spec in enumerate(specs):
        a, b = _spec_rows(spec, row0, block.shape[2])
        w = _full_weights(spec, row0 + a, b - a, block.shape[3], np.float64)
        for i in range(block.shape[0]):
            out[i, :, k] = block[i, :, a:b].reshape(block.shape[1], -1) @ w
    return out


# float data: detectors covering at least this fraction of the detector go through BLAS
_BLAS_MIN_FRACTION = 0.25


def _spec(mask: np.ndarray):
    """How a mask is summed, plus the fraction of the detector it covers (last item).

    A binary mask is summed over its runs of pixels (no multiplication, exact for integer
    data); a weighted one over its bounding rows.
    """
    frac = float(np.count_nonzero(mask)) / mask.size
    if mask.dtype.kind == "b":
        return ("runs", *mask_runs(mask), frac)
    rows = np.flatnonzero(np.any(mask != 0, axis=1))
    cols = np.flatnonzero(np.any(mask != 0, axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if c1 - c0 > mask.shape[1] // 2:
        # whole rows (zero-padded weights): aligned, remainder-free inner loops
        c0, c1 = 0, mask.shape[1]
    w = np.ascontiguousarray(mask[r0:r1, c0:c1], dtype=np.float64)
    return ("weights", w, int(r0), int(c0), frac)


def _spec_rows(spec, row0: int, h: int) -> tuple[int, int]:
    """The rows ``a:b`` of a block (detector rows ``row0 : row0 + h``) the spec covers."""
    if spec[0] == "runs":
        rr = spec[1]
        lo, hi = int(rr.min()), int(rr.max()) + 1
    else:
        lo, hi = spec[2], spec[2] + spec[1].shape[0]
    a, b = max(lo - row0, 0), min(hi - row0, h)
    return (a, b) if b > a else (0, 0)


def _full_weights(spec, row0: int, h: int, qx: int, dtype) -> np.ndarray:
    """The spec's mask on detector rows ``row0 : row0 + h``, flattened, in ``dtype``."""
    w = np.zeros((h, qx), dtype=dtype)
    if spec[0] == "runs":
        _, rr, c0, c1, _ = spec
        for r, a, b in zip(rr, c0, c1):
            if row0 <= r < row0 + h:
                w[r - row0, a:b] = 1
    else:
        _, ww, r0, c0, _ = spec
        hw, wc = ww.shape
        a0, a1 = max(r0, row0), min(r0 + hw, row0 + h)
        if a1 > a0:
            w[a0 - row0 : a1 - row0, c0 : c0 + wc] = ww[a0 - r0 : a1 - r0]
    return w.ravel()


@job_doc
def iter_virtual_images(
    data: Any,
    detectors: Sequence[Detector],
    *,
    calibration: Calibration | None = None,
    descan: bool = False,
    nan_policy: str = "raise",
    names: Sequence[str] | None = None,
    scan_chunk: tuple[int, int] | None = None,
    backend: Any = None,
    partial: bool | Callable[[np.ndarray, np.ndarray], PartialMap] = False,
    kernel: str = "numba",
) -> Job[RealSpaceMap]:
    """Job: several virtual images in one pass over the data (one channel per detector).

    Parameters
    ----------
    %(data)s
    detectors : sequence of Detector
        The virtual detectors, one output channel each.
    calibration : Calibration, optional
        Defaults to the DataCube's; needed for ``descan``.
    descan : bool
        Shift every detector by the fitted origin (``origin_map_px - origin_px``).
    nan_policy : {"raise", "propagate", "omit"}
        What to do when float data has NaN or inf inside a detector: raise
        :class:`NonFiniteDataError` (default), return NaN for those patterns, or sum the
        finite pixels only.
    names : sequence of str, optional
        Channel names; by default the detector kinds (``"disk"``, ``"annulus_2"``...).
    %(scan_chunk)s
    partial : bool or callable
        Attach the first channel's image so far to the Progress steps (``Progress.partial``, NaN
        where not computed yet): the image fills in block by block while the job runs. A
        callable ``partial(sums, done) -> PartialMap`` makes the map from the sums so far
        ``(scan_y, scan_x, n_detectors)`` and the boolean scan mask of the patterns computed.
    kernel : {"numba", "numpy"}
        ``"numpy"`` sums without numba (equal for binary detectors on integer data, to rounding
        otherwise; slower on large data): the napari dock's first image while numba still compiles the kernels of
        the data's dtype. With ``descan`` the numba kernels run either way.

    Yields
    ------
    %(yields)s

    Returns
    -------
    RealSpaceMap ``(scan_y, scan_x, n_detectors)``
        The generator's return value: float64 sums, units ``counts``, one named channel per
        detector; ``params`` record the detectors, ``descan``, ``nan_policy`` and the dtype.

    Raises
    ------
    ValueError
        For an unknown ``nan_policy``, no detector, or channel names that are not distinct and
        one per detector.
    TypeError
        When a detector is not a :class:`~napari_4dstem.analysis.virtual.detectors.Detector`.
    CalibrationError
        With ``descan`` and no usable origin map.
    NonFiniteDataError
        With ``nan_policy="raise"`` when a pattern has NaN or inf inside a detector.

    Notes
    -----
    ``image[iy, ix] = sum_k mask[k - s(iy, ix)] * pattern[iy, ix, k]`` with ``s`` the descan
    shift (or zero), moved bilinearly for sub-pixel shifts. Binary masks are summed over their
    runs of pixels, weighted ones over their bounding rows; only the detector rows the
    detectors (plus their largest shift) touch are read; float data with wide detectors and no
    shift go through BLAS matrix-vector products. Sums accumulate in float64 (exact for integer
    data).
    """
    cube, cal = as_datacube(data, calibration)
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    detectors = list(detectors)
    if not detectors:
        raise ValueError("no detector given")
    if kernel not in ("numba", "numpy"):
        raise ValueError(f"kernel must be 'numba' or 'numpy', got {kernel!r}")
    for d in detectors:
        if not isinstance(d, Detector):
            raise TypeError(f"expected a Detector, got {type(d).__name__}")
    names = _default_names(detectors) if names is None else [str(n) for n in names]
    if len(names) != len(detectors) or len(set(names)) != len(names):
        raise ValueError(f"need {len(detectors)} distinct channel names, got {names}")
    det_shape = cube.detector_shape
    masks = [d.render(det_shape) for d in detectors]
    bounds = [d.row_bounds(det_shape) for d in detectors]
    r0, r1 = min(b[0] for b in bounds), max(b[1] for b in bounds)
    scan_kwargs: dict[str, np.ndarray] = {}
    if descan:
        shy, shx = descan_shifts(cal, cube.scan_shape)
        r0 = r0 + math.floor(float(shy.min()))
        r1 = r1 + math.ceil(float(shy.max())) + 1
        scan_kwargs = {"shift_y": shy, "shift_x": shx}
    specs = [_spec(m) for m in masks]
    img = yield from map_scan(
        cube.data,
        _multi_kernel,
        out_tail=(len(specs),),
        kwargs={"specs": specs, "numpy": kernel == "numpy"},
        scan_kwargs=scan_kwargs,
        k_rows=(r0, r1),
        k_rows_exact=False,
        # float data and only wide detectors: BLAS products on whole blocks
        split_blocks=not (cube.dtype.kind == "f" and not descan and all(sp[-1] >= _BLAS_MIN_FRACTION for sp in specs)),
        scan_chunk=scan_chunk,
        backend=backend,
        message="virtual image",
        partial=(partial if callable(partial) else _first_channel(names[0])) if partial else None,
    )
    if cube.dtype.kind == "f":
        img = _handle_nonfinite(cube, img, specs, scan_kwargs, (r0, r1), nan_policy)
    params = {
        # keyed by channel name (EMD metadata stores dicts, not lists of dicts)
        "detectors": {n: d.to_params() for n, d in zip(names, detectors)},
        "descan": bool(descan),
        "nan_policy": nan_policy,
        "dtype": str(cube.dtype),
    }
    return RealSpaceMap(
        img,
        name="virtual_images",
        units="counts",
        channels=tuple(names),
        calibration=cal,
        params=params,
    )


def _first_channel(name: str):
    """``partial(out, done)`` for :func:`~napari_4dstem.engine.driver.map_scan`: channel 0 so far."""

    def partial(out: np.ndarray, done: np.ndarray) -> PartialMap:
        return PartialMap.of(name, out[..., 0], done, "counts")

    return partial


def _default_names(detectors: Sequence[Detector]) -> list[str]:
    names, seen = [], {}
    for d in detectors:
        n = d.kind
        seen[n] = seen.get(n, 0) + 1
        names.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return names


def _handle_nonfinite(cube, img, specs, scan_kwargs, rows, nan_policy) -> np.ndarray:
    bad = ~np.all(np.isfinite(img), axis=-1)
    if not bad.any():
        return img
    rows = slice(max(rows[0], 0), min(rows[1], cube.detector_shape[0]))

    def again(iy, ix, finite_only):
        # one pattern through the numba loops, which read only the detector's pixels (a BLAS
        # product also multiplies a NaN outside the detector by its zero weight)
        pat = np.asarray(cube.data[iy, ix, rows], dtype=np.float64)
        if finite_only:
            pat = np.where(np.isfinite(pat), pat, 0.0)
        kw = {k: v[iy : iy + 1, ix : ix + 1] for k, v in scan_kwargs.items()}
        return _multi_kernel(pat[None, None], row0=rows.start, parallel=False, specs=specs, blas=False, **kw)[0, 0]

    for iy, ix in np.argwhere(bad):
        img[iy, ix] = again(iy, ix, False)
    bad = ~np.all(np.isfinite(img), axis=-1)
    where = np.argwhere(bad)
    if not bad.any() or nan_policy == "propagate":
        return img
    if nan_policy == "raise":
        iy, ix = where[0]
        raise NonFiniteDataError(
            f"{len(where)} pattern(s) have NaN or inf inside the detector (first at scan "
            f"position ({iy}, {ix})); pass nan_policy='omit' to sum only the finite pixels or "
            "nan_policy='propagate' to keep NaN in the image"
        )
    for iy, ix in where:
        img[iy, ix] = again(iy, ix, True)
    return img


@job_doc
def iter_virtual_image(
    data: Any,
    detector: Detector,
    *,
    calibration: Calibration | None = None,
    descan: bool = False,
    nan_policy: str = "raise",
    scan_chunk: tuple[int, int] | None = None,
    backend: Any = None,
    partial: bool | Callable[[np.ndarray, np.ndarray], PartialMap] = False,
) -> Job[RealSpaceMap]:
    """Job: the virtual image of one detector, a ``(scan_y, scan_x)`` RealSpaceMap.

    Parameters
    ----------
    %(data)s
    detector : Detector
        The virtual detector.
    calibration, descan, nan_policy, scan_chunk, backend, partial
        As :func:`iter_virtual_images`.

    Yields
    ------
    %(yields)s

    Returns
    -------
    RealSpaceMap ``(scan_y, scan_x)``
        The generator's return value: float64 sums, units ``counts``, named
        ``virtual_<kind>``; ``params`` record the detector, ``descan`` and ``nan_policy``.

    Raises
    ------
    ValueError, TypeError, CalibrationError, NonFiniteDataError
        As :func:`iter_virtual_images`.

    Notes
    -----
    One channel of :func:`iter_virtual_images`.
    """
    stack = yield from iter_virtual_images(
        data,
        [detector],
        calibration=calibration,
        descan=descan,
        nan_policy=nan_policy,
        scan_chunk=scan_chunk,
        backend=backend,
        partial=partial,
    )
    params = dict(stack.params)
    params["detector"] = next(iter(params.pop("detectors").values()))
    return RealSpaceMap(
        stack.data[..., 0],
        name=f"virtual_{detector.kind}",
        units="counts",
        calibration=stack.calibration,
        params=params,
    )


virtual_image = eager(iter_virtual_image, "The virtual image of one detector.")


virtual_images = eager(iter_virtual_images, "Several virtual images in one pass.")
