"""UX points 5 (real-space ROI), 9 (several detectors) and 10 (response per detector) on the bundled
strained_crystal sample, as a user: button clicks (QTest), the region's mode chosen with the
layer-controls buttons under the Real space canvas, real QMouseEvents on both canvases, the
response chosen in the combo boxes; every result checked against numpy on the same data.
Run: cd <checkout> && xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/ux_audit/s10_roi_detectors_responses.py"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from harness import Audit, qt_mouse, real_space_model, rs_canvas_native, world_to_native

A = Audit("s10")
v = A.viewer
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from napari_4dstem.widgets._common import scan_position
from napari_4dstem.widgets._multiview import _QT
from napari_4dstem.widgets.virtual import DETECTOR_LAYER, REGION_LAYER

A.measure("loadavg start", os.getloadavg())
A.act("open sample")
v.open_sample("napari-4dstem", "strained_crystal")
cube = v.layers["strained_crystal"]
w = A.dock("Virtual imaging")
A.wait(lambda: w.last_image is not None and w._worker is None and w.presets_ready and DETECTOR_LAYER in v.layers, 300)
A.process(0.5)
ref = np.asarray(cube.data).astype(np.float64)  # numpy reference (the sample is small)
ny, nx, ky, kx = ref.shape
rs = real_space_model(v)
native = rs_canvas_native(rs)
sy, sx = cube.scale[:2]


def click(btn):
    QTest.mouseClick(btn, Qt.MouseButton.LeftButton)


def idle(timeout=60):
    return A.wait(lambda: w._worker is None and w._pending is None and not w.region.runner.busy and not w.extras.busy, timeout)


# ---------------- UX 5: region on real space ----------------------------------------------------
A.act("5: Region on real space click")
t0 = time.perf_counter()
click(w.region_btn)
dt = A.wait(lambda: REGION_LAYER in v.layers and not w.region.runner.busy and w.region._key is not None, 30)
A.measure("5 region button -> region pattern layer s", dt, status=w.status.text())
lay = w.region.layer
mask = w.region.mask()
got = np.asarray(v.layers[REGION_LAYER].data)
A.measure("5 region Sum exact vs numpy", bool(np.allclose(got, ref[mask].sum(0), rtol=1e-5)), n=int(mask.sum()),
          plabel=v.layers[REGION_LAYER].metadata["napari_4dstem"].get("label"),
          region_layer_visible_on_main=v.layers[REGION_LAYER].visible,
          label_visible_where=("status line only" if w.status.text().startswith("Σ") else w.status.text()))
# is the label visible on the canvas? (napari shows layer names in the list, not on the canvas)
A.shot("5_region_sum")
for red, fn in (("Mean", lambda m: ref[m].mean(0)), ("Max", lambda m: ref[m].max(0)), ("Sum", lambda m: ref[m].sum(0))):
    c0 = time.thread_time(); t0 = time.perf_counter()
    w.region_reduce.setCurrentText(red)
    dt = A.wait(lambda: not w.region.runner.busy and w.region._key[1] == red and red.lower() in (v.layers[REGION_LAYER].metadata["napari_4dstem"]["label"].lower() + ("σ" if red == "Sum" else "")), 30)
    A.process(0.1)
    got = np.asarray(v.layers[REGION_LAYER].data)
    A.measure(f"5 reduce {red}: exact, s", (bool(np.allclose(got, fn(mask), rtol=1e-5)), dt), plabel=v.layers[REGION_LAYER].metadata["napari_4dstem"]["label"])

# the region layer is active on the RS viewer: which mode? A plain drag there moves the scan
A.measure("5 region layer mode after button", lay.mode, active=getattr(rs.layers.selection.active, "name", None))
ctrl = _QT[rs]().qt_viewer.controls.widgets[lay]
click(ctrl.select_button)
A.process(0.2)
A.measure("5 mode after clicking the select button in the layer controls", lay.mode)
scan0 = scan_position(v, cube)
cen = np.mean(lay.data[0], axis=0)  # data coords (scan px)
shown_region = []
orig = w.show_region_pattern


def counting(img, label):
    shown_region.append((time.perf_counter(), label))
    return orig(img, label)


w.show_region_pattern = counting
A.act("5: drag the region rectangle (real mouse, select mode)")
p = world_to_native(rs, (cen[0] * sy, cen[1] * sx))
qt_mouse(native, "press", p)
A.process(0.05)
n0 = len(shown_region)
t0 = time.perf_counter()
for k in range(1, 21):
    p = world_to_native(rs, ((cen[0] + 0.3 * k) * sy, (cen[1] + 0.2 * k) * sx))
    qt_mouse(native, "move", p, buttons=True)
    nxt = time.perf_counter() + 0.05
    while time.perf_counter() < nxt:
        A.app.processEvents(); time.sleep(0.002)
drag_s = time.perf_counter() - t0
during = len(shown_region) - n0
qt_mouse(native, "release", p)
idle()
A.process(0.3)
mask2 = w.region.mask()
got = np.asarray(v.layers[REGION_LAYER].data)
A.measure("5 region drag: pattern updates during drag, per s; moved; exact after release; scan moved?",
          (during, round(during / drag_s, 1), not np.array_equal(mask, mask2), bool(np.allclose(got, ref[mask2].sum(0), rtol=1e-5)),
           scan_position(v, cube) != scan0), live_requests=w.region.live_requests, plabel=v.layers[REGION_LAYER].metadata["napari_4dstem"]["label"])
A.shot("5_region_dragged")

A.act("5: draw an ellipse (ellipse button, real mouse)")
click(ctrl.ellipse_button)
A.process(0.2)
e0, e1 = (4.0, 4.0), (10.0, 12.0)
qt_mouse(native, "press", world_to_native(rs, (e0[0] * sy, e0[1] * sx)))
for k in range(1, 11):
    f = k / 10
    qt_mouse(native, "move", world_to_native(rs, ((e0[0] + f * (e1[0] - e0[0])) * sy, (e0[1] + f * (e1[1] - e0[1])) * sx)), buttons=True)
    A.process(0.03)
qt_mouse(native, "release", world_to_native(rs, (e1[0] * sy, e1[1] * sx)))
idle(); A.process(0.5); idle()
mask3 = w.region.mask()
got = np.asarray(v.layers[REGION_LAYER].data)
A.measure("5 ellipse drawn: shapes, types, positions, exact", (len(lay.data), list(lay.shape_type), int(mask3.sum()),
          bool(np.allclose(got, ref[mask3].sum(0), rtol=1e-5))), plabel=v.layers[REGION_LAYER].metadata["napari_4dstem"]["label"])

A.act("5: draw a polygon (polygon button, clicks, Escape/double-click)")
click(ctrl.polygon_button)
A.process(0.2)
pts = [(20, 4), (28, 6), (26, 14), (20, 12)]
for yx in pts:
    pp = world_to_native(rs, (yx[0] * sy, yx[1] * sx))
    qt_mouse(native, "press", pp); qt_mouse(native, "release", pp)
    A.process(0.1)
nb = len(lay.data)
QTest.keyClick(native, Qt.Key.Key_Escape)
A.process(0.3)
na = len(lay.data)
how = "Escape"
if na == nb:
    pp = world_to_native(rs, (pts[0][0] * sy, pts[0][1] * sx))
    QTest.mouseDClick(native, Qt.MouseButton.LeftButton, pos=__import__("qtpy.QtCore", fromlist=["QPoint"]).QPoint(int(pp[0]), int(pp[1])))
    how = "double-click"
    A.process(0.3)
idle(); A.process(0.5); idle()
mask4 = w.region.mask()
got = np.asarray(v.layers[REGION_LAYER].data)
A.measure("5 polygon drawn: finished by, shapes, types, positions, exact", (how, len(lay.data), list(lay.shape_type), int(mask4.sum()),
          bool(np.allclose(got, ref[mask4].sum(0), rtol=1e-5))), plabel=v.layers[REGION_LAYER].metadata["napari_4dstem"]["label"])
A.shot("5_region_union")
click(ctrl.select_button) if False else None
lay.mode = "pan_zoom"
rs.layers.selection.active = None
A.process(0.2)

# ---------------- UX 9: several detectors -----------------------------------------------------
A.act("9: Add detector (button)")
click(w.add_btn)
dt = A.wait(lambda: "detector 1" in w.extras.items and w.extras.items["detector 1"].result is not None, 30)
A.process(0.3)
it = w.extras.items.get("detector 1")
d1 = it.detector
m1 = d1.render((ky, kx)).astype(np.float64)
img1 = np.asarray(rs.layers["virtual: detector 1"].data)
A.measure("9 add detector 1: s, layer colour, exact", (dt, it.color, bool(np.allclose(img1, np.tensordot(ref, m1, axes=([2, 3], [0, 1])), rtol=1e-5))),
          layers_main=[l.name for l in v.layers], layers_rs=[l.name for l in rs.layers])
# drag detector 1 with the real mouse (select mode) on the main canvas
A.act("9: drag detector 1 (real mouse)")
main_cv = v.window._qt_viewer.canvas
mc = main_cv.native
ks = np.asarray(cube.scale[2:], float)


def w2c(yx_px):
    tr = main_cv.view.transform * main_cv.view.scene.transform
    x, y = tr.map([float(yx_px[1] * ks[1]), float(yx_px[0] * ks[0])])[:2]
    return float(x), float(y)


# first move the live detector away (field typing) so detector 1 is not under it
w.cy.setValue(w.cy.value() - 25); A.process(0.05); idle()
v.layers.selection.active = it.layer
it.layer.mode = "select"
A.process(0.2)
c1 = tuple(float(x) for x in d1.center_px)
live_before = w._last_detector
qt_mouse(mc, "press", w2c(c1))
for k in range(1, 11):
    qt_mouse(mc, "move", w2c((c1[0] + 0.6 * k, c1[1] + 0.4 * k)), buttons=True)
    A.process(0.05)
qt_mouse(mc, "release", w2c((c1[0] + 6, c1[1] + 4)))
idle(); A.process(0.5); idle()
d1b = w.extras.items["detector 1"].detector
m1b = d1b.render((ky, kx)).astype(np.float64)
img1 = np.asarray(rs.layers["virtual: detector 1"].data)
A.measure("9 detector 1 dragged: centre before/after, exact, live detector untouched",
          (c1, tuple(round(float(x), 2) for x in d1b.center_px), bool(np.allclose(img1, np.tensordot(ref, m1b, axes=([2, 3], [0, 1])), rtol=1e-5)),
           w._last_detector is live_before))
A.act("9: second detector, RGB composite with extras, combined image")
click(w.add_btn)
A.wait(lambda: "detector 2" in w.extras.items and w.extras.items["detector 2"].result is not None, 30)
items = [w.rgb_combos[0].itemText(i) for i in range(w.rgb_combos[0].count())]
w.rgb_combos[0].setCurrentText("detector 1"); w.rgb_combos[1].setCurrentText("detector 2"); w.rgb_combos[2].setCurrentText("BF")
click(w.rgb_btn)
A.process(0.5)
A.measure("9 RGB composite of detector 1, detector 2, BF: shown", getattr(w, "last_rgb", None) is not None and w.last_rgb.shape, combos=items)
w.combine_edit.setFocus(); w.combine_edit.selectAll()
QTest.keyClicks(w.combine_edit, "1, -1")
click(w.combine_btn)
A.wait(lambda: getattr(w, "combined_result", None) is not None, 30)
A.process(0.3)
live = w._last_detector
mlive = live.render((ky, kx)).astype(np.float64)
want = np.tensordot(ref, mlive - m1b, axes=([2, 3], [0, 1]))
got = np.asarray(rs.layers["virtual: combined"].data) if "virtual: combined" in rs.layers else None
A.measure("9 combined '1, -1' = live - detector 1 exact", got is not None and bool(np.allclose(got, want, rtol=1e-5, atol=1e-3)), status=w.status.text()[:200])
A.shot("9_several")

# ---------------- UX 10: every response, live detector and detector 1 ----------------------------
A.act("10: responses")
mlive_b = mlive > 0
ky_, kx_ = np.mgrid[:ky, :kx]


def np_response(name, m):
    mb = m > 0
    vals = ref[:, :, mb]
    tot = vals.sum(-1)
    if name == "Sum":
        return tot
    if name == "Mean":
        return tot / mb.sum()
    if name == "Max":
        return vals.max(-1)
    if name == "Std":
        return vals.std(-1)
    cy = (vals * ky_[mb]).sum(-1) / tot
    cx = (vals * kx_[mb]).sum(-1) / tot
    if name == "CoM y":
        return cy
    if name == "CoM x":
        return cx
    return None


resp = {}
from napari_4dstem.widgets.virtual import RESPONSES
for name in RESPONSES:
    c0 = time.thread_time(); t0 = time.perf_counter()
    n_gaps = len(A.gaps.gaps)
    w.response_combo.setCurrentText(name)
    hc = (time.thread_time() - c0) * 1e3
    dt = A.wait(lambda: w._worker is None and w._pending is None and w.last_image is not None and
                str(w.last_image.params.get("response", "")).lower().replace(" ", "") in (name.lower().replace(" ", ""), name.lower().replace(" ", "_")), 30)
    A.process(0.1)
    img = np.asarray(w.last_image.data, float) if w.last_image is not None else None
    want = np_response(name, mlive)
    ok = None
    note = ""
    if want is not None and img is not None:
        ok = bool(np.allclose(img, want, rtol=1e-4, atol=1e-6))
        if not ok and name.startswith("CoM"):
            ok2 = bool(np.allclose(img, want - want.mean(), rtol=1e-4, atol=1e-4))
            note = f"equals numpy minus its mean: {ok2}"
    resp[name] = {"s": round(dt, 3) if dt else None, "handler_cpu_ms": round(hc, 1), "exact": ok, "note": note,
                  "param": w.last_image.params.get("response") if w.last_image is not None else None,
                  "title": w.realspace.label.text()[:80] if hasattr(w.realspace, "label") else "",
                  "gaps": [g["wall_ms"] for g in A.gaps.gaps[n_gaps:]]}
A.measure("10 live detector responses", resp)
w.response_combo.setCurrentText("Sum"); idle()
resp1 = {}
for name in RESPONSES:
    combo = w.extras.items["detector 1"].combo
    combo.setCurrentText(name)
    it1 = w.extras.items["detector 1"]
    dt = A.wait(lambda: not it1.runner.busy and it1.result is not None, 30)
    A.process(0.1)
    img = np.asarray(rs.layers["virtual: detector 1"].data, float)
    want = np_response(name, m1b)
    resp1[name] = {"s": dt, "exact": None if want is None else bool(np.allclose(img, want, rtol=1e-4, atol=1e-6))}
A.measure("10 detector 1 responses", resp1)
A.measure("10 DPC colour wheel in the response list?", "DPC" in " ".join(RESPONSES), responses=list(RESPONSES))
A.shot("10_responses")
A.measure("loadavg end", os.getloadavg())
A.dump()
os._exit(0)
