"""UX point 1 on a lazy file: open a memory-mapped .npy with the Virtual imaging dock open.

Run under a virtual screen:  xvfb-run -a python benchmarks/bench_open_lazy.py [--side 192] [--n 3] [--file F]
[--format npy|emd] [--cold]

``--cold``: every open (ours and napari alone's) reads its own fresh copy of the file, dropped
from the page cache just before the open (pages that an earlier open still maps cannot be
dropped: reopening one file stayed 100 % resident).

``--format emd``: the same patterns written by our EMD writer (HDF5, chunks of 16 x 16 scan
positions); napari alone then opens its 4D dataset through h5py and ``dask.array.from_array``
with the file's chunks. ``--cold``: before each open (ours and napari alone's) the file is
dropped from the page cache (``os.posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)``); the script
checks that it worked (``fincore``'s resident bytes after the drop, and 64 random 4 KiB reads
timed just after a drop against the same reads again).

The file: ``(side, side, 128, 128)`` uint16, the strained-crystal sample's 32 x 32 patterns tiled
over the scan (1.12 GiB for side 192), written once (``--file`` keeps it for another run, e.g.
with another checkout on ``PYTHONPATH``, so two versions are compared on the same bytes), then
read from the page cache. Each of ``--n`` opens into the viewer, timed from the call:

- first view: the dock's first image on the Real space canvas (since session 10 the BF detector's
  image at every k-th scan position, ``iter_strided_image``, the exact image filling in over it;
  before, the exact image itself);
- BF exact: the BF detector's exact image shown (the file is in the page cache);
- presets ready: all six preset images stored (so that a preset click shows its image at once);
- preview ready: the 4x-binned copy for previews while dragging (data over 256 MiB) is built;
  the next open waits for it;
- sum image exact: the sum image (total intensity of each pattern), filling in by itself from the
  presets' one pass since session 11, complete on the Real space canvas.

Times are taken where the dock shows the image or stores the presets, not by the polling loop.

``--separate`` (session 12): each open in a process of its own, alternating napari alone and ours,
each on its own fresh copy dropped from the page cache with ``--cold`` (the two-window run
aborted in software GL on EMD files); a first, uncounted pair warms the disk's copies of the
libraries and the kernels' caches. The child processes run this script with ``--child``.

The same-run reference, interleaved with our opens (one before each): napari alone opening the
same file in a second window without our plugin (``np.load(mmap_mode="r")`` + ``add_image``),
timed until Qt's event loop is idle (the pattern at the scan centre painted). Each of our rows is
also given as its median ratio to the napari-alone open next to it, which cancels most of the
machine's load (2 shared cores); the load is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_open import _idle, _wait  # the same event-loop poll as the eager-file benchmark


def _stats(xs) -> str:
    xs = sorted(xs)
    return f"{statistics.median(xs):6.2f} s ({xs[0]:.2f}-{xs[-1]:.2f}, n={len(xs)})"


def _evict(path: Path) -> None:
    """Drop ``path`` from the page cache.

    Pages mapped into this process cannot be dropped: the last opens' memory maps (numpy's, our
    HDF5 chunk reader's) are released first.
    """
    import gc

    from napari_4dstem.io._h5direct import drop_readers

    gc.collect()
    drop_readers(str(path))
    gc.collect()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _resident(path: Path) -> float:
    """The share of ``path`` in the page cache (``fincore``), NaN when it cannot be told."""
    import subprocess

    try:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                             capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
        return int(out[0]) / path.stat().st_size
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return float("nan")


def _check_eviction(path: Path) -> str:
    """64 random 4 KiB reads just after a drop from the page cache, and the same again (cached)."""
    rng = np.random.default_rng(0)
    offs = (rng.integers(0, path.stat().st_size // 4096 - 1, 64) * 4096).tolist()
    _evict(path)
    res = _resident(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        times = []
        for _ in range(2):
            t = time.perf_counter()
            for o in offs:
                os.pread(fd, 4096, o)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
    return (f"eviction check: {100 * res:.1f} % resident after the drop; 64 random 4 KiB reads "
            f"{1e3 * times[0]:.1f} ms after it, {1e3 * times[1]:.2f} ms again (cached)")  # fmt: skip


def _napari_alone(path: Path, fmt: str):
    """What napari alone opens: the memmap, or the EMD file's 4D dataset through dask."""
    if fmt == "npy":
        return np.load(path, mmap_mode="r")
    import dask.array as da
    import h5py

    f = h5py.File(path, "r")
    found = []
    f.visititems(lambda n, o: found.append(o) if isinstance(o, h5py.Dataset) and o.ndim == 4 else None)
    return da.from_array(found[0], chunks=found[0].chunks or "auto")


def _instrument(w, marks: dict) -> None:
    """Record, in ``marks``, when the dock shows its first image, the exact image, the exact sum
    image, and when the presets are stored (where it happens, not by a polling loop)."""
    show, show_sum = w._show, w._show_sum

    def timed_sum(img, limits, text):
        if text.startswith("sum image: exact"):
            marks.setdefault("sum", time.perf_counter())
        return show_sum(img, limits, text)

    def timed_show(item):
        marks.setdefault("first", time.perf_counter())
        if not isinstance(item, tuple):
            marks.setdefault("exact", time.perf_counter())
        return show(item)

    w._show_sum, w._show = timed_sum, timed_show

    def ready_get(self):
        return self.__dict__.get("_bench_ready", False)

    def ready_set(self, value):
        self.__dict__["_bench_ready"] = value
        if value:
            marks.setdefault("presets", time.perf_counter())

    type(w).presets_ready = property(ready_get, ready_set)  # benchmark only: when the presets are stored


def _child(args) -> None:
    """One open in this process (``--separate``): prints one JSON line of its times."""
    import json

    import napari
    from qtpy.QtWidgets import QApplication

    src = Path(args.child_file)
    res = _resident(src)
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    out: dict = {"resident": res, "load": os.getloadavg()[0]}
    if args.child == "napari":
        _wait(app, lambda: False, 0.5)
        t = time.perf_counter()
        viewer.add_image(_napari_alone(src, args.format), name="napari alone")
        _idle(app)
        out["napari"] = time.perf_counter() - t
    else:
        _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
        marks: dict[str, float] = {}
        _instrument(w, marks)
        _wait(app, lambda: False, 0.5)
        t = time.perf_counter()
        viewer.open(str(src), plugin="napari-4dstem")
        _wait(app, lambda: w.last_image is not None and w._worker is None, 600)
        _wait(app, lambda: w.presets_ready and "sum" in marks, 600)
        for k in ("first", "exact", "presets", "sum"):
            out[k] = marks[k] - t
        out["kind"] = "preview" if w.last_preview is not None else "exact"
    print("RESULT " + json.dumps(out), flush=True)
    viewer.close()


def _separate(args, path: Path) -> None:
    """``--separate``: alternate napari alone and ours, each open in its own process."""
    import json
    import shutil
    import subprocess

    rows: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    resident = []
    for i in range(args.n + 1):
        got = {}
        for who in ("napari", "ours"):
            dst = path.with_name(f"{path.stem}.{who}{i}{path.suffix}")
            if args.cold:
                shutil.copyfile(path, dst)
                _evict(dst)
            else:
                dst = path
            cmd = [sys.executable, __file__, "--child", who, "--child-file", str(dst), "--format", args.format]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if dst != path:
                dst.unlink(missing_ok=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if not line:
                print(f"open {i} {who}: no result (rc {proc.returncode}): {proc.stderr[-800:]}")
                break
            got[who] = json.loads(line[0][7:])
            resident.append(got[who]["resident"])
        if i == 0 or len(got) < 2:
            continue
        ref, ours = got["napari"]["napari"], got["ours"]
        rows.setdefault("napari alone (pattern)", []).append(ref)
        names = {"first": "first view", "exact": "BF exact", "sum": "sum image exact", "presets": "presets ready"}
        for k, name in names.items():
            rows.setdefault(name, []).append(ours[k])
            if k != "presets":
                ratios.setdefault(name, []).append(ours[k] / ref)
        print(
            f"open {i}: napari alone {ref:.2f} s, first view {ours['first']:.2f} s ({ours['kind']}), BF exact "
            f"{ours['exact']:.2f} s, sum {ours['sum']:.2f} s; load {got['napari']['load']:.1f}/{ours['load']:.1f}",
            flush=True,
        )
    for name, xs in rows.items():
        print(f"{name:24s} {_stats(xs)}  [{', '.join(f'{x:.2f}' for x in xs)}]")
    for name, xs in ratios.items():
        xs = sorted(xs)
        print(f"{name + ' / napari alone':38s} x{statistics.median(xs):.1f} ({xs[0]:.1f}-{xs[-1]:.1f})")
    if args.cold:
        print(f"resident before each open: {', '.join(f'{100 * r:.1f} %' for r in resident)}")
    print(f"load after {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=192)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--file", help="write (or reuse) the file here")
    ap.add_argument("--format", choices=("npy", "emd"), default="npy")
    ap.add_argument("--cold", action="store_true", help="drop the file from the page cache before each open")
    ap.add_argument("--separate", action="store_true", help="each open in its own process")
    ap.add_argument("--child", choices=("napari", "ours"), help=argparse.SUPPRESS)
    ap.add_argument("--child-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
        return
    path = Path(args.file) if args.file else Path(tempfile.mkdtemp()) / f"cube.{args.format}"
    final = path
    if args.format == "emd":
        path = path.with_suffix(".tmp.npy")
    if not final.exists():
        from napari_4dstem.simulation.samples import make_strained_crystal

        base = np.asarray(make_strained_crystal(scan_shape=(32, 32)).datacube.data).astype(np.uint16)
        reps = -(-args.side // 32)
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(args.side, args.side, 128, 128))
        for i in range(0, args.side, 32):
            mm[i : i + 32] = np.tile(base, (1, reps, 1, 1))[: min(32, args.side - i), : args.side]
        mm.flush()
        del mm
    if args.format == "emd" and not final.exists():
        from napari_4dstem import DataCube
        from napari_4dstem.io import emd

        emd.write(final, DataCube(np.load(path, mmap_mode="r")), chunks=(16, 16, 128, 128))
    if final != path and path.exists():
        path.unlink()
    path = final
    import napari
    from qtpy.QtWidgets import QApplication

    import napari_4dstem

    print(
        f"package {os.path.dirname(napari_4dstem.__file__)}; {path.stat().st_size / 2**30:.2f} GiB, "
        f"load {os.getloadavg()[0]:.1f}; {args.format}, "
        f"{'cold (dropped before each open)' if args.cold else 'page cache'}"
    )
    if args.cold:
        print(_check_eviction(path))
    if args.separate:
        _separate(args, path)
        return
    # the reference, made first so that ours is napari's current viewer: no plugin dock in it
    ref = napari.Viewer(show=True, title="napari alone")
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    # the moments things reach the screen, recorded where they happen (a polling loop notices them
    # only once the GUI thread is free: the detector outline's redraw, 0.4-1 s at this load, and
    # napari's progress bars come in between)
    marks: dict[str, float] = {}
    _instrument(w, marks)
    rows: dict[str, list[float]] = {
        "napari alone (pattern)": [],
        "first view": [],
        "BF exact": [],
        "sum image exact": [],
        "presets ready": [],
        "preview ready": [],
    }
    resident, resident_ref = [], []
    copies: list[Path] = []

    def fresh(tag: str) -> Path:
        """The file to open: with ``--cold`` a new copy, out of the page cache."""
        if not args.cold:
            return path
        import shutil

        dst = path.with_name(f"{path.stem}.{tag}{path.suffix}")
        shutil.copyfile(path, dst)
        _evict(dst)
        copies.append(dst)
        return dst

    ratios: dict[str, list[float]] = {}
    try:
        for i in range(args.n + 1):  # the first open warms the page cache and the kernels
            for old in copies:
                old.unlink(missing_ok=True)
            copies.clear()
            ref.layers.clear()
            _wait(app, lambda: False, 0.2)
            src = fresh(f"ref{i}")
            if args.cold:
                resident_ref.append(_resident(src))
            t = time.perf_counter()
            ref.add_image(_napari_alone(src, args.format), name="napari alone")
            _idle(app)
            t_ref = time.perf_counter() - t
            ref.layers.clear()
            viewer.layers.clear()  # the last open ended with its presets stored: nothing runs
            w.last_image = w.last_preview = None
            w.filled_in.clear()
            w.presets_ready = False
            marks.clear()
            src = fresh(f"ours{i}")
            if args.cold:
                resident.append(_resident(src))
            t = time.perf_counter()
            viewer.open(str(src), plugin="napari-4dstem")
            _wait(app, lambda: w.last_image is not None and w._worker is None, 600)
            t_bf = marks["exact"] - t
            t_first = marks["first"] - t
            _wait(app, lambda: w.presets_ready and "sum" in marks, 600)
            t_presets = marks["presets"] - t
            t_sum = marks["sum"] - t
            # the binned preview copy for drags (data over 256 MiB), built after the first image:
            # the next open must not share the cores with it
            _wait(app, lambda: w._preview_due is None and (w._preview is not None or args.format != "npy"), 600)
            t_preview = time.perf_counter() - t
            if i == 0:
                continue
            kind = "preview" if w.last_preview is not None else "exact"
            rows["napari alone (pattern)"].append(t_ref)
            rows["first view"].append(t_first)
            rows["BF exact"].append(t_bf)
            rows["sum image exact"].append(t_sum)
            rows["presets ready"].append(t_presets)
            rows["preview ready"].append(t_preview)
            ratios.setdefault("first view", []).append(t_first / t_ref)
            ratios.setdefault("BF exact", []).append(t_bf / t_ref)
            ratios.setdefault("sum image exact", []).append(t_sum / t_ref)
            print(f"open {i}: napari alone {t_ref:.2f} s, first view {t_first:.2f} s ({kind}), BF exact {t_bf:.2f} s")
    finally:
        viewer.close()
        ref.close()
        for old in copies:
            old.unlink(missing_ok=True)
    for name, xs in rows.items():
        if xs:
            print(f"{name:24s} {_stats(xs)}  [{', '.join(f'{x:.2f}' for x in xs)}]")
    for name, xs in ratios.items():
        xs = sorted(xs)
        print(f"{name + ' / napari alone':38s} x{statistics.median(xs):.1f} ({xs[0]:.1f}-{xs[-1]:.1f})")
    if resident:
        print(f"resident before each of our opens: {', '.join(f'{100 * r:.1f} %' for r in resident)}")
        print(f"resident before each napari-alone open: {', '.join(f'{100 * r:.1f} %' for r in resident_ref)}")
    print(f"load after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
