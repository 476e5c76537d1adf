"""The ``phase`` subcommand (registered in :mod:`napari_4dstem.cli`): parallax, SSB, WDD and
iterative ptychography of a calibrated 4D-STEM file, written to an EMD (.h5) file."""

from __future__ import annotations

import argparse
from pathlib import Path

METHODS = ("parallax", "ssb", "wdd", "ptycho", "multislice-ptycho")


def add_phase(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "phase",
        help="phase retrieval: parallax (tilt-corrected BF), SSB, WDD, iterative ptychography",
        description="Phase retrieval from a calibrated dataset (scan step, detector pixel size, "
        "beam energy, convergence angle; flags below fill in or override the calibration). "
        "Writes an EMD file with the phase (rad) and, for ptychography, the probe.",
    )
    p.add_argument("file", type=Path)
    p.add_argument("out", type=Path, help="output .h5 (EMD)")
    p.add_argument("--method", choices=METHODS, default="ssb")
    g = p.add_argument_group("calibration (override the file's)")
    g.add_argument("--calibration", type=Path, metavar="JSON", help="calibration written by `napari-4dstem calibrate`")
    g.add_argument("--energy-kev", type=float)
    g.add_argument("--convergence-mrad", type=float)
    g.add_argument("--scan-step-A", type=float, help="scan step in Angstrom (both axes)")
    g.add_argument("--k-pixel-inv-A", type=float, help="detector pixel size in 1/Angstrom")
    g.add_argument("--rotation", type=float, metavar="DEG", help="scan/detector rotation")
    g.add_argument("--flip", action="store_true", default=None, help="detector k_x is mirrored")
    a = p.add_argument_group("probe aberrations (SSB, WDD, ptychography starting probe)")
    a.add_argument("--defocus-A", type=float, default=0.0, help="defocus, A (> 0 underfocus)")
    a.add_argument("--astig-A", type=float, default=0.0)
    a.add_argument("--astig-angle-deg", type=float, default=0.0)
    a.add_argument("--cs-mm", type=float, default=0.0)
    a.add_argument(
        "--fit-defocus",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure defocus and astigmatism by parallax first and use them; --no-fit-defocus: the typed "
        "--defocus-A / --astig-A. Default (auto): ptychography without a typed defocus or astigmatism "
        "fits them and uses the fit only when the defocus is distinguishable from 0 (in focus at low "
        "dose parallax measures noise: then the typed 0 is kept)",
    )
    m = p.add_argument_group("method settings")
    m.add_argument("--upsample", type=int, default=2, help="parallax: output grid factor")
    m.add_argument(
        "--regularization",
        type=float,
        default=None,
        help="SSB: a fixed Wiener term, relative to the largest side-band overlap (default: measured from the "
        "data's noise, adapts to the dose; 0.05 was the default before)",
    )
    m.add_argument(
        "--wdd-regularization",
        type=float,
        default=1e-3,
        help="WDD: Wiener term, relative to the probe's largest |chi|^2",
    )
    m.add_argument("--iterations", type=int, default=20)
    m.add_argument("--batch-size", type=int, default=64)
    m.add_argument("--modes", type=int, default=1, help="probe modes (mixed state)")
    m.add_argument("--position-correction", action="store_true")
    m.add_argument("--slices", type=int, default=4, help="multislice-ptycho: object slices")
    m.add_argument("--slice-thickness-A", type=float, default=10.0, help="multislice-ptycho")
    m.add_argument(
        "--loss",
        choices=("amplitude", "poisson"),
        default="amplitude",
        help="ptycho: noise model (poisson with --full-batch for counted, low-dose data)",
    )
    m.add_argument("--step-decay", type=float, default=0.0, help="ptycho: steps of iteration i divided by 1 + X i")
    m.add_argument("--full-batch", action="store_true", help="ptycho: one step per iteration from all positions")
    m.add_argument(
        "--pure-phase", action="store_true", help="ptycho: a pure phase object, |O| = 1 (thin specimens, low dose)"
    )
    m.add_argument(
        "--coarse-to-fine",
        action="store_true",
        help="ptycho: low-pass the object steps of the first half of the iterations at the aperture "
        "frequency (low dose)",
    )
    m.add_argument(
        "--parallax-version",
        type=int,
        choices=(1, 2, 3),
        default=None,
        help="parallax defocus refinement's algorithm (default: the newest, 3: each image's periodic component "
        "fitted, a 95%% defocus interval stated; 2: session 13's, the rotation scanned over a half turn; 1: "
        "session 12's; to reproduce an older run)",
    )
    m.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    m.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    m.add_argument("--checkpoint", type=Path, help="ptycho: checkpoint .npz (resumed if present)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument(
        "--scan-shape",
        nargs=2,
        type=int,
        metavar=("NY", "NX"),
        help="scan shape (scan_y scan_x) for files whose header lacks it",
    )
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
    from .engine.jobs import run_job
    from .errors import FileFormatError
    from .pipelines import InputRef, PhaseParams, iter_phase

    if args.out.suffix.lower() not in (".h5", ".hdf5", ".emd"):
        raise FileFormatError(args.out, "phase writes an EMD file (.h5)")
    params = PhaseParams(
        method=args.method,
        defocus_A=args.defocus_A,
        astig_A=args.astig_A,
        astig_angle_deg=args.astig_angle_deg,
        cs_mm=args.cs_mm,
        fit_defocus=args.fit_defocus,
        upsample=args.upsample,
        regularization=args.regularization,
        wdd_regularization=args.wdd_regularization,
        iterations=args.iterations,
        batch_size=args.batch_size,
        modes=args.modes,
        position_correction=args.position_correction,
        slices=args.slices,
        slice_thickness_A=args.slice_thickness_A,
        device=args.device,
        threads=args.threads,
        loss=args.loss,
        step_decay=args.step_decay,
        full_batch=args.full_batch,
        pure_phase=args.pure_phase,
        coarse_to_fine=args.coarse_to_fine,
        **({} if args.parallax_version is None else {"parallax_version": args.parallax_version}),
    )
    dc = _calibrated(args)
    try:
        # the calibration as given here (file, --calibration and the overrides) goes into the recipe
        source = InputRef.of(args.file, scan_shape=args.scan_shape)
        res = run_job(
            iter_phase(dc, phase=params, calibration=dc.calibration, source=source, checkpoint=args.checkpoint),
            ProgressBar(enabled=not args.quiet),
        )
    finally:
        dc.close()
    par = res.parallax
    if par is not None:
        print(
            f"parallax: defocus {par.defocus_A:.1f} +- {par.defocus_se_A:.1f} A"
            + (
                ""
                if par.defocus_interval_A is None
                else " (95 % interval {:.1f} to {:.1f} A)".format(*par.defocus_interval_A)
            )
            + f", astigmatism {par.astig_A:.1f} A at "
            f"{par.astig_angle_deg:.1f} deg, unaccounted rotation "
            f"{par.rotation_residual_deg:.2f} deg, fit RMS {par.fit_rms_A:.3f} A"
        )
        used = res.maps[0].params.get("defocus_from", {}) if args.method != "parallax" else {}
        if used.get("from") == "typed":
            why = used.get("reason", "parallax defocus not trusted")
            print(f"{why}: kept the typed defocus {used['defocus_A']:g} A")
    if res.ptycho is not None:
        e = res.ptycho.errors
        print(f"{args.method}: error {e[0]:.3g} -> {e[-1]:.3g} over {len(e)} iterations")
    out = res.saved_objects()
    write_maps(args.out, out, args.overwrite)
    print(f"wrote {args.out}: {', '.join(m.name for m in out)}")
    return EXIT_OK
