"""The six preset images of the Virtual imaging dock: six passes over the data, or one.

Run:  python benchmarks/bench_presets_pass.py [--scan 128] [--k 128] [--n 3]

A memory-mapped ``.npy`` of ``(scan, scan, k, k)`` uint16 (a bright-field disk of radius k/8 with
Poisson-like noise, written once in a temporary folder, then read from the page cache) and the
dock's presets BF / ABF / LAADF / ADF / HAADF / Full sized to that disk. Rows, as medians (and
ranges) of ``--n`` interleaved repeats in one process:

- six passes: ``virtual_image`` once per preset (what the dock did before session 9);
- one pass: ``virtual_images`` of the six presets together (what it does now);
- one pass with the map so far on the steps (``partial``, the dock's fill-in on lazy data).

The machine is shared (2 cores, other jobs running): compare rows of one run only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scan", type=int, default=128)
    ap.add_argument("--k", type=int, default=128)
    ap.add_argument("--n", type=int, default=3)
    args = ap.parse_args()
    from napari_4dstem.analysis.virtual.detectors import preset_detector
    from napari_4dstem.analysis.virtual.images import iter_virtual_images, virtual_image, virtual_images
    from napari_4dstem.engine.jobs import run_job

    s, k = args.scan, args.k
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cube.npy"
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(s, s, k, k))
        ky, kx = np.mgrid[0:k, 0:k]
        disk = ((ky - k / 2) ** 2 + (kx - k / 2) ** 2 < (k / 8) ** 2) * 1000
        rng = np.random.default_rng(0)
        for i in range(s):
            mm[i] = disk + rng.integers(0, 20, (s, k, k))
        mm.flush()
        del mm
        data = np.load(path, mmap_mode="r")
        names = ("BF", "ABF", "LAADF", "ADF", "HAADF", "Full")
        dets = [preset_detector(n, detector_shape=(k, k), center_px=(k / 2, k / 2), bf_radius_px=k / 8) for n in names]
        print(f"{data.nbytes / 2**30:.2f} GiB memory-mapped uint16 {data.shape}, presets {names}")
        virtual_images(data, dets)  # warm: page cache and kernels
        rows = {"six passes": [], "one pass": [], "one pass, partial maps": []}
        for _ in range(args.n):
            t0 = time.perf_counter()
            six = [virtual_image(data, d).data for d in dets]
            rows["six passes"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            one = virtual_images(data, dets).data
            rows["one pass"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            part = run_job(iter_virtual_images(data, dets, partial=True)).data
            rows["one pass, partial maps"].append(time.perf_counter() - t0)
            for i, img in enumerate(six):
                np.testing.assert_array_equal(one[..., i], img)
                np.testing.assert_array_equal(part[..., i], img)
        for name, xs in rows.items():
            xs = sorted(xs)
            print(f"{name:24s} {statistics.median(xs):7.2f} s  ({xs[0]:.2f}-{xs[-1]:.2f}, n={len(xs)})")


if __name__ == "__main__":
    main()
