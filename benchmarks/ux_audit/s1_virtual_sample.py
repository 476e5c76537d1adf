"""UX points 1,3,4,6,7,8,12,13,22 on the bundled strained_crystal sample, through real Qt events.
Run: cd <checkout> && nice -n 10 xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python benchmarks/ux_audit/s1_virtual_sample.py"""
import sys, time
import os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from harness import LOGS, Audit, real_space_model, rs_canvas_native, qt_mouse, world_to_native

A = Audit("s1")
v = A.viewer
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from napari_4dstem.widgets._common import scan_position
from napari_4dstem.widgets.virtual import DETECTOR_LAYER

A.act("open sample")
t0 = time.perf_counter()
v.open_sample("napari-4dstem", "strained_crystal")
A.measure("open_sample returned s", round(time.perf_counter() - t0, 3))
cube = v.layers["strained_crystal"]
print("layers", [l.name for l in v.layers], "selected", [l.name for l in v.layers.selection], "shape", cube.data.shape, cube.scale, cube.units)
A.process(0.5)
A.shot("00_after_open")

A.act("open virtual dock")
t0 = time.perf_counter()
w = A.dock("Virtual imaging")
dt = A.wait(lambda: w.last_image is not None, 60)
A.measure("first virtual image after dock open s", dt)
A.wait(lambda: w._worker is None and w.presets_ready, 120)
A.measure("presets ready after dock open s", round(time.perf_counter() - t0, 2))
A.process(1.0)
print("status:", w.status.text())
A.shot("01_virtual_dock")
rs = real_space_model(v)
print("real space layers", [l.name for l in rs.layers])
# main canvas screenshot: detector outline present?
main_img = v.screenshot(canvas_only=True, flash=False)
np.save(str(LOGS) + "/s1_main_canvas.npy", main_img)

# ---- UX 4: real clicks on real space ------------------------------------------------------
A.act("real-space clicks")
native = rs_canvas_native(rs)
sy, sx = cube.scale[:2]
ny, nx = cube.data.shape[:2]
wrong = []
for iy, ix in [(0, 0), (ny - 1, nx - 1), (3, 4), (10, 20), (ny // 2, nx // 2)]:
    for dy, dx in ((0, 0), (0.4, 0.4), (-0.4, -0.4), (0.4, -0.4)):
        pos = world_to_native(rs, ((iy + dy) * sy, (ix + dx) * sx))
        qt_mouse(native, "press", pos)
        qt_mouse(native, "release", pos)
        A.process(0.05)
        got = scan_position(v, cube)
        if got != (iy, ix):
            wrong.append(((iy, ix), (dy, dx), got))
A.measure("real-space click mispicks (of 20)", len(wrong), detail=wrong[:8])

# ---- drag on real space: latency move -> pattern on main canvas ------------------------------
A.act("real-space drag")
main_sc = v.window._qt_viewer.canvas._scene_canvas
draws = []
main_sc.events.draw.connect(lambda e: draws.append(time.perf_counter()))
lat = []
p0 = world_to_native(rs, (5 * sy, 5 * sx))
qt_mouse(native, "press", p0)
A.process(0.05)
for k in range(6, 36):
    target = (k % ny, (2 * k) % nx)
    pos = world_to_native(rs, (target[0] * sy, target[1] * sx))
    n0 = len(draws)
    t0 = time.perf_counter()
    qt_mouse(native, "move", pos, buttons=True)
    ok = A.wait(lambda: scan_position(v, cube) == target and len(draws) > n0, 2.0)
    lat.append((time.perf_counter() - t0) * 1e3 if ok is not None else None)
    A.process(0.012)
qt_mouse(native, "release", pos)
good = [x for x in lat if x is not None]
A.measure("drag move -> main canvas drawn ms (median,p90,missed)",
          (round(float(np.median(good)), 1) if good else None, round(float(np.percentile(good, 90)), 1) if good else None, lat.count(None)))
# pattern correctness at end
end = scan_position(v, cube)
A.measure("pattern shown equals data at scan pos", bool(np.array_equal(np.asarray(cube._slice.image.raw), np.asarray(cube.data[end]))), pos=end)
A.process(0.3)
A.shot("02_after_drag")

# napari alone baseline: dims step -> main canvas drawn (same window, same run)
A.act("baseline dims step")
bl = []
for k in range(20):
    n0 = len(draws); t0 = time.perf_counter()
    v.dims.current_step = ((k * 3) % ny, (k * 5) % nx) + tuple(v.dims.current_step[2:])
    A.wait(lambda: len(draws) > n0, 2)
    bl.append((time.perf_counter() - t0) * 1e3)
    A.process(0.012)
A.measure("BASELINE napari dims.current_step -> main canvas drawn ms (median,p90)", (round(float(np.median(bl)), 1), round(float(np.percentile(bl, 90)), 1)))
import os as _os
A.measure("loadavg", _os.getloadavg())
# hover readout
A.act("hover")
A.process(0.05)
pos = world_to_native(rs, (4.2 * sy, 9.4 * sx))
qt_mouse(native, "move", pos, buttons=False)
A.process(0.3)
A.measure("hover readout text", w.realspace.readout.text(), scan_after=scan_position(v, cube))

# ---- UX 8 presets via real button clicks -------------------------------------------------
A.act("presets")
pres = {}
for name in ["BF", "ABF", "LAADF", "ADF", "HAADF", "Full", "BF", "HAADF", "ABF", "Full"]:
    b = w.presets[name]
    n0 = len(draws)
    c0 = time.thread_time()
    t0 = time.perf_counter()
    QTest.mouseClick(b, Qt.MouseButton.LeftButton)
    t_click = (time.perf_counter() - t0) * 1e3
    cpu_click = (time.thread_time() - c0) * 1e3
    ok = A.wait(lambda: len(draws) > n0 and w._worker is None, 5)
    pres.setdefault(name, []).append((round(t_click, 1), round(cpu_click, 1), round((time.perf_counter() - t0) * 1e3, 1)))
    A.process(0.1)
A.measure("preset click: (click handler wall ms, cpu ms, until main canvas drawn ms)", pres)
print("status:", w.status.text(), "| title:", w.realspace.title.text() if hasattr(w.realspace, "title") else "")
A.shot("03_preset_HAADF_then_Full")

# ---- UX 12 display scale ---------------------------------------------------------------
A.act("display scale")
li = w.realspace
rs_sc = None
from napari_4dstem.widgets._multiview import _QT
rs_sc = _QT[rs]().qt_viewer.canvas._scene_canvas
rdraws = []
rs_sc.events.draw.connect(lambda e: rdraws.append(time.perf_counter()))
disp = []
for txt in ["Log", "Sqrt", "Lin", "Log", "Lin", "Sqrt", "Lin"]:
    n0 = len(rdraws)
    c0 = time.thread_time(); t0 = time.perf_counter()
    li.scale_combo.setCurrentText(txt)
    h = (time.perf_counter() - t0) * 1e3; hc = (time.thread_time() - c0) * 1e3
    A.wait(lambda: len(rdraws) > n0, 3)
    disp.append((txt, round(h, 1), round(hc, 1), round((time.perf_counter() - t0) * 1e3, 1)))
    A.process(0.05)
A.measure("display scale change (handler wall, cpu, until RS drawn) ms", disp)
for txt in ["1-99 %", "min-max", "0.1-99.9 %"]:
    items = [li.range_combo.itemText(i) for i in range(li.range_combo.count())]
print("range items", items, "scale items", [li.scale_combo.itemText(i) for i in range(li.scale_combo.count())])
A.shot("04_display_sqrt_lin")

# baseline: napari colormap change on the RS image layer
bl = []
for cm in ["magma", "gray", "viridis", "gray", "magma", "gray"]:
    n0 = len(rdraws); c0 = time.thread_time(); t0 = time.perf_counter()
    rs.layers["virtual image"].colormap = cm
    hc = (time.thread_time() - c0) * 1e3
    A.wait(lambda: len(rdraws) > n0, 3)
    bl.append((round(hc, 1), round((time.perf_counter() - t0) * 1e3, 1)))
    A.process(0.05)
A.measure("BASELINE napari colormap change on RS layer (cpu, until drawn) ms", bl)
# ---- UX 6 typed radii in mrad -----------------------------------------------------------
A.act("type radius in mrad")
w.presets["BF"].click(); A.wait(lambda: w._worker is None, 5)
sb = w.r_out_cal
print("r_out_cal label:", w._form.labelForField(sb).text() if w._form.labelForField(sb) else None, "enabled", sb.isEnabled(), "value", sb.value(), "r_out", w.r_out.value())
sb.setFocus(); sb.selectAll()
QTest.keyClicks(sb, "3.15")
print("spinbox text after typing:", repr(sb.text()), "visible", sb.isVisible(), "focus", sb.hasFocus())
QTest.keyClick(sb, Qt.Key.Key_Return)
print("spinbox value after Return:", sb.value())
A.wait(lambda: w._worker is None and w._pending is None, 10)
A.process(0.3)
A.measure("typed 3.15 mrad -> r_out px, detector radius", (w.r_out.value(), getattr(w._last_detector, "radius_px", None), type(w._last_detector).__name__))
A.shot("05_typed_mrad")

# ---- toolbar kinds ------------------------------------------------------------------------
A.act("toolbar kinds")
kinds_res = {}
for kind, b in w.toolbar.buttons.items():
    if "Mask" in kind:
        continue
    QTest.mouseClick(b, Qt.MouseButton.LeftButton)
    A.wait(lambda: w._worker is None and w._pending is None, 20)
    A.process(0.2)
    kinds_res[kind] = (type(w._last_detector).__name__, w.status.text()[:120], w.kind_combo.currentText())
A.measure("toolbar kind -> detector, status, combo", kinds_res)
A.shot("06_toolbar_last")
QTest.mouseClick(w.toolbar.buttons["Disk"], Qt.MouseButton.LeftButton); A.wait(lambda: w._worker is None and w._pending is None, 20)

# ---- keyboard: real key events on the main canvas -----------------------------------------
A.act("keyboard")
mc = v.window._qt_viewer.canvas.native
mc.setFocus(); A.process(0.1)
v.layers.selection.active = cube
det0 = w._last_detector
scan0 = scan_position(v, cube)
res = {}
for key, mod, label in [(Qt.Key.Key_D, Qt.KeyboardModifier.NoModifier, "D"), (Qt.Key.Key_Equal, Qt.KeyboardModifier.NoModifier, "="),
                        (Qt.Key.Key_Plus, Qt.KeyboardModifier.NoModifier, "+"),
                        (Qt.Key.Key_L, Qt.KeyboardModifier.NoModifier, "L"), (Qt.Key.Key_K, Qt.KeyboardModifier.ShiftModifier, "Shift+K"),
                        (Qt.Key.Key_Right, Qt.KeyboardModifier.NoModifier, "Right"), (Qt.Key.Key_Minus, Qt.KeyboardModifier.NoModifier, "-")]:
    d_before = w._last_detector; s_before = scan_position(v, cube)
    QTest.keyClick(mc, key, mod)
    A.wait(lambda: w._worker is None and w._pending is None, 10); A.process(0.15)
    d = w._last_detector
    res[label] = {"center": tuple(np.round(getattr(d, "center_px", (np.nan, np.nan)), 2)), "r": getattr(d, "radius_px", None),
                  "scan": scan_position(v, cube), "changed_det": d is not d_before, "scan_moved": scan_position(v, cube) != s_before}
A.measure("keys (real QKeyEvents on main canvas, 4D layer selected)", res, det0=(det0.center_px, getattr(det0, "radius_px", None)), scan0=scan0)
# with the detector layer selected (what a user has after clicking on the shape)
v.layers.selection.active = v.layers[DETECTOR_LAYER]
d_before = w._last_detector
QTest.keyClick(mc, Qt.Key.Key_D); A.process(0.3)
A.measure("D with detector layer selected: detector moved?", w._last_detector is not d_before, mode=v.layers[DETECTOR_LAYER].mode)
v.layers.selection.active = cube
QTest.keyClick(mc, Qt.Key.Key_R); A.wait(lambda: w._worker is None and w._pending is None, 10); A.process(0.3)
A.measure("R reset -> detector", (type(w._last_detector).__name__, tuple(np.round(w._last_detector.center_px, 2)), getattr(w._last_detector, "radius_px", None)))

# ---- detector drag on the pattern (select mode, real mouse) ---------------------------------
A.act("detector drag")
dl = v.layers[DETECTOR_LAYER]
v.layers.selection.active = dl
dl.mode = "select"
A.process(0.2)
cv = v.window._qt_viewer.canvas
def main_w2c(yx):
    tr = cv.view.transform * cv.view.scene.transform
    x, y = tr.map([float(yx[1]), float(yx[0])])[:2]
    return float(x), float(y)
ks = cube.scale[2:]
c = w._last_detector.center_px
vis = []
vi_layer = rs.layers["virtual image"]
vi_layer.events.data.connect(lambda e: vis.append(time.perf_counter()))
vi_layer.events.set_data.connect(lambda e: vis.append(time.perf_counter()))
pos = main_w2c((c[0] * ks[0], c[1] * ks[1]))
qt_mouse(mc, "press", pos)
A.process(0.05)
t0 = time.perf_counter(); n0 = len(vis)
for k in range(1, 41):
    pos = main_w2c(((c[0] + 0.5 * k) * ks[0], (c[1] + 0.3 * k) * ks[1]))
    qt_mouse(mc, "move", pos, buttons=True)
    A.process(0.016)
drag_s = time.perf_counter() - t0
n_during = len(vis) - n0
t_rel = time.perf_counter()
qt_mouse(mc, "release", pos)
ok = A.wait(lambda: w._worker is None and w._pending is None and w._last_detector is not None, 10)
A.process(0.1)
A.measure("detector drag: VI updates during 40-move drag / s, fps", (n_during, round(drag_s, 2), round(n_during / drag_s, 1)),
          after_center=tuple(np.round(w._last_detector.center_px, 2)), release_to_exact_s=ok)
A.shot("07_after_detector_drag")

A.dump()
import os; os._exit(0)
