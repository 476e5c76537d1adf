"""The re-merge of the smoothed label map and its guard, scored against the re-merge off and unguarded.

    python benchmarks/bench_classify_remerge.py --seeds 7001,9501,9502 --separation T [--out DIR]

Each case of ``bench_classify.py`` (same generator, same cases and draws: 32 x 32 scans of 96 x 96 patterns)
is classified once with ``ClassifyParams(remerge_jump=20, remerge_separation=T)`` (the count suggested,
``space="auto"``). The inputs of the smoothed-map re-merge (both clustering spaces) and the maximum-autocorrelation
factors are recorded during that run, so the re-merge off (``remerge_jump=0``) and session 12's unguarded
re-merge (``remerge_separation=0``) are replayed exactly from the same run: the re-merge is the last step
before the space choice, which is replayed too (checked on every case: replaying the guarded setting gives the
run's own labels). One classification per case instead of three: on two shared cores a case takes 1-3 min.
Also PCA (10) + k-means on the raw patterns given the true count (the issue's baseline), and the time of the
guarded re-merge against the unguarded one on the same inputs (median of 3). ``--out`` keeps the recorded inputs
(pickles) for replays with other thresholds.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_classify as B

from napari_4dstem.analysis.classify import ClassifyParams, FeatureParams, classify
from napari_4dstem.analysis.classify import model as M


def main(argv=None):
    from sklearn.metrics import adjusted_rand_score as ari

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="7001")
    ap.add_argument("--separation", type=float, required=True, help="ClassifyParams.remerge_separation scored")
    ap.add_argument("--cases", default="all", help="comma-separated case indices (0-4) or all")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    sep = args.separation
    cap: dict = {}
    orig_rm, orig_cs = M._remerge_smoothed, M.choose_space

    def rm(zc, labels, prob, scan_shape, jump, separation=0.0):
        cap.setdefault("remerge", []).append((np.array(zc), np.array(labels), np.array(prob), tuple(scan_shape)))
        return orig_rm(zc, labels, prob, scan_shape, jump, separation)

    def cs(factors, labels):
        cap["factors"] = np.array(factors)
        return orig_cs(factors, labels)

    def replay(jump, s):
        labs = {}
        for space, (zc, lab, prob, shape) in zip(("components", "maf"), cap["remerge"]):
            labs[space] = orig_rm(zc, lab, prob, shape, jump, s)[0] if jump > 0 else lab
        return labs[orig_cs(cap["factors"], labs)[0]] if len(labs) > 1 else labs["components"]

    M._remerge_smoothed, M.choose_space = rm, cs
    rows = []
    try:
        items = list(enumerate(B.cases(96).items()))
        if args.cases != "all":
            items = [items[int(c)] for c in args.cases.split(",")]
        for seed in [int(s) for s in args.seeds.split(",")]:
            for ci, (name, (make, dose)) in items:
                phases = make()
                grains = B.voronoi(32, 2 * len(phases), seed + ci)
                gc = np.arange(2 * len(phases)) % len(phases)
                data, truth, _ = B.draw_case(phases, gc[grains], scan=32, det=96, dose=dose, seed=seed + ci)
                cap.clear()
                t0 = time.perf_counter()
                p = ClassifyParams(remerge_jump=20.0, remerge_separation=sep)
                r = classify(data, features=FeatureParams("pattern"), params=p, class_means=False)
                t_ours = time.perf_counter() - t0
                t0 = time.perf_counter()
                b = B.baseline(data, len(phases))
                t_base = time.perf_counter() - t0
                t = truth.ravel()
                assert abs(ari(t, replay(20.0, sep)) - ari(t, r.labels.ravel())) < 1e-12  # the replay is the run
                tg, tu = [], []
                for _ in range(3):
                    t0 = time.perf_counter()
                    replay(20.0, sep)
                    tg.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    replay(20.0, 0.0)
                    tu.append(time.perf_counter() - t0)
                row = {"seed": seed, "case": name, "k": len(phases), "chosen": r.params["space_chosen"]}
                runs = (("off", replay(0, 0)), ("remerge20", replay(20.0, 0.0)), (f"guard{sep:g}", r.labels.ravel()))
                for key, lab in runs:
                    row[key] = [len(np.unique(lab)), round(float(ari(t, lab)), 3)]
                row["baseline_given_k"] = round(float(ari(t, b.ravel())), 3)
                row.update(
                    ours_s=round(t_ours, 1),
                    baseline_s=round(t_base, 2),
                    remerge_guarded_s=round(float(np.median(tg)), 4),
                    remerge_unguarded_s=round(float(np.median(tu)), 4),
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.out is not None:
                    args.out.mkdir(parents=True, exist_ok=True)
                    rec = {"seed": seed, "case": name, "truth": truth, "k": len(phases), "labels": r.labels, **cap}
                    with open(args.out / f"{seed}_{ci}.pkl", "wb") as f:
                        pickle.dump(rec, f)
    finally:
        M._remerge_smoothed, M.choose_space = orig_rm, orig_cs
    keys = [k for k in rows[0] if k in ("off", "remerge20") or k.startswith("guard")] if rows else []
    for k in keys:
        print(
            f"{k}: mean ARI {np.mean([r[k][1] for r in rows]):.3f}, right count "
            f"{sum(r[k][0] == r['k'] for r in rows)}/{len(rows)}",
            flush=True,
        )
    if rows:
        print(f"baseline (count given): mean ARI {np.mean([r['baseline_given_k'] for r in rows]):.3f}", flush=True)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
