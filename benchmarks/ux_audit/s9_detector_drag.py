"""Audit defect 7 again (UX point 7): image updates per second during a REAL mouse drag of the
detector on the main canvas, next to napari's own redraw rate dragging a plain Shapes ellipse of the
same size in the same window and run.

The mouse is modelled as a user's: a move every 16 ms of wall time along a circle of radius 6 px
around the detector's centre for DRAG_S seconds; when the GUI thread is busy the moves a real mouse
would have sent in between are coalesced (Qt compresses mouse moves), so the move rate drops with
a blocked GUI as it does for a user. Counted during the drag: the dock's images handed to the Real
space canvas (``LiveImage.set_image``, wrapped here, src untouched), Real space canvas draws after
a new image (= image updates on screen), main canvas draws, moves delivered; after the release,
the time until the exact image of the released detector is in.

Usage: s9_detector_drag.py sample|ram|lazy   (ram: 128x128x128x128 uint16 in RAM, 512 MiB,
/tmp/ux_audit_lazy.npy loaded; lazy: the same file memory-mapped through the plugin's reader).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from harness import Audit, qt_mouse, real_space_model

MODE = sys.argv[1] if len(sys.argv) > 1 else "sample"
DRAG_S = float(os.environ.get("DRAG_S", "3.0"))
REPEATS = int(os.environ.get("REPEATS", "3"))
PATH = "/tmp/ux_audit_lazy.npy"

A = Audit(f"s9_{MODE}")
v = A.viewer
from napari_4dstem.widgets._multiview import _QT
from napari_4dstem.widgets.virtual import DETECTOR_LAYER

A.measure("loadavg start", os.getloadavg())
A.act(f"open {MODE}")
if MODE == "sample":
    v.open_sample("napari-4dstem", "strained_crystal")
    cube = v.layers["strained_crystal"]
elif MODE == "ram":
    from napari_4dstem._layers import datacube_layer
    from napari_4dstem.data.datacube import DataCube

    arr = np.load(PATH)  # in RAM
    data, kw, _ = datacube_layer(DataCube(arr))
    cube = v.add_image(data, **kw)
else:
    v.open(PATH, plugin="napari-4dstem")
    cube = [lyr for lyr in v.layers if lyr.ndim == 4][0]
A.measure("dataset", cube.name, shape=tuple(cube.data.shape), type=type(cube.data).__name__)

A.act("virtual dock")
w = A.dock("Virtual imaging")
ok = A.wait(lambda: w.last_image is not None and w._worker is None and w.presets_ready, 300)
A.measure("dock -> exact image and presets ready s", ok)
t0 = time.perf_counter()
ok2 = A.wait(lambda: DETECTOR_LAYER in v.layers, 300)
A.measure("then -> detector outline layer present s", ok2)
A.process(1.0)
rs = real_space_model(v)

shown = []  # perf_counter of each image handed to the Real space canvas
orig_set_image = w.realspace.set_image


def counting_set_image(*a, **k):
    shown.append(time.perf_counter())
    return orig_set_image(*a, **k)


w.realspace.set_image = counting_set_image
main_cv = v.window._qt_viewer.canvas
main_draws, rs_draws = [], []
main_cv._scene_canvas.events.draw.connect(lambda e: main_draws.append(time.perf_counter()))
_QT[rs]().qt_viewer.canvas._scene_canvas.events.draw.connect(lambda e: rs_draws.append(time.perf_counter()))
mc = main_cv.native
ks = np.asarray(cube.scale[2:], float)


def w2c(yx_px):
    tr = main_cv.view.transform * main_cv.view.scene.transform
    x, y = tr.map([float(yx_px[1] * ks[1]), float(yx_px[0] * ks[0])])[:2]
    return float(x), float(y)


def drag(layer_sel, c0, label):
    """A user's drag of the shape under ``c0`` (detector px): returns rates."""
    v.layers.selection.active = layer_sel
    layer_sel.mode = "select"
    A.process(0.3)
    A.act(label)
    n_shown, n_main, n_rs = len(shown), len(main_draws), len(rs_draws)
    gaps0 = len(A.gaps.gaps)
    qt_mouse(mc, "press", w2c(c0))
    A.process(0.02)
    t0 = time.perf_counter()
    moves = 0
    pos = w2c(c0)
    while True:
        t = time.perf_counter() - t0
        if t > DRAG_S:
            break
        ang = 2 * np.pi * t / 1.5
        yx = (c0[0] + 6 * np.sin(ang), c0[1] + 6 * (1 - np.cos(ang)))
        pos = w2c(yx)
        qt_mouse(mc, "move", pos, buttons=True)
        moves += 1
        nxt = t0 + (int(t / 0.016) + 1) * 0.016
        while time.perf_counter() < nxt:
            A.app.processEvents()
            time.sleep(0.001)
    dur = time.perf_counter() - t0
    t_rel = time.perf_counter()
    qt_mouse(mc, "release", pos)
    s_images = [x for x in shown[n_shown:] if x <= t_rel]
    # RS canvas draws that show a new image: first draw after each handed-over image
    rs_new = 0
    rd = [x for x in rs_draws[n_rs:]]
    for i, ts in enumerate(s_images):
        nxt_img = s_images[i + 1] if i + 1 < len(s_images) else t_rel
        if any(ts <= d < nxt_img for d in rd):
            rs_new += 1
    out = {
        "drag_s": round(dur, 2),
        "moves_sent": moves,
        "moves_per_s": round(moves / dur, 1),
        "images_handed_per_s": round(len(s_images) / dur, 2),
        "images_on_screen_per_s": round(rs_new / dur, 2),
        "main_canvas_draws_per_s": round(len([d for d in main_draws[n_main:] if d <= t_rel]) / dur, 2),
        "gui_gaps_over_50ms": len(A.gaps.gaps) - gaps0,
        "gap_wall_ms_max": max([g["wall_ms"] for g in A.gaps.gaps[gaps0:]] or [0]),
    }
    return out, t_rel


res = {"ours": [], "napari": []}
for rep in range(REPEATS):
    # napari alone: a plain ellipse of the detector's size on its own Shapes layer, same path
    det = w._last_detector
    c = tuple(float(x) for x in det.center_px)
    r = float(getattr(det, "radius_px", 8.0))
    base_c = (c[0] - 2 * r - 10, c[1])  # beside the detector, on the pattern
    ell = np.array([[base_c[0] - r, base_c[1] - r], [base_c[0] + r, base_c[1] + r]])
    dl0 = v.layers[DETECTOR_LAYER]
    base = v.add_shapes([ell], shape_type="ellipse", name="napari baseline ellipse", edge_color="white",
                        face_color=[1, 1, 1, 0.1], scale=tuple(dl0.scale), units=tuple(dl0.units))
    A.process(0.5)
    out, _ = drag(base, base_c, f"napari baseline drag {rep}")
    A.wait(lambda: False, 0.5)
    v.layers.remove(base)
    A.process(0.5)
    res["napari"].append(out)
    A.measure(f"NAPARI plain ellipse drag rep {rep}", out, load=os.getloadavg()[0])

    dl = v.layers[DETECTOR_LAYER]
    c = tuple(float(x) for x in w._last_detector.center_px)
    out, t_rel = drag(dl, c, f"detector drag {rep}")
    # after the release: exact image of the released detector
    def done():
        return w._worker is None and w._pending is None and w.last_image is not None and shown and shown[-1] > t_rel
    ex = A.wait(done, 60)
    out["release_to_last_image_s"] = round(ex, 3) if ex is not None else None
    out["released_detector"] = [round(float(x), 2) for x in w._last_detector.center_px]
    out["last_image_params_detector"] = (w.last_image.params.get("detector", {}) or {}).get("center_px") if w.last_image is not None else None
    res["ours"].append(out)
    A.measure(f"OURS detector drag rep {rep}", out, load=os.getloadavg()[0])
    A.process(1.0)
    # reset the detector to where it started (R key handler's method) so every rep drags the same
    w.reset()
    A.wait(lambda: w._worker is None and w._pending is None, 60)
    A.process(1.0)


def med(key, who):
    vals = [o[key] for o in res[who] if o.get(key) is not None]
    return round(float(np.median(vals)), 2) if vals else None


summary = {k: {"ours": med(k, "ours"), "napari": med(k, "napari")} for k in
           ("moves_per_s", "images_handed_per_s", "images_on_screen_per_s", "main_canvas_draws_per_s",
            "gui_gaps_over_50ms", "gap_wall_ms_max")}
summary["release_to_last_image_s"] = med("release_to_last_image_s", "ours")
A.measure(f"SUMMARY {MODE} (median of {REPEATS})", summary, load=os.getloadavg())
A.shot("after")
A.dump()
os._exit(0)
