"""UX 5 follow-up: the first polygon drawn on the Real space canvas held the GUI thread 45 s in numba's
compiler (s10, a fresh machine). Draw one again (region layer, polygon button, 4 clicks, double
click) and give the longest GUI gaps while it is drawn: with napari's numba cache now warm this
tells whether the freeze is once per install. (NUMBA_CACHE_DIR=$(mktemp -d) for a cold run.)"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Audit, qt_mouse, real_space_model, rs_canvas_native, world_to_native

A = Audit("s15")
v = A.viewer
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest
from napari_4dstem.widgets._multiview import _QT
from napari_4dstem.widgets.virtual import DETECTOR_LAYER

A.measure("loadavg start", os.getloadavg(), numba_cache=os.environ.get("NUMBA_CACHE_DIR"))
v.open_sample("napari-4dstem", "strained_crystal")
cube = v.layers["strained_crystal"]
w = A.dock("Virtual imaging")
A.wait(lambda: w.last_image is not None and w._worker is None and w.presets_ready and DETECTOR_LAYER in v.layers, 300)
from napari_4dstem.widgets._warmup import is_warming

t0 = time.perf_counter()
A.wait(lambda: not is_warming(), 600)  # the warm-up done: nothing else compiles when the polygon is drawn
A.measure("warm-up finished after the first image (s)", round(time.perf_counter() - t0, 1))
A.process(1.0)
QTest.mouseClick(w.region_btn, Qt.MouseButton.LeftButton)
A.wait(lambda: w.region._key is not None and not w.region.runner.busy, 60)
rs = real_space_model(v)
native = rs_canvas_native(rs)
lay = w.region.layer
ctrl = _QT[rs]().qt_viewer.controls.widgets[lay]
QTest.mouseClick(ctrl.polygon_button, Qt.MouseButton.LeftButton)
A.process(0.3)
sy, sx = cube.scale[:2]
A.act("draw polygon")
n_g = len(A.gaps.gaps)
t0 = time.perf_counter()
pts = [(20, 4), (28, 6), (26, 14), (20, 12)]
for yx in pts:
    pp = world_to_native(rs, (yx[0] * sy, yx[1] * sx))
    qt_mouse(native, "press", pp); qt_mouse(native, "release", pp)
    A.process(0.1)
pp = world_to_native(rs, (pts[0][0] * sy, pts[0][1] * sx))
QTest.mouseDClick(native, Qt.MouseButton.LeftButton, pos=QPoint(int(pp[0]), int(pp[1])))
A.process(1.0)
gs = sorted(A.gaps.gaps[n_g:], key=lambda g: -g["wall_ms"])[:3]
A.measure("polygon drawn: shapes, s, longest gaps (wall, cpu, where)", (list(lay.shape_type), round(time.perf_counter() - t0, 1)),
          gaps=[(g["wall_ms"], g["cpu_ms"], g["where"][:2]) for g in gs])
A.measure("loadavg end", os.getloadavg())
A.dump()
os._exit(0)
