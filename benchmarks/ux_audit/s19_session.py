"""Session 15 audit, part 1: a whole microscopist session in ONE napari window on data nobody tuned on
(s19_make_data.py: SrTiO3 [001], 24 x 24 x 128 x 128 uint16, planted strain gradient, descan, vacuum
columns). Real clicks (QTest), dialogs answered by patching QFileDialog's static getters.

Steps: open the plain .npy through the npe2 reader (napari's File > Open path) -> Calibration and DPC
(scan step typed, disk calibration with the convergence angle and energy, origin, CoM, auto rotation)
-> Virtual imaging (BF/ADF/HAADF checked against numpy, an added annulus detector, Keep) -> Bragg
(template from the BF disk, disks in all, g1/g2, strain vs the planted gradient) -> Orientation (the
hand-written SrTiO3 CIF chosen through the combo, Check current pattern, Run on all) -> Phase
(parallax) -> Classification -> Results: every row's Copy as Python run in a fresh python and
compared -> Save session (+ the results' arrays to results.npz for s19_session_reload.py) -> the EMD
file opened too (calibration read back?).  GUI gaps > 50 ms recorded per action; stalls > 1 s get a
faulthandler dump of every thread in LOGS/s19_session_stalls.txt.

Run: xvfb-run -a -s "-screen 0 1920x1080x24" python s19_session.py [DATA_DIR=/tmp/s19]"""
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from s19_common import Audit, Dialogs, after, arm_stack_dumps, arrays_of, click, compare, job, mark, run_fresh

DATA = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/s19")
WORK = DATA / "session"
WORK.mkdir(exist_ok=True)
A = Audit("s19_session")
stalls = arm_stack_dumps(A, "s19_session")
v = A.viewer
D = Dialogs()
from qtpy.QtWidgets import QApplication

A.measure("loadavg start", os.getloadavg())
truth = np.load(DATA / "truth.npz")
raw = np.load(DATA / "sto.npy")


def safe(label, fn):
    try:
        return fn()
    except Exception:  # noqa
        A.measure(f"{label} RAISED (script)", traceback.format_exc()[-1500:])


# ---------------- open the .npy as File > Open does ----------------------------------------------
m = mark(A, "open sto.npy (viewer.open, plugin reader)")
t0 = time.perf_counter()
v.open(str(DATA / "sto.npy"), plugin="napari-4dstem")
t_open = time.perf_counter() - t0
A.process(0.3)
cube = [l for l in v.layers if l.ndim == 4][0]
after(A, "opened npy", m, open_s=round(t_open, 3), name=cube.name, scale=list(map(float, cube.scale)),
      units=[str(u) for u in cube.units], layers=[l.name for l in v.layers])

# ---------------- Virtual imaging first (the user's first look) --------------------------------
m = mark(A, "dock Virtual imaging")
vw = A.dock("Virtual imaging")
ok = A.wait(lambda: vw.last_image is not None and vw._worker is None, 120)
after(A, "virtual first image", m, wait_s=ok, status=vw.status.text()[:300])
A.wait(lambda: vw.presets_ready, 60)

# ---------------- Calibration -------------------------------------------------------------------
def calibrate():
    dw = A.dock("Calibration and DPC")
    m = mark(A, "calibration: scan step 4 A typed")
    dw.fov_mode.setCurrentText("scan step")
    dw.fov_units.setCurrentText("A")
    for sb in (dw.fov_y, dw.fov_x):
        sb.setValue(4.0)
    click(dw.apply_fov_btn)
    A.process(1.0)
    after(A, "calibration: Set the real-space scale", m, fov_text=dw.fov_label.text()[:300],
          scale=list(map(float, cube.scale)), units=[str(u) for u in cube.units])
    dw.disk_alpha.setValue(1.2)
    dw.beam_kev.setValue(300.0)
    job(A, dw, dw.measure_disk_btn, "calibration: Measure disk (1.2 mrad, 300 keV)", 120)
    A.measure("disk label", dw.disk_label.text()[:400], apply_enabled=dw.apply_disk_btn.isEnabled())
    m = mark(A, "calibration: Apply disk to the layer")
    click(dw.apply_disk_btn)
    A.process(1.0)
    after(A, "calibration: disk applied", m, scale=list(map(float, cube.scale)), units=[str(u) for u in cube.units],
          truth_k_pixel=0.01, vi_angles=vw.angles.text()[:200])
    job(A, dw, dw.measure_btn, "DPC Measure origin", 120)
    job(A, dw, dw.com_btn, "DPC Compute centre of mass", 120)
    job(A, dw, dw.auto_btn, "DPC Auto rotation", 120)
    A.measure("DPC after auto", dw.dpc_label.text()[:300], rotation=dw.rotation.value())
    return dw


dw = safe("calibration", calibrate)
A.shot("01_calibrated")


# ---------------- Virtual imaging: presets vs numpy, extra detector, keep ---------------------------
def check_vi(label):
    det = vw.current_detector()
    img = None if vw.last_image is None else np.asarray(vw.last_image.data, float)
    if det is None or img is None:
        A.measure(label + " numpy check", "no detector or image")
        return
    mm = det.render(raw.shape[2:]).astype(float)
    want = np.tensordot(raw.astype(float), mm, axes=([2, 3], [0, 1]))
    if vw.response_combo.currentText() == "Mean":
        want = want / mm.sum()
    A.measure(label + " numpy check", bool(img.shape == want.shape and np.allclose(img, want, rtol=1e-5, atol=1e-6)),
              det=repr(det)[:200], max_abs_err=float(np.max(np.abs(img - want))) if img.shape == want.shape else None)


def virtual():
    A.wait(lambda: vw.presets_ready and vw._worker is None, 60)
    for name in ("BF", "ADF", "HAADF", "ABF"):
        if name not in vw.presets:
            continue
        m = mark(A, f"preset {name}")
        t0 = time.perf_counter()
        click(vw.presets[name])
        A.wait(lambda: vw._worker is None and vw.last_image is not None, 30)
        after(A, f"preset {name}", m, s=round(time.perf_counter() - t0, 3), status=vw.status.text()[:200],
              angles=vw.angles.text()[:200])
        check_vi(f"preset {name}")
    m = mark(A, "Add detector")
    click(vw.add_btn)
    A.wait(lambda: not vw.extras.busy and vw.extras.items, 60)
    after(A, "Add detector", m, extras=list(vw.extras.items)[:5])
    click(vw.presets["BF"])
    A.wait(lambda: vw._worker is None, 30)
    m = mark(A, "virtual Keep")
    click(vw.keep_btn)
    A.process(0.5)
    after(A, "virtual Keep", m, status=vw.status.text()[:200])


safe("virtual", virtual)
rl = A.dock("Results")


# ---------------- Bragg + strain ------------------------------------------------------------------
def bragg():
    bw = A.dock("Bragg disks and strain")
    A.measure("bragg probe choice", bw.probe_combo.currentText())
    job(A, bw, bw.template_btn, "Bragg Make template", 120)
    job(A, bw, bw.run_btn, "Bragg Find disks in all", 300)
    A.wait(lambda: bw._worker is None, 60)
    A.measure("bragg lattice", None if bw.lattice is None else (np.round(bw.lattice.g1, 3).tolist(), np.round(bw.lattice.g2, 3).tolist()),
              status=bw.status.text()[:300])
    if bw.lattice is None:
        job(A, bw, bw.lattice_btn, "Bragg Find g1, g2", 120)
    job(A, bw, bw.strain_btn, "Bragg Compute strain", 300)
    from napari_4dstem.widgets._results import results_viewer

    rs = results_viewer(v, create=False)
    if rs is not None and "e_xx" in rs.layers:
        exx = np.asarray(rs.layers["e_xx"].data, float)
        eyy = np.asarray(rs.layers["e_yy"].data, float)
        cols = np.nanmedian(exx[:, 2:], axis=0)
        rows = np.nanmedian(eyy[:, 2:], axis=1)
        sx = np.polyfit(np.arange(2, 24), cols, 1)[0]
        sy = np.polyfit(np.arange(24), rows, 1)[0]
        tx = np.polyfit(np.arange(24), truth["exx"], 1)[0]
        ty = np.polyfit(np.arange(24), truth["eyy"], 1)[0]
        A.measure("strain gradient vs planted (per scan px)", {"exx_slope": sx, "truth_exx_slope": tx, "eyy_slope": sy,
                  "truth_eyy_slope": ty, "vacuum_cols_exx": exx[:, :2].ravel()[:4].tolist()})
    return bw


bw = safe("bragg", bragg)
A.shot("02_strain")


# ---------------- Orientation with the CIF --------------------------------------------------------
def orientation():
    ow = A.dock("Orientation mapping")
    from napari_4dstem.widgets.orientation import CIF_ITEM

    D.path = DATA / "SrTiO3.cif"
    m = mark(A, "orientation: choose CIF file... in the crystal combo")
    i = ow.crystal_combo.findText(CIF_ITEM)
    ow.crystal_combo.setCurrentIndex(i)
    ow.crystal_combo.activated.emit(i)
    A.process(0.5)
    after(A, "orientation: CIF loaded", m, crystal_text=ow.crystal_label.text()[:300], status=ow.status.text()[:200],
          k_max=ow.k_max.value())
    job(A, ow, ow.check_btn, "Orientation Check current pattern", 300)
    job(A, ow, ow.run_btn, "Orientation Run on all", 420)
    res = ow.result
    if res is not None:
        A.measure("orientation result", repr(res)[:300])
    return ow


ow = safe("orientation", orientation)
A.shot("03_orientation")


def phase():
    pw = A.dock("Phase retrieval")
    pw.method.setCurrentText("parallax")
    A.measure("phase form", {"energy": pw.energy.value(), "convergence": pw.convergence.value()})
    job(A, pw, pw.run_btn, "Phase parallax Run", 300)
    return pw


pw = safe("phase", phase)


def classification():
    cw = A.dock("Classification")
    job(A, cw, cw.run_btn, "Classification Classify", 300)
    return cw


cw = safe("classification", classification)
A.shot("04_all_docks")


# ---------------- Results: Copy as Python for each row, fresh python ---------------------------------
def results():
    A.process(0.5)
    names = rl.names()
    rows = [[rl.table.item(i, j).text() for j in range(rl.table.columnCount())] for i in range(rl.table.rowCount())]
    A.measure("Results rows", rows)
    saved = {}
    for name in names:
        m = mark(A, f"Results Copy as Python: {name}")
        rl.select(name)
        A.process(0.2)
        QApplication.clipboard().clear()
        click(rl.copy_btn)
        A.process(0.3)
        script = QApplication.clipboard().text()
        res = rl.store.results.get(name)
        mine = arrays_of(res) if res is not None else []
        for k, a in enumerate(mine):
            saved[f"{name}::{k}"] = a
        theirs, dt, err = run_fresh(script, WORK / f"copy_{len(saved)}_{name.replace('/', '_')[:40]}") if script else (None, 0, "empty clipboard")
        after(A, f"Copy as Python fresh run: {name}", m, compare=compare(mine, theirs), script_s=round(dt, 1), err=err[-600:],
              chars=len(script), params=rl.params_label.text()[:200])
    np.savez(WORK / "results.npz", **saved)
    D.path = WORK / "session.json"
    m = mark(A, "Results Save session")
    click(rl.save_session_btn)
    A.wait(lambda: (WORK / "session.json").exists(), 30)
    A.process(0.5)
    s = json.loads((WORK / "session.json").read_text()) if (WORK / "session.json").exists() else {}
    after(A, "Save session", m, status=rl.status.text()[:300], entries=len(s.get("entries", [])) if isinstance(s, dict) else None,
          docks=list(((s.get("settings") or {}).get("docks") or {}).keys()) if isinstance(s, dict) else None)
    from napari_4dstem.widgets._state import dock_states

    (WORK / "dock_states.json").write_text(json.dumps(dock_states(v), default=str))


safe("results", results)


# ---------------- the EMD file through File > Open into the same window ----------------------------
def emd():
    m = mark(A, "open sto.h5 (EMD written by our writer)")
    t0 = time.perf_counter()
    v.open(str(DATA / "sto.h5"), plugin="napari-4dstem")
    A.process(0.5)
    c2 = [l for l in v.layers if l.ndim == 4][-1]
    after(A, "opened EMD", m, s=round(time.perf_counter() - t0, 2), name=c2.name, scale=list(map(float, c2.scale)),
          units=[str(u) for u in c2.units], equal=bool(np.array_equal(np.asarray(c2.data), raw)))


safe("emd", emd)
A.shot("05_end")
A.measure("loadavg end", os.getloadavg())
A.dump()
gaps = A.gaps.gaps
by = {}
for g in gaps:
    b = by.setdefault(g["action"], [0, 0.0, 0.0, 0.0])
    b[0] += 1
    b[1] += g["wall_ms"] / 1e3
    b[2] += g["cpu_ms"] / 1e3
    b[3] = max(b[3], g["wall_ms"])
print("GAPS per action: n, wall s, gui cpu s, worst ms")
for k, b in sorted(by.items(), key=lambda kv: -kv[1][1]):
    print(f"  {k[:70]:70s} {b[0]:4d} {b[1]:7.2f} {b[2]:7.2f} {b[3]:8.1f}")
stalls.flush()
os._exit(0)
