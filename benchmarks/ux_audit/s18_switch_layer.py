"""Session 14 follow-up of s18_raw_scanshape.py's last step: two real Merlin files open; the
Virtual imaging dock switched (its layer list) to the second one, before and after *Scan shape*
reshapes it 1 x 9 -> 3 x 3. Does the dock show the second file's image, and is it exact?
Run: xvfb-run -a -s "-screen 0 1920x1080x24" python s18_switch_layer.py"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from harness import Audit

A = Audit("s18_switch")
v = A.viewer
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

R = "/work/shared/realdata/rosettasciio/quantumdetector"
A.measure("loadavg start", os.getloadavg())
v.open(f"{R}/Merlin_navigation4x2_ROI/001_4x2_6bit.mib", plugin="napari-4dstem")
vw = A.dock("Virtual imaging")
A.wait(lambda: vw.last_image is not None and vw._worker is None, 60)
v.open(f"{R}/Merlin_Single_Quad/Single_9_Frame_CounterDepth_24_Rows_256.mib", plugin="napari-4dstem")
B = v.layers["Single_9_Frame_CounterDepth_24_Rows_256"]
A.process(0.5)
A.measure("dock layer after 2nd open", getattr(vw.layer, "name", None), items=[vw.layer_combo.itemText(i) for i in range(vw.layer_combo.count())])


def check(label, shape):
    ok = A.wait(lambda: vw.layer is B and vw.last_image is not None and vw._worker is None
                and np.asarray(vw.last_image.data).shape == shape, 60)
    img = None if vw.last_image is None else np.asarray(vw.last_image.data, float)
    res = None
    A.measure(label + " (state)", {"layer_is_B": vw.layer is B, "worker": repr(vw._worker)[:120], "presets_ready": vw.presets_ready})
    if img is not None and img.shape == shape:
        det = vw.current_detector()
        want = np.tensordot(np.asarray(B.data).astype(float), det.render(B.data.shape[-2:]).astype(float), axes=([2, 3], [0, 1]))
        res = bool(np.allclose(img, want))
    A.measure(label, ok, layer=getattr(vw.layer, "name", None), img_shape=None if img is None else img.shape, exact=res,
              status=vw.status.text()[:200])


vw.layer_combo.setCurrentText(B.name)
check("switch to 1x9 file: image (s)", (1, 9))
sw = A.dock("Scan shape")
sw.layer_combo.setCurrentText(B.name)
A.process(0.3)
sw.shapes.setCurrentText("3 x 3")
QTest.mouseClick(sw.apply_btn, Qt.MouseButton.LeftButton)
A.process(0.3)
A.measure("reshaped", B.data.shape, status=sw.status.text())
check("after reshape to 3x3 while shown: image (s)", (3, 3))
A.dump()
os._exit(0)
