"""Repro (session 15 audit, finding S4): floating the Result pane (a dock holding our second napari
canvas) with napari's own title-bar float button makes vispy raise `RuntimeError: OpenGL got errors
(Check before draw): GL_INVALID_VALUE` / `GLError ... glVertexAttribPointer` tracebacks on paint.
Open a small .npy, Virtual imaging, Result pane, click its QTitleBarFloatButton, paint 2 s; then the
same for the Real space dock. Exit 1 while any traceback reaches sys.excepthook.

Run: xvfb-run -a -s "-screen 0 1920x1080x24" python s19_float_canvas_repro.py"""
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import napari
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication, QDockWidget, QPushButton

excs = []
sys.excepthook = lambda t, v, tb: excs.append("".join(traceback.format_exception(t, v, tb)))
tmp = Path(tempfile.mkdtemp(prefix="s19-float-"))
np.save(tmp / "cube.npy", np.random.default_rng(0).poisson(5, (8, 8, 32, 32)).astype(np.uint16))
app = QApplication.instance() or QApplication([])


def pump(s):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < s:
        app.processEvents()
        time.sleep(0.01)


v = napari.Viewer(show=True)
v.window._qt_window.resize(1920, 1080)
v.open(str(tmp / "cube.npy"), plugin="napari-4dstem")
v.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
pump(3.0)
v.window.add_plugin_dock_widget("napari-4dstem", "Result pane")
pump(2.0)
win = v.window._qt_window
result = {}
for title in ("Result pane", "Real space"):
    d = [d for d in win.findChildren(QDockWidget) if d.windowTitle().startswith(title) and d.isVisible()]
    if not d:
        print("no dock", title)
        continue
    d = d[0]
    b = [b for b in d.titleBarWidget().findChildren(QPushButton) if b.objectName() == "QTitleBarFloatButton"]
    n = len(excs)
    QTest.mouseClick(b[0], Qt.MouseButton.LeftButton)
    pump(2.0)
    result[title] = (d.isFloating(), len(excs) - n)
    print(f"{title}: floating {d.isFloating()}, tracebacks while painting: {len(excs) - n}")
for e in excs[:2]:
    print(e.strip().splitlines()[-1][:200])
bad = sum(n for _, n in result.values())
print("DEFECT: GL tracebacks after floating a canvas dock" if bad else "ok")
sys.stdout.flush()
os._exit(1 if bad else 0)
