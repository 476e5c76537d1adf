"""#15: napari's first Open (a file or the sample) in a fresh, shown napari window, no dock open.

napari calls our reader / sample data on its GUI thread: prints that call's GUI-thread CPU and
wall time, the longest GUI gap around it (harness's 5 ms timer), and which of the modules napari's
start-up does not import the call imported. Usage (under Xvfb), alternating the code before and
after in fresh processes:

    PYTHONPATH=<src> python s19_first_open.py PATH|sample
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Audit

WATCH = ("dask.array", "distributed", "h5py", "hdf5plugin", "scipy.ndimage", "xml.etree.ElementTree",
         "napari_4dstem.io", "napari_4dstem.io.emd", "napari_4dstem.io.arina")  # fmt: skip

what = sys.argv[1]
A = Audit("s19_first_open")
v = A.viewer
A.process(1.0)
before = set(sys.modules)
A.act("open")
t0, c0 = time.perf_counter(), time.thread_time()
if what == "sample":
    v.open_sample("napari-4dstem", "strained_crystal")
else:
    v.open(what, plugin="napari-4dstem")
wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
A.process(1.5)
gaps = [g for g in A.gaps.gaps if g["action"] == "open"]
gw = max([g["wall_ms"] for g in gaps] or [0])
gc = max([g["cpu_ms"] for g in gaps] or [0])
new = [m for m in WATCH if m in sys.modules and m not in before]
print(
    f"RESULT {os.path.basename(what)} open_call wall {wall:.3f} cpu {cpu:.3f} max_gap_wall {gw} max_gap_cpu {gc}"
    f" imported {','.join(new) or '-'} load {os.getloadavg()[0]:.2f}",
    flush=True,
)
os._exit(0)  # skip napari's teardown (software GL)
