"""Several detectors at once (UX point 9): detectors kept beside the Virtual imaging dock's live one.

Translation only. Each extra detector is a coloured Shapes layer on the diffraction pattern
(``"detector N"``; drag or resize it like the live one) and a map layer ``"virtual: detector N"``
in the Real space dock. Its image is the imaging pipeline's result (``iter_virtual``, one
detector) computed in a worker, newest edit wins, one runner per detector; each detector has
its own response (Sum, Mean, Max, Std, CoM, iCoM, divergence, curl: the dock's
``detector_response``), chosen in a row of the dock, and a new choice recomputes only its
image. Deleting the Shapes layer removes the detector. The Virtual imaging dock offers the extras in its RGB
composite and
keeps them in sessions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..analysis.virtual.detectors import (
    AnnulusDetector,
    Detector,
    DiskDetector,
    GridDetector,
    RectangleDetector,
    WedgeDetector,
)
from ..errors import Napari4DSTEMError
from ._common import LatestRunner
from ._results import results_viewer, show_map

# edge colours of the extra detectors, in turn (the live detector is cyan)
COLORS = ("magenta", "yellow", "lime", "orange", "red", "dodgerblue")
_KINDS = {
    DiskDetector: "Disk",
    AnnulusDetector: "Annulus",
    RectangleDetector: "Rectangle",
    WedgeDetector: "Wedge",
    GridDetector: "Grid",
}


def _image_job(dc, det: Detector, cal, source, response: str = "Sum"):
    """Worker job: the image of one extra detector: for Sum a one-detector pipeline result
    (with its recipe), else the RealSpaceMap of that response."""
    from ..pipelines import VirtualImageParams, iter_virtual

    if response != "Sum":
        from .virtual import detector_response

        return (yield from detector_response(dc, det, cal, response))
    return (
        yield from iter_virtual(
            dc, virtual=VirtualImageParams(detectors=(det,)), calibration=cal, source=source, detectors=(det,)
        )
    )


def image_of(result) -> np.ndarray:
    """The image array of a pipeline result (``.image``) or of a RealSpaceMap."""
    return (result.image if hasattr(result, "image") else result).data


class ExtraDetector:
    """One extra detector: its layer, its runner and its latest result."""

    def __init__(self, name: str, color: str, det: Detector, layer, runner: LatestRunner, combo=None):
        self.name, self.color, self.detector, self.layer, self.runner = name, color, det, layer, runner
        self.combo = combo  # its response choice in the dock
        self.result = None  # the current image: a pipelines.VirtualResult (Sum) or a RealSpaceMap

    @property
    def response(self) -> str:
        return self.combo.currentText() if self.combo is not None else "Sum"

    @property
    def map_name(self) -> str:
        return f"virtual: {self.name}"


class ExtraDetectors:
    """The extra detectors of one Virtual imaging dock (``dock``: its viewer, datacube(),
    layer, status and the ``extras_changed`` hook)."""

    def __init__(self, dock):
        from qtpy.QtWidgets import QFormLayout, QWidget

        self.dock = dock
        self.items: dict[str, ExtraDetector] = {}
        self._count = 0
        # one row per extra detector in the dock: its response
        self.panel = QWidget()
        self._form = QFormLayout(self.panel)
        self._form.setContentsMargins(0, 0, 0, 0)
        dock.viewer.layers.events.removed.connect(self._on_removed)

    # -- adding and removing ------------------------------------------------------------------
    def add(self, det: Detector, response: str = "Sum") -> str:
        """Keep ``det`` as an extra detector with ``response``; returns its name."""
        from qtpy.QtWidgets import QComboBox

        from .virtual import RESPONSES, detector_to_shapes

        if type(det) not in _KINDS:
            raise Napari4DSTEMError(
                "only disk, annulus, rectangle, point, wedge and grid detectors can be added "
                "(masks: one at a time, as the live detector)"
            )
        self._count += 1
        name = f"detector {self._count}"
        color = COLORS[(self._count - 1) % len(COLORS)]
        cal = self.dock.datacube()[1]
        data, types = detector_to_shapes(det)
        layer = self.dock.viewer.add_shapes(
            list(zip(data, types, strict=True)),
            name=name,
            edge_color=color,
            face_color="transparent",
            edge_width=1,
            **cal.napari_kwargs("k"),
        )
        runner = LatestRunner(lambda res, n=name: self._on_image(n, res), self._on_error)
        combo = QComboBox()
        combo.addItems(RESPONSES)
        combo.setCurrentText(response if response in RESPONSES else "Sum")
        combo.setToolTip(f"what the image of {name} shows (recomputes only {name})")
        item = ExtraDetector(name, color, det, layer, runner, combo)
        self.items[name] = item
        self._form.addRow(f"{name} ({color})", combo)
        combo.currentIndexChanged.connect(lambda _=0, n=name: self._on_response(n))
        layer.events.set_data.connect(lambda event=None, n=name: self._on_edited(n))
        self._compute(item)
        self.dock.extras_changed()
        return name

    def _on_removed(self, event=None) -> None:
        gone = [n for n, it in self.items.items() if it.layer not in self.dock.viewer.layers]
        for n in gone:
            item = self.items.pop(n)
            if item.combo is not None:
                self._form.removeRow(item.combo)
            v = results_viewer(self.dock.viewer, create=False)
            if v is not None and item.map_name in v.layers:
                v.layers.remove(item.map_name)
        if gone:
            self.dock.extras_changed()

    def clear(self) -> None:
        for item in list(self.items.values()):
            if item.layer in self.dock.viewer.layers:
                self.dock.viewer.layers.remove(item.layer)  # _on_removed drops it

    # -- computing ------------------------------------------------------------------------------
    def _on_edited(self, name: str) -> None:
        """A drag or resize of the detector's shapes: read them back, recompute if it changed."""
        from .virtual import _same_detector, shapes_to_detector

        item = self.items.get(name)
        if item is None or not len(item.layer.data):
            return
        try:
            det = shapes_to_detector(
                _KINDS[type(item.detector)],
                list(item.layer.data),
                list(item.layer.shape_type),
                self.dock.datacube()[0].detector_shape,
                current=item.detector,
            )
        except (Napari4DSTEMError, ValueError) as e:
            self.dock.status.setText(f"{name}: {e}")
            return
        if _same_detector(det, item.detector):
            return  # napari fires set_data for selections and highlights too
        item.detector = det
        self._compute(item)

    def _on_response(self, name: str) -> None:
        item = self.items.get(name)
        if item is not None:
            self._compute(item)

    def _compute(self, item: ExtraDetector) -> None:
        from ._pipeline import layer_source

        try:
            dc, cal = self.dock.datacube()
        except Napari4DSTEMError as e:
            self.dock.status.setText(str(e))
            return
        item.runner.request(_image_job, dc, item.detector, cal, layer_source(self.dock.layer), item.response)

    def _on_image(self, name: str, result) -> None:
        item = self.items.get(name)
        if item is None:
            return
        item.result = result
        img = result.image if hasattr(result, "image") else result
        layer = show_map(results_viewer(self.dock.viewer), item.map_name, img.data, img.calibration, colormap="gray")
        finite = img.data[np.isfinite(img.data)]
        if finite.size and not getattr(layer, "rgb", False):  # a new response: its own range
            lo, hi = float(finite.min()), float(finite.max())
            layer.contrast_limits = (lo, hi if hi > lo else lo + 1.0)

    def _on_error(self, exc) -> None:
        from .log import log_error

        log_error("Virtual imaging (extra detector)", exc)
        self.dock.status.setText(str(exc) if isinstance(exc, Napari4DSTEMError) else f"{type(exc).__name__}: {exc}")

    # -- what the dock uses ---------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return any(it.runner.busy for it in self.items.values())

    def cache(self) -> dict[str, tuple[Detector, Any]]:
        """``{name: (detector, result)}`` of the extras whose image is in (like the presets; the
        result a VirtualResult for Sum, else a RealSpaceMap: :func:`image_of` gives its array)."""
        return {n: (it.detector, it.result) for n, it in self.items.items() if it.result is not None}

    def params(self) -> list[dict]:
        from ..pipelines import detector_params

        return [detector_params(it.detector) for it in self.items.values()]

    def responses(self) -> list[str]:
        return [it.response for it in self.items.values()]

    def images(self) -> dict[str, np.ndarray]:
        return {n: image_of(r) for n, (_, r) in self.cache().items()}


# the buttons of the toolbar over the diffraction canvas -> the dock's kinds ("Polygon": shapes
# drawn on the pattern, the polygon tool chosen; "Mask file...": a file dialog first)
TOOLBAR_KINDS = {
    "Disk": "Disk",
    "Annulus": "Annulus",
    "Rectangle": "Rectangle",
    "Point": "Point",
    "Wedge": "Wedge",
    "Grid": "Grid",
    "Polygon": "Drawn shapes",
    "Mask file...": "Mask file",
}


class DetectorToolbar:
    """The detector toolbar on the diffraction pattern (UX point 6): one button per kind and Reset.

    Disk, Annulus, Rectangle, Point, Wedge, Grid, Polygon (the dock's "Drawn shapes", with napari's
    polygon tool chosen on the detector layer) and Mask file... (the file dialog).

    A row of checkable buttons placed right above napari's main canvas (``_multiview.attach_canvas_toolbar``,
    the one adapter over napari's internals), synced both ways with the Virtual imaging dock's kind
    list: a button sets the list (the dock then changes the detector, keeping its size, and computes
    its image), a kind chosen in the list or set by a preset, a key or a session checks its button.
    Reset is the dock's ``reset`` (key R: the BF detector on the detected disk, views reset). Where
    napari's layout is not the expected one, the row goes to the top of the dock instead.
    """

    def __init__(self, dock):
        from qtpy.QtWidgets import QButtonGroup, QHBoxLayout, QLabel, QToolButton, QWidget

        self.widget = QWidget()
        lay = QHBoxLayout(self.widget)
        lay.setContentsMargins(4, 2, 4, 2)
        lay.setSpacing(2)
        lay.addWidget(QLabel("detector:"))
        self.group = QButtonGroup(self.widget)
        self.buttons: dict[str, QToolButton] = {}
        self._dock = dock
        tips = {
            "Polygon": "draw polygons (or any shapes) on the pattern: their union is the detector",
            "Mask file...": "a detector mask from a .npy or .tif file of the detector's shape",
        }
        for label, kind in TOOLBAR_KINDS.items():
            b = QToolButton()
            b.setText(label)
            b.setCheckable(True)
            b.setToolTip(tips.get(label, f"{kind} detector on the pattern (keeps the current detector's size)"))
            self.group.addButton(b)
            lay.addWidget(b)
            b.clicked.connect(lambda _=False, k=kind: self._choose(k))
            self.buttons[kind] = b
        self.reset_btn = QToolButton()
        self.reset_btn.setText("Reset")
        self.reset_btn.setToolTip("the BF detector on the detected bright-field disk, views reset (key R)")
        self.reset_btn.clicked.connect(lambda _=False: dock.reset())
        lay.addWidget(self.reset_btn)
        lay.addStretch(1)
        dock.kind_combo.currentTextChanged.connect(self.sync)
        self.sync(dock.kind_combo.currentText())
        from ._multiview import attach_canvas_toolbar

        self.on_canvas = attach_canvas_toolbar(dock.viewer, self.widget, "detector")
        if not self.on_canvas:
            dock.layout().insertWidget(0, self.widget)

    def _choose(self, kind: str) -> None:
        dock = self._dock
        if kind == "Mask file":
            dock.choose_mask_file()  # the kind becomes "Mask file" once a mask is loaded
            self.sync(dock.kind_combo.currentText())
            return
        dock.kind_combo.setCurrentText(kind)
        if kind == "Drawn shapes":
            # the detector layer selected with napari's polygon tool: the user draws at once
            layer = dock._detector_layer()
            dock.viewer.layers.selection.active = layer
            layer.mode = "add_polygon"

    def sync(self, kind: str) -> None:
        """Check the button of ``kind`` (none for a kind the toolbar does not offer)."""
        try:
            self.group.setExclusive(False)
            for k, b in self.buttons.items():
                b.setChecked(k == kind)
            self.group.setExclusive(True)
        except RuntimeError:  # the toolbar was deleted with its window
            pass

    def close(self) -> None:
        """Take the toolbar off the canvas (the dock closes)."""
        if self.on_canvas:
            from ._multiview import detach_canvas_toolbar

            detach_canvas_toolbar(self.widget)
            self.on_canvas = False
