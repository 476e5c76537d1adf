"""Per-pattern statistics over a virtual detector's pixels: Max, Min, Std (FEM), in one pass.

``max[iy, ix] = max_{k: w(k) != 0} I(iy, ix, k)`` (and ``min`` alike) and

``std[iy, ix] = sqrt( sum_k w(k) (I(k) - m)^2 / sum_k w(k) )`` with ``m = sum_k w(k) I(k) / sum_k w(k)``

where ``w`` is the detector's mask (1 inside a binary detector: the population standard
deviation of the pixels under it, numpy's ``std`` with ``ddof=0``). Only the detector's rows
are read; each block's pixels under the detector are gathered once (vectorised numpy, which
releases the GIL) and reduced in float64. Fluctuation electron microscopy uses the normalised
variance ``(std / mean)^2`` of an annulus: :func:`detector_statistic` with ``"std"`` and the
virtual image's mean give it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...data.calibration import Calibration
from ...data.results import RealSpaceMap
from ...engine.driver import map_scan
from ...engine.jobs import Job, PartialMap, eager, job_doc
from ...errors import Napari4DSTEMError
from .detectors import Detector
from .images import as_datacube

__all__ = ["STATISTICS", "detector_statistic", "iter_detector_statistic"]

STATISTICS = ("max", "min", "std")


def _statistic_kernel(block, *, row0, parallel, weights, r0, c0, statistic):
    """``(ny, nx)`` float64: the statistic of each pattern's pixels where ``weights != 0``."""
    h, w = weights.shape
    sub = np.asarray(block)[:, :, r0 - row0 : r0 - row0 + h, c0 : c0 + w]
    sel = weights != 0
    vals = sub[:, :, sel]  # (ny, nx, n) in the native dtype
    if statistic == "max":
        return vals.max(axis=-1).astype(np.float64)
    if statistic == "min":
        return vals.min(axis=-1).astype(np.float64)
    wv = weights[sel].astype(np.float64)
    vals = vals.astype(np.float64)
    total = wv.sum()
    mean = vals @ wv / total
    dev = vals - mean[..., None]
    return np.sqrt(np.maximum((dev * dev) @ wv / total, 0.0))


@job_doc
def iter_detector_statistic(
    data: Any,
    detector: Detector,
    statistic: str = "max",
    *,
    calibration: Calibration | None = None,
    scan_chunk: tuple[int, int] | None = None,
    backend: Any = None,
    partial: bool = False,
) -> Job[RealSpaceMap]:
    """Job: ``statistic`` of every pattern's pixels under ``detector``.

    Parameters
    ----------
    %(data)s
    detector : Detector
        The pixels to reduce (its mask's non-zero pixels; the mask weights ``std``).
    statistic : {"max", "min", "std"}
        The reduction (default ``"max"``).
    calibration : Calibration, optional
        Recorded with the result (defaults to the DataCube's).
    %(scan_chunk)s
    partial : bool
        Attach the map so far to the Progress steps (``Progress.partial``, NaN where not
        computed yet): it fills in block by block, each pattern's value final once read.

    Yields
    ------
    %(yields)s

    Returns
    -------
    RealSpaceMap ``(scan_y, scan_x)``
        The generator's return value: float64, named ``virtual_<statistic>``, in counts.

    Raises
    ------
    Napari4DSTEMError
        For an unknown ``statistic``, or a detector that covers no pixel (DataShapeError).

    Notes
    -----
    ``max`` and ``min`` over the pixels with ``w(k) != 0``; ``std = sqrt(sum_k w (I - m)^2 /
    sum_k w)`` with ``m = sum_k w I / sum_k w``, the population standard deviation (``ddof=0``)
    for a binary detector. Each block's pixels under the detector are gathered once and reduced
    in float64; only the detector's rows are read. The normalised variance ``(std / mean)^2`` of
    an annulus is the fluctuation electron microscopy (FEM) signal [1]_.

    References
    ----------
    .. [1] M. M. J. Treacy, J. M. Gibson, L. Fan, D. J. Paterson and I. McNulty, "Fluctuation
       microscopy: a probe of medium range order", Rep. Prog. Phys. 68, 2899-2944 (2005).
    """
    if statistic not in STATISTICS:
        raise Napari4DSTEMError(f"unknown statistic {statistic!r}; use one of {STATISTICS}")
    cube, cal = as_datacube(data, calibration)
    weights, r0, c0 = detector.weights_box(cube.detector_shape)
    r1 = r0 + weights.shape[0]
    out = yield from map_scan(
        cube.data,
        _statistic_kernel,
        kwargs={"weights": weights, "r0": r0, "c0": c0, "statistic": statistic},
        k_rows=(r0, r1),
        split_blocks=False,
        scan_chunk=scan_chunk,
        backend=backend,
        message=f"detector {statistic}",
        partial=(lambda out, done: PartialMap.of(f"virtual_{statistic}", out, done, "counts")) if partial else None,
    )
    params = {"detector": detector.to_params(), "response": statistic, "dtype": str(cube.dtype)}
    return RealSpaceMap(out, name=f"virtual_{statistic}", units="counts", calibration=cal, params=params)


detector_statistic = eager(iter_detector_statistic, "The ``statistic`` map of ``detector``.")
