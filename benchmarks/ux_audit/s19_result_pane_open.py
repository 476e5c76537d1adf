"""#15: opening the Result pane dock beside Virtual imaging and Real space (the sample open).

Prints ``add_plugin_dock_widget("Result pane")``'s GUI-thread CPU and wall time and the longest GUI
gap (harness's 5 ms timer). Alternate the code before and after in fresh processes:

    PYTHONPATH=<src> python s19_result_pane_open.py
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Audit

A = Audit("s19_result_pane_open")
v = A.viewer
A.act("sample")
v.open_sample("napari-4dstem", "strained_crystal")
A.dock("Virtual imaging")
A.process(6.0)  # the first image, the presets
A.act("pane")
t0, c0 = time.perf_counter(), time.thread_time()
v.window.add_plugin_dock_widget("napari-4dstem", "Result pane")
wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
A.process(1.0)
gaps = [g for g in A.gaps.gaps if g["action"] == "pane"]
gw = max([g["wall_ms"] for g in gaps] or [0])
gc = max([g["cpu_ms"] for g in gaps] or [0])
print(
    f"RESULT pane_open wall {wall:.3f} cpu {cpu:.3f} max_gap_wall {gw} max_gap_cpu {gc} load {os.getloadavg()[0]:.2f}",
    flush=True,
)
os._exit(0)
