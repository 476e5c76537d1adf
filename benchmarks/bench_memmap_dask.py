"""Anonymous memory of dask graphs over memmapped files: per-block reads vs dask's copy.

``dask.array.from_array`` copies a numpy memmap whole before building its graph (it copies
anything with a ``copy`` method), so binning or cropping a memmapped DataCube used to cost
the file's size in anonymous (private) RAM. ``DataCube.to_dask`` now hands dask a
``BlockReader`` that reads one block per task. For a .npy file (uint16) and a 1-bit RAW
Merlin file, each in a fresh process, this measures the peak private RSS (``RssAnon``,
sampled every 2 ms; file pages of the memmap are page cache, not counted) of:

* ``old``: ``da.from_array(memmap)`` (what ``to_dask`` did), then ``bin(k=2)`` and a sum;
* ``new``: ``DataCube.bin(k=2)`` (through ``to_dask``) and the same sum;
* for the RAW MIB: opening it (``open_datacube``, decoded through dask) and reading one pattern.

Prints the peak minus the process's baseline, median of 3, and the ratio old/new.
Run: ``python benchmarks/bench_memmap_dask.py [--mib 512]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import sys, threading, time
import numpy as np
import dask.array as da
from napari_4dstem.io import open_datacube

def anon():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon"):
                return int(line.split()[1]) * 1024
peak = [0]
stop = False
def sample():
    while not stop:
        peak[0] = max(peak[0], anon())
        time.sleep(0.002)
mode, path = sys.argv[1], sys.argv[2]
dc = open_datacube(path, **({"scan_shape": (64, int(sys.argv[3]) // 64)} if path.endswith(".mib") else {}))
da.zeros((2, 2, 2, 2), chunks=1).sum().compute()  # thread pool and imports before the baseline
base = anon()
t = threading.Thread(target=sample, daemon=True)
t.start()
if mode == "old":
    x = da.from_array(dc.data, chunks=(*dc.default_scan_chunk(), *dc.detector_shape), asarray=True,
                      fancy=False, name=False)
    sy, sx, qy, qx = dc.shape
    x = x.astype(np.uint32).reshape(sy, sx, qy // 2, 2, qx // 2, 2).sum(axis=(3, 5), dtype=np.uint32)
    x.sum().compute()
elif mode == "new":
    dc.bin(k=2).data.sum().compute()
elif mode == "mib":
    dc2 = open_datacube(path, scan_shape=(64, int(sys.argv[3]) // 64))
    dc2.pattern(3, 3)
stop = True
t.join()
print(max(peak[0], anon()) - base)
"""


def _run(mode, path, n=0):
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(n)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return int(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=512, help="size of the .npy file in MiB")
    args = ap.parse_args(argv)
    import numpy as np

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.npy"
        n_scan = max(4, round((args.mib * 2**20 / (256 * 256 * 2)) ** 0.5))
        a = np.lib.format.open_memmap(p, mode="w+", dtype=np.uint16, shape=(n_scan, n_scan, 256, 256))
        a[:] = 1
        a.flush()
        del a
        size = p.stat().st_size
        old = statistics.median(_run("old", p) for _ in range(3))
        new = statistics.median(_run("new", p) for _ in range(3))
        print(f".npy {size / 2**20:.0f} MiB ({n_scan}x{n_scan}x256x256 uint16), bin(k=2) + sum:")
        print(f"  old (dask copies the memmap): peak private RSS +{old / 2**20:.0f} MiB")
        print(f"  new (BlockReader, per block):  peak private RSS +{new / 2**20:.0f} MiB")
        print(f"  ratio old/new: {old / max(new, 1):.1f}x")
        # a 1-bit RAW Merlin file of the same number of frames (8 KiB a frame)
        m = Path(d) / "r.mib"
        n = n_scan * n_scan - (n_scan * n_scan) % 64
        hb = 384
        head = (
            "MQ1,000001,00384,01,0256,0256,R64,   1x1,01,2021-04-15 14:43:24.703250,0.001000,"
            "0,0,0," + ",".join(["2.0"] * 8) + ",3RX,MQ1A,2021-04-15T13:43:00.000000000Z,1000000ns,1,"
        )
        rec = head.encode().ljust(hb, b"\0") + b"\x55" * 8192
        with open(m, "wb") as fh:
            for _ in range(n):
                fh.write(rec)
        mib = statistics.median(_run("mib", m, n) for _ in range(3))
        print(
            f"1-bit RAW .mib {m.stat().st_size / 2**20:.0f} MiB ({n} frames): open + one pattern: "
            f"peak private RSS +{mib / 2**20:.1f} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
