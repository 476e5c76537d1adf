"""Session 15 audit, part 2: session 14's dock placement (widgets/_multiview.place_dock: a form dock
that does not fit floats as a cascaded window) on a 1920 x 1080 Xvfb screen, driven through napari's
own title-bar buttons (QTitleBarFloatButton / QTitleBarHideButton / QTitleBarCloseButton, real clicks).

For every step: each of our docks' state (docked/floating, global rect, on screen?), the main window's
rect, whether a floating dock covers a canvas (napari's main canvas, the Real space canvas), and every
visible button/field of every dock: reachable (inside the dock's visible area, or inside a scroll area
that can scroll to it) or not. Steps: open all 13 docks one by one; float the first docked form and
dock it back; dock back each floating dock (double-click equivalent: its float button); close (x) a
dock with a typed value and reopen it from the Plugins path: value kept? exceptions?

Run: xvfb-run -a -s "-screen 0 1920x1080x24" python s19_docks.py [DATA_DIR=/tmp/s19]"""
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from s19_common import Audit, after, click, mark

DATA = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/s19")
A = Audit("s19_docks")
v = A.viewer
from qtpy.QtCore import QRect
from qtpy.QtWidgets import (QAbstractButton, QAbstractSpinBox, QComboBox, QDockWidget, QLineEdit, QPushButton,
                            QScrollArea)

A.measure("loadavg start", os.getloadavg())
v.open(str(DATA / "sto.h5"), plugin="napari-4dstem")
A.process(0.5)
win = A.win
SCREEN = win.screen().availableGeometry()
A.measure("screen", (SCREEN.x(), SCREEN.y(), SCREEN.width(), SCREEN.height()))
TITLES = ["Virtual imaging", "Calibration and DPC", "Bragg disks and strain", "Orientation mapping", "Phase retrieval",
          "Classification", "Results", "Result pane", "Log", "Scan shape", "Series, compare and watch",
          "Simulation and training data", "NN disk detection"]


def grect(w):
    tl = w.mapToGlobal(w.rect().topLeft())
    return QRect(tl.x(), tl.y(), w.width(), w.height())


def r4(r):
    return (r.x(), r.y(), r.width(), r.height())


def our_docks():
    return [d for d in win.findChildren(QDockWidget) if d.windowTitle().split(" (")[0] in TITLES + ["Real space"]
            or "napari-4dstem" in d.windowTitle()]


def canvases():
    out = {"main canvas": v.window._qt_viewer.canvas.native}
    for d in win.findChildren(QDockWidget):
        if d.windowTitle().startswith("Real space") and d.isVisible():
            out["Real space"] = d
    return out


def unreachable(dock):
    """visible controls of a dock that the user cannot see: outside the dock's visible rect and not
    inside a QScrollArea (which can scroll to them), or off the screen."""
    bad = []
    inner = dock.widget()
    if inner is None:
        return bad
    drect = grect(dock)
    for c in inner.findChildren(QAbstractButton) + inner.findChildren(QAbstractSpinBox) + inner.findChildren(QComboBox) + inner.findChildren(QLineEdit):
        if not c.isVisibleTo(inner) or (isinstance(c, QLineEdit) and isinstance(c.parent(), (QAbstractSpinBox, QComboBox))):
            continue
        cr = grect(c)
        p, in_scroll = c.parent(), False
        while p is not None and p is not dock:
            if isinstance(p, QScrollArea):
                in_scroll = True
                break
            p = p.parent()
        if in_scroll:
            # the scroll area itself must be on screen with some height
            sa = grect(p)
            if sa.height() < 30 or not SCREEN.intersects(sa):
                bad.append((c.text() if hasattr(c, "text") else type(c).__name__, "scroll area too small/off screen", r4(sa)))
            continue
        if not drect.contains(cr) or not SCREEN.contains(cr):
            bad.append((c.text()[:30] if isinstance(c, QAbstractButton) else type(c).__name__, r4(cr), r4(drect)))
    return bad


def snapshot(label):
    docks = our_docks()
    cv = {k: grect(w) for k, w in canvases().items()}
    rows, overlaps, off, unreach = [], [], [], {}
    for d in docks:
        if not d.isVisible():
            continue
        g = d.frameGeometry() if d.isFloating() else grect(d)
        rows.append((d.windowTitle()[:28], "float" if d.isFloating() else "docked", r4(g)))
        if not SCREEN.contains(g):
            off.append((d.windowTitle()[:28], r4(g)))
        if d.isFloating():
            for k, r in cv.items():
                inter = g.intersected(r)
                if inter.width() * inter.height() > 0.05 * r.width() * r.height():
                    overlaps.append((d.windowTitle()[:28], k, round(inter.width() * inter.height() / (r.width() * r.height()), 2)))
        u = unreachable(d)
        if u:
            unreach[d.windowTitle()[:28]] = u[:6]
    wg = win.frameGeometry()
    A.measure(f"PLACEMENT {label}", {"window": r4(wg), "window_on_screen": SCREEN.contains(wg),
                                     "canvases": {k: r4(r) for k, r in cv.items()},
                                     "docks": rows, "off_screen": off, "floating_covers_canvas": overlaps,
                                     "unreachable_controls": unreach, "exceptions": len(A.excs)})


def title_button(dock, name):
    tb = dock.titleBarWidget()
    if tb is None:
        return None
    for b in tb.findChildren(QPushButton):
        if b.objectName() == name:
            return b
    return None


widgets = {}
for t in TITLES:
    m = mark(A, f"open dock {t}")
    try:
        widgets[t] = A.dock(t)
    except Exception:  # noqa
        A.measure(f"open {t} RAISED", traceback.format_exc()[-600:])
        continue
    A.process(0.8)
    after(A, f"opened {t}", m)
    snapshot(f"after opening {t}")
A.shot("01_all_docks")

# float a docked form and dock it back through napari's float button
docked = [d for d in our_docks() if d.isVisible() and not d.isFloating() and not d.windowTitle().startswith("Real space")]
floating = [d for d in our_docks() if d.isVisible() and d.isFloating()]
A.measure("docked / floating after opening all", ([d.windowTitle()[:28] for d in docked], [d.windowTitle()[:28] for d in floating]))
for d in [x for x in docked if x.windowTitle().startswith(("Bragg", "Result pane"))]:
    name = d.windowTitle()[:28]
    m = mark(A, f"float {name} with its float button")
    b = title_button(d, "QTitleBarFloatButton")
    if b is None:
        continue
    ne = len(A.excs)
    click(b)
    A.process(1.5)
    after(A, f"floated {name}", m, floating=d.isFloating(), geom=r4(d.frameGeometry()), n_new_exceptions=len(A.excs) - ne)
    A.shot(f"floated_{name.split()[0]}")
    snapshot(f"after floating {name}")
    m = mark(A, f"dock back {name} with its float button")
    ne = len(A.excs)
    b = title_button(d, "QTitleBarFloatButton")  # napari rebuilds the title bar on float
    click(b)
    A.process(1.5)
    after(A, f"docked back {name}", m, floating=d.isFloating(), n_new_exceptions=len(A.excs) - ne)
    snapshot(f"after docking {name} back")
for d in floating:
    if not d.isVisible() or not d.isFloating():
        continue
    b = title_button(d, "QTitleBarFloatButton")
    m = mark(A, f"dock back {d.windowTitle()[:28]}")
    if b is None:
        A.measure("no float button", d.windowTitle())
        continue
    click(b)
    A.process(0.8)
    after(A, f"docked back {d.windowTitle()[:28]}", m, floating=d.isFloating())
snapshot("after docking every floating dock back")
A.shot("02_all_docked_back")

# close (x) a dock with a typed value, reopen it
for t, attr, val in (("Classification", "n_classes", 7), ("Bragg disks and strain", "max_peaks", 33), ("Phase retrieval", "iterations", 77)):
    w = widgets.get(t)
    if w is None:
        continue
    spin = getattr(w, attr)
    spin.setValue(val)
    A.process(0.2)
    dock = [d for d in win.findChildren(QDockWidget) if d.widget() is not None and (d.widget() is w or w.isAncestorOf(d.widget()) or d.widget().isAncestorOf(w))]
    dock = dock[0] if dock else None
    m = mark(A, f"close {t} with its x")
    b = title_button(dock, "QTitleBarCloseButton") if dock is not None else None
    b = b or (title_button(dock, "QTitleBarHideButton") if dock is not None else None)
    if b is None:
        A.measure(f"no close button for {t}", None)
        continue
    click(b)
    A.process(0.8)
    after(A, f"closed {t}", m, which=b.objectName())
    m = mark(A, f"reopen {t}")
    try:
        w2 = A.dock(t)
        A.process(0.8)
        after(A, f"reopened {t}: typed {attr}={val} kept?", m, now=getattr(w2, attr).value(), same_widget=w2 is w,
              n_docks_titled=sum(1 for d in win.findChildren(QDockWidget) if d.windowTitle().startswith(t)))
    except Exception:  # noqa
        A.measure(f"reopen {t} RAISED", traceback.format_exc()[-800:])
snapshot("after close/reopen")
A.shot("03_end")
A.measure("loadavg end", os.getloadavg())
A.dump()
os._exit(0)
