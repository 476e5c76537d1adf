"""Virtual imaging and centre-of-mass benchmark: the engine against numpy on the same data.

Run: python benchmarks/bench_virtual.py [--gib 1.0] [--repeats 5] [--py4dstem /work/p4venv/bin/python]
     python benchmarks/bench_virtual.py --file-gb 4 [--file-dir /tmp] [--cold]   (the file case)

On ``--gib`` of synthetic data in RAM (float32 and uint16, detector 128 x 128) it times, median
of ``--repeats`` runs with the candidates interleaved so that machine noise hits all alike:

- numpy ``a.sum()`` and ``np.tensordot(a, mask)`` (the references);
- our virtual image with a BF-sized disk, an ADF annulus and a small BF disk (< 5 % of the
  detector, which reads only its rows);
- our centre of mass (one pass) against ``a.sum()``;
- the same virtual disk on a dask.distributed LocalCluster (2 workers x 1 thread,
  processes=False) against the local engine;
- optionally py4DSTEM's ``get_virtual_image`` in a side venv (numpy<2), on the same data saved
  as .npy, against ``a.sum()`` timed in that process (a ratio, so the two processes compare).

With ``--file-gb``: the same detectors on a file of that size (uint16 and float32, each
written as .npy and as EMD/HDF5 with (8, 8, k, k) chunks, one at a time, deleted afterwards),
opened lazily by our readers, against numpy on the same file (a fresh ``np.load(mmap_mode="r")``
each call, then ``sum``/``tensordot``; for EMD an h5py read of each chunk row + numpy sum),
and the virtual disk on dask.distributed with 2 worker processes that open the file
themselves. Every call opens the file anew, so each one reads the whole file (page faults and
all); ``--cold`` also drops the file's pages from the page cache before every call
(``posix_fadvise(DONTNEED)``), else the file stays in the page cache (warm).

Prints a markdown table of ratios (>1 means ours is faster). The machine is shared: absolute
numbers are hints, ratios measured in one run are the result.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

Q = 128  # detector side


def interleaved(cands: dict, repeats: int, gap_s: float = 0.3) -> dict[str, float]:
    """Median time of each candidate; one warm-up call each, then rounds in turn.

    ``gap_s`` of idle time before each timed call: numpy's BLAS (OpenBLAS) leaves its worker
    threads spinning for a while after a call, and they would take the cores from whatever
    runs next (ours after ``tensordot``, or the other way round).
    """
    for f in cands.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in cands}
    for _ in range(repeats):
        for k, f in cands.items():
            time.sleep(gap_s)
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def make_data(dtype, gib: float, rng) -> np.ndarray:
    n_pat = int(gib * 2**30 // (Q * Q * np.dtype(dtype).itemsize))
    sx = 128
    sy = max(1, n_pat // sx)
    yy, xx = np.indices((Q, Q))
    disk = (np.hypot(yy - 63.5, xx - 64.5) <= 20).astype(np.float32) * 50
    a = np.empty((sy, sx, Q, Q), dtype=dtype)
    for i in range(sy):  # row by row: no float copy of the whole dataset
        if np.dtype(dtype).kind == "f":
            a[i] = disk + rng.random((sx, Q, Q), dtype=np.float32) * 4
        else:
            a[i] = disk.astype(dtype) + rng.integers(0, 4, (sx, Q, Q), dtype=dtype)
    return a


P4_SCRIPT = textwrap.dedent(
    """
    import json, statistics, sys, time, warnings
    warnings.filterwarnings("ignore")
    import numpy as np
    import py4DSTEM
    a = np.load(sys.argv[1])
    dc = py4DSTEM.DataCube(data=a)
    def med(f, n):
        f(); ts = []
        for _ in range(n):
            t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
        return statistics.median(ts)
    n = int(sys.argv[2])
    geo = ((63.5, 64.5), float(sys.argv[3]))
    t_p4 = med(lambda: dc.get_virtual_image(mode="circle", geometry=geo, name="vbf",
                                            returncalc=True, verbose=False), n)
    t_sum = med(lambda: a.sum(), n)
    print(json.dumps({"p4": t_p4, "sum": t_sum, "version": py4DSTEM.__version__}))
    """
)


def run(args) -> list[tuple[str, str, str]]:
    from napari_4dstem.analysis.virtual.com import center_of_mass
    from napari_4dstem.analysis.virtual.detectors import AnnulusDetector, DiskDetector
    from napari_4dstem.analysis.virtual.images import virtual_image

    rng = np.random.default_rng(0)
    rows = []
    bf = DiskDetector((63.5, 64.5), 24.0)  # a BF disk with a margin: 11 % of the detector
    adf = AnnulusDetector((63.5, 64.5), 24.0, 60.0)  # 59 % of the detector
    small = DiskDetector((63.5, 64.5), 12.0)  # 2.8 % of the detector
    for dtype in (np.float32, np.uint16):
        a = make_data(dtype, args.gib, rng)
        gb = a.nbytes / 1e9
        name = np.dtype(dtype).name
        mask_bf = bf.render((Q, Q)).astype(np.float32)
        mask_adf = adf.render((Q, Q)).astype(np.float32)
        cands = {
            "sum": lambda a=a: a.sum(),
            "bf": lambda a=a: virtual_image(a, bf),
            "adf": lambda a=a: virtual_image(a, adf),
            "small": lambda a=a: virtual_image(a, small),
            "com": lambda a=a: center_of_mass(a),
        }
        if dtype == np.float32:  # on uint16 tensordot would make a float copy of everything
            cands["tdot_bf"] = lambda a=a, m=mask_bf: np.tensordot(a, m, axes=((2, 3), (0, 1)))
            cands["tdot_adf"] = lambda a=a, m=mask_adf: np.tensordot(a, m, axes=((2, 3), (0, 1)))
        t = interleaved(cands, args.repeats)
        # correctness on the benchmark data itself
        ref = a.astype(np.float64, copy=False) if dtype == np.float32 else None
        got = virtual_image(a, small).data
        exp = a[:, :, small.render((Q, Q))].sum(axis=-1, dtype=np.float64)
        assert np.allclose(got, exp, rtol=1e-5), "virtual image disagrees with numpy"
        del ref
        shape = f"{a.shape} {name}, {gb:.2f} GB"
        for key, label, frac in (
            ("bf", "virtual disk (BF+margin)", bf.fraction((Q, Q))),
            ("adf", "virtual annulus (ADF)", adf.fraction((Q, Q))),
            ("small", "virtual small BF disk", small.fraction((Q, Q))),
        ):
            ratio = f"{t['sum'] / t[key]:.2f} x `a.sum()`"
            if "tdot_bf" in t:
                ref_key = "tdot_adf" if key == "adf" else "tdot_bf"
                ratio += f"; {t[ref_key] / t[key]:.2f} x `tensordot`"
            rows.append(
                (
                    f"{label}, {frac:.1%} of detector, {shape}",
                    f"{gb / t[key]:.1f} GB/s ({t[key] * 1e3:.0f} ms)",
                    ratio,
                )
            )
        rows.append(
            (
                f"centre of mass (one pass), {shape}",
                f"{gb / t['com']:.1f} GB/s ({t['com'] * 1e3:.0f} ms)",
                f"{t['sum'] / t['com']:.2f} x `a.sum()`",
            )
        )
        if args.distributed:
            rows.append(bench_distributed(a, bf, shape, args.repeats))
        if args.py4dstem and dtype == np.float32:
            rows.append(bench_py4dstem(a, bf, shape, args, t))
        del a
    return rows


def bench_distributed(a, det, shape, repeats):
    import distributed

    from napari_4dstem.analysis.virtual.images import virtual_image

    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        t = interleaved(
            {
                "local": lambda: virtual_image(a, det),
                "dist": lambda: virtual_image(a, det, backend=client),
            },
            repeats,
        )
    gb = a.nbytes / 1e9
    return (
        f"virtual disk on dask.distributed (LocalCluster 2 workers x 1 thread, processes=False), {shape}",
        f"{gb / t['dist']:.1f} GB/s ({t['dist'] * 1e3:.0f} ms)",
        f"{t['local'] / t['dist']:.2f} x local engine",
    )


def bench_py4dstem(a, det, shape, args, t_ours):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "a.npy"
        np.save(p, a)
        script = Path(d) / "p4.py"
        script.write_text(P4_SCRIPT)
        out = subprocess.run(
            [
                args.py4dstem,
                str(script),
                str(p),
                str(max(3, args.repeats // 2)),
                str(det.radius_px),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    # both relative to a.sum() in their own process, so the ratio compares across processes
    ours_vs_sum = t_ours["sum"] / t_ours["bf"]
    p4_vs_sum = r["sum"] / r["p4"]
    gb = a.nbytes / 1e9
    return (
        f"py4DSTEM {r['version']} get_virtual_image (circle), {shape}",
        f"{gb / r['p4']:.1f} GB/s ({r['p4'] * 1e3:.0f} ms)",
        f"{p4_vs_sum:.2f} x `a.sum()`; ours is {ours_vs_sum / p4_vs_sum:.1f} x py4DSTEM",
    )


def _drop_cache(path) -> None:
    """Drop a file's pages from the page cache (clean pages of files nobody maps)."""
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def write_file_data(path: Path, dtype, gb: float, rng) -> tuple[int, ...]:
    """A .npy of about ``gb`` GB of synthetic patterns, written scan row by scan row."""
    n_pat = int(gb * 1e9 // (Q * Q * np.dtype(dtype).itemsize))
    sx = 128
    sy = max(1, n_pat // sx)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(sy, sx, Q, Q))
    yy, xx = np.indices((Q, Q))
    disk = (np.hypot(yy - 63.5, xx - 64.5) <= 20).astype(np.float32) * 50
    if np.dtype(dtype).kind == "f":
        row = disk + rng.random((sx, Q, Q), dtype=np.float32) * 4
    else:
        row = disk.astype(dtype) + rng.integers(0, 4, (sx, Q, Q), dtype=dtype)
    for i in range(sy):
        out[i] = np.roll(row, i, axis=0)  # cheap variety: no random numbers per row
    out.flush()
    del out
    return (sy, sx, Q, Q)


def run_file(args) -> list[tuple[str, str, str]]:
    import distributed

    from napari_4dstem.analysis.virtual.com import center_of_mass
    from napari_4dstem.analysis.virtual.detectors import AnnulusDetector, DiskDetector
    from napari_4dstem.analysis.virtual.images import virtual_image
    from napari_4dstem.data.datacube import DataCube
    from napari_4dstem.io import emd, npy

    rng = np.random.default_rng(1)
    bf = DiskDetector((63.5, 64.5), 24.0)
    adf = AnnulusDetector((63.5, 64.5), 24.0, 60.0)
    small = DiskDetector((63.5, 64.5), 12.0)
    m_bf = bf.render((Q, Q)).astype(np.float32)
    m_adf = adf.render((Q, Q)).astype(np.float32)
    rows = []
    base = Path(args.file_dir)
    base.mkdir(parents=True, exist_ok=True)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = distributed.Client(cluster)
    try:
        for dtype in args.file_dtypes:
            name = np.dtype(dtype).name
            p_npy = base / f"bench_virtual_{name}.npy"
            p_emd = base / f"bench_virtual_{name}.h5"
            try:
                shape = write_file_data(p_npy, dtype, args.file_gb, rng)
                with npy.read_datacube(p_npy) as dc:
                    emd.write(p_emd, DataCube(dc.data, name="cube"), overwrite=True)
                for fmt, path in (("npy", p_npy), ("EMD", p_emd)):
                    gb = path.stat().st_size / 1e9

                    def opened(fn, path=path, fmt=fmt):
                        def call():
                            if args.cold:
                                _drop_cache(path)
                            dc = (npy if fmt == "npy" else emd).read_datacube(path)
                            try:
                                return fn(dc)
                            finally:
                                dc.close()

                        return call

                    def numpy_ref(op, path=path, fmt=fmt):
                        def call():
                            if args.cold:
                                _drop_cache(path)
                            if fmt == "npy":
                                return op(np.load(path, mmap_mode="r"))
                            with emd.read_datacube(path) as dc:  # h5py, chunk row by chunk row
                                d = dc.data
                                step = d.chunks[0]
                                return [op(d[y : y + step]) for y in range(0, d.shape[0], step)]

                        return call

                    cands = {
                        "sum": numpy_ref(lambda a: a.sum()),
                        "bf": opened(lambda dc: virtual_image(dc, bf)),
                        "adf": opened(lambda dc: virtual_image(dc, adf)),
                        "small": opened(lambda dc: virtual_image(dc, small)),
                        "com": opened(lambda dc: center_of_mass(dc)),
                        "dist": opened(lambda dc: virtual_image(dc, bf, backend=client)),
                    }
                    if np.dtype(dtype).kind == "f":
                        cands["tdot_bf"] = numpy_ref(lambda a: np.tensordot(a, m_bf, axes=((2, 3), (0, 1))))
                        cands["tdot_adf"] = numpy_ref(lambda a: np.tensordot(a, m_adf, axes=((2, 3), (0, 1))))
                    t = interleaved(cands, args.repeats)
                    cache = "cold" if args.cold else "warm"
                    what = f"{shape} {name} {fmt} file, {gb:.2f} GB, {cache} cache"
                    ref = "np.load(mmap)" if fmt == "npy" else "h5py read + numpy"
                    for key, label in (
                        ("bf", "virtual disk (BF+margin)"),
                        ("adf", "virtual annulus (ADF)"),
                        ("small", "virtual small BF disk"),
                        ("com", "centre of mass (one pass)"),
                    ):
                        ratio = f"{t['sum'] / t[key]:.2f} x {ref} `sum`"
                        if "tdot_bf" in t and key != "com":
                            rk = "tdot_adf" if key == "adf" else "tdot_bf"
                            ratio += f"; {t[rk] / t[key]:.2f} x {ref} `tensordot`"
                        rows.append(
                            (
                                f"{label}, {what}",
                                f"{gb / t[key]:.1f} GB/s ({t[key] * 1e3:.0f} ms)",
                                ratio,
                            )
                        )
                    rows.append(
                        (
                            f"virtual disk on dask.distributed (2 worker processes x 1 thread, "
                            f"workers open the file), {what}",
                            f"{gb / t['dist']:.1f} GB/s ({t['dist'] * 1e3:.0f} ms)",
                            f"{t['bf'] / t['dist']:.2f} x local engine",
                        )
                    )
                    print(rows[-1], flush=True)
            finally:
                for p in (p_npy, p_emd):
                    p.unlink(missing_ok=True)
    finally:
        client.close()
        cluster.close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0, help="size of each in-memory dataset")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-distributed", dest="distributed", action="store_false")
    ap.add_argument("--py4dstem", metavar="PYTHON", help="python of a venv with py4DSTEM")
    ap.add_argument("--file-gb", type=float, help="benchmark files of this size instead of RAM")
    ap.add_argument("--file-dir", default=tempfile.gettempdir(), help="where to write them")
    ap.add_argument("--file-dtypes", type=lambda s: s.split(","), default=["uint16", "float32"])
    ap.add_argument("--cold", action="store_true", help="drop the file from the page cache")
    args = ap.parse_args()
    rows = run_file(args) if args.file_gb else run(args)
    print("| measurement | figure | ratio |")
    print("|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
