"""Every dock on the bundled sample: open, screenshot, a job with busy indicator and Cancel,
errors/notifications, bad file, close and reopen. Real button clicks (QTest.mouseClick).
Run: cd <checkout> && nice -n 10 xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python benchmarks/ux_audit/s2_docks_jobs.py"""
import os, sys, time
import os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from harness import Audit, real_space_model, rs_canvas_native, qt_mouse, world_to_native

A = Audit("s2")
v = A.viewer
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

def click(b):
    QTest.mouseClick(b, Qt.MouseButton.LeftButton)

def job(w, btn, label, cancel_after=None, timeout=120):
    """click btn; busy latency = cancel enabled; optionally Cancel after s; time to idle."""
    jobs = getattr(w, "jobs", None)
    cb = getattr(w, "cancel_btn", None)
    t0 = time.perf_counter()
    click(btn)
    t_click = time.perf_counter() - t0
    isbusy = (lambda: jobs.busy) if jobs is not None else (lambda: cb.isEnabled())
    busy = A.wait(lambda: (cb is not None and cb.isEnabled()) or isbusy(), 5)
    res = {"click_ms": round(t_click * 1e3, 1), "busy_indicator_ms": None if busy is None else round((time.perf_counter() - t0) * 1e3, 1)}
    if cancel_after is not None and busy is not None:
        A.process(cancel_after)
        t1 = time.perf_counter()
        click(cb)
        res["cancel_status"] = w.status.text()[:100] if hasattr(w, "status") else None
        done = A.wait(lambda: not isbusy(), 30)
        res["stop_after_cancel_s"] = None if done is None else round(time.perf_counter() - t1, 2)
    else:
        done = A.wait(lambda: not isbusy(), timeout)
        res["job_s"] = None if done is None else round(time.perf_counter() - t0, 2)
    A.process(0.3)
    res["status"] = w.status.text()[:200] if hasattr(w, "status") else None
    res["progress"] = (w.progress.value(), w.progress.format()) if hasattr(w, "progress") and w.progress is not None else None
    A.measure(label, res)
    return res

A.act("open sample")
v.open_sample("napari-4dstem", "strained_crystal")
cube = v.layers["strained_crystal"]
A.process(0.5)
A.measure("scale bar visible on main canvas", v.scale_bar.visible, unit=str(v.scale_bar.unit))

A.act("virtual dock")
vw = A.dock("Virtual imaging")
A.wait(lambda: vw.last_image is not None and vw._worker is None, 60)
rs = real_space_model(v)
from napari_4dstem.widgets._multiview import crosshair_position, _QT
A.measure("crosshair at start (scan 0,0)", crosshair_position(rs))
qw = v.window._qt_window
scr = QApplication.primaryScreen().geometry()
rsw = _QT[rs]()
A.measure("geometry: window, screen, RS canvas (w,h), RS canvas global x-range",
          ((qw.width(), qw.height()), (scr.width(), scr.height()), (rsw.qt_viewer.canvas.native.width(), rsw.qt_viewer.canvas.native.height()),
           (rsw.qt_viewer.canvas.native.mapToGlobal(rsw.qt_viewer.canvas.native.rect().topLeft()).x(),
            rsw.qt_viewer.canvas.native.mapToGlobal(rsw.qt_viewer.canvas.native.rect().topRight()).x())))
A.measure("RS scale bar visible", rs.scale_bar.visible)

docks = {}
for title in ["Calibration and DPC", "Bragg disks and strain", "Orientation mapping", "Phase retrieval", "Classification",
              "NN disk detection", "Simulation and training data", "Result pane", "Results", "Log", "Keyboard shortcuts",
              "Series, compare and watch", "Scan shape"]:
    A.act(f"dock {title}")
    try:
        docks[title] = A.dock(title)
    except Exception as e:
        A.measure(f"dock open FAILED {title}", repr(e))
    A.process(1.0)
A.act("docks open, settle")
A.process(3.0)
A.measure("window size with all docks", (qw.width(), qw.height()), min=(qw.minimumSizeHint().width(), qw.minimumSizeHint().height()))
A.shot("00_all_docks")

# ---- Bragg ----------------------------------------------------------------------------------
bw = docks["Bragg disks and strain"]
v.window.dock_widgets  # noqa
A.act("bragg make template")
job(bw, bw.template_btn, "Bragg Make template", timeout=400)
A.act("bragg live scan steps")
c0 = time.thread_time(); t0 = time.perf_counter()
for k in range(10):
    v.dims.current_step = (k + 3, k + 5) + tuple(v.dims.current_step[2:])
    A.process(0.15)
A.measure("Bragg live: 10 scan steps wall s / GUI cpu ms per step", (round(time.perf_counter() - t0, 2), round((time.thread_time() - c0) * 1e3 / 10, 1)))
pts = [l.name for l in v.layers]
A.measure("layers on main after live", pts)
A.act("bragg find all + cancel")
job(bw, bw.run_btn, "Bragg Find all then Cancel after 1.0 s", cancel_after=1.0)
A.act("bragg find all full")
job(bw, bw.run_btn, "Bragg Find all (full)", timeout=240)
A.act("bragg lattice")
job(bw, bw.lattice_btn, "Bragg Find g1,g2", timeout=120)
A.act("bragg strain")
job(bw, bw.strain_btn, "Bragg Compute strain", timeout=180)
A.shot("01_bragg")

# ---- DPC ------------------------------------------------------------------------------------
dw = docks["Calibration and DPC"]
A.act("dpc com")
job(dw, dw.com_btn, "DPC Compute centre of mass", timeout=180)
A.act("dpc auto rotation")
job(dw, dw.auto_btn, "DPC Auto rotation", timeout=120)
A.shot("02_dpc")

# ---- Classification -------------------------------------------------------------------------
cw = docks["Classification"]
A.act("classify cancel")
job(cw, cw.run_btn, "Classify then Cancel after 0.5 s", cancel_after=0.5)
A.act("classify full")
job(cw, cw.run_btn, "Classify (full)", timeout=240)
A.shot("03_classify")

# ---- Orientation ----------------------------------------------------------------------------
ow = docks["Orientation mapping"]
A.act("orientation check")
job(ow, ow.check_btn, "Orientation Check current pattern", timeout=240)
A.act("orientation run cancel")
job(ow, ow.run_btn, "Orientation Run on all then Cancel after 2 s", cancel_after=2.0)
A.shot("04_orientation")

# ---- NN -------------------------------------------------------------------------------------
nw = docks["NN disk detection"]
A.act("nn preview")
job(nw, nw.preview_btn, "NN Preview", timeout=240)
A.act("nn run cancel")
job(nw, nw.run_btn, "NN Find all then Cancel after 2 s", cancel_after=2.0)
A.shot("05_nn")

# ---- Phase ----------------------------------------------------------------------------------
pw = docks["Phase retrieval"]
A.act("phase run cancel")
job(pw, pw.run_btn, "Phase Run (default method) then Cancel after 2 s", cancel_after=2.0)
A.shot("06_phase")

# ---- Simulation -----------------------------------------------------------------------------
sw = docks["Simulation and training data"]
A.act("sim preview")
n0 = len(v.layers); t0 = time.perf_counter()
click(sw.preview_btn)
ok = A.wait(lambda: len(v.layers) > n0 or any("newest" in l.name or "preview" in l.name.lower() for l in v.layers), 300)
A.measure("Simulation Preview: layers appear s", None if ok is None else round(time.perf_counter() - t0, 1), new=[l.name for l in v.layers][n0:])
A.shot("07_sim")

# ---- Result pane, Log ----------------------------------------------------------------------
rp = docks["Result pane"]
A.measure("Result pane status", rp.status.text()[:200])
lg = docks["Log"]
A.measure("Log text", lg.text.toPlainText()[-3000:])

# ---- bad file -------------------------------------------------------------------------------
A.act("bad file")
bad = "/tmp/ux_audit_bad.npy"
open(bad, "wb").write(b"\x93NUMPY garbage not a real header" * 3)
t0 = time.perf_counter()
try:
    v.open(bad, plugin="napari-4dstem")
    A.measure("open bad .npy", "no exception", layers=[l.name for l in v.layers][-3:])
except Exception as e:
    A.measure("open bad .npy raised", f"{type(e).__name__}: {str(e)[:400]}", s=round(time.perf_counter() - t0, 2))
bad2 = "/tmp/ux_audit_3d.npy"
np.save(bad2, np.zeros((5, 6, 7), np.uint16))
try:
    v.open(bad2, plugin="napari-4dstem")
    A.measure("open 3D .npy", "no exception", layers=[l.name for l in v.layers][-3:])
except Exception as e:
    A.measure("open 3D .npy raised", f"{type(e).__name__}: {str(e)[:400]}")
A.process(1)
A.shot("08_badfile")

# ---- close and reopen -----------------------------------------------------------------------
A.act("close dataset")
n_notes = len(A.notes)
v.layers.remove("strained_crystal")
A.process(3)
A.measure("after close: virtual status", vw.status.text()[:200], layers=[l.name for l in v.layers], rs_layers=[l.name for l in rs.layers] if rs else None)
A.shot("09_closed")
A.act("reopen dataset")
v.open_sample("napari-4dstem", "strained_crystal")
t0 = time.perf_counter()
ok = A.wait(lambda: vw.layer is not None and vw.last_image is not None and vw._worker is None, 60)
A.process(2)
A.measure("after reopen: virtual dock image back s", ok, layer=getattr(vw.layer, "name", None), status=vw.status.text()[:200])
A.shot("10_reopened")
A.measure("Log text end", docks["Log"].text.toPlainText()[-3000:])
A.dump()
for f in (bad, bad2):
    os.remove(f)
os._exit(0)
