"""The "Simulation and training data" dock widget: simulate a training set, train a network.

Translation only. *Simulate*: the form becomes a :class:`TrainingSetSpec`; *Preview* runs
:func:`plan_pattern`, :func:`simulate_pattern` and :func:`augment` for one pattern index in a
worker and shows the pattern, its label, the augmented pattern and the probe side by side as
image layers (patterns in log10), with the Bragg positions (and their augmented positions) as
Points; *Run* is :func:`simulate_training_set` in a worker (progress "done / total, ETA",
Cancel; complete shards stay and a new run on the same folder skips them). *Train*:
:func:`iter_train` on a shard folder in a worker, the loss and validation curves live in a dock
(:class:`~._plot.TrainingPlot`), Stop and Resume (from the checkpoint of the last finished
epoch); a finished run is exported (:func:`export_model`) into the user model folder of the
registry, where the "NN disk detection" widget lists it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..analysis.crystal.structure import BUNDLED_CRYSTALS
from ..engine.jobs import Progress
from ..errors import Napari4DSTEMError
from ._common import JobRunner, PartialMaps, guarded, models_changed, watch_dock
from ._forms import folder_row, job_row, scroll_contents, spin, spin_range
from ._plot import TrainingPlot
from ._state import DockState, register_dock

BUNDLED = tuple(BUNDLED_CRYSTALS)  # Au, Cu, Al, Si, Fe, Ti
PATTERN_LAYER = "sim: pattern (log10)"
LABEL_LAYER = "sim: label"
AUG_LAYER = "sim: augmented (log10 counts)"
PROBE_LAYER = "sim: probe"
BRAGG_LAYER = "sim: Bragg positions"
AUG_BRAGG_LAYER = "sim: augmented Bragg positions"
NEWEST_LAYER = "newest simulated pattern"  # the simulation job's partial result (core: NEWEST_PATTERN)
PANELS = (PATTERN_LAYER, LABEL_LAYER, AUG_LAYER, PROBE_LAYER)  # left to right
PLOT_DOCK = "Training curves"


# ------------------------------------------------------------------------------------------
# jobs (run in the worker; they only sequence core calls)
# ------------------------------------------------------------------------------------------
def _preview_job(spec, index: int):
    from ..simulation.augment import augment
    from ..simulation.training import plan_pattern, simulate_pattern

    yield Progress(0, 2, f"simulating pattern {index}")
    params = plan_pattern(spec, index)
    sim = simulate_pattern(spec, params)
    yield Progress(1, 2, "augmenting")
    b = sim["bragg"]
    aug = augment(
        sim["pattern"],
        sim["probe"],
        sim["label"],
        seed=params.seed,
        origin_px=sim["meta"]["origin_px"],
        pixel_size_inv_A=params.pixel_size_inv_A,
        bragg_qy=np.asarray(b["qy"]),
        bragg_qx=np.asarray(b["qx"]),
    )
    yield Progress(2, 2, "done")
    return params, sim, aug, _preview_panels(sim, aug)


def _points_yx(qy, qx) -> np.ndarray:
    return np.stack([np.asarray(qy, float), np.asarray(qx, float)], 1).reshape(-1, 2)


def _preview_panels(sim, aug) -> dict:
    """Worker: what the preview's layers show, ready to set (the GUI thread computes nothing):
    ``{layer name: (data, layer kwargs)}`` for the four panels (patterns in log10) and the two
    Points layers (``(y, x)`` rows, their features), and the panels' width."""
    pat, counts = np.asarray(sim["pattern"], np.float32), np.asarray(aug.pattern, np.float32)
    floor = max(float(pat.max()) * 1e-6, 1e-12)
    logp = np.log10(np.maximum(pat, floor))
    logc = np.log10(1.0 + np.maximum(counts, 0.0))
    b = sim["bragg"]
    hkl = np.asarray(b["hkl"]).reshape(-1, 3)
    feats = {"h": hkl[:, 0], "k": hkl[:, 1], "l": hkl[:, 2], "intensity": np.asarray(b["intensity"])}
    return {
        "width": pat.shape[1],
        PATTERN_LAYER: (
            logp,
            {
                "colormap": "gray",
                "metadata": {"linear": pat},
                "contrast_limits": (float(logp.min()), float(logp.max())),
            },
        ),
        # most reflections are weak next to the 000 peak (1): a gamma brings them out
        LABEL_LAYER: (
            np.asarray(sim["label"], np.float32),
            {"colormap": "magma", "gamma": 0.35, "contrast_limits": (0.0, 1.0)},
        ),
        AUG_LAYER: (
            logc,
            {
                "colormap": "gray",
                "metadata": {"linear": counts},
                "contrast_limits": (0.0, max(float(logc.max()), 1e-3)),
            },
        ),
        PROBE_LAYER: (np.asarray(sim["probe"], np.float32), {"colormap": "gray"}),
        BRAGG_LAYER: (_points_yx(b["qy"], b["qx"]), {"features": feats}),
        AUG_BRAGG_LAYER: (_points_yx(aug.bragg_qy, aug.bragg_qx), {"features": None}),
    }


def _train_job(shards, out_dir, config, resume: bool, name: str):
    from ..nn.registry import user_model_path
    from ..nn.train import export_model, iter_train

    result = yield from iter_train(shards, out_dir=out_dir, config=config, resume=resume)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    version, k = stamp, 1
    while user_model_path(name, version).exists():  # two runs within one second
        k += 1
        version = f"{stamp}-{k}"
    card = {
        "name": name,
        "version": version,
        "training_set": str(shards),
        "run_folder": str(out_dir),
    }
    path = export_model(result.checkpoint, user_model_path(name, version), card=card)
    return result, path, f"{name}@{version}"


def _check_engines(names) -> dict[str, str | None]:
    """Worker: for each engine, None when it can run, else the reason (what to install)."""
    from ..simulation.engines import get_engine

    out: dict[str, str | None] = {}
    for name in names:
        try:
            get_engine(name)
            out[name] = None
        except Napari4DSTEMError as e:
            out[name] = str(e)
    return out


def _set_if_changed(layer, attr: str, value) -> None:
    """Set ``layer.attr = value`` unless it already holds that value (napari re-slices and
    recomputes the viewer's dims at every scale or translate set, even to the same value)."""
    if not np.allclose(np.asarray(getattr(layer, attr), float), np.asarray(value, float)):
        setattr(layer, attr, value)


class SimulationTrainingWidget(DockState, QWidget):
    """Dock widget with two tabs: *Simulate* (a training set) and *Train* (a network)."""

    state_key = "simulation"

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        watch_dock(self)  # placed in napari's window with our other docks; cleaned up when napari closes it
        self.viewer = viewer
        self.preview_result = None
        self._preview_steps: list | None = None  # the preview's layer steps still to run
        self._preview_done = None  # (params, sim, aug) of the preview being shown
        self.sim_result = None
        self.train_result = None
        self.exported = None  # "name@version" of the last exported model
        self._plot_dock = None
        tabs = QTabWidget()
        tabs.addTab(self._build_simulate(), "Simulate")
        tabs.addTab(self._build_train(), "Train")
        self.tabs = tabs
        tabs.currentChanged.connect(self._on_tab)
        lay = QVBoxLayout(self)
        lay.addWidget(tabs)
        lay.addStretch(1)
        scroll_contents(self)  # narrower and shorter than its form: the window fits the screen
        register_dock(viewer, self)

    # -- Simulate tab ---------------------------------------------------------------------------
    def _build_simulate(self) -> QWidget:
        from ..simulation.training import TrainingSetSpec

        d = TrainingSetSpec()
        page = QWidget()
        form = QFormLayout()
        self.crystal_list = QListWidget()
        self.crystal_list.setMaximumHeight(120)
        for name in BUNDLED:
            self._add_crystal_item(name, name, checked=name == "Au")
        self.cif_btn = QPushButton("Add CIF...")
        self.cif_btn.clicked.connect(self._pick_cif)
        form.addRow("crystals", self.crystal_list)
        form.addRow("", self.cif_btn)
        self.engine_combo = QComboBox()
        self._fill_engines()
        form.addRow("engine", self.engine_combo)
        self.n_patterns = spin(1, 10_000_000, d.n_patterns)
        self.per_shard = spin(1, 100_000, d.patterns_per_shard)
        self.size = spin(8, 2048, 128, step=32, suffix=" px")
        form.addRow("patterns", self.n_patterns)
        form.addRow("patterns per shard", self.per_shard)
        form.addRow("pattern size", self.size)
        rows = (
            ("thickness", "thickness", 1.0, 1e5, d.thickness_A, 1, None, " Å"),
            ("convergence", "convergence", 0.01, 100.0, d.convergence_mrad, 2, None, " mrad"),
            ("defocus", "defocus", -1e5, 1e5, d.defocus_A, 1, None, " Å"),
            ("pixel size", "pixel", 1e-4, 1.0, d.pixel_size_inv_A, 4, 0.001, " 1/Å"),
        )
        for label, attr, lo, hi, val, dec, step, suffix in rows:
            row, spins = spin_range(lo, hi, val, decimals=dec, step=step, suffix=suffix)
            setattr(self, attr, spins)
            form.addRow(label, row)
        self.energies = QLineEdit(", ".join(f"{e:g}" for e in d.energies_kev))
        self.energies.setToolTip("beam energies in keV, comma separated; one is drawn per pattern")
        form.addRow("energies (keV)", self.energies)
        self.strain_max = spin(0.0, 0.2, d.strain_max, decimals=4, step=0.005)
        self.seed = spin(0, 2**31 - 1, d.seed)
        self.workers = spin(1, os.cpu_count() or 1, 1)
        form.addRow("strain max", self.strain_max)
        form.addRow("seed", self.seed)
        form.addRow("workers (threads)", self.workers)
        self.sim_out = QLineEdit()
        self.sim_out.setPlaceholderText("folder for the shards and manifest.json")
        form.addRow("output folder", folder_row(self.sim_out, self, "Training-set folder"))
        self.overwrite = QCheckBox("replace a set with other parameters in that folder")
        form.addRow("", self.overwrite)
        self.preview_index = spin(0, 10_000_000, 0)
        self.preview_index.setToolTip("which pattern of the set to preview (plan_pattern index)")
        self.preview_btn = QPushButton("Preview")
        prow = QHBoxLayout()
        prow.addWidget(QLabel("pattern"))
        prow.addWidget(self.preview_index)
        prow.addWidget(self.preview_btn, 1)
        self.sim_run_btn = QPushButton("Run")
        self.sim_cancel_btn = QPushButton("Cancel")
        row, self.sim_progress, self.sim_status = job_row(self.sim_run_btn, self.sim_cancel_btn)
        lay = QVBoxLayout(page)
        lay.addLayout(form)
        lay.addLayout(prow)
        lay.addLayout(row)
        lay.addWidget(self.sim_progress)
        lay.addWidget(self.sim_status)
        lay.addStretch(1)
        self.sim_jobs = JobRunner(
            self.sim_status,
            self.sim_cancel_btn,
            buttons=(self.preview_btn, self.sim_run_btn),
            progress_bar=self.sim_progress,
        )
        # the newest simulated pattern while the set is simulated, at an adaptive 2-5 Hz
        self.sim_partials = PartialMaps(lambda: self.viewer, colormaps={NEWEST_LAYER: "gray"})
        self.preview_btn.clicked.connect(self.preview)
        self.sim_run_btn.clicked.connect(self.run_simulation)
        return page

    def _add_crystal_item(self, text: str, spec: str, *, checked: bool) -> None:
        item = QListWidgetItem(text)
        item.setData(Qt.ItemDataRole.UserRole, spec)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
        item.setToolTip(spec)
        self.crystal_list.addItem(item)

    def _pick_cif(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Crystal structure (CIF)", "", "CIF (*.cif)")
        if path:
            self.add_cif(path)

    def add_cif(self, path: str | os.PathLike) -> bool:
        """Add (checked) the crystal of a CIF file; one that does not load leaves a message."""
        from ..analysis.crystal.structure import load_crystal

        try:
            c = load_crystal(str(path))
        except Napari4DSTEMError as e:
            self.sim_status.setText(str(e))
            return False
        self._add_crystal_item(f"{c.name} ({Path(path).name})", str(path), checked=True)
        return True

    def _fill_engines(self) -> None:
        """Every engine of the registry; those that cannot run are disabled, with the reason
        (what to install) as tooltip."""
        from ..simulation.engines import ENGINES
        from ._common import create_worker

        # whether an engine can run is known by importing its backend (torch, pyprismatic,
        # abTEM: 2.6 s on the GUI thread when the dock opened): a worker checks, the items
        # other than the kinematic one wait disabled until it is done
        self.engines_checked = False
        model = self.engine_combo.model()
        for name in ENGINES:
            self.engine_combo.addItem(name)
            if name != "kinematic":
                item = model.item(self.engine_combo.count() - 1)
                item.setEnabled(False)
                item.setToolTip("checking whether it is installed...")
        create_worker(_check_engines, ENGINES, _connect={"returned": guarded(self, self._on_engines_checked)})

    def _on_engines_checked(self, problems: dict) -> None:
        model = self.engine_combo.model()
        for i in range(self.engine_combo.count()):
            item = model.item(i)
            msg = problems.get(self.engine_combo.itemText(i))
            item.setEnabled(msg is None)
            item.setToolTip(msg or "")
        self.engines_checked = True

    def crystals(self) -> tuple[str, ...]:
        out = []
        for i in range(self.crystal_list.count()):
            item = self.crystal_list.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(item.data(Qt.ItemDataRole.UserRole))
        return tuple(out)

    def spec(self):
        """The :class:`TrainingSetSpec` of the form (Napari4DSTEMError for bad values)."""
        from ..simulation.training import TrainingSetSpec

        try:
            energies = tuple(float(e) for e in self.energies.text().replace(";", ",").split(",") if e.strip())
        except ValueError:
            raise Napari4DSTEMError(
                f"energies: give numbers in keV separated by commas, got {self.energies.text()!r}"
            ) from None
        n = self.size.value()
        return TrainingSetSpec(
            n_patterns=self.n_patterns.value(),
            patterns_per_shard=self.per_shard.value(),
            crystals=self.crystals(),
            engine=self.engine_combo.currentText(),
            shape=(n, n),
            thickness_A=tuple(s.value() for s in self.thickness),
            energies_kev=energies,
            convergence_mrad=tuple(s.value() for s in self.convergence),
            defocus_A=tuple(s.value() for s in self.defocus),
            pixel_size_inv_A=tuple(s.value() for s in self.pixel),
            strain_max=self.strain_max.value(),
            seed=self.seed.value(),
        )

    def preview(self) -> bool:
        """Simulate and augment pattern ``preview_index`` in a worker; layers when done."""
        try:
            spec = self.spec()
        except Napari4DSTEMError as e:
            self.sim_status.setText(str(e))
            return False
        self.preview_result = None  # set once this preview is shown
        return self.sim_jobs.start(
            _preview_job,
            spec,
            self.preview_index.value(),
            desc="previewing one pattern",
            on_done=self._on_preview,
        )

    def _show(self, name: str, data, col: int, **kw):
        """The panel ``name`` showing ``data`` in column ``col``: added once, then updated in
        place, setting only what changed (napari recomputed the dims of every layer for each
        scale or translate set again to the same value: 0.5 s of GUI CPU a preview under load)."""
        gap = 4
        k = self._k_kwargs
        translate = (0.0, col * (data.shape[1] + gap) * k["scale"][1])
        if name in self.viewer.layers:
            lyr = self.viewer.layers[name]
            _set_if_changed(lyr, "scale", k["scale"])
            _set_if_changed(lyr, "translate", translate)
            if lyr.data.shape == data.shape and lyr.data.dtype == data.dtype:
                # the same grid: the viewer recomputes the dims of every layer on a ``data``
                # event, for nothing here (the slice and thumbnail still update: refresh)
                with lyr.events.data.blocker():
                    lyr.data = data
                lyr.refresh()
            else:
                lyr.data = data
            lyr.metadata.update(kw.get("metadata", {}))
            if "contrast_limits" in kw:
                _set_if_changed(lyr, "contrast_limits", kw["contrast_limits"])
            if "gamma" in kw and lyr.gamma != kw["gamma"]:
                lyr.gamma = kw["gamma"]
            return lyr
        return self.viewer.add_image(data, name=name, translate=translate, **k, **kw)

    def _points(self, name: str, yx, col: int, width: int, features=None):
        k = self._k_kwargs
        translate = (0.0, col * (width + 4) * k["scale"][1])
        if name in self.viewer.layers:
            lyr = self.viewer.layers[name]
            _set_if_changed(lyr, "scale", k["scale"])
            _set_if_changed(lyr, "translate", translate)
            lyr.data = yx
            if features is not None:
                lyr.features = features
            return lyr
        return self.viewer.add_points(
            yx,
            name=name,
            translate=translate,
            size=5,
            face_color="transparent",
            border_color="cyan",
            border_width=0.15,
            features=features,
            **k,
        )

    def _on_preview(self, out) -> None:
        """Show the preview's panels (made in the worker, ``_preview_panels``), one layer per
        event-loop turn (``_next_preview_step``): the first preview adds six layers (napari builds
        each one's visual and controls on the GUI thread, 0.3-1.3 s each under load: six in one
        turn froze the window 5-7 s), a later one updates them in place, setting only what changed.
        The window stays live in between; ``preview_result`` is set once all are shown."""
        from ..data.calibration import Calibration

        params, sim, aug, panels = out
        # in 1/A like the datasets' patterns: pixel layers beside calibrated ones made napari
        # warn "Inconsistent units" and drop the scale bar's units
        self._k_kwargs = Calibration(k_pixel_size=params.pixel_size_inv_A, k_units="1/A").napari_kwargs("k")
        w = panels["width"]
        steps = [
            (lambda n=name, c=col: self._show(n, panels[n][0], c, **panels[n][1])) for col, name in enumerate(PANELS)
        ]
        steps += [
            (lambda n=name, c=col: self._points(n, panels[n][0], c, w, panels[n][1]["features"]))
            for name, col in ((BRAGG_LAYER, 0), (AUG_BRAGG_LAYER, 2))
        ]
        self._preview_steps = steps
        self._preview_done = (params, sim, aug)
        self.sim_status.setText(f"pattern {params.index}: showing the preview...")
        self._next_preview_step()

    def _next_preview_step(self) -> None:
        """Run the preview's next layer step, the rest in the next event-loop turns: adding a
        layer, or setting one's scale and translate (a new pattern's pixel size), makes napari
        recompute the dims of every layer and relist it (60-200 ms of GUI CPU under load each)."""
        from qtpy.QtCore import QTimer

        steps = self._preview_steps
        if steps:
            steps.pop(0)()
            if steps:
                QTimer.singleShot(0, guarded(self, self._next_preview_step))
                return
        if steps is None or self._preview_done is None:
            return
        params, sim, aug = self.preview_result = self._preview_done
        self._preview_done = None
        b = sim["bragg"]
        za = "random orientation" if params.zone_axis is None else "[" + " ".join(map(str, params.zone_axis)) + "]"
        a = aug.params
        self.sim_status.setText(
            f"pattern {params.index}: {Path(params.crystal).stem} {za}, {params.thickness_A:.0f} Å, "
            f"{params.energy_kev:g} keV, {params.convergence_mrad:.2f} mrad, defocus "
            f"{params.defocus_A:.0f} Å, {params.pixel_size_inv_A:.4f} 1/Å/px, "
            f"{len(b['qy'])} reflections; augmented: dose {a.dose_e:.2g} e, ellipticity "
            f"{a.ellipticity:.3f}, shift ({a.shift_px[0]:.1f}, {a.shift_px[1]:.1f}) px"
        )

    def run_simulation(self) -> bool:
        """Simulate the training set into the output folder in a worker (resumes a set)."""
        from ..simulation.training import simulate_training_set

        try:
            spec = self.spec()
            folder = self.sim_out.text().strip()
            if not folder:
                raise Napari4DSTEMError("choose an output folder for the training set")
        except Napari4DSTEMError as e:
            self.sim_status.setText(str(e))
            return False
        from ..data.calibration import Calibration

        self.sim_result = None
        # the patterns' mean pixel size (each pattern draws its own from the range)
        cal = Calibration(k_pixel_size=float(np.mean(spec.pixel_size_inv_A)), k_units="1/A")
        return self.sim_jobs.start(
            simulate_training_set,
            spec,
            folder,
            workers=self.workers.value(),
            executor="threads",
            overwrite=self.overwrite.isChecked(),
            desc="simulating the training set",
            total=spec.n_patterns,
            eta=True,
            partials=self.sim_partials.for_pattern(cal),
            on_done=self._on_simulated,
        )

    def _on_simulated(self, result) -> None:
        self.sim_result = result
        self.sim_status.setText(
            f"{result.n_patterns} patterns in {result.folder}: {len(result.shards_written)} "
            f"shards written, {len(result.shards_skipped)} were complete ({result.seconds:.1f} s)"
        )
        if not self.shard_dir.text().strip():
            self.shard_dir.setText(str(result.folder))

    # -- Train tab --------------------------------------------------------------------------------
    def _build_train(self) -> QWidget:
        from ..nn.model import MODEL_SIZES, ModelConfig
        from ..nn.train import TrainConfig

        d, m = TrainConfig(), ModelConfig()
        page = QWidget()
        form = QFormLayout()
        self.shard_dir = QLineEdit()
        self.shard_dir.setPlaceholderText("a folder of training shards (Simulate > Run)")
        form.addRow("shard folder", folder_row(self.shard_dir, self, "Training shards"))
        self.epochs = spin(1, 100_000, d.epochs)
        self.steps = spin(0, 10_000_000, 0)
        self.steps.setSpecialValueText("one pass")
        self.batch = spin(1, 4096, d.batch_size)
        self.lr = spin(1e-6, 1.0, d.lr, decimals=6, step=1e-4)
        self.device = QComboBox()
        self.device.addItem("cpu")
        self.model_size = QComboBox()
        self.model_size.addItems([str(s) for s in MODEL_SIZES])
        self.model_size.setCurrentText(str(m.size))
        self.width = spin(1, 256, m.width)
        self.strain_check = QCheckBox("strain RMSE on a held-out thick scan (slower)")
        self.strain_check.setChecked(d.strain_scan is not None)
        form.addRow("epochs", self.epochs)
        form.addRow("steps per epoch", self.steps)
        form.addRow("batch size", self.batch)
        form.addRow("learning rate", self.lr)
        form.addRow("device", self.device)
        form.addRow("model size (px)", self.model_size)
        form.addRow("model width", self.width)
        form.addRow("validation", self.strain_check)
        self.train_out = QLineEdit()
        self.train_out.setPlaceholderText("folder for checkpoint.pt and history.json")
        form.addRow("run folder", folder_row(self.train_out, self, "Training run folder"))
        self.model_name = QLineEdit("fcunet-user")
        self.model_name.setToolTip("the trained model appears as name@date-time in the NN disk detection widget")
        form.addRow("model name", self.model_name)
        self.train_btn = QPushButton("Train")
        self.resume_btn = QPushButton("Resume")
        self.stop_btn = QPushButton("Stop")
        self.train_btn.setToolTip("start a new run (replaces a checkpoint in the run folder)")
        self.resume_btn.setToolTip("continue from the checkpoint of the last finished epoch")
        row, self.train_progress, self.train_status = job_row(self.train_btn, self.resume_btn, self.stop_btn)
        lay = QVBoxLayout(page)
        lay.addLayout(form)
        lay.addLayout(row)
        lay.addWidget(self.train_progress)
        lay.addWidget(self.train_status)
        lay.addStretch(1)
        self.train_jobs = JobRunner(
            self.train_status,
            self.stop_btn,
            buttons=(self.train_btn, self.resume_btn),
            progress_bar=self.train_progress,
        )
        self.stop_btn.clicked.connect(self._on_stop)
        self.train_btn.clicked.connect(lambda: self.train(resume=False))
        self.resume_btn.clicked.connect(lambda: self.train(resume=True))
        self.train_out.textChanged.connect(lambda _: self._update_resume())
        self._plot = None
        self._devices_filled = False
        self._update_resume()
        return page

    def _on_tab(self, index: int) -> None:
        if self.tabs.tabText(index) == "Train":
            self._fill_devices()

    def _fill_devices(self) -> bool:
        """Add "cuda" when PyTorch sees a GPU. Importing torch takes seconds, so this runs when
        the Train tab is first shown (or training starts), not when the widget opens."""
        if self._devices_filled:
            return True
        try:
            import torch
        except ImportError:
            self.train_btn.setEnabled(False)
            self.train_status.setText("training needs PyTorch: pip install 'napari-4dstem[nn]'")
            return False
        self._devices_filled = True
        if torch.cuda.is_available():
            self.device.addItem("cuda")
            self.device.setCurrentText("cuda")
        return True

    @property
    def plot(self) -> TrainingPlot:
        """The training-curve plot (made on first use: matplotlib takes a while to import)."""
        if self._plot is None:
            self._plot = TrainingPlot()
        return self._plot

    def _update_resume(self) -> None:
        out = self.train_out.text().strip()
        ok = bool(out) and (Path(out) / "checkpoint.pt").is_file()
        self.resume_btn.setEnabled(ok and not self.train_jobs.busy)

    def train_config(self):
        from ..nn.model import ModelConfig
        from ..nn.train import TrainConfig

        return TrainConfig(
            model=ModelConfig(size=int(self.model_size.currentText()), width=self.width.value()),
            epochs=self.epochs.value(),
            steps_per_epoch=self.steps.value() or None,
            batch_size=self.batch.value(),
            lr=self.lr.value(),
            strain_scan=TrainConfig().strain_scan if self.strain_check.isChecked() else None,
            device=self.device.currentText(),
        )

    def show_plot(self) -> None:
        """The training curves as a dock of the viewer (added once)."""
        if self._plot_dock is None:
            self._plot_dock = self.viewer.window.add_dock_widget(self.plot, name=PLOT_DOCK, area="right")
        self._plot_dock.show()

    def train(self, resume: bool = False) -> bool:
        """Train on the shard folder in a worker; ``resume`` continues the run folder's
        checkpoint. The finished model is exported to the user model folder."""
        try:
            shards = self.shard_dir.text().strip()
            out = self.train_out.text().strip()
            if not shards or not Path(shards).is_dir():
                raise Napari4DSTEMError(f"choose a folder of training shards (got {shards!r})")
            if not out:
                raise Napari4DSTEMError("choose a run folder for the checkpoints")
            config = self.train_config()
            name = self.model_name.text().strip()
            from ..nn.registry import user_model_path

            user_model_path(name, "0")  # checks the name before hours of training
        except Napari4DSTEMError as e:
            self.train_status.setText(str(e))
            return False
        if not self._fill_devices():
            return False
        self.train_result = None
        self.plot.clear()
        hist = Path(out) / "history.json"
        if resume and hist.is_file():
            self.plot.set_history(json.loads(hist.read_text()))
        self.show_plot()
        started = self.train_jobs.start(
            _train_job,
            shards,
            out,
            config,
            resume,
            name,
            desc="resuming training" if resume else "training",
            total=None,
            eta=True,
            on_done=self._on_trained,
            on_progress=self._on_train_progress,
            on_finished=self._update_resume,
        )
        return started

    def _on_train_progress(self, p) -> None:
        from ..nn.train import TrainProgress

        if not isinstance(p, TrainProgress):
            return
        if p.loss is not None:
            self.plot.add_step(p.step, p.loss)
        if p.history:
            self.plot.set_history(p.history)

    def _on_stop(self) -> None:
        self.train_status.setText("stopped: Resume continues from the checkpoint of the last finished epoch")

    def _on_trained(self, out) -> None:
        result, path, name = out
        self.train_result, self.exported = result, name
        self.plot.set_history(result.history)
        self.train_status.setText(
            f"{result.epochs_done} epochs, {result.steps_done} steps in {result.wall_s:.0f} s; "
            f"model {name} saved to {path} (listed in NN disk detection)"
        )
        models_changed().emit()

    # -- lifetime ---------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        self.sim_jobs.close()
        self.train_jobs.close()
        if self._plot_dock is not None:
            try:
                self.viewer.window.remove_dock_widget(self._plot_dock)
            except (RuntimeError, KeyError, ValueError, AttributeError):  # AttributeError: napari closing its window
                pass
            self._plot_dock = None
        super().closeEvent(event)
