"""Frame switch of a series (UX point 23) through the real widgets in a shown napari window.

Run under a virtual screen:  xvfb-run -a python benchmarks/bench_series.py [--scan 64] [--frames 6] [--n 12]

A 5D series ``(frames, scan, scan, 128, 128)`` uint16 (the strained-crystal generator's lattice of
disks, shifted a pixel per frame) saved as one ``.npy`` and opened in the Series dock (lazy: a
memory map), with the Virtual imaging dock open on it. Each repetition moves the frame slider one
frame and reports, as medians (25-75 %) of ``--n``:

- the GUI thread's time in the slider change (the series layer's data swapped, napari's slice and
  redraw request, the dock's request queued);
- the wall time until the new frame's exact virtual image is shown (its worker's computation and
  the Real space canvas update);
- napari alone: the same 4D layer's scan step (dims), the floor of any change of the pattern.

The machine is shared (2 cores, other jobs running): compare rows of one run only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _series(frames: int, scan: int) -> np.ndarray:
    ky, kx = np.mgrid[:128, :128]
    out = np.empty((frames, scan, scan, 128, 128), np.uint16)
    rng = np.random.default_rng(0)
    for k in range(frames):
        pat = np.zeros((128, 128))
        for gy in range(-3, 4):
            for gx in range(-3, 4):
                cy, cx = 64 + 16 * gy + k, 64 + 16 * gx
                pat += 100.0 * (np.hypot(ky - cy, kx - cx) < 5) / (1 + gy * gy + gx * gx)
        out[k] = rng.poisson(pat + 1.0, size=(scan, scan, 128, 128)).astype(np.uint16)
    return out


def _q(xs) -> str:
    xs = sorted(xs)
    q1, q3 = np.percentile(xs, [25, 75])
    return f"{statistics.median(xs) * 1e3:.1f} ms ({q1 * 1e3:.1f}-{q3 * 1e3:.1f})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scan", type=int, default=64)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--n", type=int, default=12)
    args = ap.parse_args()
    import napari
    from qtpy.QtWidgets import QApplication

    tmp = Path(tempfile.mkdtemp())
    path = tmp / "series.npy"
    np.save(path, _series(args.frames, args.scan))
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 900)
    app = QApplication.instance()
    _, s = viewer.window.add_plugin_dock_widget("napari-4dstem", "Series, compare and watch")
    s.open_files([str(path)])

    def wait(cond, timeout=120.0):
        end = time.perf_counter() + timeout
        while not cond():
            app.processEvents()
            time.sleep(0.001)
            if time.perf_counter() > end:
                raise TimeoutError("benchmark: gave up waiting")

    wait(lambda: len(s.frames) == args.frames)
    _, v = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")

    def settled():
        return v._worker is None and v._pending is None and not v._timer.isActive() and v.last_image is not None

    wait(lambda: settled() and v.presets_ready)
    gui, image, step = [], [], []
    for i in range(args.n):
        k = (s.frame + 1) % args.frames
        before = v.last_image
        t0 = time.perf_counter()
        s.slider.setValue(k)
        gui.append(time.perf_counter() - t0)
        wait(lambda b=before: settled() and v.last_image is not b)
        app.processEvents()
        image.append(time.perf_counter() - t0)
        # napari alone: a scan step of the same layer (pattern slice and redraw)
        t0 = time.perf_counter()
        viewer.dims.set_current_step(0, (i + 1) % args.scan)
        app.processEvents()
        step.append(time.perf_counter() - t0)
        wait(settled)
    print(f"series {args.frames} x {args.scan}x{args.scan}x128x128 uint16, lazy .npy, {args.n} frame switches")
    print(f"frame switch, GUI thread in the slider change: {_q(gui)}")
    print(f"frame switch -> new exact virtual image shown: {_q(image)}")
    print(f"napari alone, scan step of the same layer: {_q(step)}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
