"""Virtual images on memory-mapped files: the truncation guard's cost (#19).

Writes a 1 GiB uint16 ``.npy`` (128 x 256 scan, 128 x 128 detector) and the same frames as a
Merlin ``.mib`` (384-byte frame headers, big-endian), then times a BF disk, an ADF annulus
and a small BF disk three ways, interleaved in rounds (median of ``--repeats``, fresh open
each call, warm page cache):

* ``unchecked``: the kernels run on views of the mapped pages, no check (the code before #19);
* ``checked`` (the default): the same views after an ``fstat`` that the file still holds the
  block (a truncated file is refused instead of SIGBUS);
* ``pread`` (``NAPARI_4DSTEM_SAFE_READS=1``): each block copied out of the file with ``pread``,
  mapped pages never touched (a truncation while a kernel runs cannot SIGBUS either).

Run: ``python benchmarks/bench_mapped_reads.py [--repeats 7] [--dir /tmp]`` (needs 2.2 GB free).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_4dstem.analysis.virtual import AnnulusDetector, DiskDetector, virtual_image
from napari_4dstem.engine import chunks
from napari_4dstem.io import open_datacube

Q, SY, SX = 128, 128, 256


def write_files(d: Path) -> tuple[Path, Path]:
    npy, mib = d / "bench_mapped.npy", d / "bench_mapped.mib"
    rng = np.random.default_rng(0)
    a = np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint16, shape=(SY, SX, Q, Q))
    for y in range(SY):
        a[y] = rng.integers(0, 1000, (SX, Q, Q), dtype=np.uint16)
    a.flush()
    hb = 384
    with open(mib, "wb") as fh:
        for y in range(SY):
            rows = []
            for x in range(SX):
                i = y * SX + x + 1
                head = (f"MQ1,{i:06d},{hb:05d},01,{Q:04d},{Q:04d},U16,   1x1,01,"
                        "2021-04-15 14:43:24.703250,0.001000,0,0,0," + ",".join(["2.0"] * 8)
                        + ",3RX,MQ1A,2021-04-15T13:43:00.000000000Z,1000000ns,12,")  # fmt: skip
                rows.append(head.encode().ljust(hb, b"\0") + a[y, x].astype(">u2").tobytes())
            fh.write(b"".join(rows))
    del a
    mib.with_suffix(".hdr").write_text(
        f"HDR,\t\nFrames in Acquisition (Number):\t{SY * SX}\nFrames per Trigger (Number):\t{SX}\n"
        "Counter Depth (number):\t12\nEnd\t\n"
    )
    return npy, mib


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    args = ap.parse_args()
    dets = {"bf": DiskDetector((63.5, 64.5), 24.0), "adf": AnnulusDetector((63.5, 64.5), 24.0, 60.0),
            "small": DiskDetector((63.5, 64.5), 12.0)}  # fmt: skip
    check = chunks.MappedFile.check
    modes = {"unchecked": (False, lambda self, v: None), "checked": (False, check), "pread": (True, check)}
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        files = write_files(Path(d))

        def call(path, det, mode):
            chunks.SAFE_READS, chunks.MappedFile.check = modes[mode]
            t = time.perf_counter()
            with open_datacube(path) as dc:
                s = float(np.nansum(virtual_image(dc, det).data))
            return time.perf_counter() - t, s

        print("| file | detector | " + " | ".join(modes) + " |\n|---|---|" + "---|" * len(modes))
        for path in files:
            for dn, det in dets.items():
                ts: dict = {m: [] for m in modes}
                sums = {m: call(path, det, m)[1] for m in modes}  # warm-up, and the same answer
                assert len(set(sums.values())) == 1, sums
                for _ in range(args.repeats):
                    for m in modes:
                        ts[m].append(call(path, det, m)[0])
                cells = " | ".join(f"{statistics.median(ts[m]) * 1e3:.0f} ms" for m in modes)
                print(f"| {path.suffix} | {dn} | {cells} |", flush=True)
    chunks.MappedFile.check = check
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
