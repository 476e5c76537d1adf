"""What a kinematic matcher can reach on the thin-film benchmark sets (issue #18).

    PYTHONPATH=src python benchmarks/bench_acom_bound.py [--seeds 51207,90317] [--n 100] [--json out.json]
    PYTHONPATH=src python benchmarks/bench_acom_bound.py --failures --seeds 51207,90317 --n 100
    PYTHONPATH=src python benchmarks/bench_acom_bound.py --match-wide 2.5 --seeds 51207,90317 --n 100

For every pattern of the held-out thin-film sets (``bench_acom_independent.make_set``, the rng keys
of ``bench_acom_reliable.py``: ``[seed, dose, 0, ord(crystal[0])]``, ``--n`` single grains per
crystal and dose), the expected kinematic pattern of the true orientation ``U`` - the generator's
own model: sinc^2 film of the pattern's own thickness, Debye-Waller 1.5x, 300 kV, every reflection
within the data's reach 1.5 1/A, as beam fractions (``separation.thin_film_pattern``; checked here
against the generator's ``_beam_fraction``) - is measured against that of each candidate
confusion ``V`` more than 2 deg from ``U``:

* zone partners ``U R(z, 180 deg)``: of the zone axes ``[uvw]`` (indices <= 6) within 20 deg of
  the beam, the 6 whose zero-order Laue zone holds the largest share of ``U``'s intensity (the
  partner reproduces that share exactly);
* the 180-deg turn about the beam ``R_z(180) U``;
* the Sigma3 twins (cubic: ``U R(<111>, 180 deg)``, all four, wherever they are).

Each at the pattern's own thickness; the 3 closest also at every thickness of 10-40 nm in steps of
``--t-step`` nm (the matcher does not know the film's). ``separation.pattern_separation`` at the
set's dose, with the generator's background (1e-4 N a spot), position scatter and 5-sigma
detection line (counts below it are censored: a peak list does not have them), gives the
Bhattacharyya distance ``B`` and so the most often any method can be right between ``U`` and ``V``
(``1 - P_error_low``, equal priors); the per-pattern bound is that of the closest ``V``. Its mean
over the set bounds the expected share within 2 deg of any matcher that sees these peak lists
from above: it knows the exact intensity model, Debye-Waller factors and thickness family, and
only these confusions are tried (more would lower it); noise peaks are ignored. "Same in the
noise": ``B < 0.1`` (error >= 28 %). "Reliable at best": the largest share of the set a flag can
hold at >= 99 % expected right (patterns from the most to the least certain). The same at the
detector's reach (``--k-wide``, 2.5 1/A: 128 px of 0.02 1/A, own thickness only) says whether
reflections beyond the data's 1.5 1/A would separate them.

Positions only: a confusion with the same spot set (no spot detected on average - expected count
over the detection line - in one pattern and not the other, within 1.5 px) cannot be told apart
by a matcher that ignores intensities: ``1 - same/2`` bounds such a matcher.

Our current result on the same patterns, same run: the matcher's defaults (plan 2 deg, 10 nm,
``n_matches=1``), within 2 deg (all, rich = >= 6 reflections of >= 5e-4 of the beam) and the
"reliable" rule of docs/acom.md (``reliability >= 0.2`` and not ``turn_ambiguous``); its wrong
answers measured against the truth the same way (``failures_B_*``).

``--failures``: only the matcher's wrong answers on rich patterns, full model and positions only.
``--match-wide K``: the same generator with the data reaching ``K`` 1/A (a 256 px detector of 0.02
1/A reaches 2.54), matched with plans at 1.5 and at ``K`` (the pipeline's default plan reach is the
detector's), same data, same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def zone_indices(n_max):
    """Zone axes ``[uvw]`` with indices up to ``n_max``, one of each +- pair, coprime."""
    out = []
    for p in itertools.product(range(-n_max, n_max + 1), repeat=3):
        if any(p) and math.gcd(math.gcd(abs(p[0]), abs(p[1])), abs(p[2])) == 1 and next(x for x in p if x) > 0:
            out.append(p)
    return np.array(out, int)


def candidates(c, U, uvw, pat, *, max_zone_deg=20.0, n_zones=6):
    """(name, V) of the candidate confusions of ``U`` (module docstring); ``pat`` its pattern.

    Zone partners: of the zones within ``max_zone_deg`` of the beam, the ``n_zones`` whose zero-order
    Laue zone holds the largest share of the pattern's intensity (the partner reproduces exactly
    that share)."""
    from napari_4dstem.analysis.acom.plan import rotation_z
    from napari_4dstem.analysis.acom.separation import zone_partner

    Z = uvw @ c.lattice
    Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    cos = np.abs(Z @ U[2])  # U[2]: the beam direction in the crystal frame
    near = np.flatnonzero(cos >= np.cos(np.radians(max_zone_deg)))
    share = (pat.fraction[None, :] * (uvw[near] @ pat.hkl.T == 0)).sum(1) / max(pat.fraction.sum(), 1e-300)
    out = []
    for j in near[np.argsort(-share, kind="stable")[:n_zones]]:
        ang = np.degrees(np.arccos(min(1.0, cos[j])))
        out.append((f"zone [{' '.join(str(v) for v in uvw[j])}] {ang:.1f} deg", zone_partner(U, Z[j])))
    out.append(("turn about the beam", rotation_z(np.pi) @ U))
    if c.point_group.crystal_system == "cubic":
        for v in ((1, 1, 1), (1, 1, -1), (1, -1, 1), (-1, 1, 1)):
            out.append(("sigma3", zone_partner(U, np.asarray(v, float) @ c.lattice)))
    return out


def _light(p, dose, min_counts=0.01):
    """The pattern without spots carrying less than ``min_counts`` expected counts (they add < 1e-5 to B)."""
    from napari_4dstem.analysis.acom.separation import ThinFilmPattern

    k = dose * p.fraction >= min_counts
    return ThinFilmPattern(p.xy[k], p.fraction[k], p.hkl[k], p.s[k])


def _refine(sep_of, U, V, tv, B0, group, max_fev=80):
    """Tilt ``V`` (rotation vector, up to a few deg) and its thickness to bring its pattern closest
    to ``U``'s; orientations within 2 deg of ``U`` are not confusions. Returns the least ``B``."""
    from scipy.optimize import minimize
    from scipy.spatial.transform import Rotation

    from napari_4dstem.analysis.crystal.symmetry import misorientation_deg

    def f(x):
        W = Rotation.from_rotvec(np.radians(x[:3])).as_matrix() @ V
        t = float(np.clip(tv + 10.0 * x[3], 50.0, 600.0))
        if misorientation_deg(W, U, group) <= 2.0:
            return 1e6
        return sep_of(W, t)[0].bhattacharyya

    x0 = np.zeros(4)
    simplex = np.vstack([x0, np.eye(4) * np.array([1.0, 1.0, 1.0, 2.0])])
    r = minimize(f, x0, method="Nelder-Mead", options={"initial_simplex": simplex, "maxfev": max_fev})
    return min(B0, float(r.fun))


def bound_of_pattern(c, gen, U, t, dose, uvw, k_maxes, px=0.02, thicknesses=(), top=3, censor=True, refine_below=0.0):
    """Per reach: (success bound, B, class, n_unmatched, max shift px, max z, t') of the closest confusion.

    Each candidate ``V`` at the pattern's own thickness; the ``top`` closest then also at every
    thickness of ``thicknesses`` (A: the matcher does not know the film's), the closest kept."""
    from napari_4dstem.analysis.acom.separation import detection_line, pattern_separation, thin_film_pattern
    from napari_4dstem.analysis.crystal.symmetry import misorientation_deg

    pat = thin_film_pattern(gen, U, thickness_A=t, k_max_inv_A=k_maxes[0])
    cands = [(k, V) for k, V in candidates(c, U, uvw, pat) if misorientation_deg(V, U, c.point_group) > 2.0]
    bg = 1e-4 * dose
    line = detection_line(bg) if censor else None
    det_f = (line - bg) / dose if censor else 5e-4  # the beam fraction a spot is detected at on average
    out = {}
    for km in k_maxes:
        base = _light(thin_film_pattern(gen, U, thickness_A=t, k_max_inv_A=km), dose)

        def sep_of(V, tv, km=km, base=base):
            other = _light(thin_film_pattern(gen, V, thickness_A=tv, k_max_inv_A=km), dose)
            kw = dict(dose=dose, background=bg, k_pixel_size=px)
            full = pattern_separation(base, other, detection_counts=line, **kw)
            # positions only: bins detected (on average) in one pattern and not the other
            spots = pattern_separation(base, other, threshold=det_f, **kw).n_unmatched
            return full, spots

        seps = sorted(((*sep_of(V, t), kind, V, t) for kind, V in cands), key=lambda r: r[0].bhattacharyya)
        best = seps[0] if seps else None
        geo = min((r[1] for r in seps), default=10**9)
        for _, _, kind, V, _t in seps[:top] if km == k_maxes[0] else ():
            for tv in thicknesses:
                sp, g = sep_of(V, tv)
                geo = min(geo, g)
                if sp.bhattacharyya < best[0].bhattacharyya:
                    best = (sp, g, kind, V, tv)
        if best is not None and km == k_maxes[0] and best[0].bhattacharyya < refine_below:
            Bref = _refine(sep_of, U, best[3], best[4], best[0].bhattacharyya, c.point_group)
            bc = math.exp(-Bref)
            out["refined"] = (1.0 - 0.5 * (1.0 - math.sqrt(max(0.0, 1.0 - bc * bc))), Bref)
        if best is None:
            out[km] = (1.0, np.inf, "none", 0, 0.0, 0.0, t, 10**9)
        else:
            sp, kind = best[0], best[2]
            out[km] = (
                sp.success_bound,
                sp.bhattacharyya,
                kind.split()[0],
                sp.n_unmatched,
                sp.max_shift_px,
                sp.max_z,
                best[4],
                geo,
            )
    return out


def reliable_at_best(bounds, line=0.99):
    """The largest share of patterns a flag can hold at >= ``line`` expected right."""
    b = np.sort(np.asarray(bounds))[::-1]
    run = np.cumsum(b) / np.arange(1, len(b) + 1)
    ok = np.flatnonzero(run >= line)
    return float((ok[-1] + 1) / len(b)) if len(ok) else 0.0


def run_set(name, seed, dose, n, k_maxes, plan, match=True, thicknesses=(), censor=True, n_max=6, refine_below=0.0):
    import bench_acom_independent as B

    from napari_4dstem.analysis.acom.matching import match_orientations
    from napari_4dstem.analysis.acom.separation import thin_film_pattern
    from napari_4dstem.analysis.crystal.structure import bundled_crystal
    from napari_4dstem.analysis.crystal.symmetry import misorientation_deg

    c = bundled_crystal(name)
    gen = dataclasses.replace(c, b_iso=np.asarray(c.b_iso) * 1.5, _cache={})
    rng = np.random.default_rng([seed, int(dose), 0, ord(name[0])])
    thick: list[float] = []
    pk, truth, _, rich = B.make_set(c, n, dose=dose, rng=rng, thickness_out=thick)
    # the library's pattern is the generator's (same reflections, same fractions)
    xy0, f0 = B._beam_fraction(gen, truth[0], thickness_A=thick[0], energy_kev=300.0, k_max=1.5, shape="sinc")
    p0 = thin_film_pattern(gen, truth[0], thickness_A=thick[0], k_max_inv_A=1.5)
    assert np.allclose(xy0, p0.xy) and np.allclose(f0, p0.fraction, rtol=1e-12, atol=0)
    uvw = zone_indices(n_max)
    t0 = time.perf_counter()
    per = [
        bound_of_pattern(
            c,
            gen,
            truth[i],
            thick[i],
            dose,
            uvw,
            k_maxes,
            thicknesses=thicknesses,
            censor=censor,
            refine_below=refine_below,
        )
        for i in range(n)
    ]
    dt = time.perf_counter() - t0
    row = {"crystal": name, "seed": seed, "dose": dose, "n": n, "rich_frac": float(rich.mean()), "bound_s": dt}
    for km in k_maxes:
        sb = np.array([p[km][0] for p in per])
        Bd = np.array([p[km][1] for p in per])
        kind = np.array([p[km][2] for p in per])
        tag = f"k{km:g}"
        row.update(
            {
                f"{tag}_bound_all": float(sb.mean()),
                f"{tag}_bound_rich": float(sb[rich].mean()) if rich.any() else float("nan"),
                # a coin toss: the two are the same within the noise (B < 0.1: error >= 0.28)
                f"{tag}_same_in_noise": float(np.mean(Bd < 0.1)),
                f"{tag}_same_in_noise_rich": float(np.mean(Bd[rich] < 0.1)) if rich.any() else float("nan"),
                # not certainly decidable: error may exceed 1 % (BC / 2 > 0.01)
                f"{tag}_undecided": float(np.mean(0.5 * np.exp(-Bd) > 0.01)),
                f"{tag}_reliable_at_best": reliable_at_best(sb),
                f"{tag}_closest_zone": float(np.mean(kind == "zone")),
                f"{tag}_closest_turn": float(np.mean(kind == "turn")),
                f"{tag}_closest_sigma3": float(np.mean(kind == "sigma3")),
                f"{tag}_B_median": float(np.median(Bd)),
                f"{tag}_unmatched_median_same": float(np.median([p[km][3] for p, b in zip(per, Bd) if b < 0.1]))
                if np.any(Bd < 0.1)
                else float("nan"),
            }
        )
        geo = np.array([p[km][7] for p in per])
        # a matcher that sees only which spots are there: a coin toss where a confusion has the same spot set
        row[f"{tag}_same_spots"] = float(np.mean(geo == 0))
        row[f"{tag}_same_spots_rich"] = float(np.mean(geo[rich] == 0)) if rich.any() else float("nan")
        row[f"{tag}_spots_bound_all"] = float(1 - 0.5 * np.mean(geo == 0))
        row[f"{tag}_spots_bound_rich"] = float(1 - 0.5 * np.mean(geo[rich] == 0)) if rich.any() else float("nan")
        row[f"{tag}_spots_within1"] = float(np.mean(geo <= 1))
        row[f"{tag}_per_pattern_bound"] = sb.tolist()
        row[f"{tag}_per_pattern_spots"] = geo.tolist()
    if refine_below > 0:
        km = k_maxes[0]
        sb0 = np.array([p[km][0] for p in per])
        sb1 = np.array([p["refined"][0] if "refined" in p else p[km][0] for p in per])
        B1 = np.array([p["refined"][1] if "refined" in p else p[km][1] for p in per])
        row.update(
            refined_n=int(sum("refined" in p for p in per)),
            refined_bound_all=float(sb1.mean()),
            refined_bound_rich=float(sb1[rich].mean()) if rich.any() else float("nan"),
            refined_same_in_noise=float(np.mean(B1 < 0.1)),
            refined_reliable_at_best=reliable_at_best(sb1),
            unrefined_bound_all=float(sb0.mean()),
        )
    if match:
        res = match_orientations(pk, plan, min_peaks=3)
        mis = np.nan_to_num(misorientation_deg(res.orientation[0, :, 0], truth, c.point_group), nan=180.0)
        ok = mis < 2
        flag = (res.reliability[0] >= 0.2) & ~res.turn_ambiguous[0, :, 0]
        sb = np.array(row[f"k{k_maxes[0]:g}_per_pattern_bound"])
        # the matcher's wrong answers measured against the truth in the generator's model (at the
        # best thickness of the grid): does a perfect-model test reject them?
        from napari_4dstem.analysis.acom.separation import detection_line, pattern_separation

        line = detection_line(1e-4 * dose) if censor else None
        wrongB = []
        for i in np.flatnonzero(~ok):
            W = res.orientation[0, i, 0]
            if not np.isfinite(W).all():
                continue
            base = _light(thin_film_pattern(gen, truth[i], thickness_A=thick[i], k_max_inv_A=k_maxes[0]), dose)
            wrongB.append(
                min(
                    pattern_separation(
                        base,
                        _light(thin_film_pattern(gen, W, thickness_A=tv, k_max_inv_A=k_maxes[0]), dose),
                        dose=dose,
                        background=1e-4 * dose,
                        k_pixel_size=0.02,
                        detection_counts=line,
                    ).bhattacharyya
                    for tv in (thick[i], *thicknesses)
                )
            )
        wrongB = np.array(wrongB)
        row.update(
            failures_B_median=float(np.median(wrongB)) if len(wrongB) else float("nan"),
            failures_B_below_3=int(np.sum(wrongB < 3)),
            within2=float(ok.mean()),
            rich_within2=float(ok[rich].mean()) if rich.any() else float("nan"),
            reliable_frac=float(flag.mean()),
            reliable_within2=float(ok[flag].mean()) if flag.any() else float("nan"),
            # of the matcher's failures, how many a coin toss between the truth and a confusion explains
            failures=int((~ok).sum()),
            failures_same_in_noise=int(np.sum(~ok & (sb < 0.9))),
            ok=ok.tolist(),
        )
    return row


def wide_match(name, seed, dose, n, k_data, k_plans=(1.5,)):
    """Data reaching ``k_data`` (the detector's reach), matched with plans up to each of ``k_plans``
    and ``k_data``: within 2 deg (all, rich as drawn: reflections within ``k_data``), reliable."""
    import bench_acom_independent as B

    from napari_4dstem.analysis.acom.matching import match_orientations
    from napari_4dstem.analysis.acom.plan import build_orientation_plan
    from napari_4dstem.analysis.crystal.structure import bundled_crystal
    from napari_4dstem.analysis.crystal.symmetry import misorientation_deg

    c = bundled_crystal(name)
    rng = np.random.default_rng([seed, int(dose), 0, ord(name[0])])
    pk, truth, _, rich = B.make_set(c, n, dose=dose, rng=rng, k_max=k_data)
    rows = []
    for km in (*k_plans, k_data):
        plan = build_orientation_plan(c, energy_kev=300, k_max_inv_A=km, step_deg=2.0)
        match_orientations(B._first(pk, 5), plan, min_peaks=3)  # compiled
        t0 = time.perf_counter()
        res = match_orientations(pk, plan, min_peaks=3)
        dt = time.perf_counter() - t0
        mis = np.nan_to_num(misorientation_deg(res.orientation[0, :, 0], truth, c.point_group), nan=180.0)
        ok = mis < 2
        flag = (res.reliability[0] >= 0.2) & ~res.turn_ambiguous[0, :, 0]
        row = {
            "crystal": name,
            "seed": seed,
            "dose": dose,
            "n": n,
            "k_data": k_data,
            "k_plan": km,
            "within2": float(ok.mean()),
            "median_deg": float(np.median(mis)),
            "rich_frac": float(rich.mean()),
            "rich_within2": float(ok[rich].mean()) if rich.any() else float("nan"),
            "reliable_frac": float(flag.mean()),
            "reliable_within2": float(ok[flag].mean()) if flag.any() else float("nan"),
            "flagged_ambiguous": float(res.turn_ambiguous[0, :, 0].mean()),
            "patterns_per_s": n / dt,
            "load": os.getloadavg()[0],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def failures(name, seed, dose, n, thicknesses):
    """The matcher's wrong answers on rich patterns against the truth in the generator's model:
    the Bhattacharyya distance (detection-censored) and, positions only, the spots detected on
    average in one of the two patterns and not the other, each at the best thickness of the grid."""
    import bench_acom_independent as B

    from napari_4dstem.analysis.acom.matching import match_orientations
    from napari_4dstem.analysis.acom.plan import build_orientation_plan
    from napari_4dstem.analysis.acom.separation import detection_line, pattern_separation, thin_film_pattern
    from napari_4dstem.analysis.crystal.structure import bundled_crystal
    from napari_4dstem.analysis.crystal.symmetry import misorientation_deg

    c = bundled_crystal(name)
    gen = dataclasses.replace(c, b_iso=np.asarray(c.b_iso) * 1.5, _cache={})
    plan = build_orientation_plan(c, energy_kev=300, k_max_inv_A=1.5, step_deg=2.0)
    rng = np.random.default_rng([seed, int(dose), 0, ord(name[0])])
    thick: list[float] = []
    pk, truth, _, rich = B.make_set(c, n, dose=dose, rng=rng, thickness_out=thick)
    res = match_orientations(pk, plan, min_peaks=3)
    mis = np.nan_to_num(misorientation_deg(res.orientation[0, :, 0], truth, c.point_group), nan=180.0)
    bg = 1e-4 * dose
    line = detection_line(bg)
    kw = dict(dose=dose, background=bg, k_pixel_size=0.02)
    Bs, spots = [], []
    for i in np.flatnonzero((mis >= 2) & rich):
        W = res.orientation[0, i, 0]
        if not np.isfinite(W).all():
            continue
        base = _light(thin_film_pattern(gen, truth[i], thickness_A=thick[i]), dose)
        b, g = np.inf, 10**9
        for tv in (thick[i], *thicknesses):
            o = _light(thin_film_pattern(gen, W, thickness_A=tv), dose)
            b = min(b, pattern_separation(base, o, detection_counts=line, **kw).bhattacharyya)
            g = min(g, pattern_separation(base, o, threshold=(line - bg) / dose, **kw).n_unmatched)
        Bs.append(b)
        spots.append(g)
    Bs, spots = np.array(Bs), np.array(spots)
    row = {
        "crystal": name,
        "seed": seed,
        "dose": dose,
        "n": n,
        "rich": int(rich.sum()),
        "rich_failures": len(Bs),
        "B_median": float(np.median(Bs)) if len(Bs) else float("nan"),
        "B_below_3": int(np.sum(Bs < 3)),
        "spots_unmatched_median": float(np.median(spots)) if len(spots) else float("nan"),
        "spots_same": int(np.sum(spots == 0)),
        "spots_within_2": int(np.sum(spots <= 2)),
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="51207,90317")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--crystals", default="Au,Ti,Fe")
    ap.add_argument("--doses", default="1e5,1e4")
    ap.add_argument("--k-wide", type=float, default=2.5, help="a second reach (1/A): the detector's (0: skip)")
    ap.add_argument("--t-step", type=float, default=2.5, help="thickness grid of the confusions, nm (0: own only)")
    ap.add_argument("--top", type=int, default=3, help="closest candidates tried at every thickness")
    ap.add_argument("--raw", action="store_true", help="every count seen (no detection line): the image's bound")
    ap.add_argument(
        "--match-wide",
        type=float,
        default=0.0,
        help="instead: draw the sets out to this reach (1/A) and match with plans at 1.5 and at it",
    )
    ap.add_argument(
        "--refine-below",
        type=float,
        default=0.0,
        help="tilt the closest confusion (and its thickness) to fit, where its B is below this (0: no)",
    )
    ap.add_argument("--failures", action="store_true", help="instead: the matcher's wrong answers against the truth")
    ap.add_argument("--no-match", action="store_true", help="only the bound, not the matcher")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from napari_4dstem.analysis.acom.plan import build_orientation_plan
    from napari_4dstem.analysis.crystal.structure import bundled_crystal

    if args.failures:
        ts = tuple(10.0 * np.arange(10.0, 40.0 + 1e-9, args.t_step))
        rows = [
            failures(name, seed, dose, args.n, ts)
            for name in args.crystals.split(",")
            for seed in (int(s) for s in args.seeds.split(","))
            for dose in (float(d) for d in args.doses.split(","))
        ]
        if args.json:
            Path(args.json).write_text(json.dumps(rows))
        return 0
    if args.match_wide > 0:
        rows = []
        print(f"load average at start: {os.getloadavg()}", flush=True)
        for name in args.crystals.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                for dose in (float(d) for d in args.doses.split(",")):
                    rows += wide_match(name, seed, dose, args.n, args.match_wide)
        if args.json:
            Path(args.json).write_text(json.dumps(rows))
        print()
        print(
            "| crystal | draw | e | plan k_max | within 2 deg, all (rich) | median deg | reliable: share / right "
            "| patterns/s |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['crystal']} | {r['seed']} | {r['dose']:.0e} | {r['k_plan']:g} | {100 * r['within2']:.1f} "
                f"({100 * r['rich_within2']:.1f}) % | {r['median_deg']:.2f} | {100 * r['reliable_frac']:.1f} / "
                f"{100 * r['reliable_within2']:.1f} % | {r['patterns_per_s']:.1f} |"
            )
        return 0
    ts = tuple(10.0 * np.arange(10.0, 40.0 + 1e-9, args.t_step)) if args.t_step > 0 else ()
    k_maxes = [1.5] + ([args.k_wide] if args.k_wide > 0 else [])
    rows = []
    print(f"load average at start: {os.getloadavg()}", flush=True)
    for name in args.crystals.split(","):
        plan = build_orientation_plan(bundled_crystal(name), energy_kev=300, k_max_inv_A=1.5, step_deg=2.0)
        for seed in (int(s) for s in args.seeds.split(",")):
            for dose in (float(d) for d in args.doses.split(",")):
                row = run_set(
                    name,
                    seed,
                    dose,
                    args.n,
                    k_maxes,
                    plan,
                    match=not args.no_match,
                    thicknesses=ts,
                    censor=not args.raw,
                    refine_below=args.refine_below,
                )
                row["load"] = os.getloadavg()[0]
                rows.append(row)
                short = {k: v for k, v in row.items() if not isinstance(v, list)}
                print(json.dumps(short), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows))
    print()
    kw = f"k{args.k_wide:g}"
    print(
        "| crystal | draw | e | rich | bound, all (rich) | same in the noise, all (rich) | reliable at best | "
        f"at {args.k_wide:g} 1/A: bound all (rich), same | now: within 2 deg all (rich) | now: reliable, right |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        now = (
            f"{100 * r['within2']:.1f} ({100 * r['rich_within2']:.1f}) % | "
            f"{100 * r['reliable_frac']:.1f} / {100 * r['reliable_within2']:.1f} %"
            if "within2" in r
            else " | "
        )
        wide = (
            f"{100 * r[kw + '_bound_all']:.1f} ({100 * r[kw + '_bound_rich']:.1f}) %, "
            f"{100 * r[kw + '_same_in_noise']:.1f} %"
            if kw + "_bound_all" in r
            else ""
        )
        print(
            f"| {r['crystal']} | {r['seed']} | {r['dose']:.0e} | {100 * r['rich_frac']:.0f} % | "
            f"{100 * r['k1.5_bound_all']:.1f} ({100 * r['k1.5_bound_rich']:.1f}) % | "
            f"{100 * r['k1.5_same_in_noise']:.1f} ({100 * r['k1.5_same_in_noise_rich']:.1f}) % | "
            f"{100 * r['k1.5_reliable_at_best']:.1f} % | {wide} | {now} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
