"""The "Classification" dock widget: find the phases and domains of a scan.

Translation only: the whole classification (origin, features, decomposition, clustering,
class means) is one core job (:func:`napari_4dstem.analysis.classify.iter_classify`) run in
a worker with progress and Cancel. The label map goes to the linked real-space viewer (a click
there moves the scan position); the main viewer shows, right of the current pattern, the mean
pattern of the class under the scan position. Classes can be merged afterwards (no recompute)
or one split (re-clustered on its component scores, one pass for the new class means).
"""

from __future__ import annotations

import napari
import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..errors import Napari4DSTEMError
from ._common import CubePicker, JobRunner, PartialMaps, responsive_chunk, scan_position, watch_dock
from ._forms import scroll_contents
from ._pipeline import PipelineActions, layer_source
from ._results import results_viewer
from ._state import DockState, register_dock
from .results_list import session_results

MIN_PATTERNS = 3  # pipelines.classify.MIN_PATTERNS, not imported on the GUI thread (the core loads in the job)

LABELS_LAYER = "classes"
MEAN_LAYER = "class mean pattern"
SPACE_ITEMS = ("auto", "components", "maf")  # the default (ClassificationParams.space) first


def _display(result) -> dict:
    """What the dock shows of a Classification, computed in the worker (no array work on the
    GUI thread): the label image (class + 1, napari's 0 is background), the patterns per class
    and each class mean's contrast limits (0.1 and 99.9 percentiles)."""
    clims = []
    if result.class_patterns is not None:
        for mean in result.class_patterns:
            lo, hi = np.percentile(mean, [0.1, 99.9])
            clims.append((float(lo), float(max(hi, lo + 1e-9))))
    return {
        # the smallest unsigned type: napari shows 8- and 16-bit labels as they are, and hashes
        # wider ones with numba kernels compiled on the GUI thread at the first labels layer of a
        # process (3.7 s wall / 1.8 s CPU under load, UX audit session 15, S8)
        "labels": (result.labels + 1).astype(np.min_scalar_type(max(int(result.n_classes), 1))),
        "sizes": [int(n) for n in result.class_sizes()],
        "clims": clims,
    }


#: what a classification imports on first use (seconds under load): imported in a thread with a
#: Cancel point every 0.1 s before the job starts (UX 20)
_CLASSIFY_MODULES = (
    "napari_4dstem.pipelines",
    "napari_4dstem.analysis.classify",
    "napari_4dstem.analysis.virtual.origin",
    "scipy.signal",
    "sklearn.decomposition",
    "sklearn.mixture",
    "sklearn.metrics",
)


def _classify_job(cube, cal, source, scan_chunk=None, **params):
    """Worker job: the classification pipeline (``params``: the ClassificationParams fields,
    checked here), then what the dock shows of it, as ``(pipeline result, display)``. The core
    modules (numba kernels) are imported here, not on the GUI thread, in a thread of their own
    (Cancel points while they load); the passes read ``scan_chunk`` positions a block."""
    from ..engine.jobs import iter_imports

    yield from iter_imports(_CLASSIFY_MODULES, "loading the classification modules...")
    from ..pipelines import ClassificationParams, iter_classification

    result = yield from iter_classification(
        cube, classify=ClassificationParams(**params), calibration=cal, source=source, scan_chunk=scan_chunk
    )
    return result, _display(result.classification)


def _merge_job(result, classes):
    """Worker job: the pipeline ``result`` with ``classes`` merged (no recompute) and its display."""
    yield from ()
    merged = result.merged(classes)
    return merged, _display(merged.classification)


def _split_job(result, cls, k, cube):
    """Worker job: the pipeline ``result`` with class ``cls`` split into ``k`` (re-clustered on its
    component scores, then one pass over ``cube`` for the class mean patterns) and its display."""
    split = yield from result.iter_split(cls, k, cube)
    return split, _display(split.classification)


class ClassificationWidget(PipelineActions, DockState, QWidget):
    """Dock widget: classify every pattern, show the label map and class mean patterns."""

    state_key = "classify"

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        watch_dock(self)  # placed in napari's window with our other docks; cleaned up when napari closes it
        self.viewer = viewer
        self.result = None  # Classification
        self.pipeline = None  # its pipelines.ClassificationResult (Save result..., Copy as Python)
        self.calibration = None
        self._display = None  # the result's label image, class sizes and mean contrast limits
        self._mean_shown = None  # (result, class) of the class mean pattern layer's data
        self._build_ui()
        viewer.dims.events.current_step.connect(self._on_dims)
        register_dock(viewer, self)

    def _build_ui(self) -> None:
        self.layer_combo = CubePicker(self.viewer)
        self.features = QComboBox()
        self.features.addItems(["pattern", "pattern+angular", "angular", "polar", "radial"])
        self.features.setToolTip(
            "pattern: binned about the origin, keeps orientation (grains); pattern+angular: also the "
            "angular profile (disks' angles, blind to their intensities): grains a few degrees apart; "
            "polar/radial: rotation-invariant (phases whatever their in-plane orientation)"
        )
        self.method = QComboBox()
        self.method.addItems(["gmm", "kmeans", "hierarchical"])
        self.decomposition = QComboBox()
        self.decomposition.addItems(["pca", "nmf"])
        self.space = QComboBox()
        self.space.addItems(list(SPACE_ITEMS))
        self.space.setToolTip(
            "what the clustering sees: components (the leading PCA components), maf (their maximum-"
            "autocorrelation factors: large regions before narrow nuisances, finds lattices a few % apart), "
            "auto (both, the one whose classes leave less region-like structure unexplained)"
        )
        self.maf = QSpinBox()  # ClassificationParams.maf
        self.maf.setRange(1, 64)
        self.maf.setValue(8)
        self.maf.setToolTip("number of maximum-autocorrelation factors (cluster on maf or auto)")
        self.n_classes = QSpinBox()
        self.n_classes.setRange(0, 32)
        self.n_classes.setSpecialValueText("auto")
        self.max_classes = QSpinBox()
        self.max_classes.setRange(1, 32)
        self.max_classes.setValue(8)
        self.spatial = QDoubleSpinBox()
        self.spatial.setRange(0.0, 5.0)
        self.spatial.setSingleStep(0.25)
        self.spatial.setValue(1.0)
        self.spatial.setToolTip("weight of agreeing scan neighbours in the label smoothing (0: none)")
        self.run_btn = QPushButton("Classify")
        self.cancel_btn = QPushButton("Cancel")
        self.progress = QProgressBar()
        self.merge_edit = QLineEdit()
        self.merge_edit.setPlaceholderText("e.g. 1, 2")
        self.merge_btn = QPushButton("Merge classes")
        self.merge_btn.setEnabled(False)
        self.split_class = QSpinBox()
        self.split_class.setRange(0, 31)
        self.split_class.setToolTip("the class to split (label - 1)")
        self.split_into = QSpinBox()
        self.split_into.setRange(2, 8)
        self.split_btn = QPushButton("Split class")
        self.split_btn.setEnabled(False)
        self.split_btn.setToolTip(
            "re-cluster the class's patterns into this many classes (its component scores; "
            "one pass over the data for the new class means)"
        )
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.jobs = JobRunner(self.status, self.cancel_btn, buttons=(self.run_btn,), progress_bar=self.progress)
        # the features pass's map so far (each pattern's total counts) at an adaptive 2-5 Hz
        self.partials = PartialMaps(lambda: results_viewer(self.viewer), colormaps={"pattern total": "gray"})

        form = QFormLayout()
        form.addRow("4D layer", self.layer_combo)
        form.addRow("features", self.features)
        form.addRow("decomposition", self.decomposition)
        form.addRow("clustering", self.method)
        form.addRow("cluster on", self.space)
        form.addRow("factors (maf)", self.maf)
        form.addRow("classes", self.n_classes)
        form.addRow("at most", self.max_classes)
        form.addRow("spatial", self.spatial)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.run_btn)
        layout.addWidget(self.cancel_btn)
        layout.addWidget(self.progress)
        layout.addWidget(self.summary)
        merge = QFormLayout()
        merge.addRow("merge", self.merge_edit)
        merge.addRow(self.merge_btn)
        merge.addRow("split class", self.split_class)
        merge.addRow("into", self.split_into)
        merge.addRow(self.split_btn)
        layout.addLayout(merge)
        layout.addLayout(self.action_row())
        layout.addWidget(self.status)
        layout.addStretch(1)
        scroll_contents(self)  # narrower and shorter than its form: the window fits the screen
        self.run_btn.clicked.connect(self.run)
        self.merge_btn.clicked.connect(self.merge)
        self.split_btn.clicked.connect(self.split)

    # -- jobs -----------------------------------------------------------------------------------
    @property
    def _worker(self):
        return self.jobs.worker

    def run(self) -> None:
        try:
            cube, cal = self.layer_combo.datacube()
        except Napari4DSTEMError as e:
            self.jobs.error(e)
            return
        # session 14, audit3 #8: say it before running (the job raised the origin fit's or
        # scipy's message); the same as pipelines.classify.too_few_patterns (a test checks)
        n = int(np.prod(cube.scan_shape))
        if n < MIN_PATTERNS:
            self.jobs.error(Napari4DSTEMError(f"too few patterns to classify ({n}): need at least {MIN_PATTERNS}"))
            return
        self.calibration = cal
        # the parameters are checked in the worker (a bad one ends the job with its message)
        self.jobs.start(
            _classify_job,
            cube,
            cal,
            layer_source(self.layer_combo.layer),
            # blocks of ~0.15 s of work: progress and Cancel between them (one block was the
            # whole 32 x 32 sample: 3.4 s without a Cancel point)
            scan_chunk=responsive_chunk(cube.scan_shape, cube.detector_shape),
            features=self.features.currentText(),
            method=self.method.currentText(),
            decomposition=self.decomposition.currentText(),
            n_classes=self.n_classes.value() or None,
            max_classes=self.max_classes.value(),
            spatial=self.spatial.value(),
            space=self.space.currentText(),
            maf=self.maf.value(),
            desc="classification",
            eta=True,
            partials=self.partials.for_scan(cal),
            on_done=self._on_done,
        )

    def cancel(self) -> None:
        self.jobs.cancel()

    def _on_done(self, out) -> None:
        self.pipeline, self._display = out
        self.result = result = self.pipeline.classification
        session_results(self.viewer).add(self.pipeline, "classify")
        self._show()
        self.status.setText(
            f"{result.n_classes} classes (suggested {result.suggested_n_classes}), "
            f"{result.params['n_components']} components, clustered on "
            f"{result.params.get('space_chosen', 'components')}, {result.params['seconds_total']:.1f} s"
        )

    # -- display --------------------------------------------------------------------------------
    def _show(self) -> None:
        r, d = self.result, self._display
        rv = results_viewer(self.viewer)
        labels = d["labels"]  # class + 1 (napari: 0 is background), made in the worker
        kw = self.calibration.napari_kwargs("scan") if self.calibration is not None else {}
        if LABELS_LAYER in rv.layers:
            rv.layers[LABELS_LAYER].data = labels
        else:
            rv.add_labels(labels, name=LABELS_LAYER, **kw)
        self.summary.setText(
            "label = class + 1; patterns per class: " + ", ".join(f"{c}: {n}" for c, n in enumerate(d["sizes"]))
        )
        self.merge_btn.setEnabled(r.n_classes > 1)
        self.split_btn.setEnabled(True)
        self.split_class.setMaximum(max(r.n_classes - 1, 0))
        self._update_mean()

    def _on_dims(self, event=None) -> None:
        if self.result is not None:
            self._update_mean()

    def current_class(self) -> int | None:
        layer = self.layer_combo.layer
        if self.result is None or layer is None:
            return None
        iy, ix = scan_position(self.viewer, layer)
        if (iy, ix) >= self.result.labels.shape:
            return None
        return int(self.result.labels[iy, ix])

    def _update_mean(self) -> None:
        r = self.result
        layer = self.layer_combo.layer
        c = self.current_class()
        if c is None or r.class_patterns is None or layer is None:
            return
        mean = r.class_patterns[c]
        if MEAN_LAYER in self.viewer.layers:
            # a scan step within the same class changes nothing: napari is not asked to refresh
            if self._mean_shown is None or self._mean_shown[0] is not r or self._mean_shown[1] != c:
                self.viewer.layers[MEAN_LAYER].data = mean
                self.viewer.layers[MEAN_LAYER].metadata["class"] = c
                self._mean_shown = (r, c)
            return
        # right of the current pattern, same detector scale
        ks = tuple(layer.scale[-2:])
        gap = 0.05 * mean.shape[1]
        self.viewer.add_image(
            mean,
            name=MEAN_LAYER,
            scale=ks,
            translate=(float(layer.translate[-2]), float(layer.translate[-1]) + (mean.shape[1] + gap) * ks[1]),
            contrast_limits=self._display["clims"][c],
            metadata={"class": c},
            colormap=layer.colormap.name,
            units=tuple(layer.units[-2:]),
        )
        self._mean_shown = (r, c)

    def merge(self) -> None:
        if self.result is None:
            return
        try:
            classes = [int(t) for t in self.merge_edit.text().replace(",", " ").split()]
            bad = [c for c in classes if not 0 <= c < self.result.n_classes]
            if len(set(classes)) < 2 or bad:
                raise Napari4DSTEMError(f"give two or more classes between 0 and {self.result.n_classes - 1} to merge")
        except ValueError:
            self.jobs.error(Napari4DSTEMError("classes to merge: numbers separated by commas"))
            return
        except Napari4DSTEMError as e:
            self.jobs.error(e)
            return
        # the merge (labels, probabilities, class means folded) in a worker; no recompute
        self.jobs.start(
            _merge_job,
            self.pipeline,
            classes,
            desc="merging classes",
            eta=True,
            on_done=lambda out: self._on_merged(out, classes),
        )

    def _on_merged(self, out, classes) -> None:
        self.pipeline, self._display = out
        self.result = self.pipeline.classification
        session_results(self.viewer).add(self.pipeline, "classify (merged)")
        self._show()
        self.status.setText(f"merged classes {sorted(set(classes))}: {self.result.n_classes} classes")

    def split(self) -> None:
        """Split the chosen class (re-clustered in a worker, then its parts' mean patterns)."""
        if self.result is None:
            return
        cls, k = self.split_class.value(), self.split_into.value()
        try:
            cube, _cal = self.layer_combo.datacube()
        except Napari4DSTEMError as e:
            self.jobs.error(e)
            return
        self.jobs.start(
            _split_job,
            self.pipeline,
            cls,
            k,
            cube,
            desc="splitting a class",
            eta=True,
            on_done=lambda out: self._on_split(out, cls, k),
        )

    def _on_split(self, out, cls, k) -> None:
        self.pipeline, self._display = out
        self.result = self.pipeline.classification
        session_results(self.viewer).add(self.pipeline, "classify (split)")
        self._show()
        self.status.setText(f"split class {cls} into {k}: {self.result.n_classes} classes")

    def pipeline_result(self):
        return self.pipeline

    def closeEvent(self, event) -> None:
        self.jobs.close()
        super().closeEvent(event)
