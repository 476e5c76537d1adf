"""Structure classification: accuracy on the hard cases and speed, against PCA + k-means.

    python benchmarks/bench_classify.py [--scan 40] [--det 96] [--cases all] [--seeds 9001,9002] [--speed]
        [--space components|maf|auto] [--remerge-jump 20 [--remerge-separation T]]

Accuracy. Every case is drawn by a generator of its own (this file: the kinematic engine
``napari_4dstem.simulation.kinematic.excited_reflections`` on bundled crystals, 300 kV,
1 mrad probe), not by the generator the classification was developed and tested on (soft-disk
square lattices in ``tests/analysis/test_classify.py``). The parameters below were set once,
before the first run, and not changed after looking at results. Grains are Voronoi cells;
the probe mixes neighbouring cells: each pattern is ``sum_c f_c P_c`` with ``f`` the one-hot
grain map blurred by a Gaussian of 0.7 px (so boundary pixels mix two classes), the truth is
the largest fraction. Every case also has a thickness gradient (kinematic intensities follow
it), per-reflection "dynamical" intensity factors varying smoothly over the scan
(``1 + 0.35 sin``), a strain gradient (0.5 % across the scan), a linear descan (up to 2 px) and
Poisson noise at the stated dose (electrons per pattern).

Scored: adjusted Rand index (ARI) of the label map and the number of classes, for our
default ``classify`` (class count suggested), for ours given the true number of classes, and
for the issue's baseline, a ten-line PCA (10
components) + k-means on the raw patterns *given the true number of classes*, timed in the
same run; and the mean absolute error of our mixing fractions on the boundary pixels.

Speed (``--speed``): the full classification (origin, features, decomposition, class count,
class means) of a 256 x 256 x 128 x 128 uint16 .npy (2 GiB, memory-mapped), next to one
numpy pass over the same file (``sum`` of every pattern, blocks of 32 MiB) as the
bandwidth reference, and the peak RSS of the process; with ``--space`` other than
``components`` the same file is classified again with ``space="components"`` (a fresh process
each), so the two times come from the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_4dstem.analysis.classify import ClassifyParams, FeatureParams, classify
from napari_4dstem.analysis.crystal.structure import bundled_crystal
from napari_4dstem.simulation.engines import SimulationRequest
from napari_4dstem.simulation.kinematic import excited_reflections, render_disks_clipped
from napari_4dstem.simulation.samples import zone_axis_rotation

PX = 0.02  # 1/A per pixel
CONV = 1.0  # mrad
THICK = np.linspace(50.0, 600.0, 12)  # A


class Phase:
    """A crystal in one orientation: reflections offsets (px) and intensities per thickness."""

    def __init__(self, crystal: str, uvw, inplane_deg=0.0, tilt_deg=0.0, scale=1.0, det=96):
        tilt = None
        if tilt_deg:
            a = math.radians(tilt_deg)
            tilt = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
        U = zone_axis_rotation(uvw, inplane_deg, tilt)
        req = SimulationRequest(
            bundled_crystal(crystal),
            orientation=U,
            thicknesses_A=tuple(THICK),
            convergence_mrad=CONV,
            shape=(det, det),
            pixel_size_inv_A=PX,
            strain=np.eye(2) * (scale - 1.0),
        )
        r = excited_reflections(req)
        o = req.origin_px
        keep = r.intensity.max(axis=0) > 1e-4
        self.offsets = np.stack([r.qy[keep] - o[0], r.qx[keep] - o[1]], -1)
        self.intensity = r.intensity[:, keep]
        self.radius = req.probe_radius_px
        self.amorphous = False


class Amorphous:
    def __init__(self, det=96):
        self.amorphous = True
        self.radius = CONV * 1e-3 / 0.019687 / PX


def draw_case(phases, grain_of, *, scan, det, dose, seed):
    """Patterns (uint16) and the per-pixel class fractions for a case."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    sy = sx = scan
    k = len(phases)
    onehot = np.stack([(grain_of == c).astype(float) for c in range(k)], -1)
    frac = np.stack([ndimage.gaussian_filter(onehot[..., c], 0.7, mode="nearest") for c in range(k)], -1)
    frac /= frac.sum(-1, keepdims=True)
    yy, xx = np.mgrid[:sy, :sx] / max(sy - 1, 1)
    thick_idx = np.clip(np.round(xx * (len(THICK) - 1)), 0, len(THICK) - 1).astype(int)
    strain = 1.0 + 0.005 * (yy - 0.5)
    o0 = np.array([det / 2 - 0.3, det / 2 + 0.4])
    origin = o0 + np.stack([2.0 * yy, -1.5 * xx], -1)  # descan, px
    kk = np.hypot(*np.mgrid[-det // 2 : det - det // 2, -det // 2 : det - det // 2]) * PX
    diffuse = 0.02 * np.exp(-kk / 0.3)
    phase_rng = rng.uniform(0, 2 * np.pi, 4096)
    out = np.empty((sy, sx, det, det), np.uint16)
    for i in range(sy):
        for j in range(sx):
            p = np.zeros((det, det))
            for c, ph in enumerate(phases):
                f = frac[i, j, c]
                if f < 1e-3:
                    continue
                o = origin[i, j]
                if ph.amorphous:
                    ky, kx = np.mgrid[:det, :det]
                    r = np.hypot(ky - o[0], kx - o[1]) * PX
                    ring = 0.6 * np.exp(-0.5 * ((r - 0.36) / 0.05) ** 2) + 0.3 * np.exp(-0.5 * ((r - 0.62) / 0.08) ** 2)
                    bf = render_disks_clipped(o[None], np.array([[1.0]]), (det, det), radius_px=ph.radius, edge_px=0.5)[
                        0
                    ]
                    p += f * (0.5 * bf / bf.sum() + 0.5 * ring / ring.sum())
                    continue
                inten = ph.intensity[thick_idx[i, j]]
                n = len(inten)
                dyn = 1 + 0.35 * np.sin(phase_rng[:n] + 2.5 * yy[i, j] * (1 + np.arange(n) % 3) + 1.7 * xx[i, j])
                inten = inten * dyn
                cen = np.concatenate([o[None], o + ph.offsets / strain[i, j]])
                amp = np.concatenate([[max(0.05, 1 - inten.sum())], inten])[None]
                d = render_disks_clipped(cen, amp, (det, det), radius_px=ph.radius, edge_px=0.5)[0]
                p += f * d / max(d.sum(), 1e-12) * (0.6 + amp.sum() * 0.4)
            p = p / p.sum() + diffuse / diffuse.sum() * 0.15
            out[i, j] = rng.poisson(p / p.sum() * dose)
    truth = frac.argmax(-1)
    return out, truth, frac


def voronoi(scan, n, seed):
    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, scan, (n, 2))
    yy, xx = np.mgrid[:scan, :scan]
    d2 = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    return np.argmin(d2, -1)


def cases(det):
    return {
        "low_dose_1e3": (
            lambda: [Phase("Au", (0, 0, 1), det=det), Phase("Au", (0, 1, 1), det=det), Amorphous(det)],
            1e3,
        ),
        "lattice_2.5pct": (
            lambda: [Phase("Au", (0, 0, 1), det=det), Phase("Au", (0, 0, 1), scale=1.025, det=det)],
            1e4,
        ),
        "rotated_4deg_and_tilted": (
            lambda: [
                Phase("Au", (0, 0, 1), 0, det=det),
                Phase("Au", (0, 0, 1), 4, det=det),
                Phase("Au", (0, 0, 1), 8, det=det),
                Phase("Au", (0, 0, 1), 0, tilt_deg=1.5, det=det),
            ],
            1e4,
        ),
        # one phase only: the thickness, dynamical-intensity and strain gradients and the
        # descan must not split it (the right answer is one class)
        "one_phase_drift_descan": (lambda: [Phase("Au", (0, 0, 1), det=det)], 1e4),
        "three_phases_boundaries": (
            lambda: [
                Phase("Au", (0, 0, 1), 10, det=det),
                Phase("Cu", (0, 1, 1), 0, det=det),
                Phase("Si", (0, 1, 1), 30, det=det),
            ],
            1e4,
        ),
    }


def baseline(data, k, seed=0):
    """The issue's ten-line baseline: PCA (10) + k-means on the raw patterns, k given."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    x = data.reshape(data.shape[0] * data.shape[1], -1).astype(np.float32)
    z = PCA(10, random_state=seed).fit_transform(x)
    return KMeans(k, n_init=10, random_state=seed).fit_predict(z).reshape(data.shape[:2])


def run_accuracy(
    scan, det, which, seed, features="pattern", space="components", maf=8, remerge=None, remerge_separation=0.0
):
    from sklearn.metrics import adjusted_rand_score as ari

    rows = []
    for ci, (name, (make, dose)) in enumerate(cases(det).items()):
        if which != "all" and name not in which.split(","):
            continue
        phases = make()
        grains = voronoi(scan, 2 * len(phases), seed + ci)
        grain_class = np.arange(2 * len(phases)) % len(phases)
        data, truth, frac = draw_case(phases, grain_class[grains], scan=scan, det=det, dose=dose, seed=seed + ci)
        k = len(phases)
        t = time.perf_counter()
        fp = FeatureParams(features)
        r = classify(data, features=fp, params=ClassifyParams(space=space, maf=maf), class_means=False)
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        rk = classify(data, features=fp, params=ClassifyParams(n_classes=k, space=space, maf=maf), class_means=False)
        t_ours_k = time.perf_counter() - t
        new = None
        if remerge is not None:  # the same classification with ClassifyParams.remerge_jump set, same data
            rp = ClassifyParams(space=space, maf=maf, remerge_jump=remerge, remerge_separation=remerge_separation)
            new = classify(data, features=fp, params=rp, class_means=False)
        t = time.perf_counter()
        b = baseline(data, k)
        t_base = time.perf_counter() - t
        # mixing fractions on boundary pixels: our class c <-> truth class by majority
        match = {c: np.bincount(truth[r.labels == c], minlength=k).argmax() for c in range(r.n_classes)}
        mixed = frac.max(-1) < 0.95
        est = np.zeros_like(frac)
        for c, tc in match.items():
            est[..., tc] += r.mixing[..., c]
        mae = float(np.abs(est - frac)[mixed].sum(-1).mean() / 2) if mixed.any() else float("nan")
        row = {
            "case": name,
            "seed": seed + ci,
            "features": features,
            "space": space,
            "space_chosen": r.params["space_chosen"],
            "maf": maf,
            "dose": dose,
            "true_k": k,
            "ours_k": r.n_classes,
            "ours_ari": round(float(ari(truth.ravel(), r.labels.ravel())), 4),
            "ours_s": round(t_ours, 2),
            "ours_given_k_ari": round(float(ari(truth.ravel(), rk.labels.ravel())), 4),
            "ours_given_k_s": round(t_ours_k, 2),
            **(
                {}
                if new is None
                else {
                    "remerge_jump": remerge,
                    "remerge_separation": remerge_separation,
                    "remerge_k": new.n_classes,
                    "remerge_ari": round(float(ari(truth.ravel(), new.labels.ravel())), 4),
                }
            ),
            "baseline_ari": round(float(ari(truth.ravel(), b.ravel())), 4),
            "baseline_s": round(t_base, 2),
            "mixed_pixels": int(mixed.sum()),
            "mixing_mae": round(mae, 3),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def run_speed(tmp: Path, seed=0, spaces=("components",)):
    scan, det = 256, 128
    path = tmp / "big.npy"
    phases = [Phase("Au", (0, 0, 1), det=det), Phase("Au", (0, 0, 1), 5, det=det), Phase("Cu", (0, 1, 1), det=det)]
    grains = voronoi(32, 6, seed) % 3
    small, _, _ = draw_case(phases, grains, scan=32, det=det, dose=1e4, seed=seed)
    big_truth = np.kron(grains, np.ones((8, 8), int))
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(scan, scan, det, det))
    rng = np.random.default_rng(seed)
    for i in range(scan):  # each 8 x 8 tile repeats one drawn pattern, with fresh noise
        base = small[i // 8].astype(np.float32)
        lam = np.repeat(base, 8, axis=0)
        mm[i] = rng.poisson(np.maximum(lam, 0.0)).astype(np.uint16)
    mm.flush()
    del mm
    np.save(tmp / "tiles.npy", big_truth)
    # the classification in a fresh process of its own: its peak RSS is the classification's
    child = r"""
import json, sys, time
import numpy as np

def hwm():  # peak RSS of this process image in KiB (ru_maxrss would include the parent's)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
from napari_4dstem.analysis.classify import ClassifyParams, FeatureParams, classify
path, truth, space = sys.argv[1], np.load(sys.argv[2]), sys.argv[3]
data = np.load(path, mmap_mode="r")
rss0 = hwm()
t = time.perf_counter()
r = classify(data, params=ClassifyParams(space=space))
t_cls = time.perf_counter() - t
rss1 = hwm()
t = time.perf_counter()  # after: its mapped pages would count in the peak RSS
for y0 in range(0, data.shape[0], 4):
    data[y0 : y0 + 4].sum(axis=(2, 3), dtype=np.uint64)
t_sum = time.perf_counter() - t
from sklearn.metrics import adjusted_rand_score as ari
print(json.dumps({"t_sum": t_sum, "t_cls": t_cls, "rss0": rss0, "rss1": rss1, "k": r.n_classes,
                  "chosen": r.params["space_chosen"],
                  "ari": float(ari(truth.ravel(), r.labels.ravel())),
                  "seconds": {k: v for k, v in r.params.items() if k.startswith("seconds")}}))
"""
    import subprocess

    rows = []
    for space in spaces:
        out = subprocess.run(
            [sys.executable, "-c", child, str(path), str(tmp / "tiles.npy"), space],
            capture_output=True,
            text=True,
            check=True,
        )
        res = json.loads(out.stdout.strip().splitlines()[-1])
        row = {
            "space": space,
            "space_chosen": res["chosen"],
            "speed_file_GiB": round(path.stat().st_size / 2**30, 2),
            "numpy_pass_s": round(res["t_sum"], 2),
            "classify_s": round(res["t_cls"], 2),
            "ratio_to_one_pass": round(res["t_cls"] / res["t_sum"], 1),
            "classify_patterns_per_s": round(scan * scan / res["t_cls"]),
            "peak_rss_MiB_before_classify": round(res["rss0"] / 1024),
            "peak_rss_MiB_after_classify": round(res["rss1"] / 1024),
            "n_classes": res["k"],
            "ari_vs_tiles": round(res["ari"], 4),
            "seconds": {k: round(v, 2) for k, v in res["seconds"].items()},
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scan", type=int, default=32)
    ap.add_argument("--det", type=int, default=96)
    ap.add_argument("--cases", default="all")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--seeds", default=None, help="comma-separated seeds, each drawn as --seed draws (e.g. 9001,9002)")
    ap.add_argument("--features", default="pattern", help="feature kind of our classification")
    ap.add_argument(
        "--space",
        default=ClassifyParams().space,
        choices=["components", "maf", "auto"],
        help="ClassifyParams.space of our classification (default: the library's default)",
    )
    ap.add_argument("--maf", type=int, default=8, help="ClassifyParams.maf: factors for --space maf/auto")
    ap.add_argument(
        "--remerge-jump",
        type=float,
        default=None,
        help="also classify with ClassifyParams(remerge_jump=...) on the same data (suggested count)",
    )
    ap.add_argument(
        "--remerge-separation",
        type=float,
        default=0.0,
        help="with --remerge-jump: ClassifyParams.remerge_separation of that classification (0: no guard)",
    )
    ap.add_argument("--speed", action="store_true", help="also the 2 GiB speed/RSS run")
    ap.add_argument("--no-accuracy", action="store_true")
    args = ap.parse_args(argv)
    out = {}
    if not args.no_accuracy:
        seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [args.seed]
        out["accuracy"] = [
            row
            for seed in seeds
            for row in run_accuracy(
                args.scan,
                args.det,
                args.cases,
                seed,
                args.features,
                args.space,
                args.maf,
                args.remerge_jump,
                args.remerge_separation,
            )
        ]
    if args.speed:
        with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
            spaces = ("components",) if args.space == "components" else ("components", args.space)
            out["speed"] = run_speed(Path(tmp), spaces=spaces)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
