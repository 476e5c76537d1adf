"""The live image of a dock on the Real space canvas, with its display controls in the dock.

napari has one canvas per viewer and the main one shows the diffraction pattern, so a live
real-space image (the virtual image) is a layer of the second napari canvas, the "Real space"
dock (``_results.results_viewer``), beside the other maps: updated in place (its data set, never
re-added), made again when that dock was closed. A click or drag there moves the scan position
(``_results``); this widget keeps what napari's layer controls lack: a Lin / Log / Sqrt / Power
scale and percentile ranges as visible controls (display only), a histogram of the displayed
values with the contrast limits as two handles to drag, the statistics of the values, and a
readout of the pixel under the mouse and its value (hovering does not move the scan).

Latch (UX point 12): unticked, every new image (a detector moved, a preset, a lazy image filling
in) is autoranged with the chosen percentile preset; ticked, the contrast limits shown when it
was ticked (a preset's, or dragged with the handles or set in napari's controls since) stay for
every new image, so images can be compared at the same limits while the detector moves. A
preset chosen while latched is taken from the current image and latched; unticking autoranges
the current image at once. Limits are latched per scale (Lin and Power share theirs: the same
values on screen), since Log or Sqrt values live on another axis.

Complex maps (an object's transmission function, a complex FFT): napari shows no complex layer,
so :func:`show_complex_map` shows one part (phase, amplitude, real or imaginary) and keeps the
complex values in the layer's metadata (``COMPLEX_KEY``); the hover readout reads the topmost
visible image under the mouse and gives ``|z|`` and ``phi`` for such a layer. :class:`PatternStats`
is the Statistics line of the diffraction view (the pattern at the scan position), computed in a
worker after the scan settles.

Power is napari's own ``gamma`` of the layer (applied by the shader after the contrast limits:
nothing recomputed, no data sent again); dragging a handle sets the layer's ``contrast_limits``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
from qtpy.QtCore import QPointF, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QGridLayout, QLabel, QVBoxLayout, QWidget

SCALES = ("Lin", "Log", "Sqrt", "Power")
COMPLEX_KEY = "napari_4dstem_complex"  # layer.metadata key of a complex map's values
COMPLEX_PARTS = {"phase": np.angle, "amplitude": np.abs, "real": np.real, "imaginary": np.imag}
PATTERN_STATS_DELAY_MS = 80  # the pattern statistics wait for the scan to settle this long
HIST_BINS = 64
# a live image this large (pixels) without a DisplayPrep made in its worker is prepared in a worker
# of the dock (display transform, percentiles, histogram, statistics: 60-200 ms of GUI CPU for a
# 1024 x 1024 scan under load, #15) and drawn when ready; smaller ones are drawn at once
PREPARE_ASYNC_PX = 2**18
# percentile autorange presets: (low, high) percent of the finite values
RANGES = {"0.1-99.9 %": (0.1, 99.9), "1-99 %": (1.0, 99.0), "2-98 %": (2.0, 98.0), "min-max": (0.0, 100.0)}


def scale_group(scale: str) -> str:
    """The scales whose displayed values are the same (``Lin`` and ``Power``: the exponent is the
    shader's), so contrast limits latched for one hold for the other."""
    return "Lin" if scale in ("Lin", "Power") else scale


def display_transform(img: np.ndarray, scale: str) -> np.ndarray:
    """The image as displayed: ``Lin`` (and ``Power``, whose exponent is the layer's gamma) as
    is, ``Log`` log10 of (value - min + 1), ``Sqrt`` the square root of (value - min); float32,
    NaN kept."""
    a = np.asarray(img, dtype=np.float32)
    if scale in ("Lin", "Power"):
        return a
    lo = np.nanmin(a) if np.isfinite(a).any() else 0.0
    if scale == "Log":
        return np.log10(a - lo + 1.0)
    if scale == "Sqrt":
        return np.sqrt(a - lo)
    raise ValueError(f"unknown scale {scale!r}; use one of {SCALES}")


def percentile_clim(img: np.ndarray, range_text: str) -> tuple[float, float]:
    """Contrast limits of displayed values ``img`` from the percentile preset ``range_text``
    (a key of ``RANGES``) of its finite values; ``(0, 1)`` when none is finite."""
    finite = img[np.isfinite(img)]
    if not finite.size:
        return (0.0, 1.0)
    p_lo, p_hi = RANGES[range_text]
    lo, hi = np.percentile(finite, [p_lo, p_hi])
    return (float(lo), float(hi) if hi > lo else float(lo) + 1.0)


@dataclass(frozen=True, eq=False)
class DisplayPrep:
    """An image made ready to show with a dock's display settings ``key``
    (:meth:`LiveImage.display_key`), off the GUI thread (:func:`prepare_display`): the displayed
    values, their contrast limits, histogram and the statistics line of the values."""

    key: tuple
    shown: np.ndarray
    clim: tuple[float, float]
    hist: tuple[np.ndarray, np.ndarray]
    stats: str


def prepare_display(raw: np.ndarray, key: tuple, given: tuple[float, float] | None = None) -> DisplayPrep:
    """What :class:`LiveImage` computes to show ``raw`` with the display settings ``key`` (scale,
    range preset, latch ticked, latched limits), for a worker: the display transform, the
    contrast limits (latched, else ``given`` in Lin/Power under the default preset, else the
    preset's percentiles), the histogram and the statistics. On a 1024 x 1024 scan this is tens of
    milliseconds of numpy (a percentile in Log): the GUI thread then only sets the layer's data."""
    scale, range_text, latched, latched_clim = key
    raw = np.asarray(raw, dtype=np.float32)
    shown = display_transform(raw, scale)
    clim = latched_clim if latched else None
    if clim is None and scale in ("Lin", "Power") and range_text == next(iter(RANGES)):
        clim = given
    if clim is None:
        clim = percentile_clim(shown, range_text)
    clim = (float(clim[0]), float(clim[1]))
    return DisplayPrep(key, shown, clim, histogram(shown), statistics_text(raw))


def _filled(raw: np.ndarray, under: np.ndarray) -> np.ndarray:
    """``raw`` with ``under`` where it is NaN (float32; ``raw`` when the shapes differ)."""
    if under.shape != raw.shape:
        return raw
    return np.where(np.isnan(raw), under, raw).astype(np.float32)


def _prepare_for(raw: np.ndarray, key: tuple, given, under=None) -> tuple[np.ndarray, np.ndarray, DisplayPrep]:
    """Worker: ``(raw, filled, prepare_display(filled, key, given))``: the image it was asked for
    (to match), that image filled in from ``under`` where NaN (else itself), and its display."""
    filled = raw if under is None else _filled(raw, under)
    return raw, filled, prepare_display(filled, key, given)


def statistics_text(img: np.ndarray) -> str:
    """min / max / mean / sum / std of the finite values (what the Statistics readout shows); for
    complex values, of ``|z|`` (and the mean phase of the sum)."""
    img = np.asarray(img)
    if np.iscomplexobj(img):
        z = img.astype(np.complex128)[np.isfinite(img)]
        if not z.size:
            return "no finite values"
        return f"|z|: {statistics_text(np.abs(z))}, phase of the sum {np.angle(z.sum()):.4f} rad"
    a = np.asarray(img, dtype=np.float64)
    f = a[np.isfinite(a)]
    if not f.size:
        return "no finite values"
    return (
        f"min {f.min():.4g}  max {f.max():.4g}  mean {f.mean():.4g}  "
        f"sum {f.sum():.4g}  std {f.std():.4g}  ({f.size} px)"
    )


def value_text(v) -> str:
    """A pixel value for the readout: ``|z|`` and ``phi`` (rad and degrees) for a complex one."""
    if np.iscomplexobj(v):
        z = complex(v)
        phi = float(np.angle(z))
        return f"|z| {abs(z):.6g}, phi {phi:.4f} rad ({np.degrees(phi):.1f} deg)"
    return f"{float(v):.6g}"


def show_complex_map(viewer, name: str, z: np.ndarray, cal, *, part: str = "phase", **kwargs):
    """Show a complex scan map ``z`` on ``viewer`` as its ``part`` (phase in rad, amplitude, real
    or imaginary: napari shows no complex layer) and keep ``z`` in the layer's metadata, where
    the hover readout finds it (``|z|`` and ``phi``)."""
    from ._results import show_map

    if part not in COMPLEX_PARTS:
        raise ValueError(f"unknown part {part!r}; use one of {tuple(COMPLEX_PARTS)}")
    z = np.asarray(z)
    shown = COMPLEX_PARTS[part](z).astype(np.float32)
    layer = show_map(viewer, name, shown, cal, **kwargs)
    layer.metadata = {**dict(layer.metadata), COMPLEX_KEY: z, "complex_part": part}
    return layer


def drop_complex(layer) -> None:
    """Forget the complex values of a layer whose data was replaced by a real map (a snapshot
    of a running reconstruction): the readout gives the shown value again."""
    if COMPLEX_KEY in layer.metadata:
        layer.metadata = {k: v for k, v in layer.metadata.items() if k not in (COMPLEX_KEY, "complex_part")}


def layer_value(layer, position) -> tuple[tuple[int, int], object] | None:
    """``((iy, ix), value)`` of a 2D image layer at world ``position`` (the complex value of a
    complex map), None outside it."""
    data = layer.metadata.get(COMPLEX_KEY) if hasattr(layer, "metadata") else None
    data = layer.data if data is None else data
    if getattr(layer, "rgb", False) or np.ndim(data) != 2:
        return None
    y, x = np.asarray(layer.world_to_data(position))[-2:]
    iy, ix = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
    ny, nx = np.shape(data)
    if not (0 <= iy < ny and 0 <= ix < nx):
        return None
    return (iy, ix), np.asarray(data[iy, ix])[()]


def calibrated_text(layer, iy: int, ix: int) -> str:
    """``" (y, x unit)"``: the centre of scan pixel ``(iy, ix)`` of ``layer`` in its calibrated
    units ("" for a layer in pixels)."""
    unit = f"{layer.units[-1]:~P}" if getattr(layer, "units", None) else "pixel"
    if unit in ("pixel", "px", ""):
        return ""
    sy, sx = (float(v) for v in layer.scale[-2:])
    ty, tx = (float(v) for v in layer.translate[-2:])
    return f" ({ty + iy * sy:.4g}, {tx + ix * sx:.4g} {unit})"


def _pattern_stats_job(data, pos: tuple[int, int]) -> tuple[tuple[int, int], str]:
    """Worker: the statistics of the pattern at ``pos`` (a lazy layer reads it here)."""
    return pos, statistics_text(np.asarray(data[pos[0], pos[1]]))


class PatternStats(QLabel):
    """The Statistics line of the diffraction view: min / max / mean / sum / std of the pattern at
    the scan position, computed in a worker (newest wins) once the scan has settled for
    ``PATTERN_STATS_DELAY_MS`` (a pattern of a lazy file is read there, not on the GUI thread)."""

    def __init__(self, viewer, layer_of, parent: QWidget | None = None):
        from qtpy.QtCore import QTimer

        from ._common import LatestRunner

        super().__init__("", parent)
        self.viewer = viewer
        self.layer_of = layer_of  # () -> the 4D layer shown, or None
        self.setWordWrap(True)
        self.setToolTip("statistics of the diffraction pattern at the scan position")
        self.shown_for: tuple[int, int] | None = None
        self._runner = LatestRunner(self._show, self._error)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(PATTERN_STATS_DELAY_MS)
        self._timer.timeout.connect(self.request)
        me = weakref.ref(self)

        def on_step(event=None):
            w = me()
            if w is not None:
                try:
                    w._timer.start()
                except RuntimeError:  # the dock was deleted
                    viewer.dims.events.current_step.disconnect(on_step)

        self._on_step = on_step
        viewer.dims.events.current_step.connect(on_step)

    @property
    def busy(self) -> bool:
        return self._runner.busy or self._timer.isActive()

    def request(self) -> None:
        from ._common import scan_position

        layer = self.layer_of()
        if layer is None or layer.ndim != 4 or self.viewer.dims.ndim < 4:
            return
        self._runner.request(_pattern_stats_job, layer.data, scan_position(self.viewer, layer))

    def _show(self, out) -> None:
        pos, text = out
        self.shown_for = pos
        self.setText(f"pattern {pos}: {text}")

    def _error(self, exc) -> None:
        self.setText(f"pattern statistics: {type(exc).__name__}: {exc}")

    def close_runner(self) -> None:
        self._timer.stop()
        try:
            self.viewer.dims.events.current_step.disconnect(self._on_step)
        except (TypeError, ValueError, RuntimeError):
            pass
        self._runner.close()


def histogram(img: np.ndarray, bins: int = HIST_BINS) -> tuple[np.ndarray, np.ndarray]:
    """``(counts, edges)`` of the finite values of ``img`` in ``bins`` equal bins (numpy's)."""
    f = np.asarray(img)[np.isfinite(img)]
    if not f.size:
        return np.zeros(bins, np.int64), np.linspace(0.0, 1.0, bins + 1)
    lo, hi = float(f.min()), float(f.max())
    return np.histogram(f, bins=bins, range=(lo, hi if hi > lo else lo + 1.0))


class ClimHistogram(QWidget):
    """A histogram of the displayed values (log counts) with the contrast limits as two vertical
    handles: drag one (or click near it) to move that limit; ``clim_changed(lo, hi)`` follows.
    Painted with QPainter (no plot library): a redraw is well under a millisecond."""

    clim_changed = Signal(float, float)
    GRAB_PX = 8  # a press this close to a handle takes it

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setMinimumHeight(56)
        self.setToolTip("histogram of the displayed values; drag the two lines to set the contrast limits")
        self.counts = np.zeros(HIST_BINS, np.int64)
        self.edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
        self.clim = (0.0, 1.0)
        self._drag: int | None = None  # 0: low handle, 1: high handle

    def set_data(self, counts: np.ndarray, edges: np.ndarray, clim: tuple[float, float]) -> None:
        self.counts, self.edges = np.asarray(counts), np.asarray(edges, dtype=float)
        self.clim = (float(clim[0]), float(clim[1]))
        self.update()

    def set_clim(self, clim: tuple[float, float]) -> None:
        self.clim = (float(clim[0]), float(clim[1]))
        self.update()

    # value <-> widget x: the span of the histogram and the limits together
    def _span(self) -> tuple[float, float]:
        lo = min(float(self.edges[0]), self.clim[0])
        hi = max(float(self.edges[-1]), self.clim[1])
        return lo, hi if hi > lo else lo + 1.0

    def value_to_x(self, v: float) -> float:
        lo, hi = self._span()
        return (float(v) - lo) / (hi - lo) * max(self.width() - 1, 1)

    def x_to_value(self, x: float) -> float:
        lo, hi = self._span()
        return lo + float(x) / max(self.width() - 1, 1) * (hi - lo)

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        w, h = self.width(), self.height()
        p.fillRect(0, 0, w, h, QColor(38, 41, 48))
        c = np.log1p(self.counts.astype(float))
        top = c.max() if c.size and c.max() > 0 else 1.0
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(170, 170, 170))
        for k, v in enumerate(c):
            x0, x1 = self.value_to_x(self.edges[k]), self.value_to_x(self.edges[k + 1])
            bh = (h - 2) * v / top
            p.drawRect(int(x0), int(h - bh), max(int(x1) - int(x0), 1), int(bh))
        for v, color in zip(self.clim, ("dodgerblue", "orange"), strict=True):
            p.setPen(QPen(QColor(color), 2))
            x = self.value_to_x(v)
            p.drawLine(QPointF(x, 0), QPointF(x, h))
        p.end()

    def _pos_x(self, event) -> float:
        pos = event.position() if hasattr(event, "position") else event.pos()
        return float(pos.x())

    def mousePressEvent(self, event) -> None:
        x = self._pos_x(event)
        d = [abs(x - self.value_to_x(v)) for v in self.clim]
        k = int(np.argmin(d))
        self._drag = k if d[k] <= self.GRAB_PX else (0 if x < self.value_to_x(sum(self.clim) / 2) else 1)
        self._move(x)

    def mouseMoveEvent(self, event) -> None:
        if self._drag is not None:
            self._move(self._pos_x(event))

    def mouseReleaseEvent(self, event) -> None:
        self._drag = None

    def _move(self, x: float) -> None:
        v = self.x_to_value(min(max(x, 0.0), self.width() - 1.0))
        lo, hi = self.clim
        tiny = 1e-6 * max(abs(hi - lo), 1e-12)
        if self._drag == 0:
            lo = min(v, hi - tiny)
        else:
            hi = max(v, lo + tiny)
        self.set_clim((lo, hi))
        self.clim_changed.emit(lo, hi)


class LiveImage(QWidget):
    """A dock's live image as the layer ``name`` of the Real space canvas of ``main_viewer``,
    with its title, display controls, statistics and hover readout (this widget, in the dock).

    ``set_image`` stores the values and shows them; the controls redraw the stored values (no
    recompute). An RGB image (``(ny, nx, 3)`` in 0..1) goes to the layer ``name + " RGB"``, shown
    over the live one until the next live image.

    A *cover* (``set_cover``: the Virtual imaging dock's sum image, filling in over its live
    image) is a second image the dock draws directly over the live one, with the same display
    controls. The controls, the histogram, the statistics, the exports (``shown_raw``,
    ``shown_layer``) act on the image the canvas shows: the topmost visible of the dock's layers
    (``shown_name``, as the hover readout reads the topmost visible image), so a control used
    while the cover is shown changes the cover, not a live image hidden under it. Scale, power
    and percentile range are display settings of the dock and redraw both.
    """

    def __init__(self, main_viewer, name: str = "virtual image", parent: QWidget | None = None):
        super().__init__(parent)
        self.main_viewer = main_viewer
        self.name = name
        self.rgb_name = f"{name} RGB"
        self._raw: np.ndarray | None = None
        self._cal = None
        self._clim: tuple[float, float] | None = None
        # the cover: {"name", "raw", "cal", "clim"} (None: none), and each image's display as
        # last drawn, name -> (displayed values, contrast limits), for the histogram of the shown one
        self._cover: dict | None = None
        self._live_prep: DisplayPrep | None = None  # the live image made ready in a worker
        self._prep_runner = None  # LatestRunner preparing large live images (made on first use)
        # the large live image being prepared (``_raw`` until drawn; None: none): only its own
        # result is drawn, and nothing draws it on the GUI thread meanwhile (NaN rows, 1 Mpx transform)
        self._pending: np.ndarray | None = None
        self._displayed: dict[str, tuple[np.ndarray, tuple[float, float]]] = {}
        self._latched: dict[str, tuple[float, float]] = {}  # scale group -> latched contrast limits
        self._hooked: weakref.WeakSet = weakref.WeakSet()  # real-space viewers with our hover hook
        self._hooked_layers: weakref.WeakSet = weakref.WeakSet()  # layers whose contrast the histogram follows
        self._shown_scale = "Lin"
        self.displayed_clim: tuple[float, float] | None = None
        self.label = QLabel(f"{name}: on the Real space canvas")
        self.label.setWordWrap(True)
        self.scale_combo = QComboBox()
        self.scale_combo.addItems(SCALES)
        self.scale_combo.setToolTip("intensity scale of the image on the Real space canvas (display only)")
        self.range_combo = QComboBox()
        self.range_combo.addItems(list(RANGES))
        self.range_combo.setToolTip("contrast limits from these percentiles of the image")
        self.latch = QCheckBox("latch")
        self.latch.setToolTip(
            "keep the contrast limits shown now for the next images (detector moves, presets); "
            "unticked, each new image is autoranged with the percentile preset"
        )
        self.gamma = QDoubleSpinBox()
        self.gamma.setRange(0.05, 10.0)
        self.gamma.setDecimals(2)
        self.gamma.setSingleStep(0.1)
        self.gamma.setValue(0.5)
        self.gamma.setKeyboardTracking(False)
        self.gamma.setEnabled(False)
        self.gamma.setToolTip("exponent of the Power scale (napari's gamma: display only)")
        self.histogram = ClimHistogram()
        self.histogram.clim_changed.connect(self._on_handles)
        self.stats = QLabel("")
        self.stats.setWordWrap(True)  # one line of five numbers widened the docks past the screen
        self.stats.setToolTip("statistics of the image values (before the display scale)")
        self.readout = QLabel("")
        self.readout.setToolTip("the scan pixel under the mouse on the Real space canvas and its value")
        # two short lines (scale, power / range, latch): one line made the docks wider than a
        # 1920 px screen beside the Real space dock
        controls = QGridLayout()
        controls.addWidget(QLabel("scale"), 0, 0)
        controls.addWidget(self.scale_combo, 0, 1)
        controls.addWidget(QLabel("power"), 0, 2)
        controls.addWidget(self.gamma, 0, 3)
        controls.addWidget(QLabel("range"), 1, 0)
        controls.addWidget(self.range_combo, 1, 1)
        controls.addWidget(self.latch, 1, 2, 1, 2)
        controls.setColumnStretch(4, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addLayout(controls)
        layout.addWidget(self.histogram)
        layout.addWidget(self.stats)
        layout.addWidget(self.readout)
        self.scale_combo.currentTextChanged.connect(self._on_scale)
        self.range_combo.currentTextChanged.connect(lambda _: self._on_range())
        self.latch.toggled.connect(self._on_latch)
        self.gamma.valueChanged.connect(self._on_gamma)
        # the display settings as last set, a plain tuple a worker may read (display_key)
        self.display_snapshot: tuple = self.display_key()

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

    # -- the image shown: the topmost visible of the dock's layers --------------------------------
    @property
    def shown_name(self) -> str | None:
        """The name of the dock's image the canvas shows: the topmost visible layer of the live
        image, its RGB composite and the cover (None when none of them is shown)."""
        rv = self.viewer(create=False)
        if rv is None:
            return None
        ours = {self.name, self.rgb_name} | ({self._cover["name"]} if self._cover is not None else set())
        for layer in reversed(list(rv.layers)):
            if layer.name in ours and layer.visible:
                return layer.name
        return None

    @property
    def shown_layer(self):
        """The layer of the image the canvas shows (``shown_name``), else the live one."""
        rv = self.viewer(create=False)
        name = self.shown_name or self.name
        return rv.layers[name] if rv is not None and name in rv.layers else None

    @property
    def shown_raw(self) -> np.ndarray | None:
        """The values of the image the canvas shows (the cover's, else the live image's; an RGB
        composite's 0..1 channels)."""
        if self._cover is not None and self.shown_name == self._cover["name"]:
            return self._cover["raw"]
        return self._raw

    @property
    def cover_shown(self) -> bool:
        """Whether the canvas shows the cover (``set_cover``) over the live image."""
        return self._cover is not None and self.shown_name == self._cover["name"]

    def set_image(
        self,
        img: np.ndarray,
        cal,
        *,
        clim: tuple[float, float] | None = None,
        title: str | None = None,
        prepared: DisplayPrep | None = None,
        under: np.ndarray | None = None,
    ) -> None:
        """Show ``img`` (``(scan_y, scan_x)``, or RGB) with the scan calibration ``cal``;
        ``under``: an image of the same shape shown where ``img`` is NaN (a preview under the
        rows still to come).

        ``prepared``: ``img`` made ready in a worker with the current display settings (used
        while they hold). A 2D image of ``PREPARE_ASYNC_PX`` pixels or more without one is made
        ready in a worker of this widget and drawn when it is (the newest image wins): its
        display transform, limits, histogram and statistics no longer hold the GUI thread."""
        raw = np.asarray(img, dtype=np.float32)
        large = raw.ndim == 2 and raw.size >= PREPARE_ASYNC_PX
        if under is not None and not large:
            raw = _filled(raw, under)
            under = None
        self._raw = raw
        self._pending = None
        self._cal = cal
        self._clim = clim
        if title is not None:
            self.label.setText(title)
        fresh = prepared is not None and prepared.key == self.display_key() and under is None
        self._live_prep = prepared if fresh and raw.ndim == 2 else None
        if self._live_prep is None and large:
            self._prepare_live(raw, under)
            return
        if not self.cover_shown:
            text = self._live_prep.stats if self._live_prep is not None else statistics_text(raw)
            self.stats.setText(f"real space: {text}")
        self._draw_live()

    def _prepare_live(self, raw: np.ndarray, under: np.ndarray | None = None) -> None:
        """Prepare the large live image ``raw`` (filled in from ``under`` where NaN) in a worker;
        drawn by ``_on_live_prepared``."""
        from ._common import LatestRunner

        if self._prep_runner is None:
            self._prep_runner = LatestRunner(self._on_live_prepared, self._on_prepare_error)
        self._pending = raw
        self._prep_runner.request(_prepare_for, raw, self.display_key(), self._clim, under)

    def _on_live_prepared(self, got) -> None:
        raw, filled, prep = got
        if raw is not self._raw or raw is not self._pending:
            return  # a newer image came meanwhile (its own preparation follows), or it was dropped
        self._raw = filled
        if prep.key != self.display_key():  # the settings changed meanwhile: again with these
            self._prepare_live(filled)
            return
        self._pending = None
        self._live_prep = prep
        if not self.cover_shown:
            self.stats.setText(f"real space: {prep.stats}")
        self._draw_live()

    def _on_prepare_error(self, exc) -> None:
        self.stats.setText(f"real space: {exc}")

    def drop_pending(self) -> None:
        """The large live image being prepared is never drawn (its dock closed, another file
        picked); the canvas keeps what it shows."""
        if self._pending is not None and self._pending is self._raw:
            self._raw, self._live_prep = None, None
        self._pending = None

    @property
    def preparing(self) -> bool:
        """Whether a large live image is being made ready in a worker (not drawn yet)."""
        return self._prep_runner is not None and self._prep_runner.busy

    def display_key(self) -> tuple:
        """The display settings an image is drawn with: ``(scale, range preset, latch ticked,
        latched limits of the scale or None)`` (what :func:`prepare_display` takes)."""
        scale = self.scale_combo.currentText()
        latched = self.latch.isChecked()
        clim = self._latched.get(scale_group(scale)) if latched else None
        return (scale, self.range_combo.currentText(), latched, clim)

    def _snap(self) -> None:
        self.display_snapshot = self.display_key()

    def set_cover(
        self, name: str, img: np.ndarray, cal, *, clim: tuple[float, float], prepared: DisplayPrep | None = None
    ) -> object:
        """Show ``img`` as the layer ``name`` directly over the live image, drawn with the dock's
        display controls (its values kept, ``clim`` its contrast limits in Lin); returns the layer.
        The layer is updated in place on the same grid (shape, scale, origin, units), else made
        again (another file's grid). ``prepared``: ``img`` made ready by a worker
        (:func:`prepare_display` with ``display_snapshot``); used when the settings are still
        those (the GUI thread then computes nothing), else the image is prepared here."""
        raw = np.asarray(img, dtype=np.float32)
        self._cover = {"name": name, "raw": raw, "cal": cal, "clim": clim, "prep": prepared}
        layer = self._draw_cover(show=True)
        if self.cover_shown:
            fresh = prepared is not None and prepared.key == self.display_key()
            self.stats.setText(f"real space: {prepared.stats if fresh else statistics_text(raw)}")
        return layer

    def drop_cover(self, remove: bool = False) -> None:
        """The cover is no longer shown: its layer hidden (kept in the layer list, and shown again
        by its eye it is the shown image again), or with ``remove`` removed and forgotten."""
        if self._cover is None:
            return
        rv = self.viewer(create=False)
        name = self._cover["name"]
        layer = rv.layers[name] if rv is not None and name in rv.layers else None
        if remove:
            self._cover = None
            self._displayed.pop(name, None)
            if layer is not None:
                rv.layers.remove(layer)
        elif layer is not None and layer.visible:
            layer.visible = False
        self._sync_shown()

    def render(self) -> None:
        """Draw the stored images (the live one and the cover) with the chosen scale and
        percentile range (no recompute). The shown one first: latched, its limits are the ones
        latched. A large live image still being prepared is not drawn here: its preparation is
        made again with the settings of then when it ends (``_on_live_prepared``)."""
        live = self._pending is None
        if self.cover_shown:
            self._draw_cover()
            if live:
                self._draw_live()
        else:
            if live:
                self._draw_live()
            self._draw_cover()

    def _clim_for(self, img: np.ndarray, scale: str, given) -> tuple[float, float]:
        """Contrast limits of displayed values ``img``: the latched ones, else ``given`` (limits
        sent with the image, e.g. the sum image's from its worker: used in Lin and Power under
        the default percentile preset), else the percentile preset's."""
        latched = self.latch.isChecked()
        clim = self._latched.get(scale_group(scale)) if latched else None
        if clim is None and scale in ("Lin", "Power") and self.range_combo.currentIndex() == 0:
            clim = given
        if clim is None:
            clim = percentile_clim(img, self.range_combo.currentText())
        if latched:
            self._latched[scale_group(scale)] = clim
            self._snap()
        return clim

    def _put_cover(self, rv, name: str, img: np.ndarray, cal, clim):
        """The cover's layer ``name`` showing ``img``: updated in place on the same grid, else (re)made."""
        from ._results import show_map

        layer = rv.layers[name] if name in rv.layers else None
        kw = cal.napari_kwargs("scan")
        grid = (img.shape, tuple(float(v) for v in kw["scale"]), tuple(str(u) for u in kw["units"]))
        same = (
            layer is not None
            and layer.metadata.get("napari_4dstem_grid") == (*grid, tuple(float(v) for v in layer.translate))
            and tuple(float(v) for v in layer.scale) == grid[1]
        )
        if same:
            # the same grid: napari's viewer recomputes the dims of every layer on a ``data``
            # event, for nothing here (the slice, thumbnail and canvas still update: refresh)
            with layer.events.data.blocker():
                layer.data = img
            layer.refresh()
            layer.contrast_limits = clim
        else:  # another shape, scale, origin or units (another file): a new layer, not a stale one
            if layer is not None:
                rv.layers.remove(layer)
            layer = show_map(rv, name, img, cal, colormap="gray", contrast_limits=clim)
            layer.metadata["napari_4dstem_grid"] = (*grid, tuple(float(v) for v in layer.translate))
        self._hook_layer(layer)
        self._set_gamma(layer)
        self._displayed[name] = (img, clim)
        return layer

    def _set_gamma(self, layer) -> None:
        gamma = self.gamma.value() if self.scale_combo.currentText() == "Power" else 1.0
        if layer.gamma != gamma:  # napari's setter redraws the thumbnail even for the same value
            layer.gamma = gamma

    def _draw_live(self) -> None:
        """Draw the stored live image."""
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
        scale = self.scale_combo.currentText()
        img, clim, hist = self._shown_image(self._raw, self._clim, self._live_prep, scale)
        if self.rgb_name in rv.layers:
            rv.layers[self.rgb_name].visible = False  # a new live image: it is the one shown
        layer = rv.layers[self.name] if self.name in rv.layers else None
        if (
            layer is not None
            and self._cal is not None
            and layer.data.shape == img.shape
            and layer.scale[-1] == self._cal.napari_kwargs("scan")["scale"][-1]
        ):
            # the same grid: napari's viewer recomputes the dims of every layer on a ``data``
            # event, for nothing here (the slice, thumbnail and canvas still update: refresh)
            with layer.events.data.blocker():
                layer.data = img
            layer.contrast_limits = clim
        else:
            layer = show_map(rv, self.name, img, self._cal, colormap="gray", contrast_limits=clim)
        self._hook_layer(layer)
        self._set_gamma(layer)
        self._displayed[self.name] = (img, clim)
        self._shown_scale = scale
        if not self.cover_shown:
            self.displayed_clim = clim
            self.histogram.set_data(*(hist if hist is not None else histogram(img)), clim)

    def _shown_image(self, raw, clim, prep, scale):
        """The image to show, its contrast limits and its histogram (None: compute it): made
        ready in a worker (``prep``) when that was made for the current display settings, else
        transformed here."""
        if prep is not None and prep.key == self.display_key():  # made ready in a worker
            if self.latch.isChecked():
                self._latched[scale_group(scale)] = prep.clim
                self._snap()
            return prep.shown, prep.clim, prep.hist
        img = display_transform(raw, scale)
        return img, self._clim_for(img, scale, clim), None

    def _draw_cover(self, show: bool = False):
        """Draw the stored cover directly over the live image (``show``: made visible, else as
        visible as it was); returns its layer."""
        c = self._cover
        if c is None:
            return None
        rv = self.viewer()
        self._hook(rv)
        scale = self.scale_combo.currentText()
        img, clim, hist = self._shown_image(c["raw"], c["clim"], c.get("prep"), scale)
        layer = self._put_cover(rv, c["name"], img, c["cal"], clim)
        names = [lyr.name for lyr in rv.layers]
        if self.name in names and names.index(c["name"]) < names.index(self.name):
            rv.layers.move(names.index(c["name"]), names.index(self.name) + 1)
        if show and not layer.visible:
            layer.visible = True
        self._shown_scale = scale
        if self.cover_shown:
            self.displayed_clim = clim
            self.histogram.set_data(*(hist if hist is not None else histogram(img)), clim)
        return layer

    def _sync_shown(self, event=None) -> None:
        """The histogram, limits and statistics of the image now shown (a layer hidden or shown)."""
        name = self.shown_name
        if name is None or name == self.rgb_name or name not in self._displayed:
            return
        img, clim = self._displayed[name]
        layer = self.shown_layer
        if layer is not None and not getattr(layer, "rgb", False):
            clim = tuple(float(v) for v in layer.contrast_limits)
        self.displayed_clim = clim
        self.histogram.set_data(*histogram(img), clim)
        raw = self.shown_raw
        if raw is not None and raw.ndim == 2:
            self.stats.setText(f"real space: {statistics_text(raw)}")

    # -- latch: the same contrast limits for every new image ---------------------------------
    @property
    def latched_clim(self) -> tuple[float, float] | None:
        """The latched contrast limits of the current scale (None when not latched)."""
        if not self.latch.isChecked():
            return None
        return self._latched.get(scale_group(self.scale_combo.currentText()))

    def _on_latch(self, on: bool) -> None:
        """Ticked: latch the limits shown now; unticked: autorange the current images now."""
        self._latched = {}
        if on:
            raw = self.shown_raw
            if self.displayed_clim is not None and raw is not None and raw.ndim == 2:
                self._latched[scale_group(self.scale_combo.currentText())] = tuple(self.displayed_clim)
            self._snap()
            return
        self._snap()
        self.render()

    def _on_range(self) -> None:
        """A percentile preset: taken from the current images (and latched when latched)."""
        self._latched.pop(scale_group(self.scale_combo.currentText()), None)
        self._snap()
        self.render()

    def _keep_latched(self, clim) -> None:
        """Limits set by hand (handles, napari's controls) become the latched ones."""
        raw = self.shown_raw
        if self.latch.isChecked() and raw is not None and raw.ndim == 2:
            self._latched[scale_group(self.scale_combo.currentText())] = (float(clim[0]), float(clim[1]))
            self._snap()

    # -- display only: Power (napari's gamma) and the histogram's handles ----------------------
    def _our_layers(self) -> list:
        """The layers of the live image and the cover (those there)."""
        rv = self.viewer(create=False)
        names = [self.name] + ([self._cover["name"]] if self._cover is not None else [])
        return [rv.layers[n] for n in names if rv is not None and n in rv.layers]

    def _on_scale(self, scale: str) -> None:
        self._snap()
        self.gamma.setEnabled(scale == "Power")
        raw = self.shown_raw
        was_power_or_lin = self.layer is not None and self._shown_scale in ("Lin", "Power")
        if was_power_or_lin and scale in ("Lin", "Power") and raw is not None and raw.ndim == 2:
            # the same values on screen: only the exponent changes (no data sent again)
            for layer in self._our_layers():
                layer.gamma = self.gamma.value() if scale == "Power" else 1.0
            self._shown_scale = scale
            return
        self.render()

    def _on_gamma(self, value: float) -> None:
        if self.scale_combo.currentText() == "Power":
            for layer in self._our_layers():
                layer.gamma = float(value)

    def _on_handles(self, lo: float, hi: float) -> None:
        layer = self.shown_layer
        if layer is None or getattr(layer, "rgb", False):
            return
        self.displayed_clim = (lo, hi)
        self._keep_latched((lo, hi))
        layer.contrast_limits = (lo, hi)

    def _hook_layer(self, layer) -> None:
        """The histogram's handles follow a contrast change made in napari's layer controls on the
        shown image; hiding or showing one of the dock's layers changes the image shown."""
        if layer in self._hooked_layers:
            return
        me, lyr = weakref.ref(self), weakref.ref(layer)

        def on_clim(event=None):
            w, layer_ = me(), lyr()
            if w is None or layer_ is None:
                return
            try:
                if w.shown_layer is layer_ and tuple(w.histogram.clim) != tuple(layer_.contrast_limits):
                    w.displayed_clim = tuple(layer_.contrast_limits)
                    w._keep_latched(layer_.contrast_limits)
                    w.histogram.set_clim(layer_.contrast_limits)
            except RuntimeError:  # the dock was deleted
                pass

        def on_visible(event=None):
            w = me()
            if w is not None:
                try:
                    w._sync_shown()
                except RuntimeError:  # the dock was deleted
                    pass

        layer.events.contrast_limits.connect(on_clim)
        layer.events.visible.connect(on_visible)
        self._hooked_layers.add(layer)

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
        """Show the scan pixel under the mouse, its calibrated position and the value of the
        topmost visible image there (``|z|`` and ``phi`` for a complex map; the scan position
        does not move)."""
        for layer in reversed(list(rv.layers)):
            if not layer.visible or not hasattr(layer, "contrast_limits") or layer.name == self.rgb_name:
                continue
            cover = self._cover is not None and layer.name == self._cover["name"]
            if layer.name == self.name or cover:  # the values, not the displayed (Log, Sqrt) ones
                raw = self._cover["raw"] if cover else self._raw
                if raw is None or raw.ndim != 2:
                    continue
                hit = layer_value(layer, position)
                if hit is not None:
                    (iy, ix), _ = hit
                    where = f"scan_y {iy}, scan_x {ix}{calibrated_text(layer, iy, ix)}"
                    head = f"{layer.name}: " if cover else ""
                    self.readout.setText(f"{head}{where}: {value_text(raw[iy, ix])}")
                    return
                continue
            hit = layer_value(layer, position)
            if hit is not None:
                (iy, ix), v = hit
                where = f"scan_y {iy}, scan_x {ix}{calibrated_text(layer, iy, ix)}"
                self.readout.setText(f"{layer.name}: {where}: {value_text(v)}")
                return
        self.readout.setText("")
