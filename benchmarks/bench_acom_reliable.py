"""What "reliable" means once the turn flag is folded in (issue #18 target 3).

    PYTHONPATH=src python benchmarks/bench_acom_reliable.py --seed 18 --n 300 --choose
    PYTHONPATH=src python benchmarks/bench_acom_reliable.py --seed 51207 --n 300 --line 0.1

Data: the thin-film sets of ``bench_acom_independent.py`` (``make_set``: sinc^2 rocking curves of
10-40 nm films, Debye-Waller 1.5x, Poisson counts, 2 noise peaks; the same draws as
``bench_acom_turn.py`` and ``bench_acom_reliability.py`` for a seed), Au / Ti / Fe single grains at
1e5 and 1e4 electrons; plan 2 deg at 10 nm, the matcher's defaults (``n_matches=1``,
``min_peaks=3``). A match counts as right only when *it* is within 2 deg of the truth (a flagged
partner that is the truth does not count).

Rules (each: share of all patterns flagged reliable / share of those within 2 deg):
``RI >= t`` (the reliability index alone) and ``RI >= t and not turn_ambiguous`` (a match whose
zone partner draws the same pattern is not reliable). With ``--choose`` (the tuning draw, 18)
it prints both rules over a grid of lines and the lowest line of each whose pooled 1e5 share is
>= 99 %; with ``--line t`` (a held-out draw) it scores that one line once, per crystal and pooled.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

GRID = (0.0, 0.01, 0.02, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3)


def collect(seed: int, n: int) -> dict[str, dict[str, np.ndarray]]:
    """Per set (``"Au 1e+05"``...): misorientation of the first match, RI, turn flag, D, peaks."""
    from bench_acom_independent import make_set

    from napari_4dstem.analysis.acom.matching import match_orientations
    from napari_4dstem.analysis.acom.plan import build_orientation_plan
    from napari_4dstem.analysis.crystal.structure import bundled_crystal
    from napari_4dstem.analysis.crystal.symmetry import misorientation_deg

    out = {}
    for name in ("Au", "Ti", "Fe"):
        c = bundled_crystal(name)
        plan = build_orientation_plan(c, energy_kev=300, k_max_inv_A=1.5, step_deg=2.0)
        for dose in (1e5, 1e4):
            rng = np.random.default_rng([seed, int(dose), 0, ord(name[0])])
            pk, truth, _, rich = make_set(c, n, dose=dose, rng=rng)
            r = match_orientations(pk, plan, min_peaks=3)
            mis = np.nan_to_num(misorientation_deg(r.orientation[0, :, 0], truth, c.point_group), nan=180.0)
            out[f"{name} {dose:.0e}"] = {
                "mis": mis,
                "ri": r.reliability[0],
                "amb": r.turn_ambiguous[0, :, 0],
                "D": r.turn_difference[0, :, 0],
                "matched": r.n_matched[0, :, 0],
                "rich": rich,
            }
            print(f"{name} {dose:.0e}: {100 * np.mean(mis < 2):.1f} % within 2 deg", flush=True)
    return out


def score(d: dict[str, np.ndarray], line: float, rule: str) -> tuple[float, float, int]:
    """Share flagged, share of the flagged within 2 deg, and how many flagged."""
    flag = d["ri"] >= line
    if rule == "ri+turn":
        flag &= ~d["amb"]
    right = d["mis"] < 2
    k = int(flag.sum())
    return float(flag.mean()), float(right[flag].mean()) if k else float("nan"), k


def pooled(sets: dict, dose: str) -> dict[str, np.ndarray]:
    keys = [k for k in sets if k.endswith(dose)]
    return {f: np.concatenate([sets[k][f] for k in keys]) for f in sets[keys[0]]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--choose", action="store_true", help="the grid of lines (tuning draw only)")
    ap.add_argument("--line", type=float, default=None, help="score this one line (held-out draw)")
    ap.add_argument("--cache", default=None, help="npz of the collected arrays (written, or read if it exists)")
    args = ap.parse_args(argv)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    if args.cache and Path(args.cache).exists():
        z = np.load(args.cache)
        sets = {}
        for key in z.files:
            s, f = key.rsplit("|", 1)
            sets.setdefault(s, {})[f] = z[key]
    else:
        sets = collect(args.seed, args.n)
        if args.cache:
            np.savez(args.cache, **{f"{s}|{f}": v for s, d in sets.items() for f, v in d.items()})
    print(f"load average at end: {os.getloadavg()}", flush=True)
    for s, d in sets.items():
        right = d["mis"] < 2
        amb = d["amb"]
        print(
            f"{s}: within 2 deg {100 * right.mean():.1f} %, flagged ambiguous {100 * amb.mean():.1f} %, "
            f"RI of right / wrong (median) {np.median(d['ri'][right]):.3f} / {np.median(d['ri'][~right]):.3f}, "
            f"RI of ambiguous / not (median) {np.median(d['ri'][amb]) if amb.any() else np.nan:.3f} / "
            f"{np.median(d['ri'][~amb]):.3f}"
        )
    rules = ("ri", "ri+turn")
    if args.choose:
        for dose in ("1e+05", "1e+04"):
            p = pooled(sets, dose)
            print(f"\npooled Au + Ti + Fe, {dose} e ({len(p['mis'])} patterns): flagged / within 2 deg (n)")
            print("| line | RI >= line | RI >= line, not turn-ambiguous |")
            print("|---|---|---|")
            for t in GRID:
                cells = []
                for rule in rules:
                    f, w, k = score(p, t, rule)
                    cells.append(f"{100 * f:.1f} / {100 * w:.1f} % ({k})")
                print(f"| {t:g} | {cells[0]} | {cells[1]} |")
            for rule in rules:
                fine = np.round(np.arange(0.0, 0.6, 0.005), 3)
                ok = [t for t in fine if (score(p, t, rule)[1] >= 0.99)]
                print(f"{rule}: lowest line >= 99 % within 2 deg: {ok[0] if ok else 'none'}")
    if args.line is not None:
        print(f"\nline {args.line:g}: flagged / within 2 deg (n)")
        print("| set | RI >= line | RI >= line, not turn-ambiguous |")
        print("|---|---|---|")
        keys = [*sets, "pooled 1e+05", "pooled 1e+04"]
        for s in keys:
            d = pooled(sets, s.split()[1]) if s.startswith("pooled") else sets[s]
            cells = []
            for rule in rules:
                f, w, k = score(d, args.line, rule)
                cells.append(f"{100 * f:.1f} / {100 * w:.1f} % ({k})")
            print(f"| {s} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
