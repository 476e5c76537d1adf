"""UX points 18 (strain) and 21 (results and reproducibility) on the bundled strained_crystal
sample, as a user: button clicks (QTest) in the Bragg, Virtual imaging and Results docks, the
reference rectangle drawn with the layer-controls buttons and real mouse events on the Real space
canvas, a g1 tip dragged with the real mouse on the main canvas, a real click on a strain map.
File dialogs are answered by replacing QFileDialog's static getters (the only non-user step).

Reproducibility checks: *Copy as Python* (Virtual imaging dock and Results dock) is read from the
clipboard, run in a FRESH python process, and every array of its `result.objects()` compared with
the dock's result (exact, NaN = NaN). *Save session* is loaded into a SECOND napari viewer (fresh
docks) and the docks' states compared with the saved ones; *Recompute* there compared exactly.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from harness import Audit, qt_mouse, real_space_model, rs_canvas_native, world_to_native

A = Audit("s11")
v = A.viewer
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication, QFileDialog
from napari_4dstem.widgets._common import scan_position
from napari_4dstem.widgets._multiview import _QT

TMP = Path(tempfile.mkdtemp(prefix="ux-audit-s11-"))
_answer = {"path": None}
QFileDialog.getSaveFileName = staticmethod(lambda *a, **k: (str(_answer["path"]), ""))
QFileDialog.getOpenFileName = staticmethod(lambda *a, **k: (str(_answer["path"]), ""))
SRC = str(Path(__file__).resolve().parents[2] / "src")


def click(btn):
    QTest.mouseClick(btn, Qt.MouseButton.LeftButton)


def arrays_of(res):
    out = []
    for o in res.objects():
        d = getattr(o, "data", None)
        if d is not None:
            out.append(np.asarray(d))
    return out


def run_fresh(script: str, tag: str):
    """Run a copied script in a fresh python; return its result's arrays (npz) and the time."""
    d = TMP / tag
    d.mkdir()
    (d / "copied.py").write_text(script)
    wrapper = (
        "import runpy, numpy as np\n"
        "g = runpy.run_path('copied.py')\n"
        "res = g['result']\n"
        "arrs = [np.asarray(o.data) for o in res.objects() if getattr(o, 'data', None) is not None]\n"
        "np.savez('arrays.npz', *arrs)\n"
    )
    (d / "wrap.py").write_text(wrapper)
    env = {**os.environ, "PYTHONPATH": SRC}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "wrap.py"], cwd=d, env=env, capture_output=True, text=True, timeout=600)
    dt = time.perf_counter() - t0
    if p.returncode:
        return None, dt, p.stderr[-1500:]
    z = np.load(d / "arrays.npz")
    return [z[f"arr_{i}"] for i in range(len(z.files))], dt, ""


def compare(mine, theirs):
    if theirs is None:
        return "script failed"
    if len(mine) != len(theirs):
        return f"{len(mine)} arrays vs {len(theirs)}"
    out = []
    for a, b in zip(mine, theirs):
        if a.shape != b.shape:
            out.append(f"shape {a.shape} vs {b.shape}")
            continue
        eq = np.array_equal(a, b, equal_nan=True) if a.dtype.kind in "fc" else np.array_equal(a, b)
        if eq:
            out.append("exact")
        else:
            af, bf = a.astype(float), b.astype(float)
            out.append(f"DIFF max {float(np.nanmax(np.abs(af - bf))):.3g}")
    return out


A.measure("loadavg start", os.getloadavg())
v.open_sample("napari-4dstem", "strained_crystal")
cube = v.layers["strained_crystal"]
w = A.dock("Virtual imaging")
A.wait(lambda: w.last_image is not None and w._worker is None and w.presets_ready, 300)
A.process(0.5)
rs = real_space_model(v)

# napari alone: the Shapes mode buttons of the MAIN window's layer controls (baseline for the
# exceptions seen clicking them in the Real space dock's embedded controls, s10)
A.act("baseline: main-window Shapes mode buttons")
n_exc = len(A.excs)
bl = v.add_shapes(name="baseline shapes")
A.process(0.3)
mctrl = v.window._qt_viewer.controls.widgets[bl]
for btn in (mctrl.select_button, mctrl.ellipse_button, mctrl.rectangle_button, mctrl.polygon_button, mctrl.select_button):
    click(btn)
    A.process(0.1)
A.measure("BASELINE napari main-window Shapes mode buttons: exceptions, final mode", (len(A.excs) - n_exc, bl.mode))
v.layers.remove(bl)
A.process(0.2)

# ---------------- 21a: Virtual imaging Copy as Python -> fresh process ------------------------------
A.act("21: virtual Copy as Python")
w.kind_combo.setCurrentText("Annulus")
A.wait(lambda: w._worker is None and w._pending is None, 30)
A.process(0.3)
QApplication.clipboard().clear()
click(w.copy_btn)
A.process(0.2)
script = QApplication.clipboard().text()
A.measure("21 virtual Copy as Python: clipboard chars", len(script), status=w.status.text()[:200], head=script[:400])
mine = arrays_of(w.result) if w.result is not None else [np.asarray(w.last_image.data)]
theirs, dt, err = run_fresh(script, "virtual") if script else (None, 0, "empty clipboard")
A.measure("21 virtual script in a fresh python == dock's image", compare(mine, theirs), script_s=round(dt, 1), err=err,
          dock_image_equals_result=bool(np.array_equal(np.asarray(w.last_image.data), mine[0])) if mine else None)

A.act("21: Keep, Results dock")
click(w.keep_btn)
A.process(0.2)
r = A.dock("Results")
A.process(0.3)
A.measure("21 Results rows after Keep", r.names(), status=w.status.text()[:120])

# ---------------- 18: strain ------------------------------------------------------------------------
A.act("18: Bragg dock")
b = A.dock("Bragg disks and strain")
A.process(0.5)
from napari_4dstem.widgets.bragg import FIT_LAYER, LATTICE_LAYER, REFERENCE_LAYER, TIPS_LAYER

A.measure("18 before any strain: a 'strain reference' layer to draw on exists?", REFERENCE_LAYER in rs.layers,
          rs_layers=[l.name for l in rs.layers], strain_btn_tooltip=b.strain_btn.toolTip()[:200])
t0 = time.perf_counter()
click(b.template_btn)
dt = A.wait(lambda: b.template is not None and b._worker is None, 300)
A.measure("18 Make template s", dt, text=b.status.text()[:150] if hasattr(b, "status") else "")
t0 = time.perf_counter()
click(b.run_btn)
busy = A.wait(lambda: b.cancel_btn.isEnabled(), 10)
dt = A.wait(lambda: b.peaks is not None and b._worker is None and b.lattice is not None, 600)
A.measure("18 Find disks in all patterns: busy indicator s, done s (incl. g1/g2)", (busy, dt), lattice=(b.lattice.g1, b.lattice.g2) if b.lattice else None)
A.process(0.5)
t0 = time.perf_counter()
click(b.strain_btn)
dt = A.wait(lambda: b.strain is not None and b._worker is None, 300)
A.process(0.5)
maps = {c: (rs.layers[c].colormap.name, tuple(round(float(x), 5) for x in rs.layers[c].contrast_limits))
        for c in ("e_xx", "e_yy", "e_xy", "theta_rad") if c in rs.layers}
A.measure("18 Compute strain (no reference) s; maps colormap & limits (symmetric?)", dt, maps=maps,
          symmetric={k: abs(v_[1][0] + v_[1][1]) < 1e-9 for k, v_ in maps.items()})
A.measure("18 after the first strain: 'strain reference' layer exists?", REFERENCE_LAYER in rs.layers)

# draw the reference rectangle with the real mouse: select the layer, its rectangle button
native = rs_canvas_native(rs)
sy, sx = cube.scale[:2]
if REFERENCE_LAYER in rs.layers:
    ref_layer = rs.layers[REFERENCE_LAYER]
    rs.layers.selection.active = ref_layer
    A.process(0.2)
    ctrl = _QT[rs]().qt_viewer.controls.widgets[ref_layer]
    n_exc = len(A.excs)
    click(ctrl.rectangle_button)
    A.process(0.2)
    A.measure("18 Real space dock rectangle button: exceptions, mode", (len(A.excs) - n_exc, ref_layer.mode))
    p0, p1 = (0.0, 0.0), (7.0, 7.0)  # the sample's unstrained corner (as the widget test uses)
    qt_mouse(native, "press", world_to_native(rs, (p0[0] * sy, p0[1] * sx)))
    for k in range(1, 8):
        qt_mouse(native, "move", world_to_native(rs, ((p0[0] + k) * sy, (p0[1] + k) * sx)), buttons=True)
        A.process(0.03)
    qt_mouse(native, "release", world_to_native(rs, (p1[0] * sy, p1[1] * sx)))
    A.process(0.3)
    ref_layer.mode = "pan_zoom"
    A.measure("18 reference drawn by mouse: rectangles, region", len(ref_layer.data), region=b.reference_region())
    before_res = b.result
    click(b.strain_btn)
    dt = A.wait(lambda: b.result is not before_res and b._worker is None, 300)
    A.process(0.5)
    r0, r1, c0, c1 = b.reference_region() or (0, 8, 0, 8)
    exx = np.asarray(rs.layers["e_xx"].data)
    A.measure("18 strain with the reference: median e_xx in the reference, elsewhere", (float(np.nanmedian(exx[r0:r1, c0:c1])), float(np.nanmedian(exx))), s=dt)
A.shot("18_strain")

# drag the g1 tip with the real mouse on the main canvas
A.act("18: drag g1 tip (real mouse)")
main_cv = v.window._qt_viewer.canvas
mc = main_cv.native
tips = v.layers[TIPS_LAYER]
v.layers.selection.active = tips
tips.mode = "select"
A.process(0.3)


def w2c_world(yx_world):
    tr = main_cv.view.transform * main_cv.view.scene.transform
    x, y = tr.map([float(yx_world[1]), float(yx_world[0])])[:2]
    return float(x), float(y)


g1_0 = np.array(b.lattice.g1, float)
start = np.asarray(tips.data_to_world(tips.data[0]), float)[-2:]
ks = np.asarray(tips.scale[-2:], float)
delta_px = np.array([1.5, -2.0])
before = b.result
arrows_during = []
qt_mouse(mc, "press", w2c_world(start))
A.process(0.05)
for k in range(1, 11):
    pos = start + delta_px * ks * k / 10
    qt_mouse(mc, "move", w2c_world(pos), buttons=True)
    A.process(0.04)
    arrows_during.append(np.asarray(v.layers[LATTICE_LAYER].data)[0, 1].round(2).tolist())
qt_mouse(mc, "release", w2c_world(start + delta_px * ks))
t_rel = time.perf_counter()
dt = A.wait(lambda: b.result is not before and not b._strain_runner.busy, 120)
A.process(0.3)
g1_1 = np.array(b.lattice.g1, float)
A.measure("18 g1 tip drag by (1.5, -2.0) px: g1 change, arrow followed during drag, strain recomputed s",
          ((g1_1 - g1_0).round(4).tolist(), arrows_during[0] != arrows_during[-1], dt), arrows=arrows_during[::3])

# a real click on the e_xx map: the scan moves and the fitted lattice of that pattern shows
A.act("18: click on strain map")
rs.layers.selection.active = rs.layers["e_xx"]
A.process(0.2)
pos = world_to_native(rs, (20.3 * sy, 24.6 * sx))
c0 = time.thread_time()
qt_mouse(native, "press", pos); qt_mouse(native, "release", pos)
A.process(0.5)
A.measure("18 click on e_xx at (20.3, 24.6): scan position, fitted lattice layer, label", scan_position(v, cube),
          fit_layer=FIT_LAYER in v.layers, text=b.fit_label.text()[:160])

# ---------------- 21b: Results dock: list, Copy as Python of the strain, Save, session -------------
A.act("21: Results dock")
A.process(0.3)
names = r.names()
rows = [[r.table.item(i, j).text() for j in range(r.table.columnCount())] for i in range(r.table.rowCount())]
A.measure("21 Results rows (name, workflow, input, time, state)", rows)
strain_name = [n for n in names if "strain" in n][-1] if any("strain" in n for n in names) else None
if strain_name:
    r.select(strain_name)
    A.process(0.2)
    A.measure("21 selected strain: parameters line", r.params_label.text()[:400])
    QApplication.clipboard().clear()
    click(r.copy_btn)
    A.process(0.2)
    script = QApplication.clipboard().text()
    mine = arrays_of(r.store.results[strain_name])
    theirs, dt, err = run_fresh(script, "strain") if script else (None, 0, "empty clipboard")
    A.measure("21 strain Copy as Python in a fresh python == dock's result", compare(mine, theirs), script_s=round(dt, 1), err=err, chars=len(script))
    _answer["path"] = TMP / "strain_result.h5"
    click(r.save_btn)
    ok = A.wait(lambda: r.last_saved is not None, 120)
    A.measure("21 Save... of the strain result", (ok, str(r.last_saved)), size=(TMP / "strain_result.h5").stat().st_size if (TMP / "strain_result.h5").exists() else None)
    c0 = time.thread_time(); t0 = time.perf_counter()
    click(r.show_btn)
    ok = A.wait(lambda: r.shown, 60)
    A.measure("21 Show: layers added", (ok, [l.name for l in r.shown][:8]))

# the state to save: a non-default detector and an extra detector
A.act("21: Save session")
w.kind_combo.setCurrentText("Disk")
A.wait(lambda: w._worker is None and w._pending is None, 30)
w.r_out.setValue(11.5)
A.wait(lambda: w._worker is None and w._pending is None, 30)
w.response_combo.setCurrentText("Mean")
A.wait(lambda: w._worker is None and w._pending is None, 30)
click(w.add_btn)
A.wait(lambda: not w.extras.busy and w.extras.items, 30)
A.process(0.3)
_answer["path"] = TMP / "session.json"
click(r.save_session_btn)
A.process(0.3)
saved = json.loads((TMP / "session.json").read_text()) if (TMP / "session.json").exists() else {}
A.measure("21 session saved: status, docks, datacubes", r.status.text()[:200],
          docks=list((saved.get("settings", {}) or {}).get("docks", {}).keys()) if saved else None,
          datacubes=[d.get("source") for d in (saved.get("settings", {}) or {}).get("datacubes", [])] if saved else None,
          keys=list(saved.keys()))
from napari_4dstem.widgets._state import dock_states
before_states = json.loads(json.dumps(dock_states(v), default=str))

# load it in a SECOND, fresh viewer
A.act("21: Load session in a fresh viewer")
import napari

v2 = napari.Viewer(show=True)
A.process(0.5)
_, r2 = v2.window.add_plugin_dock_widget("napari-4dstem", "Results")
A.process(0.3)
_answer["path"] = TMP / "session.json"
c0 = time.thread_time(); t0 = time.perf_counter()
click(r2.load_session_btn)
t_load = time.perf_counter() - t0; cpu_load = time.thread_time() - c0
A.process(0.5)
A.measure("21 Load session: click wall s, GUI cpu s, status", (round(t_load, 2), round(cpu_load, 2)), status=r2.status.text()[:300],
          layers=[l.name for l in v2.layers])
_, w2 = v2.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
A.wait(lambda: w2.last_image is not None and w2._worker is None and w2._pending is None and w2.presets_ready and not w2.extras.busy, 300)
A.process(1.0)
A.wait(lambda: w2._worker is None and w2._pending is None and not w2.extras.busy, 60)
after_states = json.loads(json.dumps(dock_states(v2), default=str))
diffs = {}
for key, st in before_states.items():
    st2 = after_states.get(key)
    if st2 is None:
        diffs[key] = "not restored (dock not open in the fresh viewer)"
        continue
    d = {}
    for f, val in (st.get("form") or {}).items():
        if (st2.get("form") or {}).get(f) != val:
            d[f] = (val, (st2.get("form") or {}).get(f))
    for f in st:
        if f != "form" and st.get(f) != st2.get(f):
            d[f] = (st.get(f), st2.get(f))
    diffs[key] = d or "same"
A.measure("21 dock states: saved vs reloaded in a fresh viewer (differences)", diffs)
A.measure("21 reloaded virtual dock: detector, response, extras, image shape", (
    type(w2._last_detector).__name__, getattr(w2._last_detector, "radius_px", None), w2.response_combo.currentText(),
    list(w2.extras.items), None if w2.last_image is None else w2.last_image.params.get("response")))
# calibration of the reopened datacube
c2 = [l for l in v2.layers if l.ndim == 4]
A.measure("21 reopened datacube: scale, units equal", bool(c2) and tuple(c2[0].scale) == tuple(cube.scale) and tuple(map(str, c2[0].units)) == tuple(map(str, cube.units)),
          scale=(tuple(cube.scale), tuple(c2[0].scale) if c2 else None))
# Recompute the strain in the fresh viewer, compare
rows2 = r2.names()
A.measure("21 reloaded Results rows", rows2)
if strain_name and strain_name in rows2:
    r2.select(strain_name)
    click(r2.rerun_btn)
    ok = A.wait(lambda: strain_name in r2.store.results, 600)
    theirs = arrays_of(r2.store.results[strain_name]) if ok else None
    A.measure("21 Recompute (fresh viewer) == original strain result", compare(arrays_of(r.store.results[strain_name]), theirs), s=ok)
A.shot("21_fresh_viewer")
# napari alone opening the same file with the same reader in a third fresh viewer (the floor of
# Load session, which opens the session's datacubes on the GUI thread)
A.act("BASELINE napari open of the session's file")
v3 = napari.Viewer(show=True)
A.process(0.5)
src = (saved.get("settings", {}) or {}).get("datacubes", [{}])[0].get("source")
c0 = time.thread_time(); t0 = time.perf_counter()
v3.open(src, plugin="napari-4dstem")
A.measure("BASELINE napari viewer.open of the session's file: wall s, GUI cpu s, layers",
          (round(time.perf_counter() - t0, 2), round(time.thread_time() - c0, 2)), layers=len(v3.layers))
A.process(0.5)
A.measure("loadavg end", os.getloadavg())
A.dump()
os._exit(0)
