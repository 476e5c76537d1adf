"""Centre of mass of every diffraction pattern, in one pass over the data.

``com_y[iy, ix] = sum_k k_y I(k) / sum_k I(k)`` (and ``com_x`` alike) in absolute detector
pixels ``(k_y, k_x)``, pixel centres at integer coordinates; ``intensity = sum_k I(k)``. With a
``detector`` the sums run over its (boolean or weighted) mask only, e.g. the bright-field disk.
Patterns whose sum is zero get NaN. The shifts relative to the origin, rotated into scan axes,
are DPC signals: see :mod:`napari_4dstem.analysis.virtual.dpc`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ...data.calibration import Calibration
from ...data.results import RealSpaceMap
from ...engine.driver import map_scan
from ...engine.jobs import Job, PartialMap, eager, job_doc
from ...engine.kernels import as_kernel_input, com_block, com_weighted_block
from .detectors import Detector
from .images import NAN_POLICIES, NonFiniteDataError, as_datacube

__all__ = ["center_of_mass", "iter_center_of_mass"]

COM_CHANNELS = ("com_y", "com_x", "intensity")


def _com_kernel(block, *, row0, parallel):
    block = as_kernel_input(block)
    out = np.empty((*block.shape[:2], 3))
    com_block(block, row0, out, parallel=parallel)
    return out[..., [1, 2, 0]]


def _com_masked_kernel(block, *, row0, parallel, weights, r0, c0):
    block = as_kernel_input(block)
    out = np.empty((*block.shape[:2], 3))
    com_weighted_block(block, row0, weights, r0, c0, out, parallel=parallel)
    return out[..., [1, 2, 0]]


@job_doc
def iter_center_of_mass(
    data: Any,
    *,
    detector: Detector | None = None,
    calibration: Calibration | None = None,
    nan_policy: str = "raise",
    scan_chunk: tuple[int, int] | None = None,
    backend: Any = None,
    partial: Callable[[np.ndarray, np.ndarray], PartialMap] | None = None,
) -> Job[RealSpaceMap]:
    """Job: centre of mass and total intensity of every pattern.

    Parameters
    ----------
    %(data)s
    detector : Detector, optional
        Restrict (or weight) the sums to this detector; only its rows are read.
    calibration : Calibration, optional
        Recorded with the result (defaults to the DataCube's).
    nan_policy : {"raise", "propagate"}
        Float data with NaN/inf in a pattern: raise :class:`NonFiniteDataError`, or NaN.
    %(scan_chunk)s
    partial : callable, optional
        ``partial(com, done) -> PartialMap``: a map so far from the COM array so far
        ``(scan_y, scan_x, 3)`` (com_y, com_x, intensity) and the boolean scan mask of the
        patterns computed, attached to the Progress steps (maps filling in).

    Yields
    ------
    %(yields)s

    Returns
    -------
    RealSpaceMap ``(scan_y, scan_x, 3)``
        The generator's return value: channels ``com_y``, ``com_x`` (absolute detector pixels)
        and ``intensity`` (counts); NaN centre where a pattern sums to zero.

    Raises
    ------
    ValueError
        For a ``nan_policy`` other than ``"raise"`` or ``"propagate"``.
    NonFiniteDataError
        With ``nan_policy="raise"`` when a float pattern has NaN or inf.

    Notes
    -----
    ``com_y = sum_k k_y I(k) / sum_k I(k)`` (``com_x`` alike) with pixel centres at integer
    coordinates, ``I`` the pattern times the detector's weights when one is given; one numba
    pass per block accumulates the three sums in float64.
    """
    cube, cal = as_datacube(data, calibration)
    if nan_policy not in NAN_POLICIES[:2]:
        raise ValueError(f"nan_policy must be 'raise' or 'propagate', got {nan_policy!r}")
    params: dict[str, Any] = {"detector": None, "dtype": str(cube.dtype), "nan_policy": nan_policy}
    if detector is None:
        kernel, kwargs, rows = _com_kernel, {}, None
    else:
        w, r0, c0 = detector.weights_box(cube.detector_shape)
        kernel, kwargs, rows = _com_masked_kernel, {"weights": w, "r0": r0, "c0": c0}, (r0, r0 + w.shape[0])
        params["detector"] = detector.to_params()
    out = yield from map_scan(
        cube.data,
        kernel,
        out_tail=(3,),
        kwargs=kwargs,
        k_rows=rows,
        k_rows_exact=False,
        scan_chunk=scan_chunk,
        backend=backend,
        message="centre of mass",
        partial=partial,
    )
    if cube.dtype.kind == "f" and nan_policy == "raise":
        bad = ~np.isfinite(out[..., 2])
        if bad.any():
            iy, ix = np.argwhere(bad)[0]
            raise NonFiniteDataError(
                f"{int(bad.sum())} pattern(s) have NaN or inf (first at scan position "
                f"({iy}, {ix})); pass nan_policy='propagate' to keep NaN in the maps"
            )
    params["channel_units"] = {"com_y": "px", "com_x": "px", "intensity": "counts"}
    return RealSpaceMap(out, name="com", units="px", channels=COM_CHANNELS, calibration=cal, params=params)


center_of_mass = eager(iter_center_of_mass, "Centre of mass and total intensity of every pattern.")
