"""The "Orientation mapping" dock widget (ACOM): crystal -> plan -> check one pattern -> map.

Translation only: the crystal, the orientation plan, the Bragg disks, the matching, the IPF
colours and the exports are core functions (``analysis.crystal.structure``, ``.orientation``, ``.bragg``,
``.acom``, ``.ipf``; the same steps as ``napari-4dstem acom``). Long steps run as core jobs in
a worker with progress and Cancel. Scan maps go to the linked real-space viewer
(``_results.py``); the check of one pattern draws the measured peaks and the best template's
spots (with their hkl) as Points layers over the pattern in the main viewer. After a run, a
click or drag on its maps moves the scan and shows that pattern's peaks, best template and
top-N alternatives as the run found them; hovering over the maps (the scan stays) shows the
hovered pattern's best match, score and alternatives in the dock's hover line, read from the
run in a worker (newest pixel wins).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..analysis.crystal.structure import BUNDLED_CRYSTALS
from ..data.calibration import Calibration
from ..errors import CalibrationError, Napari4DSTEMError
from ..pipelines import PatternCheck
from ._common import (
    CubePicker,
    JobRunner,
    LatestRunner,
    PartialMaps,
    guarded,
    is_deleted,
    responsive_chunk,
    scan_position,
    watch_dock,
)
from ._forms import group, row, scroll_contents, spin
from ._pipeline import PipelineActions, layer_source, probe_of_layer, tag_layer
from ._plot import show_rgba
from ._results import results_viewer, show_map, show_maps
from ._state import DockState, register_dock
from .results_list import session_results

# the bundled crystals, Fe and Ti shown by their structure aliases (load_crystal takes both)
BUNDLED = tuple({"Fe": "Fe-bcc", "Ti": "Ti-hcp"}.get(k, k) for k in BUNDLED_CRYSTALS)
CIF_ITEM = "CIF file..."
# the intensity-power choices (label, ACOMParams.intensity_power)
INTENSITY_POWERS = (("auto", "auto"), ("0.25 (thin films, dynamical)", 0.25), ("0.5 (amplitudes)", 0.5))
MEASURED_LAYER = "ACOM measured peaks"
TEMPLATE_LAYER = "ACOM best template"
HOVER_IDLE = "hover over the orientation map: that pattern's best matches, as the run found them"


# ------------------------------------------------------------------------------------------
# jobs (run in the worker; they only sequence pipeline calls)
# ------------------------------------------------------------------------------------------
def _plans_job(crystals, acom):
    from ..pipelines import iter_plans

    return (yield from iter_plans(acom, acom.energy_kev, acom.k_max_inv_A, crystals))


def _check_job(dc, cal, probe, iy, ix, crystals, plans, acom, min_peaks):
    from ..pipelines import iter_acom_pattern, iter_probe_template
    from ._warmup import iter_wait_warm

    # not the matcher's first compile in this thread while the warm-up compiles it (#15)
    yield from iter_wait_warm("the disk detection and the matcher")
    if plans is None:
        plans = yield from _plans_job(crystals, acom)
    template = yield from iter_probe_template(dc, probe)
    check = yield from iter_acom_pattern(
        dc.pattern(iy, ix), iy=iy, ix=ix, template=template, plans=plans, calibration=cal, acom=acom
    )
    return plans, check, check_overlay(check, plans, cal, min_peaks)


def _run_job(dc, **kwargs):
    """Worker: :func:`~napari_4dstem.pipelines.iter_acom` once the kernel warm-up is done."""
    from ..pipelines import iter_acom
    from ._warmup import iter_wait_warm

    yield from iter_wait_warm("the disk detection and the matcher")
    return (yield from iter_acom(dc, **kwargs))


def _follow_job(run, iy: int, ix: int, min_peaks: int):
    """Worker: the run's matches at ``(iy, ix)`` (no matching again) and their overlay."""
    from ..pipelines import check_from_run

    check = check_from_run(run, iy, ix)
    return check, check_overlay(check, list(run.plans), check.result.calibration, min_peaks)


def check_overlay(check: PatternCheck, plans, cal: Calibration, min_peaks: int):
    """Worker: what the dock draws for a pattern's matches: ``(spots, text)``, ``spots`` the best
    template's reflections over the pattern as ``(yx detector px (n, 2), hkl labels, intensity
    relative to the strongest)`` (None when the pattern is not indexed), ``text`` its
    :func:`match_lines`. The kinematic pattern is computed here, off the GUI thread (its first
    call loads the scattering tables)."""
    text = "\n".join(match_lines(check, min_peaks))
    res = check.result
    if res is None or not res.valid[0, 0]:
        return None, text
    from ..analysis.acom.plan import gaussian_width_inv_A

    crystal = res.crystals[res.phase[0, 0, 0]]
    plan = plans[res.phase[0, 0, 0]]
    pat = crystal.kinematic_pattern(
        res.orientation[0, 0, 0],
        energy_kev=plan.params["energy_kev"],
        k_max_inv_A=plan.params["k_max_inv_A"],
        excitation_width_inv_A=gaussian_width_inv_A(plan),
    )
    if pat.intensity.size == 0:  # e.g. far off any zone at a small k_max (UX audit: a raw numpy error)
        return None, f"{text}\n(the best match has no reflection within k_max: no template spots to draw)"
    yx = pat.detector_px(origin_px=check.origin_px, k_pixel_size_inv_A=cal.k_pixel_size_in("1/A"))
    rel = pat.intensity / max(float(pat.intensity.max()), 1e-300)
    return (yx, [_hkl_label(h) for h in pat.hkl], rel), text


def match_lines(check: PatternCheck, min_peaks: int) -> list[str]:
    """The text of a pattern's matches: a head line with its peaks and the best match (Euler
    angles, correlation, reliability, peaks matched), then the top-N alternatives, each with
    its misorientation from the best (or why the pattern was not indexed)."""
    from ..analysis.crystal.symmetry import misorientation_deg

    head = f"pattern ({check.iy}, {check.ix}): {len(check.peaks_yx)} peaks"
    res = check.result
    if res is None or not res.valid[0, 0]:
        why = "no central beam found (origin unknown)" if res is None else f"fewer than {min_peaks} usable peaks"
        return [f"{head}; not indexed: {why}"]
    U = res.orientation[0, 0, 0]
    crystal = res.crystals[res.phase[0, 0, 0]]
    eul = res.euler_deg(0)[0, 0]
    lines = [
        f"{head}; best {crystal.name}: Euler (Bunge) {eul[0]:.1f} {eul[1]:.1f} {eul[2]:.1f} deg, "
        f"correlation {res.correlation[0, 0, 0]:.3f}, reliability {res.reliability[0, 0]:.2f}, "
        f"{res.n_matched[0, 0, 0]} peaks matched{_turn_note(res, 0)}"
    ]
    for m in range(1, res.orientation.shape[2]):
        if res.phase[0, 0, m] < 0:
            continue
        e = res.euler_deg(m)[0, 0]
        other = res.crystals[res.phase[0, 0, m]]
        away = (
            f", {misorientation_deg(U, res.orientation[0, 0, m], crystal.point_group):.1f} deg from the best"
            if other is crystal
            else ""
        )
        lines.append(
            f"#{m + 1} {other.name}: Euler {e[0]:.1f} {e[1]:.1f} {e[2]:.1f} deg, "
            f"correlation {res.correlation[0, 0, m]:.3f}{away}{_turn_note(res, m)}"
        )
    return lines


def _zone_uvw(crystal, U: np.ndarray, P: np.ndarray) -> str:
    """``[uvw]`` of the zone axis ``z`` with ``P = U R(z, 180 deg)`` (``R = U^T P = 2 z z^T - 1``)."""
    zz = 0.5 * (U.T @ P + np.eye(3))  # z z^T
    z = zz[:, int(np.argmax(np.diag(zz)))]
    z = z / np.linalg.norm(z)
    uvw = z @ np.linalg.inv(np.asarray(crystal.lattice, float))  # d = uvw @ lattice (rows a, b, c)
    uvw = uvw / np.max(np.abs(uvw))
    for k in range(1, 13):  # the smallest integers along it (zones of low index)
        if np.allclose(k * uvw, np.round(k * uvw), atol=0.02 * k):
            uvw = np.round(k * uvw).astype(int)
            break
    else:
        return "[" + " ".join(f"{v:.2f}" for v in uvw) + "]"
    if uvw[np.flatnonzero(uvw)[0]] < 0:  # [uvw] and [-u-v-w] are one zone
        uvw = -uvw
    return "[" + " ".join(str(int(v)) for v in uvw) + "]"


def _turn_note(res, m: int) -> str:
    """``"; ambiguous: 180 deg about [uvw] gives the same pattern"`` where match ``m``'s turn is
    undecided (its zone partner draws the same peaks, docs/acom.md), else ``""``."""
    amb = getattr(res, "turn_ambiguous", None)
    if amb is None or not amb[0, 0, m] or res.turn_partner is None:
        return ""
    P = res.turn_partner[0, 0, m]
    if not np.isfinite(P).all():
        return ""
    crystal = res.crystals[res.phase[0, 0, m]]
    return f"; ambiguous: 180 deg about {_zone_uvw(crystal, res.orientation[0, 0, m], P)} gives the same pattern"


def _hover_job(run, iy: int, ix: int, min_peaks: int):
    """Worker: the run's matches of the hovered pattern, ``(check, text)`` (no matching again)."""
    from ..pipelines import check_from_run

    check = check_from_run(run, iy, ix)
    return check, "\n".join(match_lines(check, min_peaks))


def _hkl_label(hkl) -> str:
    return " ".join(str(int(v)) for v in hkl)


# ------------------------------------------------------------------------------------------
def _key_image(group, size: int = 128):
    """Worker: ``(group, axis labels, RGBA uint8 key image)``."""
    from ..analysis.acom.ipf import ipf_key, ipf_key_image

    _, _, labels = ipf_key(group)
    return group, labels, (255 * np.clip(ipf_key_image(group, size=size), 0, 1)).astype(np.uint8)


def _ipf_images(res, run=None, size: int = 128):
    """Worker: ``(res, {"x"|"y"|"z": IPF RGB map}, [colour key per crystal], {name: saved map})``
    (images as float32); the saved maps are what File > Save writes for the layers (with the
    pipeline run's recipe when there is one): Euler angles and IPF colours are computed here."""
    from ..analysis.acom.ipf import ipf_key_image

    rgb = {d: res.ipf_rgb(d).astype(np.float32) for d in ("x", "y", "z")}
    keys = [ipf_key_image(c.point_group, size=size).astype(np.float32) for c in res.crystals]
    saved = {m.name: m for m in (run.saved_objects() if run is not None else res.to_maps())}
    return res, rgb, keys, saved


def _write_ang(result, path) -> Path:
    """Worker: the orientation map as a TSL .ang file."""
    return result.write_ang(path, overwrite=True)


def _write_maps(run, result, peaks, path) -> Path:
    """Worker: the ACOM run (with its recipe), or the maps and peaks, to an EMD file."""
    if run is not None:
        return run.save(path, overwrite=True)
    from ..io import emd

    objs = [*result.to_maps()] + ([peaks] if peaks is not None else [])
    return emd.write(path, *objs, overwrite=True)


class OrientationWidget(PipelineActions, DockState, QWidget):
    """Dock widget: orientation (and phase) mapping from Bragg disks (ACOM)."""

    state_key = "orientation"

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        watch_dock(self)  # placed in napari's window with our other docks; cleaned up when napari closes it
        self.viewer = viewer
        self._cif_crystal = None  # Crystal loaded from a CIF
        self._cif_path = None  # ... and its file (the ACOMParams name it)
        self.run = None  # pipelines.ACOMRun of the last run
        self.plans = None  # list[OrientationPlan] for the current parameters
        self._plan_key = None
        self.peaks = None  # BraggPeaks of the current layer (cached between runs)
        self._peaks_key = None
        self.check = None  # PatternCheck of the last "Check current pattern"
        self.result = None  # ACOMResult of the last run
        self._key_rgba = None
        self._build_ui()
        self.layer_combo.currentTextChanged.connect(self._on_layer)
        self._on_layer()
        register_dock(viewer, self)

    # -- UI -----------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.layer_combo = CubePicker(self.viewer)
        self.crystal_combo = QComboBox()
        self.crystal_combo.addItems([*BUNDLED, CIF_ITEM])
        self.crystal_label = QLabel("")
        self.crystal_label.setWordWrap(True)
        self.energy = spin(1.0, 3000.0, 300.0, decimals=1, suffix=" keV", step=10.0)
        self.k_max = spin(0.1, 10.0, 1.2, decimals=2, suffix=" 1/A", step=0.05)
        self.step = spin(0.1, 30.0, 2.0, decimals=2, suffix=" deg", step=0.5)
        self.thickness = spin(0.5, 1000.0, 10.0, decimals=1, suffix=" nm", step=1.0)
        self.n_matches = spin(1, 10, 1)
        self.min_peaks = spin(1, 100, 5)
        # ACOMParams.intensity_power: auto (0.25, refined again at 0.5 when the peaks follow the
        # plan's rocking curve), or one fixed power
        self.intensity_power = QComboBox()
        for text, value in INTENSITY_POWERS:
            self.intensity_power.addItem(text, value)
        self.intensity_power.setToolTip(
            "peak and template intensities to this power: auto uses 0.25 (robust to thin films and "
            "dynamical patterns) and refines the first match again at 0.5 when the patterns follow "
            "the plan's rocking curve (median best correlation >= 0.95)"
        )
        self.build_btn = QPushButton("Build plan")
        pg = group(
            "Crystal and plan",
            ("4D layer", self.layer_combo),
            ("crystal", self.crystal_combo),
            self.crystal_label,
            ("beam energy", self.energy),
            ("k_max", self.k_max),
            ("plan step", self.step),
            ("thickness", self.thickness),
            self.build_btn,
        )

        self.check_btn = QPushButton("Check current pattern")
        self.run_btn = QPushButton("Run on all")
        self.follow = QCheckBox("after a run: show its matches at the scan position")
        self.follow.setChecked(True)
        self.follow.setToolTip(
            "click or drag on the orientation map (Real space): the pattern's peaks, the best "
            "template over it, its score and the top-N alternatives, as the run found them"
        )
        # hovering over the run's maps: that pattern's matches here, the scan stays (UX point 19)
        self.hover_label = QLabel(HOVER_IDLE)
        self.hover_label.setWordWrap(True)
        self.hover_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        mg = group(
            "Matching",
            ("n matches", self.n_matches),
            ("min peaks", self.min_peaks),
            ("intensity power", self.intensity_power),
            self.check_btn,
            self.run_btn,
            self.follow,
            self.hover_label,
        )

        self.ang_btn = QPushButton("Export .ang...")
        self.emd_btn = QPushButton("Save maps (EMD)...")
        self.copy_btn = QPushButton("Copy as Python")
        for b in (self.ang_btn, self.emd_btn, self.copy_btn):
            b.setEnabled(False)
        exp = row(self.ang_btn, self.emd_btn, self.copy_btn)

        self.key_image = QLabel()
        self.key_image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.key_label = QLabel("")
        self.key_label.setWordWrap(True)
        self.key_label.setAlignment(Qt.AlignmentFlag.AlignCenter)

        self.progress = QProgressBar()
        self.cancel_btn = QPushButton("Cancel")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        layout = QVBoxLayout(self)
        layout.addWidget(pg)
        layout.addWidget(mg)
        layout.addLayout(exp)
        layout.addWidget(self.key_image)
        layout.addWidget(self.key_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.cancel_btn)
        layout.addWidget(self.status)
        layout.addStretch(1)
        scroll_contents(self)  # narrower and shorter than its form: the window fits the screen

        self.crystal_combo.activated.connect(self._on_crystal_activated)
        self.build_btn.clicked.connect(self.build_plan)
        self.check_btn.clicked.connect(self.check_pattern)
        self.run_btn.clicked.connect(self.run_scan)
        self.jobs = JobRunner(
            self.status,
            self.cancel_btn,
            progress_bar=self.progress,
            buttons=(self.build_btn, self.check_btn, self.run_btn),
        )
        # while the map runs: the disk counts, then the matching score and the correlation fill
        # in the real-space viewer (the final correlation reuses its layer; the others are
        # hidden when the final maps arrive)
        self.partials = PartialMaps(self.results, colormaps={"correlation": "gray"})
        # the run's matches follow the scan position (UX point 19), read in a worker, newest wins
        from ..plugin_api import events

        self._follower = LatestRunner(self._on_followed, self._on_error)
        self._hoverer = LatestRunner(self._on_hovered, self._on_error)
        self.hover_check = None  # PatternCheck of the pattern under the mouse
        self._hover_pixel = None  # the scan pixel last asked for (a move within it asks nothing)
        self._hooked = None  # the real-space viewer with our hover callback (a weak reference)
        events(self.viewer).pattern_changed.connect(guarded(self, self._on_scan_moved))
        self.follow.toggled.connect(lambda on: on and self._on_scan_moved(*self.scan_position()))
        self.ang_btn.clicked.connect(lambda: self.export_ang())
        self.emd_btn.clicked.connect(lambda: self.save_maps())
        self.copy_btn.clicked.connect(lambda: self.copy_as_python())

    # -- inputs -------------------------------------------------------------------------------
    @property
    def layer(self):
        return self.layer_combo.layer

    def results(self):
        return results_viewer(self.viewer)

    def _on_layer(self, _=None) -> None:
        """Beam energy and k_max (the detector's reach from the origin) from the layer."""
        self.peaks, self._peaks_key = None, None
        if self.layer is None:
            return
        try:
            dc, cal = self.layer_combo.datacube()
        except Napari4DSTEMError:
            return
        if cal.beam_energy_kev:
            self.energy.setValue(float(cal.beam_energy_kev))
        try:
            px = cal.replace(beam_energy_kev=self.energy.value()).k_pixel_size_in("1/A")
        except CalibrationError as e:
            self.status.setText(f"orientation mapping needs a calibrated detector: {e}")
            return
        ny, nx = dc.detector_shape
        oy, ox = cal.origin_px if cal.origin_px is not None else ((ny - 1) / 2, (nx - 1) / 2)
        reach = min(oy, ox, ny - 1 - oy, nx - 1 - ox) * px
        self.k_max.setValue(float(np.floor(100 * reach) / 100))

    def _on_crystal_activated(self, _=None) -> None:
        if self.crystal_combo.currentText() != CIF_ITEM:
            self.crystal_label.setText("")
            return
        path, _ = QFileDialog.getOpenFileName(self, "Crystal structure (CIF)", "", "CIF (*.cif)")
        if path:
            self.load_cif(path)
        elif self._cif_crystal is None:
            self.crystal_combo.setCurrentIndex(0)

    def extra_state(self) -> dict:
        cif = self._cif_path if self.crystal_combo.currentText() == CIF_ITEM else None
        return {"cif": cif}

    def restore_extra(self, state: dict) -> None:
        if state.get("cif"):
            self.load_cif(state["cif"])

    def load_cif(self, path: str | Path) -> bool:
        """Use the crystal of a CIF file; a file that does not parse leaves a message."""
        from ..analysis.crystal.structure import Crystal

        try:
            crystal = Crystal.from_cif(path)
            _ = crystal.point_group  # spglib: fails on a structure without symmetry information
        except Exception as e:  # gemmi / spglib raise their own types
            msg = str(e) if isinstance(e, Napari4DSTEMError) else f"{type(e).__name__}: {e}"
            self.status.setText(f"could not read the CIF {Path(path).name}: {msg}")
            return False
        self._cif_crystal, self._cif_path = crystal, str(path)
        self.crystal_combo.setCurrentText(CIF_ITEM)
        a, b, c, al, be, ga = crystal.cell_parameters
        self.crystal_label.setText(
            f"{crystal.name} ({crystal.formula}), {crystal.spacegroup}, a b c = {a:.4g} {b:.4g} "
            f"{c:.4g} A, {al:.4g} {be:.4g} {ga:.4g} deg"
        )
        self.status.setText(f"loaded {Path(path).name}")
        return True

    def crystals(self) -> list:
        """The crystal to match: the loaded CIF's Crystal, or a bundled crystal's name (the jobs
        build it with ``load_crystal`` in their worker: built here it held the GUI thread for
        symmetry expansion at every click, #15)."""
        name = self.crystal_combo.currentText()
        if name == CIF_ITEM:
            if self._cif_crystal is None:
                raise Napari4DSTEMError("choose a CIF file, or a bundled crystal")
            return [self._cif_crystal]
        return [name]

    def acom_params(self, *, n_matches: int | None = None):
        """The dock's ACOMParams (the same dataclass as the CLI and the demo)."""
        from ..pipelines import ACOMParams

        name = self.crystal_combo.currentText()
        crystal = self._cif_path if name == CIF_ITEM else name
        return ACOMParams(
            crystals=(crystal or "",),
            energy_kev=self.energy.value(),
            k_max_inv_A=self.k_max.value(),
            step_deg=self.step.value(),
            thickness_nm=self.thickness.value(),
            n_matches=n_matches or self.n_matches.value(),
            min_peaks=self.min_peaks.value(),
            intensity_power=self.intensity_power.currentData(),
        )

    def _current_plans(self, crystals, acom):
        """The built plans when they fit the current parameters, else None (rebuilt in the job)."""
        key = (
            tuple(id(c) if c is self._cif_crystal else str(c) for c in crystals),
            (acom.energy_kev, acom.k_max_inv_A, acom.step_deg, acom.inplane_step_deg, acom.thickness_nm),
        )
        return (self.plans if key == self._plan_key else None), key

    def _probe(self):
        lyr = self.viewer.layers["probe"] if "probe" in self.viewer.layers else None
        if lyr is not None and getattr(lyr, "ndim", 0) == 2 and not getattr(lyr, "rgb", False):
            return probe_of_layer(lyr)
        return None

    def _inputs(self):
        """(DataCube, Calibration with the dock's beam energy, crystals, ACOMParams)."""
        dc, cal = self.layer_combo.datacube()
        cal = cal.replace(beam_energy_kev=self.energy.value())
        try:
            cal.k_pixel_size_in("1/A")
        except CalibrationError as e:
            raise CalibrationError(f"orientation mapping needs a calibrated detector: {e}") from None
        return dc, cal, self.crystals(), self.acom_params()

    def scan_position(self) -> tuple[int, int]:
        return scan_position(self.viewer, self.layer)

    # -- running jobs -------------------------------------------------------------------------
    def _run(self, job_fn, on_done, *args, desc: str) -> None:
        self.jobs.start(job_fn, *args, desc=desc, on_done=on_done)

    @property
    def _worker(self):
        return self.jobs.worker

    def _on_error(self, exc) -> None:
        self.jobs.error(exc)

    def cancel(self) -> None:
        self.jobs.cancel()

    def closeEvent(self, event) -> None:
        self.jobs.close()
        self.file_jobs.wait()
        super().closeEvent(event)

    # -- plan ---------------------------------------------------------------------------------
    def build_plan(self) -> None:
        try:
            _, _, crystals, kw = self._inputs()
        except Napari4DSTEMError as e:
            self.status.setText(str(e))
            return
        _, key = self._current_plans(crystals, kw)

        def done(plans):
            self._set_plans(plans, key)
            p = plans[0]
            self.status.setText(
                f"plan of {', '.join(q.crystal.name for q in plans)}: {p.n_zones} zone axes x "
                f"{p.n_inplane} in-plane angles ({sum(q.nbytes for q in plans) / 2**20:.1f} MiB), "
                f"{len(p.shell_radii)} shells up to {kw.k_max_inv_A:.2f} 1/A"
            )

        self._run(_plans_job, done, crystals, kw, desc="building the orientation plan")

    def _set_plans(self, plans, key) -> None:
        self.plans, self._plan_key = plans, key
        self._show_key(plans[0].crystal.point_group)

    def _show_key(self, group) -> None:
        """The IPF colour key, drawn in a worker (0.05-0.15 s), shown when done."""
        from ._common import create_worker

        create_worker(
            _key_image,
            group,
            _connect={"returned": guarded(self, self._set_key), "errored": guarded(self, self.jobs.error)},
        )

    def _set_key(self, key) -> None:
        group, labels, rgba = key
        self._key_rgba = show_rgba(self.key_image, rgba)
        self.key_label.setText(f"IPF key ({group.laue_name}): red {labels[0]}, green {labels[1]}, blue {labels[2]}")

    # -- one pattern --------------------------------------------------------------------------
    def check_pattern(self) -> None:
        """Match the pattern at the current scan position; draw its peaks and best template."""
        try:
            dc, cal, crystals, kw = self._inputs()
        except Napari4DSTEMError as e:
            self.status.setText(str(e))
            return
        iy, ix = self.scan_position()
        plans, key = self._current_plans(crystals, kw)
        # the check lists alternatives for this pattern's peaks, not further grains (#18)
        mk = dataclasses.replace(self.acom_params(n_matches=max(3, self.n_matches.value())), overlap="candidates")

        def done(out):
            plans_, check, overlay = out
            self._set_plans(plans_, key)
            self._on_check(check, cal, overlay)

        self._run(
            _check_job,
            done,
            dc,
            cal,
            self._probe(),
            iy,
            ix,
            crystals,
            plans,
            mk,
            self.min_peaks.value(),
            desc=f"matching pattern ({iy}, {ix})",
        )

    def _on_scan_moved(self, iy: int, ix: int) -> None:
        """The scan moved: show the finished run's matches there (no matching again)."""
        run = self.run
        if run is None or not self.follow.isChecked() or self.layer is None:
            return
        if tuple(run.result.scan_shape) != tuple(self.layer.data.shape[:2]):
            return  # the run is of another dataset
        self._follower.request(_follow_job, run, int(iy), int(ix), self.min_peaks.value())

    def _on_followed(self, out) -> None:
        check, overlay = out
        if self.run is None or check.result is None:
            return
        self._on_check(check, check.result.calibration, overlay)

    # -- hover over the run's maps (UX point 19) ---------------------------------------------------
    def _hook_hover(self, rv) -> None:
        """Listen to mouse moves on the real-space viewer ``rv`` (once per viewer)."""
        import weakref

        if self._hooked is not None and self._hooked() is rv:
            return
        self._hooked = weakref.ref(rv)
        me = weakref.ref(self)

        def on_move(viewer, event):
            w = me()
            if w is not None and not is_deleted(w):
                w._hover(viewer, event)

        rv.mouse_move_callbacks.append(on_move)

    def _hover(self, rv, event) -> None:
        """A mouse move over the real-space viewer: the scan pixel under it on the run's maps,
        asked of a worker only when it is a new pixel (the newest wins; a drag moves the scan,
        which shows the same and more)."""
        run = self.run
        if run is None or getattr(event, "is_dragging", False):
            return
        name = "IPF z"
        if name not in rv.layers:
            return
        y, x = np.asarray(rv.layers[name].world_to_data(event.position), float)[-2:]
        iy, ix = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
        sy, sx = run.result.scan_shape
        if not (0 <= iy < sy and 0 <= ix < sx):
            if self._hover_pixel is not None:  # left the map: nothing under the mouse
                self._hover_pixel = None
                self.hover_label.setText(HOVER_IDLE)
            return
        if (iy, ix) == self._hover_pixel:
            return
        self._hover_pixel = (iy, ix)
        self._hoverer.request(_hover_job, run, iy, ix, self.min_peaks.value())

    def _on_hovered(self, out) -> None:
        check, text = out
        if self.run is None or self._hover_pixel != (check.iy, check.ix):
            return  # an older pixel's read, or the mouse left the map meanwhile
        self.hover_check = check
        self.hover_label.setText("under the mouse: " + text)

    def _points(self, name: str, data: np.ndarray, cal: Calibration, **kwargs):
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        k = cal.napari_kwargs("k")
        return self.viewer.add_points(
            data.reshape(-1, 2),
            name=name,
            scale=k["scale"],
            units=k["units"],
            axis_labels=k["axis_labels"],
            **kwargs,
        )

    def _on_check(self, check: PatternCheck, cal: Calibration, overlay) -> None:
        """Draw a pattern's measured peaks and its best template's spots (``overlay``, made in
        the worker by :func:`check_overlay`) on the pattern, and its matches in the status."""
        spots, text = overlay
        self.check = check
        lyr = self.layer
        self._points(
            MEASURED_LAYER,
            check.peaks_yx,
            cal,
            size=3,
            symbol="cross",
            face_color="cyan",
            border_width=0,
        )
        if spots is None:
            if TEMPLATE_LAYER in self.viewer.layers:
                self.viewer.layers.remove(TEMPLATE_LAYER)
            self.status.setText(text)
            return
        yx, labels, rel = spots
        self._points(
            TEMPLATE_LAYER,
            yx,
            cal,
            features={"hkl": labels, "intensity": rel},
            text={
                "string": "{hkl}",
                "size": 8,
                "color": "yellow",
                "anchor": "center",
                "translation": np.array([-8.0, 0.0]),
            },
            size=6 + 6 * np.sqrt(rel),
            symbol="ring",
            face_color="yellow",
            border_width=0,
            opacity=0.7,
        )
        if lyr is not None:
            self.viewer.layers.selection.active = lyr
        self.status.setText(text)

    # -- the scan -----------------------------------------------------------------------------
    def run_scan(self) -> None:
        """Bragg disks of every pattern (cached per layer), then the orientation map."""
        try:
            dc, cal, crystals, kw = self._inputs()
        except Napari4DSTEMError as e:
            self.status.setText(str(e))
            return
        plans, key = self._current_plans(crystals, kw)
        pkey = (self.layer.name, id(dc.data))  # the array itself (layer.data may be a new proxy each time)
        peaks = self.peaks if pkey == self._peaks_key else None

        def done(run):
            # the job's maps give way to the final ones (the correlation's layer is reused);
            # hidden here, an event-loop turn before the final maps arrive from their worker
            self.partials.hide(keep=("correlation",))
            self._set_plans(list(run.plans), key)
            self.peaks, self._peaks_key = run.peaks, pkey
            self.run = run
            session_results(self.viewer).add(run, "orientation map")
            self._on_result(run.result)

        # disk detection in blocks of ~0.15 s of work: progress, its map and Cancel between them
        chunk = responsive_chunk(dc.scan_shape, dc.detector_shape)
        self.jobs.start(
            _run_job,
            dc,
            acom=kw,
            probe=self._probe(),
            calibration=cal,
            peaks=peaks,
            plans=None if plans is None else tuple(plans),
            source=layer_source(self.layer),
            scan_chunk=chunk,
            desc="orientation map",
            eta=True,
            partials=self.partials.for_scan(cal),
            on_done=done,
        )

    def _on_result(self, res) -> None:
        """The IPF colours and keys are computed in a worker (0.1 s for 32x32 patterns on the
        GUI thread, more for bigger scans), then shown."""
        from ._common import create_worker

        run = self.run if self.run is not None and self.run.result is res else None
        create_worker(
            _ipf_images,
            res,
            run,
            _connect={"returned": guarded(self, self._show_result), "errored": guarded(self, self.jobs.error)},
        )

    def _show_result(self, images) -> None:
        res, rgb, keys, saved = images
        self.result = res
        cal = res.calibration
        v = self.results()
        self._hook_hover(v)
        self._hover_pixel = None
        # one new layer per event-loop turn (show_maps): napari builds each on the GUI thread
        hidden = ("correlation", "reliability", "phase", "IPF y", "IPF x")

        def put(name, data, saved_as=None, **kw):
            lyr = show_map(v, name, data, cal, **kw)
            if saved_as is not None:  # what File > Save writes: units, parameters (with the recipe), RGB
                tag_layer(lyr, saved_as, rgb=bool(kw.get("rgb")))
            if name in hidden:
                lyr.visible = False

        steps = [(f"IPF {d}", lambda n=f"IPF {d}", d=d: put(n, rgb[d], saved[f"ipf_{d}"], rgb=True)) for d in "xyz"]
        for name, data, cmap in (
            ("correlation", res.correlation[:, :, 0], "gray"),
            ("reliability", res.reliability, "magma"),
        ):
            steps.append(
                (name, lambda n=name, a=data, c=cmap: put(n, a, saved[n], colormap=c, contrast_limits=(0.0, 1.0)))
            )
        if len(res.crystals) > 1:
            lim = (-1.0, len(res.crystals) - 1.0)
            phase = res.phase[:, :, 0].astype(np.float32)
            steps.append(("phase", lambda: put("phase", phase, colormap="turbo", contrast_limits=lim)))
        # the colour key(s), to the right of the maps, at a quarter of the map height
        sk = cal.napari_kwargs("scan")
        sy, sx = res.scan_shape
        size = 128
        s = 0.5 * sy * sk["scale"][0] / size
        for k, c in enumerate(res.crystals):
            name = f"IPF key ({c.point_group.laue_name})"
            steps.append(
                (
                    name,
                    lambda k=k, name=name: (
                        name in v.layers
                        or v.add_image(
                            keys[k],
                            name=name,
                            rgb=True,
                            scale=(s, s),
                            units=sk["units"],
                            translate=(k * 1.1 * size * s, 1.05 * sx * sk["scale"][1]),
                        )
                    ),
                )
            )

        def shown():
            v.layers.selection.active = v.layers["IPF z"]
            v.reset_view()

        show_maps(v, steps, owner=self, then=shown)
        self.ang_btn.setEnabled(True)
        self.emd_btn.setEnabled(True)
        self.copy_btn.setEnabled(self.run is not None)
        valid = res.valid
        n = int(valid.sum())
        med = float(np.median(res.correlation[..., 0][valid])) if n else 0.0
        rel = int((res.reliability[valid] >= 0.05).sum())
        self.status.setText(
            f"{n}/{valid.size} patterns indexed (median correlation {med:.3f}; {rel} with "
            f"reliability >= 0.05: mask on it, low values mark kinematically ambiguous patterns). "
            f"Maps in the real-space viewer: IPF x/y/z, correlation, reliability"
            + (", phase" if len(res.crystals) > 1 else "")
        )

    # -- exports ------------------------------------------------------------------------------
    def export_ang(self, path: str | Path | None = None) -> bool:
        """Write the map as a TSL .ang file (asks for a path when none is given) in a worker;
        True when started (``last_saved`` is the file once written)."""
        if self.result is None:
            self.status.setText("run the orientation map first")
            return False
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export .ang", "acom.ang", "TSL OIM (*.ang)")
            if not path:
                return False
        self.file_jobs.run(_write_ang, self.result, path, desc=f"writing {Path(path).name}", on_done=self._saved)
        return True

    def save_maps(self, path: str | Path | None = None) -> bool:
        """Write the maps (Euler, orientation, correlation, reliability, phase, grains, IPF) and
        the Bragg peaks to an EMD file (asks for a path when none is given) in a worker; True
        when started (``last_saved`` is the file once written)."""
        if self.result is None:
            self.status.setText("run the orientation map first")
            return False
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save maps", "acom.h5", "EMD (*.h5 *.emd)")
            if not path:
                return False
        # the whole run (all top-N matches and the recipe) when the maps are its own
        run = self.run if self.run is not None and self.run.result is self.result else None
        self.file_jobs.run(
            _write_maps, run, self.result, self.peaks, path, desc=f"writing {Path(path).name}", on_done=self._saved
        )
        return True

    def pipeline_result(self):
        """The last orientation map run (Copy as Python: PipelineActions)."""
        return self.run
