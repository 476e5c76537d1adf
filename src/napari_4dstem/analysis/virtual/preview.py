"""Binned previews for interactive virtual imaging.

While a detector is dragged, the image is first computed on a copy of the data binned
``factor x factor`` on the detector (``factor**2`` times fewer bytes), then exactly. The preview
detector is the block mean of the full-resolution mask, so by linearity the preview equals the
exact image wherever the mask is constant within each block, and differs only along its edges.
"""

from __future__ import annotations

import numpy as np

from ...data.datacube import DataCube
from ...engine.jobs import Job, Progress
from .detectors import Detector, MaskDetector

__all__ = ["binned_detector", "iter_preview_cube"]


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
