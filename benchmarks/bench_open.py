"""UX point 1, "first view after opening any file <= 1 s": File > Open in a shown napari window.

Run under a virtual screen:  xvfb-run -a python benchmarks/bench_open.py [--gb 1.0] [--n 5] [--keep DIR]

Files (written on the fly in a temporary folder, then read from the page cache):

- big synthetic files of about ``--gb`` GiB each in four layouts: ``.npy`` (uint16, 128 x 128
  patterns of the strained-crystal sample tiled over the scan), our EMD (py4DSTEM layout,
  chunked HDF5, the same array), Merlin ``.mib`` (12-bit quad, 512 x 512 frames, header per
  frame) and DECTRIS ARINA (bitshuffle/LZ4 in HDF5, 192 x 192): the writers of
  ``bench_readers.py``;
- the real detector files of ``../shared/realdata`` that are 4D-STEM scans (skipped when the
  folder is absent).

Rows, each the median (and range) of ``--n`` opens of the same file into an empty viewer, timed
from the call until Qt's event loop is idle (the layer added and the canvas painted), which is
what the user waits for:

- ``viewer.open(path, plugin="napari-4dstem")``: our reader, the diffraction pattern at the scan
  centre on screen;
- napari alone on the same bytes, where napari can read them itself: the ``.npy`` file memory
  mapped by numpy and added with ``viewer.add_image`` (napari's own floor for a lazy 4D layer);
- with the *Virtual imaging* dock open: the time until its first image (binned preview or
  exact) is on the Real space canvas, and until the exact image (the whole file read once).

The machine is shared (2 cores, other jobs running): compare rows of one run only.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
REAL = HERE.parents[2] / "shared" / "realdata" / "rosettasciio"
REAL_FILES = (
    "quantumdetector/Merlin_navigation4x2_ROI/001_4x2_6bit.mib",
    "arina/test_00_master.h5",
    "blockfile/test1.blo",
)


def _idle(app) -> None:
    app.processEvents()
    app.processEvents()


def _stats(xs) -> str:
    xs = sorted(xs)
    return f"{1e3 * statistics.median(xs):8.0f} ms  ({1e3 * xs[0]:.0f}-{1e3 * xs[-1]:.0f}, n={len(xs)})"


def _wait(app, cond, timeout_s: float) -> bool:
    end = time.perf_counter() + timeout_s
    while not cond():
        if time.perf_counter() > end:
            return False
        app.processEvents()
        time.sleep(0.002)
    return True


def write_files(folder: Path, gb: float) -> dict[str, Path]:
    """The big synthetic files, about ``gb`` GiB each."""
    sys.path.insert(0, str(HERE.parent))
    import bench_readers as br

    from napari_4dstem.data.datacube import DataCube
    from napari_4dstem.io import save_datacube
    from napari_4dstem.simulation.samples import make_strained_crystal

    s = make_strained_crystal(scan_shape=(32, 32))
    base = np.asarray(s.datacube.data).astype(np.uint16)
    side = int(np.sqrt(gb * 2**30 / (128 * 128 * 2)))
    reps = -(-side // 32)
    data = np.tile(base, (reps, reps, 1, 1))[:side, :side]
    out = {}
    out["npy"] = folder / "cube.npy"
    np.save(out["npy"], data)
    out["emd"] = folder / "cube.h5"
    save_datacube(out["emd"], DataCube(data, calibration=s.datacube.calibration))
    del data
    n_mib = int(np.sqrt(gb * 2**30 / (512 * 512 * 2 + 768)))
    out["mib"] = folder / "scan.mib"
    br.write_mib(out["mib"], n_mib, n_mib)
    n_ar = int(np.sqrt(gb * 2**30 / (192 * 192 * 4)))
    out["arina"] = folder / "scan_master.h5"
    br.write_arina(out["arina"], n_ar, n_ar)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0, help="size of each big file, GiB")
    ap.add_argument("--n", type=int, default=5, help="opens per file")
    ap.add_argument("--keep", help="write (or reuse) the files in this folder and keep them")
    ap.add_argument("--no-virtual", action="store_true", help="skip the rows with the Virtual imaging dock")
    args = ap.parse_args()

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_open_"))
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    files = write_files(folder, args.gb) if not (folder / "cube.npy").exists() else {
        "npy": folder / "cube.npy", "emd": folder / "cube.h5", "mib": folder / "scan.mib",
        "arina": folder / "scan_master.h5",
    }  # fmt: skip
    print(f"files in {folder} ({time.perf_counter() - t0:.0f} s to write)")
    for rel in REAL_FILES:
        if (REAL / rel).exists():
            files["real " + Path(rel).name] = REAL / rel
    if not REAL.exists():
        print("real files: skipped (../shared/realdata absent)")

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    _idle(app)
    rows = []
    try:
        for name, path in files.items():
            parts = path.parent.glob(path.name.replace("_master.h5", "_*.h5")) if "_master" in path.name else [path]
            size = sum(p.stat().st_size for p in parts)
            ts = []
            for _ in range(args.n):
                viewer.layers.clear()
                _idle(app)
                t = time.perf_counter()
                viewer.open(str(path), plugin="napari-4dstem")
                _idle(app)
                ts.append(time.perf_counter() - t)
            shape = viewer.layers[0].data.shape
            rows.append((f"open {name} {shape} {size / 2**30:.2f} GiB", _stats(ts)))
            print(*rows[-1], flush=True)
            if name == "npy":
                ts = []
                for _ in range(args.n):
                    viewer.layers.clear()
                    _idle(app)
                    t = time.perf_counter()
                    viewer.add_image(np.load(path, mmap_mode="r"), name="napari alone")
                    _idle(app)
                    ts.append(time.perf_counter() - t)
                rows.append(("  napari alone: np.load(mmap) + add_image", _stats(ts)))
                print(*rows[-1], flush=True)
        if not args.no_virtual:
            viewer.layers.clear()
            _, v = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
            _idle(app)
            for name in ("npy", "mib", "arina"):
                v.last_image = v.last_preview = None
                viewer.layers.clear()
                _idle(app)
                t = time.perf_counter()
                viewer.open(str(files[name]), plugin="napari-4dstem")
                _idle(app)
                t_dp = time.perf_counter() - t
                ok = _wait(app, lambda: v.last_preview is not None or v.last_image is not None, 600)
                t_first = time.perf_counter() - t
                ok = ok and _wait(app, lambda: v.last_image is not None and v._worker is None, 600)
                t_exact = time.perf_counter() - t
                kind = "preview" if v.last_preview is not None else "exact"
                rows.append(
                    (
                        f"open {name} with the Virtual imaging dock",
                        f"pattern {1e3 * t_dp:.0f} ms, first image ({kind}) {t_first:.1f} s, "
                        f"exact {t_exact:.1f} s{'' if ok else ' (timed out)'}",
                    )
                )
                print(*rows[-1], flush=True)
    finally:
        viewer.close()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print()
    for r in rows:
        print(f"| {r[0]} | {r[1]} |")


if __name__ == "__main__":
    main()
