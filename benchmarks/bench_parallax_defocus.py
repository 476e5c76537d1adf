"""Parallax defocus: this code next to another revision (default ``main``) on the same patterns.

Data: the thin-object forward model (``analysis.phase.forward``) on the 16 x 16 scan of the
ptychography tests (300 kV, 20 mrad, 0.5 A step: an 8 A field, 48 px detector, 0.25 rad per atom),
planted defocus 0 / 50 / 100 / 200 A at noise-free, 1e4 and 1e3 e/A^2, noise and atoms drawn by
``--seeds``. ``--wide`` adds the probe-wider-than-the-field cases (32 x 32 at 0.5 A, a 16 A field;
planted +-800 and 1200 A, and 500 A). Each case's patterns are written once and both revisions
fit them (the other revision's ``src`` exported by ``git archive`` and run in a subprocess), so
the two columns are the same data. Reported: the fitted defocus, its standard error, the gate
(``defocus_confident``), and the counts within 1 nm (10 A) of the planted defocus.

    PYTHONPATH=src python benchmarks/bench_parallax_defocus.py --seeds 11,12,13 [--rev main] [--wide]

``--rotation 20`` plants a scan rotation the calibration does not hold (the data simulated at 20 deg,
the calibration saying 0: the fit must find it; reported: the rotation recovered within 3 deg).
``--phase-per-atom 0.12`` draws a second, weaker sample. Coverage (session 14): a gated-on fit is
"inside" when the planted defocus lies in its stated 95 % interval (version 3's
``defocus_interval_A``); a revision that states none is judged by the same rule on its own SE,
``defocus -+ 3.18 SE`` (Student's t, 3 degrees of freedom). ``--vacuum`` runs only the vacuum-centre
cases (128 x 128 scan at 0.5 A, 32 px detector, the central 80 x 80 positions vacuum, 1e5 e/A^2,
planted 300 A).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FIT = r"""
import json, sys, time
import numpy as np
from napari_4dstem import DataCube
from napari_4dstem.analysis.phase.parallax import parallax
from napari_4dstem.data.calibration import Calibration

folder = sys.argv[1]
cases = json.load(open(folder + "/cases.json"))
out = []
for c in cases:
    z = np.load(folder + "/" + c["file"])
    cal = Calibration(**json.loads(str(z["cal"])))
    t = time.perf_counter()
    r = parallax(DataCube(z["data"], cal.replace(rotation_deg=0.0)))
    conf = r.image.params["fit"].get("confidence", {})
    out.append(dict(defocus_A=r.defocus_A, se_A=r.defocus_se_A, on=bool(r.defocus_confident),
                    astig_A=r.astig_A, rotation_deg=r.rotation_residual_deg, reason=conf.get("reason", ""),
                    interval=list(getattr(r, "defocus_interval_A", None) or []), s=time.perf_counter() - t))
json.dump(out, open(sys.argv[2], "w"))
"""


def _vacuum_phase(scan: int, det: int, bf: float, hole: int, seed: int) -> np.ndarray:
    """Random atoms with vacuum where the central ``hole`` x ``hole`` scan positions are (0.5 A step)."""
    import math

    from napari_4dstem.analysis.phase.forward import probe_positions_px, random_atoms_phase
    from napari_4dstem.analysis.phase.probe import ProbeModel

    pixel_A = 1.0 / (det * ProbeModel(300.0, 20.0).k_aperture_inv_A / bf)
    pad = det // 2 + 4
    pos = probe_positions_px((scan, scan), step_A=(0.5, 0.5), pixel_A=pixel_A) + pad
    shape = tuple(math.ceil(v) + det // 2 + pad + 2 for v in pos.max(axis=0))
    ph = random_atoms_phase(shape, pixel_A=pixel_A, seed=seed)
    lo, hi = (scan - hole) / 2 * 0.5 / pixel_A + pad, (scan + hole) / 2 * 0.5 / pixel_A + pad
    a, b = math.ceil(lo), math.ceil(hi)
    ph[a:b, a:b] = 0.0
    return ph


def make_cases(seeds, wide: bool, folder: Path, rotation: float = 0.0, per_atom: float = 0.25,
               vacuum: bool = False) -> list[dict]:  # fmt: skip
    from napari_4dstem.analysis.phase.forward import simulate_phase_dataset

    cases = []
    grid = [(16, 48, d, dose) for d in (0.0, 50.0, 100.0, 200.0) for dose in (None, 1e4, 1e3)]
    if wide:
        grid += [(32, 64, d, None) for d in (500.0, 800.0, -800.0, 1200.0)]
    if vacuum:
        grid = [(128, 32, 300.0, 1e5)]
    for scan, det, d, dose in grid:
        for seed in seeds:
            extra = dict(phase=_vacuum_phase(scan, det, 8.0, 80, seed), bf_radius_px=8.0) if vacuum else {}
            s = simulate_phase_dataset(
                scan_shape=(scan, scan), detector_px=det, step_A=0.5, defocus_A=d, seed=seed, dose_e_per_A2=dose,
                rotation_deg=rotation, phase_per_atom_rad=per_atom, **extra,
            )  # fmt: skip
            cal = s.datacube.calibration
            calj = dict(
                scan_step=list(cal.scan_step), scan_units=cal.scan_units, k_pixel_size=cal.k_pixel_size,
                k_units=cal.k_units, beam_energy_kev=cal.beam_energy_kev,
                convergence_semiangle_mrad=cal.convergence_semiangle_mrad, origin_px=list(cal.origin_px),
                rotation_deg=cal.rotation_deg,
            )  # fmt: skip
            name = f"case{len(cases)}.npz"
            np.savez(folder / name, data=np.asarray(s.datacube.data), cal=json.dumps(calj))
            cases.append(dict(file=name, scan=scan, defocus=d, dose=dose, seed=seed))
    (folder / "cases.json").write_text(json.dumps(cases))
    return cases


def _inside(r: dict, planted: float) -> bool:
    """The planted defocus inside the fit's stated 95 % interval (else ``defocus -+ 3.18 SE``)."""
    lo, hi = r.get("interval") or (r["defocus_A"] - 3.182 * r["se_A"], r["defocus_A"] + 3.182 * r["se_A"])
    return lo <= planted <= hi


def fit(src: str, folder: Path, tag: str) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=src)
    (folder / "fit.py").write_text(FIT)
    r = subprocess.run([sys.executable, str(folder / "fit.py"), str(folder), str(folder / f"{tag}.json")], env=env,
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads((folder / f"{tag}.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="11,12,13")
    ap.add_argument("--rev", default="main", help="the revision to compare with (git archive of its src)")
    ap.add_argument("--wide", action="store_true", help="add the probe-wider-than-the-field cases")
    ap.add_argument("--rotation", type=float, default=0.0, help="planted scan rotation (the calibration says 0)")
    ap.add_argument("--phase-per-atom", type=float, default=0.25, help="the sample's peak phase per atom, rad")
    ap.add_argument("--vacuum", action="store_true", help="only the vacuum-centre cases")
    args = ap.parse_args()
    seeds = [int(v) for v in args.seeds.split(",")]
    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = make_cases(seeds, args.wide, folder, args.rotation, args.phase_per_atom, args.vacuum)
        old = folder / "old"
        old.mkdir()
        arch = subprocess.run(["git", "-C", str(here), "archive", args.rev, "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=arch.stdout, check=True)
        t = time.perf_counter()
        before = fit(str(old / "src"), folder, "before")
        t_before = time.perf_counter() - t
        t = time.perf_counter()
        after = fit(str(here / "src"), folder, "after")
        t_after = time.perf_counter() - t
    print(
        f"parallax defocus, {args.rev} (before) vs this tree (after); seeds {seeds}; planted rotation "
        f"{args.rotation:g} deg (calibration 0); {args.phase_per_atom:g} rad per atom; load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'scan':>4s} {'planted':>7s} {'dose':>8s} {'seed':>4s} | {'before':>22s} | {'after':>22s}")

    def cell(r):
        return f"{r['defocus_A']:7.1f} +- {r['se_A']:5.1f} {'on ' if r['on'] else 'off'} {r['rotation_deg']:5.1f}"

    for c, b, a in zip(cases, before, after, strict=True):
        dose = "free" if c["dose"] is None else f"{c['dose']:.0e}"
        iv = a.get("interval") or [float("nan")] * 2
        print(f"{c['scan']:4d} {c['defocus']:7.0f} {dose:>8s} {c['seed']:4d} | {cell(b)} | {cell(a)} "
              f"[{iv[0]:.1f}, {iv[1]:.1f}]  {a['reason']}")  # fmt: skip
    print("\ncounts (before -> after): within 1 nm of the planted defocus (all; gated on); in focus gated off")
    if args.vacuum:
        for tag, res in (("before", before), ("after", after)):
            near = sum(abs(r["defocus_A"] - c["defocus"]) <= 10 for c, r in zip(cases, res, strict=True))
            print(f"  vacuum centre, {tag}: within 1 nm {near}, gated on {sum(r['on'] for r in res)} of {len(cases)}")
    for dose in (None, 1e4, 1e3):
        sel = [i for i, c in enumerate(cases) if c["dose"] == dose and c["scan"] == 16]
        if not sel:
            continue
        defo = [i for i in sel if cases[i]["defocus"] != 0]
        focus = [i for i in sel if cases[i]["defocus"] == 0]

        def counts(res, defo=defo, focus=focus):
            near = [i for i in defo if abs(res[i]["defocus_A"] - cases[i]["defocus"]) <= 10.0]
            on = [i for i in defo if res[i]["on"]]
            off = [i for i in focus if not res[i]["on"]]
            return len(near), len([i for i in near if res[i]["on"]]), len(on), len(off)

        nb, ob, gb, fb = counts(before)
        na, oa, ga, fa = counts(after)
        label = "noise-free" if dose is None else f"{dose:.0e}"
        print(
            f"  {label:>10s}: within 1 nm {nb} -> {na} of {len(defo)}; gated on {gb} -> {ga}, of them within 1 nm "
            f"{ob} -> {oa}; in focus off {fb} -> {fa} of {len(focus)}"
        )
        rb, ra = (sum(abs(res[i]["rotation_deg"] - args.rotation) <= 3 for i in defo) for res in (before, after))
        wb, wa = (sum(res[i]["on"] and abs(res[i]["defocus_A"] - cases[i]["defocus"]) > 10 for i in defo)
                  for res in (before, after))  # fmt: skip
        print(f"  {'':>10s}  rotation within 3 deg {rb} -> {ra} of {len(defo)}; gated on but > 1 nm off {wb} -> {wa}")
        ib, ia = (
            sum(res[i]["on"] and not _inside(res[i], cases[i]["defocus"]) for i in defo) for res in (before, after)
        )
        print(f"  {'':>10s}  gated on, planted outside the stated 95 % interval {ib} -> {ia}")
    if args.wide:
        wide = [i for i, c in enumerate(cases) if c["scan"] == 32]
        wrong_b = sum(before[i]["on"] and abs(before[i]["defocus_A"] - cases[i]["defocus"]) > 10 for i in wide)
        wrong_a = sum(after[i]["on"] and abs(after[i]["defocus_A"] - cases[i]["defocus"]) > 10 for i in wide)
        print(f"  16 A field, 500 / +-800 / 1200 A: gated on, > 1 nm off {wrong_b} -> {wrong_a} of {len(wide)}")
        ib, ia = (
            sum(res[i]["on"] and not _inside(res[i], cases[i]["defocus"]) for i in wide) for res in (before, after)
        )
        print(f"  16 A field: gated on, planted outside the stated 95 % interval {ib} -> {ia} of {len(wide)}")
    n = len(cases)
    print(f"time per fit (the whole parallax): before {t_before / n:.2f} s, after {t_after / n:.2f} s (incl. import)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
