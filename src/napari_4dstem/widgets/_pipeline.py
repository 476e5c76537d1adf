"""What the dock widgets share to call the workflow pipelines and hand their results on.

Translation only: where a layer came from (its file, for the recipe of a result), the probe of a
2D layer as a :class:`~napari_4dstem.pipelines.ProbeSource` when it was read from a file, layer
metadata that lets napari's File > Save write a result with its units and parameters, and the
"Save result..." / "Copy as Python" actions of a pipeline result.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data.results import DiffractionImage, RealSpaceMap
from ..errors import Napari4DSTEMError

META = "napari_4dstem"

# InputRef of each (file, scan shape) with the time it was made: a live job is requested at every
# drag move and scan step, and InputRef.of stats and resolves the file, system calls the GUI
# thread then made 15-30 times a second (one of them was caught in a 58 ms stall on a loaded
# machine); the file's size and time are read again after SOURCE_TTL_S
SOURCE_TTL_S = 1.0
_sources: dict[tuple[str, tuple[int, ...]], tuple[float, Any]] = {}


def layer_source(layer):
    """The input of a result computed on a 4D layer: the file it was read from (our reader and
    the samples record it) with the scan shape analysed (the Scan shape dock may have changed
    it), as an InputRef; None for data not read from a file."""
    from ..pipelines import InputRef

    src = (getattr(layer, "metadata", None) or {}).get(META, {}).get("source")
    if not src:
        return None
    key = (str(src), tuple(int(n) for n in layer.data.shape[:2]))
    now = time.monotonic()
    made = _sources.get(key)
    if made is None or now - made[0] >= SOURCE_TTL_S:
        made = _sources[key] = (now, InputRef.of(src, reshape_to=key[1]))
    return made[1]


def probe_of_layer(layer) -> Any:
    """A 2D probe layer as a ProbeSource (file and node) when it was read from a file, else its
    image (the result then has no script: the probe is not in any file)."""
    from ..pipelines import ProbeSource

    ours = (getattr(layer, "metadata", None) or {}).get(META, {})
    if ours.get("source") and ours.get("node"):
        return ProbeSource(str(ours["source"]), str(ours["node"]))
    return np.asarray(layer.data, dtype=np.float64)


def result_metadata(
    obj: RealSpaceMap | DiffractionImage,
    *,
    channel: str | None = None,
    units: str | None = None,
    rgb: bool = False,
    recipe=None,
) -> dict[str, Any]:
    """Layer metadata for a result (or one channel of a stack): what the writer saves back;
    ``recipe`` (a pipelines.Recipe) goes into its parameters."""
    return {
        META: {
            "kind": "diffraction" if isinstance(obj, DiffractionImage) else "real_space",
            "calibration": obj.calibration,
            "units": obj.units if units is None else units,
            "params": {
                **obj.params,
                **({"channel": channel, "of": obj.name} if channel else {}),
                **({"recipe": recipe.to_dict()} if recipe is not None else {}),
            },
            **({"rgb_channels": ["r", "g", "b"]} if rgb else {}),
        }
    }


def tag_layer(layer, obj, **kw) -> None:
    """Give a layer made from ``obj`` the metadata of :func:`result_metadata`."""
    layer.metadata = {**dict(layer.metadata), **result_metadata(obj, **kw)}


def copy_to_clipboard(text: str) -> None:
    from qtpy.QtWidgets import QApplication

    cb = QApplication.clipboard()
    if cb is not None:
        cb.setText(text)


def write_result(result, path) -> Path:
    """Worker: write a pipeline result (EMD, with its recipe)."""
    return result.save(path, overwrite=True)


class PipelineActions:
    """ "Save result..." and "Copy as Python" for a dock widget whose analysis is a pipeline
    result. The widget has ``self.jobs`` (JobRunner) and ``self.status`` (QLabel) and defines
    ``pipeline_result()``: the current result (a pipelines result object) or None. (A mixin of
    QWidget subclasses, so not an ABC: Qt's metaclass and ABCMeta do not combine.)"""

    result_file_name = "result.h5"

    def action_row(self):
        """The dock's "Save result..." and "Copy as Python" buttons, connected, in one row."""
        from qtpy.QtWidgets import QHBoxLayout, QPushButton

        self.save_btn = QPushButton("Save result...")
        self.copy_btn = QPushButton("Copy as Python")
        self.save_btn.clicked.connect(lambda: self.save_result())
        self.copy_btn.clicked.connect(lambda: self.copy_as_python())
        row = QHBoxLayout()
        row.addWidget(self.save_btn)
        row.addWidget(self.copy_btn)
        return row

    last_saved: Path | None = None  # the file the last Save result... wrote

    @property
    def file_jobs(self):
        """The dock's file writing in workers (:class:`~._common.FileJobs`)."""
        fj = self.__dict__.get("_file_jobs")
        if fj is None:
            from ._common import FileJobs

            fj = self.__dict__["_file_jobs"] = FileJobs(self.status, self.jobs.error)
        return fj

    def save_result(self, path: str | Path | None = None) -> bool:
        """Save the current result to EMD (asks for the path when none is given) in a worker;
        True when the writing started. ``last_saved`` is the file once written, and the
        status line says so; errors go to the status line and the Log dock."""
        result = self.pipeline_result()
        try:
            if result is None:
                raise Napari4DSTEMError("run the analysis first")
        except Napari4DSTEMError as e:
            self.jobs.error(e)
            return False
        if path is None:
            from qtpy.QtWidgets import QFileDialog

            path, _ = QFileDialog.getSaveFileName(self, "Save result", self.result_file_name, "EMD (*.h5 *.emd)")
            if not path:
                return False
        self.file_jobs.run(write_result, result, path, desc=f"writing {Path(path).name}", on_done=self._saved)
        return True

    def _saved(self, out: Path) -> None:
        self.last_saved = out
        self.status.setText(f"wrote {out}")

    def copy_as_python(self) -> str | None:
        """Put the script that reproduces the current result on the clipboard and return it."""
        result = self.pipeline_result()
        try:
            if result is None:
                raise Napari4DSTEMError("run the analysis first")
            text = result.to_script()
        except Napari4DSTEMError as e:
            self.jobs.error(e)
            return None
        copy_to_clipboard(text)
        self.status.setText("the script that reproduces this result is on the clipboard")
        return text
