"""Repro (session 15 audit, finding S2): floating a docked form with napari's title-bar float button
pushes the main window off the 1920 x 1080 screen. Open a .npy, then the docks in a microscopist's
order (Virtual imaging, Calibration and DPC, Bragg disks and strain, Orientation mapping, Phase
retrieval, Classification, Results, Result pane, Log, Scan shape, Series, Simulation, NN); session 14's place_dock keeps the window on screen (later forms
float). Then click the float button of "Bragg disks and strain" (a docked form), and click it again
(dock back); then dock back the floating Orientation mapping dock (its float button). Seen: the window
is already 1920 x 1523 after opening the 8th dock (Result pane, placed under Real space), 1832 after
the Orientation dock is docked back (4350 with all nine floats docked back, s19_docks.py). Exit 1 while the main window or a dock of ours leaves the screen.

Run: xvfb-run -a -s "-screen 0 1920x1080x24" python s19_float_dockback_repro.py"""
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import napari
from qtpy.QtCore import QRect, Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication, QDockWidget, QPushButton

tmp = Path(tempfile.mkdtemp(prefix="s19-dock-"))
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
screen = win.screen().availableGeometry()
v.open(str(tmp / "cube.npy"), plugin="napari-4dstem")
for t in ("Virtual imaging", "Calibration and DPC", "Bragg disks and strain", "Orientation mapping", "Phase retrieval",
          "Classification", "Results", "Result pane", "Log", "Scan shape", "Series, compare and watch",
          "Simulation and training data", "NN disk detection"):
    v.window.add_plugin_dock_widget("napari-4dstem", t)
    pump(0.8)


def state(label):
    bad = []
    wg = win.frameGeometry()
    if not screen.contains(wg):
        bad.append(("main window", (wg.x(), wg.y(), wg.width(), wg.height())))
    for d in win.findChildren(QDockWidget):
        if not d.isVisible():
            continue
        g = d.frameGeometry() if d.isFloating() else QRect(d.mapToGlobal(d.rect().topLeft()), d.size())
        if not screen.contains(g):
            bad.append((d.windowTitle()[:30], "float" if d.isFloating() else "docked", (g.x(), g.y(), g.width(), g.height())))
    print(f"{label}: window {wg.width()} x {wg.height()}; off screen: {bad}")
    return bad


bad = state("after opening 13 docks")
bragg = [d for d in win.findChildren(QDockWidget) if d.windowTitle().startswith("Bragg")][0]
print("Bragg floating before:", bragg.isFloating())


def float_button(d):
    return [b for b in d.titleBarWidget().findChildren(QPushButton) if b.objectName() == "QTitleBarFloatButton"][0]


QTest.mouseClick(float_button(bragg), Qt.MouseButton.LeftButton)
pump(1.5)
bad += state("after floating Bragg with its float button")
QTest.mouseClick(float_button(bragg), Qt.MouseButton.LeftButton)
pump(1.5)
bad += state("after docking Bragg back")
orient = [d for d in win.findChildren(QDockWidget) if d.windowTitle().startswith("Orientation")][0]
print("Orientation floating (placed by place_dock):", orient.isFloating())
if orient.isFloating():
    QTest.mouseClick(float_button(orient), Qt.MouseButton.LeftButton)
    pump(1.5)
    bad += state("after docking the floating Orientation dock back (its float button)")
print("DEFECT: window/docks off screen" if bad else "ok")
sys.stdout.flush()
os._exit(1 if bad else 0)
