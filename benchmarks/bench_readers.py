"""Reader benchmark: open time and full-scan streaming throughput of the detector readers.

Generates files of >= 2 GB on the fly in a temporary directory (Merlin MIB 12-bit quad, EMPAD,
DECTRIS ARINA with bitshuffle/LZ4), then for each format reports:

* open time of ``open_datacube`` on the big file and on a 1/16 file (it must not grow with
  size; target < 0.5 s);
* throughput of a chunked reduction (sum of all frames, float64) streamed with
  ``napari_4dstem.engine.chunks.iter_scan_blocks``, as a ratio against a plain numpy memmap
  reduction of the same frame bytes in the same blocks (for ARINA: plain h5py reads of the same
  frames), measured in the same run, median of 3;
* peak memory while streaming: peak private (anonymous) RSS, which is what the reader
  allocates, and peak total RSS, which also counts the file pages a memmap maps (reclaimable
  page cache, not allocations).

Files are read from the page cache (they were just written), so this measures the reader's
CPU overhead, not the disk. Run: ``python benchmarks/bench_readers.py [--gb 2.1] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


# -- file generation ---------------------------------------------------------------------------
def _mib_header(i: int, hb: int = 768) -> bytes:
    head = (
        f"MQ1,{i + 1:06d},{hb:05d},04,0512,0512,U16,   2x2,0F,2021-04-15 15:03:32.852759,"
        "0.001000,0,0,0," + ",".join(["2.0"] * 8) + ",3RX,MQ1A,"
        "2021-04-15T14:03:32.852759401Z,1000000ns,12,"
    ).encode()
    return head.ljust(hb, b"\0")


def write_mib(path: Path, sy: int, sx: int) -> None:
    n = sy * sx
    rec = np.dtype([("h", "V768"), ("f", ">u2", (512, 512))])
    out = np.memmap(path, dtype=rec, mode="w+", shape=(n,))
    rng = np.random.default_rng(0)
    pattern = rng.poisson(3.0, size=(512, 512)).astype(">u2")
    heads = np.frombuffer(b"".join(_mib_header(i) for i in range(n)), dtype="V768")
    for i0 in range(0, n, 256):
        i1 = min(n, i0 + 256)
        out["h"][i0:i1] = heads[i0:i1]
        out["f"][i0:i1] = pattern
    out.flush()
    del out
    hdr = f"HDR,\t\nFrames in Acquisition (Number):\t{n}\nFrames per Trigger (Number):\t{sx}\nEnd\t"
    path.with_suffix(".hdr").write_text(hdr)


def write_empad(path_xml: Path, sy: int, sx: int) -> None:
    raw = path_xml.with_name(f"scan_x{sx}_y{sy}.raw")
    n = sy * sx
    out = np.memmap(raw, dtype="<f4", mode="w+", shape=(n, 130, 128))
    frame = np.random.default_rng(1).random((130, 128), dtype=np.float32)
    for i0 in range(0, n, 1024):
        out[i0 : min(n, i0 + 1024)] = frame
    out.flush()
    del out
    path_xml.write_text(f'<root><raw_file filename="{raw.name}"/><pix_x>{sx}</pix_x><pix_y>{sy}</pix_y></root>')


def write_arina(master: Path, sy: int, sx: int, frames_per_file: int = 10000) -> None:
    import h5py
    import hdf5plugin

    n = sy * sx
    rng = np.random.default_rng(2)
    block = rng.poisson(2.0, size=(500, 192, 192)).astype(np.uint32)  # sparse counts
    stem = master.name.replace("_master.h5", "")
    names = []
    for k, f0 in enumerate(range(0, n, frames_per_file), start=1):
        m = min(frames_per_file, n - f0)
        name = f"{stem}_data_{k:06d}.h5"
        names.append(name)
        with h5py.File(master.with_name(name), "w") as f:
            d = f.create_dataset(
                "entry/data/data", shape=(m, 192, 192), dtype=np.uint32, chunks=(1, 192, 192),
                **hdf5plugin.Bitshuffle(cname="lz4"),
            )  # fmt: skip
            for i0 in range(0, m, 500):
                i1 = min(m, i0 + 500)
                d[i0:i1] = block[: i1 - i0]
    with h5py.File(master, "w") as f:
        for k, name in enumerate(names, start=1):
            f[f"entry/data/data_{k:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
        det = f.create_group("entry/instrument/detector")
        det["description"] = b"Dectris ARINA"
        spec = det.create_group("detectorSpecific")
        spec["nimages"] = np.uint64(1)
        spec["ntrigger"] = np.uint64(n)


# -- measurement (run in a child process per format, so peak memory is per reader) ------------
class _MemSampler:
    def __init__(self):
        self.peak_anon = self.peak_rss = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _read(self):
        vals = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS", "RssAnon")):
                    k, v = line.split(":")
                    vals[k] = int(v.split()[0]) * 1024
        return vals

    def _run(self):
        while not self._stop.is_set():
            v = self._read()
            self.peak_anon = max(self.peak_anon, v.get("RssAnon", 0))
            self.peak_rss = max(self.peak_rss, v.get("VmRSS", 0))
            time.sleep(0.02)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def _reference(fmt: str, path: Path, dc) -> np.ndarray:
    """Plain numpy/h5py reduction of the same frame bytes, in the same blocks."""
    from napari_4dstem.engine.chunks import default_scan_chunk

    sy, sx, qy, qx = dc.shape
    by, bx = default_scan_chunk(dc.shape, dc.dtype.itemsize, dc.chunks)
    n = sy * sx
    step = by * bx
    acc = np.zeros((qy, qx))
    if fmt == "arina":
        import h5py
        import hdf5plugin  # noqa: F401

        files = sorted(path.parent.glob(path.name.replace("_master.h5", "_data_*.h5")))
        for fp in files:
            with h5py.File(fp, "r") as f:
                d = f["entry/data/data"]
                for i0 in range(0, d.shape[0], step):
                    acc += d[i0 : i0 + step].sum(axis=0, dtype=np.float64)
        return acc
    if fmt == "mib":
        rec = np.dtype([("h", "V768"), ("f", ">u2", (512, 512))])
        frames = np.memmap(path, dtype=rec, mode="r", shape=(n,))["f"]
    else:
        raw = Path(dc.source)  # the .raw next to the .xml
        frames = np.memmap(raw, dtype=[("f", "<f4", (128, 128)), ("t", "V1024")], mode="r")["f"]
    for i0 in range(0, n, step):
        acc += frames[i0 : i0 + step].sum(axis=0, dtype=np.float64)
    return acc


def _ours(dc) -> np.ndarray:
    from napari_4dstem.engine.chunks import iter_scan_blocks

    acc = None
    for _, _, block in iter_scan_blocks(dc.data):
        part = block.sum(axis=(0, 1), dtype=np.float64)
        acc = part if acc is None else acc + part
    return acc


def _arina_scan(path) -> tuple[int, int]:
    sy, sx = Path(path).parent.name.split("x")
    return int(sy), int(sx)


def child(fmt: str, path: str, small: str, runs: int) -> None:
    from napari_4dstem.io import open_datacube

    p = Path(path)
    # ARINA files carry no scan shape (it lives in the microscope's metadata): give it
    kw = lambda q: {"scan_shape": _arina_scan(q)} if fmt == "arina" else {}  # noqa: E731
    open_datacube(Path(small), **kw(small)).close()  # warm imports
    t0 = time.perf_counter()
    dc = open_datacube(p, **kw(path))
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    open_datacube(Path(small), **kw(small)).close()
    t_open_small = time.perf_counter() - t0
    times_ours, times_ref = [], []
    with _MemSampler() as mem:
        for _ in range(runs):
            t0 = time.perf_counter()
            a = _ours(dc)
            times_ours.append(time.perf_counter() - t0)
    with _MemSampler() as mem_ref:
        for _ in range(runs):
            t0 = time.perf_counter()
            b = _reference(fmt, p, dc)
            times_ref.append(time.perf_counter() - t0)
    assert np.allclose(a, b), "reader and reference sums differ"
    gb = dc.nbytes / 1e9
    out = {
        "format": fmt, "shape": dc.shape, "dtype": str(dc.dtype), "gb": gb,
        "file_gb": sum(f.stat().st_size for f in p.parent.iterdir()) / 1e9,
        "open_s": t_open, "open_small_s": t_open_small,
        "ours_s": statistics.median(times_ours), "ref_s": statistics.median(times_ref),
        "peak_anon_mb": mem.peak_anon / 2**20, "peak_rss_mb": mem.peak_rss / 2**20,
        "ref_peak_anon_mb": mem_ref.peak_anon / 2**20,
    }  # fmt: skip
    dc.close()
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.1, help="size of each big file in GB")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--formats", default="mib,empad,arina")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, runs=args.runs)
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-readers-"))
    rows = []
    try:
        for fmt in args.formats.split(","):
            frame_bytes = {
                "mib": 512 * 512 * 2 + 768,
                "empad": 130 * 128 * 4,
                "arina": 192 * 192 * 4,
            }[fmt]
            n = int(np.ceil(args.gb * 1e9 / frame_bytes))
            sx = 64 if fmt == "mib" else 128
            sy = int(np.ceil(n / sx))
            paths = {}
            for tag, (ny, nx) in (("big", (sy, sx)), ("small", (max(1, sy // 16), sx))):
                d = tmp / f"{fmt}_{tag}" / f"{ny}x{nx}"
                d.mkdir(parents=True)
                t0 = time.perf_counter()
                if fmt == "mib":
                    p = d / "scan.mib"
                    write_mib(p, ny, nx)
                elif fmt == "empad":
                    p = d / "scan.xml"
                    write_empad(p, ny, nx)
                else:
                    p = d / "scan_master.h5"
                    write_arina(p, ny, nx)
                paths[tag] = p
                print(f"# wrote {fmt} {tag} {ny}x{nx} in {time.perf_counter() - t0:.1f} s", flush=True)
            res = subprocess.run(
                [sys.executable, str(HERE), "--runs", str(args.runs), "--child", fmt,
                 str(paths["big"]), str(paths["small"])],
                capture_output=True, text=True,
            )  # fmt: skip
            if res.returncode:
                sys.exit(f"{fmt} failed:\n{res.stderr}")
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(tmp / f"{fmt}_big")
            shutil.rmtree(tmp / f"{fmt}_small")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(
        "| format | shape (dtype) | data GB | open s (big / 1/16) | stream GB/s | numpy/h5py ref GB/s "
        "| ratio | peak private RSS MB (ours / ref) | peak total RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['format']} | {tuple(r['shape'])} ({r['dtype']}) | {r['gb']:.2f} | "
            f"{r['open_s']:.3f} / {r['open_small_s']:.3f} | {r['gb'] / r['ours_s']:.2f} | "
            f"{r['gb'] / r['ref_s']:.2f} | {r['ref_s'] / r['ours_s']:.2f}x | "
            f"{r['peak_anon_mb']:.0f} / {r['ref_peak_anon_mb']:.0f} | {r['peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
