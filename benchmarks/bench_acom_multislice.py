"""ACOM on multislice patterns: accuracy of our matcher (and py4DSTEM's) on dynamical data.

    /work/venv/bin/python benchmarks/bench_acom_multislice.py [--n 64] [--cache FILE.npz]
    /work/venv/bin/python benchmarks/bench_acom_multislice.py --simulate-only --cache FILE.npz

Patterns: fcc Au (bundled crystal) at ``n`` uniformly random orientations (seed 2027),
simulated by our torch multislice engine (:class:`~napari_4dstem.simulation.multislice.
MultisliceEngine`, CPU) at 300 kV, 1.5 mrad convergence, focused probe, one configuration with
Debye-Waller factors (no frozen phonons), 2 A slices, thicknesses 10, 30 and 60 nm in one pass.
Detector 256 x 256 px of 0.012 1/A (edge at 1.54 1/A; disk radius 6.3 px). The noise-free
patterns are cached (``--cache``); each thickness is then scored noise-free and with Poisson
noise at ``--dose`` electrons per pattern (the vacuum probe's total), seeded.

Pipeline (what a user runs): :func:`~napari_4dstem.analysis.bragg.disks.find_bragg_disks` with a
plain template from the vacuum probe and ``min_relative`` ``--min-relative`` (default 3e-4 of
the strongest correlation peak, the central beam; its default 0.03 keeps only 1-2 disks of these
patterns), defaults otherwise; origin at the detector centre (known);
:func:`~napari_4dstem.analysis.acom.matching.match_orientations` with a 2 deg plan at k_max 1.5 1/A,
``min_peaks=3``, in two settings (``CONFIGS``): *default* (excitation width 0.02 1/A as the
kinematic benchmark, ``intensity_power`` 0.5) and *dynamical* (0.04 1/A, 0.25).
Misorientation is point-group aware (m-3m proper rotations); masked patterns count as 180 deg.

For comparison on the same orientations: kinematic peak lists (``kinematic_bragg_peaks``,
same k_max, 0.1 px position noise at our 0.012 1/A pixels) through the same matcher.
py4DSTEM 0.14 (side venv) matches the *same detected peak lists* with its defaults and the same
2 deg steps; its orientation matrix ``M`` gives lab vectors ``M^T g`` with ``qx`` our k_y, ``qy``
our k_x and the beam along its -z (``excitation_errors``), so our ``U = P M^T`` with
``P = [[0, 1, 0], [1, 0, 0], [0, 0, -1]]`` (a proper rotation); the kinematic row checks it.

Failure analysis (a failure is > 2 deg off): *low-Sigma CSL* when the found orientation is a
Sigma 3/5/7/9/11 rotation of the truth (within 2 deg, ``CSL``); *kinematically ambiguous* as in
bench_acom.py (a returned top-4 match more than 5 deg off whose noise-free kinematic peak list
reproduces the truth's); *truth in top 4* among the top-4 refined matches; *truth scores lower*
when the truth, refined from itself, ends with a lower score than the returned match: a
mis-scoring by the kinematic model, not a search miss.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (256, 256)
PIXEL = 0.012  # 1/A per detector pixel
ENERGY = 300.0  # keV
CONV = 1.5  # mrad
K_MAX = 1.5  # 1/A
# our matcher's settings: name -> (plan excitation width 1/A, intensity_power)
CONFIGS = {"default": (0.02, 0.5), "dynamical": (0.04, 0.25)}
P_FROM_P4 = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def simulate(n: int, thicknesses_nm, *, seed: int = 2027, cache: str | None = None) -> dict:
    """Noise-free multislice patterns ``(n_t, n, H, W)`` (fractions of the beam), the probe and
    the true orientations; read from / written to ``cache`` when given."""
    from napari_4dstem.analysis.crystal.structure import bundled_crystal
    from napari_4dstem.simulation.engines import SimulationRequest
    from napari_4dstem.simulation.multislice import MultisliceEngine
    from napari_4dstem.simulation.samples import random_rotations

    key = dict(
        n=n,
        thicknesses_nm=list(map(float, thicknesses_nm)),
        seed=seed,
        shape=SHAPE,
        pixel=PIXEL,
        energy=ENERGY,
        conv=CONV,
    )
    if cache and Path(cache).exists():
        d = np.load(cache)
        if json.loads(str(d["key"])) == json.loads(json.dumps(key)):
            return {k: d[k] for k in ("U", "patterns", "probe", "sim_s")}
        print(f"cache {cache} was made with other parameters; simulating again", file=sys.stderr)
    au = bundled_crystal("Au")
    U = random_rotations(n, np.random.default_rng(seed))
    eng = MultisliceEngine(device="cpu")
    th_A = tuple(10.0 * t for t in thicknesses_nm)
    pats = np.zeros((len(th_A), n, *SHAPE), np.float32)
    probe = None
    t0 = time.perf_counter()
    for i in range(n):
        req = SimulationRequest(
            au,
            orientation=U[i],
            thicknesses_A=th_A,
            energy_kev=ENERGY,
            convergence_mrad=CONV,
            shape=SHAPE,
            pixel_size_inv_A=PIXEL,
            seed=i,
        )
        r = eng.simulate(req)
        pats[:, i] = r.patterns[:, 0]
        probe = r.probe
        if (i + 1) % 8 == 0:
            el = time.perf_counter() - t0
            print(f"simulated {i + 1}/{n} ({el:.0f} s)", file=sys.stderr, flush=True)
    sim_s = time.perf_counter() - t0
    out = {"U": U, "patterns": pats, "probe": probe, "sim_s": np.float64(sim_s)}
    if cache:
        tmp = Path(cache).with_suffix(".tmp.npz")
        np.savez(tmp, key=json.dumps(key), **out)
        os.replace(tmp, cache)
    return out


P4_SCRIPT = r"""
import json, sys, numpy as np, warnings
warnings.filterwarnings("ignore")
from py4DSTEM.process.diffraction import Crystal
from emdfile import PointList
d = np.load(sys.argv[1])
c = Crystal(np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]), 79, 4.0782)
c.calculate_structure_factors(k_max=float(d["k_max"]))
c.orientation_plan(zone_axis_range=np.array([[0, 1, 1], [1, 1, 1]]), angle_step_zone_axis=2.0,
                   angle_step_in_plane=2.0, accel_voltage=300e3,
                   sigma_excitation_error=float(d["sigma"]), progress_bar=False)
out = {}
for name in [str(x) for x in d["names"]]:
    off, gx, gy, inten = (d[name + "_" + k] for k in ("off", "qx", "qy", "inten"))
    mats = np.full((len(off) - 1, 3, 3), np.nan)
    for i in range(len(off) - 1):
        a, b = off[i], off[i + 1]
        if b - a < 3:
            continue
        arr = np.zeros(b - a, dtype=[("qx", float), ("qy", float), ("intensity", float)])
        arr["qx"], arr["qy"], arr["intensity"] = gx[a:b], gy[a:b], inten[a:b]
        o = c.match_single_pattern(PointList(arr), num_matches_return=1)
        m = np.asarray(o.matrix).reshape(-1, 3, 3)[0]
        if abs(np.linalg.det(m) - 1) < 1e-3:
            mats[i] = m
    out[name] = mats
np.savez(sys.argv[2], **out)
"""


def run_py4dstem(py: Path, sets: dict, *, sigma: float) -> dict | None:
    """py4DSTEM's best orientation (converted to our ``U``) for each set of lab-frame peaks
    ``{name: (off, gx, gy, amp)}``; None when it fails."""
    with tempfile.TemporaryDirectory() as td:
        f, o, s = Path(td) / "in.npz", Path(td) / "out.npz", Path(td) / "p4.py"
        arrs = {}
        for name, (off, gx, gy, amp) in sets.items():
            # py4DSTEM's qx is its first (row) axis: k_y as qx, k_x as qy
            arrs.update({f"{name}_off": off, f"{name}_qx": gy, f"{name}_qy": gx, f"{name}_inten": amp**2})
        np.savez(f, names=np.array(list(sets)), k_max=K_MAX, sigma=sigma, **arrs)
        s.write_text(P4_SCRIPT)
        t0 = time.perf_counter()
        r = subprocess.run([str(py), str(s), str(f), str(o)], capture_output=True, text=True, timeout=3600)
        if r.returncode != 0:
            print("py4DSTEM failed:", r.stderr[-2000:], file=sys.stderr)
            return None
        dt = time.perf_counter() - t0
        d = np.load(o)
        out = {k: P_FROM_P4 @ np.swapaxes(d[k], -1, -2) for k in sets}
    n_total = sum(len(v[0]) - 1 for v in sets.values())
    print(f"py4DSTEM: {n_total} patterns in {dt:.0f} s (incl. import and plan)", file=sys.stderr)
    return out


def detect(
    patterns: np.ndarray,
    probe: np.ndarray,
    *,
    dose: float | None,
    rng,
    min_relative: float,
    min_significance: float | None = None,
):
    """Bragg peaks of patterns ``(n, H, W)`` (fractions of the beam): Poisson noise at ``dose``
    electrons per pattern (None: noise-free, scaled to 1e5), template from the probe."""
    from napari_4dstem.analysis.bragg.disks import find_bragg_disks
    from napari_4dstem.analysis.bragg.probe import make_template
    from napari_4dstem.data.calibration import Calibration
    from napari_4dstem.data.datacube import DataCube

    scale = float(dose or 1e5)
    lam = patterns * scale
    data = rng.poisson(lam).astype(np.float32) if dose else lam.astype(np.float32)
    cal = Calibration(
        k_pixel_size=PIXEL,
        k_units="1/A",
        beam_energy_kev=ENERGY,
        convergence_semiangle_mrad=CONV,
        origin_px=(SHAPE[0] // 2, SHAPE[1] // 2),
    )
    dc = DataCube(data.reshape(1, len(patterns), *SHAPE), cal, name="multislice_au")
    return find_bragg_disks(
        dc,
        template=make_template(probe * scale),
        min_relative=min_relative,
        min_significance=min_significance,
    )


def truth_scores(peaks, plan, U_true, *, n_iter=8, intensity_power=0.5):
    """Refined score (the matcher's final cosine) of the truth, refined from the truth."""
    from napari_4dstem.analysis.acom import matching as acom

    k_max = plan.params["k_max_inv_A"]
    off, gx, gy, amp = acom.peaks_to_lab(peaks, k_max_inv_A=k_max, min_radius_inv_A=0.5 * plan.shell_radii[0])
    n = len(off) - 1
    args, (_, corr, _, _) = acom.refine_arguments(
        plan,
        off,
        gx,
        gy,
        amp ** (2 * intensity_power),
        U_true[:, None].copy(),
        np.ones((n, 1), bool),
        intensity_power=intensity_power,
        k_max=k_max,
        tol_pos=1.5 * PIXEL,
        n_iter=n_iter,
    )
    acom._refine_range(0, n, *args)
    return corr[:, 0]


def summarize(mis: np.ndarray) -> dict:
    m = np.nan_to_num(mis, nan=180.0)
    return {
        "median_deg": float(np.median(m)),
        "mean_deg": float(np.mean(m)),
        "within2": float(np.mean(m < 2)),
        "within3": float(np.mean(m < 3)),
    }


def evaluate(peaks, plan, U_true, *, match_kw=None) -> dict:
    """Our matcher on ``peaks``: accuracy, and what the failures are."""
    from bench_acom import ambiguous_patterns

    from napari_4dstem.analysis.acom.matching import match_orientations
    from napari_4dstem.analysis.crystal.symmetry import misorientation_deg

    au = plan.crystal
    res = match_orientations(peaks, plan, min_peaks=3, n_matches=4, **(match_kw or {}))
    top = res.orientation[0]
    mis4 = np.nan_to_num(misorientation_deg(top, U_true[:, None], au.point_group), nan=180.0)
    mis = mis4[:, 0]
    row = summarize(mis)
    fail = mis >= 2
    csl = np.array(csl_relation(U_true, top[:, 0], au.point_group))
    amb = ambiguous_patterns(au, U_true, top, k_max=K_MAX, thickness=50.0)
    ts = truth_scores(peaks, plan, U_true, intensity_power=(match_kw or {}).get("intensity_power", 0.5))
    got = res.correlation[0, :, 0]
    n_pk = res.n_peaks[0]
    row.update(
        n=len(mis),
        peaks_median=float(np.median(n_pk)),
        masked=int(np.sum(n_pk < 3)),
        failures=int(fail.sum()),
        fail_ambiguous=int(np.sum(fail & amb)),
        fail_truth_top4=int(np.sum(fail & np.any(mis4 < 2, axis=1))),
        fail_truth_scores_lower=int(np.sum(fail & (ts < got))),
        fail_few_peaks=int(np.sum(fail & (n_pk < 6))),
        fail_csl=int(np.sum(fail & (csl != ""))),
        fail_csl_kinds={k: int(np.sum(fail & (csl == k))) for k, *_ in CSL},
        reliable_frac=float(np.mean(res.reliability[0] >= 0.01)),
        reliable_within2=float(np.mean(mis[res.reliability[0] >= 0.01] < 2)),
    )
    return row, mis


# low-Sigma coincidence-site-lattice rotations of cubic crystals: (name, angle deg, axis family)
CSL = (
    ("Sigma3", 60.0, (1, 1, 1)),
    ("Sigma5", 36.87, (1, 0, 0)),
    ("Sigma7", 38.21, (1, 1, 1)),
    ("Sigma9", 38.94, (1, 1, 0)),
    ("Sigma11", 50.48, (1, 1, 0)),
)


def csl_relation(U_true, U_found, group, *, tol_deg=2.0) -> list[str]:
    """Per pattern: the low-Sigma CSL rotation (``CSL``) relating the found orientation to the
    truth within ``tol_deg`` (angle, and axis direction), else ``""``."""
    out = []
    for Ut, Uf in zip(U_true, U_found, strict=True):
        label = ""
        if np.all(np.isfinite(Uf)):
            for R in group.rotations:
                D = Ut.T @ Uf @ R  # crystal frame
                ang = math.degrees(math.acos(np.clip((np.trace(D) - 1) / 2, -1, 1)))
                ax = np.array([D[2, 1] - D[1, 2], D[0, 2] - D[2, 0], D[1, 0] - D[0, 1]])
                if np.linalg.norm(ax) < 1e-9:
                    continue
                ax = np.sort(np.abs(ax / np.linalg.norm(ax)))[::-1]
                for name, a0, fam in CSL:
                    f = np.sort(np.abs(np.array(fam, float)))[::-1]
                    f /= np.linalg.norm(f)
                    off = math.degrees(math.acos(np.clip(ax @ f, -1, 1)))
                    if abs(ang - a0) <= tol_deg and off <= tol_deg:
                        label = name
                        break
                if label:
                    break
        out.append(label)
    return out


def lattice_fraction(peaks, U_true, crystal, *, radius_px=2.0) -> float:
    """Fraction of the detected peaks (central beam and beyond k_max excluded) that lie within
    ``radius_px`` of a projected reciprocal-lattice point of the true orientation."""
    from napari_4dstem.analysis.acom.matching import peaks_to_lab

    off, gx, gy, _ = peaks_to_lab(peaks, k_max_inv_A=K_MAX, min_radius_inv_A=0.2)
    refl = crystal.reciprocal_points(K_MAX * 1.2)
    good = 0
    for i in range(len(off) - 1):
        a, b = off[i], off[i + 1]
        v = refl.g @ U_true[i].T
        d = np.hypot(gx[a:b, None] - v[None, :, 0], gy[a:b, None] - v[None, :, 1])
        good += int(np.sum(d.min(axis=1) <= radius_px * PIXEL)) if b > a else 0
    return good / max(1, off[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--thicknesses-nm", type=float, nargs="+", default=[10.0, 30.0, 60.0])
    ap.add_argument("--dose", type=float, default=1e5, help="electrons per pattern (0: none)")
    ap.add_argument(
        "--min-relative",
        type=float,
        default=3e-4,
        help="find_bragg_disks min_relative (its default 0.03 keeps 1-2 disks)",
    )
    ap.add_argument(
        "--min-significance",
        type=float,
        default=None,
        help="find_bragg_disks min_significance (disk z-score test; default: off)",
    )
    ap.add_argument("--cache", default=None, help="npz file for the simulated patterns")
    ap.add_argument("--p4venv", default="/work/p4venv")
    ap.add_argument("--no-p4", action="store_true")
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args(argv)

    from napari_4dstem.analysis.acom.matching import kinematic_bragg_peaks, peaks_to_lab
    from napari_4dstem.analysis.acom.plan import build_orientation_plan
    from napari_4dstem.analysis.crystal.structure import bundled_crystal
    from napari_4dstem.analysis.crystal.symmetry import misorientation_deg

    d = simulate(args.n, args.thicknesses_nm, cache=args.cache)
    U, pats, probe = d["U"], d["patterns"], d["probe"]
    au = bundled_crystal("Au")
    rng = np.random.default_rng(7)
    sets = {
        "kinematic": kinematic_bragg_peaks(
            au,
            U,
            k_max_inv_A=K_MAX,
            thickness_A=50.0,
            k_pixel_size=PIXEL,
            origin_px=(SHAPE[0] // 2, SHAPE[1] // 2),
            position_noise_px=0.1,
            rng=rng,
        )
    }
    doses = [None] + ([args.dose] if args.dose > 0 else [])
    t_det = 0.0
    for it, t in enumerate(args.thicknesses_nm):
        for dose in doses:
            t0 = time.perf_counter()
            name = f"{t:g} nm, " + ("noise-free" if dose is None else f"{dose:.0e} e/pattern")
            sets[name] = detect(
                pats[it],
                probe,
                dose=dose,
                rng=rng,
                min_relative=args.min_relative,
                min_significance=args.min_significance,
            )
            t_det += time.perf_counter() - t0
    rows: dict = {}
    for cfg, (width, power) in CONFIGS.items():
        plan = build_orientation_plan(
            au, energy_kev=ENERGY, k_max_inv_A=K_MAX, step_deg=2.0, excitation_width_inv_A=width
        )
        for name, bp in sets.items():
            row, _ = evaluate(bp, plan, U, match_kw={"intensity_power": power})
            row["on_lattice"] = lattice_fraction(bp, U, au)
            rows.setdefault(name, {})[cfg] = row
    p4 = None
    env_py = os.environ.get("NAPARI_4DSTEM_PY4DSTEM_PYTHON")
    py = Path(env_py) if env_py else Path(args.p4venv) / "bin" / "python"
    if not args.no_p4 and py.exists():
        lab = {f"s{k}": peaks_to_lab(bp, k_max_inv_A=K_MAX, min_radius_inv_A=0.2) for k, bp in enumerate(sets.values())}
        mats = run_py4dstem(py, lab, sigma=0.02)
        if mats is not None:
            p4 = {}
            for k, name in enumerate(sets):
                p4[name] = summarize(misorientation_deg(mats[f"s{k}"], U, au.point_group))
    meta = {
        "n": args.n,
        "simulation_s": float(d["sim_s"]),
        "detection_s": t_det,
        "load_average": os.getloadavg(),
        "min_relative": args.min_relative,
        "configs": {k: {"excitation_width_inv_A": w, "intensity_power": q} for k, (w, q) in CONFIGS.items()},
    }
    out = {"meta": meta, "ours": rows, "py4dstem": p4}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))

    def cell(r):
        return f"{r['median_deg']:.2f} / {r['mean_deg']:.1f}, {100 * r['within2']:.0f} / {100 * r['within3']:.0f} %"

    print()
    print(
        "| patterns | peaks (on lattice) | ours, default: median / mean deg, within 2 / 3 deg "
        "| ours, dynamical | failures (dynamical): low-Sigma CSL, ambiguous, truth in top 4, "
        "truth scores lower | py4DSTEM |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        a, b = r["default"], r["dynamical"]
        print(
            f"| {name} | {a['peaks_median']:.0f} ({100 * a['on_lattice']:.0f} %) | {cell(a)} | "
            f"{cell(b)} | {b['failures']}: {b['fail_csl']}, {b['fail_ambiguous']}, "
            f"{b['fail_truth_top4']}, "
            f"{b['fail_truth_scores_lower']} | {cell(p4[name]) if p4 else 'not run'} |"
        )
    return 0


def main_simulate_only(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--thicknesses-nm", type=float, nargs="+", default=[10.0, 30.0, 60.0])
    ap.add_argument("--cache", required=True)
    a = ap.parse_args(argv)
    d = simulate(a.n, a.thicknesses_nm, cache=a.cache)
    print("simulation s", float(d["sim_s"]))
    return 0


if __name__ == "__main__":
    if "--simulate-only" in sys.argv:
        sys.exit(main_simulate_only([a for a in sys.argv[1:] if a != "--simulate-only"]))
    sys.exit(main())
