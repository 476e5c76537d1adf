"""Session 15 audit, part 3: bad input typed in every numeric/text field of every dock, as a user
types it (click in the field, Ctrl+A, keys, Enter: QTest), on the calibrated EMD file of
s19_make_data.py. For each field and each of "-1", "0", "1e12", "nan", "abc", "" : what the field
shows afterwards, new exceptions (tracebacks) and error notifications, the longest GUI gap. Then per
dock: every spin box at its minimum, the dock's main action(s) clicked; then every spin box at its
maximum, the action(s) again (the extreme values a spin box accepts are the "zero/huge" a user can
reach). Then targeted cases: annulus inner > outer typed, ring r_min > r_max, field of view 0,
combined-image weights "a, b" / "1" / "nan".

Run: xvfb-run -a -s "-screen 0 1920x1080x24" python s19_bad_input.py [DATA_DIR=/tmp/s19] [DOCK ...]"""
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from s19_common import Audit, Dialogs, after, arm_stack_dumps, click, mark

DATA = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/s19")
ONLY = sys.argv[2:]
A = Audit("s19_bad_input")
stalls = arm_stack_dumps(A, "s19_bad_input")
v = A.viewer
D = Dialogs()
D.path = DATA / "nonexistent.file"
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QAbstractSpinBox, QLineEdit

A.measure("loadavg start", os.getloadavg())
v.open(str(DATA / "sto.h5"), plugin="napari-4dstem")
A.process(0.5)
VALUES = ["-1", "0", "1e12", "nan", "abc", ""]
DOCKS = {  # title -> main action button attributes (clicked in the min / max passes)
    "Virtual imaging": ["combine_btn"],
    "Calibration and DPC": ["apply_fov_btn", "measure_disk_btn", "fit_ring_btn", "com_btn"],
    "Bragg disks and strain": ["template_btn", "run_btn"],
    "Orientation mapping": ["check_btn"],
    "Phase retrieval": ["run_btn"],
    "Classification": ["run_btn", "split_btn"],
    "Scan shape": [],
    "Open raw binary file": [],
    "Series, compare and watch": [],
    "Simulation and training data": [],
    "NN disk detection": [],
    "Result pane": [],
}


def attr_name(w, field):
    for k, val in vars(w).items():
        if val is field:
            return k
        if isinstance(val, (list, tuple)):
            for i, x in enumerate(val):
                if x is field:
                    return f"{k}[{i}]"
    return field.objectName() or type(field).__name__


def busy_of(w):
    jobs = getattr(w, "jobs", None)
    cb = getattr(w, "cancel_btn", None)
    return lambda: (jobs.busy if jobs is not None else False) or (cb is not None and cb.isEnabled())


def type_into(field, text):
    le = field.lineEdit() if isinstance(field, QAbstractSpinBox) else field
    field.setFocus()
    QTest.mouseClick(le, Qt.MouseButton.LeftButton)
    QTest.keyClick(le, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClick(le, Qt.Key.Key_Delete)
    if text:
        QTest.keyClicks(le, text)
    QTest.keyClick(le, Qt.Key.Key_Return)
    # focus away, as a user clicking elsewhere (editingFinished)
    field.clearFocus()


def shown(field):
    return field.text() if isinstance(field, (QLineEdit, QAbstractSpinBox)) else None


def value(field):
    return field.value() if hasattr(field, "value") else field.text()


def wait_idle(w, timeout=60):
    b = busy_of(w)
    A.process(0.2)
    ok = A.wait(lambda: not b(), timeout)
    if ok is None and getattr(w, "cancel_btn", None) is not None and w.cancel_btn.isEnabled():
        click(w.cancel_btn)
        A.wait(lambda: not b(), 30)
        return "cancelled after timeout"
    return ok


def field_sweep(title, w):
    fields = [f for f in w.findChildren(QAbstractSpinBox) + w.findChildren(QLineEdit)
              if not (isinstance(f, QLineEdit) and isinstance(f.parent(), QAbstractSpinBox))]
    fields = [f for f in fields if f.isEnabled() and not f.isReadOnly()]
    A.measure(f"{title}: fields", [attr_name(w, f) for f in fields])
    for f in fields:
        name = attr_name(w, f)
        orig = shown(f)
        for t in VALUES:
            m = mark(A, f"{title} {name} <- {t!r}")
            ng = len(A.gaps.gaps)
            t0 = time.perf_counter()
            try:
                type_into(f, t)
            except Exception:  # noqa
                A.measure("type raised (script)", traceback.format_exc()[-500:])
            A.process(0.15)
            wait_idle(w, 30)
            gmax = max((g["wall_ms"] for g in A.gaps.gaps[ng:]), default=0)
            exc, notes = after(A, f"typed {title} {name} <- {t!r}", m, shows=shown(f), value=value(f),
                               status=w.status.text()[:200] if hasattr(w, "status") else None, gap_max_ms=gmax,
                               s=round(time.perf_counter() - t0, 2))
        try:
            type_into(f, orig if not isinstance(f, QAbstractSpinBox) else f.textFromValue(f.value()) if False else orig)
        except Exception:  # noqa
            pass
        A.process(0.1)
        wait_idle(w, 30)
    return fields


def extremes(title, w, fields, actions):
    spins = [f for f in fields if isinstance(f, QAbstractSpinBox) and hasattr(f, "minimum")]
    saved = [f.value() for f in spins]
    for which in ("minimum", "maximum"):
        for f in spins:
            f.setValue(getattr(f, which)())
        A.process(0.3)
        wait_idle(w, 60)
        for a in actions:
            btn = getattr(w, a, None)
            if btn is None or not btn.isEnabled():
                A.measure(f"{title} all at {which}: {a} not enabled", None)
                continue
            m = mark(A, f"{title} all spin boxes at {which}: click {a}")
            t0 = time.perf_counter()
            click(btn)
            r = wait_idle(w, 90)
            after(A, f"{title} all at {which}: {a}", m, s=round(time.perf_counter() - t0, 2), idle=r,
                  status=w.status.text()[:300] if hasattr(w, "status") else None)
    for f, s in zip(spins, saved):
        f.setValue(s)
    A.process(0.3)
    wait_idle(w, 60)


for title, actions in DOCKS.items():
    if ONLY and title not in ONLY:
        continue
    m = mark(A, f"dock {title}")
    try:
        w = A.dock(title)
    except Exception:  # noqa
        A.measure(f"dock {title} RAISED", traceback.format_exc()[-800:])
        continue
    A.process(0.5)
    if title == "Virtual imaging":
        A.wait(lambda: w.last_image is not None and w._worker is None and w.presets_ready, 120)
    after(A, f"dock {title} opened", m)
    try:
        fields = field_sweep(title, w)
        extremes(title, w, fields, actions)
    except Exception:  # noqa
        A.measure(f"{title} sweep RAISED (script)", traceback.format_exc()[-1200:])
    # targeted cases
    try:
        if title == "Virtual imaging":
            w.kind_combo.setCurrentText("Annulus")
            A.wait(lambda: w._worker is None, 30)
            m = mark(A, "virtual annulus: inner 40 typed, outer 10 typed")
            type_into(w.r_out, "10")
            type_into(w.r_in, "40")
            A.process(0.5)
            A.wait(lambda: w._worker is None, 30)
            after(A, "virtual annulus inner 40 > outer 10", m, r_in=w.r_in.value(), r_out=w.r_out.value(),
                  det=repr(w.current_detector())[:200], status=w.status.text()[:200])
            for txt in ("a, b", "1", "nan, 1", "1e308, 1e308", ""):
                m = mark(A, f"virtual combine weights {txt!r}")
                type_into(w.combine_edit, txt)
                click(w.combine_btn)
                wait_idle(w, 30)
                after(A, f"virtual combine weights {txt!r}", m, status=w.status.text()[:200])
        if title == "Calibration and DPC":
            m = mark(A, "calibration: field of view 0 x 0, Set the real-space scale")
            w.fov_mode.setCurrentText("field of view")
            type_into(w.fov_y, "0")
            type_into(w.fov_x, "0")
            click(w.apply_fov_btn)
            A.process(0.5)
            cube = [l for l in v.layers if l.ndim == 4][0]
            after(A, "calibration: fov 0 x 0", m, fov_text=w.fov_label.text()[:300], scale=list(map(float, cube.scale)))
            m = mark(A, "calibration: ring r_min 50 > r_max 20, Fit ring")
            type_into(w.ring_rmin, "50")
            type_into(w.ring_rmax, "20")
            click(w.fit_ring_btn)
            wait_idle(w, 60)
            after(A, "calibration: ring rmin > rmax", m, ring_text=w.ring_label.text()[:300], status=w.status.text()[:200])
        if title == "Classification":
            for txt in ("abc", "1 1", "99, 100", "-1, 0", "0"):
                m = mark(A, f"classification merge {txt!r}")
                type_into(w.merge_edit, txt)
                if w.merge_btn.isEnabled():
                    click(w.merge_btn)
                A.process(0.3)
                after(A, f"classification merge {txt!r}", m, enabled=w.merge_btn.isEnabled(), status=w.status.text()[:200])
    except Exception:  # noqa
        A.measure(f"{title} targeted RAISED (script)", traceback.format_exc()[-1200:])
    A.shot(f"dock_{title.split()[0]}")
A.measure("loadavg end", os.getloadavg())
A.dump()
stalls.flush()
os._exit(0)
