"""Session 15 audit, part 3b: bad text in the free-text fields, then the button that uses it (keys
typed with QTest; dialogs answered by patching QFileDialog): Open raw binary file (path "abc", a
folder, a 600-byte text file), Series *Watch folder...* (a missing folder; pattern "" and "[["),
Simulation *Preview* with energies "abc" / "-300, nan" / "", Orientation's *CIF file...* with a garbage
file and with an empty file. Records status, notifications, tracebacks.

Run: xvfb-run -a -s "-screen 0 1920x1080x24" python s19_text_fields.py [DATA_DIR=/tmp/s19]"""
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from s19_common import Audit, Dialogs, after, click, mark

DATA = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/s19")
A = Audit("s19_text_fields")
v = A.viewer
D = Dialogs()
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

v.open(str(DATA / "sto.h5"), plugin="napari-4dstem")
A.process(0.5)
(DATA / "garbage.cif").write_text("this is not a CIF\n_cell_length_a abc\nloop_\n")
(DATA / "empty.cif").write_text("")


def typed(le, text):
    le.setFocus()
    QTest.mouseClick(le, Qt.MouseButton.LeftButton)
    QTest.keyClick(le, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClick(le, Qt.Key.Key_Delete)
    if text:
        QTest.keyClicks(le, text)
    QTest.keyClick(le, Qt.Key.Key_Return)


def st(w):
    out = [getattr(w, a).text()[:300] for a in ("status", "size_label", "badge", "sim_status") if hasattr(w, a)]
    if hasattr(w, "open_btn"):
        out.append(f"open_btn enabled={w.open_btn.isEnabled()}")
    return out


def step(label, fn, w, wait=3.0):
    m = mark(A, label)
    try:
        fn()
    except Exception:  # noqa
        A.measure(label + " RAISED (script)", traceback.format_exc()[-600:])
    A.process(wait)
    after(A, label, m, status=st(w), layers=len(v.layers))


try:
    rw = A.dock("Open raw binary file")
    for p in ("abc", str(DATA), str(DATA / "SrTiO3.cif")):
        step(f"raw: path {p!r}, Open", lambda p=p: (typed(rw.path, p), click(rw.open_btn)), rw)
except Exception:  # noqa
    A.measure("raw RAISED", traceback.format_exc()[-800:])
try:
    sw = A.dock("Series, compare and watch")
    D.path = "/nonexistent/folder"
    step("series: Watch folder... -> a missing folder", lambda: click(sw.watch_btn), sw)
    for pat in ("", "[["):
        D.path = str(DATA)
        step(f"series: patterns {pat!r}, Watch folder... -> {DATA}", lambda pat=pat: (typed(sw.patterns, pat), click(sw.watch_btn)), sw)
        if sw.stop_btn.isEnabled():
            click(sw.stop_btn)
            A.process(0.5)
except Exception:  # noqa
    A.measure("series RAISED", traceback.format_exc()[-800:])
try:
    mw = A.dock("Simulation and training data")
    for e in ("abc", "-300, nan", ""):
        step(f"simulation: energies {e!r}, Preview", lambda e=e: (typed(mw.energies, e), click(mw.preview_btn)), mw, 8.0)
except Exception:  # noqa
    A.measure("simulation RAISED", traceback.format_exc()[-800:])
try:
    ow = A.dock("Orientation mapping")
    from napari_4dstem.widgets.orientation import CIF_ITEM

    for f in ("garbage.cif", "empty.cif"):
        D.path = DATA / f
        i = ow.crystal_combo.findText(CIF_ITEM)

        def choose(i=i):
            ow.crystal_combo.setCurrentIndex(i)
            ow.crystal_combo.activated.emit(i)

        step(f"orientation: CIF file... -> {f}", choose, ow)
        A.measure(f"orientation after {f}", {"combo": ow.crystal_combo.currentText(), "label": ow.crystal_label.text()[:200]})
except Exception:  # noqa
    A.measure("orientation RAISED", traceback.format_exc()[-800:])
A.dump()
os._exit(0)
