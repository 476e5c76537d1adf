"""The UX latency rows of ../shared/UX.md, measured through the real widgets in a shown napari
window, next to napari alone doing the same thing in the same run.

Run under a virtual screen:  xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/bench_gui.py
[--scan 64] [--n 15] [--lazy] [--window 1600x900] [--crosshair-ab]
Dataset: (scan, scan, 128, 128) uint16 in RAM (or, with ``--lazy``, a memory-mapped .npy file)
with a lattice of disks (the strained-crystal sample's generator; scans above 64 x 64 tile a
64 x 64 simulation). Each row is the median (and the 25-75 % range) of ``--n`` repetitions of
one user action, timed from the action until the event loop is idle again (Qt has run every
slot and painted every canvas), so the figure is what the user waits for:

- display-only change: the real-space view's Lin/Log switch | napari alone: a layer's colormap
- scan step -> pattern in RAM (Virtual imaging dock open) | napari alone: the same dims step
- scan step with the Bragg dock live (detection in a worker) | napari alone: the same step;
  also the GUI thread's own CPU time per step (the stall detector's measure; steadier than
  wall time on a loaded machine) for both docks and napari alone
- preset switch (precomputed) | the same preset computed on demand (the cache cleared), and
  napari alone setting a Shapes layer's data to a detector outline; the GUI CPU of a switch
- busy indicator after starting a job: Bragg "Find disks in all patterns" click -> Cancel
  enabled and a progress bar shown

The machine is shared (2 cores, other jobs running): compare rows of one run only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _idle(app, settle_s: float = 0.0) -> None:
    """Run the event loop until nothing is pending (and ``settle_s`` more)."""
    end = time.perf_counter() + settle_s
    app.processEvents()
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.001)
    app.processEvents()


def _stats(xs) -> str:
    xs = sorted(xs)
    q = statistics.quantiles(xs, n=4) if len(xs) >= 4 else [xs[0], statistics.median(xs), xs[-1]]
    return f"{1e3 * statistics.median(xs):8.1f} ms  ({1e3 * q[0]:.1f}-{1e3 * q[2]:.1f})"


def _time(app, action, n, until=None, timeout_s=30.0, proc=None):
    """Wall and GUI-thread CPU times of ``n`` actions (and, into the list ``proc``, the whole
    process's CPU time: the GUI thread plus the software rasteriser's threads)."""
    out, cpu = [], []
    for i in range(n):
        t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
        action(i)
        if until is not None:
            end = t0 + timeout_s
            while not until() and time.perf_counter() < end:
                app.processEvents()
                time.sleep(0.0005)
        _idle(app)
        out.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        if proc is not None:
            proc.append(time.process_time() - p0)
    return out, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scan", type=int, default=64)
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument(
        "--lazy",
        action="store_true",
        help="hold the scan as a memory-mapped .npy file (as napari-4dstem opens one), not in RAM",
    )
    ap.add_argument("--window", default="1600x900", help="the main window's size for every row, WxH pixels")
    ap.add_argument("--no-bragg", action="store_true", help="skip the Bragg dock rows (and the busy indicator)")
    ap.add_argument(
        "--crosshair-ab",
        action="store_true",
        help="also time scan steps with the Qt cross and the vispy cross in alternating blocks",
    )
    args = ap.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_4dstem.simulation.samples import make_strained_crystal

    # scans above 64 x 64 tile a 64 x 64 simulation (the latencies do not depend on the content)
    base = min(args.scan, 64)
    s = make_strained_crystal(scan_shape=(base, base))
    data = np.asarray(s.datacube.data)
    if args.scan > base:
        reps = -(-args.scan // base)
        data = np.tile(data, (reps, reps, 1, 1))[: args.scan, : args.scan]
    cal = s.datacube.calibration
    probe = np.asarray(s.probe.data)
    where = "in RAM"
    if args.lazy:
        import tempfile
        from pathlib import Path

        from napari_4dstem.data._blockread import checked_view

        path = Path(tempfile.mkdtemp()) / "cube.npy"
        np.save(path, data)
        data = checked_view(np.load(path, mmap_mode="r"))  # what the reader gives napari
        where = f"memory-mapped from {path}"
    print(f"dataset {data.shape} {data.dtype}, {data.nbytes / 2**20:.0f} MiB {where}; n = {args.n}")
    rows = []

    viewer = napari.Viewer(show=True)
    win_w, win_h = (int(v) for v in args.window.lower().split("x"))

    def fit_window(w=None, h=None):
        # Qt composes the whole window (its GL canvases and the widgets) at each repaint, so a
        # step's cost grows with the window's area; opening the docks grows the window to their
        # minimum sizes (1089 x 630 -> 2393 x 1028 on a 640 x 480 screen), so napari alone is
        # measured again at the end in the window size the docks had
        viewer.window._qt_window.resize(w or win_w, h or win_h)
        _idle(app, 0.3)
        size = viewer.window._qt_window.size()
        return f"{size.width()} x {size.height()}"

    app = QApplication.instance()
    meta = {"napari_4dstem": {"calibration": cal}}
    cube = viewer.add_image(data, name="cube", metadata=meta, **cal.napari_kwargs("4d"))
    viewer.add_image(probe, name="probe", visible=False, **cal.napari_kwargs("k"))
    viewer.layers.selection.active = cube
    _idle(app, 1.0)
    print(f"window {fit_window()} (napari alone)")
    ny, nx = data.shape[:2]

    def step(i):  # both scan axes in one event, as a drag on the Real space canvas moves them
        viewer.dims.set_point((0, 1), (((7 * i) % ny) * cube.scale[0], ((3 * i + 1) % nx) * cube.scale[1]))

    # napari alone: dims steps, colormap changes
    alone_proc: list = []
    alone_step, alone_cpu = _time(app, step, args.n, proc=alone_proc)
    cmaps = ["gray", "magma"]
    alone_disp, _ = _time(app, lambda i: setattr(cube, "colormap", cmaps[i % 2]), args.n)
    alone_gamma, _ = _time(app, lambda i: setattr(cube, "gamma", (0.3, 0.6)[i % 2]), args.n)
    cube.gamma = 1.0
    alone_clim, _ = _time(app, lambda i: setattr(cube, "contrast_limits", (0.0, (400.0, 500.0)[i % 2])), args.n)
    cube.reset_contrast_limits()
    # napari alone: a Shapes layer's data set to a detector outline (a disk or an annulus, as the
    # presets alternate), what a preset switch asks of napari on the pattern's canvas
    outline = viewer.add_shapes(name="outline", edge_color="cyan", face_color=[0, 1, 1, 0.15], **cal.napari_kwargs("k"))
    viewer.layers.selection.active = cube
    kc = np.array(data.shape[2:]) / 2

    def ellipse(r):
        return np.array([kc - r, [kc[0] - r, kc[1] + r], kc + r, [kc[0] + r, kc[1] - r]])

    def set_outline(i):
        r = 10.0 + 4 * (i % 5)
        outline.data = [(ellipse(r), "ellipse")] if i % 2 else [(ellipse(r + 20), "ellipse"), (ellipse(r), "ellipse")]

    _idle(app, 0.2)
    alone_outline, alone_outline_cpu = _time(app, set_outline, args.n)
    outline.visible = False  # (removing it here crashed the next draw in software OpenGL)
    viewer.layers.selection.active = cube
    _idle(app, 0.2)

    # Virtual imaging dock
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    end = time.perf_counter() + 120
    # ready: presets stored, no job, and (in-RAM data over 256 MiB) the binned preview built: its
    # worker's progress bar repaints napari's activity dock (about 40 ms a tick) during the steps
    big = isinstance(data, np.ndarray) and not args.lazy and data.nbytes >= 256 * 2**20

    def ready():
        return w.presets_ready and w._worker is None and (not big or getattr(w, "_preview", None) is not None)

    while not ready() and time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)
    _idle(app, 0.5)
    print(f"window {fit_window()} (Virtual imaging and Real space docks open)")
    docked = viewer.window._qt_window.size()
    scales = ["Log", "Lin"]
    ours_disp, _ = _time(app, lambda i: w.realspace.scale_combo.setCurrentText(scales[i % 2]), args.n)
    rows.append(("display-only change (<= 16 ms)", ours_disp, "napari colormap", alone_disp))
    li = w.realspace
    if hasattr(li, "histogram"):  # Power (napari's gamma) and the histogram's contrast handle
        li.scale_combo.setCurrentText("Power")
        _idle(app, 0.2)
        ours_gamma, _ = _time(app, lambda i: li.gamma.setValue((0.3, 0.6)[i % 2]), args.n)
        rows.append(("Power exponent change (<= 16 ms)", ours_gamma, "napari gamma", alone_gamma))
        li.scale_combo.setCurrentText("Lin")
        _idle(app, 0.2)
        hist = li.histogram
        x_lo, x_hi = hist.value_to_x(hist.clim[0]), hist.value_to_x(hist.clim[1])

        def drag(i):  # one mouse move of the high handle (as mouseMoveEvent does)
            hist._drag = 1
            hist._move(x_hi - (0.1 + 0.05 * (i % 2)) * (x_hi - x_lo))

        ours_handle, _ = _time(app, drag, args.n)
        hist._drag = None
        rows.append(("contrast handle drag move (<= 16 ms)", ours_handle, "napari contrast", alone_clim))
    ours_proc: list = []
    ours_step, ours_cpu = _time(app, step, args.n, proc=ours_proc)
    rows.append(("scan step -> pattern, RAM (>= 30 fps)", ours_step, "napari dims step", alone_step))
    cpu_rows = [
        ("  GUI-thread CPU per step, Virtual dock open", ours_cpu, alone_cpu),
        ("  process CPU per step (GUI + GL threads)", ours_proc, alone_proc),
    ]
    if args.crosshair_ab:
        _crosshair_ab(app, viewer, step, args.n)
    names = ["HAADF", "BF", "ADF", "ABF", "LAADF", "Full"]
    cached, cached_cpu = _time(app, lambda i: w.apply_preset(names[i % len(names)]), args.n)
    keep = w._preset_cache

    def uncached(i):
        w._preset_cache = {}
        w.apply_preset(names[i % len(names)])

    computed, _ = _time(app, uncached, args.n, until=lambda: w._worker is None and w._pending is None)
    w._preset_cache = keep
    rows.append(("preset switch, precomputed (<= 50 ms)", cached, "computed on demand", computed))
    rows.append(("", cached, "napari alone: a Shapes layer's data set", alone_outline))
    cpu_rows.append(("  GUI-thread CPU per preset switch", cached_cpu, alone_outline_cpu, "napari Shapes data set"))
    # napari alone doing what a switch shows, in this window: a Shapes layer's data on the
    # pattern's canvas and an Image layer's data (and contrast limits) on the Real space canvas,
    # our detector and live image hidden meanwhile
    both, both_cpu, both_proc = _napari_two_updates(app, viewer, w, outline, set_outline, names, args.n)
    rows.append(("", cached, "napari alone: Shapes + Image data, 2 canvases", both))
    cpu_rows.append(("", cached_cpu, both_cpu, "napari Shapes + Image data set"))
    ours_sw_proc: list = []
    _time(app, lambda i: w.apply_preset(names[i % len(names)]), args.n, proc=ours_sw_proc)
    cpu_rows.append(("  process CPU per preset switch", ours_sw_proc, both_proc, "napari Shapes + Image data set"))
    w.close()
    viewer.window.remove_dock_widget(w.parent() if w.parent() is not None else w)
    if args.no_bragg:
        from napari_4dstem.widgets._results import REAL_SPACE_DOCK

        # napari alone again, the docks closed: the load may have moved during the run
        viewer.window.remove_dock_widget(viewer.window.dock_widgets[REAL_SPACE_DOCK])
        _idle(app, 0.5)
        print(f"window {fit_window(docked.width(), docked.height())} (docks closed, the size they had)")
        end_proc: list = []
        end_step, end_cpu = _time(app, lambda i: step(i + 5), args.n, proc=end_proc)
        rows.append(("  napari dims step, the docks' window size", end_step, "at the start", alone_step))
        cpu_rows.append(("  GUI-thread CPU, napari step again", end_cpu, alone_cpu))
        cpu_rows.append(("  process CPU, napari step again", end_proc, alone_proc))
        _report(rows, cpu_rows, None)
        viewer.close()
        return

    # Bragg dock live on the current pattern
    _, b = viewer.window.add_plugin_dock_widget("napari-4dstem", "Bragg disks and strain")
    b.make_template()
    end = time.perf_counter() + 300
    while (b.template is None or b._worker is not None) and time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)
    _idle(app, 1.0)
    print(f"window {fit_window()} (Bragg dock open)")
    bragg_step, bragg_cpu = _time(app, step, args.n)
    rows.append(("scan step, Bragg dock live (GUI thread)", bragg_step, "napari dims step", alone_step))
    cpu_rows.append(("  GUI-thread CPU per step, Bragg dock live", bragg_cpu, alone_cpu))
    # busy indicator: click -> Cancel enabled
    t0 = time.perf_counter()
    b.run_btn.click()
    while not b.cancel_btn.isEnabled() and time.perf_counter() - t0 < 10:
        app.processEvents()
    busy = time.perf_counter() - t0
    b.cancel()
    end = time.perf_counter() + 60
    while b._worker is not None and time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)

    _report(rows, cpu_rows, busy)
    viewer.close()


def _napari_two_updates(app, viewer, w, outline, set_outline, names, n):
    """napari alone setting a Shapes layer's data on the main canvas and an Image layer's data
    and contrast limits on the Real space canvas (the preset images), our layers hidden: the
    two updates of a preset switch without our code, in the same window."""
    from napari_4dstem.widgets._results import results_viewer
    from napari_4dstem.widgets.virtual import DETECTOR_LAYER

    rs = results_viewer(viewer, create=False)
    live = rs.layers[w.realspace.name]
    ours = [viewer.layers[DETECTOR_LAYER], live]
    results = [w._preset_cache[name][1] for name in names]  # (detector, result) pairs
    images = [np.asarray(getattr(r, "image", r).data, np.float32) for r in results]
    img = rs.add_image(images[0], name="napari alone", scale=live.scale, units=live.units, colormap="gray")
    for lyr in ours:
        lyr.visible = False
    outline.visible = True
    viewer.layers.selection.active = viewer.layers[0]
    _idle(app, 0.3)

    def both(i):
        set_outline(i)
        im = images[i % len(images)]
        img.data = im
        img.contrast_limits = (float(np.percentile(im, 0.1)), float(np.percentile(im, 99.9)))

    proc: list = []
    wall, cpu = _time(app, both, n, proc=proc)
    outline.visible = False
    img.visible = False
    for lyr in ours:
        lyr.visible = True
    _idle(app, 0.3)
    return wall, cpu, proc


def _crosshair_ab(app, viewer, step, n, blocks: int = 3) -> None:
    """Scan steps with the cross drawn by Qt over the Real space canvas ("qt"), as a vispy visual
    in it ("gl") and with no cross shown ("off": the Qt cross hidden, what the step costs without
    one), in alternating blocks of ``n`` in this process (the load moves between runs); counts the
    Real space canvas's draws per step."""
    from napari_4dstem.widgets import _multiview as mv
    from napari_4dstem.widgets._results import results_viewer

    rs = results_viewer(viewer, create=False)
    widget = mv._QT[rs]()
    draws = [0]
    mv.draw_events(rs).connect(lambda e: draws.__setitem__(0, draws[0] + 1))
    res: dict = {}
    for b in range(blocks):
        for kind in ("gl", "qt", "off"):
            old = widget.crosshair
            if isinstance(old, mv._CrossOverlay):
                old.remove()
            elif old is not None:
                old.parent = None
            widget.crosshair, mv.CROSSHAIR = None, ("gl" if kind == "gl" else "qt")
            _time(app, lambda i, b=b: step(i + 100 + 50 * b), 2)  # the cross made and shown
            if kind == "off":
                widget.crosshair.hide()
            _idle(app, 0.2)
            d0, proc = draws[0], []
            wall, cpu = _time(app, lambda i, b=b: step(i + 200 + 50 * b), n, proc=proc)
            r = res.setdefault(kind, [[], [], [], []])
            r[0] += wall
            r[1] += cpu
            r[2] += proc
            r[3].append((draws[0] - d0) / n)
    mv.CROSSHAIR = "qt"
    print(f"\nscan step, Virtual dock open, {blocks} alternating blocks of {n} steps a cross:")
    for kind, (wall, cpu, proc, d) in res.items():
        print(
            f"  cross {kind}: wall {_stats(wall)}, GUI CPU {_stats(cpu)}, process CPU {_stats(proc)}, "
            f"Real space draws a step {', '.join(f'{x:.2f}' for x in d)}"
        )


def _report(rows, cpu_rows, busy) -> None:
    print(f"\n{'row':44s} {'ours: median (IQR)':>28s}   reference")
    for name, ours, ref_name, ref in rows:
        print(f"{name:44s} {_stats(ours)}   {ref_name}: {_stats(ref)}")
    for name, ours, ref, *ref_name in cpu_rows:
        print(f"{name:44s} {_stats(ours)}   {(ref_name or ['napari dims step'])[0]}: {_stats(ref)}")
    if busy is not None:
        print(f"{'busy indicator after a job click (<= 100 ms)':44s} {1e3 * busy:8.1f} ms")
    print(f"load average at the end: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
