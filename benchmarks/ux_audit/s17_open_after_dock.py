"""Audit defect 11 (UX point 1): napari's Open Sample with the Virtual imaging dock already open.

napari calls the plugin's sample data (and readers) on its GUI thread. Prints the GUI thread's wall
and CPU time in the open_sample call and the longest GUI gap (harness's recorder) during it. The
user is given 8 s with the dock before opening (a background preload, tried and reverted, imported then).
Before/after: run it with PYTHONPATH pointing at each source tree, alternating, several times.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Audit

A = Audit("s17_open_after_dock")
v = A.viewer
A.act("dock")
A.dock("Virtual imaging")
A.process(8.0)  # the user looks at the dock
A.act("open sample")
t0, c0 = time.perf_counter(), time.thread_time()
v.open_sample("napari-4dstem", "strained_crystal")
wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
A.process(1.5)
gaps = [g for g in A.gaps.gaps if g["action"] == "open sample"]
gw = max([g["wall_ms"] for g in gaps] or [0])
gc = max([g["cpu_ms"] for g in gaps] or [0])
print(
    f"RESULT open_sample_call wall {wall:.3f} cpu {cpu:.3f} max_gap_wall {gw} max_gap_cpu {gc}"
    f" load {os.getloadavg()[0]:.2f}",
    flush=True,
)
os._exit(0)  # skip napari's teardown (software GL)
