"""#15 follow-ups of the audit (rows 11 and 15): GUI-thread cost of (a) drawing a 1024 x 1024 sum
image step on the Real space canvas (LiveImage.set_cover) with its display made on the GUI thread
vs made ready in a worker (the same code, same run; napari alone setting the layer's data as the
floor), and (b) the Simulation dock's Preview shown (first: six layers added; later: updated).
Run from the checkout (either code: PYTHONPATH picks it):
    PYTHONPATH=src nice -n 10 xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python benchmarks/ux_audit/s9_gui_stalls.py
PART=live, sim or drag runs one part; N (default 5) repeats."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from harness import Audit

A = Audit("s9")
v = A.viewer
PART = os.environ.get("PART", "live,sim,drag")
N = int(os.environ.get("N", "5"))
A.measure("loadavg start", os.getloadavg())


def med(x):
    return round(float(np.median(x)), 1)


if "live" in PART:
    from napari_4dstem.data.calibration import Calibration
    from napari_4dstem.widgets import _realspace as rs
    from napari_4dstem.widgets._realspace import LiveImage

    li = LiveImage(v)
    cal = Calibration()
    rng = np.random.default_rng(7)
    base = (1000 + 50 * rng.standard_normal((1024, 1024))).astype(np.float32)
    li.set_image(base, cal, clim=(800.0, 1200.0))  # the live image under the cover
    A.wait(lambda: not getattr(li, "preparing", False), 30)
    A.process(0.5)
    have_prep = hasattr(rs, "prepare_display")
    for scale in ("Lin", "Log"):
        li.scale_combo.setCurrentText(scale)
        A.process(0.3)
        out = {"gui": [], "prepared": [], "napari_floor": []}
        for k in range(N):
            step = base.copy()
            step[(k + 1) * 1024 // (N + 1):] = np.nan  # rows still to come
            lim = (float(np.nanmin(step)), float(np.nanmax(step)))
            c0 = time.thread_time()
            li.set_cover("sum image", step, cal, clim=lim)  # display made on the GUI thread
            out["gui"].append((time.thread_time() - c0) * 1e3)
            A.process(0.1)
            if have_prep:
                got = []
                th = threading.Thread(target=lambda: got.append(rs.prepare_display(step, li.display_snapshot, lim)))
                th.start()
                th.join()  # the worker's part (not on the GUI thread)
                c0 = time.thread_time()
                li.set_cover("sum image", step, cal, clim=lim, prepared=got[0])
                out["prepared"].append((time.thread_time() - c0) * 1e3)
                A.process(0.1)
            layer = li.viewer(create=False).layers["sum image"]
            c0 = time.thread_time()
            layer.data = li._displayed["sum image"][0]  # napari alone: the layer's data set
            out["napari_floor"].append((time.thread_time() - c0) * 1e3)
            A.process(0.1)
        A.measure(f"1024x1024 sum step, {scale}: GUI CPU ms median (gui-made, worker-prepared, napari data set)",
                  (med(out["gui"]), med(out["prepared"]) if out["prepared"] else None, med(out["napari_floor"])),
                  all=out)

if "sim" in PART:
    sw = A.dock("Simulation and training data")
    A.process(1.0)
    for k in range(N):
        sw.preview_index.setValue(k)
        prev = sw.preview_result
        ng = len(A.gaps.gaps)
        A.act(f"preview {k}")
        t0 = time.perf_counter()
        sw.preview()
        A.wait(lambda: sw.preview_result is not None and sw.preview_result is not prev
               and sw.preview_result[0].index == k and not sw.sim_jobs.busy, 600)
        t_shown = time.perf_counter() - t0
        A.process(0.5)
        gaps = [g for g in A.gaps.gaps[ng:] if g["action"] == f"preview {k}"]
        worst = max(gaps, key=lambda g: g["wall_ms"]) if gaps else {"wall_ms": 0, "cpu_ms": 0}
        A.measure(f"sim preview {k}: click->shown s, longest GUI gap (wall, cpu) ms, GUI CPU in gaps > 50 ms",
                  (round(t_shown, 2), (worst["wall_ms"], worst["cpu_ms"]), round(sum(g["cpu_ms"] for g in gaps), 1)))
if "drag" in PART:
    # the scan step on the bundled sample (HDF5, gzip, 8 x 8-pattern chunks): the layer as this code
    # opens it, the same file through one 32 MiB dask chunk (the old layer's array), and napari
    # alone on the same values in RAM; one visible at a time, the scan stepped as a drag does
    from napari_4dstem.data.datacube import DataCube

    v.open_sample("napari-4dstem", "strained_crystal")
    cube = v.layers["strained_crystal"]
    old = DataCube(cube.data).to_dask((32, 32))  # the old chunking: one chunk of the 32 x 32 scan
    kw = {"scale": cube.scale, "contrast_limits": cube.contrast_limits, "colormap": "inferno"}
    v.add_image(old, name="one 32 MiB chunk", visible=False, **kw)
    v.add_image(np.asarray(cube.data), name="in RAM", visible=False, **kw)
    A.process(1.0)
    canvas = v.window._qt_viewer.canvas._scene_canvas
    draws = []
    canvas.events.draw.connect(lambda e: draws.append(time.perf_counter()))
    names = [cube.name, "one 32 MiB chunk", "in RAM"]
    res = {n: [] for n in names}
    for rnd in range(N):
        for n in names:
            for m in names:
                v.layers[m].visible = m == n
            A.process(0.3)
            for k in range(12):
                iy, ix = (rnd * 5 + k * 7) % 32, (rnd * 3 + k * 13) % 32
                n0 = len(draws)
                c0, t0 = time.thread_time(), time.perf_counter()
                v.dims.current_step = (iy, ix) + tuple(v.dims.current_step[2:])
                cpu = time.thread_time() - c0
                A.wait(lambda: len(draws) > n0, 3)
                res[n].append(((time.perf_counter() - t0) * 1e3, cpu * 1e3))
                A.process(0.012)
    for n in names:
        a = np.array(res[n])
        A.measure(f"scan step -> canvas drawn, {n}: wall median / p90 / max ms, GUI CPU of the step median ms",
                  (med(a[:, 0]), round(float(np.percentile(a[:, 0], 90)), 1), round(float(a[:, 0].max()), 1), med(a[:, 1])),
                  chunks=str(getattr(v.layers[n].data, "chunksize", None)))
A.measure("loadavg end", os.getloadavg())
A.dump()
os._exit(0)
