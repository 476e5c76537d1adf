"""The live image of a dock on the Real space canvas, with its display controls in the dock.

napari has one canvas per viewer and the main one shows the diffraction pattern, so a live
real-space image (the virtual image) is a layer of the second napari canvas, the "Real space"
dock (``_results.results_viewer``), beside the other maps: updated in place (its data set, never
re-added), made again when that dock was closed. A click or drag there moves the scan position
(``_results``); this widget keeps what napari's layer controls lack: a Lin / Log / Sqrt scale and
percentile ranges as visible controls (display only), the statistics of the values, and a
readout of the pixel under the mouse and its value (hovering does not move the scan).
"""

from __future__ import annotations

import weakref

import numpy as np
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

SCALES = ("Lin", "Log", "Sqrt")
# percentile autorange presets: (low, high) percent of the finite values
RANGES = {"0.1-99.9 %": (0.1, 99.9), "1-99 %": (1.0, 99.0), "2-98 %": (2.0, 98.0), "min-max": (0.0, 100.0)}


def display_transform(img: np.ndarray, scale: str) -> np.ndarray:
    """The image as displayed: ``Lin`` as is, ``Log`` log10 of (value - min + 1), ``Sqrt`` the
    square root of (value - min); float32, NaN kept."""
    a = np.asarray(img, dtype=np.float32)
    if scale == "Lin":
        return a
    lo = np.nanmin(a) if np.isfinite(a).any() else 0.0
    if scale == "Log":
        return np.log10(a - lo + 1.0)
    if scale == "Sqrt":
        return np.sqrt(a - lo)
    raise ValueError(f"unknown scale {scale!r}; use one of {SCALES}")


def statistics_text(img: np.ndarray) -> str:
    """min / max / mean / sum / std of the finite values (what the Statistics readout shows)."""
    a = np.asarray(img, dtype=np.float64)
    f = a[np.isfinite(a)]
    if not f.size:
        return "no finite values"
    return (
        f"min {f.min():.4g}  max {f.max():.4g}  mean {f.mean():.4g}  "
        f"sum {f.sum():.4g}  std {f.std():.4g}  ({f.size} px)"
    )


class LiveImage(QWidget):
    """A dock's live image as the layer ``name`` of the Real space canvas of ``main_viewer``,
    with its title, display controls, statistics and hover readout (this widget, in the dock).

    ``set_image`` stores the values and shows them; the controls redraw the stored values (no
    recompute). An RGB image (``(ny, nx, 3)`` in 0..1) goes to the layer ``name + " RGB"``, shown
    over the live one until the next live image.
    """

    def __init__(self, main_viewer, name: str = "virtual image", parent: QWidget | None = None):
        super().__init__(parent)
        self.main_viewer = main_viewer
        self.name = name
        self.rgb_name = f"{name} RGB"
        self._raw: np.ndarray | None = None
        self._cal = None
        self._clim: tuple[float, float] | None = None
        self._hooked: weakref.WeakSet = weakref.WeakSet()  # real-space viewers with our hover hook
        self.displayed_clim: tuple[float, float] | None = None
        self.label = QLabel(f"{name}: on the Real space canvas")
        self.label.setWordWrap(True)
        self.scale_combo = QComboBox()
        self.scale_combo.addItems(SCALES)
        self.scale_combo.setToolTip("intensity scale of the image on the Real space canvas (display only)")
        self.range_combo = QComboBox()
        self.range_combo.addItems(list(RANGES))
        self.range_combo.setToolTip("contrast limits from these percentiles of the image")
        self.stats = QLabel("")
        self.stats.setToolTip("statistics of the image values (before the display scale)")
        self.readout = QLabel("")
        self.readout.setToolTip("the scan pixel under the mouse on the Real space canvas and its value")
        controls = QHBoxLayout()
        controls.addWidget(QLabel("scale"))
        controls.addWidget(self.scale_combo)
        controls.addWidget(QLabel("range"))
        controls.addWidget(self.range_combo)
        controls.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addLayout(controls)
        layout.addWidget(self.stats)
        layout.addWidget(self.readout)
        self.scale_combo.currentTextChanged.connect(lambda _: self.render())
        self.range_combo.currentTextChanged.connect(lambda _: self.render())

    # -- the layer ------------------------------------------------------------------------------
    def viewer(self, create: bool = True):
        from ._results import results_viewer

        return results_viewer(self.main_viewer, create=create)

    @property
    def layer(self):
        """The live image's layer on the Real space canvas (None before the first image, or
        while that dock is closed)."""
        rv = self.viewer(create=False)
        return rv.layers[self.name] if rv is not None and self.name in rv.layers else None

    def set_image(
        self, img: np.ndarray, cal, *, clim: tuple[float, float] | None = None, title: str | None = None
    ) -> None:
        """Show ``img`` (``(scan_y, scan_x)``, or RGB) with the scan calibration ``cal``."""
        self._raw = np.asarray(img, dtype=np.float32)
        self._cal = cal
        self._clim = clim
        self.stats.setText(statistics_text(self._raw))
        if title is not None:
            self.label.setText(title)
        self.render()

    def render(self) -> None:
        """Draw the stored image with the chosen scale and percentile range (no recompute)."""
        from ._results import show_map

        if self._raw is None:
            return
        rv = self.viewer()
        self._hook(rv)
        if self._raw.ndim == 3:  # an RGB composite, already in 0..1: no scale or range
            self.displayed_clim = (0.0, 1.0)
            layer = show_map(rv, self.rgb_name, self._raw, self._cal, rgb=True)
            layer.visible = True
            return
        img = display_transform(self._raw, self.scale_combo.currentText())
        clim = self._clim if self.scale_combo.currentText() == "Lin" else None
        if clim is None:
            finite = img[np.isfinite(img)]
            if finite.size:
                p_lo, p_hi = RANGES[self.range_combo.currentText()]
                lo, hi = np.percentile(finite, [p_lo, p_hi])
                clim = (float(lo), float(hi) if hi > lo else float(lo) + 1.0)
            else:
                clim = (0.0, 1.0)
        self.displayed_clim = clim
        if self.rgb_name in rv.layers:
            rv.layers[self.rgb_name].visible = False  # a new live image: it is the one shown
        show_map(rv, self.name, img, self._cal, colormap="gray", contrast_limits=clim)

    # -- hover readout --------------------------------------------------------------------------
    def _hook(self, rv) -> None:
        if rv in self._hooked:
            return
        self._hooked.add(rv)
        me = weakref.ref(self)

        def on_move(viewer, event):
            w = me()
            if w is not None:
                try:
                    w._hover(viewer, event.position)
                except RuntimeError:  # the dock was deleted
                    pass

        rv.mouse_move_callbacks.append(on_move)

    def _hover(self, rv, position) -> None:
        """Show the scan pixel under the mouse and its value (the scan position does not move)."""
        layer = rv.layers[self.name] if self.name in rv.layers else None
        if self._raw is None or layer is None or self._raw.ndim != 2:
            return
        y, x = np.asarray(layer.world_to_data(position))[-2:]
        iy, ix = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
        ny, nx = self._raw.shape
        if not (0 <= iy < ny and 0 <= ix < nx):
            self.readout.setText("")
            return
        self.readout.setText(f"scan_y {iy}, scan_x {ix}: {float(self._raw[iy, ix]):.6g}")
