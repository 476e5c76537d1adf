"""ACOM: the intensity power chosen from the data (``intensity_power="auto"``, session 10).

    PYTHONPATH=src python benchmarks/bench_acom_power.py [--seed 399213] [--n 200]
        [--crystals Au,Fe,Ti,MgO,TiO2] [--sets own,sinc@1e5,sinc@1e4,gaussian@1e5] [--powers 0.25,0.5,auto]

Sets (``--sets``):

* ``own``: the matcher's own model, ``kinematic_bragg_peaks`` (Gaussian rocking curve at 5 nm,
  0.1 px position noise), matched with a 5 nm plan;
* ``sinc@DOSE`` / ``gaussian@DOSE``: ``bench_acom_independent.make_set`` (10-40 nm films, sinc^2
  or Gaussian rocking curve, Debye-Waller 1.5x, Poisson counts at DOSE electrons, 2 noise
  peaks), matched with the default 10 nm plan.

Crystals: the bundled Au, Fe, Ti, and two nothing was tuned on: MgO (rocksalt, Fm-3m,
a = 4.212 A) and rutile TiO2 (P4_2/mnm, a = 4.594, c = 2.959 A). 2 deg plans, k_max 1.5 1/A,
``min_peaks=3``, single grains. One JSON row per set and power: within 2 deg, median
misorientation, the share with reliability >= 0.01 and its share within 2 deg, the median best
correlation (the quantity ``"auto"`` decides on) and whether the second refinement at 0.5 ran.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def crystal(name):
    from napari_4dstem.analysis.crystal.structure import Crystal, bundled_crystal

    if name == "MgO":
        atoms = [("Mg", (0, 0, 0), 1.0, 0.3), ("O", (0.5, 0.5, 0.5), 1.0, 0.35)]
        return Crystal.from_parameters(4.212, 4.212, 4.212, atoms=atoms, spacegroup="F m -3 m", name="MgO")
    if name == "TiO2":
        atoms = [("Ti", (0, 0, 0), 1.0, 0.4), ("O", (0.3049, 0.3049, 0), 1.0, 0.5)]
        return Crystal.from_parameters(4.594, 4.594, 2.959, atoms=atoms, spacegroup="P 42/m n m", name="TiO2")
    return bundled_crystal(name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=399213)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--crystals", default="Au,Fe,Ti,MgO,TiO2")
    ap.add_argument("--sets", default="own,sinc@1e5,sinc@1e4,gaussian@1e5")
    ap.add_argument("--powers", default="0.25,0.5,auto")
    args = ap.parse_args(argv)

    from bench_acom_independent import make_set

    from napari_4dstem.analysis.acom.matching import kinematic_bragg_peaks, match_orientations
    from napari_4dstem.analysis.acom.plan import build_orientation_plan
    from napari_4dstem.analysis.crystal.symmetry import misorientation_deg
    from napari_4dstem.simulation.samples import random_rotations

    powers = [p if p == "auto" else float(p) for p in args.powers.split(",")]
    for name in args.crystals.split(","):
        c = crystal(name)
        plan10 = build_orientation_plan(c, energy_kev=300, k_max_inv_A=1.5, step_deg=2.0)
        for st in args.sets.split(","):
            if st == "own":
                rng = np.random.default_rng([args.seed, 1, ord(name[0])])
                U = random_rotations(args.n, rng)
                kw = dict(k_max_inv_A=1.5, thickness_A=50.0, position_noise_px=0.1, rng=rng, origin_px=(128.0, 128.0))
                pk = kinematic_bragg_peaks(c, U, **kw)
                plan = build_orientation_plan(c, energy_kev=300, k_max_inv_A=1.5, step_deg=2.0, thickness_A=50.0)
            else:
                shape, dose = st.split("@")
                rng = np.random.default_rng([args.seed, int(float(dose)), 0, ord(name[0])])
                pk, U, _, _ = make_set(c, args.n, dose=float(dose), rng=rng, shape=shape)
                plan = plan10
            for q in powers:
                t0 = time.perf_counter()
                res = match_orientations(pk, plan, min_peaks=3, intensity_power=q)
                dt = time.perf_counter() - t0
                mis = np.nan_to_num(misorientation_deg(res.orientation[0, :, 0], U, c.point_group), nan=180.0)
                flag = res.reliability[0] >= 0.01
                best = res.correlation[0, :, 0]
                row = {
                    "crystal": name,
                    "set": st,
                    "power": q,
                    "median_best_correlation": float(np.median(best)),
                    "second_refinement": res.params.get("polish_power", 0.0),
                    "within2": float(np.mean(mis < 2)),
                    "median_deg": float(np.median(mis)),
                    "ri0.01_frac": float(flag.mean()),
                    "ri0.01_within2": float(np.mean(mis[flag] < 2)) if flag.any() else float("nan"),
                    "s": dt,
                }
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
