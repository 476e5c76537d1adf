"""Why the second of two overlapping grains is missed (issue #18), pattern by pattern.

    PYTHONPATH=src python benchmarks/bench_acom_overlap_diag.py [--seed 18] [--n 100]

Data: the two-grain thin-film overlaps of ``bench_acom_independent.py`` (sinc^2 films 10-40 nm,
Debye-Waller 1.5x, 1e5 electrons, 2 noise peaks, weights 0.5-0.7 / 0.3-0.5, > 15 deg apart), the
same seeds; plan 2 deg, 10 nm, the matcher's defaults with ``n_matches=2``. Per crystal it prints:

* every failure (not both grains within 5 deg among the top 2) by what its two matches are:
  ``g1``/``g2`` a grain (within 5 deg), ``turn1``/``turn2`` a grain turned 180 deg about the
  beam (within 10 deg), ``other``, ``masked``;
* the rank of each grain (and of it or its turn) among the first pass's 8 distinct refined
  candidates (``overlap="candidates"``; 9 = not among them);
* oracle residuals: the peaks within the position tolerance of the *true* grain's reflections
  taken out, the rest matched: how often the other grain comes first (the ceiling of a residual
  search given the right first grain);
* the turn decided in isolation: each true grain (the other true grain's peaks taken out)
  refined from itself and from its 180-deg turn, and which of the two the refinement's cosine
  ranks first;
* the joint two-grain score (the pair choice's) of the exact true pair against the chosen pair;
* on single-grain sets of the same draw: how often ``n_matches=2`` changes the first match
  against ``n_matches=1`` (bit for bit), and how often a second grain is reported.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def _mis(a, b, g):
    from napari_4dstem.analysis.crystal.symmetry import misorientation_deg

    return np.nan_to_num(misorientation_deg(a, b, g), nan=180.0)


def _subset(off, keep):
    cnt = np.add.reduceat(keep.astype(np.int64), off[:-1]) if len(keep) else np.zeros(len(off) - 1, np.int64)
    cnt = np.where(np.diff(off) > 0, cnt, 0)
    return np.concatenate([[0], np.cumsum(cnt)]).astype(np.int64)


def _refine(M, plan, off, gx, gy, amp, U0, ok, tol):
    best = np.full(ok.shape, -np.inf)
    for prof in (None, "gaussian"):  # as the matcher: the plan's curve and the Gaussian, the better
        args, outs = M.refine_arguments(
            plan,
            off,
            gx,
            gy,
            amp,
            np.where(ok[..., None, None], U0, np.nan),
            ok,
            intensity_power=0.25,
            k_max=1.5,
            tol_pos=tol,
            n_iter=8,
            profile=prof,
        )
        for _ in M._run_ranges(M._refine_range, len(ok), args, 2, 16):
            pass
        best = np.maximum(best, outs[1])
    return best


def diagnose(name, seed, n):
    import bench_acom_independent as B

    from napari_4dstem.analysis.acom import matching as M
    from napari_4dstem.analysis.acom.plan import build_orientation_plan, rotation_z
    from napari_4dstem.analysis.crystal.structure import bundled_crystal
    from napari_4dstem.data.results import BraggPeaks
    from napari_4dstem.engine.jobs import run_job

    T = rotation_z(np.pi)
    c = bundled_crystal(name)
    g = c.point_group
    plan = build_orientation_plan(c, energy_kev=300, k_max_inv_A=1.5, step_deg=2.0)
    rng = np.random.default_rng([seed, 100000, True, ord(name[0])])
    pk, truth, _w, _rich = B.make_set(c, n, dose=1e5, rng=rng, overlap=True)
    res = M.match_orientations(pk, plan, n_matches=2, min_peaks=3)
    U = res.orientation[0]
    m = np.stack([[_mis(U[:, k], truth[:, j], g) for j in range(2)] for k in range(2)]).transpose(2, 0, 1)
    mt = np.stack([[_mis(U[:, k], T @ truth[:, j], g) for j in range(2)] for k in range(2)]).transpose(2, 0, 1)
    both = ((m[:, 0, 0] < 5) & (m[:, 1, 1] < 5)) | ((m[:, 0, 1] < 5) & (m[:, 1, 0] < 5))
    fail = ~both
    cat = collections.Counter()
    for i in np.nonzero(fail)[0]:
        kinds = []
        for k in range(2):
            if np.isnan(U[i, k, 0, 0]):
                kinds.append("masked")
            elif m[i, k].min() < 5:
                kinds.append(f"g{np.argmin(m[i, k]) + 1}")
            elif mt[i, k].min() < 10:
                kinds.append(f"turn{np.argmin(mt[i, k]) + 1}")
            else:
                kinds.append("other")
        cat["/".join(kinds)] += 1
    turned = sum(v for k, v in cat.items() if "turn" in k)
    print(f"\n## {name} (seed {seed}, {n} overlaps, median {np.median(np.diff(pk.offsets)) - 1:.0f} peaks)")
    print(f"both within 5 deg: {both.mean():.3f}; failures {fail.sum()}, of which {turned} hold a turned grain")
    print("failures by match 1 / match 2: " + ", ".join(f"{k} {v}" for k, v in cat.most_common()))

    cands = M.match_orientations(pk, plan, n_matches=8, min_peaks=3, overlap="candidates").orientation[0]
    for j in range(2):
        rk, rkt = np.full(n, 9), np.full(n, 9)
        for k in range(7, -1, -1):
            hit = _mis(cands[:, k], truth[:, j], g) < 5
            rk[hit] = k
            rkt[hit | (_mis(cands[:, k], T @ truth[:, j], g) < 5)] = k
        print(
            f"grain {j + 1}: first-pass rank 0..8 (9 = absent) {np.bincount(rk, minlength=10).tolist()}, "
            f"it or its turn {np.bincount(rkt, minlength=10).tolist()}; on the failures among the 8: "
            f"{np.mean(rk[fail] < 8):.2f}"
        )

    off, gx, gy, amp = M.peaks_to_lab(pk, k_max_inv_A=1.5, min_radius_inv_A=0.5 * plan.shell_radii[0])
    px = pk.calibration.k_pixel_size_in("1/A")
    tol = 1.5 * px
    ones, zeros = np.ones(n, bool), np.zeros(n, np.int64)
    for j in range(2):
        o = 1 - j
        exp = M._explained_peaks([plan], truth[:, j], ones, zeros, off, gx, gy, tol, 1.5)
        recs = []
        for i in range(n):
            a, b = off[i], off[i + 1]
            k = ~exp[a:b]
            recs.append({"qy": 128 + gy[a:b][k] / px, "qx": 128 + gx[a:b][k] / px, "intensity": amp[a:b][k] ** 2})
        pr = BraggPeaks.from_lists(recs, (1, n), calibration=pk.calibration)
        r = M.match_orientations(pr, plan, n_matches=2, min_peaks=3, overlap="candidates").orientation[0]
        d0, d1, dt = _mis(r[:, 0], truth[:, o], g), _mis(r[:, 1], truth[:, o], g), _mis(r[:, 0], T @ truth[:, o], g)
        left = np.diff(pr.offsets)
        print(
            f"oracle residual, true grain {j + 1}'s peaks out (median {np.median(left):.0f} left): grain {o + 1} "
            f"first {np.mean(d0 < 5):.2f}, among 2 {np.mean((d0 < 5) | (d1 < 5)):.2f}, "
            f"turned first {np.mean(dt < 5):.2f}"
        )
        # the turn in isolation: grain o with grain j's peaks out, refined from itself and its turn
        keep = ~exp
        off_r = _subset(off, keep)
        okr = np.repeat((np.diff(off_r) >= 3)[:, None], 2, axis=1)
        corr = _refine(
            M,
            plan,
            off_r,
            gx[keep],
            gy[keep],
            amp[keep] ** 0.5,
            np.stack([truth[:, o], T @ truth[:, o]], 1),
            okr,
            tol,
        )
        win = np.mean(corr[:, 0] > corr[:, 1])
        print(f"  grain {o + 1} refined from the truth beats it refined from its turn: {win:.2f}")

    pool = np.stack([U[:, 0], U[:, 1], truth[:, 0], truth[:, 1]], 1)
    okp = np.isfinite(pool[..., 0, 0])
    pool = np.where(okp[..., None, None], pool, np.eye(3))
    scores = []
    for pair in ((0, 1), (2, 3)):
        job = M._joint_pairs_job(
            [plan],
            pool[:, list(pair)],
            okp[:, list(pair)],
            np.zeros((n, 2), np.int64),
            off,
            gx,
            gy,
            amp**0.5,
            tol_pos=tol,
            k_max=1.5,
            intensity_power=0.25,
            separation=[5.0],
            n_threads=2,
            chunk=16,
            progress=None,
        )
        scores.append(run_job(job)[2])
    print(
        "joint score, exact true pair above the chosen pair on the failures: "
        f"{np.mean(scores[1][fail] > scores[0][fail]):.2f} "
        f"(medians {np.median(scores[1][fail]):.3f} / {np.median(scores[0][fail]):.3f})"
    )

    rng = np.random.default_rng([seed, 100000, False, ord(name[0])])
    pks, _t, _, _ = B.make_set(c, n, dose=1e5, rng=rng)
    one = M.match_orientations(pks, plan, n_matches=1, min_peaks=3).orientation[0, :, 0]
    for label, kw in (("now", {}), ("pair everywhere (before session 11)", {"pair_gain": -np.inf})):
        two = M.match_orientations(pks, plan, n_matches=2, min_peaks=3, **kw).orientation[0]
        same = np.all((one == two[:, 0]) | (np.isnan(one) & np.isnan(two[:, 0])), axis=(1, 2))
        moved5 = _mis(one, two[:, 0], g) > 5
        print(
            f"single grains, n_matches=2 {label}: first match identical {same.mean():.2f}, moved > 5 deg "
            f"{moved5.mean():.2f}, a second grain reported {np.mean(np.isfinite(two[:, 1, 0, 0])):.2f}"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--crystals", default="Au,Fe,Ti")
    args = ap.parse_args(argv)
    for name in args.crystals.split(","):
        diagnose(name, args.seed, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
