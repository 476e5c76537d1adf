"""ACOM on peak lists drawn from a model the matcher does not assume (issue #18).

    PYTHONPATH=src python benchmarks/bench_acom_independent.py [--n 300] [--configs before,after]

Data (generated here, independently of the matcher's template model):

* crystals: fcc Au, bcc Fe, hcp Ti (bundled structures) with Debye-Waller factors 1.5x the
  bundled ones (the matcher's plan uses the bundled B);
* orientations uniformly random on SO(3); thickness uniform in 10-40 nm per pattern (the plan
  assumes its default 10 nm); 300 kV, reflections up to k_max 1.5 1/A;
* rocking curve: kinematic thin film ``I_g = (t lambda gamma |F_g| / V)^2 sinc^2(s t)`` (the
  fraction of the beam; sinc(x) = sin(pi x)/(pi x)) - the matcher's templates use a Gaussian
  fall-off; ``--shape gaussian`` draws the matcher's own model instead (reported apart);
* dose: N electrons per pattern (1e5 and 1e4); counts ``Poisson(N I_g)`` over a diffuse
  background of ``1e-4 N`` counts per disk; a peak is *detected* when its counts exceed the
  background by 5 sigma (the ACOM disk defaults' significance test), its measured intensity is
  counts minus background, its position scatters by ``1.5 px / sqrt(counts)`` (3 px disks)
  plus 0.05 px; ``Poisson(2)`` noise peaks per pattern at random positions carry threshold-level
  counts;
* overlaps: two grains > 15 deg apart with weights w (uniform 0.5-0.7) and 1 - w, their
  intensities added (coincident spots within 1 px merged) before the dose model.

Scores: within 2 deg of the truth (symmetry-reduced), median misorientation, the same on
patterns with >= 6 reflections carrying >= 5e-4 of the beam ("rich"), the reliability flag
(reliability index >= 0.01: fraction flagged, fraction of flagged within 2 deg, fraction of the
failures flagged), the best
of the top 2, and for overlaps both grains within 5 deg among the top 2. Every configuration of
the matcher runs on the same data in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GAMMA_300 = 1.0 + 300.0 / 510.99895


def _beam_fraction(crystal, U, *, thickness_A, energy_kev, k_max, shape):
    """Lab g, hkl and fraction of the incident beam of every reflection (kinematic)."""
    from napari_4dstem.data.calibration import electron_wavelength_A

    lam = electron_wavelength_A(energy_kev)
    refl = crystal.reciprocal_points(k_max * 1.05)
    g_lab = refl.g @ U.T
    s = -(g_lab[:, 2] + 0.5 * lam * np.sum(refl.g**2, 1))
    gamma = 1.0 + energy_kev / 510.99895
    strength = (thickness_A * lam * gamma * np.abs(refl.structure_factor) / crystal.volume_A3) ** 2
    if shape == "sinc":
        prof = np.sinc(thickness_A * s) ** 2
    else:  # the matcher's own model: Gaussian of width 1 / t in intensity
        prof = np.exp(-((s * thickness_A) ** 2))
    inplane = np.hypot(g_lab[:, 0], g_lab[:, 1]) <= k_max
    return g_lab[inplane, :2], strength[inplane] * prof[inplane]


def _merge(xy, frac, radius):
    """Sum fractions of spots closer than ``radius`` (1/A); intensity-weighted positions."""
    order = np.argsort(-frac)
    xy, frac = xy[order], frac[order]
    used = np.zeros(len(frac), bool)
    out_xy, out_f = [], []
    for i in range(len(frac)):
        if used[i]:
            continue
        near = (~used) & (np.hypot(*(xy - xy[i]).T) < radius)
        used |= near
        w = frac[near]
        out_xy.append((xy[near] * w[:, None]).sum(0) / max(w.sum(), 1e-300))
        out_f.append(w.sum())
    return np.array(out_xy).reshape(-1, 2), np.array(out_f)


def make_set(
    crystal,
    n,
    *,
    dose,
    rng,
    shape="sinc",
    overlap=False,
    energy_kev=300.0,
    k_max=1.5,
    px=0.02,
    thickness_nm=(10.0, 40.0),
    dw_factor=1.5,
    noise_peaks=2.0,
    thickness_out=None,
):
    """Peaks (BraggPeaks), truth U (n, 3, 3) or (n, 2, 3, 3), weights, "rich" flags.

    ``thickness_out``: a list that gets each pattern's film thickness (A) appended (the draws
    are the same with or without it)."""
    from napari_4dstem.analysis.crystal.symmetry import misorientation_deg
    from napari_4dstem.data.calibration import Calibration
    from napari_4dstem.data.results import BraggPeaks
    from napari_4dstem.simulation.samples import random_rotations

    gen = dataclasses.replace(crystal, b_iso=np.asarray(crystal.b_iso) * dw_factor, _cache={})
    origin = (128.0, 128.0)
    U1 = random_rotations(n, rng)
    if overlap:
        U2 = random_rotations(n, rng)
        for _ in range(50):
            bad = misorientation_deg(U1, U2, crystal.point_group) <= 15.0
            if not bad.any():
                break
            U2[bad] = random_rotations(int(bad.sum()), rng)
        w = rng.uniform(0.5, 0.7, n)
    recs, rich = [], np.zeros(n, bool)
    bg = 1e-4 * dose
    for i in range(n):
        t = 10.0 * rng.uniform(*thickness_nm)
        if thickness_out is not None:
            thickness_out.append(t)
        kw = dict(thickness_A=t, energy_kev=energy_kev, k_max=k_max, shape=shape)
        xy, f = _beam_fraction(gen, U1[i], **kw)
        if overlap:
            xy2, f2 = _beam_fraction(gen, U2[i], **kw)
            xy = np.concatenate([xy, xy2])
            f = np.concatenate([w[i] * f, (1 - w[i]) * f2])
        xy, f = _merge(xy, f, 1.0 * px)
        rich[i] = np.sum(f >= 5e-4) >= 6
        counts = rng.poisson(dose * f + bg) - bg
        det = counts >= 5.0 * np.sqrt(bg + np.maximum(counts, 0)) + 1.0
        xy, counts = xy[det], counts[det]
        sig = (0.05 + 1.5 / np.sqrt(np.maximum(counts, 1.0)))[:, None] * px
        xy = xy + rng.normal(size=xy.shape) * sig
        m = rng.poisson(noise_peaks)
        r = k_max * np.sqrt(rng.uniform(0.02, 1.0, m))
        th = rng.uniform(0, 2 * np.pi, m)
        nxy = np.stack([r * np.cos(th), r * np.sin(th)], 1)
        ncounts = 5.0 * np.sqrt(bg) + rng.exponential(2.0 * np.sqrt(bg) + 1.0, m) + 1.0
        xy = np.concatenate([xy, nxy])
        counts = np.concatenate([counts, ncounts])
        # central beam (the matcher drops it)
        xy = np.concatenate([[[0.0, 0.0]], xy])
        counts = np.concatenate([[dose * 0.5], counts])
        recs.append(
            {
                "qy": origin[0] + xy[:, 1] / px,
                "qx": origin[1] + xy[:, 0] / px,
                "intensity": np.asarray(counts, float),
            }
        )
    cal = Calibration(k_pixel_size=px, k_units="1/A", beam_energy_kev=energy_kev, origin_px=origin)
    peaks = BraggPeaks.from_lists(recs, (1, n), calibration=cal)
    truth = np.stack([U1, U2], 1) if overlap else U1
    return peaks, truth, (w if overlap else None), rich


P4_SCRIPT = r"""
import json, sys, time, numpy as np, warnings
warnings.filterwarnings("ignore")
from py4DSTEM.process.diffraction import Crystal
from py4DSTEM.process.diffraction.crystal_ACOM import orientation_ranges
from emdfile import PointList
d = np.load(sys.argv[1])
c = Crystal(d["positions"], d["numbers"], d["cell"])
c.calculate_structure_factors(k_max=float(d["k_max"]))
za, fa, fang = orientation_ranges[str(d["point_group"])]
c.orientation_plan(zone_axis_range=np.array(za), fiber_axis=fa, fiber_angles=fang,
                   angle_step_zone_axis=2.0, angle_step_in_plane=2.0,
                   accel_voltage=300e3, progress_bar=False)
out = {"lat_real": np.asarray(c.lat_real).tolist(), "sets": {}}
for name in d["sets"]:
    off, gx, gy, inten = (d[name + "_" + k] for k in ("off", "gx", "gy", "inten"))
    n, k = len(off) - 1, int(d[name + "_k"])
    pls = []
    for i in range(n):
        a, b = off[i], off[i + 1]
        arr = np.zeros(b - a, dtype=[("qx", float), ("qy", float), ("intensity", float)])
        arr["qx"], arr["qy"], arr["intensity"] = gx[a:b], gy[a:b], inten[a:b]
        pls.append(PointList(arr))
    M = np.full((n, k, 3, 3), np.nan)
    t0 = time.perf_counter()
    for i, pl in enumerate(pls):
        if len(pl.data) >= 3:
            o = c.match_single_pattern(pl, num_matches_return=k)
            M[i] = np.asarray(o.matrix).reshape(k, 3, 3)
    out["sets"][str(name)] = {"matrix": M.tolist(), "s": time.perf_counter() - t0}
print(json.dumps(out))
"""

_P4_CELLS = {  # py4DSTEM Crystal(positions, numbers, cell) of the bundled crystals
    "Au": ([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], 79, 4.0782, "m-3m"),
    "Fe": ([[0, 0, 0], [0.5, 0.5, 0.5]], 26, 2.8665, "m-3m"),
    "Ti": ([[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]], 22, [2.9506, 2.9506, 4.6835, 90, 90, 120], "6/mmm"),
}


def _signed_perms():
    out = []
    for p in itertools.permutations(range(3)):
        for sg in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            m[range(3), p] = sg
            out.append(m)
    return out


def run_py4dstem(py, crystal, sets, *, k_max=1.5, calib=None):
    """py4DSTEM 0.14's orientation matches of ``sets`` {name: (peaks, n_matches)}, in our
    convention (U: crystal -> lab), and its matching time per set. The frame conversion (a
    signed permutation of the lab axes, ``M`` or ``M^T``, our crystal frame from the two lattice
    matrices) is the one that fits ``calib`` = (peaks, U) best (noise-free own-model patterns,
    not scored)."""
    from napari_4dstem.analysis.acom.matching import peaks_to_lab
    from napari_4dstem.analysis.crystal.symmetry import misorientation_deg

    pos, z, cell, pg = _P4_CELLS[crystal.name]
    all_sets = dict(sets)
    if calib is not None:
        all_sets["_calib"] = (calib[0], 1)
    arrays = {
        "positions": np.array(pos, float),
        "numbers": np.array(z),
        "cell": np.array(cell),
        "k_max": k_max,
        "point_group": pg,
        "sets": np.array(list(all_sets)),
    }
    for name, (pk, k) in all_sets.items():
        off, gx, gy, amp = peaks_to_lab(pk, k_max_inv_A=k_max, min_radius_inv_A=0.2)
        # py4DSTEM's qx is its first (row) axis: pass k_y as qx, k_x as qy
        arrays.update({name + "_off": off, name + "_gx": gy, name + "_gy": gx, name + "_inten": amp**2, name + "_k": k})
    with tempfile.TemporaryDirectory() as td:
        f = Path(td) / "sets.npz"
        np.savez(f, **arrays)
        sc = Path(td) / "p4.py"
        sc.write_text(P4_SCRIPT)
        out = subprocess.run([str(py), str(sc), str(f)], capture_output=True, text=True, timeout=3000)
    if out.returncode != 0:
        print("py4DSTEM failed:", out.stderr[-3000:], file=sys.stderr)
        return None
    d = json.loads(out.stdout.strip().splitlines()[-1])
    L4 = np.array(d["lat_real"])
    # crystal Cartesian: ours x_o = L^T f, py4DSTEM's x_4 = L4^T f  ->  x_4 = C x_o
    C = L4.T @ np.linalg.inv(crystal.lattice.T)
    pg_ = crystal.point_group
    best = None
    if calib is not None:
        Mc = np.array(d["sets"]["_calib"]["matrix"])[:, 0]
        Uc = calib[1]
        for A in _signed_perms():
            for tr in (False, True):
                X = np.swapaxes(Mc, -1, -2) if tr else Mc
                if np.linalg.det(A) < 0:
                    continue
                Uo = A @ X @ C
                m = np.nanmedian(misorientation_deg(Uo, Uc, pg_))
                if best is None or m < best[0]:
                    best = (m, A, tr)
    res = {}
    for name in sets:
        M = np.array(d["sets"][name]["matrix"])
        _, A, tr = best
        X = np.swapaxes(M, -1, -2) if tr else M
        res[name] = (A @ X @ C, d["sets"][name]["s"])
    return res, best[0]


#: name: (plan keywords, matcher keywords)
CONFIGS = {
    # the matcher as it was (defaults before #18)
    "before": (
        dict(rocking_curve="gaussian"),
        dict(flip_candidates=0, intensity_power=0.5, overlap="candidates"),
    ),
    # defaults after #18
    "after": (dict(), dict()),
    # session 8: the thin film's own sinc^2 templates at the plan thickness
    "sinc2": (dict(rocking_curve="sinc2"), dict()),
    "lor-p25": (dict(), dict(intensity_power=0.25, flip_candidates=0)),
    "lor-p50": (dict(), dict(intensity_power=0.5, flip_candidates=0)),
    # session 8's matcher: the pair of overlapping grains by the explained share, candidates
    # ranked by the refinement's cosine (session 9: joint two-grain fit, wider ranking)
    "session8": (dict(), dict(pair_score="share", rank_width=0)),
    # session 10's matcher: the joint pair replaces the single-grain answer everywhere (session 11:
    # only where the second grain adds pair_gain of the pattern)
    "session10": (dict(), dict(pair_gain=-np.inf)),
}


def _first(pk, m):
    """The first ``m`` patterns of a (1, n) BraggPeaks."""
    from napari_4dstem.data.results import BraggPeaks

    recs = [pk.at(0, i) for i in range(m)]
    return BraggPeaks.from_lists(recs, (1, m), calibration=pk.calibration)


def score(crystal, res, truth, rich, overlap):
    from napari_4dstem.analysis.crystal.symmetry import misorientation_deg

    pg = crystal.point_group
    U = res.orientation[0]
    mis = np.nan_to_num(misorientation_deg(U[:, 0], truth if not overlap else truth[:, 0], pg), nan=180.0)
    row = {}
    if overlap:
        m = np.stack(
            [
                np.nan_to_num(misorientation_deg(U[:, k], truth[:, j], pg), nan=180.0)
                for k in range(2)
                for j in range(2)
            ],
            1,
        ).reshape(-1, 2, 2)  # [pattern, match k, grain j]
        both = ((m[:, 0, 0] < 5) & (m[:, 1, 1] < 5)) | ((m[:, 0, 1] < 5) & (m[:, 1, 0] < 5))
        row["both_top2_5deg"] = float(both.mean())
        # the same, counting a match within 10 deg of a grain turned by 180 deg about the beam as
        # that grain (the ambiguity only the Ewald sphere's curvature resolves; a diagnostic)
        from napari_4dstem.analysis.acom.plan import rotation_z

        turn = rotation_z(np.pi)
        mt = np.stack(
            [
                np.nan_to_num(misorientation_deg(U[:, k], turn @ truth[:, j], pg), nan=180.0)
                for k in range(2)
                for j in range(2)
            ],
            1,
        ).reshape(-1, 2, 2)
        mm = np.where(mt < 10, 0.0, m)
        both_t = ((mm[:, 0, 0] < 5) & (mm[:, 1, 1] < 5)) | ((mm[:, 0, 1] < 5) & (mm[:, 1, 0] < 5))
        row["both_top2_5deg_or_turn"] = float(both_t.mean())
        row["first_is_a_grain_2deg"] = float(np.mean(m[:, 0].min(1) < 2))
        row["second_is_a_grain_5deg"] = float(np.mean(m[:, 1].min(1) < 5))
        return row
    mis2 = np.nan_to_num(misorientation_deg(U[:, 1], truth, pg), nan=180.0) if U.shape[1] > 1 else mis
    rel = res.params.get("reliable_threshold")
    flag = res.reliable[0] if hasattr(res, "reliable") else res.reliability[0] >= 0.01
    ok = mis < 2
    row.update(
        within2=float(ok.mean()),
        median_deg=float(np.median(mis)),
        rich_frac=float(rich.mean()),
        rich_within2=float(np.mean(ok[rich])) if rich.any() else float("nan"),
        best_of_top2_within2=float(np.mean((mis < 2) | (mis2 < 2))),
        flagged_frac=float(flag.mean()),
        flagged_within2=float(np.mean(ok[flag])) if flag.any() else float("nan"),
        unflagged_within2=float(np.mean(ok[~flag])) if (~flag).any() else float("nan"),
        failures_marked_reliable=float(np.mean(flag[~ok])) if (~ok).any() else 0.0,
        threshold=rel,
    )
    kind = getattr(res, "alternative_kind", None)
    if kind is not None and (~ok).any():  # what the named alternative is, on the failures
        alt = res.alternative[0]
        alt_ok = np.nan_to_num(misorientation_deg(alt, truth, pg), nan=180.0) < 2
        row["failures_alt_is_truth"] = float(np.mean(alt_ok[~ok]))
        row["failures_alt_180_about_beam"] = float(np.mean(kind[0][~ok] == 1))
        row["failures_alt_180_and_truth"] = float(np.mean((kind[0] == 1)[~ok] & alt_ok[~ok]))
    for t in (0.05, 0.1, 0.2):  # how the reliability index sorts right from wrong
        f = res.reliability[0] >= t
        row[f"ri{t}_frac"] = float(f.mean())
        row[f"ri{t}_within2"] = float(np.mean(ok[f])) if f.any() else float("nan")
    return row


def phase_rows(args):
    """Several crystals at once: patterns of each crystal (``args.phases`` per dose, split alike),
    matched with all plans; fraction given the right phase, and within 2 deg among those."""
    from napari_4dstem.analysis.acom.matching import match_orientations
    from napari_4dstem.analysis.acom.plan import build_orientation_plan
    from napari_4dstem.analysis.crystal.structure import bundled_crystal
    from napari_4dstem.analysis.crystal.symmetry import misorientation_deg
    from napari_4dstem.data.results import BraggPeaks

    names = args.crystals.split(",")
    cs = [bundled_crystal(n) for n in names]
    out = []
    for cfg in args.configs.split(","):
        plans = [
            build_orientation_plan(c, energy_kev=300, k_max_inv_A=1.5, step_deg=2.0, **CONFIGS[cfg][0]) for c in cs
        ]
        for dose in (float(d) for d in args.doses.split(",")):
            recs, truth, ph = [], [], []
            for k, c in enumerate(cs):
                n = args.phases // len(cs)
                rng = np.random.default_rng([args.seed, int(dose), 7, k])
                pk, U, _, _ = make_set(c, n, dose=dose, rng=rng, shape=args.shape)
                recs += [pk.at(0, i) for i in range(n)]
                truth.append(U)
                ph += [k] * n
            pk = BraggPeaks.from_lists(recs, (1, len(recs)), calibration=pk.calibration)
            truth, ph = np.concatenate(truth), np.array(ph)
            res = match_orientations(pk, plans, min_peaks=3, **CONFIGS[cfg][1])
            got = res.phase[0, :, 0]
            right = got == ph
            ok = np.zeros(len(ph), bool)
            for k, c in enumerate(cs):
                sel = right & (ph == k)
                ok[sel] = misorientation_deg(res.orientation[0, sel, 0], truth[sel], c.point_group) < 2
            row = {
                "crystal": "+".join(names),
                "dose": dose,
                "set": "phases",
                "config": cfg,
                "shape": args.shape,
                "right_phase": float(right.mean()),
                "within2_right_phase": float(ok.mean()),
            }
            out.append(row)
            print(json.dumps(row), flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--n-overlap", type=int, default=200)
    ap.add_argument("--crystals", default="Au,Fe,Ti")
    ap.add_argument("--doses", default="1e5,1e4")
    ap.add_argument("--shape", default="sinc", choices=("sinc", "gaussian"))
    ap.add_argument("--configs", default="before,after")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--json", default=None, help="write all rows here")
    ap.add_argument("--p4", type=int, default=0, help="patterns per set for py4DSTEM (0: skip)")
    ap.add_argument(
        "--phases",
        type=int,
        default=0,
        help="patterns per dose of a mixed set (each crystal alike), matched with every "
        "crystal's plan at once: phase map accuracy (0: skip)",
    )
    args = ap.parse_args(argv)

    from types import SimpleNamespace

    from napari_4dstem.analysis.acom.matching import kinematic_bragg_peaks, match_orientations
    from napari_4dstem.analysis.acom.plan import build_orientation_plan
    from napari_4dstem.analysis.crystal.structure import bundled_crystal
    from napari_4dstem.simulation.samples import random_rotations

    p4py = os.environ.get("NAPARI_4DSTEM_PY4DSTEM_PYTHON")
    rows = []
    for name in args.crystals.split(","):
        c = bundled_crystal(name)
        plans = {
            cfg: build_orientation_plan(c, energy_kev=300, k_max_inv_A=1.5, step_deg=2.0, **CONFIGS[cfg][0])
            for cfg in args.configs.split(",")
        }
        p4_sets = {}
        for dose in (float(d) for d in args.doses.split(",")):
            for overlap in (False, True):
                n = args.n_overlap if overlap else args.n
                if n <= 0:
                    continue
                rng = np.random.default_rng([args.seed, int(dose), overlap, ord(name[0])])
                pk, truth, _w, rich = make_set(c, n, dose=dose, rng=rng, shape=args.shape, overlap=overlap)
                if args.p4 and p4py:
                    p4_sets[(dose, overlap)] = (pk, truth, rich, 2 if overlap else 1)
                for cfg in args.configs.split(","):
                    kw = dict(CONFIGS[cfg][1])
                    match_orientations(pk, plans[cfg], n_matches=2, min_peaks=3, **kw)  # warm-up
                    t0 = time.perf_counter()
                    res = match_orientations(pk, plans[cfg], n_matches=2, min_peaks=3, **kw)
                    dt = time.perf_counter() - t0
                    row = {
                        "crystal": name,
                        "dose": dose,
                        "set": "overlap" if overlap else "single",
                        "config": cfg,
                        "shape": args.shape,
                        "patterns_per_s": n / dt,
                        "peaks_median": float(np.median(np.diff(pk.offsets))) - 1,
                        **score(c, res, truth, rich, overlap),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if (dose, overlap) in p4_sets:
                        p4_sets[(dose, overlap)] += ((cfg, res),)
        if p4_sets:
            rng = np.random.default_rng(99)
            Uc = random_rotations(30, rng)
            cal_pk = kinematic_bragg_peaks(c, Uc, k_max_inv_A=1.5, thickness_A=100.0, origin_px=(128.0, 128.0))
            m = args.p4
            sets = {f"s{i}": (_first(v[0], m), v[3]) for i, v in enumerate(p4_sets.values())}
            got = run_py4dstem(p4py, c, sets, calib=(cal_pk, Uc))
            if got is None:
                continue
            res4, fit_deg = got
            for i, ((dose, overlap), v) in enumerate(p4_sets.items()):
                U4, secs = res4[f"s{i}"]
                truth, rich = v[1][:m], v[2][:m]
                fake = SimpleNamespace(orientation=U4[None], reliability=np.zeros((1, m)), params={})
                row = {
                    "crystal": name,
                    "dose": dose,
                    "set": "overlap" if overlap else "single",
                    "config": "py4DSTEM",
                    "shape": args.shape,
                    "patterns_per_s": m / secs,
                    "frame_fit_deg": fit_deg,
                    **score(c, fake, truth, rich, overlap),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
                for cfg, res in v[4:]:  # ours on the same patterns
                    sub = SimpleNamespace(
                        orientation=res.orientation[:, :m], reliability=res.reliability[:, :m], params={}
                    )
                    row = {
                        "crystal": name,
                        "dose": dose,
                        "set": "overlap" if overlap else "single",
                        "config": f"{cfg} (py4DSTEM's {m})",
                        "shape": args.shape,
                        "patterns_per_s": float("nan"),
                        **score(c, sub, truth, rich, overlap),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if args.phases:
        rows += phase_rows(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print()
    print(
        "| crystal | dose | set | config | within 2 deg | median deg | rich: within 2 | "
        "RI >= 0.01: frac, within 2 | failures with RI >= 0.01 | best of top 2 | both grains top 2 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["set"] == "phases":
            print(
                f"| {r['crystal']} | {r['dose']:.0e} | phases | {r['config']} | "
                f"right phase {100 * r['right_phase']:.1f} %, and within 2 deg "
                f"{100 * r['within2_right_phase']:.1f} % | | | | | | |"
            )
        elif r["set"] == "single":
            print(
                f"| {r['crystal']} | {r['dose']:.0e} | single | {r['config']} | "
                f"{100 * r['within2']:.1f} % | {r['median_deg']:.2f} | "
                f"{100 * r['rich_within2']:.1f} % ({100 * r['rich_frac']:.0f} % rich) | "
                f"{100 * r['flagged_frac']:.0f} %, {100 * r['flagged_within2']:.1f} % | "
                f"{100 * r['failures_marked_reliable']:.0f} % | {100 * r['best_of_top2_within2']:.1f} % | |"
            )
        else:
            print(
                f"| {r['crystal']} | {r['dose']:.0e} | overlap | {r['config']} | "
                f"(first is a grain {100 * r['first_is_a_grain_2deg']:.0f} %) | | | | | | "
                f"{100 * r['both_top2_5deg']:.1f} % (or turned: {100 * r['both_top2_5deg_or_turn']:.1f} %) |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
