"""Parallax refinement cost (fit, bootstrap, jackknife) at large scans: this tree next to a revision.

The refinement (``parallax._refine_aberrations``) runs on the same bright-field stack in both
revisions: a thin-object scan's BF pixels (``--scan`` square, 0.5 A step, 100 A defocus, 64 px
detector; the stack is simulated on a 32 x 32 scan and tiled, which is all the refinement's cost
depends on), each revision in its own subprocess, alternating ``--pairs`` times. Reported: wall
time, the peak of numpy's allocations inside the refinement (tracemalloc), and the longest step
between two yields (where a Cancel waits).

    PYTHONPATH=src python benchmarks/bench_parallax_cost.py --scan 256 --pairs 2 [--rev main]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RUN = r"""
import inspect, json, sys, time, tracemalloc
import numpy as np
import scipy.optimize  # imported before the clock and tracemalloc start (both revisions import it inside)
from napari_4dstem.analysis.phase import parallax as P
from napari_4dstem.analysis.phase._common import Geometry
from napari_4dstem.analysis.phase.probe import ProbeModel
from napari_4dstem.data.calibration import Calibration

z = np.load(sys.argv[1])
imgs, k = z["imgs"], z["k"]
cal = Calibration(**json.loads(str(z["cal"])))
n, ny, nx = imgs.shape
geo = Geometry((ny, nx), (64, 64), (0.5, 0.5), float(cal.k_pixel_size), (32.0, 32.0), 0.0, False)
probe = ProbeModel.from_calibration(cal)
last = inspect.signature(P._refine_aberrations).parameters
rot = [0.0, 12.0] if "rotations_deg" in last else 12.0  # a noisy shift field's rotation
tracemalloc.start()
t0 = time.perf_counter()
# each revision's newest refinement (the function's own default version lagged its module's in session 14)
ver = dict(version=P.PARALLAX_VERSION) if "version" in last else {}
gen = P._refine_aberrations(imgs, geo, probe, k, 20.0, 5.0, 0.0, rot, **ver)
stamps, msgs = [t0], []
try:
    while True:
        msgs.append(str(next(gen)))
        stamps.append(time.perf_counter())
except StopIteration as done:
    res = done.value
stamps.append(time.perf_counter())
msgs.append("(the end)")
peak = tracemalloc.get_traced_memory()[1]
steps = np.diff(stamps)
print(json.dumps(dict(s=stamps[-1] - t0, peak_mb=peak / 2**20, max_step_s=float(np.max(steps)),
                      max_step_at=msgs[int(np.argmax(steps))], steps=len(stamps) - 1, defocus=res[0])))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scan", type=int, default=256)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--rev", default="main")
    args = ap.parse_args()
    from napari_4dstem.analysis.phase._common import Geometry, bf_pixels, iter_pixel_stack
    from napari_4dstem.analysis.phase.forward import simulate_phase_dataset
    from napari_4dstem.analysis.phase.probe import ProbeModel
    from napari_4dstem.engine.jobs import run_job

    s = simulate_phase_dataset(scan_shape=(32, 32), detector_px=64, step_A=0.5, defocus_A=100.0, seed=3)
    cal = s.datacube.calibration
    geo = Geometry.of(s.datacube)
    probe = ProbeModel.from_calibration(cal)
    iy, ix = bf_pixels(geo, probe, fraction=0.9)
    stack = run_job(iter_pixel_stack(s.datacube, iy, ix))
    imgs = np.moveaxis(stack, -1, 0).astype(np.float64)
    imgs = imgs / imgs.mean(axis=(1, 2), keepdims=True) - 1.0
    reps = -(-args.scan // 32)
    imgs = np.tile(imgs, (1, reps, reps))[:, : args.scan, : args.scan]
    k = np.stack(geo.k_of_pixels(iy, ix), 1)
    here = Path(__file__).resolve().parents[1]
    out: dict[str, list] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        calj = dict(k_pixel_size=cal.k_pixel_size, k_units="1/A", beam_energy_kev=300.0,
                    convergence_semiangle_mrad=20.0, scan_step=[0.5, 0.5], scan_units="A")  # fmt: skip
        np.savez(folder / "stack.npz", imgs=imgs, k=k, cal=json.dumps(calj))
        del imgs, stack
        (folder / "run.py").write_text(RUN)
        old = folder / "old"
        old.mkdir()
        arch = subprocess.run(["git", "-C", str(here), "archive", args.rev, "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=arch.stdout, check=True)
        for _ in range(args.pairs):
            for tag, src in (("before", old / "src"), ("after", here / "src")):
                cmd = [sys.executable, str(folder / "run.py"), str(folder / "stack.npz")]
                env = dict(os.environ, PYTHONPATH=str(src))
                r = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if r.returncode:
                    raise RuntimeError(r.stderr[-3000:])
                out[tag].append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(f"parallax refinement, {args.scan} x {args.scan} scan, {len(k)} BF pixels; {args.rev} (before) vs this tree "
          f"(after), {args.pairs} alternating pairs; load {os.getloadavg()[0]:.1f}")  # fmt: skip
    for tag, rows in out.items():
        med = {key: statistics.median(r[key] for r in rows) for key in ("s", "peak_mb", "max_step_s")}
        print(
            f"  {tag:6s}: {med['s']:.1f} s, numpy peak {med['peak_mb']:.0f} MiB, longest step between yields "
            f"{med['max_step_s']:.2f} s ({rows[0]['steps']} yields; the longest before '{rows[0]['max_step_at']}'); "
            "runs: " + ", ".join(f"{r['s']:.1f} s" for r in rows)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
