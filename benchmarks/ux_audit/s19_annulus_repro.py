"""Repro (session 15 audit, finding S7): in the Virtual imaging dock, an annulus whose inner radius is
TYPED larger than its outer radius (outer 10 Enter, inner 40 Enter: QTest keys) keeps the typed 40 in
the field while the image is computed with the previous inner radius (2.97 px on the SrTiO3 data); the
status line stayed empty in 2 of 3 runs and once read "annulus radii must satisfy 0 <= inner_px <
outer_px, got 40.0, 10.0" (the library's words). What the
form shows is not the detector used. Exit 1 while the field and the detector disagree.

Run: xvfb-run -a -s "-screen 0 1920x1080x24" python s19_annulus_repro.py"""
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
    tmp = Path(tempfile.mkdtemp(prefix="s19-ann-"))
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


def type_into(spin, text):
    le = spin.lineEdit()
    spin.setFocus()
    QTest.mouseClick(le, Qt.MouseButton.LeftButton)
    QTest.keyClick(le, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClicks(le, text)
    QTest.keyClick(le, Qt.Key.Key_Return)
    spin.clearFocus()
    pump(1.0)


v = napari.Viewer(show=True)
v.open(str(src), plugin="napari-4dstem")
_, w = v.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
t0 = time.perf_counter()
while (w.last_image is None or not w.presets_ready) and time.perf_counter() - t0 < 120:
    pump(0.2)
w.kind_combo.setCurrentText("Annulus")
pump(2.0)
type_into(w.r_out, "10")
type_into(w.r_in, "40")
pump(2.0)
det = w.current_detector()
inner = getattr(det, "inner_px", None)
print(f"fields: inner {w.r_in.value()}, outer {w.r_out.value()}; detector used: {det!r}; status: {w.status.text()!r}")
bad = inner is not None and abs(inner - w.r_in.value()) > 1e-6
print("DEFECT: the inner-radius field shows a value the detector does not use" if bad else "ok")
sys.stdout.flush()
os._exit(1 if bad else 0)
