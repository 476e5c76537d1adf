"""The "Calibration and DPC" dock widget: ring calibration, origin/descan, centre of mass,
DPC and iDPC.

Ring calibration (UX point 14): the core's :func:`~napari_4dstem.analysis.virtual.calibration.
fit_ring` on the mean (or current) pattern in a worker, between two radii typed in the dock or
around a circle drawn on the pattern (the "calibration ring" Shapes layer); the fitted ellipse
is drawn on the pattern, and *Apply* stores the ellipse, the pixel size ``1 / (d * radius)``
in 1/A for a known ring spacing ``d`` and optionally the ring centre as the origin, and sets the
k scale of the 4D layer and of the 2D layers on the pattern, so the scale bar follows at once.

Disk calibration (UX point 14): the core's bright-field disk measurement (``find_bf_disk``) on
the mean or current pattern in a worker; a typed convergence semi-angle and the beam energy give
the pixel size (``calibrate_from_disk``: mrad per pixel, and 1/A per pixel with the energy),
*Apply* stores it like the ring calibration does; with no angle typed, a calibrated pixel size
gives the convergence angle instead (``convergence_angle_from_disk``), shown and stored.
Field of view: a typed field of view (or scan step) in nm, A or um sets the scan step
(``with_field_of_view``: ``F / N``) and the real-space scale of the 4D layer and of the maps on
the Real space canvas.

Translation only: long passes over the data (origin, centre of mass) run in workers through the
core jobs and pipelines; the rotation fit and DPC/iDPC on the cached centre of mass (the
pipeline's ``run_dpc``) run in workers too, newest request wins. Maps go to the linked real-space viewer
(see ``_results.py``).
"""

from __future__ import annotations

import napari
import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..data.calibration import Calibration
from ..data.datacube import DataCube
from ..errors import Napari4DSTEMError
from ..pipelines import (  # at import: the dock's opening, not a click
    CalibrationParams,
    iter_calibrate,
)
from ._common import CubePicker, JobRunner, LatestRunner, watch_dock
from ._forms import form, group, row, scroll_contents
from ._pipeline import PipelineActions, layer_source, tag_layer
from ._results import color_wheel, results_viewer, show_map, show_maps, show_vectors
from ._state import DockState, register_dock
from ._warmup import WarmupLabel

SCAN_AXES_LAYER = "scan axes (DPC)"  # scan x/y against the detector axes, after rotation and flip
#: the DPC group's frame until the rotation is set (by Auto rotation or by hand)
UNSET_STYLE = "QGroupBox#dpc_group { border: 2px solid orange; }"
RING_LAYER = "calibration ring"  # a circle the user draws on the pattern (centre and radius guess)
FITTED_RING_LAYER = "fitted ring"
DISK_LAYER = "measured disk"  # the bright-field disk measured for the convergence-angle calibration
FOV_UNITS = ("nm", "A", "um")


def _ring_job(dc: DataCube, source: str, pos, radius_range, center):
    """Worker: the pattern (mean of all, or the one at ``pos``) and the core's ring fit on it."""
    from ..analysis.virtual.calibration import fit_ring

    if source == "current pattern":
        pattern = np.asarray(dc.pattern(*pos), dtype=np.float64)
    else:
        pattern = yield from dc.iter_reduce_patterns("mean")
    return pattern, fit_ring(pattern, radius_range_px=radius_range, center_px=center)


def _disk_job(dc: DataCube, source: str, pos, layer_kwargs: dict | None = None):
    """Worker: the pattern (mean of all, or the one at ``pos``), the core's bright-field disk,
    and with ``layer_kwargs`` (scale, units, axis labels) its outline's Shapes layer, built here:
    napari's Shapes ``__init__`` (its TextManager's pydantic deepcopy, the first mesh) held the GUI
    thread 0.6-1.4 s at the first measurement under load (UX audit session 15, S8)."""
    from ..analysis.virtual.origin import find_bf_disk

    if source == "current pattern":
        pattern = np.asarray(dc.pattern(*pos), dtype=np.float64)
    else:
        pattern = yield from dc.iter_reduce_patterns("mean")
    disk = find_bf_disk(pattern)
    layer = None
    if layer_kwargs is not None:
        from napari.layers import Shapes  # napari is imported: the dock's viewer made it

        layer = Shapes(
            [circle_outline(disk.center_px, disk.radius_px)],
            shape_type="polygon",
            name=DISK_LAYER,
            edge_color="cyan",
            face_color="transparent",
            edge_width=1,
            **layer_kwargs,
        )
    return pattern, disk, layer


def circle_outline(center, radius: float, n: int = 90) -> np.ndarray:
    """``(n, 2)`` points ``(k_y, k_x)`` of a circle (for a polygon on the pattern)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([center[0] + radius * np.sin(t), center[1] + radius * np.cos(t)])


def ellipse_outline(fit, n: int = 120) -> np.ndarray:
    """``(n, 2)`` points ``(k_y, k_x)`` of a RingFit's ellipse (for a polygon on the pattern)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    th = np.radians(fit.theta_deg)
    x, y = fit.a_px * np.cos(t), fit.b_px * np.sin(t)  # the major axis along k_x, then turned
    cy, cx = fit.center_px
    return np.column_stack([cy + x * np.sin(th) + y * np.cos(th), cx + x * np.cos(th) - y * np.sin(th)])


def scan_axes_on_detector(rotation_deg: float, flip: bool) -> np.ndarray:
    """The scan's unit vectors on the detector: ``[[y_ky, y_kx], [x_ky, x_kx]]`` for scan +y and
    scan +x, in detector axes ``(k_y, k_x)`` (the inverse of the core's ``rotate_to_scan``)."""
    from ..analysis.virtual.dpc import rotate_to_scan

    # columns: the scan components of the detector unit vectors k_y and k_x
    m = np.array(
        [
            rotate_to_scan(1.0, 0.0, rotation_deg=rotation_deg, flip=flip),
            rotate_to_scan(0.0, 1.0, rotation_deg=rotation_deg, flip=flip),
        ]
    ).T
    return np.linalg.inv(m).T


def _dpc_job(dc, params, com, calibration, source):
    """Worker: the pipeline's DPC and iDPC (``run_dpc`` on the cached centre of mass: no pass over
    the data) and the colour wheel, as ``(DPCResult, rgb)``."""
    from ..pipelines import run_dpc

    result = run_dpc(dc, dpc=params, com=com, calibration=calibration, source=source)
    return result, color_wheel(result.dpc.channel("dpc_y"), result.dpc.channel("dpc_x"))


def _fit_rotation(com, descan):
    """Worker: the rotation fit; an ill-conditioned fit is shown in the dock (not as a warning)."""
    import warnings

    from ..analysis.virtual.dpc import IllConditionedRotationWarning, fit_dpc_rotation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IllConditionedRotationWarning)
        return fit_dpc_rotation(com, descan=descan)


class CalibrationDPCWidget(PipelineActions, DockState, QWidget):
    """Dock widget: measure the origin and descan, then COM / DPC / iDPC maps."""

    state_key = "dpc"

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        watch_dock(self)  # placed in napari's window with our other docks; cleaned up when napari closes it
        self.viewer = viewer
        self.origin = None  # RealSpaceMap of the measured origin
        self.origin_fit = None  # OriginFit
        self.calibration_result = None  # pipelines.CalibrationResult of the origin step (Results dock)
        self.com = None  # RealSpaceMap of the centre of mass (cached for rotation changes)
        # rotation fit and DPC/iDPC maps from the cached COM: workers, newest request wins
        self._dpc_runner = LatestRunner(self._show_dpc, self._on_error)
        self._rot_runner = LatestRunner(self._on_rotation, self._on_error)
        self.dpc_map = None
        self.phase = None
        self.result = None  # pipelines.DPCResult of the maps shown (Save result..., Copy as Python)
        self._build_ui()
        register_dock(viewer, self)

    # -- UI -----------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.layer_combo = CubePicker(self.viewer)
        self.origin_method = QComboBox()
        self.origin_method.addItems(["disk", "com"])
        self.fit_method = QComboBox()
        self.fit_method.addItems(["plane", "mean"])
        self.measure_btn = QPushButton("Measure origin")
        self.apply_btn = QPushButton("Apply fitted origin to the layer")
        self.apply_btn.setEnabled(False)
        self.origin_label = QLabel("")
        self.origin_label.setWordWrap(True)  # a long fit summary wraps, it does not widen the dock
        og = group(
            "Origin and descan",
            ("method", self.origin_method),
            ("descan fit", self.fit_method),
            self.measure_btn,
            self.apply_btn,
            self.origin_label,
        )

        # ring calibration: fit a ring of a polycrystal or amorphous pattern, known d -> pixel size
        self.ring_source = QComboBox()
        self.ring_source.addItems(["mean pattern", "current pattern"])
        self.ring_rmin, self.ring_rmax, self.ring_d = QDoubleSpinBox(), QDoubleSpinBox(), QDoubleSpinBox()
        for sb, v in ((self.ring_rmin, 10.0), (self.ring_rmax, 40.0)):
            sb.setRange(0.0, 1e5)
            sb.setDecimals(1)
            sb.setSuffix(" px")
            sb.setValue(v)
        self.ring_d.setRange(0.0, 1e3)
        self.ring_d.setDecimals(4)
        self.ring_d.setSuffix(" A")
        self.ring_d.setSpecialValueText("unknown (ellipse only)")
        self.ring_d.setToolTip("the ring's lattice spacing d: the pixel size is 1 / (d * radius) in 1/A")
        self.ring_origin = QCheckBox("ring centre as the origin")
        self.draw_ring_btn = QPushButton("Draw a circle on the ring")
        self.draw_ring_btn.setToolTip(
            f"draw an ellipse in the '{RING_LAYER}' layer on the pattern: its centre and radius "
            "(+/- 20 %) replace the radii above"
        )
        self.fit_ring_btn = QPushButton("Fit ring")
        self.apply_ring_btn = QPushButton("Apply to the layer")
        self.apply_ring_btn.setEnabled(False)
        self.ring_label = QLabel("")
        self.ring_label.setWordWrap(True)
        self.ring_fit = None  # the last RingFit
        self.ring_pattern = None  # and the pattern it was fitted on
        rg = group(
            "Ring calibration (polycrystal / amorphous)",
            ("pattern", self.ring_source),
            ("ring between", row(self.ring_rmin, self.ring_rmax)),
            self.draw_ring_btn,
            ("ring spacing d", self.ring_d),
            self.ring_origin,
            row(self.fit_ring_btn, self.apply_ring_btn),
            self.ring_label,
        )

        # disk calibration: the bright-field disk's radius is the convergence semi-angle
        self.disk_source = QComboBox()
        self.disk_source.addItems(["mean pattern", "current pattern"])
        self.disk_alpha, self.beam_kev = QDoubleSpinBox(), QDoubleSpinBox()
        self.disk_alpha.setRange(0.0, 1000.0)
        self.disk_alpha.setDecimals(3)
        self.disk_alpha.setSuffix(" mrad")
        self.disk_alpha.setSpecialValueText("unknown (from the pixel size)")
        self.disk_alpha.setToolTip("the probe's convergence semi-angle: the disk's radius in angle")
        self.beam_kev.setRange(0.0, 5000.0)
        self.beam_kev.setDecimals(1)
        self.beam_kev.setSuffix(" keV")
        self.beam_kev.setSpecialValueText("unknown (mrad only)")
        self.beam_kev.setToolTip("beam energy: with it the pixel size in 1/A as well as in mrad")
        self.measure_disk_btn = QPushButton("Measure disk")
        self.apply_disk_btn = QPushButton("Apply to the layer")
        self.apply_disk_btn.setEnabled(False)
        self.disk_label = QLabel("")
        self.disk_label.setWordWrap(True)
        self.disk = None  # the last BFDisk measured
        self.disk_pattern = None  # and the pattern it was measured on
        self._disk_kwargs = None  # the layer calibration the last measurement built its outline for
        self.disk_angle_mrad = None  # the convergence angle the layer's pixel size gives (when calibrated)
        kg = group(
            "Disk calibration (convergence angle)",
            ("pattern", self.disk_source),
            ("convergence semi-angle", self.disk_alpha),
            ("beam energy", self.beam_kev),
            row(self.measure_disk_btn, self.apply_disk_btn),
            self.disk_label,
        )

        # real space: field of view (or scan step) -> the scan step and the real-space scale
        self.fov_mode = QComboBox()
        self.fov_mode.addItems(["field of view", "scan step"])
        self.fov_y, self.fov_x = QDoubleSpinBox(), QDoubleSpinBox()
        for sb in (self.fov_y, self.fov_x):
            sb.setRange(0.0, 1e7)
            sb.setDecimals(4)
        self.fov_y.setToolTip("along scan y")
        self.fov_x.setToolTip("along scan x")
        self.fov_units = QComboBox()
        self.fov_units.addItems(FOV_UNITS)
        self.apply_fov_btn = QPushButton("Set the real-space scale")
        self.fov_label = QLabel("")
        self.fov_label.setWordWrap(True)
        fg = group(
            "Real space: field of view",
            ("enter", self.fov_mode),
            ("y x", row(self.fov_y, QLabel("x"), self.fov_x, self.fov_units)),
            self.apply_fov_btn,
            self.fov_label,
        )

        self.com_btn = QPushButton("Compute centre of mass")
        self.rotation = QDoubleSpinBox()
        self.rotation.setRange(-180.0, 180.0)
        self.rotation.setDecimals(2)
        self.rotation.setSuffix(" deg")
        self.rotation.setKeyboardTracking(False)
        self.flip = QCheckBox("flip (mirror k_x)")
        self.auto_btn = QPushButton("Auto rotation (minimise curl)")
        self.descan = QComboBox()
        self.descan.addItems(["plane", "mean", "calibration", "none"])
        self.reg = QDoubleSpinBox()
        self.reg.setDecimals(5)
        self.reg.setRange(0.0, 1.0)
        self.reg.setSingleStep(1e-3)
        self.reg.setValue(1e-4)
        self.reg.setKeyboardTracking(False)
        self.dpc_label = QLabel("set the rotation (Auto, or by hand); on the pattern: scan x red, y green")
        self.dpc_label.setToolTip("the scan axes against the detector axes (grey) for this rotation and flip")
        self.dpc_label.setWordWrap(True)
        self.dpc_label.setStyleSheet("color: orange")
        self.rotation_set = False  # by Auto rotation (well conditioned) or by the user
        dg = self.dpc_group = group(
            "Centre of mass and DPC",
            self.com_btn,
            ("rotation", row(self.rotation, self.flip)),
            self.auto_btn,
            ("descan removal", self.descan),
            ("iDPC regularisation", self.reg),
            self.dpc_label,
            self.action_row(),
        )
        dg.setObjectName("dpc_group")
        dg.setStyleSheet(UNSET_STYLE)

        self.cancel_btn = QPushButton("Cancel")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.jobs = JobRunner(
            self.status,
            self.cancel_btn,
            buttons=(self.measure_btn, self.com_btn, self.fit_ring_btn, self.measure_disk_btn),
        )
        layout = QVBoxLayout(self)
        which = form(("4D layer", self.layer_combo))  # every box below calibrates or measures this layer
        layout.addLayout(which)
        layout.addWidget(fg)
        layout.addWidget(kg)
        layout.addWidget(rg)
        layout.addWidget(og)
        layout.addWidget(dg)
        layout.addWidget(self.cancel_btn)
        layout.addWidget(self.status)
        layout.addWidget(WarmupLabel())
        layout.addStretch(1)
        scroll_contents(self)  # narrower and shorter than its form: the window fits the screen

        self.draw_ring_btn.clicked.connect(lambda _=False: self.draw_ring())
        self.fit_ring_btn.clicked.connect(lambda _=False: self.fit_ring())
        self.apply_ring_btn.clicked.connect(lambda _=False: self.apply_ring())
        self.measure_disk_btn.clicked.connect(lambda _=False: self.measure_disk())
        self.apply_disk_btn.clicked.connect(lambda _=False: self.apply_disk())
        self.disk_alpha.valueChanged.connect(lambda _: self._show_disk_text())
        self.beam_kev.valueChanged.connect(lambda _: self._show_disk_text())
        self.fov_mode.currentTextChanged.connect(self._on_fov_mode)
        self.apply_fov_btn.clicked.connect(lambda _=False: self.apply_fov())
        self.layer_combo.currentTextChanged.connect(lambda _: self._fill_from_calibration())
        self._fill_from_calibration()
        self.measure_btn.clicked.connect(self.measure_origin)
        self.fit_method.currentIndexChanged.connect(lambda _: self._fit_origin())
        self.apply_btn.clicked.connect(self.apply_origin)
        self.com_btn.clicked.connect(self.compute_com)
        self.auto_btn.clicked.connect(self.auto_rotation)
        self.rotation.valueChanged.connect(lambda _: self._rotation_by_hand())
        self.flip.toggled.connect(lambda _: self._rotation_by_hand())
        self.descan.currentIndexChanged.connect(lambda _: self.update_dpc())
        self.reg.valueChanged.connect(lambda _: self.update_dpc())

    # -- layers -------------------------------------------------------------------------------
    @property
    def layer(self):
        return self.layer_combo.layer

    def datacube(self) -> tuple[DataCube, Calibration]:
        return self.layer_combo.datacube()

    def results(self):
        return results_viewer(self.viewer)

    # -- running jobs -------------------------------------------------------------------------
    def _run(self, job_fn, on_done, *args, desc: str, total: int, **kwargs) -> None:
        self.jobs.start(job_fn, *args, desc=desc, total=total, on_done=on_done, **kwargs)

    def _on_error(self, exc) -> None:
        self.jobs.error(exc)

    def cancel(self) -> None:
        self.jobs.cancel()

    @property
    def _worker(self):
        return self.jobs.worker

    def _blocks(self, dc: DataCube) -> int:
        from ..engine.driver import n_blocks_for

        return n_blocks_for(dc.data)

    # -- ring calibration ---------------------------------------------------------------------
    def draw_ring(self) -> None:
        """A Shapes layer on the pattern in ellipse mode: the user draws a circle on a ring."""
        try:
            _, cal = self.datacube()
        except Napari4DSTEMError as e:
            self.status.setText(str(e))
            return
        if RING_LAYER not in self.viewer.layers:
            self.viewer.add_shapes(
                name=RING_LAYER, edge_color="yellow", face_color="transparent", edge_width=1, **cal.napari_kwargs("k")
            )
        layer = self.viewer.layers[RING_LAYER]
        self.viewer.layers.selection.active = layer
        layer.mode = "add_ellipse"
        self.ring_label.setText("draw a circle on the ring, then Fit ring")

    def _drawn_ring(self):
        """``(centre, radius)`` in detector pixels of the last ellipse drawn in RING_LAYER."""
        if RING_LAYER not in self.viewer.layers:
            return None
        layer = self.viewer.layers[RING_LAYER]
        ellipses = [np.asarray(d)[:, -2:] for d, t in zip(layer.data, layer.shape_type, strict=True) if t == "ellipse"]
        if not ellipses:
            return None
        e = ellipses[-1]  # data coordinates of the shapes layer: detector pixels
        return tuple(float(v) for v in e.mean(axis=0)), 0.25 * float(np.ptp(e[:, 0]) + np.ptp(e[:, 1]))

    def fit_ring(self) -> None:
        """Fit the ring in a worker (the mean pattern is a pass over the data, with progress)."""
        from ._common import scan_position

        try:
            dc, _ = self.datacube()
        except Napari4DSTEMError as e:
            self.status.setText(str(e))
            return
        center, r_range = None, (self.ring_rmin.value(), self.ring_rmax.value())
        drawn = self._drawn_ring()
        if drawn is not None:
            center, r = drawn
            r_range = (0.8 * r, 1.2 * r)
            self.ring_rmin.setValue(r_range[0])
            self.ring_rmax.setValue(r_range[1])
        if not r_range[0] < r_range[1]:
            self.status.setText(f"the ring lies between two radii: got {r_range[0]} and {r_range[1]} px")
            return
        source = self.ring_source.currentText()
        pos = scan_position(self.viewer, self.layer) if self.viewer.dims.ndim >= 4 else (0, 0)
        self.apply_ring_btn.setEnabled(False)
        self._run(
            _ring_job,
            self._on_ring,
            dc,
            source,
            pos,
            r_range,
            center,
            desc=f"ring fit on the {source}",
            total=self._blocks(dc) if source == "mean pattern" else 1,
        )

    def _on_ring(self, out) -> None:
        self.ring_pattern, fit = out
        self.ring_fit = fit
        cal = self.datacube()[1]
        outline = ellipse_outline(fit)
        if FITTED_RING_LAYER in self.viewer.layers:
            self.viewer.layers[FITTED_RING_LAYER].data = [(outline, "polygon")]
        else:
            self.viewer.add_shapes(
                [outline],
                shape_type="polygon",
                name=FITTED_RING_LAYER,
                edge_color="orange",
                face_color="transparent",
                edge_width=1,
                **cal.napari_kwargs("k"),
            )
        text = (
            f"ring: centre ({fit.center_px[0]:.2f}, {fit.center_px[1]:.2f}) px, radius {fit.radius_px:.3f} px, "
            f"a/b {fit.a_px / fit.b_px:.4f} at {fit.theta_deg:.1f} deg, {fit.n_points} points, "
            f"{fit.residual_rms_px:.3f} px RMS"
        )
        d = self.ring_d.value()
        if d > 0:
            text += f"; d = {d:g} A gives {1.0 / (d * fit.radius_px):.6g} 1/A per pixel"
        self.ring_label.setText(text)
        self.apply_ring_btn.setEnabled(True)

    def ring_calibration(self) -> Calibration | None:
        """The layer's calibration with the fitted ring (ellipse; pixel size for a known d;
        origin when asked); None before a fit."""
        if self.ring_fit is None:
            return None
        d = self.ring_d.value()
        return self.ring_fit.to_calibration(
            self.datacube()[1], d_spacing_A=d if d > 0 else None, set_origin=self.ring_origin.isChecked()
        )

    def apply_ring(self) -> None:
        """Store the ring calibration in the 4D layer and set the k scale of it and of the 2D
        layers on the pattern (the scale bar follows at once)."""
        new = self.ring_calibration()
        if new is not None and self._set_k_calibration(new):
            new_k = new.napari_kwargs("k")
            self.status.setText(
                f"ring calibration stored in {self.layer.name}: {new_k['scale'][0]:.6g} {new_k['units'][0]}/px"
            )

    def _set_k_calibration(self, new: Calibration) -> bool:
        """Store ``new`` in the 4D layer and set the k scale of it and of the 2D layers on the
        pattern (the detectors, disks, rings drawn there): the scale bar follows at once, the
        diffraction canvas stays on the same pixels (:func:`._calibrate.apply_layer_calibration`)."""
        from ._calibrate import apply_layer_calibration

        lyr = self.layer
        if lyr is None:
            return False
        apply_layer_calibration(self.viewer, lyr, new)
        self._show_disk_text()  # the angle a calibrated pixel size gives
        return True

    # -- disk calibration: convergence angle <-> pixel size --------------------------------------
    def _fill_from_calibration(self) -> None:
        """The angle, energy and field of view fields from the chosen layer's calibration."""
        try:
            dc, cal = self.datacube()
        except Napari4DSTEMError:
            return
        for sb, v in ((self.disk_alpha, cal.convergence_semiangle_mrad), (self.beam_kev, cal.beam_energy_kev)):
            sb.blockSignals(True)
            sb.setValue(v or 0.0)
            sb.blockSignals(False)
        if cal.scan_step is not None and cal.scan_units != "px":
            vals = cal.scan_step
            if self.fov_mode.currentText() == "field of view":
                vals = (vals[0] * dc.scan_shape[0], vals[1] * dc.scan_shape[1])
            self.fov_units.setCurrentText(cal.scan_units)
            self.fov_y.setValue(vals[0])
            self.fov_x.setValue(vals[1])
        self._show_disk_text()

    def measure_disk(self) -> None:
        """Measure the bright-field disk in a worker (the mean pattern is a pass over the data)."""
        from ._common import scan_position

        try:
            dc, cal = self.datacube()
        except Napari4DSTEMError as e:
            self.status.setText(str(e))
            return
        source = self.disk_source.currentText()
        pos = scan_position(self.viewer, self.layer) if self.viewer.dims.ndim >= 4 else (0, 0)
        self.apply_disk_btn.setEnabled(False)
        # the outline's layer is built in the worker, for this calibration (``_on_disk`` checks it)
        first = DISK_LAYER not in self.viewer.layers
        self._disk_kwargs = k_kwargs = cal.napari_kwargs("k") if first else None
        self._run(
            _disk_job,
            self._on_disk,
            dc,
            source,
            pos,
            k_kwargs,
            desc=f"bright-field disk of the {source}",
            total=self._blocks(dc) if source == "mean pattern" else 1,
        )

    def _on_disk(self, out) -> None:
        self.disk_pattern, self.disk, built = out
        self.status.setText("")
        cal = self.datacube()[1]
        outline = circle_outline(self.disk.center_px, self.disk.radius_px)
        k = cal.napari_kwargs("k")
        if DISK_LAYER in self.viewer.layers:
            self.viewer.layers[DISK_LAYER].data = [(outline, "polygon")]
        elif built is not None and k == self._disk_kwargs:
            self.viewer.add_layer(built)  # the layer the worker built (the calibration is the same)
        else:
            self.viewer.add_shapes(
                [outline],
                shape_type="polygon",
                name=DISK_LAYER,
                edge_color="cyan",
                face_color="transparent",
                edge_width=1,
                **k,
            )
        self._show_disk_text()

    def _energy_calibration(self) -> Calibration:
        """The layer's calibration with the typed beam energy (when one is typed)."""
        cal = self.datacube()[1]
        e = self.beam_kev.value()
        return cal.replace(beam_energy_kev=e) if e > 0 else cal

    def disk_calibration(self) -> Calibration | None:
        """The layer's calibration with the disk's pixel size for the typed convergence angle
        (or, with no angle typed, the convergence angle of the layer's pixel size); None before
        a measurement or when neither is known."""
        from ..analysis.virtual.calibration import calibrate_from_disk, convergence_angle_from_disk
        from ..errors import CalibrationError

        if self.disk is None:
            return None
        cal = self._energy_calibration()
        alpha = self.disk_alpha.value()
        try:
            if alpha > 0:
                d = calibrate_from_disk(self.disk.radius_px, alpha, beam_energy_kev=cal.beam_energy_kev)
                return d.to_calibration(cal)
            return cal.replace(convergence_semiangle_mrad=convergence_angle_from_disk(self.disk.radius_px, cal))
        except CalibrationError:
            return None

    def _show_disk_text(self) -> None:
        """What the measured disk gives with the angle and energy typed (no worker: arithmetic)."""
        from ..analysis.virtual.calibration import calibrate_from_disk, convergence_angle_from_disk
        from ..errors import CalibrationError

        self.disk_angle_mrad = None
        if self.disk is None:
            return
        r, (cy, cx) = self.disk.radius_px, self.disk.center_px
        text = f"bright-field disk: radius {r:.3f} px at ({cy:.2f}, {cx:.2f}) px"
        try:
            cal = self._energy_calibration()
        except Napari4DSTEMError:
            return
        alpha = self.disk_alpha.value()
        try:  # the other way: the layer's pixel size (if calibrated) gives the convergence angle
            self.disk_angle_mrad = convergence_angle_from_disk(r, cal)
        except CalibrationError as e:
            known = f"; the layer's pixel size gives no angle ({e})"
        else:
            known = f"; the layer's pixel size gives a convergence semi-angle of {self.disk_angle_mrad:.4g} mrad"
        ok = True
        if alpha > 0:
            d = calibrate_from_disk(r, alpha, beam_energy_kev=cal.beam_energy_kev)
            text += f"; {alpha:g} mrad gives {d.mrad_per_px:.6g} mrad per pixel"
            if d.inv_A_per_px is not None:
                text += f", {d.inv_A_per_px:.6g} 1/A per pixel"
            text += known if self.disk_angle_mrad is not None else ""
        else:
            text += known
            ok = self.disk_angle_mrad is not None
            if not ok:
                text += ": type the convergence semi-angle"
        self.disk_label.setText(text)
        self.apply_disk_btn.setEnabled(ok)

    def apply_disk(self) -> None:
        """Store the disk calibration (pixel size, convergence angle, energy) in the 4D layer and
        set the k scale of it and of the layers on the pattern."""
        new = self.disk_calibration()
        if new is not None and self._set_k_calibration(new):
            self.status.setText(
                f"disk calibration stored in {self.layer.name}: {new.k_pixel_size:.6g} {new.k_units} per pixel, "
                f"convergence semi-angle {new.convergence_semiangle_mrad:.4g} mrad"
            )

    # -- real space: field of view ----------------------------------------------------------------
    def _on_fov_mode(self, mode: str) -> None:
        """The values typed follow the switch: a field of view is N steps."""
        lyr = self.layer
        if lyr is None or lyr.ndim != 4:
            return
        ny, nx = lyr.data.shape[:2]
        f = (ny, nx) if mode == "field of view" else (1.0 / ny, 1.0 / nx)
        self.fov_y.setValue(self.fov_y.value() * f[0])
        self.fov_x.setValue(self.fov_x.value() * f[1])

    def fov_calibration(self) -> Calibration:
        """The layer's calibration with the scan step of the field of view (or step) typed."""
        from ..analysis.virtual.calibration import with_field_of_view

        dc, cal = self.datacube()
        vals = (self.fov_y.value(), self.fov_x.value())
        key = "field_of_view" if self.fov_mode.currentText() == "field of view" else "scan_step"
        return with_field_of_view(cal, dc.scan_shape, units=self.fov_units.currentText(), **{key: vals})

    def apply_fov(self) -> None:
        """Set the scan step: the real-space scale of the 4D layer and of the maps on the Real
        space canvas (their scale bar follows at once)."""
        from ._calibrate import apply_layer_calibration

        try:
            dc, _ = self.datacube()
            new = self.fov_calibration()
        except Napari4DSTEMError as e:
            self.fov_label.setText(str(e))
            return
        lyr = self.layer
        # the 4D layer's and the Real space maps' scan scale; the canvases stay on the same pixels
        apply_layer_calibration(self.viewer, lyr, new)
        (sy, sx), u = new.scan_step, new.scan_units
        ny, nx = dc.scan_shape
        self.fov_label.setText(
            f"scan step {sy:.6g} x {sx:.6g} {u} (field of view {sy * ny:.6g} x {sx * nx:.6g} {u}) stored in {lyr.name}"
        )

    # -- origin -------------------------------------------------------------------------------
    def measure_origin(self) -> None:
        """The calibration pipeline's origin step (measure every pattern, fit the descan) in a worker."""
        try:
            dc, cal = self.datacube()
            params = CalibrationParams(origin=self.origin_method.currentText(), fit=self.fit_method.currentText())
        except Napari4DSTEMError as e:
            self.status.setText(str(e))
            return
        self._run(
            iter_calibrate,
            self._on_origin,
            dc,
            calibrate=params,
            calibration=cal,
            source=layer_source(self.layer),
            desc="measuring origin",
            total=self._blocks(dc),
        )

    def _on_origin(self, calib) -> None:
        from .results_list import session_results

        self.calibration_result = calib
        session_results(self.viewer).add(calib, "calibrate")  # Save / Copy as Python in the Results dock
        self.origin = origin = calib.origin
        cal = origin.calibration
        v = self.results()
        # one new layer per event-loop turn (show_maps): napari builds each on the GUI thread
        show_maps(v, self._map_steps(v, "origin k_{} (measured)", origin.data, cal), owner=self)
        self._fit_origin()

    @staticmethod
    def _map_steps(v, name: str, yx: np.ndarray, cal) -> list:
        """:func:`show_maps` steps of the ``(..., 2)`` map ``yx``'s two channels, ``name`` formatted with y, x."""
        names = [name.format(a) for a in "yx"]
        return [(n, lambda n=n, i=i: show_map(v, n, yx[..., i], cal, colormap="viridis")) for i, n in enumerate(names)]

    def _fit_origin(self) -> None:
        calib = self.calibration_result
        if calib is None:
            return
        fit_method = self.fit_method.currentText()
        if calib.origin_fit.method != fit_method:
            try:  # another descan model on the same measured origins: no pass over the data
                calib = self.calibration_result = calib.refit(fit_method)
            except Napari4DSTEMError as e:
                self.status.setText(str(e))
                return
        self.origin_fit = calib.origin_fit
        fit = self.origin_fit
        cal = self.origin.calibration
        v = self.results()
        show_maps(v, self._map_steps(v, "origin k_{} (fitted)", fit.origin_map_px, cal), owner=self)
        n_out = int((~fit.inliers).sum())
        self.origin_label.setText(
            f"{fit.method} fit: residual {fit.residual_rms_px:.3f} px RMS, {n_out} outliers; "
            f"descan range k_y {np.ptp(fit.origin_map_px[..., 0]):.2f} px, "
            f"k_x {np.ptp(fit.origin_map_px[..., 1]):.2f} px"
        )
        self.apply_btn.setEnabled(True)
        self.status.setText("")

    def apply_origin(self) -> None:
        """Store the fitted origin map in the layer's calibration (used by descan elsewhere)."""
        if self.origin_fit is None or self.layer is None:
            return
        from ..plugin_api import set_layer_calibration

        lyr = self.layer
        cal = self.datacube()[1].replace(origin_map_px=self.origin_fit.origin_map_px, origin_px=None)
        set_layer_calibration(self.viewer, lyr, cal)  # stores it and emits calibration_changed
        self.status.setText(f"origin map stored in {lyr.name}'s calibration")

    # -- COM / DPC ------------------------------------------------------------------------------
    def compute_com(self) -> None:
        from ..pipelines import DPCParams, iter_com

        try:
            dc, cal = self.datacube()
        except Napari4DSTEMError as e:
            self.status.setText(str(e))
            return
        self._run(
            iter_com, self._on_com, dc, DPCParams(), calibration=cal, desc="centre of mass", total=self._blocks(dc)
        )

    def _on_com(self, com) -> None:
        self.com = com
        self.status.setText("")
        self.show_scan_axes()
        self.update_dpc()

    def _rotation_by_hand(self) -> None:
        """The user set the rotation or the flip: the panel is no longer highlighted, the axes
        follow at once and the maps follow from the cached centre of mass (no pass over the data)."""
        self._mark_rotation_set(True)
        self.show_scan_axes()
        self.update_dpc()

    def _mark_rotation_set(self, done: bool) -> None:
        self.rotation_set = done
        self.dpc_group.setStyleSheet("" if done else UNSET_STYLE)

    def show_scan_axes(self) -> None:
        """The scan axes (x red, y green) against the detector axes (k_x, k_y grey) as arrows from
        the pattern's origin, for the rotation and flip in the dock."""
        try:
            dc, cal = self.datacube()
        except Napari4DSTEMError:
            return
        ny, nx = dc.detector_shape
        c = np.asarray(cal.origin_px if cal.origin_px is not None else ((ny - 1) / 2, (nx - 1) / 2), float)
        length = 0.3 * min(ny, nx)
        sy, sx = scan_axes_on_detector(self.rotation.value(), self.flip.isChecked()) * length
        vec = np.array([[c, (0.0, length)], [c, (length, 0.0)], [c, sx], [c, sy]])
        colors = ["gray", "gray", "red", "lime"]
        if SCAN_AXES_LAYER in self.viewer.layers:
            layer = self.viewer.layers[SCAN_AXES_LAYER]
            layer.data = vec
            layer.edge_color = colors
        else:
            self.viewer.add_vectors(
                vec,
                name=SCAN_AXES_LAYER,
                edge_color=colors,
                edge_width=max(0.5, min(ny, nx) / 50),  # thin on any detector size
                vector_style="arrow",
                **cal.napari_kwargs("k"),
            )

    def auto_rotation(self) -> None:
        if self.com is None:
            self.status.setText("compute the centre of mass first")
            return
        self.status.setText("fitting the rotation...")
        self._rot_runner.request(_fit_rotation, self.com, descan=self._descan())

    def _on_rotation(self, fit) -> None:
        self.status.setText("")
        self.rotation.blockSignals(True)
        self.flip.blockSignals(True)
        self.rotation.setValue(fit.rotation_deg)
        self.flip.setChecked(fit.flip)
        self.rotation.blockSignals(False)
        self.flip.blockSignals(False)
        self.dpc_label.setStyleSheet("color: orange" if fit.ill_conditioned else "")
        self._mark_rotation_set(not fit.ill_conditioned)  # an arbitrary angle is not set
        self.show_scan_axes()
        self.dpc_label.setText(
            f"rotation {fit.rotation_deg:.2f} deg, flip {fit.flip}, confidence {fit.confidence:.3g}: "
            f"curl {fit.curl_rms:.3g} (other flip {fit.curl_rms_other_flip:.3g}), divergence {fit.div_rms:.3g}"
            + (
                " - ill-conditioned (no DPC signal above noise): the angle is arbitrary, set it by hand"
                if fit.ill_conditioned
                else ""
            )
        )
        self.update_dpc()

    def _descan(self) -> str:
        """The descan removal to use: the dock's choice, except that a plane fit needs at least 3
        scan positions; on fewer (a 1 x 2 scan) the mean origin is removed instead and the status
        line says so (session 14, audit3 #12: "only 2 finite origin measurements: too few to fit")."""
        choice = self.descan.currentText()
        n = 0 if self.com is None else int(np.prod(self.com.data.shape[:2]))
        if choice == "plane" and 0 < n < 3:
            self.status.setText(
                f"descan: a plane fit needs at least 3 scan positions (this scan has {n}); "
                "the mean origin is removed instead"
            )
            return "mean"
        return choice

    def update_dpc(self) -> None:
        """DPC and iDPC maps from the cached COM with the current rotation (no data pass)."""
        if self.com is None:
            return
        from ..pipelines import DPCParams

        try:
            dc, cal = self.datacube()
            params = DPCParams(
                rotation_deg=self.rotation.value(),
                flip=self.flip.isChecked(),
                descan=self._descan(),
                regularization=self.reg.value(),
            )
        except Napari4DSTEMError as e:
            self.status.setText(str(e))
            return
        # the cached COM: no pass over the data; the result knows its recipe
        self._dpc_runner.request(_dpc_job, dc, params, self.com, cal, layer_source(self.layer))

    def _show_dpc(self, out) -> None:
        self.result, wheel = out
        self.dpc_map, self.phase = self.result.dpc, self.result.phase
        cal = self.dpc_map.calibration
        v = self.results()
        uy, ux = self.dpc_map.channel("dpc_y"), self.dpc_map.channel("dpc_x")
        mag, phase, recipe = self.dpc_map.channel("magnitude"), self.phase, self.result.recipe
        # one new layer per event-loop turn (show_maps): napari builds each on the GUI thread
        steps = [
            ("DPC magnitude", lambda: show_map(v, "DPC magnitude", mag, cal, colormap="magma")),
            ("DPC colour wheel", lambda: show_map(v, "DPC colour wheel", wheel, cal, rgb=True)),
            (
                "iDPC phase",
                lambda: tag_layer(show_map(v, "iDPC phase", phase.data, cal, colormap="gray"), phase, recipe=recipe),
            ),
            ("DPC vectors", lambda: show_vectors(v, "DPC vectors", uy, ux, cal)),
        ]
        show_maps(v, steps, owner=self)

    def pipeline_result(self):
        """The COM/DPC/iDPC maps shown (Save result..., Copy as Python: PipelineActions)."""
        return self.result
