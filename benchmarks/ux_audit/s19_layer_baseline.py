"""Session 15 audit, S8 baseline: GUI CPU of napari alone adding N small image layers (24 x 24 float,
diverging colormap, symmetric limits, as a strain map) to a shown viewer, one call each, as
`_results.show_map` adds our maps; printed per layer (first and the rest). Run under xvfb-run."""
import os
import sys
import time

import numpy as np
import napari
from qtpy.QtWidgets import QApplication

app = QApplication.instance() or QApplication([])
v = napari.Viewer(show=True)
v.add_image(np.zeros((24, 24)), name="base")
for _ in range(20):
    app.processEvents()
    time.sleep(0.01)
rng = np.random.default_rng(0)
for rnd in range(2):
    cpus = []
    for k in range(5):
        c0, t0 = time.thread_time(), time.perf_counter()
        v.add_image(rng.normal(size=(24, 24)), name=f"map{rnd}_{k}", colormap="PiYG", contrast_limits=(-1, 1))
        app.processEvents()
        cpus.append((round((time.thread_time() - c0) * 1e3), round((time.perf_counter() - t0) * 1e3)))
    print(f"round {rnd}: GUI CPU / wall ms per added layer {cpus}; load {os.getloadavg()[0]:.1f}")
sys.stdout.flush()
os._exit(0)
