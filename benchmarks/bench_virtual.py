"""Virtual imaging and centre-of-mass benchmark: the engine against numpy on the same data.

Run: python benchmarks/bench_virtual.py [--gib 1.0] [--repeats 5] [--py4dstem /work/p4venv/bin/python]

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


def interleaved(cands: dict, repeats: int) -> dict[str, float]:
    """Median time of each candidate; one warm-up call each, then rounds in turn."""
    for f in cands.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in cands}
    for _ in range(repeats):
        for k, f in cands.items():
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
    from napari_4dstem.analysis.com import center_of_mass
    from napari_4dstem.analysis.detectors import AnnulusDetector, DiskDetector
    from napari_4dstem.analysis.virtual import virtual_image

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

    from napari_4dstem.analysis.virtual import virtual_image

    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0, help="size of each in-memory dataset")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-distributed", dest="distributed", action="store_false")
    ap.add_argument("--py4dstem", metavar="PYTHON", help="python of a venv with py4DSTEM")
    args = ap.parse_args()
    rows = run(args)
    print("| measurement | figure | ratio |")
    print("|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
