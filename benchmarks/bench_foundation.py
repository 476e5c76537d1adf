"""Foundation benchmark: import cost, open latency, chunked mean pattern vs numpy.

Run: python benchmarks/bench_foundation.py [--gib 1.0]
Prints ratios against references measured in the same run (median of 5 runs).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def median_time(fn, n=5):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0, help="size of the in-memory dataset")
    args = ap.parse_args()
    from napari_4dstem import DataCube
    from napari_4dstem.io import emd, open_datacube

    rows = []
    py = sys.executable
    t_bare = median_time(lambda: subprocess.run([py, "-c", "pass"], check=True), 7)
    t_imp = median_time(lambda: subprocess.run([py, "-c", "import napari_4dstem"], check=True), 7)
    t_np = median_time(lambda: subprocess.run([py, "-c", "import numpy"], check=True), 7)
    rows.append(
        (
            "import napari_4dstem (added to a bare interpreter)",
            f"{(t_imp - t_bare) * 1e3:.0f} ms",
            f"{(t_imp - t_bare) / (t_np - t_bare):.2f} x `import numpy`",
        )
    )

    q = 128
    n = int(np.sqrt(args.gib * 2**30 / (q * q * 2)))
    rng = np.random.default_rng(0)
    a = rng.integers(0, 60, (n, n, q, q), dtype=np.uint16)
    dc = DataCube(a)
    t_ref = median_time(lambda: a.sum(axis=(0, 1), dtype=np.float64))
    t_ours = median_time(dc.mean_pattern)
    gb = a.nbytes / 1e9
    rows.append(
        (
            f"mean pattern, {a.shape} uint16 in RAM ({gb:.2f} GB)",
            f"{gb / t_ours:.1f} GB/s",
            f"{t_ref / t_ours:.2f} x numpy `a.sum(axis=(0, 1))`",
        )
    )

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "b.h5"
        emd.write(p, dc)
        t_open = median_time(lambda: open_datacube(p).close())
        rows.append((f"open a {p.stat().st_size / 1e9:.2f} GB EMD file", f"{t_open * 1e3:.1f} ms", "constant in size"))
        with open_datacube(p) as f:
            t_file = median_time(f.mean_pattern, 3)
            import h5py

            def ref():
                with h5py.File(p) as h:
                    h["datacube_root/datacube/data"][()].sum(axis=(0, 1), dtype=np.float64)

            t_fref = median_time(ref, 3)
        rows.append(
            (
                "mean pattern streamed from that file (page cache)",
                f"{gb / t_file:.1f} GB/s",
                f"{t_fref / t_file:.2f} x h5py read-all + numpy sum",
            )
        )
    print("| measurement | figure | ratio |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
