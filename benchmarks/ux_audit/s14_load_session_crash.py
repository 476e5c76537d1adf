"""UX 21 follow-up: *Load session...* into a fresh viewer crashed the process (segfault) in 2 of
3 runs of s11. Here alone: a session saved from the sample, then (a) napari alone opening the same
file into a fresh viewer with the same reader (the baseline: the same layers, the same "Inconsistent
units" warnings), (b) the Results dock's Load session button in another fresh viewer. Which step
the process dies in is the last line printed. Run several times."""
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Audit

A = Audit("s14")
v = A.viewer
import napari
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QFileDialog

TMP = Path(tempfile.mkdtemp(prefix="ux-audit-s14-"))
QFileDialog.getSaveFileName = staticmethod(lambda *a, **k: (str(TMP / "session.json"), ""))
QFileDialog.getOpenFileName = staticmethod(lambda *a, **k: (str(TMP / "session.json"), ""))
A.measure("loadavg start", os.getloadavg())
v.open_sample("napari-4dstem", "strained_crystal")
w = A.dock("Virtual imaging")
A.wait(lambda: w.last_image is not None and w._worker is None and w.presets_ready, 300)
r = A.dock("Results")
QTest.mouseClick(r.save_session_btn, Qt.MouseButton.LeftButton)
A.process(0.3)
src = str(Path(__file__).resolve().parents[2] / "sample_data" / "strained_crystal.h5")
A.act("BASELINE napari open of the same file in a fresh viewer")
v3 = napari.Viewer(show=True)
A.process(0.5)
n_g = len(A.gaps.gaps)
c0 = time.thread_time(); t0 = time.perf_counter()
v3.open(src, plugin="napari-4dstem")
A.measure("BASELINE viewer.open: call wall s, GUI cpu s, layers", (round(time.perf_counter() - t0, 2), round(time.thread_time() - c0, 2)), layers=len(v3.layers))
A.process(2.0)
A.measure("BASELINE gaps after (wall ms)", [g["wall_ms"] for g in A.gaps.gaps[n_g:]])
A.act("Load session in a fresh viewer")
v2 = napari.Viewer(show=True)
A.process(0.5)
_, r2 = v2.window.add_plugin_dock_widget("napari-4dstem", "Results")
A.process(0.3)
n_g = len(A.gaps.gaps)
c0 = time.thread_time(); t0 = time.perf_counter()
print("clicking Load session", flush=True)
QTest.mouseClick(r2.load_session_btn, Qt.MouseButton.LeftButton)
A.measure("Load session click: wall s, GUI cpu s, layers", (round(time.perf_counter() - t0, 2), round(time.thread_time() - c0, 2)), layers=len(v2.layers), status=r2.status.text()[:150])
A.process(2.0)
A.measure("Load gaps after (wall ms)", [g["wall_ms"] for g in A.gaps.gaps[n_g:]])
A.measure("loadavg end", os.getloadavg())
A.dump()
os._exit(0)
