"""Session 14: the process died (SIGSEGV in vispy/llvmpipe painting) within seconds of the
Calibration and DPC dock's first job on 3 of 3 small real files. Isolate it: MODE
  dpc          open the file, only the DPC dock, click Measure origin, paint 20 s
  dpc_noclick  open the file, only the DPC dock, paint 20 s
  napari_arrow napari alone: the file's layer + a Vectors layer like the dock's "scan axes (DPC)"
               (4 vectors, vector_style="arrow", edge_width as the dock's), paint 20 s
  napari_line  the same with vector_style="line"
  notify_rs    open the file, the Virtual imaging dock (our second canvas), then 10 napari error
               notifications (napari.utils.notifications.show_error) 1.5 s apart, painting
  napari_notify  napari alone: the file's layer, the same 10 error notifications
Run: xvfb-run -a -s "-screen 0 1920x1080x24" python -X faulthandler s18_dpc_segv.py MODE FILE"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from harness import Audit

MODE, PATH = sys.argv[1], sys.argv[2]
A = Audit(f"s18_segv_{MODE}")
v = A.viewer
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

A.measure("loadavg start", os.getloadavg())
v.open(PATH, plugin="napari-4dstem")
A.process(1.0)
cube = [l for l in v.layers if l.ndim == 4][0]
ny, nx = cube.data.shape[-2:]
if MODE.startswith("dpc"):
    dw = A.dock("Calibration and DPC")
    A.process(1.0)
    A.measure("layers", [(l.name, type(l).__name__) for l in v.layers])
    if MODE == "dpc":
        A.act("Measure origin")
        QTest.mouseClick(dw.measure_btn, Qt.MouseButton.LeftButton)
elif MODE in ("notify_rs", "napari_notify"):
    from napari.utils.notifications import show_error

    if MODE == "notify_rs":
        vw = A.dock("Virtual imaging")
        A.wait(lambda: vw.last_image is not None and vw._worker is None, 60)
    for k in range(10):
        A.act(f"show_error {k}")
        show_error(f"audit error notification {k}")
        A.process(1.5)
else:
    c = ((ny - 1) / 2, (nx - 1) / 2)
    L = 0.3 * min(ny, nx)
    vec = np.array([[c, (0.0, L)], [c, (L, 0.0)], [c, (0.0, L)], [c, (L, 0.0)]])
    v.add_vectors(vec, name="axes", edge_color=["gray", "gray", "red", "lime"], edge_width=max(0.5, min(ny, nx) / 50),
                  vector_style="arrow" if MODE == "napari_arrow" else "line", scale=cube.scale[-2:])
A.act("paint 20 s")
t0 = time.perf_counter()
while time.perf_counter() - t0 < 20:
    A.process(0.5)
    v.dims.set_current_step(0, (v.dims.current_step[0] + 1) % max(1, int(v.dims.nsteps[0])))
A.measure("survived 20 s", True)
A.dump()
os._exit(0)
