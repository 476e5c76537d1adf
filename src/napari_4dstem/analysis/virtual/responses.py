"""What a virtual detector's image shows: its response, one core call each, filling in block by block.

A detector's *response* reduces the pixels under it, pattern by pattern:

- ``sum``: ``sum_k w(k) I(k)`` (:func:`~.images.iter_virtual_image`); ``mean``: the sum over
  ``sum_k w(k)``;
- ``max``, ``std``: the largest value and the weighted population standard deviation of the
  pixels under it (:mod:`.statistics`);
- ``com_y``, ``com_x``: the centre of mass of those pixels in detector pixels (:mod:`.com`);
  ``com_magnitude``: the length of its shift from the mean centre of mass (``dpc(...,
  descan="mean")``);
- ``divergence``, ``curl``: those of the centre-of-mass shifts in scan axes (rotation and flip
  of the calibration), per scan pixel, by central differences (:func:`~.dpc.divergence_curl`);
- ``icom``: the integrated centre of mass (:func:`~.dpc.idpc`).

With ``partial=True`` the job's :class:`~napari_4dstem.engine.jobs.Progress` steps carry the image
so far (a :class:`~napari_4dstem.engine.jobs.PartialMap`, NaN where not computed yet), so that on
a file read block by block the image fills in. How each response fills in (:data:`PARTIAL`):

- ``"exact"``: every pattern's value depends on that pattern only (sum, mean, max, std, com_y,
  com_x); the pixels of the blocks read are final;
- ``"neighbours"``: divergence and curl are central differences of the field, so a pixel is
  final once its four neighbours are in (the rows next to the ones still to read stay empty);
  the mean centre of mass the shifts are taken from is a constant, which no derivative sees;
- ``"provisional"``: ``com_magnitude`` is measured from the mean centre of mass of *all* patterns,
  so while the job runs it is shown from the mean of the patterns read so far, and every pixel
  can change until the last block;
- ``None``: ``icom`` integrates the whole field in Fourier space (every pixel depends on every
  other): no image until the last block, only the progress.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ...data.calibration import Calibration
from ...data.results import RealSpaceMap
from ...engine.jobs import Job, PartialMap, eager, job_doc
from .detectors import Detector
from .images import as_datacube

__all__ = ["PARTIAL", "RESPONSES", "detector_response", "exact_after_differences", "iter_detector_response"]

RESPONSES = ("sum", "mean", "max", "std", "com_y", "com_x", "com_magnitude", "icom", "divergence", "curl")
# how the image so far relates to the final one (see the module docstring)
PARTIAL: dict[str, str | None] = {
    "sum": "exact",
    "mean": "exact",
    "max": "exact",
    "std": "exact",
    "com_y": "exact",
    "com_x": "exact",
    "com_magnitude": "provisional",
    "divergence": "neighbours",
    "curl": "neighbours",
    "icom": None,
}


def exact_after_differences(done: np.ndarray) -> np.ndarray:
    """Where a central-difference derivative (``numpy.gradient``) of a map computed on ``done`` is final.

    Parameters
    ----------
    done : bool ndarray ``(scan_y, scan_x)``
        The scan positions computed.

    Returns
    -------
    bool ndarray ``(scan_y, scan_x)``
        ``done`` and its four neighbours done (a neighbour outside the scan counts as done:
        ``numpy.gradient`` takes one-sided differences at the edges, from the pixels inside).
    """
    ok = done.copy()
    ok[1:] &= done[:-1]
    ok[:-1] &= done[1:]
    ok[:, 1:] &= done[:, :-1]
    ok[:, :-1] &= done[:, 1:]
    return ok


def _com_field(com: np.ndarray, done: np.ndarray | None, cal: Calibration) -> RealSpaceMap:
    """The DPC map (shifts from the mean COM, scan axes) of a COM array ``(.., .., 3)``, NaN where not done."""
    from .dpc import dpc

    cy, cx = com[..., 0], com[..., 1]
    if done is not None:
        cy, cx = np.where(done, cy, np.nan), np.where(done, cx, np.nan)
    return dpc(np.stack([cy, cx], axis=-1), calibration=cal, descan="mean")


def _com_partial(response: str, cal: Calibration) -> Callable[[np.ndarray, np.ndarray], PartialMap]:
    """``partial(out, done)`` of the centre-of-mass pass (``out``: com_y, com_x, intensity) for ``response``."""
    from ...errors import DataShapeError
    from .dpc import divergence_curl

    def partial(out: np.ndarray, done: np.ndarray) -> PartialMap:
        if response in ("com_y", "com_x"):
            return PartialMap.of(response, out[..., 0 if response == "com_y" else 1], done, "px")
        try:
            field = _com_field(out, done, cal)
        except DataShapeError:  # too few patterns in for a mean COM
            return PartialMap.of(response, np.full(done.shape, np.nan), np.zeros_like(done), "px")
        if response == "com_magnitude":
            return PartialMap.of(response, field.channel("magnitude"), done, "px")
        if min(done.shape) < 2:
            return PartialMap.of(response, np.full(done.shape, np.nan), np.zeros_like(done), "px")
        dc = divergence_curl(field)
        return PartialMap.of(response, dc.channel(response), exact_after_differences(done), dc.units)

    return partial


@job_doc
def iter_detector_response(
    data: Any,
    detector: Detector,
    response: str = "sum",
    *,
    calibration: Calibration | None = None,
    partial: bool = False,
    scan_chunk: tuple[int, int] | None = None,
    backend: Any = None,
) -> Job[RealSpaceMap]:
    """Job: the ``response`` of ``detector`` at every scan position, one pass over the data.

    Parameters
    ----------
    %(data)s
    detector : Detector
        The virtual detector (its mask's non-zero pixels, weighted by the mask).
    response : str
        One of :data:`RESPONSES` (see the module docstring).
    calibration : Calibration, optional
        Defaults to the DataCube's; its rotation and flip turn the CoM shifts into scan axes
        (divergence, curl, iCoM).
    partial : bool
        Attach the image so far to the Progress steps (``Progress.partial``), as :data:`PARTIAL`
        says: exact pixels, pixels whose neighbours are in, or provisional; ``icom`` attaches
        none.
    %(scan_chunk)s

    Yields
    ------
    %(yields)s

    Returns
    -------
    RealSpaceMap ``(scan_y, scan_x)``
        The generator's return value, float64; ``params["response"]`` is ``response``.

    Raises
    ------
    ValueError
        For an unknown ``response``.
    NonFiniteDataError, DataShapeError, CalibrationError
        As the core call of the response (e.g. iCoM of patterns without intensity).
    """
    from .com import iter_center_of_mass
    from .dpc import divergence_curl, idpc
    from .images import iter_virtual_image
    from .statistics import iter_detector_statistic

    if response not in RESPONSES:
        raise ValueError(f"unknown response {response!r}; use one of {RESPONSES}")
    cube, cal = as_datacube(data, calibration)
    run = {"calibration": cal, "scan_chunk": scan_chunk, "backend": backend}
    if response in ("max", "std"):
        return (yield from iter_detector_statistic(cube, detector, response, partial=partial, **run))
    if response in ("sum", "mean"):
        weight = 1.0 if response == "sum" else max(float(np.sum(detector.render(cube.detector_shape))), 1e-12)
        units = "counts" if response == "sum" else "counts/px"
        name = f"virtual_{detector.kind}" if response == "sum" else "virtual_mean"

        def fill(out, done):
            return PartialMap.of(name, out[..., 0] / weight, done, units)

        image = yield from iter_virtual_image(cube, detector, partial=fill if partial else False, **run)
        params = {**image.params, "response": response}
        return RealSpaceMap(image.data / weight, name=name, units=units, calibration=cal, params=params)
    com = yield from iter_center_of_mass(
        cube, detector=detector, partial=_com_partial(response, cal) if partial and PARTIAL[response] else None, **run
    )
    params = {"detector": detector.to_params(), "response": response}
    if response in ("com_y", "com_x"):
        return RealSpaceMap(com.channel(response), name=response, units="px", calibration=cal, params=params)
    field = _com_field(com.data, None, cal)
    if response == "com_magnitude":
        return RealSpaceMap(field.channel("magnitude"), name=response, units="px", calibration=cal, params=params)
    if response == "icom":
        ph = idpc(field)
        return RealSpaceMap(ph.data, name="icom", units=ph.units, calibration=cal, params=params)
    dc_map = divergence_curl(field)
    return RealSpaceMap(
        dc_map.channel(response), name=f"com_{response}", units=dc_map.units, calibration=cal, params=params
    )


detector_response = eager(iter_detector_response, "The ``response`` of ``detector`` at every scan position.")
