"""Repro (session 15 audit, finding S6): after the Calibration and DPC dock's disk calibration is
applied (*Measure disk*, 1.2 mrad, 300 keV, *Apply to the layer*), (a) the diffraction canvas keeps
its camera: the pattern, now 0.0103 1/A per pixel instead of 1 px, shrinks to ~1 % of the canvas (a
black canvas with a "20 1/A" scale bar); (b) the Virtual imaging dock still says "detector not
calibrated: radii in pixels" (its mrad fields hidden) until the next preset click. Data: the session-15
SrTiO3 cube if /tmp/s19/sto.npy exists (s19_make_data.py), else a synthetic disk pattern.
(c) after "Set the real-space scale" (4 A step) the Real space canvas keeps its camera: the scan spans
380 % of its width (95 % before). Exit 1 while (a) the pattern spans < 25 % of the canvas width, (b) the
label still says "not calibrated", or (c) the scan spans outside 25-150 % of the Real space canvas.

Run: xvfb-run -a -s "-screen 0 1920x1080x24" python s19_calibrate_view_repro.py"""
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import napari
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

src = Path("/tmp/s19/sto.npy")
if not src.exists():
    tmp = Path(tempfile.mkdtemp(prefix="s19-cal-"))
    yy, xx = np.mgrid[:64, :64]
    disk = ((yy - 32) ** 2 + (xx - 32) ** 2 < 36).astype(float) * 50
    np.save(tmp / "cube.npy", np.random.default_rng(0).poisson(disk + 0.5, (12, 12, 64, 64)).astype(np.uint16))
    src = tmp / "cube.npy"
app = QApplication.instance() or QApplication([])


def pump(s):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < s:
        app.processEvents()
        time.sleep(0.01)


v = napari.Viewer(show=True)
v.window._qt_window.resize(1920, 1080)
v.open(str(src), plugin="napari-4dstem")
_, vw = v.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
t0 = time.perf_counter()
while vw.last_image is None and time.perf_counter() - t0 < 120:
    pump(0.2)
pump(1.0)
cube = [l for l in v.layers if l.ndim == 4][0]
canvas_w = v.window._qt_viewer.canvas.native.width()


def pattern_fraction():
    kx_extent = cube.data.shape[-1] * float(cube.scale[-1])  # world units
    return kx_extent * v.camera.zoom / canvas_w


f0 = pattern_fraction()
print(f"before calibration: pattern spans {100 * f0:.0f} % of the canvas width; VI label: {vw.angles.text()!r}")
_, dw = v.window.add_plugin_dock_widget("napari-4dstem", "Calibration and DPC")
dw.disk_alpha.setValue(1.2)
dw.beam_kev.setValue(300.0)
QTest.mouseClick(dw.measure_disk_btn, Qt.MouseButton.LeftButton)
t0 = time.perf_counter()
while not dw.apply_disk_btn.isEnabled() and time.perf_counter() - t0 < 120:
    pump(0.2)
QTest.mouseClick(dw.apply_disk_btn, Qt.MouseButton.LeftButton)
pump(3.0)
f1 = pattern_fraction()
label = vw.angles.text()
print(f"after Apply: k pixel {float(cube.scale[-1]):.5g} {cube.units[-1]}; pattern spans {100 * f1:.1f} % of the canvas; "
      f"scale bar unit {v.scale_bar.unit!r}; VI label: {label!r}")
# the Real space canvas after "Set the real-space scale" (scan step 4 A)
from napari_4dstem.widgets._results import results_viewer
from napari_4dstem.widgets._multiview import _QT

rs = results_viewer(v, create=False)
rs_w = _QT[rs]().qt_viewer.canvas.native.width()
scan_x = cube.data.shape[1]


def rs_fraction():
    return scan_x * float(cube.scale[1]) * rs.camera.zoom / rs_w


g0 = rs_fraction()
dw.fov_mode.setCurrentText("scan step")
dw.fov_units.setCurrentText("A")
dw.fov_y.setValue(4.0)
dw.fov_x.setValue(4.0)
QTest.mouseClick(dw.apply_fov_btn, Qt.MouseButton.LeftButton)
pump(3.0)
g1 = rs_fraction()
print(f"Real space: the scan spans {100 * g0:.0f} % of its canvas width before, {100 * g1:.0f} % after the 4 A scan step")
bad = []
if not 0.25 <= g1 <= 1.5:
    bad.append(f"the scan spans {100 * g1:.0f} % of the Real space canvas after the scan step")
if f1 < 0.25:
    bad.append(f"pattern spans {100 * f1:.1f} % of the canvas after calibration")
if "not calibrated" in label:
    bad.append("Virtual imaging still says the detector is not calibrated")
print("DEFECT:" if bad else "ok", bad)
sys.stdout.flush()
os._exit(1 if bad else 0)
