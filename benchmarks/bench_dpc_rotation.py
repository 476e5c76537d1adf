"""UX point 11: a rotation change in the Calibration and DPC dock -> the DPC maps on the Real
space canvas, from the cached centre of mass (no pass over the data), in a shown napari window.

Run under a virtual screen:  xvfb-run -a python benchmarks/bench_dpc_rotation.py [--scan 256] [--n 10]
Dataset: (scan, scan, 24, 24) float32 in RAM, Poisson counts (the maps' cost depends on the scan
size, not on the content or the detector). Each figure is from typing a rotation until the dock
holds the maps of that angle (they are set in the slot that takes the result) and the event
loop is idle again (every canvas painted). Budget: <= 200 ms. The machine is shared (2 cores):
compare rows of one run only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scan", type=int, default=256)
    ap.add_argument("--n", type=int, default=10)
    args = ap.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_4dstem import Calibration
    from napari_4dstem.widgets._results import set_results_viewer
    from napari_4dstem.widgets.dpc import CalibrationDPCWidget

    rng = np.random.default_rng(0)
    data = rng.poisson(5.0, size=(args.scan, args.scan, 24, 24)).astype(np.float32)
    main_v, real_v = napari.Viewer(show=True), napari.Viewer(show=True)
    set_results_viewer(main_v, real_v)
    app = QApplication.instance()
    main_v.add_image(data, name="cube", metadata={"napari_4dstem": {"calibration": Calibration()}})
    w = CalibrationDPCWidget(main_v)
    main_v.window.add_dock_widget(w)

    def wait(cond, timeout_s=120.0):
        end = time.perf_counter() + timeout_s
        while not cond() and time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.0005)
        app.processEvents()

    w.compute_com()
    wait(lambda: w.result is not None and w._worker is None and not w._dpc_runner.busy)
    took = []
    for i in range(args.n):
        angle = 10.0 + 13.0 * (i + 1)
        time.sleep(0.05)
        app.processEvents()
        t0 = time.perf_counter()
        w.rotation.setValue(angle)
        wait(lambda a=angle: w.result.rotation_deg == a)
        took.append(time.perf_counter() - t0)
    xs = sorted(took)
    q = statistics.quantiles(xs, n=4)
    print(
        f"scan {args.scan}x{args.scan}: rotation change -> DPC maps {1e3 * statistics.median(xs):.0f} ms "
        f"median ({1e3 * q[0]:.0f}-{1e3 * q[2]:.0f}), all {[round(1e3 * x) for x in took]} ms"
    )
    main_v.close()
    real_v.close()


if __name__ == "__main__":
    main()
