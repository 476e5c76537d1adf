"""Real-space region (UX point 5): a Shapes layer "scan region" on the Real space dock.

Translation only. Draw or edit a rectangle, ellipse or polygon there (several shapes: their
union); the Sum, Mean or Max pattern over the scan positions inside it
(:meth:`~napari_4dstem.data.datacube.DataCube.iter_masked_pattern`, in a worker, newest edit
wins) appears as the Virtual imaging dock's "region pattern" layer, labelled "Σ over N positions".
"""

from __future__ import annotations

import numpy as np

from ..errors import Napari4DSTEMError
from ._common import LatestRunner
from ._results import results_viewer

REGION_SHAPES = "scan region"
REDUCES = ("Sum", "Mean", "Max")
_LABEL = {"Sum": "Σ", "Mean": "mean", "Max": "max"}


def _region_job(dc, mask: np.ndarray, reduce: str):
    """Worker job: the reduced pattern over the masked positions and their number."""
    pattern = yield from dc.iter_masked_pattern(mask, reduce=reduce.lower())
    return pattern, int(mask.sum()), reduce


class RealSpaceRegion:
    """The real-space region of one Virtual imaging dock (``dock``: viewer, datacube(), layer,
    last_image, region_reduce, status, show_region_pattern)."""

    def __init__(self, dock):
        self.dock = dock
        self.layer = None
        self._mask: np.ndarray | None = None
        self._key = None  # (mask bytes, reduce) of the last request
        self.runner = LatestRunner(self._on_pattern, self._on_error)

    def start(self) -> None:
        """Put a rectangle over the central quarter of the scan on the Real space dock (with the
        current virtual image under it) and show its pattern."""
        try:
            dc, cal = self.dock.datacube()
        except Napari4DSTEMError as e:
            self.dock.status.setText(str(e))
            return
        rv = results_viewer(self.dock.viewer)
        self.dock.realspace.render()  # the live virtual image under the region (a closed dock: again)
        if self.layer is None or self.layer not in rv.layers:
            sy, sx = dc.scan_shape
            rect = np.array([[sy / 4 - 0.5, sx / 4 - 0.5], [3 * sy / 4 - 0.5, 3 * sx / 4 - 0.5]])
            self.layer = rv.add_shapes(
                [rect],
                shape_type="rectangle",
                name=REGION_SHAPES,
                edge_color="orange",
                face_color=[1, 0.65, 0, 0.15],
                edge_width=0.3,
                **cal.napari_kwargs("scan"),
            )
            self.layer.events.set_data.connect(lambda event=None: self.update())
        self._key = None
        self.update()

    def mask(self) -> np.ndarray | None:
        """The union of the region's shapes as a ``(scan_y, scan_x)`` mask (None: no shapes)."""
        if self.layer is None or not len(self.layer.data):
            return None
        shape = tuple(self.dock.datacube()[0].scan_shape)
        return np.asarray(self.layer.to_masks(mask_shape=shape)).any(axis=0)

    def update(self, force: bool = False) -> None:
        """The region or the reduction changed: compute the pattern (not again for the same)."""
        if self.layer is None:
            return
        try:
            dc = self.dock.datacube()[0]
            mask = self.mask()
        except Napari4DSTEMError as e:
            self.dock.status.setText(str(e))
            return
        if mask is None or not mask.any():
            self.dock.status.setText("the region covers no scan position")
            return
        reduce = self.dock.region_reduce.currentText()
        key = (np.packbits(mask).tobytes(), reduce)
        if key == self._key and not force:
            return  # napari fires set_data for selections and highlights too
        self._key = key
        self._mask = mask
        self.runner.request(_region_job, dc, mask, reduce)

    def _on_pattern(self, out) -> None:
        pattern, n, reduce = out
        self.dock.show_region_pattern(pattern, f"{_LABEL[reduce]} over {n} positions (scan region)")

    def _on_error(self, exc) -> None:
        from .log import log_error

        log_error("Virtual imaging (scan region)", exc)
        self.dock.status.setText(str(exc) if isinstance(exc, Napari4DSTEMError) else f"{type(exc).__name__}: {exc}")
