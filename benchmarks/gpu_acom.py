"""ACOM on a GPU: patterns/s of the matching with CUDA scoring vs the CPU (numba) path.

    python benchmarks/gpu_acom.py [--n 4096] [--repeats 3]

Same patterns and plan for both paths: kinematic fcc Au at uniformly random orientations (300 kV,
k_max 1.5 1/A, 5 nm thickness, 0.1 px position noise), 2 deg plan (the issue's benchmark), then
a 1 deg plan (8x the templates x in-plane angles). For each plan it prints patterns/s of

- the scoring step alone (plan x pattern correlation: numba on all cores vs torch on CUDA), and
  whether the top-1 plan candidates agree;
- the whole matching (scoring + distinct top candidates + refinement, which stays on the CPU),
  and whether the refined top-1 orientations agree (misorientation < 0.1 deg).

Needs torch with CUDA; without it prints SKIP and exits 0. Needs only numpy, numba, torch, gemmi,
spglib, pyyaml (and the package's own source: run from the repository, nothing to install); the
lent GPU image has all but gemmi and spglib, which travel as wheels (exit 2 with a message when
missing). Built to finish in well under 90 s on one GPU; the 1 deg plan is skipped when the 2 deg
part took over 40 s. ``--device cpu --n 64 --repeats 1`` runs the same steps with torch on the
CPU, to check the script on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096, help="patterns")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda", help="torch device (cpu: a dry run of the script)")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("SKIP: torch is not installed")
        return 0
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        print("SKIP: CUDA is not available")
        return 0
    missing = [m for m in ("numba", "gemmi", "spglib", "yaml") if not _importable(m)]
    if missing:
        print(f"gpu_acom.py needs {', '.join(missing)} (pip wheels for this Python)", file=sys.stderr)
        return 2
    if SRC.is_dir() and str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    import numpy as np

    def sync():
        if dev.startswith("cuda"):
            torch.cuda.synchronize()

    from napari_4dstem.analysis.acom import matching as acom
    from napari_4dstem.analysis.acom._torch import score_batches_torch
    from napari_4dstem.analysis.acom.matching import (
        kinematic_bragg_peaks,
        match_orientations,
        peaks_to_lab,
    )
    from napari_4dstem.analysis.acom.plan import build_orientation_plan
    from napari_4dstem.analysis.crystal.structure import bundled_crystal
    from napari_4dstem.analysis.crystal.symmetry import misorientation_deg
    from napari_4dstem.simulation.samples import random_rotations

    t_start = time.perf_counter()
    kmax, thick, n = 1.5, 50.0, args.n
    au = bundled_crystal("Au")
    rng = np.random.default_rng(2026)
    U = random_rotations(n, rng)
    pk = kinematic_bragg_peaks(au, U, k_max_inv_A=kmax, thickness_A=thick, position_noise_px=0.1, rng=rng)
    n_threads = os.cpu_count() or 1
    name = torch.cuda.get_device_name(0) if dev.startswith("cuda") else "torch on the CPU"
    print(f"device: {name}; CPU threads: {n_threads}; {n} patterns, median {int(np.median(pk.counts()))} peaks")
    rows = []

    def timed(fn, n_pat, repeats):
        fn()  # warm up: numba compile, CUDA context and kernels
        ts = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            out = fn()
            sync()
            ts.append(time.perf_counter() - t0)
        return n_pat / float(np.median(ts)), out

    def bench(plan, U, pk, repeats):
        n_pat, top_k = len(U), 24
        off, gx, gy, amp = peaks_to_lab(pk, k_max_inv_A=kmax, min_radius_inv_A=0.2)
        r, th = np.hypot(gx, gy), np.arctan2(gy, gx)
        tol = 1.5 * pk.calibration.k_pixel_size

        def outs():
            return (
                np.full((n_pat, top_k), -1, np.int64),
                np.zeros((n_pat, top_k)),
                np.zeros((n_pat, top_k)),
            )

        def score_numba():
            o = outs()
            args_ = (off, r, th, amp, plan.shell_radii, plan.template_offsets)
            args_ += (plan.spot_angle.astype(np.float64), plan.spot_weight.astype(np.float64))
            args_ += (plan.template_norm, plan.n_inplane, tol, tol, *o)
            chunk = max(16, min(256, n_pat // (4 * n_threads) + 1))
            for _ in acom._run_ranges(acom._score_range, n_pat, args_, n_threads, chunk):
                pass
            return o

        def score_torch():
            o = outs()
            kw = dict(tol_r=tol, tol_pos=tol, device=dev)
            for _ in score_batches_torch(off, r, th, amp, plan, *o, **kw):
                pass
            return o

        s_cpu, o_cpu = timed(score_numba, n_pat, repeats)
        s_gpu, o_gpu = timed(score_torch, n_pat, repeats)
        m_cpu, r_cpu = timed(lambda: match_orientations(pk, plan, min_peaks=3, device="numba"), n_pat, repeats)
        m_gpu, r_gpu = timed(lambda: match_orientations(pk, plan, min_peaks=3, device=dev), n_pat, repeats)
        mis_pair = misorientation_deg(r_cpu.orientation[0, :, 0], r_gpu.orientation[0, :, 0], au.point_group)
        agree = np.nan_to_num(mis_pair, nan=0.0) < 0.1
        ambiguous = r_cpu.reliability[0] < 0.01
        mis_true = np.nan_to_num(misorientation_deg(r_gpu.orientation[0, :, 0], U, au.point_group), nan=180.0)
        return {
            "plan_step_deg": plan.params["step_deg"],
            "zones_x_inplane": f"{plan.n_zones} x {plan.n_inplane}",
            "patterns": n_pat,
            "scoring_patterns_per_s_numba": round(s_cpu, 1),
            "scoring_patterns_per_s_torch": round(s_gpu, 1),
            "scoring_speedup": round(s_gpu / s_cpu, 2),
            "scoring_top1_zone_agree": float(np.mean(o_cpu[0][:, 0] == o_gpu[0][:, 0])),
            "scoring_max_score_diff": float(np.max(np.abs(o_cpu[2] - o_gpu[2]))),
            "match_patterns_per_s_numba": round(m_cpu, 1),
            "match_patterns_per_s_torch_scoring": round(m_gpu, 1),
            "match_speedup": round(m_gpu / m_cpu, 2),
            "match_top1_agree_0p1deg": float(agree.mean()),
            "match_top1_disagree_among_ambiguous": int(np.sum(~agree & ambiguous)),
            "match_top1_disagree_other": int(np.sum(~agree & ~ambiguous)),
            "torch_within_2deg_of_truth": float(np.mean(mis_true < 2)),
        }

    for step in (2.0, 1.0):
        # the 1 deg plan: 8x the work per pattern, a quarter of the patterns, one timed run
        m = n if step >= 2 else max(1, n // 4)
        if step < 2.0 and time.perf_counter() - t_start > 40:
            print(f"plan {step} deg: skipped (time)")
            continue
        plan = build_orientation_plan(au, energy_kev=300, k_max_inv_A=kmax, step_deg=step, thickness_A=thick)
        sub = (
            pk
            if m == n
            else kinematic_bragg_peaks(au, U[:m], k_max_inv_A=kmax, thickness_A=thick, position_noise_px=0.1, rng=rng)
        )
        row = bench(plan, U[:m], sub, args.repeats if m == n else 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print("| plan | path | scoring patterns/s | matching patterns/s | top-1 agree |")
    print("|---|---|---|---|---|")
    for row in rows:
        p = f"{row['plan_step_deg']} deg ({row['zones_x_inplane']}), {row['patterns']} patterns"
        print(
            f"| {p} | numba, {n_threads} threads | {row['scoring_patterns_per_s_numba']:.0f} | "
            f"{row['match_patterns_per_s_numba']:.0f} | |"
        )
        print(
            f"| {p} | torch {dev} scoring | {row['scoring_patterns_per_s_torch']:.0f} "
            f"({row['scoring_speedup']}x) | {row['match_patterns_per_s_torch_scoring']:.0f} "
            f"({row['match_speedup']}x) | zones {100 * row['scoring_top1_zone_agree']:.1f} %, "
            f"refined {100 * row['match_top1_agree_0p1deg']:.1f} % |"
        )
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
