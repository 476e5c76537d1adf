"""Peak memory while streaming a file larger than half the machine's RAM.

Run: python benchmarks/bench_rss.py [--gb 13]
Makes a sparse .npy of the given size in /tmp (no disk space used; reads return zeros but map
real pages), then streams a mean pattern and a virtual image over it in separate processes and
prints each one's peak resident memory (ru_maxrss) next to the file size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = """
import resource, sys, time
from napari_4dstem.io import open_datacube
from napari_4dstem.analysis.virtual.detectors import DiskDetector
from napari_4dstem.analysis.virtual.images import virtual_image
dc = open_datacube(sys.argv[1])
t = time.perf_counter()
if sys.argv[2] == "mean":
    dc.mean_pattern()
else:
    virtual_image(dc, DiskDetector((63.5, 63.5), 40.0))
dt = time.perf_counter() - t
print(f"{dt:.1f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f}")
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=13.0)
    args = ap.parse_args()
    n = int(np.sqrt(args.gb * 1e9 / (128 * 128 * 2)))
    shape = (n, n, 128, 128)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "big.npy"
        with open(p, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<u2", "fortran_order": False, "shape": shape})
            off = f.tell()
        os.truncate(p, off + int(np.prod(shape)) * 2)
        size = p.stat().st_size / 2**30
        print(f"| job on a {shape} uint16 memmap ({size:.1f} GiB) | time | peak RSS |")
        print("|---|---|---|")
        for job in ("mean", "virtual"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(p), job], capture_output=True, text=True, check=True
            ).stdout.split()
            print(f"| {'mean pattern' if job == 'mean' else 'virtual disk image'} | {out[0]} s | {out[1]} GiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
