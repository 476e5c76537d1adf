"""Session 14 audit: a REAL detector file opened as a user does (napari's File > Open path:
``viewer.open(path, plugin="napari-4dstem")``, the npe2 reader), then each dock's main action on it,
with real button clicks (QTest) and real mouse events on the Real space canvas, the harness's
wall-time GUI gap recorder, and every number compared with numpy on the decoded array
(``np.asarray(layer.data)``). File dialogs are answered by replacing QFileDialog's static getters.

Run (one at a time): xvfb-run -a -s "-screen 0 1920x1080x24" python s18_realdata_docks.py FILE [TAG]
Logs: $UX_AUDIT_OUT/logs/s18_<TAG>.json (MEASURE lines on stdout)."""
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from harness import Audit, qt_mouse, real_space_model, rs_canvas_native, world_to_native

PATH = sys.argv[1]
TAG = sys.argv[2] if len(sys.argv) > 2 else Path(PATH).stem
A = Audit(f"s18_{TAG}")
v = A.viewer
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication, QFileDialog

from napari_4dstem.widgets._common import scan_position

TMP = Path(tempfile.mkdtemp(prefix="ux-audit-s18-"))
_answer = {"path": None}
QFileDialog.getSaveFileName = staticmethod(lambda *a, **k: (str(_answer["path"]), ""))
QFileDialog.getOpenFileName = staticmethod(lambda *a, **k: (str(_answer["path"]), ""))
SRC = str(Path(__file__).resolve().parents[2] / "src")
A.measure("loadavg start", os.getloadavg())


def click(b):
    QTest.mouseClick(b, Qt.MouseButton.LeftButton)


def step(label):
    """Context: exceptions and error notifications raised during a step are counted for it."""
    A.act(label)
    return len(A.excs), len(A.notes)


def after(label, mark, **extra):
    ne, nn = mark
    new_exc = [e.strip().splitlines()[-1][:300] for e in A.excs[ne:]]
    new_notes = [f"{n['severity']}: {n['message'][:300]}" for n in A.notes[nn:]]
    A.measure(label, {"exceptions": new_exc, "notes": new_notes, **extra})


def job(w, btn, label, timeout=180):
    jobs = getattr(w, "jobs", None)
    cb = getattr(w, "cancel_btn", None)
    isbusy = (lambda: jobs.busy) if jobs is not None else (lambda: cb.isEnabled())
    mark = step(label)
    t0 = time.perf_counter()
    click(btn)
    busy = A.wait(lambda: (cb is not None and cb.isEnabled()) or isbusy(), 5)
    done = A.wait(lambda: not isbusy(), timeout)
    A.process(0.5)
    after(label, mark, busy_ms=None if busy is None else round(busy * 1e3), job_s=None if done is None else round(time.perf_counter() - t0, 2),
          status=w.status.text()[:300] if hasattr(w, "status") else None)


# ---------------- open -------------------------------------------------------------------------
mark = step("open file (viewer.open, plugin reader)")
t0 = time.perf_counter()
try:
    v.open(PATH, plugin="napari-4dstem")
except Exception as e:  # noqa
    A.measure("OPEN FAILED", f"{type(e).__name__}: {e}"[:600])
    A.dump()
    os._exit(0)
t_open = time.perf_counter() - t0
A.process(0.3)
cube = [l for l in v.layers if l.ndim == 4][0]
data = np.asarray(cube.data)
after("opened", mark, open_s=round(t_open, 3), shape=data.shape, dtype=str(data.dtype), scale=list(map(float, cube.scale)),
      units=[str(u) for u in cube.units], dims_step=v.dims.current_step, scale_bar=(v.scale_bar.visible, str(v.scale_bar.unit)))
ky, kx = data.shape[-2:]
sy, sx = data.shape[:2]

# ---------------- Virtual imaging --------------------------------------------------------------
mark = step("dock Virtual imaging")
try:
    vw = A.dock("Virtual imaging")
except Exception as e:  # noqa
    A.measure("VIRTUAL DOCK FAILED", traceback.format_exc()[-1200:])
    A.dump()
    os._exit(0)
ok = A.wait(lambda: vw.last_image is not None and vw._worker is None, 60)
A.process(0.5)
after("virtual first image", mark, wait_s=ok, status=vw.status.text()[:300])


def check_vi(label):
    det = vw.current_detector()
    img = None if vw.last_image is None else np.asarray(vw.last_image.data, float)
    if det is None or img is None:
        A.measure(label + " numpy check", "no detector or image", det=repr(det))
        return
    try:
        m = det.render((ky, kx)).astype(float)
        want = np.tensordot(data.astype(float), m, axes=([2, 3], [0, 1]))
        resp = vw.response_combo.currentText()
        if resp == "Mean":
            want = want / m.sum()
        A.measure(label + " numpy check", bool(img.shape == want.shape and np.allclose(img, want, rtol=1e-5, atol=1e-6)),
                  det=repr(det)[:200], img_shape=img.shape, max_abs_err=float(np.max(np.abs(img - want))) if img.shape == want.shape else None,
                  img_sum=float(img.sum()), want_sum=float(want.sum()), response=resp)
    except Exception as e:  # noqa
        A.measure(label + " numpy check raised", f"{type(e).__name__}: {e}"[:400], det=repr(det)[:200])


check_vi("first image (BF)")
A.wait(lambda: vw.presets_ready, 30)
for name, b in vw.presets.items():
    mark = step(f"preset {name}")
    t0 = time.perf_counter()
    c0 = time.thread_time()
    click(b)
    ok = A.wait(lambda: vw._worker is None and vw.last_image is not None, 15)
    A.process(0.2)
    after(f"preset {name}", mark, s=round(time.perf_counter() - t0, 3), click_cpu_ms=round((time.thread_time() - c0) * 1e3), status=vw.status.text()[:200],
          angles=vw.angles.text()[:200])
    check_vi(f"preset {name}")
A.shot("01_presets")

# ---------------- Real space click ------------------------------------------------------------
rs = real_space_model(v)
if rs is not None:
    mark = step("real space click at last scan pixel")
    try:
        native = rs_canvas_native(rs)
        s = cube.scale[:2]
        pp = world_to_native(rs, ((sy - 1) * s[0], (sx - 1) * s[1]))
        qt_mouse(native, "press", pp)
        qt_mouse(native, "release", pp)
        ok = A.wait(lambda: scan_position(v, cube) == (sy - 1, sx - 1), 5)
        after("real space click -> scan position", mark, ok=ok, pos=scan_position(v, cube), want=(sy - 1, sx - 1), canvas_xy=pp)
    except Exception:  # noqa
        A.measure("real space click raised", traceback.format_exc()[-800:])
else:
    A.measure("no Real space dock", None)

# ---------------- Result pane ---------------------------------------------------------------------
mark = step("dock Result pane")
try:
    pane = A.dock("Result pane")
    A.process(1.5)
    after("Result pane", mark, mode=pane.mode.currentText(), status=pane.status.text()[:300],
          shown=None if pane.shown is None else (pane.shown[0], np.asarray(pane.shown[1]).shape))
except Exception:  # noqa
    A.measure("RESULT PANE FAILED", traceback.format_exc()[-1200:])

# ---------------- Bragg ----------------------------------------------------------------------------
try:
    bw = A.dock("Bragg disks and strain")
    job(bw, bw.template_btn, "Bragg Make template", 120)
    job(bw, bw.run_btn, "Bragg Find disks in all", 180)
except Exception:  # noqa
    A.measure("Bragg dock raised", traceback.format_exc()[-1200:])

# ---------------- Orientation, Phase, Classification ------------------------------------------
for title, attr, timeout in (("Orientation mapping", "check_btn", 240), ("Phase retrieval", "run_btn", 180), ("Classification", "run_btn", 180)):
    try:
        w = A.dock(title)
        job(w, getattr(w, attr), f"{title} {attr}", timeout)
    except Exception:  # noqa
        A.measure(f"{title} raised", traceback.format_exc()[-1200:])
A.shot("02_docks")

# ---------------- Save result, Copy as Python (virtual) -------------------------------------------
vw.presets["BF"].click()
A.wait(lambda: vw._worker is None, 30)
ref = np.asarray(vw.last_image.data) if vw.last_image is not None else None
mark = step("virtual Save result")
_answer["path"] = TMP / "vi.h5"
try:
    click(vw.save_btn)
    A.wait(lambda: _answer["path"].exists(), 30)
    A.process(1.0)
    after("virtual Save result", mark, exists=_answer["path"].exists(), size=_answer["path"].stat().st_size if _answer["path"].exists() else None)
except Exception:  # noqa
    A.measure("Save result raised", traceback.format_exc()[-800:])
mark = step("virtual Copy as Python in a fresh python")
QApplication.clipboard().clear()
click(vw.copy_btn)
A.process(0.5)
script = QApplication.clipboard().text()
d = TMP / "copy"
d.mkdir()
(d / "copied.py").write_text(script)
(d / "wrap.py").write_text("import runpy, numpy as np\ng = runpy.run_path('copied.py')\nres = g['result']\n"
                           "arrs = [np.asarray(o.data) for o in res.objects() if getattr(o, 'data', None) is not None]\n"
                           "np.savez('arrays.npz', *arrs)\n")
p = subprocess.run([sys.executable, "wrap.py"], cwd=d, env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True, timeout=300)
same = None
if p.returncode == 0:
    z = np.load(d / "arrays.npz")
    arrs = [z[f] for f in z.files]
    same = [bool(a.shape == ref.shape and np.array_equal(a, ref, equal_nan=True)) for a in arrs] if ref is not None else None
after("Copy as Python fresh run", mark, rc=p.returncode, err=p.stderr[-800:], same_as_dock=same, script_head=script[:400])

# ---------------- Results: Keep, Save session, Load session ------------------------------------------
try:
    click(vw.keep_btn)
    A.process(0.5)
    rl = A.dock("Results")
    mark = step("Results Save session")
    _answer["path"] = TMP / "session.json"
    click(rl.save_session_btn)
    A.wait(lambda: _answer["path"].exists(), 30)
    A.process(0.5)
    after("Save session", mark, exists=_answer["path"].exists())
    mark = step("Results Load session (same viewer)")
    t0 = time.perf_counter()
    click(rl.load_session_btn)
    A.process(5.0)
    after("Load session", mark, s=round(time.perf_counter() - t0, 2), layers=[l.name for l in v.layers], status=rl.status.text()[:300] if hasattr(rl, "status") else None)
except Exception:  # noqa
    A.measure("Results raised", traceback.format_exc()[-1200:])

# ---------------- Calibration and DPC (last: 2 runs died in llvmpipe painting after its jobs) ----------------------------------------------------------
try:
    dw = A.dock("Calibration and DPC")
    job(dw, dw.measure_btn, "DPC Measure origin", 120)
    job(dw, dw.com_btn, "DPC Compute centre of mass", 120)
    job(dw, dw.auto_btn, "DPC Auto rotation", 120)
except Exception:  # noqa
    A.measure("DPC dock raised", traceback.format_exc()[-1200:])

# ---------------- Log dock ------------------------------------------------------------------------
try:
    lg = A.dock("Log")
    A.measure("Log text tail", lg.text.toPlainText()[-2500:])
except Exception:  # noqa
    A.measure("Log raised", traceback.format_exc()[-600:])
A.shot("03_end")
A.measure("loadavg end", os.getloadavg())
A.dump()
os._exit(0)
