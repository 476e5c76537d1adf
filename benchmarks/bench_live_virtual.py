"""Live latency of the Virtual imaging widget in napari: detector edit -> updated image.

Run under a virtual screen:  xvfb-run -a python benchmarks/bench_live_virtual.py [--scan 256]
Dataset: (scan, scan, 128, 128) uint16 in memory (2 GiB for scan 256). Moves a disk and an
annulus detector N times through the widget's fields (the same path a shape drag takes) and
reports the median time until the real-space view holds the first image (the binned preview
when one is computed, else the exact image), until the real-space canvas has drawn it, and
until the exact image is in, next to the engine alone on the same detector in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scan", type=int, default=256)
    ap.add_argument("--n", type=int, default=15)
    args = ap.parse_args()
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_4dstem import Calibration
    from napari_4dstem.analysis.virtual import virtual_image
    from napari_4dstem.widgets.virtual import VirtualImagingWidget

    rng = np.random.default_rng(0)
    n = args.scan
    data = np.empty((n, n, 128, 128), np.uint16)
    for i in range(n):  # row by row: no float temporary of the whole dataset
        data[i] = rng.poisson(3.0, (n, 128, 128))
    cal = Calibration(k_pixel_size=0.02, k_units="1/A", beam_energy_kev=300, convergence_semiangle_mrad=2.0)
    viewer = napari.Viewer(show=True)
    viewer.add_image(data, name="cube", metadata={"napari_4dstem": {"calibration": cal}},
                     contrast_limits=(0, 10), **cal.napari_kwargs("4d"))
    w = VirtualImagingWidget(viewer)
    viewer.window.add_dock_widget(w)
    app = QApplication.instance()
    draws: list[float] = []  # when the real-space canvas drew
    w.realspace.canvas.events.draw.connect(lambda e: draws.append(time.perf_counter()))

    def settle(timeout=60):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            app.processEvents()
            if w._worker is None and w._pending is None and not w._timer.isActive():
                return
            time.sleep(0.001)
        raise TimeoutError

    settle()
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

        def edit_shape(i, layer=layer):  # what napari does during a drag: new data, refresh
            layer.data = [d + np.array([0.0, 1.0 if i % 2 == 0 else -1.0]) for d in layer.data]

        for how, edit in [("field edit", edit_field), ("shape drag", edit_shape)]:
            first, exact, drawn = [], [], []
            for i in range(args.n):
                b_img, b_prev = w.last_image, w.last_preview
                draws.clear()
                t0 = time.perf_counter()
                edit(i)
                t_first = None
                while w.last_image is b_img:
                    app.processEvents()
                    if t_first is None and w.last_preview is not b_prev:
                        t_first = time.perf_counter()
                    time.sleep(0.0005)
                t_end = time.perf_counter()
                t_first = t_first or t_end
                while not [t for t in draws if t > t_first] and time.perf_counter() - t_end < 2:
                    app.processEvents()
                    time.sleep(0.0005)
                first.append(t_first - t0)
                drawn.append(min([t for t in draws if t > t_first], default=np.nan) - t0)
                exact.append(t_end - t0)
                settle()
            rows.append((f"{kind} ({how})", frac, statistics.median(first),
                         statistics.median(drawn), statistics.median(exact), statistics.median(eng)))
    print(f"| detector ({n}x{n}x128x128 uint16, {data.nbytes / 2**30:.1f} GiB) | pixels | "
          "edit -> first image in the layer | ... drawn on screen | edit -> exact image | "
          "engine alone, exact |")
    print("|---|---|---|---|---|---|")
    for kind, frac, first, drawn, exact, eng in rows:
        print(f"| {kind} | {frac * 100:.1f} % | {first * 1e3:.0f} ms | {drawn * 1e3:.0f} ms | "
              f"{exact * 1e3:.0f} ms | {eng * 1e3:.0f} ms |")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
