"""What the "Bragg disks and strain" and "NN disk detection" docks share for the network.

The model list (read in a worker: the registry imports torch), whether torch is installed at
all (the network is an optional extra), the block size of a whole-scan run (small blocks:
progress, the count map and Cancel between them) and the one-pattern job of the live overlay
and the preview (:func:`~napari_4dstem.pipelines.detect_pattern_nn`: the run's keywords, so
the overlay shows the disks the run will find).
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QWidget

from ._common import guarded, models_changed

# patterns per block of "Find disks in all patterns" with the network: about 0.1-0.3 s of
# network time on two CPU cores, so Cancel stops the job within that and progress arrives
# several times a second (one block of the whole scan gave no progress for 87 s)
NN_BLOCK = 4
TORCH_HINT = "the neural network needs PyTorch: pip install 'napari-4dstem[nn]'"


def threshold_boxes() -> tuple[QDoubleSpinBox, QDoubleSpinBox]:
    """The network's two peak thresholds as spin boxes, with the library's defaults: minimum
    relative height (0.1) and minimum disk significance in noise standard deviations (5, 0 = off)."""
    min_rel = QDoubleSpinBox()
    min_rel.setRange(0.0, 1.0)
    min_rel.setDecimals(3)
    min_rel.setValue(0.1)
    min_sig = QDoubleSpinBox()
    min_sig.setRange(0.0, 100.0)
    min_sig.setDecimals(1)
    min_sig.setValue(5.0)
    min_sig.setSpecialValueText("off")
    min_sig.setToolTip(
        "keep a peak only where the pattern holds a disk this many noise standard "
        "deviations above the local background (0: keep every peak the network marks)"
    )
    return min_rel, min_sig


def torch_available() -> bool:
    """Whether torch can be imported (looked up, not imported: the GUI thread stays free)."""
    return importlib.util.find_spec("torch") is not None


def nn_scan_chunk(scan_shape: tuple[int, int]) -> tuple[int, int]:
    """``(rows, cols)`` of scan positions per block of a whole-scan network run."""
    sx = int(scan_shape[1])
    return max(1, NN_BLOCK // sx), min(sx, NN_BLOCK)


def model_names() -> list[str]:
    """Worker: ``name@version`` of every model that is bundled or cached."""
    from ..nn.registry import list_models

    return [f"{e.name}@{e.version}" for e, status in list_models() if status != "not downloaded"]


def nn_pattern_job(dc, pos: tuple[int, int], probe, params):
    """Worker: the network on the pattern at ``pos`` with ``params`` (NNDiskParams) and the
    probe (a 2D layer's data, as it is), as
    ``(pos, predicted image, (n, 4) rows qy qx intensity correlation, seconds)``."""
    from ..pipelines import detect_pattern_nn

    probe = np.asarray(probe, dtype=np.float64)  # the probe layer's data, read here in the worker
    pattern = np.asarray(dc.pattern(*pos))
    t0 = time.perf_counter()
    img, rows = detect_pattern_nn(pattern, probe, params)
    return pos, img, rows, time.perf_counter() - t0


class ModelPicker(QComboBox):
    """The models of the registry, listed in a worker when made and whenever a model was
    trained or fine-tuned in the GUI (``models_changed``); ``listed`` once the first list is in."""

    def __init__(self, on_error, parent: QWidget | None = None):
        super().__init__(parent)
        self.listed = False
        self._on_error = on_error
        self._select_after = None
        self.refresh()
        models_changed().connect(self.refresh)

    def refresh(self) -> None:
        from ._common import create_worker

        create_worker(
            model_names,
            _connect={"returned": guarded(self, self._set_models), "errored": guarded(self, self._on_error)},
        )

    def select_after_refresh(self, name: str) -> None:
        """Select ``name`` when the next list arrives (a model just saved)."""
        self._select_after = name

    def _set_models(self, names: list[str]) -> None:
        cur = self._select_after or self.currentText()
        self._select_after = None
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        self.blockSignals(False)
        if cur and cur in names:
            self.setCurrentText(cur)
        self.listed = True
        self.currentIndexChanged.emit(self.currentIndex())
