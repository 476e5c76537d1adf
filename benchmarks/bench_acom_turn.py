"""The 180-deg turn of each match: zone partner and ambiguity flag, scored on thin films (issue #18).

    PYTHONPATH=src python benchmarks/bench_acom_turn.py [--seed 51207] [--n 200] [--n-overlap 200]

Data: the independent thin-film sets of ``bench_acom_independent.py`` (``make_set``: sinc^2
rocking curves of 10-40 nm films, Debye-Waller 1.5x, Poisson counts at 1e5 / 1e4 electrons, 2
noise peaks; the matcher assumes a Gaussian/Lorentzian fall-off at 10 nm), single grains and
two-grain overlaps; plan 2 deg, the matcher's defaults with ``n_matches=2`` (as that benchmark).
Draw 18 was used to choose the line (``turn_line`` 0.1); score on a new draw.

Configurations, same data, same run, alternating (timing: median of ``--reps``):
``before`` = ``turn_line=0`` (the matcher without the turn step: bit for bit the same matches);
``after`` = the defaults (each match's zone partner and ``turn_ambiguous``).

Per set it prints: within 2 deg (all, "rich" patterns with >= 6 reflections of >= 5e-4 of the
beam), the share flagged ambiguous, within 2 deg on the unflagged (all and rich) and on the
flagged, "match or its partner" within 2 deg on the flagged, the unflagged failures whose
partner is the truth (what a decision between the two could still gain), and the brief's side
test (observed Friedel-pair asymmetry: the first match against the match turned exactly by
180 deg about the beam, unrefined): how often it agrees with the refined match. Overlaps: both
grains within 5 deg among the top 2, and the same counting a flagged match's partner.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def _mis(a, b, g):
    from napari_4dstem.analysis.crystal.symmetry import misorientation_deg

    return np.nan_to_num(misorientation_deg(a, b, g), nan=180.0)


def side_test(crystal, U, off, gx, gy, inten, tol, k_max=1.5):
    """Per pattern, True when the Friedel-pair asymmetry of the peaks favours ``U`` over ``T U``.

    For each observed peak ``p`` (the brighter of a pair), the peak at ``-p`` (0 if none within
    ``tol``); ``U`` predicts ``p`` brighter where its reflection at ``p`` is nearer the Bragg
    condition than the one at ``-p``; ``T U`` predicts the reverse (the same excitation errors at
    reflected positions). The statistic is the sum of ``sign`` agreements weighted by
    ``I(p)^0.5 - I(-p)^0.5``: positive favours ``U``; it assumes only that intensity falls with
    ``|s|``, not the shape of the fall.
    """
    from napari_4dstem.data.calibration import electron_wavelength_A

    lam = electron_wavelength_A(300.0)
    G = crystal.reciprocal_points(k_max * 1.05).g
    g2 = np.sum(G**2, 1)
    out = np.zeros(len(U), bool)
    for i in range(len(U)):
        if not np.isfinite(U[i]).all():
            continue
        a, b = off[i], off[i + 1]
        px, py, inten_i = gx[a:b], gy[a:b], inten[a:b]
        v = G @ U[i].T
        s = np.abs(v[:, 2] + 0.5 * lam * g2)
        keep = np.hypot(v[:, 0], v[:, 1]) <= k_max
        v, s = v[keep], s[keep]
        stat = 0.0
        for j in range(len(px)):
            dp = (v[:, 0] - px[j]) ** 2 + (v[:, 1] - py[j]) ** 2
            dm = (v[:, 0] + px[j]) ** 2 + (v[:, 1] + py[j]) ** 2
            ip, im = np.argmin(dp), np.argmin(dm)
            if dp[ip] > tol**2 or dm[im] > tol**2:
                continue
            dd = (px + px[j]) ** 2 + (py + py[j]) ** 2
            k = np.argmin(dd)
            i_m = inten_i[k] if dd[k] <= tol**2 else 0.0
            if i_m > inten_i[j]:
                continue
            stat += (inten_i[j] ** 0.5 - i_m**0.5) * np.sign(s[im] - s[ip])
        out[i] = stat > 0
    return out


def run_set(c, plan, pk, truth, rich, overlap, reps):
    from napari_4dstem.analysis.acom.matching import match_orientations, peaks_to_lab
    from napari_4dstem.analysis.acom.plan import rotation_z

    g = c.point_group
    times = {"before": [], "after": []}
    res = {}
    match_orientations(pk, plan, n_matches=2, min_peaks=3)  # warm-up (numba caches)
    for _ in range(reps):
        for cfg, kw in (("before", {"turn_line": 0.0}), ("after", {})):
            t0 = time.perf_counter()
            res[cfg] = match_orientations(pk, plan, n_matches=2, min_peaks=3, **kw)
            times[cfg].append(time.perf_counter() - t0)
    b, a = res["before"], res["after"]
    same = np.array_equal(np.nan_to_num(b.orientation, nan=9.0), np.nan_to_num(a.orientation, nan=9.0))
    n = len(truth)
    row = {
        "patterns_per_s_before": n / float(np.median(times["before"])),
        "patterns_per_s_after": n / float(np.median(times["after"])),
        "matches_identical": bool(same),
    }
    U, P, amb = a.orientation[0], a.turn_partner[0], a.turn_ambiguous[0]
    if not overlap:
        e = _mis(U[:, 0], truth, g)
        eP = _mis(P[:, 0], truth, g)
        f = amb[:, 0]
        ok = e < 2
        off, gx, gy, amp = peaks_to_lab(pk, k_max_inv_A=1.5, min_radius_inv_A=0.5 * plan.shell_radii[0])
        tol = 1.5 * pk.calibration.k_pixel_size_in("1/A")
        side = side_test(c, U[:, 0], off, gx, gy, amp**2, tol)
        valid = np.isfinite(U[:, 0, 0, 0])
        e_t = _mis(U[:, 0], rotation_z(np.pi) @ truth, g)
        row.update(
            within2=float(ok.mean()),
            rich_frac=float(rich.mean()),
            rich_within2=float(ok[rich].mean()),
            flagged=float(f.mean()),
            unflagged_within2=float(ok[~f].mean()),
            unflagged_rich_within2=float(ok[~f & rich].mean()) if (~f & rich).any() else float("nan"),
            unflagged_rich_frac=float(np.mean(~f & rich)),
            flagged_within2=float(ok[f].mean()) if f.any() else float("nan"),
            flagged_match_or_partner2=float(np.mean(ok[f] | (eP[f] < 2))) if f.any() else float("nan"),
            match_or_flagged_partner2=float(np.mean(ok | (f & (eP < 2)))),
            unflagged_failures=int(np.sum(~f & ~ok)),
            unflagged_failures_partner_is_truth=int(np.sum(~f & ~ok & (eP < 2))),
            failures_turned_10deg=int(np.sum(~ok & (e_t < 10))),
            failures_turned_flagged=int(np.sum(~ok & (e_t < 10) & f)),
            side_test_agrees=float(side[valid].mean()),
        )
    else:
        m = np.stack([[_mis(U[:, k], truth[:, j], g) for j in range(2)] for k in range(2)]).transpose(2, 0, 1)
        mp = np.stack([[_mis(P[:, k], truth[:, j], g) for j in range(2)] for k in range(2)]).transpose(2, 0, 1)
        mm = np.where(amb[:, :, None], np.minimum(m, mp), m)

        def both(x):
            return ((x[:, 0, 0] < 5) & (x[:, 1, 1] < 5)) | ((x[:, 0, 1] < 5) & (x[:, 1, 0] < 5))

        b0, b1 = both(m), both(mm)
        anyf = amb.any(1)
        row.update(
            both5=float(b0.mean()),
            both5_or_flagged_partner=float(b1.mean()),
            matches_flagged=float(amb[np.isfinite(U[:, :, 0, 0])].mean()),
            patterns_with_a_flag=float(anyf.mean()),
            both5_no_flag=float(b0[~anyf].mean()) if (~anyf).any() else float("nan"),
        )
    return row


def time_turn_step(seed, n=200):
    """The turn step's own time (one thread, 2 matches a pattern) against the matching without it."""
    import bench_acom_independent as B

    from napari_4dstem.analysis.acom.matching import match_orientations
    from napari_4dstem.analysis.acom.plan import build_orientation_plan
    from napari_4dstem.analysis.acom.turn import turn_partners
    from napari_4dstem.analysis.crystal.structure import bundled_crystal

    print(f"load average: {os.getloadavg()}", flush=True)
    for name in ("Au", "Ti", "Fe"):
        c = bundled_crystal(name)
        plan = build_orientation_plan(c, energy_kev=300, k_max_inv_A=1.5, step_deg=2.0)
        rng = np.random.default_rng([seed, 100000, False, ord(name[0])])
        pk, _truth, _, _ = B.make_set(c, n, dose=1e5, rng=rng)
        U = match_orientations(pk, plan, n_matches=2, min_peaks=3, turn_line=0).orientation[0]
        turn_partners(plan, U[:5])  # compiled
        ts, tm = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            turn_partners(plan, U)
            ts.append(time.perf_counter() - t0)
        for _ in range(3):
            t0 = time.perf_counter()
            match_orientations(pk, plan, n_matches=2, min_peaks=3, turn_line=0)
            tm.append(time.perf_counter() - t0)
        print(
            f"{name}: turn step (one thread) {1e3 * np.median(ts) / n:.3f} ms/pattern (2 matches); matching "
            f"without it {1e3 * np.median(tm) / n:.2f} ms/pattern; share {100 * np.median(ts) / np.median(tm):.1f} %",
            flush=True,
        )
    print(f"load average: {os.getloadavg()}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=51207)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--n-overlap", type=int, default=200)
    ap.add_argument("--crystals", default="Au,Ti,Fe")
    ap.add_argument("--doses", default="1e5,1e4")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--time-step", action="store_true", help="only time the turn step against the matching")
    args = ap.parse_args(argv)
    if args.time_step:
        time_turn_step(args.seed)
        return 0

    import bench_acom_independent as B

    from napari_4dstem.analysis.acom.plan import build_orientation_plan
    from napari_4dstem.analysis.crystal.structure import bundled_crystal

    rows = []
    print(f"load average at start: {os.getloadavg()}", flush=True)
    for name in args.crystals.split(","):
        c = bundled_crystal(name)
        plan = build_orientation_plan(c, energy_kev=300, k_max_inv_A=1.5, step_deg=2.0)
        for dose in (float(d) for d in args.doses.split(",")):
            for overlap in (False, True):
                n = args.n_overlap if overlap else args.n
                if n <= 0:
                    continue
                rng = np.random.default_rng([args.seed, int(dose), overlap, ord(name[0])])
                pk, truth, _w, rich = B.make_set(c, n, dose=dose, rng=rng, overlap=overlap)
                row = {"crystal": name, "dose": dose, "set": "overlap" if overlap else "single", "n": n}
                row.update(run_set(c, plan, pk, truth, rich, overlap, args.reps))
                row["load"] = os.getloadavg()[0]
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print()
    print(
        "| crystal | e | within 2 deg (rich) | flagged ambiguous | unflagged: within 2 deg (rich) | "
        "flagged: within 2 / match or partner | match, or partner where flagged | side test agrees | "
        "patterns/s before / after |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["set"] != "single":
            continue
        print(
            f"| {r['crystal']} | {r['dose']:.0e} | {100 * r['within2']:.1f} % ({100 * r['rich_within2']:.1f} %) | "
            f"{100 * r['flagged']:.1f} % | {100 * r['unflagged_within2']:.1f} % "
            f"({100 * r['unflagged_rich_within2']:.1f} %) | "
            f"{100 * r['flagged_within2']:.1f} / {100 * r['flagged_match_or_partner2']:.1f} % | "
            f"{100 * r['match_or_flagged_partner2']:.1f} % | {100 * r['side_test_agrees']:.1f} % | "
            f"{r['patterns_per_s_before']:.1f} / {r['patterns_per_s_after']:.1f} |"
        )
    print()
    print(
        "| crystal | e | both within 5 deg | or a flagged match's partner | matches flagged | "
        "both, patterns without a flag | patterns/s before / after |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["set"] != "overlap":
            continue
        print(
            f"| {r['crystal']} | {r['dose']:.0e} | {100 * r['both5']:.1f} % | "
            f"{100 * r['both5_or_flagged_partner']:.1f} % | "
            f"{100 * r['matches_flagged']:.1f} % | {100 * r['both5_no_flag']:.1f} % | "
            f"{r['patterns_per_s_before']:.1f} / {r['patterns_per_s_after']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
