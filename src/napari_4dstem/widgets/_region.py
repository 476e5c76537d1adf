"""Real-space region (UX point 5): a Shapes layer "scan region" on the Real space dock.

Translation only. Draw or edit a rectangle, ellipse or polygon there (several shapes: their
union); the Sum, Mean or Max pattern over the scan positions inside it
(:meth:`~napari_4dstem.data.datacube.DataCube.iter_masked_pattern`, in a worker, newest edit
wins) appears as the Virtual imaging dock's "region pattern" layer, labelled "Σ over N positions".
While a shape is dragged the pattern follows it live when the region is small (its patterns hold
at most :data:`LIVE_MAX_BYTES`); a larger region is computed when the drag ends.
"""

from __future__ import annotations

import numpy as np

from ..errors import Napari4DSTEMError
from ._common import LatestRunner
from ._results import results_viewer

REGION_SHAPES = "scan region"
# a region whose patterns hold more bytes than this is computed on release, not during a drag
LIVE_MAX_BYTES = 64 * 2**20
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
        self.live_requests = 0  # requests made during drags (for the tests and the status)
        from qtpy.QtCore import QTimer

        # drag moves are coalesced into one update per event-loop turn, after napari has moved
        # the shape (its own drag handler may run after ours)
        self._live_timer = QTimer()
        self._live_timer.setSingleShot(True)
        self._live_timer.setInterval(0)
        self._live_timer.timeout.connect(lambda: self.update())
        self.dragging = False  # a mouse drag on the region's layer is under way

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
            self.layer.mouse_drag_callbacks.append(self._drag)
        self._key = None
        self.update()

    def mask(self) -> np.ndarray | None:
        """The union of the region's shapes as a ``(scan_y, scan_x)`` mask (None: no shapes)."""
        if self.layer is None or not len(self.layer.data):
            return None
        shape = tuple(self.dock.datacube()[0].scan_shape)
        return np.asarray(self.layer.to_masks(mask_shape=shape)).any(axis=0)

    def _drag(self, layer, event):
        """napari drag callback: while the mouse drags, updates are live (coalesced, once per
        event-loop turn after napari moved the shape) or, for a large region, wait for the release."""
        self.dragging = True
        try:
            yield
            while event.type == "mouse_move":
                self._live_timer.start()
                yield
        finally:
            self.dragging = False
            self._live_timer.start()  # the shape as released

    def update(self, force: bool = False) -> None:
        """The region or the reduction changed: compute the pattern (not again for the same).

        During a drag (napari emits ``set_data`` at each move) a region too large for a live update
        (:data:`LIVE_MAX_BYTES`) waits for the end of the drag.
        """
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
        n = int(mask.sum())
        if self.dragging:
            frame = int(np.prod(dc.detector_shape)) * np.dtype(dc.dtype).itemsize
            if n * frame > LIVE_MAX_BYTES:
                self.dock.status.setText(f"{n} positions: the region pattern follows when the drag ends")
                return
            self.live_requests += 1
        self._key = key
        self._mask = mask
        self.runner.request(_region_job, dc, mask, reduce)

    def _on_pattern(self, out) -> None:
        from ._common import is_deleted

        if is_deleted(self.dock) or is_deleted(self.dock.layer_combo):
            return  # the dock (or its viewer) closed while the region's job ran
        pattern, n, reduce = out
        self.dock.show_region_pattern(pattern, f"{_LABEL[reduce]} over {n} positions (scan region)")

    def _on_error(self, exc) -> None:
        from .log import log_error

        log_error("Virtual imaging (scan region)", exc)
        self.dock.status.setText(str(exc) if isinstance(exc, Napari4DSTEMError) else f"{type(exc).__name__}: {exc}")
