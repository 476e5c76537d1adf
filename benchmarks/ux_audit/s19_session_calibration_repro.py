"""Repro (session 15 audit, finding S1): the calibration a user sets in the GUI is lost when the saved
session is loaded into a fresh napari. Open a plain .npy (no calibration), Calibration and DPC dock:
scan step 4 A (Set the real-space scale), Results dock: Save session; a SECOND viewer: Results dock,
Load session; wait 10 s; the reopened 4D layer's scale. Exit 1 while the reopened layer is
uncalibrated although session.json stores the calibration; 0 when the scale comes back.

Run: xvfb-run -a -s "-screen 0 1920x1080x24" python s19_session_calibration_repro.py"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("NAPARI_4DSTEM_WARMUP_CHILD", "1")
import napari
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication, QFileDialog

tmp = Path(tempfile.mkdtemp(prefix="s19-repro-"))
rng = np.random.default_rng(1)
np.save(tmp / "cube.npy", rng.poisson(5, (8, 8, 32, 32)).astype(np.uint16))
answer = {"p": None}
QFileDialog.getSaveFileName = staticmethod(lambda *a, **k: (str(answer["p"]), ""))
QFileDialog.getOpenFileName = staticmethod(lambda *a, **k: (str(answer["p"]), ""))
app = QApplication.instance() or QApplication([])


def pump(s):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < s:
        app.processEvents()
        time.sleep(0.01)


v = napari.Viewer(show=True)
v.open(str(tmp / "cube.npy"), plugin="napari-4dstem")
pump(0.5)
_, dw = v.window.add_plugin_dock_widget("napari-4dstem", "Calibration and DPC")
dw.fov_mode.setCurrentText("scan step")
dw.fov_units.setCurrentText("A")
dw.fov_y.setValue(4.0)
dw.fov_x.setValue(4.0)
QTest.mouseClick(dw.apply_fov_btn, Qt.MouseButton.LeftButton)
pump(1.0)
cube = [l for l in v.layers if l.ndim == 4][0]
print("first viewer scale", tuple(cube.scale), [str(u) for u in cube.units])
_, rl = v.window.add_plugin_dock_widget("napari-4dstem", "Results")
answer["p"] = tmp / "session.json"
QTest.mouseClick(rl.save_session_btn, Qt.MouseButton.LeftButton)
pump(1.0)
stored = json.loads((tmp / "session.json").read_text())["settings"]["datacubes"][0]["calibration"]
print("session.json stores", {k: stored[k] for k in ("scan_step", "scan_units")})
v2 = napari.Viewer(show=True)
_, rl2 = v2.window.add_plugin_dock_widget("napari-4dstem", "Results")
QTest.mouseClick(rl2.load_session_btn, Qt.MouseButton.LeftButton)
pump(10.0)
c2 = [l for l in v2.layers if l.ndim == 4]
scale = tuple(float(s) for s in c2[0].scale) if c2 else None
print("reloaded viewer layers", [l.name for l in v2.layers], "scale", scale, [str(u) for u in c2[0].units] if c2 else None)
ok = bool(c2) and scale[:2] == (4.0, 4.0)
print("DEFECT: calibration lost on Load session" if not ok else "calibration restored")
sys.stdout.flush()
os._exit(0 if ok else 1)
