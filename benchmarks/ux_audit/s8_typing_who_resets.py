"""Who resets a typed radius? Type 12 + Return in 'outer radius [px]' (real key events) and record the
Python stack of every valueChanged; then the same with setValue(12) (what the tests do) as control.
Run: cd <checkout> && nice -n 10 xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python benchmarks/ux_audit/s8_typing_who_resets.py"""
import os, sys, time, traceback
import os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Audit
A = Audit("s8")
v = A.viewer
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
v.open_sample("napari-4dstem", "strained_crystal")
vw = A.dock("Virtual imaging")
A.wait(lambda: vw.last_image is not None and vw._worker is None and vw.presets_ready, 60)
A.process(1)
A.win.raise_(); A.win.activateWindow(); A.process(0.3)
log = []
def on(x):
    st = [f"{os.path.basename(f.filename)}:{f.name}:{f.lineno}" for f in traceback.extract_stack()[:-1] if "napari_4dstem" in f.filename or "s8_" in f.filename]
    log.append((round(x, 3), st[-6:]))
    if len(log) == 2 and not getattr(on, "done", False):
        on.done = True
        print("FULLSTACK", " | ".join(f"{f.filename.split('site-packages/')[-1]}:{f.name}:{f.lineno}" for f in traceback.extract_stack()[-22:-1]))
vw.r_out.valueChanged.connect(on)
sb = vw.r_out
sb.setFocus(); A.process(0.2)
sb.lineEdit().selectAll()
QTest.keyClicks(sb.lineEdit(), "12")
QTest.keyClick(sb.lineEdit(), Qt.Key.Key_Return)
for _ in range(3):
    A.process(0.5)
A.measure("typed 12 + Return: valueChanged with stacks", log, r_out=sb.value(), det=round(vw._last_detector.radius_px, 3))
log.clear()
sb.setValue(10.0)
A.wait(lambda: vw._worker is None and vw._pending is None, 10); A.process(1.0)
A.measure("control setValue(10): valueChanged", log, r_out=sb.value(), det=round(vw._last_detector.radius_px, 3))
log.clear()
sb.setFocus(); A.process(0.2)
sb.lineEdit().selectAll()
QTest.keyClicks(sb.lineEdit(), "14")
QTest.keyClick(sb.lineEdit(), Qt.Key.Key_Tab)
for _ in range(3):
    A.process(0.5)
A.measure("typed 14 + Tab: valueChanged", log, r_out=sb.value(), det=round(vw._last_detector.radius_px, 3))
A.dump()
os._exit(0)
