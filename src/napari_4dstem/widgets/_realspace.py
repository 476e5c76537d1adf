"""A small real-space canvas for a dock widget: shows a scan map, picks scan positions.

napari has one canvas per viewer and the main one shows the diffraction pattern, so the
real-space view (virtual image, COM, ...) lives in this vispy canvas inside a dock. Public vispy
API only (no napari internals). Left click or drag picks the scan position; shift + drag selects
a rectangle of scan positions to integrate.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget
from vispy import scene

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
    return (f"min {f.min():.4g}  max {f.max():.4g}  mean {f.mean():.4g}  "
            f"sum {f.sum():.4g}  std {f.std():.4g}  ({f.size} px)")


class RealSpaceView(QWidget):
    """Image of a ``(scan_y, scan_x)`` map with a crosshair at the current scan position.

    Signals
    -------
    positionPicked(int, int)
        ``(iy, ix)`` clicked or dragged to (left button, no modifier).
    regionSelected(int, int, int, int)
        ``(y0, y1, x0, x1)`` half-open rectangle drawn with shift + drag.
    """

    positionPicked = Signal(int, int)
    regionSelected = Signal(int, int, int, int)

    def __init__(self, parent: QWidget | None = None, *, title: str = "real space"):
        super().__init__(parent)
        self._shape = (1, 1)
        self._drag_start: tuple[float, float] | None = None
        self._region_mode = False
        self.canvas = scene.SceneCanvas(keys=None, bgcolor="black", size=(320, 320), parent=self)
        self.view = self.canvas.central_widget.add_view()
        self.image = scene.visuals.Image(
            np.zeros((1, 1), np.float32), parent=self.view.scene, cmap="grays",
            clim=(0.0, 1.0), interpolation="nearest",
        )
        self.cross = scene.visuals.Markers(parent=self.view.scene)
        self.cross.set_data(np.zeros((1, 2)), symbol="cross", size=14, face_color="cyan", edge_color="cyan")
        self.box = scene.visuals.Line(parent=self.view.scene, color="yellow", width=2)
        self.box.visible = False
        self.cross.order, self.box.order = -1, -2
        self.view.camera = scene.PanZoomCamera(aspect=1.0, interactive=False)
        self.view.camera.flip = (False, True, False)  # row 0 at the top, like napari
        self.label = QLabel(title)
        # display controls: visible, display-only (no recompute), applied to the stored image
        self.scale_combo = QComboBox()
        self.scale_combo.addItems(SCALES)
        self.scale_combo.setToolTip("intensity scale of the displayed image (display only)")
        self.range_combo = QComboBox()
        self.range_combo.addItems(list(RANGES))
        self.range_combo.setToolTip("contrast limits from these percentiles of the image")
        self.stats = QLabel("")
        self.stats.setToolTip("statistics of the image values (before the display scale)")
        self._raw: np.ndarray | None = None
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
        layout.addWidget(self.canvas.native)
        layout.addWidget(self.stats)
        self.readout = QLabel("")
        self.readout.setToolTip("the pixel under the mouse and its value")
        layout.addWidget(self.readout)
        self.scale_combo.currentTextChanged.connect(lambda _: self._render())
        self.range_combo.currentTextChanged.connect(lambda _: self._render())
        self.canvas.native.setMinimumHeight(240)
        self.canvas.events.mouse_press.connect(self._on_press)
        self.canvas.events.mouse_move.connect(self._on_move)
        self.canvas.events.mouse_release.connect(self._on_release)

    # -- display ------------------------------------------------------------------------------
    def set_image(self, img: np.ndarray, *, clim: tuple[float, float] | None = None, title: str | None = None):
        img = np.asarray(img, dtype=np.float32)
        self._raw = img
        self._clim = clim
        self.stats.setText(statistics_text(img))
        self._render()
        if title is not None:
            self.label.setText(title)
    def _render(self) -> None:
        """Show the stored image with the chosen scale and percentile range (no recompute)."""
        if self._raw is None:
            return
        if self._raw.ndim == 3:  # an RGB composite, already in 0..1: no scale or range
            self.displayed_clim = (0.0, 1.0)
            self.image.set_data(self._raw)
            self.image.clim = (0.0, 1.0)
            self._fit_camera(self._raw.shape[:2])
            self.canvas.update()
            return
        img = display_transform(self._raw, self.scale_combo.currentText())
        clim = self._clim if self.scale_combo.currentText() == "Lin" else None
        finite = img[np.isfinite(img)]
        if clim is None:
            if finite.size:
                p_lo, p_hi = RANGES[self.range_combo.currentText()]
                lo, hi = np.percentile(finite, [p_lo, p_hi])
                clim = (float(lo), float(hi) if hi > lo else float(lo) + 1.0)
            else:
                clim = (0.0, 1.0)
        self.displayed_clim = clim
        self.image.set_data(np.nan_to_num(img, nan=clim[0]))
        self.image.clim = clim
        self._fit_camera(img.shape)
        self.canvas.update()

    def _fit_camera(self, shape) -> None:
        shape = tuple(shape[:2])
        if shape != self._shape:
            self._shape = shape
            # vispy draws pixel (iy, ix) over [ix, ix + 1) x [iy, iy + 1): the whole image is
            # 0..n (a range of -0.5..n-0.5 cut the last half row and column)
            self.view.camera.set_range(x=(0, shape[1]), y=(0, shape[0]), margin=0)

    def set_position(self, iy: int, ix: int) -> None:
        # on the pixel's centre (vispy's pixel ix spans ix..ix+1)
        self.cross.set_data(np.array([[ix + 0.5, iy + 0.5]], float), symbol="cross", size=14,
                            face_color="cyan", edge_color="cyan")
        self.canvas.update()

    def show_region(self, y0: int, y1: int, x0: int, x1: int, visible: bool = True) -> None:
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], float)
        self.box.set_data(pts)
        self.box.visible = visible
        self.canvas.update()

    # -- mouse --------------------------------------------------------------------------------
    def _to_pixel(self, pos) -> tuple[float, float]:
        """Canvas position -> image coordinates (pixel ``i`` spans ``i .. i + 1``)."""
        tr = self.canvas.scene.node_transform(self.image)
        x, y = tr.map(pos)[:2]
        return float(y), float(x)

    def pixel_to_canvas(self, iy: float, ix: float) -> tuple[float, float]:
        """Canvas position of the centre of pixel ``(iy, ix)`` (for tests and key bindings)."""
        tr = self.canvas.scene.node_transform(self.image)
        x, y = tr.imap([ix + 0.5, iy + 0.5, 0, 1])[:2]
        return float(x), float(y)

    def _clamp(self, y: float, x: float) -> tuple[int, int]:
        """The pixel under image coordinates ``(y, x)``: floor, not round (round picked the
        neighbour for any click on the far half of a pixel)."""
        ny, nx = self._shape
        return int(np.clip(np.floor(y), 0, ny - 1)), int(np.clip(np.floor(x), 0, nx - 1))

    def _on_press(self, event) -> None:
        if event.button != 1:
            return
        y, x = self._to_pixel(event.pos)
        self._region_mode = "Shift" in [k.name for k in event.modifiers]
        self._drag_start = (y, x)
        if not self._region_mode:
            self.positionPicked.emit(*self._clamp(y, x))

    def _on_move(self, event) -> None:
        if self._drag_start is None or not event.is_dragging:
            self._hover(event.pos)  # no button: a readout, the selection stays
            return
        y, x = self._to_pixel(event.pos)
        if self._region_mode:
            self.show_region(*self._region(self._drag_start, (y, x)))
        else:
            self.positionPicked.emit(*self._clamp(y, x))

    def _on_release(self, event) -> None:
        if self._drag_start is None:
            return
        if self._region_mode:
            y, x = self._to_pixel(event.pos)
            y0, y1, x0, x1 = self._region(self._drag_start, (y, x))
            self.show_region(y0, y1, x0, x1)
            self.regionSelected.emit(y0, y1, x0, x1)
        self._drag_start = None

    def _hover(self, pos) -> None:
        """Show the pixel under the mouse and its value (the scan position does not move)."""
        if self._raw is None:
            return
        y, x = self._to_pixel(pos)
        ny, nx = self._shape
        if not (0 <= y < ny and 0 <= x < nx):
            self.readout.setText("")
            return
        iy, ix = int(np.floor(y)), int(np.floor(x))
        v = self._raw[iy, ix]
        value = ", ".join(f"{c:.4g}" for c in v) if np.ndim(v) else f"{float(v):.6g}"
        self.readout.setText(f"scan_y {iy}, scan_x {ix}: {value}")

    def _region(self, a, b) -> tuple[int, int, int, int]:
        (ya, xa), (yb, xb) = self._clamp(*a), self._clamp(*b)
        return min(ya, yb), max(ya, yb) + 1, min(xa, xb), max(xa, xb) + 1
