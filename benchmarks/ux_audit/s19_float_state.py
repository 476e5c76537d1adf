"""Session 15 audit, part 2 (state): a value typed in a docked form (Bragg *max peaks* 33, Virtual
imaging outer radius 9.5) survives float + dock back through napari's float button? And a floating
form (Classification *n_classes* 7) docked back? Prints the values; exit 1 if one is lost.

Run: xvfb-run -a -s "-screen 0 1920x1080x24" python s19_float_state.py"""
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import napari
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication, QDockWidget, QPushButton

tmp = Path(tempfile.mkdtemp(prefix="s19-fs-"))
np.save(tmp / "cube.npy", np.random.default_rng(0).poisson(5, (8, 8, 32, 32)).astype(np.uint16))
app = QApplication.instance() or QApplication([])


def pump(s):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < s:
        app.processEvents()
        time.sleep(0.01)


v = napari.Viewer(show=True)
win = v.window._qt_window
win.resize(1920, 1080)
v.open(str(tmp / "cube.npy"), plugin="napari-4dstem")
ws = {}
for t in ("Virtual imaging", "Calibration and DPC", "Bragg disks and strain", "Orientation mapping", "Phase retrieval",
          "Classification"):
    _, ws[t] = v.window.add_plugin_dock_widget("napari-4dstem", t)
    pump(0.8)
pump(2.0)
ws["Bragg disks and strain"].max_peaks.setValue(33)
ws["Virtual imaging"].r_out.setValue(9.5)
ws["Classification"].n_classes.setValue(7)
pump(1.0)


def dock_of(title):
    return [d for d in win.findChildren(QDockWidget) if d.windowTitle().startswith(title)][0]


def toggle(d):
    b = [b for b in d.titleBarWidget().findChildren(QPushButton) if b.objectName() == "QTitleBarFloatButton"][0]
    QTest.mouseClick(b, Qt.MouseButton.LeftButton)
    pump(1.5)


lost = []
for title in ("Bragg disks and strain", "Virtual imaging"):
    d = dock_of(title)
    toggle(d)
    f = d.isFloating()
    toggle(d)
    print(f"{title}: floated {f}, docked back {not d.isFloating()}")
d = dock_of("Classification")
was = d.isFloating()
toggle(d)
print(f"Classification: floating {was} -> {d.isFloating()}")
vals = {"Bragg max_peaks": (ws["Bragg disks and strain"].max_peaks.value(), 33),
        "Virtual r_out": (ws["Virtual imaging"].r_out.value(), 9.5),
        "Classification n_classes": (ws["Classification"].n_classes.value(), 7)}
for k, (now, want) in vals.items():
    print(f"{k}: {now} (typed {want})")
    if abs(now - want) > 1e-9:
        lost.append(k)
print("LOST:" if lost else "kept", lost)
sys.stdout.flush()
os._exit(1 if lost else 0)
