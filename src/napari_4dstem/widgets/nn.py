"""The "NN disk detection" dock widget.

Translation only: pick a 4D layer, a probe layer (2D image, e.g. the samples' "probe") and a
model (bundled or cached, from the registry); *Preview* runs the network on the displayed
pattern and shows the predicted "structure factor" image and its peaks (Points); *Run* finds the
disks of every pattern in a worker (progress bar, cancel) and puts the disk-count map in the
real-space viewer. The result (:class:`BraggPeaks`) is ``widget.peaks``, the same type the
correlation path gives, for the lattice and strain steps.

*Fine-tune on this data* adapts the chosen model to the layer's data (issue #17): correlation
labels on patterns drawn from the scan, or from the Real space dock's "scan region" (a thin
area), training in a worker with the loss curve live and, at the end of every epoch, that
epoch's network previewed on the current pattern (from its checkpoint, in another worker); the
result is a user model, selected in the model list when done
(:func:`~napari_4dstem.nn.finetune.iter_finetune`).
"""

from __future__ import annotations

import napari
import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..errors import Napari4DSTEMError
from ..nn.precision import DEFAULT_PRECISION, PRECISIONS
from ._common import (
    CubePicker,
    JobRunner,
    LatestRunner,
    PartialMaps,
    models_changed,
    scan_position,
    watch_dock,
)
from ._forms import form, row, scroll_contents
from ._nn_common import NN_BLOCK, ModelPicker, nn_pattern_job, nn_scan_chunk, threshold_boxes
from ._pipeline import PipelineActions, layer_source, probe_of_layer
from ._plot import TrainingPlot
from ._region import REGION_SHAPES
from ._results import results_viewer, show_map
from ._state import DockState, register_dock
from ._warmup import WarmupLabel
from .results_list import session_results

PEAKS_LAYER = "NN disks (current pattern)"
PRED_LAYER = "NN prediction"


def _epoch_preview_job(checkpoint, model_file, dc, pos, probe, params, cal, epoch):
    """Worker: the network of a training checkpoint (an epoch's end) on the pattern at ``pos``,
    as :func:`_preview_job` with that epoch: ``(pos, img, rows, cal, epoch)``. The checkpoint
    runs with the domain of the model it is fine-tuned from (``params.model``): the disk radius
    the patterns are resampled to, as for the saved model."""
    import dataclasses

    from ..nn.registry import load_model
    from ..nn.train import export_model

    base = load_model(params.model).card or {}
    export_model(checkpoint, model_file, card={"domain": dict(base.get("domain", {}))})
    return (*_preview_job(dc, pos, probe, dataclasses.replace(params, model=str(model_file)), cal), epoch)


def _preview_job(dc, pos, probe, params, cal):
    """Worker: the network's prediction and peaks on the pattern at ``pos`` (with the run's
    keywords: the disks the whole-scan run finds there), and the calibration to show them in."""
    pos, img, rows, _seconds = nn_pattern_job(dc, pos, probe, params)
    return pos, img, rows, cal


class NNDiskWidget(PipelineActions, DockState, QWidget):
    """Dock widget: model, probe, live preview, and the whole scan in a worker."""

    state_key = "nn"

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        watch_dock(self)  # placed in napari's window with our other docks; cleaned up when napari closes it
        self.viewer = viewer
        self.peaks = None
        self.disks = None  # pipelines.DisksResult of the last whole-scan run
        self.layer_combo = CubePicker(viewer)
        self.probe_combo = QComboBox()
        self.model_combo = ModelPicker(self._error)  # listed in a worker, again after a training
        self.min_rel, self.min_sig = threshold_boxes()
        self.mc = QSpinBox()
        self.mc.setRange(0, 64)
        self.mc.setSpecialValueText("off")
        # the network's CPU arithmetic (NNDiskParams.precision)
        self.precision = QComboBox()
        self.precision.addItems(list(PRECISIONS))
        self.precision.setCurrentText(DEFAULT_PRECISION)
        self.precision.setToolTip(
            "the network's arithmetic on the CPU. bfloat16: about 1.6-2.3x faster on CPUs with "
            "native bfloat16 (AVX512-BF16, AMX), disk positions moved by hundredths of a pixel "
            "(0.005-0.02 px RMS measured, docs/nn.md); float32: the model's own arithmetic, slower. "
            "CUDA and MC dropout always run float32."
        )
        self.preview_btn = QPushButton("Preview on the current pattern")
        self.run_btn = QPushButton("Find disks in all patterns")
        self.cancel_btn = QPushButton("Cancel")
        # fine-tuning on this data (correlation labels), a user model as the result
        self.ft_name = QLineEdit("finetuned")
        self.ft_patterns = QSpinBox()
        self.ft_patterns.setRange(4, 100_000)
        self.ft_patterns.setValue(256)
        self.ft_epochs = QSpinBox()
        self.ft_epochs.setRange(1, 1000)
        self.ft_epochs.setValue(4)
        self.ft_region = QCheckBox("only the scan region (Real space dock)")
        self.ft_region.setToolTip(
            "label patterns from the 'scan region' shapes only: pick a thin "
            "area where correlation finds the disks reliably"
        )
        # hand-corrected labels: the preview's disks, edited on the pattern, kept per scan position
        self.correct_btn = QPushButton("Correct these disks")
        self.correct_btn.setToolTip(
            "edit the preview's disks on the pattern: click to add one, select and press Delete to "
            "remove, drag to move; then 'Keep as labels'"
        )
        self.keep_labels_btn = QPushButton("Keep as labels")
        self.clear_labels_btn = QPushButton("Clear labels")
        self.save_labels_btn = QPushButton("Save labels...")
        self.save_labels_btn.setToolTip("the kept labels as JSON, for `napari-4dstem finetune --labels`")
        for b in (self.correct_btn, self.keep_labels_btn):
            b.setEnabled(False)
        self.labels_info = QLabel("no hand-corrected patterns")
        self.corrections: dict[tuple[int, int], np.ndarray] = {}
        self._preview_pos: tuple[int, int] | None = None
        self.finetune_btn = QPushButton("Fine-tune on this data")
        self.finetuned = None  # FineTuneResult of the last run
        self._ft_plot = None
        self._ft_dir = None  # the work folder of the last fine-tuning (shards, checkpoints)
        self._ft_preview = None  # (dc, pos, probe, params, cal) the epochs are previewed on
        self.epoch_previews: list[tuple[int, tuple[int, int], np.ndarray]] = []  # (epoch, pos, (n, 4) rows)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        detect = form(
            ("4D layer", self.layer_combo),
            ("probe layer", self.probe_combo),
            ("model", self.model_combo),
            ("min relative height", self.min_rel),
            ("min disk significance [sd]", self.min_sig),
            ("MC-dropout samples", self.mc),
            ("precision", self.precision),
        )
        ft = form(
            ("new model name", self.ft_name),
            ("patterns", self.ft_patterns),
            ("epochs", self.ft_epochs),
            self.ft_region,
            row(self.correct_btn, self.keep_labels_btn),  # two rows: one of four was 437 px wide
            row(self.clear_labels_btn, self.save_labels_btn),
            self.labels_info,
        )
        lay = QVBoxLayout(self)
        lay.addLayout(detect)
        for w in (self.preview_btn, self.run_btn):
            lay.addWidget(w)
        lay.addLayout(ft)
        for w in (self.finetune_btn, self.progress, self.cancel_btn):
            lay.addWidget(w)
        lay.addLayout(self.action_row())
        lay.addWidget(self.status)
        lay.addWidget(WarmupLabel())
        lay.addStretch()
        self._body = lay  # the form's layout, in the scroll area
        scroll_contents(self)  # narrower and shorter than its form: the window fits the screen
        self.preview_btn.clicked.connect(self.preview)
        self.run_btn.clicked.connect(self.run)
        self.finetune_btn.clicked.connect(self.finetune)
        self.correct_btn.clicked.connect(lambda _=False: self.correct_disks())
        self.keep_labels_btn.clicked.connect(lambda _=False: self.keep_labels())
        self.clear_labels_btn.clicked.connect(lambda _=False: self.clear_labels())
        self.save_labels_btn.clicked.connect(lambda _=False: self.save_labels())
        self.jobs = JobRunner(
            self.status,
            self.cancel_btn,
            buttons=(self.preview_btn, self.run_btn, self.finetune_btn),
            progress_bar=self.progress,
        )
        # the disk-count map fills in the real-space viewer while the network runs
        self.partials = PartialMaps(lambda: results_viewer(self.viewer))
        # the preview runs the network in a worker (1-2 s on a CPU): newest click wins
        self._previewer = LatestRunner(self._show_preview, self._error)
        # each epoch's network of a fine-tuning on the current pattern: newest epoch wins
        self._epoch_previewer = LatestRunner(self._show_epoch_preview, self._error)
        self.last_preview = None  # (n, 2) disk positions of the last preview
        viewer.layers.events.inserted.connect(self._refresh_probes)
        viewer.layers.events.removed.connect(self._refresh_probes)
        self._refresh_probes()
        register_dock(viewer, self)

    @property
    def models_listed(self) -> bool:
        """Whether the model list has arrived from its worker (set False to wait for the next)."""
        return self.model_combo.listed

    @models_listed.setter
    def models_listed(self, value: bool) -> None:
        self.model_combo.listed = bool(value)

    # -- choices ------------------------------------------------------------------------------
    def _refresh_probes(self, event=None) -> None:
        names = [
            lyr.name
            for lyr in self.viewer.layers
            if getattr(lyr, "ndim", 0) == 2 and hasattr(lyr, "contrast_limits") and lyr.name != PRED_LAYER
        ]
        cur = self.probe_combo.currentText()
        self.probe_combo.clear()
        self.probe_combo.addItems(names)
        if cur in names:
            self.probe_combo.setCurrentText(cur)
        elif "probe" in names:
            self.probe_combo.setCurrentText("probe")

    def _say(self, msg: str) -> None:
        self.status.setText(msg)

    def _error(self, exc) -> None:
        self.jobs.error(exc)

    def _inputs(self):
        dc, cal = self.layer_combo.datacube()
        name = self.probe_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise Napari4DSTEMError("add a vacuum probe as a 2D image layer (the samples have 'probe')")
        probe = np.asarray(self.viewer.layers[name].data, dtype=np.float64)
        return dc, cal, probe, self.model_combo.currentText() or None

    def _current_position(self) -> tuple[int, int]:
        return scan_position(self.viewer, self.layer_combo.layer)

    def _min_sig(self) -> float | None:
        return self.min_sig.value() or None

    def nn_params(self):
        """The dock's NNDiskParams (the same dataclass as ``napari-4dstem infer``)."""
        from ..pipelines import NNDiskParams

        # batches of NN_BLOCK patterns, as the blocks of the whole-scan job (see ``run``)
        return NNDiskParams(
            model=self.model_combo.currentText() or None,
            min_relative=self.min_rel.value(),
            mc_samples=self.mc.value(),
            min_significance=self._min_sig(),
            batch_size=NN_BLOCK,
            precision=self.precision.currentText(),
        )

    # -- preview ------------------------------------------------------------------------------
    def preview(self) -> None:
        """Run the network on the displayed pattern in a worker; the prediction and its disks
        appear when done (``last_preview``)."""
        try:
            dc, cal, probe, _model = self._inputs()
            pos = self._current_position()
            params = self.nn_params()
        except Napari4DSTEMError as e:
            self._error(e)
            return
        self._say(f"preview at scan position {pos}...")
        self._previewer.request(_preview_job, dc, pos, probe, params, cal)

    def _show_preview(self, result, note: str | None = None) -> None:
        """Show a preview's prediction and disks; ``note`` (an epoch's preview) goes in the
        loss curve's summary instead of the status line (the job's)."""
        pos, img, rows, cal = result
        kw = cal.napari_kwargs("k")
        b = img.params["frame_step_px"]  # detector px per model-frame px (scale-normalised)
        scale = np.asarray(kw.get("scale", (1.0, 1.0)), float)
        translate = np.asarray(img.params["frame_origin_px"], float) * scale
        if PRED_LAYER in self.viewer.layers:
            lyr = self.viewer.layers[PRED_LAYER]
            lyr.data = img.data
            lyr.scale, lyr.translate = tuple(scale * b), tuple(translate)
        else:
            self.viewer.add_image(
                img.data,
                name=PRED_LAYER,
                colormap="magma",
                blending="additive",
                scale=tuple(scale * b),
                translate=tuple(translate),
                # the pattern's units: a layer without them made napari warn "Inconsistent units"
                units=kw.get("units"),
                axis_labels=kw.get("axis_labels"),
            )
        yx = np.array(rows[:, :2])
        if PEAKS_LAYER in self.viewer.layers:
            self.viewer.layers[PEAKS_LAYER].data = yx
        else:
            self.viewer.add_points(
                yx,
                name=PEAKS_LAYER,
                size=8,
                face_color="transparent",
                border_color="cyan",
                border_width=0.15,
                **kw,
            )
        if note is None:
            self._say(f"{len(yx)} disks at scan position {pos}" + _domain_note(img.params))
        else:
            self.ft_plot.summary.setText(f"{self.ft_plot.summary.text()}; {note}: {len(yx)} disks at {tuple(pos)}")
        self.last_preview = yx
        self._preview_pos = tuple(int(v) for v in pos)
        self.correct_btn.setEnabled(True)
        self.keep_labels_btn.setEnabled(True)

    # -- hand-corrected labels (UX point 17) ----------------------------------------------------
    def correct_disks(self) -> None:
        """Make the preview's disks the selected layer, in napari's add mode, to edit them."""
        if PEAKS_LAYER not in self.viewer.layers:
            self._say("preview a pattern first: its disks are what you correct")
            return
        lyr = self.viewer.layers[PEAKS_LAYER]
        self.viewer.layers.selection.active = lyr
        lyr.mode = "add"
        self._say(
            f"correcting the disks of scan position {self._preview_pos}: click to add, select and "
            "press Delete to remove, drag to move (select mode: S); then 'Keep as labels'"
        )

    def keep_labels(self) -> None:
        """Keep the (edited) disks of the previewed pattern as its labels for fine-tuning."""
        if PEAKS_LAYER not in self.viewer.layers or self._preview_pos is None:
            self._say("preview a pattern first: its disks are what you keep as labels")
            return
        yx = np.asarray(self.viewer.layers[PEAKS_LAYER].data, float).reshape(-1, 2).copy()  # detector px
        self.corrections[self._preview_pos] = yx
        self._show_labels_info()
        self._say(f"{len(yx)} disks kept as the labels of scan position {self._preview_pos}")

    def save_labels(self, path=None):
        """Write the kept labels as JSON (a file dialog without ``path``); the written path or None."""
        if not self.corrections:
            self._say("no labels kept yet: Preview, Correct these disks, Keep as labels")
            return None
        if path is None:
            from qtpy.QtWidgets import QFileDialog

            path, _ = QFileDialog.getSaveFileName(self, "Save disk labels", "disk_labels.json", "JSON (*.json)")
            if not path:
                return None
        from ..nn.finetune import write_corrections

        out = write_corrections(path, self.corrections)  # a few hundred numbers: instant
        self._say(f"{len(self.corrections)} labelled patterns written to {out} (finetune --labels)")
        return out

    def clear_labels(self) -> None:
        self.corrections.clear()
        self._show_labels_info()

    def _show_labels_info(self) -> None:
        n = len(self.corrections)
        self.labels_info.setText(
            "no hand-corrected patterns"
            if not n
            else f"{n} hand-corrected pattern{'s' if n > 1 else ''}: always in the fine-tuning set, with these labels"
        )

    # -- whole scan ---------------------------------------------------------------------------
    def run(self) -> None:
        from ..engine.driver import n_blocks_for
        from ..pipelines import iter_disks

        try:
            dc, cal, _, _ = self._inputs()
            params = self.nn_params()
        except Napari4DSTEMError as e:
            self._error(e)
            return
        # blocks of NN_BLOCK patterns: the job reports progress and can stop after each
        chunk = nn_scan_chunk(dc.scan_shape)
        self.jobs.start(
            iter_disks,
            dc,
            detection=params,
            probe=probe_of_layer(self.viewer.layers[self.probe_combo.currentText()]),
            calibration=cal,
            source=layer_source(self.layer_combo.layer),
            scan_chunk=chunk,
            desc="running the network on every pattern",
            total=n_blocks_for(dc.data, chunk),
            eta=True,
            partials=self.partials.for_scan(cal),
            on_done=self._on_peaks,
        )

    @property
    def _worker(self):
        return self.jobs.worker

    def cancel(self) -> None:
        self.jobs.cancel()

    def _on_peaks(self, disks) -> None:
        self.disks = disks
        session_results(self.viewer).add(disks, "NN disks")
        peaks = self.peaks = disks.peaks
        c = peaks.counts()
        show_map(
            results_viewer(self.viewer),
            "NN disks per pattern",
            c.astype(np.float32),
            peaks.calibration,
            colormap="viridis",
            contrast_limits=(float(c.min()), float(max(c.max(), c.min() + 1))),
        )
        self._say(
            f"{peaks.n_peaks} disks in {c.size} patterns ({c.min()}-{c.max()} per pattern)" + _domain_note(peaks.params)
        )

    # -- fine-tuning ----------------------------------------------------------------------------
    def _ft_version(self, name: str) -> str:
        """The next free integer version of ``name`` in the user model folder."""
        from ..nn.registry import user_model_path, user_models_dir

        user_model_path(name, "1")  # checks the name
        folder = user_models_dir()
        k = 1
        while (folder / f"{name}-{k}.pt").exists():
            k += 1
        return str(k)

    def _ft_mask(self, scan_shape) -> np.ndarray | None:
        if not self.ft_region.isChecked():
            return None
        rv = results_viewer(self.viewer)
        if REGION_SHAPES not in rv.layers or not len(rv.layers[REGION_SHAPES].data):
            raise Napari4DSTEMError("draw a scan region first (Virtual imaging: Region on real space)")
        return np.asarray(rv.layers[REGION_SHAPES].to_masks(mask_shape=tuple(scan_shape))).any(axis=0)

    @property
    def ft_plot(self) -> TrainingPlot:
        """The fine-tuning loss curve, in this dock (made on first use)."""
        if self._ft_plot is None:
            self._ft_plot = TrainingPlot()
            self._body.insertWidget(self._body.indexOf(self.status), self._ft_plot)
        return self._ft_plot

    def finetune(self) -> bool:
        """Fine-tune the chosen model on this layer's data in a worker (loss curve live); the
        result is a user model, added to the model list and selected when done."""
        from ..nn.finetune import FineTuneConfig, iter_finetune

        try:
            dc, cal, probe, model = self._inputs()
            name = self.ft_name.text().strip()
            version = self._ft_version(name)
            region = self._ft_mask(dc.scan_shape)
            config = FineTuneConfig(base=model, n_patterns=self.ft_patterns.value(), epochs=self.ft_epochs.value())
        except (Napari4DSTEMError, ValueError) as e:
            self._error(e)
            return False
        import tempfile

        self.finetuned = None
        self.ft_plot.clear()
        self.epoch_previews = []
        # our own work folder: the epochs' checkpoints are previewed from it while it trains; it
        # lives until the next fine-tuning (or the end of the session) so a preview never loses it
        self._ft_dir = tempfile.TemporaryDirectory(prefix="n4d-finetune-")
        try:
            self._ft_preview = (dc, self._current_position(), probe, self.nn_params(), cal)
        except Napari4DSTEMError:
            self._ft_preview = None  # no pattern shown: no epoch previews
        return self.jobs.start(
            iter_finetune, dc, probe, name=name, version=version, config=config, region=region,
            corrections=dict(self.corrections) or None, work_dir=self._ft_dir.name, eta=True,
            desc=f"fine-tuning {model or 'the default model'} as {name}@{version}",
            on_progress=self._on_ft_progress, on_done=self._on_finetuned,
        )  # fmt: skip

    def _on_ft_progress(self, p) -> None:
        from ..nn.train import TrainProgress

        if isinstance(p, TrainProgress):
            if p.loss is not None:
                self.ft_plot.add_step(p.step, p.loss)
            if p.history:
                self.ft_plot.set_history(p.history)
                self._preview_epoch(p.epoch)

    def _preview_epoch(self, epoch: int) -> None:
        """An epoch ended (its checkpoint is written): its network on the current pattern."""
        from pathlib import Path

        if self._ft_preview is None or self._ft_dir is None:
            return
        work = Path(self._ft_dir.name)
        dc, pos, probe, params, cal = self._ft_preview
        self._epoch_previewer.request(
            _epoch_preview_job, work / "train" / "checkpoint.pt", work / "epoch_preview.pt",
            dc, pos, probe, params, cal, epoch,
        )  # fmt: skip

    def _show_epoch_preview(self, out) -> None:
        *shown, epoch = out
        self._show_preview(tuple(shown), note=f"epoch {epoch} on the pattern")
        pos, rows = shown[0], shown[2]
        self.epoch_previews.append((int(epoch), tuple(int(v) for v in pos), np.array(rows)))

    def _on_finetuned(self, res) -> None:
        self.finetuned = res
        self.ft_plot.set_history(res.history)
        last = res.history[-1] if res.history else {}
        ft = res.card["fine_tune"]
        self._say(
            f"model {res.name}@{res.version} saved ({ft['patterns_kept']} patterns, "
            f"{ft['disks_per_pattern']:.1f} disks each, {ft.get('hand_corrected', 0)} corrected by hand; "
            f"held-out recall against the labels "
            f"{last.get('recall_1px', float('nan')):.2f}): selected for Preview and Find disks"
        )
        self.model_combo.select_after_refresh(f"{res.name}@{res.version}")
        models_changed().emit()

    # -- the result (Save result..., Copy as Python: PipelineActions) ------------------------------
    result_file_name = "nn_disks.h5"

    def pipeline_result(self):
        """The peaks and Bragg vector map of the last whole-scan run."""
        return self.disks


def _domain_note(params: dict) -> str:
    """The model's out-of-domain warning (#17), for the status line."""
    problems = params.get("out_of_domain") or []
    if not problems:
        return ""
    return (
        ". OUTSIDE THE MODEL'S DOMAIN: " + "; ".join(problems) + ". Check against correlation "
        "(Bragg disks widget) or fine-tune the model on such data"
    )
