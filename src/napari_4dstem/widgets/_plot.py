"""The live training-curve plot of the "Simulation and training data" widget.

matplotlib (a dependency of the package) draws in a worker, the dock shows the picture: the training loss per step
and per epoch, and the validation scores per epoch (disk-match F1 at 0.5 and 1 px, position
RMSE), with a text summary of the same numbers under it.
The data lists are public so that tests (and users) can read what is drawn.
"""

from __future__ import annotations

import math
import time

import numpy as np
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget


def show_rgba(label: QLabel, rgba) -> np.ndarray:
    """Put an ``(h, w, 4)`` uint8 picture (drawn in a worker) into ``label``. Returns the
    contiguous array the QImage was made on: keep it alive (QImage does not copy)."""
    from qtpy.QtGui import QImage, QPixmap

    rgba = np.ascontiguousarray(rgba)
    h, w = rgba.shape[:2]
    label.setPixmap(QPixmap.fromImage(QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888)))
    return rgba


def wide_picture(label: QLabel) -> None:
    """A label showing a picture drawn at the width of its dock (a plot): the picture does not
    set the dock's minimum width (it did, so the dock could only grow: the Phase dock's error
    plot held it at 664 px), the next picture is drawn at the new width."""
    from qtpy.QtWidgets import QSizePolicy

    label.setSizePolicy(QSizePolicy.Policy.Ignored, label.sizePolicy().verticalPolicy())


VALIDATION_KEYS = ("f1_0.5px", "f1_1px")


class TrainingPlot(QWidget):
    """Training loss (per step and per epoch) and validation curves, redrawn at most 5 times
    a second while steps arrive and at once at every epoch end.

    matplotlib draws (Agg, 0.1-0.3 s a frame here) in a worker, newest request wins; the dock
    shows the finished picture, so a training run never holds the GUI thread.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        from ._common import LatestRunner

        self.steps: list[int] = []
        self.losses: list[float] = []
        self.history: list[dict] = []
        self._last_draw = 0.0
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.summary = QLabel("no training yet")
        self.summary.setWordWrap(True)
        self.picture = QLabel()
        self.picture.setMinimumHeight(180)
        wide_picture(self.picture)
        lay.addWidget(self.picture)
        lay.addWidget(self.summary)
        self.frames = 0  # pictures shown (tests)
        self._runner = LatestRunner(self._show, self._error)
        self.redraw()

    # -- data ---------------------------------------------------------------------------------
    def clear(self) -> None:
        self.steps, self.losses, self.history = [], [], []
        self.summary.setText("no training yet")
        self.redraw()

    def add_step(self, step: int, loss: float) -> None:
        self.steps.append(int(step))
        self.losses.append(float(loss))
        if time.perf_counter() - self._last_draw > 0.2:
            self.redraw()

    def set_history(self, history) -> None:
        """Every finished epoch's metrics (``TrainProgress.history`` or ``history.json``)."""
        self.history = [dict(h) for h in history]
        self.redraw()

    # -- drawing ------------------------------------------------------------------------------
    def _text(self) -> str:
        parts = []
        if self.losses:
            parts.append(f"step {self.steps[-1]}: loss {self.losses[-1]:.4g}")
        if self.history:
            h = self.history[-1]
            val = ", ".join(
                f"{k} {h[k]:.3g}"
                for k in (*VALIDATION_KEYS, "position_rmse_px", "strain_rmse")
                if isinstance(h.get(k), int | float) and math.isfinite(h[k])
            )
            parts.append(f"epoch {h.get('epoch')}: train loss {h.get('train_loss', math.nan):.4g}")
            if val:
                parts.append(f"validation {val}")
        return "; ".join(parts) or "no training yet"

    def redraw(self) -> None:
        self._last_draw = time.perf_counter()
        self.summary.setText(self._text())
        self._runner.request(
            render_training_plot,
            list(self.steps),
            list(self.losses),
            [dict(h) for h in self.history],
            max(self.width(), 360),
        )

    def _show(self, rgba) -> None:
        self._rgba = show_rgba(self.picture, rgba)
        self.frames += 1

    def _error(self, exc) -> None:
        self.summary.setText(f"{self._text()} (plot failed: {type(exc).__name__}: {exc})")

    def close_plot(self) -> None:
        self._runner.close()


def render_training_plot(steps, losses, history, width_px: int):
    """Worker: the loss and validation curves as an RGBA picture (matplotlib's Agg, no Qt)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    dpi = 100
    fig = Figure(figsize=(width_px / dpi, 2.6), dpi=dpi, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax_loss, ax_val = fig.subplots(1, 2)
    ax_loss.set_title("training loss", fontsize=9)
    ax_loss.set_xlabel("step", fontsize=8)
    ax_val.set_title("validation", fontsize=9)
    ax_val.set_xlabel("epoch", fontsize=8)
    ax_val.set_ylim(0, 1.02)
    ax_val.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_loss, ax_val):
        ax.tick_params(labelsize=7)
    if losses:
        ax_loss.plot(steps, losses, lw=0.8, color="0.6", label="step")
    ep = [(h["step"], h["train_loss"]) for h in history if "train_loss" in h and "step" in h]
    if ep:
        ax_loss.plot(*zip(*ep, strict=True), "o-", color="C0", ms=3, label="epoch mean")
    if losses or ep:
        ax_loss.set_yscale("log")
        ax_loss.legend(fontsize=7)
    epochs = [h.get("epoch") for h in history]
    for k, c in zip(VALIDATION_KEYS, ("C1", "C2"), strict=True):
        ys = [h.get(k, math.nan) for h in history]
        if any(isinstance(y, int | float) and math.isfinite(y) for y in ys):
            ax_val.plot(epochs, ys, "o-", color=c, ms=3, label=f"F1 {k[3:]}")
    if history:
        ax_val.legend(fontsize=7)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()
