"""UX points 23 (5D, multiple datasets, watched folder) and 24 (plugin API), as a user: a 5D .npy
opened with the Series dock's button (its file dialog answered by replacing QFileDialog's getter),
frames stepped with real key presses on the slider and with `]` on the main canvas, the compare
grid button, a folder watched while a file is written into it in two steps, then a corrupt file.
Meanwhile another "plugin" listens to napari_4dstem.plugin_api's signals and registers a Result
pane renderer; every image is checked against numpy.
"""
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from harness import Audit, qt_mouse, real_space_model, rs_canvas_native, world_to_native

TMP = Path(tempfile.mkdtemp(prefix="ux-audit-s12-"))
# 4 frames of a 32x32 scan of 64x64 patterns: a BF disk whose radius and brightness change by frame
F, N, K = 4, 32, 64
yy, xx = np.mgrid[:K, :K]
rng = np.random.default_rng(13)
five = np.empty((F, N, N, K, K), np.uint16)
for f in range(F):
    for iy in range(N):
        grain = 1.0 + 0.5 * np.sin(iy / 5.0 + f)
        r = np.hypot(yy - 32, xx - 32)
        base = (300 * (r < 6 + f) * grain + 30 * (np.abs(r - 20) < 2)).astype(np.uint16)
        five[f, iy] = base[None] + rng.poisson(2.0, size=(N, K, K)).astype(np.uint16)
np.save(TMP / "series5d.npy", five)

A = Audit("s12")
v = A.viewer
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QFileDialog
from napari_4dstem.widgets._common import scan_position

_answer = {"paths": [], "dir": ""}
QFileDialog.getOpenFileNames = staticmethod(lambda *a, **k: ([str(p) for p in _answer["paths"]], ""))
QFileDialog.getExistingDirectory = staticmethod(lambda *a, **k: str(_answer["dir"]))


def click(btn):
    QTest.mouseClick(btn, Qt.MouseButton.LeftButton)


# ---------------- 24: another plugin listening -------------------------------------------------------
from napari_4dstem import plugin_api

ev = plugin_api.events(v)
heard = {n: [] for n in ("pattern_changed", "datacube_changed", "calibration_changed", "virtual_image_changed", "result_added")}
for n in heard:
    getattr(ev, n).connect(lambda *a, n=n: heard[n].append((time.perf_counter(), a)))
plugin_api.register_result_renderer("audit log pattern", lambda p: np.log1p(np.maximum(p, 0)), source="pattern")
A.measure("loadavg start", os.getloadavg())

# ---------------- 23: series -----------------------------------------------------------------------------
A.act("23: Series dock, Open series... (5D npy)")
s = A.dock("Series, compare and watch")
_answer["paths"] = [TMP / "series5d.npy"]
t0 = time.perf_counter()
click(s.open_btn)
dt = A.wait(lambda: s.layer is not None and len(s.frames) == F, 60)
A.measure("23 Open series: frames, s", (len(s.frames), dt), flabel=s.frame_label.text(), status=s.status.text()[:150])
w = A.dock("Virtual imaging")
A.wait(lambda: w.last_image is not None and w._worker is None and w.presets_ready, 300)
A.process(0.5)
rs = real_space_model(v)
cube = s.layer
det = w._last_detector
m = det.render((K, K)).astype(np.float64)


def vi_ok(f):
    want = np.tensordot(five[f].astype(np.float64), m, axes=([2, 3], [0, 1]))
    return bool(np.allclose(np.asarray(w.last_image.data, float), want, rtol=1e-5))


def dp_ok(f):
    pos = scan_position(v, cube)
    return bool(np.array_equal(np.asarray(cube._slice.image.raw), five[f][pos]))


A.measure("23 frame 0: VI and DP exact", (vi_ok(0), dp_ok(0)))
# step frames with real keys on the slider (Right) and `]` on the main canvas
res = []
mc = v.window._qt_viewer.canvas.native
for f_to, how in ((1, "slider Right"), (2, "slider Right"), (3, "] on canvas"), (0, "] on canvas")):
    det = w._last_detector
    n_g = len(A.gaps.gaps)
    c0 = time.thread_time(); t0 = time.perf_counter()
    if how.startswith("slider"):
        s.slider.setFocus()
        QTest.keyClick(s.slider, Qt.Key.Key_Right)
    else:
        mc.setFocus()
        v.layers.selection.active = cube
        QTest.keyClick(mc, Qt.Key.Key_BracketRight)
    hc = (time.thread_time() - c0) * 1e3
    ok = A.wait(lambda: s.frame == f_to and w._worker is None and w._pending is None and w.last_image is not None and vi_ok(f_to), 60)
    A.process(0.2)
    res.append({"to": f_to, "how": how, "frame": s.frame, "key_cpu_ms": round(hc, 1), "image_s": None if ok is None else round(ok, 3),
                "vi_exact": vi_ok(s.frame), "dp_exact": dp_ok(s.frame), "label": s.frame_label.text(),
                "gaps_wall_ms": [g["wall_ms"] for g in A.gaps.gaps[n_g:]]})
A.measure("23 frame steps (real keys)", res)
A.shot("23_series")

A.act("23: compare grid of the series frames")
s.compare_source.setCurrentText("series frames")
t0 = time.perf_counter()
click(s.compare_btn)
busy = A.wait(lambda: s.compare_cancel.isEnabled(), 5)
cm = None
def grid_done():
    global cm
    cm = getattr(s, "_compare_model", None)
    return cm is not None and len([l for l in cm.layers if l.ndim == 2]) >= F and not s.compare_cancel.isEnabled()
dt = A.wait(grid_done, 120)
tiles = {}
if cm is not None:
    det = w._last_detector
    m = det.render((K, K)).astype(np.float64)
    for l in cm.layers:
        if getattr(l, "ndim", 0) == 2 and getattr(l, "rgb", False) is False:
            name = l.name
            k = next((i for i in range(F) if str(i) in name.split()[-1:] or f"frame {i}" in name or name.endswith(f"[{i}]") or name.endswith(str(i))), None)
            want = np.tensordot(five[k].astype(np.float64), m, axes=([2, 3], [0, 1])) if k is not None else None
            tiles[name] = None if want is None else bool(np.allclose(np.asarray(l.data, float), want, rtol=1e-5))
A.measure("23 compare grid: busy s, done s, tiles exact", (busy, dt), tiles=tiles)
A.shot("23_compare")

A.act("23: watch a folder")
watch = TMP / "watch"
watch.mkdir()
_answer["dir"] = watch
click(s.watch_btn)
A.process(1.5)
badge0 = s.badge.text()
nf0 = len(s.frames)
# a new acquisition written in two steps (a detector writing it)
new = (five[1] + 7).astype(np.uint16)
raw = (TMP / "tmp.npy")
np.save(raw, new)
blob = raw.read_bytes()
target = watch / "acq_004.npy"
with open(target, "wb") as fh:
    fh.write(blob[: len(blob) // 2])
t_write = time.perf_counter()
waiting = A.wait(lambda: "Waiting" in s.badge.text(), 10)
badge_mid = s.badge.text()
frames_mid = len(s.frames)
with open(target, "ab") as fh:
    fh.write(blob[len(blob) // 2:])
t_done = time.perf_counter()
got = A.wait(lambda: len(s.frames) == nf0 + 1, 30)
A.process(0.5)
A.wait(lambda: w._worker is None and w._pending is None, 60)
A.measure("23 watched folder: badge before, 'Waiting' after half a file (s), frames while half, new frame after complete (s), badge",
          (badge0, waiting, frames_mid, got, s.badge.text()),
          shown_frame=s.frame, new_frame_exact=bool(np.array_equal(np.asarray(s.frames[-1].data[3, 4]), new[3, 4])) if got else None)
(watch / "broken.npy").write_bytes(b"\x93NUMPY garbage")
err = A.wait(lambda: "Error" in s.badge.text(), 40)
A.measure("23 corrupt file -> Error badge s, text", err, badge=s.badge.text()[:200])
click(s.stop_btn)
A.process(0.5)

# ---------------- 24: what the listening plugin heard; the Result pane renderer ------------------------
A.act("24: plugin API")
n0 = {k: len(v_) for k, v_ in heard.items()}
native = rs_canvas_native(rs)
sy, sx = cube.scale[:2]
pos = world_to_native(rs, (5 * sy, 7 * sx))
qt_mouse(native, "press", pos); qt_mouse(native, "release", pos)
A.process(0.5)
click(w.keep_btn)
A.process(0.5)
w.r_out.setValue(w.r_out.value() + 2)
A.wait(lambda: w._worker is None and w._pending is None, 30)
A.process(0.3)
got = {k: len(v_) - n0[k] for k, v_ in heard.items()}
A.measure("24 signals heard after a real-space click, Keep, a radius edit", got,
          total=[(k, len(v_)) for k, v_ in heard.items()], last_vi=str(heard["virtual_image_changed"][-1][1])[:200] if heard["virtual_image_changed"] else None,
          keep_status=w.status.text()[:150])
info = plugin_api.DetectorInfo.from_detector(w._last_detector)
A.measure("24 DetectorInfo round trip", info.to_detector() == w._last_detector or repr(info.to_detector()) == repr(w._last_detector), info=str(info)[:200])
last = plugin_api.last_virtual_image(v)
A.measure("24 last_virtual_image equals the dock's", last is not None and bool(np.array_equal(np.asarray(getattr(last, "data", last)), np.asarray(w.last_image.data))))
n_exc = len(A.excs)
try:
    pane = A.dock("Result pane")
except Exception as e:  # noqa
    import traceback
    A.measure("24 Result pane dock on the series (uncalibrated .npy scan) FAILED to open", repr(e), tb=traceback.format_exc()[-600:])
    pane = None
if pane is not None:
    A.measure("24 Result pane opened", True, exceptions=len(A.excs) - n_exc)
st = plugin_api.plugin_settings("audit-plugin", folder=TMP / "cfg")
st["x"] = 3
st.save()
st2 = plugin_api.plugin_settings("audit-plugin", folder=TMP / "cfg")
st3 = plugin_api.plugin_settings("other-plugin", folder=TMP / "cfg")
A.measure("24 plugin_settings kept per plugin", (st2.get("x"), st3.get("x")), files=sorted(p.name for p in (TMP / "cfg").rglob("*")))
A.shot("24_pane")
A.measure("loadavg end", os.getloadavg())
A.dump()
os._exit(0)
