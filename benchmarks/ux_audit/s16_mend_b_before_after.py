"""#15 mend-b, before/after in one run (mend-b's fixes of audit session 13 defects 2, 3, 9).

`polygon` (no Qt; each side in its own process with an empty NUMBA_CACHE_DIR): the warm-up's napari
Shapes step as before (the docks' detectors only) or as now (plus every kind a user draws), then
the user's first polygon drawn through napari's mouse handlers: its CPU time is what the GUI
thread would spend (numba compiles there). `gui` (xvfb-run): Results *Show* of a strain result
(before: all layers added in one call, the old `_add_layers`; now: one per event-loop turn) and
*Load session* (before: napari's `viewer.open` of the file in the click, the old path; now: the
reader in a worker, the session's layers one per turn), alternated, 3 repeats each, the longest
GUI-thread gap (wall and CPU, harness.GapRecorder) per repeat; medians printed.

    python benchmarks/ux_audit/s16_mend_b_before_after.py polygon
    xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/ux_audit/s16_mend_b_before_after.py gui
    xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/ux_audit/s16_mend_b_before_after.py compare
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def polygon_side(side: str) -> None:
    import numpy as np

    from napari_4dstem.widgets import _shapes_warm, _warmup

    t0 = time.perf_counter()
    if side == "before":  # the old step: the docks' detectors' Shapes only
        from napari.layers import Shapes

        from napari_4dstem.analysis.virtual.detectors import (
            AnnulusDetector,
            DiskDetector,
            RectangleDetector,
            WedgeDetector,
        )
        from napari_4dstem.widgets.virtual import detector_to_shapes

        for det in (
            DiskDetector((24.0, 24.0), 5.0),
            AnnulusDetector((24.0, 24.0), 6.0, 20.0),
            RectangleDetector((10.0, 30.0), (5.0, 40.0)),
            WedgeDetector((24.0, 24.0), 6.0, 20.0, -30.0, 60.0),
        ):
            data, types = detector_to_shapes(det)
            for arrays in (data, [np.asfortranarray(a) for a in data]):
                Shapes(list(zip(arrays, types, strict=True)))
    else:
        _warmup._napari_shapes(None)
    warm = time.perf_counter() - t0
    from napari.layers import Shapes

    layer = Shapes(ndim=2, scale=(0.5, 0.5), edge_width=0.5, face_color="transparent")
    c0, t0 = time.thread_time(), time.perf_counter()
    _shapes_warm._draw(layer, "add_polygon", [(20.0, 4.0), (28.0, 6.0), (26.0, 14.0), (20.0, 12.0)])
    print(
        f"RESULT polygon {side}: warm-up step {warm:.1f} s wall; first polygon drawn "
        f"{time.perf_counter() - t0:.2f} s wall, {time.thread_time() - c0:.2f} s CPU; shapes {list(layer.shape_type)}",
        flush=True,
    )


def polygon() -> None:
    print("loadavg start", os.getloadavg())
    for side in ("before", "after"):
        env = {**os.environ, "NUMBA_CACHE_DIR": tempfile.mkdtemp(prefix=f"numba-{side}-")}
        out = subprocess.run([sys.executable, __file__, "polygon-side", side], env=env, capture_output=True, text=True)
        print("\n".join(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")) or out.stderr[-2000:])
    print("loadavg end", os.getloadavg())


def gui() -> None:
    import shutil

    sys.path.insert(0, HERE)
    from harness import Audit

    from napari_4dstem import open_datacube
    from napari_4dstem._sample_data import sample_path
    from napari_4dstem.io import emd
    from napari_4dstem.pipelines import DiskDetectionParams, ProbeSource, StrainParams, run_strain
    from napari_4dstem.simulation.samples import make_strained_crystal
    from napari_4dstem.widgets._results import results_viewer
    from napari_4dstem.widgets.results_list import ResultsListWidget, _layer_data, session_results

    A = Audit("s16")
    v = A.viewer
    # napari's pop-up for its "Inconsistent units" warning, raised while a canvas paints, killed
    # the process under llvmpipe (the audit's segfaults; the old Load session raised 12-13 of them):
    # no pop-ups on either side here
    from napari.settings import get_settings

    get_settings().application.gui_notification_level = "none"
    A.measure("loadavg start", os.getloadavg())
    tmp = tempfile.mkdtemp()
    s = make_strained_crystal(scan_shape=(6, 6))
    path = emd.write(os.path.join(tmp, "sample.h5"), *s.objects())
    dc = open_datacube(path)
    res = run_strain(
        dc,
        detection=DiskDetectionParams(correlation_power=0.9),
        probe=ProbeSource(str(path)),
        strain=StrainParams(reference=(0, 3, 0, 3)),
    )
    dc.close()
    src = os.path.join(tmp, "strained_crystal.h5")
    shutil.copy(sample_path("strained_crystal"), src)
    from napari_4dstem._reader import get_reader

    for data, kw, kind in get_reader(src)(src):  # as after Open Sample: the cube and the probe
        if kw["metadata"]["napari_4dstem"].get("kind") != "real_space":
            getattr(v, f"add_{kind}")(data, **kw)
    w = ResultsListWidget(v)
    out = w.save_session(os.path.join(tmp, "s.json"))
    w.select(session_results(v).add(res, "strain"))
    _, prepared = None, _layer_data("strain", res)
    rv = results_viewer(v)

    def clear():
        for vv in (v, rv):
            vv.layers.clear()
        A.process(1.0)

    def longest(n0):
        gs = A.gaps.gaps[n0:]
        g = max(gs, key=lambda g: g["wall_ms"]) if gs else {"wall_ms": 0.0, "cpu_ms": 0.0}
        return g["wall_ms"], g["cpu_ms"]

    def show_before():
        for where, kind, data, kw in prepared[1]:  # the old _add_layers: all in one call
            (v if where == "main" else rv).__getattribute__(f"add_{kind}")(data, **kw)

    def show_after():
        w._add_layers(prepared)
        A.wait(lambda: w.show_done, 120)

    def load_before():
        v.open(src, plugin="napari-4dstem")  # the old load: napari opens the file in the click
        A.process(0.5)

    def load_after():
        w.load_session(out)
        A.wait(lambda: w.loaded is not None, 120)

    figs = {k: [] for k in ("show before", "show after", "load before", "load after")}
    # napari's own open of this file (the old Load session) puts 10 scan maps on the diffraction
    # canvas and died in llvmpipe under load (audit s14): `gui-noload-before` leaves it out
    skip = {"load before"} if sys.argv[1] == "gui-noload-before" else set()
    clear()
    for _ in range(3):
        for label, fn in (
            ("show before", show_before),
            ("show after", show_after),
            ("load before", load_before),
            ("load after", load_after),
        ):
            if label in skip:
                continue
            clear()
            A.act(label)
            n0, t0 = len(A.gaps.gaps), time.perf_counter()
            fn()
            A.process(0.5)
            wall, cpu = longest(n0)
            figs[label].append((wall, cpu, len(v.layers) + len(rv.layers), round(time.perf_counter() - t0, 1)))
            A.measure(label, figs[label][-1])
    for label, runs in figs.items():
        if not runs:
            continue
        print(
            f"RESULT {label}: longest GUI gap median {statistics.median(r[0] for r in runs):.0f} ms wall / "
            f"{statistics.median(r[1] for r in runs):.0f} ms CPU; layers {runs[0][2]}; done in "
            f"{statistics.median(r[3] for r in runs):.1f} s; runs {runs}",
            flush=True,
        )
    A.measure("loadavg end", os.getloadavg())
    A.dump()
    os._exit(0)


def compare_side(side: str) -> None:
    """The first *Compare grid* click of a process on two open 4D datasets: seconds from the click
    to busy (Cancel enabled, ``compare`` returned), and the grid's longest GUI gap. ``before``
    runs the old order (the Compare canvas made and cleared in the click, then the job)."""
    import numpy as np

    sys.path.insert(0, HERE)
    from harness import Audit

    from napari_4dstem.analysis.virtual.detectors import DiskDetector

    A = Audit(f"s16-compare-{side}")
    v = A.viewer
    tmp = tempfile.mkdtemp()
    rng = np.random.default_rng(11)
    for k in range(4):
        p = os.path.join(tmp, f"scan_{k}.npy")
        np.save(p, rng.poisson(5.0 + k, (32, 32, 64, 64)).astype(np.uint16))
        v.open(p, plugin="napari-4dstem")
    _, s = v.window.add_plugin_dock_widget("napari-4dstem", "Series, compare and watch")
    A.process(2.0)
    A.act("compare")
    n0, t0 = len(A.gaps.gaps), time.perf_counter()
    if side == "before":
        model = s._compare_viewer()
        for lyr in list(model.layers):
            model.layers.remove(lyr)
    s.compare("open 4D layers", detector=DiskDetector((32.0, 32.0), 8.0))
    busy = time.perf_counter() - t0
    A.wait(lambda: s._compare_worker is None, 120)
    done = time.perf_counter() - t0
    gs = A.gaps.gaps[n0:]
    g = max(gs, key=lambda g: g["wall_ms"]) if gs else {"wall_ms": 0.0, "cpu_ms": 0.0}
    print(
        f"RESULT compare {side}: busy {busy:.2f} s; grid {done:.1f} s; longest gap {g['wall_ms']:.0f} ms wall / "
        f"{g['cpu_ms']:.0f} ms CPU; tiles {len(s.compare_images)}; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    os._exit(0)


def compare() -> None:
    for _ in range(3):
        for side in ("before", "after"):
            out = subprocess.run([sys.executable, __file__, "compare-side", side], capture_output=True, text=True)
            print("\n".join(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")) or out.stderr[-800:])


if __name__ == "__main__":
    if sys.argv[1] == "compare-side":
        compare_side(sys.argv[2])
    elif sys.argv[1] == "compare":
        compare()
    elif sys.argv[1] == "polygon-side":
        polygon_side(sys.argv[2])
    elif sys.argv[1] == "polygon":
        polygon()
    else:
        gui()
