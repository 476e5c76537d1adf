"""Session 15 audit helpers on top of harness.py: dialogs answered, clicks, jobs, fresh-python runs,
and a faulthandler stack dump of every thread when the GUI thread stalls > STALL_DUMP_S (faulthandler
runs in C; no sys._current_frames, which segfaulted session 14's watchdog)."""
import faulthandler
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from harness import LOGS, Audit, GapRecorder  # noqa: F401

SRC = str(Path(__file__).resolve().parents[2] / "src")
STALL_DUMP_S = float(os.environ.get("S19_STALL_DUMP_S", "1.0"))


def arm_stack_dumps(A, name):
    """Re-arm faulthandler.dump_traceback_later at every gap-recorder tick: a GUI stall longer than
    STALL_DUMP_S writes every thread's stack to LOGS/<name>_stalls.txt (with the action label
    written before, so the dump is attributed)."""
    f = open(LOGS / f"{name}_stalls.txt", "w", buffering=1)
    rec = A.gaps
    orig = rec._tick
    state = {"action": None}

    def tick():
        orig()
        if rec.action != state["action"]:
            state["action"] = rec.action
            f.write(f"\n=== ACTION {rec.action} at {time.strftime('%H:%M:%S')}\n")
        faulthandler.dump_traceback_later(STALL_DUMP_S, repeat=False, file=f)

    rec.timer.timeout.disconnect()
    rec.timer.timeout.connect(tick)
    return f


class Dialogs:
    def __init__(self):
        from qtpy.QtWidgets import QFileDialog

        self.path = None
        QFileDialog.getSaveFileName = staticmethod(lambda *a, **k: (str(self.path), ""))
        QFileDialog.getOpenFileName = staticmethod(lambda *a, **k: (str(self.path), ""))
        QFileDialog.getExistingDirectory = staticmethod(lambda *a, **k: str(self.path))


def click(b):
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    QTest.mouseClick(b, Qt.MouseButton.LeftButton)


def mark(A, label):
    A.act(label)
    return len(A.excs), len(A.notes)


def after(A, label, m, **extra):
    ne, nn = m
    new_exc = [e.strip().splitlines()[-1][:300] for e in A.excs[ne:]]
    new_notes = [f"{n['severity']}: {n['message'][:300]}" for n in A.notes[nn:]]
    A.measure(label, {"exceptions": new_exc, "notes": new_notes, **extra})
    return new_exc, new_notes


def job(A, w, btn, label, timeout=180):
    jobs = getattr(w, "jobs", None)
    cb = getattr(w, "cancel_btn", None)
    isbusy = (lambda: jobs.busy) if jobs is not None else (lambda: cb.isEnabled())
    m = mark(A, label)
    ng = len(A.gaps.gaps)
    t0 = time.perf_counter()
    click(btn)
    busy = A.wait(lambda: (cb is not None and cb.isEnabled()) or isbusy(), 5)
    done = A.wait(lambda: not isbusy(), timeout)
    A.process(0.5)
    gaps = A.gaps.gaps[ng:]
    return after(A, label, m, busy_ms=None if busy is None else round(busy * 1e3),
                 job_s=None if done is None else round(time.perf_counter() - t0, 2),
                 gaps=(len(gaps), round(sum(g["wall_ms"] for g in gaps) / 1e3, 2), max((g["wall_ms"] for g in gaps), default=0)),
                 status=w.status.text()[:300] if hasattr(w, "status") else None)


def arrays_of(res):
    out = []
    for o in res.objects():
        d = getattr(o, "data", None)
        if d is not None:
            out.append(np.asarray(d))
    return out


def run_fresh(script: str, d: Path):
    d.mkdir(parents=True, exist_ok=True)
    (d / "copied.py").write_text(script)
    (d / "wrap.py").write_text(
        "import runpy, numpy as np\ng = runpy.run_path('copied.py')\nres = g['result']\n"
        "arrs = [np.asarray(o.data) for o in res.objects() if getattr(o, 'data', None) is not None]\n"
        "np.savez('arrays.npz', *arrs)\n")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "wrap.py"], cwd=d, env={**os.environ, "PYTHONPATH": SRC}, capture_output=True,
                       text=True, timeout=600)
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
