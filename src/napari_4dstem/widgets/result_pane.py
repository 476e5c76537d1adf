"""The "Result pane" dock (UX point 15): a third napari canvas for derived views.

Translation only. *FFT of the virtual image*: the windowed FFT of the Virtual imaging dock's
latest image (follows every new image, through the plugin API's ``virtual_image_changed``),
in spatial frequency units of the scan. *EWPC of the current pattern*: the exit-wave power
cepstrum of the pattern at the scan position (follows ``pattern_changed``), in real-space
length units (its peaks sit at the lattice spacings). Both are computed in a worker, newest
request wins (:mod:`napari_4dstem.analysis.virtual.transforms`). The FFT shows a chosen part of
the complex transform (log|F|, |F|, real, imaginary or phase: ``FFT_PARTS``), Hann-windowed or
not, computed in the worker with its contrast limits (symmetric about 0 for the real and
imaginary parts, -pi..pi for the phase) and a colormap to match (magma, PiYG, twilight). Other plugins add views with
:func:`napari_4dstem.plugin_api.register_result_renderer`: they follow the pattern or the virtual
image the same way, run in the same worker, and their errors land in the Log dock.
"""

from __future__ import annotations

import napari
import numpy as np
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ..errors import Napari4DSTEMError
from ..plugin_api import BUILTIN_RESULT_VIEWS as MODES
from ._common import LatestRunner, watch_dock
from ._multiview import make_embedded
from ._state import DockState, register_dock

LAYER = "result"
#: the parts of the FFT the pane shows: the core's ``transforms.FFT_PARTS`` (not imported here:
#: scipy.fft takes 0.6 s to import cold, which the dock's opening must not pay)
FFT_PARTS = ("log|F|", "|F|", "real", "imaginary", "phase")
#: colormap of each part: sequential for magnitudes, diverging about 0, cyclic for the phase
PART_COLORMAPS = {"real": "PiYG", "imaginary": "PiYG", "phase": "twilight"}


def _fft_job(data: np.ndarray, step: tuple[float, float], unit: str | None, part: str = "log|F|", window: bool = True):
    from ..analysis.virtual.transforms import fft_image

    data = np.asarray(data)  # in the worker: the map is handed over as it is
    img = fft_image(data, window=window, part=part)
    what = "FFT" if part == "log|F|" and window else f"FFT {part}" + ("" if window else ", no window")
    return (
        img,
        (1.0 / (data.shape[0] * step[0]), 1.0 / (data.shape[1] * step[1])),
        None if unit is None else f"1/{unit}",
        what,
    )


def _ewpc_job(layer_data, iy: int, ix: int, dk: float | None, unit: str | None):
    from ..analysis.virtual.transforms import ewpc

    pattern = np.asarray(layer_data[iy, ix])  # a lazy layer reads here, in the worker
    c = ewpc(pattern)
    if dk is None:
        return c, (1.0, 1.0), None, f"EWPC ({iy}, {ix})"
    return c, (1.0 / (pattern.shape[0] * dk), 1.0 / (pattern.shape[1] * dk)), unit, f"EWPC ({iy}, {ix})"


def _renderer_job(renderer, array, iy=None, ix=None):
    """Run a registered renderer in the worker and check what it gives back."""
    inp = np.asarray(array if iy is None else array[iy, ix])  # a lazy layer reads here, in the worker
    out = renderer.func(inp)
    scale, unit = (1.0, 1.0), None
    if isinstance(out, tuple):
        if len(out) != 3:
            raise Napari4DSTEMError(
                f"the Result-pane renderer {renderer.name!r} returned a tuple of {len(out)}; "
                "give an array or (array, (scale_y, scale_x), unit)"
            )
        out, scale, unit = out
        scale = tuple(float(v) for v in scale)
    data = np.asarray(out)
    if np.iscomplexobj(data):
        data = np.abs(data)
    if data.ndim != 2 or not np.issubdtype(data.dtype, np.number) or data.size == 0:
        raise Napari4DSTEMError(
            f"the Result-pane renderer {renderer.name!r} returned an array of shape {data.shape} and dtype "
            f"{data.dtype}; it must be a non-empty 2D numeric array"
        )
    where = "" if iy is None else f" ({iy}, {ix})"
    return data.astype(np.float32, copy=False), scale, unit, renderer.name + where


def picture_limits(data: np.ndarray, kind: str = "magnitude") -> tuple[float, float]:
    """Contrast limits of a picture: ``"magnitude"`` (min, 99.9th percentile), ``"signed"``
    (symmetric about 0: -m, m with m the 99.9th percentile of ``|data|``) or ``"phase"``
    (-pi, pi)."""
    if kind == "phase":
        return (-float(np.pi), float(np.pi))
    if kind == "signed":
        m = float(np.percentile(np.abs(data), 99.9)) + 1e-12
        return (-m, m)
    return (float(np.min(data)), float(np.percentile(data, 99.9)) + 1e-12)


def _with_limits(job, *args, kind: str = "magnitude"):
    """Worker: ``job``'s picture and its contrast limits (:func:`picture_limits`), so the GUI
    thread only sets them (a plugin's picture may be large)."""
    data, scale, unit, what = job(*args)
    return data, scale, unit, what, picture_limits(data, kind)


class ResultPaneWidget(DockState, QWidget):
    """Dock: FFT of the virtual image or EWPC of the current pattern, on a canvas of its own."""

    state_key = "result_pane"

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        watch_dock(self, "canvas")  # placed in napari's window with our other docks; cleaned up when napari closes it
        from ..plugin_api import _RENDERERS, events

        self.viewer = viewer
        self.mode = QComboBox()
        self.mode.addItems(MODES)
        self._fill_modes()
        _RENDERERS.changed.connect(self._fill_modes)
        self.destroyed.connect(lambda *_: _disconnect(self._fill_modes))
        self.part = QComboBox()
        self.part.addItems(FFT_PARTS)
        self.part.setToolTip("what of the complex FFT to show (the phase is relative to the image's first pixel)")
        self.fft_window = QCheckBox("Hann window")
        self.fft_window.setChecked(True)
        self.fft_window.setToolTip("multiply the image by a 2D Hann window before the FFT (no edge streaks)")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.model, self.canvas = make_embedded(viewer, "Result")
        form = QFormLayout()
        form.addRow("show", self.mode)
        fft_row = QHBoxLayout()
        fft_row.addWidget(self.part)
        fft_row.addWidget(self.fft_window)
        fft_row.addStretch(1)
        form.addRow("FFT", fft_row)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.canvas, 1)
        lay.addWidget(self.status)
        self.runner = LatestRunner(self._on_result, self._on_error)
        self.shown: tuple | None = None  # (what, data) of the picture in the pane
        self._colormap = "magma"  # of the picture requested last
        self._shown_unit: str | None = None
        ev = events(viewer)
        ev.virtual_image_changed.connect(self._on_virtual)
        ev.pattern_changed.connect(self._on_pattern)
        self.mode.currentIndexChanged.connect(lambda _=0: self.refresh())
        self.part.currentIndexChanged.connect(lambda _=0: self.refresh())
        self.fft_window.toggled.connect(lambda _=False: self.refresh())
        register_dock(viewer, self)
        self.refresh()

    def _fill_modes(self) -> None:
        """The built-in views, then the registered ones; keep the choice while it exists."""
        from ..plugin_api import result_renderers

        current = self.mode.currentText()
        names = [*MODES, *result_renderers()]
        if [self.mode.itemText(i) for i in range(self.mode.count())] == names:
            return
        self.mode.blockSignals(True)
        self.mode.clear()
        self.mode.addItems(names)
        self.mode.setCurrentIndex(names.index(current) if current in names else 0)
        self.mode.blockSignals(False)
        if current not in names:
            self.refresh()

    def _source(self) -> str:
        """What the chosen view follows: "virtual image" or "pattern"."""
        from ..plugin_api import result_renderers

        name = self.mode.currentText()
        if name in MODES:
            return "virtual image" if name == MODES[0] else "pattern"
        r = result_renderers().get(name)
        return "pattern" if r is None else r.source

    def refresh(self) -> None:
        fft = self.mode.currentText() == MODES[0]
        self.part.setEnabled(fft)
        self.fft_window.setEnabled(fft)
        if self._source() == "virtual image":
            self._on_virtual()
        else:
            from ..plugin_api import events

            lyr = events(self.viewer)._cube_layer()
            if lyr is not None:
                from ._common import scan_position

                self._on_pattern(*scan_position(self.viewer, lyr))

    def _on_virtual(self, name: str = "virtual image", info=None) -> None:
        from ..plugin_api import last_virtual_image, result_renderers

        if self._source() != "virtual image" or name != "virtual image":
            return
        img = last_virtual_image(self.viewer)
        if img is None:
            self.status.setText("no virtual image yet: open the Virtual imaging dock")
            return
        renderer = result_renderers().get(self.mode.currentText())
        self._colormap = "magma"
        if renderer is not None:
            self.runner.request(_with_limits, _renderer_job, renderer, img.data)
            return
        cal = img.calibration
        # an uncalibrated scan (a raw .npy) has no scan step: the FFT in 1/px (the dock did not open)
        step = (1.0, 1.0) if cal.scan_step is None else tuple(float(s) for s in cal.scan_step)
        unit = cal.scan_units if cal.scan_step is not None and cal.scan_units not in (None, "px") else None
        part = self.part.currentText()
        kind = {"real": "signed", "imaginary": "signed", "phase": "phase"}.get(part, "magnitude")
        self._colormap = PART_COLORMAPS.get(part, "magma")
        args = (img.data, step, unit, part, self.fft_window.isChecked())
        self.runner.request(_with_limits, _fft_job, *args, kind=kind)

    def _on_pattern(self, iy: int, ix: int) -> None:
        from ..plugin_api import events, result_renderers

        if self._source() != "pattern":
            return
        lyr = events(self.viewer)._cube_layer()
        if lyr is None:
            return
        renderer = result_renderers().get(self.mode.currentText())
        self._colormap = "magma"
        if renderer is not None:
            self.runner.request(_with_limits, _renderer_job, renderer, lyr.data, int(iy), int(ix))
            return
        cal = (lyr.metadata or {}).get("napari_4dstem", {}).get("calibration")
        dk = unit = None
        if cal is not None and cal.k_pixel_size:
            try:
                dk, unit = cal.k_pixel_size_in("1/A"), "angstrom"
            except Napari4DSTEMError:
                dk, unit = None, None
        self.runner.request(_with_limits, _ewpc_job, lyr.data, int(iy), int(ix), dk, unit)

    def _on_result(self, out) -> None:
        data, scale, unit, what, limits = out
        kw = {"scale": scale}
        if unit is not None:
            from ..data.calibration import napari_unit

            kw["units"] = (napari_unit(unit),) * 2
        same_frame = (
            LAYER in self.model.layers
            and tuple(self.model.layers[LAYER].scale) == tuple(scale)
            and self._shown_unit == unit
        )
        self._shown_unit = unit
        if same_frame:
            lyr = self.model.layers[LAYER]
            lyr.data = data
            lyr.contrast_limits = limits
            if lyr.colormap.name != self._colormap:
                lyr.colormap = self._colormap
        else:
            if LAYER in self.model.layers:
                self.model.layers.remove(LAYER)
            self.model.add_image(
                data,
                name=LAYER,
                colormap=self._colormap,
                contrast_limits=limits,
                **kw,
            )
            self.model.reset_view()
        self.shown = (what, data)
        self.status.setText(what + ("" if unit is None else f" ({unit} per axis unit)"))

    def _on_error(self, exc) -> None:
        from .log import log_error

        log_error("Result pane", exc)
        self.status.setText(str(exc) if isinstance(exc, Napari4DSTEMError) else f"{type(exc).__name__}: {exc}")


def _disconnect(slot) -> None:
    from ..plugin_api import _RENDERERS

    try:
        _RENDERERS.changed.disconnect(slot)
    except (TypeError, ValueError, RuntimeError):
        pass
