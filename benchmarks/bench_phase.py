"""Phase retrieval: accuracy against the planted object and speed, next to py4DSTEM 0.14.

Data: our thin-object forward model (``analysis.phase.forward``): an amorphous weak phase object
(Gaussian atoms, 0.1 rad each), 300 kV, 20 mrad, scan step 0.4 A, 5 nm underfocus, 64 x 64
detector (bright-field disk radius 12 px), noise-free unless ``--dose``. Both packages get the same
patterns and the same calibration (energy, convergence, defocus, pixel sizes, rotation 0).

Reported per method: phase correlation with the truth after removing offset and linear ramp
(ptychography: after registering the object on the truth by cross-correlation), phase RMS
error (rad), wall time; ratios are py4DSTEM time / our time measured in the same run (median
of ``--repeats``). py4DSTEM runs in its side venv (``NAPARI_4DSTEM_PY4DSTEM_PYTHON``), never
imported here.

    PYTHONPATH=src python benchmarks/bench_phase.py [--scan 32] [--iterations 10] [--dose 1e5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

P4_SCRIPT = textwrap.dedent(
    r"""
    import json, sys, time, warnings
    import numpy as np
    warnings.filterwarnings("ignore")
    import matplotlib
    matplotlib.use("Agg")
    import py4DSTEM
    from py4DSTEM.process.phase import SSB, WDD, Parallax, SingleslicePtychography

    folder = sys.argv[1]
    m = json.load(open(folder + "/meta.json"))
    d = np.load(folder + "/data.npy")
    def cube():
        dc = py4DSTEM.DataCube(d.copy())
        dc.calibration.set_R_pixel_size(m["step"]); dc.calibration.set_R_pixel_units("A")
        dc.calibration.set_Q_pixel_size(m["dk"]); dc.calibration.set_Q_pixel_units("A^-1")
        return dc
    out = {"ssb_s": [], "ptycho_rec_s": [], "ptycho_pre_s": [], "ptycho_first_s": []}
    for _ in range(m["repeats"]):
        t = time.perf_counter()
        s = SSB(energy=m["E"] * 1e3, datacube=cube(), semiangle_cutoff=m["alpha"],
                defocus=m["df"], verbose=False, device="cpu")
        s = s.preprocess(plot_center_of_mass=False, plot_rotation=False,
                         plot_overlap_trotters=False, force_com_rotation=0,
                         force_com_transpose=False)
        s = s.reconstruct(progress_bar=False)
        out["ssb_s"].append(time.perf_counter() - t)
    np.save(folder + "/p4_ssb.npy", np.angle(np.asarray(s.object)))
    try:
        out["wdd_s"] = []
        for _ in range(m["repeats"]):
            t = time.perf_counter()
            w = WDD(energy=m["E"] * 1e3, datacube=cube(), semiangle_cutoff=m["alpha"],
                    defocus=m["df"], verbose=False, device="cpu")
            w = w.preprocess(plot_center_of_mass=False, plot_rotation=False,
                             plot_overlap_trotters=False, force_com_rotation=0,
                             force_com_transpose=False)
            w = w.reconstruct(relative_wiener_epsilon=m["wdd_eps"], progress_bar=False)
            out["wdd_s"].append(time.perf_counter() - t)
        np.save(folder + "/p4_wdd.npy", np.angle(np.asarray(w.object)))
    except Exception as e:  # report, do not hide
        out["wdd_error"] = f"{type(e).__name__}: {e}"
    for _ in range(m["repeats_ptycho"]):
        t = time.perf_counter()
        p = SingleslicePtychography(energy=m["E"] * 1e3, datacube=cube(),
                                    semiangle_cutoff=m["alpha"], defocus=m["df"],
                                    verbose=False, device="cpu")
        p = p.preprocess(plot_center_of_mass=False, plot_rotation=False,
                         plot_probe_overlaps=False, force_com_rotation=0,
                         force_com_transpose=False)
        t1 = time.perf_counter()
        p = p.reconstruct(num_iter=1, progress_bar=False)
        t2 = time.perf_counter()
        p = p.reconstruct(num_iter=m["iterations"] - 1, progress_bar=False, reset=False)
        # per iteration: the iterations after the first (the first call sets up)
        out["ptycho_rec_s"].append((time.perf_counter() - t2) / (m["iterations"] - 1))
        out["ptycho_first_s"].append(t2 - t1)
        out["ptycho_pre_s"].append(t1 - t)
    np.save(folder + "/p4_ptycho.npy", np.angle(np.asarray(p.object_cropped)))
    if m["slices"] > 1:  # py4DSTEM's multislice on the same slices (defaults otherwise)
        try:
            out["ms_rec_s"] = []
            t = time.perf_counter()
            q = py4DSTEM.process.phase.MultislicePtychography(
                energy=m["E"] * 1e3, num_slices=m["slices"], slice_thicknesses=m["dz"], datacube=cube(),
                semiangle_cutoff=m["alpha"], polar_parameters={"C10": -m["df"]}, verbose=False, device="cpu")
            q = q.preprocess(plot_center_of_mass=False, plot_rotation=False, plot_probe_overlaps=False,
                             force_com_rotation=0, force_com_transpose=False)
            q = q.reconstruct(num_iter=1, progress_bar=False)
            t2 = time.perf_counter()
            q = q.reconstruct(num_iter=m["iterations"] - 1, progress_bar=False, reset=False)
            out["ms_rec_s"].append((time.perf_counter() - t2) / (m["iterations"] - 1))
            obj = np.asarray(q.object_cropped)
            # each slice about its mean phase, then summed (a slice's phase may wrap, the sum not)
            ref = np.angle(obj.reshape(len(obj), -1).mean(axis=1))
            np.save(folder + "/p4_ms.npy", np.angle(obj * np.exp(-1j * ref)[:, None, None]).sum(axis=0))
        except Exception as e:  # report, do not hide
            out["ms_error"] = f"{type(e).__name__}: {e}"
    try:
        t = time.perf_counter()
        px = Parallax(energy=m["E"] * 1e3, datacube=cube(), verbose=False, device="cpu")
        px = px.preprocess(plot_average_bf=False, force_rotation_angle_deg=0)
        px = px.reconstruct(progress_bar=False, plot_aligned_bf=False, plot_convergence=False)
        px.aberration_fit(plot_CTF_comparison=False, plot_BF_shifts_comparison=False)
        out["parallax_s"] = time.perf_counter() - t
        out["parallax_C1_A"] = float(np.asarray(px.aberrations_C1))
        polar = getattr(px, "aberrations_dict_polar", None) or {}
        if "C10" in polar:
            out["parallax_C10_A"] = float(np.asarray(polar["C10"]))
    except Exception as e:  # report, do not hide
        out["parallax_error"] = f"{type(e).__name__}: {e}"
    json.dump(out, open(folder + "/p4.json", "w"))
    """
)


def crystal_dataset(
    *, thickness_A: float, scan: int, step: float, defocus: float, detector: int, dose, seed: int
) -> SimpleNamespace:
    """SrTiO3 [001] by our multislice engine (300 kV, 20 mrad): the patterns and the truth.

    The engine's box is made a whole number of unit cells (the bright-field disk radius is set so,
    about 12 px), so the crystal is periodic in it; the scan is centred on the box. Truth: the
    projected phase of the whole thickness (``MultisliceEngine.slice_phases(slices=1)``), on the
    object grid of the reconstructions (pixel ``1 / (detector dk)``), periodic over the box.
    """
    from scipy.ndimage import map_coordinates

    from napari_4dstem.analysis.crystal.structure import Crystal
    from napari_4dstem.analysis.phase.probe import ProbeModel
    from napari_4dstem.data.calibration import Calibration
    from napari_4dstem.data.datacube import DataCube
    from napari_4dstem.simulation.engines import SimulationRequest
    from napari_4dstem.simulation.multislice import MultisliceEngine

    a = 3.905
    sto = Crystal.from_parameters(
        a, a, a,
        atoms=[("Sr", (0, 0, 0), 1, 0.5), ("Ti", (0.5, 0.5, 0.5), 1, 0.4), ("O", (0.5, 0.5, 0), 1, 0.6),
               ("O", (0.5, 0, 0.5), 1, 0.6), ("O", (0, 0.5, 0.5), 1, 0.6)],
        name="SrTiO3",
    )  # fmt: skip
    probe = ProbeModel(300.0, 20.0, defocus_A=defocus)
    m = 3  # box = m / dk (odd: binned pixels stay centred): holds the probe and its defocus spread
    n_cells = round(m * 12.0 / (probe.k_aperture_inv_A * a))  # bright-field radius about 12 px
    dk = m / (n_cells * a)
    c = (scan - 1) / 2
    positions = [((iy - c) * step, (ix - c) * step) for iy in range(scan) for ix in range(scan)]
    req = SimulationRequest(
        sto, thicknesses_A=(thickness_A,), energy_kev=300.0, convergence_mrad=20.0, defocus_A=defocus,
        shape=(detector, detector), pixel_size_inv_A=dk, probe_positions_A=tuple(positions), box_multiple=m,
        slice_thickness_A=a / 2,
    )  # fmt: skip
    eng = MultisliceEngine(device="cpu", max_batch=32)
    t = time.perf_counter()
    res = eng.simulate(req)
    t_sim = time.perf_counter() - t
    patterns = np.asarray(res.patterns[0], np.float64).reshape(scan, scan, detector, detector)
    rng = np.random.default_rng(seed)
    if dose is not None:
        patterns = rng.poisson(patterns * dose * step * step)
    phases, box_pixel = eng.slice_phases(req, slices=1)
    L = box_pixel * phases.shape[-1]
    pixel_A = 1.0 / (detector * dk)
    n_obj = round(L / pixel_A)
    yy, xx = np.mgrid[0:n_obj, 0:n_obj] * (pixel_A / box_pixel)
    truth = map_coordinates(phases[0], [yy, xx], order=3, mode="grid-wrap")
    # probe positions in object pixels (from the box corner)
    pos = (np.asarray(positions) + L / 2) / pixel_A
    at_scan = map_coordinates(truth, pos.T, order=3, mode="grid-wrap").reshape(scan, scan)
    cal = Calibration(
        scan_step=(step, step), scan_units="A", k_pixel_size=dk, k_units="1/A", beam_energy_kev=300.0,
        convergence_semiangle_mrad=20.0, origin_px=(detector // 2, detector // 2),
    )  # fmt: skip
    print(
        f"SrTiO3 [001], {thickness_A:.1f} A ({thickness_A / a:.1f} cells), box {n_cells} cells = {L:.2f} A, "
        f"dk {dk:.4f} 1/A (bright-field radius {probe.k_aperture_inv_A / dk:.1f} px), projected phase "
        f"{truth.min():.2f}..{truth.max():.2f} rad; multislice {t_sim:.0f} s"
    )
    return SimpleNamespace(
        datacube=DataCube(patterns.astype(np.float32), cal, name="SrTiO3"),
        object=np.exp(1j * truth),
        truth_phase=truth,
        pixel_A=pixel_A,
        probe=probe,
        phase_at_scan=at_scan,
    )


def register_and_correlate(recon: np.ndarray, truth: np.ndarray, margin: float = 0.1):
    """Place ``recon`` on ``truth`` (same pixel size) by cross-correlation, then correlation and
    RMS after offset/ramp removal over the central part (``margin`` of each edge dropped)."""
    from napari_4dstem.analysis.phase._common import phase_correlation_with_truth

    best = None
    for cand, label in ((recon, "as is"), (recon.T, "transposed")):
        ch, cw = cand.shape
        if ch > truth.shape[0] or cw > truth.shape[1]:
            continue
        a = np.zeros(truth.shape)
        a[:ch, :cw] = cand - cand.mean()
        cc = np.fft.ifft2(np.fft.fft2(truth - truth.mean()) * np.conj(np.fft.fft2(a))).real
        oy, ox = np.unravel_index(np.argmax(cc), cc.shape)
        t = np.roll(truth, (-oy, -ox), axis=(0, 1))[:ch, :cw]
        my, mx = int(ch * margin), int(cw * margin)
        c_, t_ = cand[my : ch - my, mx : cw - mx], t[my : ch - my, mx : cw - mx]
        r, rms = phase_correlation_with_truth(c_, t_)
        if best is None or r > best[0]:
            best = (r, rms, label, c_, t_)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scan", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=10, help="at least 2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dose", type=float, default=None, help="e/A^2 (Poisson); default noise-free")
    # the defaults are the object the methods were checked on; other values draw a held-out one
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--phase-per-atom", type=float, default=0.1, help="rad")
    ap.add_argument("--step", type=float, default=0.4, help="scan step, A")
    ap.add_argument("--defocus", type=float, default=50.0, help="A (> 0 underfocus)")
    ap.add_argument("--detector", type=int, default=64, help="detector side, px")
    ap.add_argument(
        "--object",
        default="amorphous",
        help="amorphous (thin-object forward model), or 'srtio3:THICKNESS_A' (our multislice engine, "
        "e.g. srtio3:3.905 for one cell, srtio3:100 for 10 nm)",
    )
    ap.add_argument("--slices", type=int, default=1, help="object slices of our ptychography (multislice when > 1)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--step-decay", type=float, default=0.0, help="our PtychoParams.step_decay")
    ap.add_argument("--loss", default="amplitude", help="our PtychoParams.loss: amplitude or poisson")
    ap.add_argument("--batch-size", type=int, default=64, help="our PtychoParams.batch_size (positions per step)")
    ap.add_argument("--full-batch", action="store_true", help="our PtychoParams.full_batch (one step per iteration)")
    ap.add_argument("--pure-phase", action="store_true", help="our PtychoParams.pure_phase (|O| = 1)")
    ap.add_argument("--coarse-to-fine", action="store_true", help="our PtychoParams.coarse_to_fine")
    ap.add_argument(
        "--wdd-eps", type=float, default=1e-3, help="WDD Wiener term, ours and py4DSTEM's relative_wiener_epsilon"
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: see docs/phase.md on shared machines)"
    )
    args = ap.parse_args()

    from napari_4dstem.analysis.phase._common import phase_correlation_with_truth
    from napari_4dstem.analysis.phase.forward import simulate_phase_dataset
    from napari_4dstem.analysis.phase.parallax import parallax
    from napari_4dstem.analysis.phase.ptycho import PtychoParams, ptychography
    from napari_4dstem.analysis.phase.ssb import ssb
    from napari_4dstem.analysis.phase.wdd import wdd

    step, df = args.step, args.defocus
    if args.object == "amorphous":
        s = simulate_phase_dataset(
            scan_shape=(args.scan, args.scan),
            detector_px=args.detector,
            step_A=step,
            defocus_A=df,
            phase_per_atom_rad=args.phase_per_atom,
            seed=args.seed,
            dose_e_per_A2=args.dose,
        )
        truth_obj = np.angle(s.object)
    elif args.object.startswith("srtio3:"):
        s = crystal_dataset(
            thickness_A=float(args.object.split(":")[1]), scan=args.scan, step=step, defocus=df,
            detector=args.detector, dose=args.dose, seed=args.seed,
        )  # fmt: skip
        truth_obj = s.truth_phase  # not wrapped
    else:
        ap.error(f"--object: amorphous or srtio3:THICKNESS_A, not {args.object!r}")
    cube = s.datacube
    rows = []

    # -- ours ----------------------------------------------------------------------------------
    t_ssb = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ph = ssb(cube, probe=s.probe)
        t_ssb.append(time.perf_counter() - t)
    ours_ssb = phase_correlation_with_truth(ph.data, s.phase_at_scan)
    t_wdd = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        pw = wdd(cube, probe=s.probe, regularization=args.wdd_eps)
        t_wdd.append(time.perf_counter() - t)
    ours_wdd = phase_correlation_with_truth(pw.data, s.phase_at_scan)
    t_pty, res = [], None
    for _ in range(max(1, args.repeats - 1)):
        stamps: list[float] = []

        def stamp(p, stamps=stamps):
            if getattr(p, "object_phase", None) is not None:
                stamps.append(time.perf_counter())

        res = ptychography(
            cube,
            probe=s.probe,
            progress=stamp,
            params=PtychoParams(
                iterations=args.iterations, device=args.device, threads=args.threads, slices=args.slices,
                slice_thickness_A=(float(args.object.split(":")[1]) / args.slices if ":" in args.object else 0.0),
                step_decay=args.step_decay, loss=args.loss, batch_size=args.batch_size,
                full_batch=args.full_batch, pure_phase=args.pure_phase, coarse_to_fine=args.coarse_to_fine,
            ),
        )  # fmt: skip
        # per iteration: the iterations after the first (as for py4DSTEM)
        t_pty.append((stamps[-1] - stamps[0]) / (len(stamps) - 1))
    # the sum of the slices' phases, each about its mean over the scanned region (a slice's phase
    # is small enough not to wrap there; the phase of their product wraps)
    y0, y1, x0, x1 = res.region
    scanned = res.object[:, y0:y1, x0:x1]
    ref = np.angle(scanned.reshape(len(scanned), -1).mean(axis=1))
    ours_pty = register_and_correlate(np.angle(scanned * np.exp(-1j * ref)[:, None, None]).sum(axis=0), truth_obj)
    t = time.perf_counter()
    par = parallax(cube)
    t_par = time.perf_counter() - t

    # -- py4DSTEM --------------------------------------------------------------------------------
    p4 = None
    exe = os.environ.get("NAPARI_4DSTEM_PY4DSTEM_PYTHON")
    if exe and Path(exe).exists():
        with tempfile.TemporaryDirectory() as tmp:
            np.save(Path(tmp) / "data.npy", np.asarray(cube.data))
            meta = dict(
                step=step,
                dk=cube.calibration.k_pixel_size,
                E=300.0,
                alpha=20.0,
                df=df,
                iterations=args.iterations,
                repeats=args.repeats,
                repeats_ptycho=max(1, args.repeats - 1),
                wdd_eps=args.wdd_eps,
                slices=args.slices,
                dz=(float(args.object.split(":")[1]) / args.slices if ":" in args.object else 0.0),
            )
            (Path(tmp) / "meta.json").write_text(json.dumps(meta))
            (Path(tmp) / "p4.py").write_text(P4_SCRIPT)
            r = subprocess.run([exe, str(Path(tmp) / "p4.py"), tmp], capture_output=True, text=True)
            if r.returncode != 0:
                print("py4DSTEM failed:", r.stderr[-2000:], file=sys.stderr)
            else:
                p4 = json.loads((Path(tmp) / "p4.json").read_text())
                p4_ssb = np.load(Path(tmp) / "p4_ssb.npy")
                p4_wdd = np.load(Path(tmp) / "p4_wdd.npy") if (Path(tmp) / "p4_wdd.npy").exists() else None
                if "wdd_error" in p4:
                    print("py4DSTEM WDD failed:", p4["wdd_error"], file=sys.stderr)
                p4_pty = np.load(Path(tmp) / "p4_ptycho.npy")
                p4_ms = np.load(Path(tmp) / "p4_ms.npy") if (Path(tmp) / "p4_ms.npy").exists() else None
                if "ms_error" in p4:
                    print("py4DSTEM multislice failed:", p4["ms_error"], file=sys.stderr)
    else:
        print("(py4DSTEM side venv not set: NAPARI_4DSTEM_PY4DSTEM_PYTHON)")

    from napari_4dstem.analysis.phase._common import (
        fourier_ring_correlation,
        frc_resolution_A,
        remove_offset_and_ramp,
    )

    def frc_res(a, b, pixel_A):
        # offset and ramp are undetermined by the methods: removed from both first
        a, b = remove_offset_and_ramp(a), remove_offset_and_ramp(b)
        return frc_resolution_A(*fourier_ring_correlation(a, b, pixel_A=pixel_A))

    med = statistics.median
    print(
        f"\nscan {args.scan}x{args.scan}, detector {args.detector}x{args.detector}, seed {args.seed}, "
        f"{args.phase_per_atom if args.object == 'amorphous' else args.object} "
        f"{'rad/atom' if args.object == 'amorphous' else f'(our ptycho: {args.slices} slices)'}, "
        f"step {step} A, defocus {df} A, "
        f"dose {args.dose or 'noise-free'}; CPU ({os.cpu_count()} cores, shared machine, load "
        f"{os.getloadavg()[0]:.1f}), torch threads {args.threads}; our ptycho step_decay {args.step_decay}, "
        f"loss {args.loss}, batch {args.batch_size}, full batch {args.full_batch}, pure phase {args.pure_phase}, "
        f"coarse to fine {args.coarse_to_fine}"
    )
    print(f"{'method':34s} {'corr':>6s} {'RMS rad':>8s} {'time s':>8s} {'p4/ours':>8s}")
    rows.append(("SSB (ours)", *ours_ssb, med(t_ssb), None))
    if p4:
        best = (
            max(
                (phase_correlation_with_truth(x, s.phase_at_scan) for x in (p4_ssb, p4_ssb.T)),
                key=lambda v: v[0],
            )
            if p4_ssb.shape == s.phase_at_scan.shape
            else (float("nan"), float("nan"))
        )
        rows.append(("SSB (py4DSTEM)", *best, med(p4["ssb_s"]), med(p4["ssb_s"]) / med(t_ssb)))
    rows.append((f"WDD eps {args.wdd_eps:g} (ours)", *ours_wdd, med(t_wdd), None))
    if p4 and p4_wdd is not None:
        best = (
            max(
                (phase_correlation_with_truth(x, s.phase_at_scan) for x in (p4_wdd, p4_wdd.T)),
                key=lambda v: v[0],
            )
            if p4_wdd.shape == s.phase_at_scan.shape
            else (float("nan"), float("nan"))
        )
        rows.append((f"WDD eps {args.wdd_eps:g} (py4DSTEM)", *best, med(p4["wdd_s"]), med(p4["wdd_s"]) / med(t_wdd)))
    it = args.iterations
    rows.append((f"ptycho {it} it (ours, s per it)", ours_pty[0], ours_pty[1], med(t_pty), None))
    if p4:
        b = register_and_correlate(p4_pty, truth_obj)
        per = med(p4["ptycho_rec_s"])
        rows.append((f"ptycho {it} it (py4DSTEM, s per it)", b[0], b[1], per, per / med(t_pty)))
        if p4_ms is not None:
            b = register_and_correlate(p4_ms, truth_obj)
            per = med(p4["ms_rec_s"])
            rows.append((f"{args.slices}-slice {it} it (py4DSTEM, s/it)", b[0], b[1], per, per / med(t_pty)))
    for name, c, e, tt, ratio in rows:
        rt = "" if ratio is None else f"{ratio:8.2f}"
        print(f"{name:34s} {c:6.3f} {e:8.4f} {tt:8.3f} {rt}")
    # resolution: FRC = 0.5 against the truth (SSB on the scan grid, ptycho on its own grid)
    print(
        f"FRC 0.5 resolution: SSB (ours) {frc_res(ph.data, s.phase_at_scan, step):.2f} A, "
        f"ptycho (ours) {frc_res(ours_pty[3], ours_pty[4], s.pixel_A):.2f} A",
        end="",
    )
    if p4:
        if p4_ssb.shape == s.phase_at_scan.shape:
            print(f", SSB (py4DSTEM) {frc_res(p4_ssb, s.phase_at_scan, step):.2f} A", end="")
        b = register_and_correlate(p4_pty, truth_obj)
        print(f", ptycho (py4DSTEM) {frc_res(b[3], b[4], s.pixel_A):.2f} A", end="")
    print(
        f"  (scan step {step} A, object pixel {s.pixel_A:.3f} A, 2 alpha / lambda = "
        f"{1 / (2 * s.probe.k_aperture_inv_A):.2f} A)"
    )
    gate = "passes" if par.defocus_confident else "fails"
    print(
        f"parallax (ours): defocus {par.defocus_A:.1f} +- {par.defocus_se_A:.1f} A (planted {df}; {gate} the gate "
        f"that auto uses), {t_par:.2f} s"
    )
    if p4:
        if "parallax_C1_A" in p4:
            c10 = p4.get("parallax_C10_A")
            more = "" if c10 is None else f", fitted C10 {c10:.1f} A"
            print(
                f"parallax (py4DSTEM): C1 {p4['parallax_C1_A']:.1f} A{more} (C1 = -defocus), {p4['parallax_s']:.2f} s"
            )
        else:
            print(f"parallax (py4DSTEM): {p4.get('parallax_error')}")
        print(f"py4DSTEM ptycho preprocess {med(p4['ptycho_pre_s']):.2f} s (not in the per-iteration time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
