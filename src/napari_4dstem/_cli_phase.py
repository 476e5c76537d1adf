"""The ``phase`` subcommand (registered in :mod:`napari_4dstem.cli`): parallax, SSB and
iterative ptychography of a calibrated 4D-STEM file, written to an EMD (.h5) file."""

from __future__ import annotations

import argparse
from pathlib import Path

METHODS = ("parallax", "ssb", "ptycho", "multislice-ptycho")


def add_phase(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "phase",
        help="phase retrieval: parallax (tilt-corrected BF), SSB, iterative ptychography",
        description="Phase retrieval from a calibrated dataset (scan step, detector pixel size, "
        "beam energy, convergence angle; flags below fill in or override the calibration). "
        "Writes an EMD file with the phase (rad) and, for ptychography, the probe.",
    )
    p.add_argument("file", type=Path)
    p.add_argument("out", type=Path, help="output .h5 (EMD)")
    p.add_argument("--method", choices=METHODS, default="ssb")
    g = p.add_argument_group("calibration (override the file's)")
    g.add_argument("--calibration", type=Path, metavar="JSON",
                   help="calibration written by `napari-4dstem calibrate`")
    g.add_argument("--energy-kev", type=float)
    g.add_argument("--convergence-mrad", type=float)
    g.add_argument("--scan-step-A", type=float, help="scan step in Angstrom (both axes)")
    g.add_argument("--k-pixel-inv-A", type=float, help="detector pixel size in 1/Angstrom")
    g.add_argument("--rotation", type=float, metavar="DEG", help="scan/detector rotation")
    g.add_argument("--flip", action="store_true", default=None, help="detector k_x is mirrored")
    a = p.add_argument_group("probe aberrations (SSB, ptychography starting probe)")
    a.add_argument("--defocus-A", type=float, default=0.0, help="defocus, A (> 0 underfocus)")
    a.add_argument("--astig-A", type=float, default=0.0)
    a.add_argument("--astig-angle-deg", type=float, default=0.0)
    a.add_argument("--cs-mm", type=float, default=0.0)
    a.add_argument("--fit-defocus", action="store_true",
                   help="measure defocus and astigmatism by parallax first and use them")
    m = p.add_argument_group("method settings")
    m.add_argument("--upsample", type=int, default=2, help="parallax: output grid factor")
    m.add_argument("--regularization", type=float, default=0.05, help="SSB: Wiener term")
    m.add_argument("--iterations", type=int, default=20)
    m.add_argument("--batch-size", type=int, default=64)
    m.add_argument("--modes", type=int, default=1, help="probe modes (mixed state)")
    m.add_argument("--position-correction", action="store_true")
    m.add_argument("--slices", type=int, default=4, help="multislice-ptycho: object slices")
    m.add_argument("--slice-thickness-A", type=float, default=10.0, help="multislice-ptycho")
    m.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    m.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    m.add_argument("--checkpoint", type=Path, help="ptycho: checkpoint .npz (resumed if present)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--scan-shape", nargs=2, type=int, metavar=("NY", "NX"),
                   help="scan shape (scan_y scan_x) for files whose header lacks it")
    return p


def _calibrated(args):
    from ._cli_common import open_calibrated

    dc = open_calibrated(args)
    cal = dc.calibration
    changes = {}
    if args.energy_kev is not None:
        changes["beam_energy_kev"] = args.energy_kev
    if args.convergence_mrad is not None:
        changes["convergence_semiangle_mrad"] = args.convergence_mrad
    if args.scan_step_A is not None:
        changes.update(scan_step=(args.scan_step_A, args.scan_step_A), scan_units="A")
    if args.k_pixel_inv_A is not None:
        changes.update(k_pixel_size=args.k_pixel_inv_A, k_units="1/A")
    if args.rotation is not None:
        changes["rotation_deg"] = args.rotation
    if args.flip is not None:
        changes["flip"] = bool(args.flip)
    if changes:
        dc.calibration = cal.replace(**changes)
    return dc


def run_phase(args) -> int:
    from ._cli_common import EXIT_OK, ProgressBar, write_maps
    from .analysis.phase.probe import ProbeModel
    from .engine.jobs import run_job
    from .errors import FileFormatError

    if args.out.suffix.lower() not in (".h5", ".hdf5", ".emd"):
        raise FileFormatError(args.out, "phase writes an EMD file (.h5)")
    bar = ProgressBar(enabled=not args.quiet)
    dc = _calibrated(args)
    try:
        probe = ProbeModel.from_calibration(
            dc.calibration, defocus_A=args.defocus_A, astig_A=args.astig_A,
            astig_angle_deg=args.astig_angle_deg, cs_mm=args.cs_mm)
        if args.method == "parallax" or args.fit_defocus:
            from .analysis.phase.parallax import iter_parallax

            par = run_job(iter_parallax(dc, probe=probe, upsample=args.upsample), bar)
            print(f"parallax: defocus {par.defocus_A:.1f} A, astigmatism {par.astig_A:.1f} A at "
                  f"{par.astig_angle_deg:.1f} deg, unaccounted rotation "
                  f"{par.rotation_residual_deg:.2f} deg, fit RMS {par.fit_rms_A:.3f} A")
            if args.method == "parallax":
                write_maps(args.out, [par.image], args.overwrite)
                print(f"wrote {args.out}: parallax_bf")
                return EXIT_OK
            probe = ProbeModel(probe.energy_kev, probe.convergence_mrad, defocus_A=par.defocus_A,
                               astig_A=par.astig_A, astig_angle_deg=par.astig_angle_deg,
                               cs_mm=args.cs_mm)
        if args.method == "ssb":
            from .analysis.phase.ssb import iter_ssb

            out = [run_job(iter_ssb(dc, probe=probe, regularization=args.regularization), bar)]
        else:
            from .analysis.phase.ptycho import PtychoParams, iter_ptychography

            multi = args.method == "multislice-ptycho"
            params = PtychoParams(
                iterations=args.iterations, batch_size=args.batch_size, probe_modes=args.modes,
                position_correction=args.position_correction,
                slices=args.slices if multi else 1,
                slice_thickness_A=args.slice_thickness_A if multi else 0.0, device=args.device,
                threads=args.threads)
            res = run_job(iter_ptychography(dc, params=params, probe=probe,
                                            checkpoint=args.checkpoint), bar)
            print(f"{args.method}: error {res.errors[0]:.3g} -> {res.errors[-1]:.3g} "
                  f"over {len(res.errors)} iterations")
            out = res.to_results()
    finally:
        dc.close()
    write_maps(args.out, out, args.overwrite)
    print(f"wrote {args.out}: {', '.join(m.name for m in out)}")
    return EXIT_OK
