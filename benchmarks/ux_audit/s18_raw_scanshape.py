"""Session 14 audit: a REAL Merlin .mib opened as a raw binary through the *Open raw binary file*
dock, as a user fills its form (typed into the fields with QTest key clicks, Enter), the
green/red size line, Open; then Virtual imaging on it (numpy check), *Scan shape* reshape to the
other factorisation (numpy check after), the Result pane; and the Scan shape dock on a file the
reader opened as a 1-row scan (Merlin 9 frames, 24 bit) reshaped to 3 x 3.
Run: xvfb-run -a -s "-screen 0 1920x1080x24" python s18_raw_scanshape.py"""
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from harness import Audit

A = Audit("s18_raw")
v = A.viewer
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

from napari_4dstem.io import open_datacube

R = "/work/shared/realdata/rosettasciio/quantumdetector"
MIB = f"{R}/Merlin_navigation4x2_ROI/001_4x2_6bit.mib"
A.measure("loadavg start", os.getloadavg())


def click(b):
    QTest.mouseClick(b, Qt.MouseButton.LeftButton)


def type_into(w, text):
    w.setFocus()
    le = w.lineEdit() if hasattr(w, "lineEdit") else w
    le.selectAll()
    QTest.keyClicks(le, text)
    QTest.keyClick(le, Qt.Key.Key_Return)
    A.process(0.1)


def check_vi(vw, label):
    data = np.asarray(vw.layer.data).astype(float)
    det = vw.current_detector()
    img = np.asarray(vw.last_image.data, float)
    m = det.render(data.shape[-2:]).astype(float)
    want = np.tensordot(data, m, axes=([2, 3], [0, 1]))
    A.measure(label, bool(img.shape == want.shape and np.allclose(img, want)), img_shape=img.shape, want_shape=want.shape,
              det=repr(det)[:160])


rw = A.dock("Open raw binary file")
A.act("fill the raw form")
type_into(rw.path, MIB)
A.measure("size line, defaults (uint16 128x128)", rw.size_label.text(), fits=rw.fits)
type_into(rw.frame_header, "384")
rw.dtype.setCurrentText("uint8")
type_into(rw.k_rows, "256")
type_into(rw.k_cols, "256")
A.measure("size line after 384 B header, uint8, 256x256", rw.size_label.text(), fits=rw.fits,
          shapes=[rw.scan_shape.itemText(i) for i in range(rw.scan_shape.count())], open_enabled=rw.open_btn.isEnabled())
rw.scan_shape.setCurrentText("2 x 4")
A.process(0.2)
n0 = len(v.layers)
A.act("raw Open")
t0 = time.perf_counter()
click(rw.open_btn)
ok = A.wait(lambda: len(v.layers) > n0, 30)
A.measure("raw Open -> layer (s)", ok, status=rw.status.text()[:200])
raw = np.asarray(v.layers[-1].data)
ref = np.asarray(open_datacube(MIB).data)
A.measure("raw decode vs our MIB reader", {"shape": (raw.shape, ref.shape), "equal": bool(raw.shape == ref.shape and np.array_equal(raw, ref)),
                                           "equal_after_flip_ky": bool(raw.shape == ref.shape and np.array_equal(raw[:, :, ::-1], ref)),
                                           "sum": (int(raw.sum()), int(ref.sum()))})
A.act("virtual on the raw layer")
try:
    vw = A.dock("Virtual imaging")
    ok = A.wait(lambda: vw.last_image is not None and vw._worker is None, 120)
    A.measure("virtual first image on raw layer (s)", ok, status=vw.status.text()[:200], layer=getattr(vw.layer, "name", None))
    check_vi(vw, "raw layer: BF image == numpy")
except Exception:  # noqa
    A.measure("VIRTUAL on raw FAILED", traceback.format_exc()[-1000:])
    vw = None
A.act("scan shape reshape 4 x 2")
sw = A.dock("Scan shape")
A.measure("scan shape offers", [sw.shapes.itemText(i) for i in range(sw.shapes.count())], count=sw.count.text(), layer=sw.layer_combo.currentText())
sw.shapes.setCurrentText("4 x 2")
n_exc = len(A.excs)
click(sw.apply_btn)
A.process(0.5)
if vw is not None:
    ok = A.wait(lambda: vw.last_image is not None and vw._worker is None and np.asarray(vw.last_image.data).shape == (4, 2), 30)
    A.measure("virtual image follows the reshape (s)", ok, shape=None if vw.last_image is None else np.asarray(vw.last_image.data).shape,
              status=vw.status.text()[:200], excs=len(A.excs) - n_exc)
    if ok:
        check_vi(vw, "after reshape 4x2: image == numpy")
    from napari_4dstem.widgets._common import scan_position

    A.measure("dims after reshape", v.dims.current_step, nsteps=v.dims.nsteps, scan_pos=scan_position(v, vw.layer))
A.act("result pane on raw")
try:
    pane = A.dock("Result pane")
    A.process(1.0)
    A.measure("Result pane on raw layer", pane.status.text()[:200], shown=None if pane.shown is None else pane.shown[0])
except Exception:  # noqa
    A.measure("RESULT PANE on raw FAILED", traceback.format_exc()[-1000:])
A.shot("01_raw")

# ---- a 1-row scan from the reader, reshaped ---------------------------------------------------------
A.act("open 1x9 Merlin 24-bit and reshape 3x3")
v.open(f"{R}/Merlin_Single_Quad/Single_9_Frame_CounterDepth_24_Rows_256.mib", plugin="napari-4dstem")
A.process(0.5)
lyr = v.layers[-1]
sw.layer_combo.setCurrentText(lyr.name)
A.process(0.3)
A.measure("scan shape offers for 9 frames", [sw.shapes.itemText(i) for i in range(sw.shapes.count())], layer=sw.layer_combo.currentText())
sw.shapes.setCurrentText("3 x 3")
click(sw.apply_btn)
A.process(0.5)
A.measure("1x9 -> 3x3", lyr.data.shape, status=sw.status.text()[:200], scale=list(lyr.scale))
if vw is not None:
    vw_layer_before = getattr(vw.layer, "name", None)
    A.measure("virtual dock layer", vw_layer_before)
    try:
        vw.layer_combo.setCurrentText(lyr.name)
    except Exception:  # noqa
        pass
    ok = A.wait(lambda: vw.layer is lyr and vw.last_image is not None and vw._worker is None and np.asarray(vw.last_image.data).shape == (3, 3), 60)
    A.measure("virtual on the reshaped 3x3 (s)", ok, status=vw.status.text()[:200])
    if ok:
        check_vi(vw, "3x3: image == numpy")
A.shot("02_reshaped")
A.measure("loadavg end", os.getloadavg())
A.dump()
os._exit(0)
