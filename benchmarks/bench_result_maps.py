"""GUI-thread CPU at the end of a job: the docks' result handlers in a shown napari window (#15, UX
audit session 15, S8).

For each handler (Bragg ``_on_strain``, DPC ``_on_origin``, DPC ``_show_dpc``, DPC ``_on_disk``)
on results computed beforehand (not timed), this measures the GUI thread's CPU time in the
handler's call and in the longest single event-loop turn until its layers are all shown (a 0 ms
timer splits the turns), and the total. Each round removes the result layers first, so every round
adds them new (a job's first end). Run it once per code version, in fresh processes, e.g.

    xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/bench_result_maps.py [rounds]

with ``PYTHONPATH`` pointing at the source to measure (``git archive main src`` for the old one).
Prints one JSON line per handler and round, and the load.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(rounds: int = 3) -> None:
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_4dstem import open_datacube
    from napari_4dstem._sample_data import sample_path
    from napari_4dstem.pipelines import DiskDetectionParams, ProbeSource, StrainParams, run_calibrate, run_strain
    from napari_4dstem.widgets import _results
    from napari_4dstem.widgets._results import results_viewer
    from napari_4dstem.widgets.dpc import _dpc_job

    pending = getattr(_results, "maps_pending", lambda v: False)  # the old code has none
    app = QApplication.instance() or QApplication([])
    path = sample_path("strained_crystal")
    dc = open_datacube(path)
    strain = run_strain(
        dc,
        detection=DiskDetectionParams(correlation_power=0.9),
        probe=ProbeSource(str(path)),
        strain=StrainParams(reference=(0, 8, 0, 8)),
    )
    calib = run_calibrate(dc)
    from napari_4dstem.pipelines import DPCParams, run_dpc

    com = run_dpc(dc, dpc=DPCParams()).com
    v = napari.Viewer(show=True)
    v.window._qt_window.resize(1600, 1000)
    v.open(str(path), plugin="napari-4dstem")

    def pump(s):
        t = time.perf_counter()
        while time.perf_counter() - t < s:
            app.processEvents()

    pump(1.0)
    _, bragg = v.window.add_plugin_dock_widget("napari-4dstem", "Bragg disks and strain")
    _, dpc = v.window.add_plugin_dock_widget("napari-4dstem", "Calibration and DPC")
    pump(2.0)
    rv = results_viewer(v)
    dcl, cal = dpc.datacube()
    dpc_out = _dpc_job(dcl, DPCParams(), com, cal, None)
    turns: list[float] = []
    last = [time.thread_time()]
    paint = [0.0]  # OpenGL painting's CPU (software GL here): napari's floor, left out of the turns
    from vispy.app.backends import _qt

    orig_paint = _qt.CanvasBackendDesktop.paintGL

    def paint_gl(self, _orig=orig_paint):
        c = time.thread_time()
        try:
            return _orig(self)
        finally:
            paint[0] += time.thread_time() - c

    _qt.CanvasBackendDesktop.paintGL = paint_gl

    def tick():
        now = time.thread_time()
        turns.append(now - last[0] - paint[0])
        paint[0] = 0.0
        last[0] = now

    timer = QTimer()
    timer.setInterval(0)
    timer.timeout.connect(tick)
    timer.start()

    def measure(label, call, rnd):
        pump(0.3)
        keep = {lyr.name for lyr in rv.layers}
        turns.clear()
        paint[0] = 0.0
        last[0] = c0 = time.thread_time()
        call()
        c_call = time.thread_time() - c0 - paint[0]
        t = time.perf_counter()
        while pending(rv) and time.perf_counter() - t < 60:
            app.processEvents()
        pump(0.3)  # what follows (repaints) ends here
        c_all = time.thread_time() - c0  # painting included
        longest = max([c_call, *turns[1:]])  # turns[0] holds the call
        print(
            json.dumps(
                {
                    "handler": label,
                    "round": rnd,
                    "call_ms": round(c_call * 1e3),
                    "longest_turn_ms": round(longest * 1e3),
                    "total_ms": round(c_all * 1e3),
                    "load": round(os.getloadavg()[0], 1),
                }
            ),
            flush=True,
        )
        return keep

    for rnd in range(rounds):
        for lyr in [lyr for lyr in rv.layers if lyr.ndim == 2 and lyr.name != _results.SCAN_POSITION]:
            rv.layers.remove(lyr)
        pump(0.5)
        measure("bragg _on_strain", lambda: bragg._on_strain(strain, None), rnd)
        measure("dpc _on_origin", lambda: dpc._on_origin(calib), rnd)
        measure("dpc _show_dpc", lambda: dpc._show_dpc(dpc_out), rnd)
    # the first disk measurement of the process: its job, then the handler timed
    from napari_4dstem.widgets.dpc import DISK_LAYER

    on_disk = dpc._on_disk
    cpu = []

    def timed(out):
        c = time.thread_time()
        on_disk(out)
        cpu.append(time.thread_time() - c)

    dpc._on_disk = timed
    dpc.disk_source.setCurrentText("current pattern")
    dpc.measure_disk()
    t = time.perf_counter()
    while not cpu and time.perf_counter() - t < 120:
        app.processEvents()
    shown = DISK_LAYER in v.layers
    print(json.dumps({"handler": "dpc _on_disk (first)", "call_ms": round(cpu[0] * 1e3), "layer": shown}))
    print("load", os.getloadavg(), flush=True)
    timer.stop()
    dc.close()
    v.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
