"""The live training-curve plot of the "Simulation and training data" widget.

matplotlib (a dependency of the package) draws into a Qt canvas: the training loss per step
and per epoch, and the validation scores per epoch (disk-match F1 at 0.5 and 1 px, position
RMSE). Without a usable matplotlib Qt backend the plot is a text summary of the same numbers.
The data lists are public so that tests (and users) can read what is drawn.
"""

from __future__ import annotations

import math
import time

from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

VALIDATION_KEYS = ("f1_0.5px", "f1_1px")


class TrainingPlot(QWidget):
    """Training loss (per step and per epoch) and validation curves, redrawn at most 5 times
    a second while steps arrive and at once at every epoch end."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.history: list[dict] = []
        self._last_draw = 0.0
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.summary = QLabel("no training yet")
        self.summary.setWordWrap(True)
        self.canvas = None
        try:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure
        except ImportError:  # pragma: no cover - matplotlib is a dependency
            lay.addWidget(self.summary)
            return
        from matplotlib.ticker import MaxNLocator

        self._integer_ticks = MaxNLocator
        fig = Figure(figsize=(5, 2.6), layout="constrained")
        self.ax_loss, self.ax_val = fig.subplots(1, 2)
        self.canvas = FigureCanvasQTAgg(fig)
        self.canvas.setMinimumHeight(180)
        lay.addWidget(self.canvas)
        lay.addWidget(self.summary)
        self._style()
        self.canvas.draw_idle()

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
    def _style(self) -> None:
        self.ax_loss.set_title("training loss", fontsize=9)
        self.ax_loss.set_xlabel("step", fontsize=8)
        self.ax_val.set_title("validation", fontsize=9)
        self.ax_val.set_xlabel("epoch", fontsize=8)
        self.ax_val.set_ylim(0, 1.02)
        self.ax_val.xaxis.set_major_locator(self._integer_ticks(integer=True))
        for ax in (self.ax_loss, self.ax_val):
            ax.tick_params(labelsize=7)

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
        if self.canvas is None:
            return
        self.ax_loss.clear()
        self.ax_val.clear()
        self._style()
        if self.losses:
            self.ax_loss.plot(self.steps, self.losses, lw=0.8, color="0.6", label="step")
        ep = [(h["step"], h["train_loss"]) for h in self.history if "train_loss" in h]
        if ep:
            self.ax_loss.plot(*zip(*ep, strict=True), "o-", color="C0", ms=3, label="epoch mean")
        if self.losses or ep:
            self.ax_loss.set_yscale("log")
            self.ax_loss.legend(fontsize=7)
        epochs = [h.get("epoch") for h in self.history]
        for k, c in zip(VALIDATION_KEYS, ("C1", "C2"), strict=True):
            ys = [h.get(k, math.nan) for h in self.history]
            if any(isinstance(y, int | float) and math.isfinite(y) for y in ys):
                self.ax_val.plot(epochs, ys, "o-", color=c, ms=3, label=f"F1 {k[3:]}")
        if self.history:
            self.ax_val.legend(fontsize=7)
        self.canvas.draw_idle()
