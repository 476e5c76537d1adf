"""Where the Orientation dock's first *Check current pattern* spends its time (#15, session 15).

Runs the dock's own check job (``widgets.orientation._check_job``, the dock's default settings:
Au, 300 kV, k_max 1.2 1/A, plan step 2 deg, 3 matches, overlap "candidates") in a fresh process,
with a numba event listener (every compile, its time and signature) and cProfile. ``sample``: the
bundled gold polycrystal (uint16), ``tia``: the FEI TIA int32 file of the session-14 audit.
``cold``: the job alone; ``child``: first the plugin's warm-up child for the data's dtype
(``python -m napari_4dstem.analysis.warm DTYPE``), then the job. An empty numba cache::

    NUMBA_CACHE_DIR=$(mktemp -d) PYTHONPATH=src python benchmarks/ux_audit/s19_first_orientation_check.py tia child
"""

import os
import subprocess
import sys
import time

import numpy as np

t_proc = time.perf_counter()
which = sys.argv[1]  # sample | tia
mode = sys.argv[2]  # cold | child (warm-up child first)
import numba.core.event as ev

compiles = []


class Rec(ev.Listener):
    def on_start(self, event):
        self.t = time.perf_counter()

    def on_end(self, event):
        compiles.append(
            (
                self.t,
                time.perf_counter(),
                str(event.data.get("dispatcher", ""))[:70] + " " + str(event.data.get("args", ""))[:80],
            )
        )


ev.register("numba:compile", Rec())
from napari_4dstem.io import open_datacube

if which == "sample":
    from napari_4dstem._sample_data import sample_path
    from napari_4dstem.io import emd

    c = emd.read(sample_path("polycrystal_au"))
    from napari_4dstem.data.datacube import DataCube

    dc = next(o for o in c.values() if isinstance(o, DataCube))
else:
    dc = open_datacube("/work/shared/realdata/rosettasciio/tia/new/128x128x5-diffraction_preview.emi")
print("data", dc.shape, dc.dtype if hasattr(dc, "dtype") else "", file=sys.stderr)
if mode == "child":
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "napari_4dstem.analysis.warm", np.dtype(dc.dtype).name], check=True)
    print(f"child {time.perf_counter() - t0:.1f} s")
import dataclasses

from napari_4dstem.analysis.crystal.structure import bundled_crystal
from napari_4dstem.pipelines import ACOMParams
from napari_4dstem.widgets.orientation import _check_job

cal = dc.calibration.replace(beam_energy_kev=300.0)
acom = ACOMParams(
    crystals=("Au",),
    energy_kev=300.0,
    k_max_inv_A=1.2,
    step_deg=2.0,
    thickness_nm=10.0,
    n_matches=3,
    min_peaks=5,
    intensity_power="auto",
)
acom = dataclasses.replace(acom, overlap="candidates")
crystals = [bundled_crystal("Au")]
iy, ix = dc.shape[0] // 2, dc.shape[1] // 2
import cProfile
import pstats

pr = cProfile.Profile()
t0 = time.perf_counter()
last, last_msg = t0, "start"
steps = []
pr.enable()
job = _check_job(dc, cal, None, iy, ix, crystals, None, acom, 5)
try:
    while True:
        p = next(job)
        now = time.perf_counter()
        msg = getattr(p, "message", str(p))
        steps.append((now - last, last_msg))
        last, last_msg = now, msg
except StopIteration as s:
    out = s.value
pr.disable()
now = time.perf_counter()
steps.append((now - last, last_msg))
total = now - t0
# merge steps by message
from collections import OrderedDict

agg = OrderedDict()
for d, m in steps:
    agg.setdefault(m, [0.0, 0])
    agg[m][0] += d
    agg[m][1] += 1
print(
    f"MEASURE which={which} mode={mode} check_s={total:.2f} compiles={len(compiles)} compile_s={sum(b - a for a, b, _ in compiles):.1f} nsteps={len(steps)} maxstep={max(d for d, _ in steps):.2f} load={os.getloadavg()[0]:.1f}"
)
for m, (d, n) in agg.items():
    if d > 0.05:
        print(f"  {d:6.2f} s  x{n}  after '{m}'")
for a, b, name in compiles:
    print(f"  compile {b - a:5.2f} s at {a - t0:6.1f}  {name}")
print(
    out[1].result is not None and out[1].result.n_matches if hasattr(out[1].result, "n_matches") else "",
    out[2][1][:300],
)
pstats.Stats(pr).sort_stats("cumulative").print_stats(35)
