"""(a) Typing into the radius fields with real key events (px field as the control, then mrad);
(b) Orientation 'Check current pattern' at scan (0, 0) of the strained_crystal sample: the Log dock's traceback.
Run: cd <checkout> && nice -n 10 xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python benchmarks/ux_audit/s7_typing_orientation00.py"""
import os, sys, time
import os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Audit
A = Audit("s7")
v = A.viewer
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
v.open_sample("napari-4dstem", "strained_crystal")
vw = A.dock("Virtual imaging")
lg = A.dock("Log")
A.wait(lambda: vw.last_image is not None and vw._worker is None and vw.presets_ready, 60)
A.process(1)
A.win.raise_(); A.win.activateWindow(); A.process(0.3)

def typ(sb, text, label):
    vals = []
    sb.valueChanged.connect(lambda x: vals.append(round(x, 4)))
    sb.setFocus(); A.process(0.2)
    foc = sb.hasFocus()
    sb.lineEdit().selectAll()
    QTest.keyClicks(sb.lineEdit(), text)
    mid = sb.text()
    QTest.keyClick(sb.lineEdit(), Qt.Key.Key_Return)
    A.wait(lambda: vw._worker is None and vw._pending is None, 10); A.process(0.4)
    A.measure(label, {"focus": foc, "text_typed": mid, "valueChanged": vals, "r_out px": vw.r_out.value(), "r_out mrad": vw.r_out_cal.value(),
                      "detector radius": round(getattr(vw._last_detector, "radius_px", float("nan")), 3), "text_after": sb.text()})

typ(vw.r_out, "12", "typed 12 in 'outer radius [px]' + Return")
typ(vw.r_out_cal, "3.15", "typed 3.15 in 'outer radius [mrad]' + Return")
typ(vw.r_out_cal, "1", "typed 1 in 'outer radius [mrad]' + Return")

ow = A.dock("Orientation mapping")
A.process(1)
from napari_4dstem.widgets._common import scan_position
pos = scan_position(v, v.layers["strained_crystal"])
QTest.mouseClick(ow.check_btn, Qt.MouseButton.LeftButton)
A.wait(lambda: ow.jobs.busy, 5)
A.wait(lambda: not ow.jobs.busy, 240)
A.measure("Orientation check at scan %s" % (pos,), ow.status.text()[:200])
A.measure("Log dock text", lg.text.toPlainText()[-3500:])
A.shot("00_orientation00_log")
A.dump()
os._exit(0)
