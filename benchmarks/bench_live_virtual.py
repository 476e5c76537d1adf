"""Live latency of the Virtual imaging widget in napari: detector edit -> updated image.

Run under a virtual screen:  xvfb-run -a python benchmarks/bench_live_virtual.py [--scan 256]
Dataset: (scan, scan, 128, 128) uint16 in memory (2 GiB for scan 256). Moves a disk and an
annulus detector N times through the widget's fields (the same path a shape drag takes) and
reports the median time until the real-space view holds the first image (the binned preview
when one is computed, else the exact image), until the real-space canvas has drawn it, and
until the exact image is in, next to the engine alone on the same detector in the same run.

Three kinds of edit: "field edit" types a new centre into the widget; "mouse drag" sends Qt
mouse events to napari's canvas (press on the selected detector shapes once, then one move of
a few screen pixels per edit, the button held), so napari's own select-mode drag moves the
shapes exactly as for a user; "shape data set" assigns ``layer.data`` (a full rebuild of the
layer, heavier than a drag, kept for comparison with earlier tables).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


class _MouseDrag:
    """Qt mouse events on napari's canvas: a select-mode drag of all the detector shapes."""

    def __init__(self, viewer, layer, app):
        self.viewer, self.layer, self.app = viewer, layer, app
        self.canvas = viewer.window._qt_viewer.canvas  # benchmark only: napari's vispy canvas
        self.widget = self.canvas.native
        self.pos = None

    def _send(self, kind, pos, button, buttons):
        from qtpy.QtCore import QEvent, QPoint, QPointF, Qt
        from qtpy.QtGui import QMouseEvent

        qt_kind = {
            "press": QEvent.Type.MouseButtonPress,
            "move": QEvent.Type.MouseMove,
            "release": QEvent.Type.MouseButtonRelease,
        }[kind]
        left = Qt.MouseButton.LeftButton
        ev = QMouseEvent(
            qt_kind,
            QPointF(*pos),
            QPointF(self.widget.mapToGlobal(QPoint(*map(int, pos)))),
            left if button else Qt.MouseButton.NoButton,
            left if buttons else Qt.MouseButton.NoButton,
            Qt.KeyboardModifier.NoModifier,
        )
        self.app.sendEvent(self.widget, ev)

    def press(self):
        layer = self.layer
        self.viewer.layers.selection.active = layer
        layer.mode = "select"
        layer.selected_data = set(range(len(layer.data)))
        # the canvas position of the shapes' centre (world y, x -> canvas x, y)
        centre = layer.data_to_world(np.mean(np.concatenate(layer.data), axis=0))[-2:]
        view = self.canvas.view
        xy = (view.transform * view.scene.transform).map([centre[1], centre[0]])[:2]
        self.pos = [float(xy[0]), float(xy[1])]
        self._send("move", self.pos, False, False)
        self._send("press", self.pos, True, True)
        self.app.processEvents()

    def move(self, dx: float):
        self.pos[0] += dx
        self._send("move", self.pos, False, True)

    def release(self):
        self._send("release", self.pos, True, False)
        self.app.processEvents()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scan", type=int, default=256)
    ap.add_argument("--n", type=int, default=15)
    args = ap.parse_args()
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_4dstem import Calibration
    from napari_4dstem.analysis.virtual.images import virtual_image
    from napari_4dstem.widgets.virtual import VirtualImagingWidget

    rng = np.random.default_rng(0)
    n = args.scan
    data = np.empty((n, n, 128, 128), np.uint16)
    for i in range(n):  # row by row: no float temporary of the whole dataset
        data[i] = rng.poisson(3.0, (n, 128, 128))
    cal = Calibration(k_pixel_size=0.02, k_units="1/A", beam_energy_kev=300, convergence_semiangle_mrad=2.0)
    viewer = napari.Viewer(show=True)
    viewer.add_image(
        data,
        name="cube",
        metadata={"napari_4dstem": {"calibration": cal}},
        contrast_limits=(0, 10),
        **cal.napari_kwargs("4d"),
    )
    w = VirtualImagingWidget(viewer)
    viewer.window.add_dock_widget(w)
    app = QApplication.instance()
    draws: list[float] = []  # when the Real space canvas drew
    shown: list[tuple[float, bool]] = []  # when the live image got an image; preview?
    set_image = w.realspace.set_image

    def timed_set_image(img, *a, **kw):
        shown.append((time.perf_counter(), "preview" in (kw.get("title") or "")))
        return set_image(img, *a, **kw)

    w.realspace.set_image = timed_set_image

    def settle(timeout=60):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            app.processEvents()
            if w._worker is None and w._pending is None and not w._timer.isActive():
                return
            time.sleep(0.001)
        raise TimeoutError

    settle()
    from napari_4dstem.widgets._multiview import draw_events
    from napari_4dstem.widgets._results import results_viewer

    # the live image is a layer of the Real space canvas (made with the first image)
    draw_events(results_viewer(viewer)).connect(lambda e: draws.append(time.perf_counter()))
    t_wait = time.perf_counter()
    while w._preview is None and time.perf_counter() - t_wait < 120:  # binned copy for previews
        app.processEvents()
        time.sleep(0.01)
    print(f"binned preview ready after {time.perf_counter() - t_wait:.1f} s more")
    rows = []
    for kind, r_in, r_out in [("Disk", 0.0, 6.0), ("Annulus", 12.0, 40.0)]:
        w.kind_combo.setCurrentText(kind)
        w.r_in.setValue(r_in)
        w.r_out.setValue(r_out)
        settle()
        eng = []
        for _ in range(5):
            t1 = time.perf_counter()
            virtual_image(data, w._last_detector)
            eng.append(time.perf_counter() - t1)
        frac = w._last_detector.fraction(data.shape[2:])
        layer = viewer.layers["virtual detector"]

        def edit_field(i):
            w.cx.setValue(w.cx.value() + (1.0 if i % 2 == 0 else -1.0))

        def edit_shape(i, layer=layer):  # a full rebuild of the layer's shapes
            layer.data = [d + np.array([0.0, 1.0 if i % 2 == 0 else -1.0]) for d in layer.data]

        drag = _MouseDrag(viewer, layer, app)

        def edit_drag(i, drag=drag):  # one mouse move of napari's select-mode drag
            drag.move(4.0 if i % 2 == 0 else -4.0)

        for how, edit in [("field edit", edit_field), ("mouse drag", edit_drag), ("shape data set", edit_shape)]:
            if how == "mouse drag":
                drag.press()
            first, exact, drawn = [], [], []
            for i in range(args.n):
                b_img = w.last_image
                draws.clear()
                shown.clear()
                t0 = time.perf_counter()
                edit(i)
                while w.last_image is b_img:
                    app.processEvents()
                    if time.perf_counter() - t0 > 30:
                        raise TimeoutError(f"{kind} ({how}): no new image")
                    time.sleep(0.0005)
                t_first, t_end = shown[0][0], [t for t, preview in shown if not preview][-1]
                while not [t for t in draws if t > t_first] and time.perf_counter() - t_end < 2:
                    app.processEvents()
                    time.sleep(0.0005)
                first.append(t_first - t0)
                drawn.append(min([t for t in draws if t > t_first], default=np.nan) - t0)
                exact.append(t_end - t0)
                settle()
            if how == "mouse drag":
                drag.release()
                settle()
            rows.append(
                (
                    f"{kind} ({how})",
                    frac,
                    statistics.median(first),
                    statistics.median(drawn),
                    statistics.median(exact),
                    statistics.median(eng),
                )
            )
    print(
        f"| detector ({n}x{n}x128x128 uint16, {data.nbytes / 2**30:.1f} GiB) | pixels | "
        "edit -> first image in the layer | ... drawn on screen | edit -> exact image | "
        "engine alone, exact |"
    )
    print("|---|---|---|---|---|---|")
    for kind, frac, first, drawn, exact, eng in rows:
        print(
            f"| {kind} | {frac * 100:.1f} % | {first * 1e3:.0f} ms | {drawn * 1e3:.0f} ms | "
            f"{exact * 1e3:.0f} ms | {eng * 1e3:.0f} ms |"
        )
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
