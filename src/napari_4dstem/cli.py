"""The headless command line: ``napari-4dstem SUBCOMMAND ...``.

Every subcommand is a pair ``add_<name>(subparsers)`` / ``run_<name>(args) -> int`` registered
in ``SUBCOMMANDS``; it calls the same core functions as the napari widgets. Bad input ends with
a one-line message on stderr and exit code 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from . import _cli_validate as v
from ._cli_classify import add_classify, run_classify
from ._cli_common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    ProgressBar,
    analysis_args,
    close_bars,
    need_emd,
    open_calibrated,
    open_cube,
    run_on_cube,
    scan_shape_arg,
    write_maps,
)
from ._cli_nn import (
    add_finetune,
    add_infer,
    add_models,
    add_train,
    precision_arg,
    run_finetune,
    run_infer,
    run_models,
    run_train,
)
from ._cli_phase import add_phase, run_phase
from ._cli_repro import add_script, add_session, run_script, run_session
from ._cli_validate import OneLineParser, claim_outputs
from .errors import Napari4DSTEMError


# -- info ---------------------------------------------------------------------------------------
def add_info(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="shape, dtype, chunks and calibration of a 4D-STEM file")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    scan_shape_arg(p)
    return p


def run_info(args) -> int:
    from .io import detect_format, emd

    fmt = detect_format(args.file)
    info: dict[str, Any] = {"file": str(args.file), "format": fmt.name if fmt else None}
    nodes = emd.list_nodes(args.file) if fmt is not None and fmt.name == "emd" else []
    if not nodes or any(n.shape and len(n.shape) == 4 for n in nodes):
        dc = open_cube(args)
        try:
            info.update(
                name=dc.name,
                shape=list(dc.shape),
                axes=list(dc.axis_labels),
                dtype=str(dc.dtype),
                chunks=list(dc.chunks) if dc.chunks else None,
                nbytes=dc.nbytes,
                calibration=dc.calibration.to_dict(),
            )
        finally:
            dc.close()
    if nodes:
        info["nodes"] = [
            {"path": n.path, "class": n.python_class, "shape": list(n.shape) if n.shape else None} for n in nodes
        ]
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    print(f"{info['file']}  ({info['format']})")
    if "shape" in info:
        print(f"  shape    {tuple(info['shape'])}  (scan_y, scan_x, k_y, k_x)")
        print(f"  dtype    {info['dtype']}   {info['nbytes'] / 2**20:.1f} MiB")
        print(f"  chunks   {tuple(info['chunks']) if info['chunks'] else 'contiguous'}")
        for k, v in info["calibration"].items():
            if v is not None and v is not False:
                print(f"  {k:27s}{v}")
    if nodes:
        print("  nodes:")
        for n in info["nodes"]:
            shape = tuple(n["shape"]) if n["shape"] else ""
            print(f"    {n['path']:50s} {n['class']:18s} {shape}")
    return EXIT_OK


# -- convert ------------------------------------------------------------------------------------
def add_convert(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("convert", help="convert a 4D-STEM file to EMD (.h5), .npy or .zarr")
    p.add_argument("file", type=Path, help="input file")
    p.add_argument("out", type=Path, help="output file: .h5/.hdf5/.emd (py4DSTEM), .npy or .zarr")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument(
        "--compression",
        choices=["none", "gzip", "lzf"],
        default="none",
        help="compression of an EMD output (default none)",
    )
    p.add_argument("--bin-k", type=v.positive_int, default=1, help="bin the detector by this factor")
    p.add_argument("--bin-scan", type=v.positive_int, default=1, help="bin the scan by this factor")
    scan_shape_arg(p)
    return p


def run_convert(args) -> int:
    from .io import save_datacube

    dc = open_cube(args)
    try:
        out_dc = dc.bin(k=args.bin_k, scan=args.bin_scan)
        kw: dict[str, Any] = {}
        if args.out.suffix.lower() in (".h5", ".hdf5", ".emd"):
            kw = {
                "compression": None if args.compression == "none" else args.compression,
                "progress": ProgressBar(enabled=not args.quiet),
            }
        save_datacube(args.out, out_dc, overwrite=args.overwrite, **kw)
    finally:
        dc.close()
    print(f"wrote {args.out}  shape {out_dc.shape} {out_dc.dtype}")
    return EXIT_OK


# -- demo ---------------------------------------------------------------------------------------
def add_demo(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="run every analysis on a bundled sample; write results and PNGs")
    p.add_argument("--out", type=Path, default=Path("napari-4dstem-demo"), help="output folder")
    p.add_argument("--sample", default="strained_crystal", choices=["strained_crystal", "polycrystal_au"])
    p.add_argument("--overwrite", action="store_true", help="replace results of an earlier run")
    return p


def run_demo(args) -> int:
    from .demo import run_demo as _run

    ctx = _run(
        args.out,
        sample=args.sample,
        overwrite=args.overwrite,
        progress=ProgressBar(enabled=not args.quiet),
        log=None if args.quiet else (lambda m: print(m, file=sys.stderr)),
    )
    print(f"results: {args.out / 'results.h5'}")
    for f in ctx.figures:
        print(f"figure:  {f}")
    return EXIT_OK


# -- samples ------------------------------------------------------------------------------------
def add_samples(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("samples", help="write the simulated sample datasets (with ground truth)")
    p.add_argument("--out", type=Path, default=Path("sample_data"), help="output folder")
    p.add_argument("--overwrite", action="store_true")
    return p


def run_samples(args) -> int:
    from .io import emd
    from .simulation.samples import SAMPLES, make_sample

    args.out.mkdir(parents=True, exist_ok=True)
    for key in SAMPLES:
        path = args.out / f"{key}.h5"
        emd.write(path, *make_sample(key).objects(), compression="gzip", overwrite=args.overwrite)
        print(f"wrote {path}")
    return EXIT_OK


# -- warmup -------------------------------------------------------------------------------------
def add_warmup(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "warmup",
        help="compile the numba kernels once after installing (first use in napari is then quick)",
        description="Compile the numba kernels (virtual images, centre of mass, Bragg disks and strain, "
        "orientation matching) into numba's cache, so that no later process, napari's included, "
        "compiles them at first use (a minute or more on 2 cores). Later runs load them in seconds.",
    )
    p.add_argument(
        "--dtype",
        action="append",
        default=None,
        help="pattern dtype to compile for (repeat for several; default uint16 and float32)",
    )
    return p


def run_warmup(args) -> int:
    import numpy as np

    from .analysis.warm import iter_warm

    dtypes = args.dtype or ["uint16", "float32"]
    try:
        dtypes = [np.dtype(d).name for d in dtypes]
    except TypeError as e:
        raise Napari4DSTEMError(f"--dtype: {e}") from None
    total = 0.0
    for dtype, step, seconds in iter_warm(dtypes):
        total += seconds
        if not args.quiet:
            print(f"{dtype:>8}  {step:<14} {seconds:6.1f} s")
    total += _warm_napari_shapes(args.quiet)
    print(f"kernels ready ({total:.1f} s)")
    return EXIT_OK


def _warm_napari_shapes(quiet: bool) -> float:
    """When napari is installed, draw every kind of shape a user can (napari's Shapes kernels are
    numba too: a user's first polygon froze the GUI 21-45 s with a cold cache, #15). In its own
    process: the command line never imports napari. Returns the seconds it took (0 without napari)."""
    import importlib.util
    import subprocess
    import time

    if importlib.util.find_spec("napari") is None:
        return 0.0
    t0 = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "napari_4dstem.widgets._shapes_warm"], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - t0
    if run.returncode != 0:
        print(f"napari shapes not warmed: {run.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    elif not quiet:
        print(f"{'napari':>8}  {'shapes':<14} {seconds:6.1f} s")
    return seconds


# -- virtual / calibrate / dpc (analysis; the functions live in napari_4dstem.analysis) --------
def add_virtual(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("virtual", help="virtual images: point, disk, annulus, rectangle, mask, presets")
    p.add_argument("file", type=Path)
    p.add_argument("out", type=Path, help="output: .h5 (EMD, one map per detector) or .npy")
    p.add_argument(
        "--preset",
        action="append",
        type=str.upper,
        default=[],
        choices=["BF", "ABF", "ADF", "HAADF"],
        help="preset from the calibrated angles",
    )
    p.add_argument(
        "--bf-radius",
        metavar="PX|auto",
        help="bright-field disk radius for presets on an uncalibrated detector ('auto': found on the mean pattern)",
    )
    p.add_argument("--point", nargs=2, type=float, action="append", default=[], metavar=("KY", "KX"))
    p.add_argument("--disk", nargs=3, type=float, action="append", default=[], metavar=("KY", "KX", "R"))
    p.add_argument("--annulus", nargs=4, type=float, action="append", default=[], metavar=("KY", "KX", "R_IN", "R_OUT"))
    p.add_argument("--rect", nargs=4, type=int, action="append", default=[], metavar=("ROW0", "ROW1", "COL0", "COL1"))
    p.add_argument(
        "--mask", type=Path, action="append", default=[], help=".npy mask (k_y, k_x): boolean, or float weights"
    )
    p.add_argument("--descan", action="store_true", help="shift detectors with the fitted origin")
    p.add_argument("--nan-policy", choices=["raise", "propagate", "omit"], default="raise")
    analysis_args(p)
    return p


def run_virtual(args) -> int:
    import numpy as np

    from .analysis.virtual import detectors as D
    from .engine.jobs import run_job
    from .pipelines import InputRef, VirtualImageParams, iter_virtual

    try:
        dets: list = [D.PointDetector(tuple(v)) for v in args.point]
        dets += [D.DiskDetector((v[0], v[1]), v[2]) for v in args.disk]
        dets += [D.AnnulusDetector((v[0], v[1]), v[2], v[3]) for v in args.annulus]
        dets += [D.RectangleDetector((v[0], v[1]), (v[2], v[3])) for v in args.rect]
        masks = [{"kind": "mask", "path": str(Path(m).resolve()), "name": m.stem} for m in args.mask]
        for m in args.mask:
            D.MaskDetector(np.load(m), name=m.stem)  # a clear error now, not in the pass
    except (ValueError, TypeError, OSError) as e:
        raise Napari4DSTEMError(f"bad detector: {e}") from None
    dc = open_calibrated(args)
    try:
        names = [d.kind for d in dets] + ["mask"] * len(masks)
        dets = [*dets, *masks]
        if args.preset:
            kw: dict[str, Any] = {}
            if args.bf_radius == "auto":
                from .analysis.virtual.origin import find_bf_disk

                bf = find_bf_disk(run_job(dc.iter_reduce_patterns("mean"), ProgressBar(enabled=not args.quiet)))
                kw = {"bf_radius_px": bf.radius_px, "center_px": bf.center_px}
            elif args.bf_radius is not None:
                kw = {"bf_radius_px": float(args.bf_radius)}
            for name in args.preset:
                dets.append(D.preset_detector(name, detector_shape=dc.detector_shape, calibration=dc.calibration, **kw))
                names.append(name)
        if not dets:
            raise Napari4DSTEMError("give at least one detector (--preset, --disk, --annulus, ...)")
        names = [n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names)]
        params = VirtualImageParams(
            detectors=tuple(dets), names=tuple(names), descan=args.descan, nan_policy=args.nan_policy
        )
        res = run_job(
            iter_virtual(
                dc,
                virtual=params,
                calibration=dc.calibration if args.calibration else None,
                source=InputRef.of(args.file, scan_shape=args.scan_shape),
                backend=args.scheduler,
            ),
            ProgressBar(enabled=not args.quiet),
        )
    finally:
        dc.close()
    maps = res.saved_objects()
    write_maps(args.out, maps, args.overwrite)
    print(f"wrote {args.out}: {', '.join(m.name for m in maps)}  {res.stack.scan_shape}")
    return EXIT_OK


def add_calibrate(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("calibrate", help="origin + descan plane, ring ellipse/pixel size, DPC rotation")
    p.add_argument("file", type=Path)
    p.add_argument("out", type=Path, help="output calibration (.json, origin map included)")
    p.add_argument(
        "--origin",
        choices=["disk", "com", "none"],
        default="disk",
        help="measure the origin per pattern (default: bright-field disk centre)",
    )
    p.add_argument("--fit", choices=["plane", "mean"], default="plane", help="descan model")
    v.range_arg(
        p,
        "--ring",
        metavar=("R_MIN", "R_MAX"),
        help="fit the ellipse of the ring between these radii (px) on the mean pattern",
    )
    p.add_argument(
        "--d-spacing",
        type=v.positive_float,
        metavar="A",
        help="d-spacing of that ring in Angstrom: sets the pixel size (1/A)",
    )
    p.add_argument(
        "--rotation", action="store_true", help="fit the scan/detector rotation and flip from DPC (curl minimisation)"
    )
    analysis_args(p)
    return p


class _rotation_warning_on_stderr:
    """An ill-conditioned DPC rotation fit said once, in one line, on stderr (other warnings pass)."""

    def __enter__(self):
        import warnings

        from .analysis.virtual.dpc import IllConditionedRotationWarning

        self._cm = warnings.catch_warnings(record=True)
        self._caught = self._cm.__enter__()
        warnings.simplefilter("always", IllConditionedRotationWarning)
        return self

    def __exit__(self, *exc) -> None:
        import warnings

        from .analysis.virtual.dpc import IllConditionedRotationWarning

        self._cm.__exit__(*exc)
        said = False
        for w in self._caught:
            if issubclass(w.category, IllConditionedRotationWarning):
                if not said:
                    print(f"WARNING: {w.message}", file=sys.stderr)
                said = True
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def run_calibrate(args) -> int:
    from .pipelines import CalibrationParams, iter_calibrate

    out_ext = args.out.suffix.lower()
    if out_ext not in (".json", ".h5", ".hdf5", ".emd"):
        from .errors import FileFormatError

        raise FileFormatError(args.out, "calibrate writes a calibration .json (or an EMD .h5 of the origin maps)")
    params = CalibrationParams(
        origin=args.origin,
        fit=args.fit,
        ring_px=tuple(args.ring) if args.ring else None,
        d_spacing_A=args.d_spacing,
        rotation=args.rotation,
    )
    with _rotation_warning_on_stderr():
        res = run_on_cube(args, iter_calibrate, calibrate=params)
    cal = res.calibration
    if res.origin_fit is not None:
        fit = res.origin_fit
        print(
            f"origin: {args.fit} fit, mean ({cal.origin_px[0]:.3f}, {cal.origin_px[1]:.3f}) px, "
            f"residual {fit.residual_rms_px:.3f} px rms, {int((~fit.inliers).sum())} outliers"
        )
    if res.ring is not None:
        ring = res.ring
        print(
            f"ring: radius {ring.radius_px:.3f} px, axes {ring.a_px:.3f}/{ring.b_px:.3f} px "
            f"at {ring.theta_deg:.2f} deg" + (f", pixel {cal.k_pixel_size:.5g} 1/A" if args.d_spacing else "")
        )
    if res.rotation is not None:
        rot = res.rotation
        print(
            f"rotation: {rot.rotation_deg:.2f} deg, flip {rot.flip}, confidence {rot.confidence:.3g} "
            f"(curl {rot.curl_rms:.3g} vs {rot.curl_rms_other_flip:.3g} with the other flip)"
        )
    if out_ext == ".json":
        res.save_json(args.out, overwrite=args.overwrite)
    else:
        write_maps(args.out, res.saved_objects(), args.overwrite)
    print(f"wrote {args.out}")
    return EXIT_OK


def add_dpc(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("dpc", help="centre of mass, DPC (rotated into scan axes) and iDPC phase")
    p.add_argument("file", type=Path)
    p.add_argument("out", type=Path, help="output .h5 (EMD): com, dpc and idpc maps")
    p.add_argument("--rotation", type=float, metavar="DEG", help="scan/detector rotation (default: calibration)")
    p.add_argument("--auto-rotation", action="store_true", help="fit the rotation by curl minimisation")
    p.add_argument("--flip", action="store_true", default=None, help="detector k_x is mirrored")
    p.add_argument("--descan", choices=["plane", "mean", "calibration", "none"], default="plane")
    p.add_argument("--units", choices=["px", "mrad", "1/A"], default="px", help="units of the shifts")
    p.add_argument(
        "--bf-mask", type=v.positive_float, metavar="R", help="COM inside this radius (px) around the origin"
    )
    p.add_argument("--regularization", type=v.nonnegative_float, default=0.0, help="iDPC high-pass (cycles/px)^2")
    analysis_args(p)
    return p


def run_dpc(args) -> int:
    from .pipelines import DPCParams, iter_dpc

    if args.out.suffix.lower() not in (".h5", ".hdf5", ".emd"):
        from .errors import FileFormatError

        raise FileFormatError(args.out, "dpc writes an EMD file (.h5)")
    params = DPCParams(
        rotation_deg=args.rotation,
        flip=args.flip,
        auto_rotation=args.auto_rotation,
        descan=args.descan,
        units=args.units,
        bf_mask_radius_px=args.bf_mask,
        regularization=args.regularization,
    )
    with _rotation_warning_on_stderr():
        res = run_on_cube(args, iter_dpc, dpc=params)
    if args.auto_rotation:
        print(f"rotation: {res.rotation_deg:.2f} deg, flip {res.flip}, confidence {res.rotation_confidence:.3g}")
    write_maps(args.out, res.saved_objects(), args.overwrite)
    print(f"wrote {args.out}: com, dpc, idpc ({res.phase.units})")
    return EXIT_OK


# -- disks / strain (Bragg disks, lattice and strain; napari_4dstem.analysis.bragg.disks etc.) --------
def _bragg_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--probe",
        metavar="FILE[:NAME]",
        help="vacuum probe: .npy image, or an EMD file's DiffractionImage (default node "
        "'probe'); default: the bright-field disk of the mean pattern",
    )
    p.add_argument("--kernel", choices=["plain", "gaussian", "ring"], help="correlation kernel (default plain)")
    p.add_argument("--power", type=v.fraction, help="correlation power: 1 cross, 0 phase, between hybrid (default 1)")
    p.add_argument(
        "--subpixel",
        choices=["fit", "parabolic", "gaussian", "upsample", "none"],
        help="sub-pixel refinement (default fit: Poisson ML disk fit)",
    )
    p.add_argument(
        "--min-relative",
        type=v.fraction,
        help="drop peaks below this fraction of the strongest (default 0.03; acom: 3e-4)",
    )
    p.add_argument(
        "--min-significance",
        type=float,
        metavar="Z",
        help="keep only peaks whose disk stands Z noise SDs above its surroundings (default off; acom: 5)",
    )
    p.add_argument(
        "--min-spacing", type=v.nonnegative_float, metavar="PX", help="minimum peak spacing (default: disk radius)"
    )
    p.add_argument("--edge", type=v.nonnegative_int, metavar="PX", help="edge margin (default: disk radius)")
    p.add_argument("--max-peaks", type=v.positive_int, help="at most this many peaks per pattern (default 100)")
    p.add_argument("--device", help="'cuda' to correlate on the GPU (falls back to the CPU)")
    analysis_args(p)


def _disk_params(args, base=None):
    """The DiskDetectionParams of the command line (validated once, there); options left unset
    keep the defaults of ``base`` (DiskDetectionParams(), or its ACOM preset)."""
    from .pipelines import DiskDetectionParams

    given = {
        "kernel": args.kernel,
        "correlation_power": args.power,
        "subpixel": args.subpixel,
        "min_relative": args.min_relative,
        "min_significance": args.min_significance,
        "min_spacing_px": args.min_spacing,
        "edge_px": args.edge,
        "max_peaks": args.max_peaks,
    }
    base = base or DiskDetectionParams()
    return DiskDetectionParams(**{**base.to_dict(), **{k: v for k, v in given.items() if v is not None}})


def _nn_params(args):
    from .pipelines import NNDiskParams

    kw = {
        "model": args.model,
        "mc_samples": args.mc_samples,
        "min_relative": args.min_relative,
        "min_spacing_px": args.min_spacing,
        "edge_px": args.edge,
        "max_peaks": args.max_peaks,
        "precision": getattr(args, "precision", None),
    }
    kw = {k: v for k, v in kw.items() if v is not None}
    if args.min_significance is not None:
        kw["min_significance"] = None if args.min_significance < 0 else args.min_significance
    return NNDiskParams(**kw)


def _detection(args, base=None):
    return _nn_params(args) if getattr(args, "method", "cc") == "nn" else _disk_params(args, base)


def _peaks_file(path: Path):
    """The Bragg peaks of an EMD file without a 4D datacube (from `disks` or `infer`), else None."""
    from .io import detect_format, emd

    fmt = detect_format(path)
    if fmt is None or fmt.name != "emd":
        return None
    nodes = emd.list_nodes(path)
    if any(n.shape and len(n.shape) == 4 for n in nodes):
        return None
    if not any(n.python_class == "BraggVectors" for n in nodes):
        return None
    from .pipelines import read_peaks

    return read_peaks(path)


def _ignored_detection_options(args) -> None:
    """Say so when disk-detection options come with a file of peaks (they are not used)."""
    names = (
        "probe",
        "kernel",
        "power",
        "subpixel",
        "min_relative",
        "min_significance",
        "min_spacing",
        "edge",
        "max_peaks",
        "model",
        "mc_samples",
    )
    given = [n for n in names if getattr(args, n, None) is not None]
    if given or getattr(args, "method", "cc") == "nn":
        opts = ", ".join("--" + n.replace("_", "-") for n in given) or "--method"
        print(f"note: {args.file} holds Bragg peaks already; {opts} not used", file=sys.stderr)


def add_disks(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("disks", help="Bragg disks of every pattern + the Bragg vector map")
    p.add_argument("file", type=Path)
    p.add_argument("out", type=Path, help="output .h5 (EMD): braggpeaks and bragg_vector_map")
    _bragg_args(p)
    return p


def run_disks(args) -> int:
    from .pipelines import iter_disks

    need_emd(args, "disks")
    res = run_on_cube(args, iter_disks, detection=_disk_params(args))
    res.save(args.out, overwrite=args.overwrite)
    counts = res.peaks.counts()
    print(
        f"wrote {args.out}: {res.peaks.n_peaks} peaks, {counts.mean():.1f} per pattern "
        f"({int((counts == 0).sum())} patterns without peaks), bragg_vector_map"
    )
    return EXIT_OK


def _nn_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method",
        choices=["cc", "nn"],
        default="cc",
        help="find the disks by template correlation (cc, default) or by the neural network "
        "(nn: needs --probe; --min-relative default 0.1, --min-significance 5)",
    )
    p.add_argument("--model", help="with --method nn: registry name[@version] or model file (default bundled)")
    p.add_argument("--mc-samples", type=int, help="with --method nn: Monte-Carlo dropout passes")
    precision_arg(p)  # with --method nn


def add_strain(sub) -> argparse.ArgumentParser:
    from .analysis.bragg.fit_weights import FIT_WEIGHTS

    p = sub.add_parser("strain", help="Bragg disks, lattice fit per pattern and true strain maps")
    p.add_argument("file", type=Path, help="a 4D-STEM file, or an EMD file of Bragg peaks (from `disks` or `infer`)")
    p.add_argument("out", type=Path, help="output .h5 (EMD): strain, confidence, reason, lattice, peaks")
    p.add_argument(
        "--reference",
        nargs=4,
        type=int,
        metavar=("ROW0", "ROW1", "COL0", "COL1"),
        help="unstrained reference rectangle of the scan (default: median of all)",
    )
    p.add_argument("--g1", nargs=2, type=float, metavar=("Y", "X"), help="lattice vector g1 in px")
    p.add_argument("--g2", nargs=2, type=float, metavar=("Y", "X"), help="lattice vector g2 in px")
    p.add_argument(
        "--frame-deg", type=float, default=0.0, help="report the strain in axes turned by this angle from +x towards +y"
    )
    p.add_argument(
        "--fit-weights",
        choices=FIT_WEIGHTS,
        default="auto",
        help="lattice-fit weight per peak (auto: what the disk finder recorded; the network's peaks: "
        "counts times its confidence; correlation's: counts)",
    )
    _bragg_args(p)
    _nn_args(p)
    p.set_defaults(min_relative=None)  # per method: 0.03 (cc), 0.1 (nn)
    return p


def run_strain(args) -> int:
    from .pipelines import InputRef, StrainParams, iter_strain, strain_from_peaks

    need_emd(args, "strain")
    params = StrainParams(
        reference=args.reference, g1=args.g1, g2=args.g2, frame_deg=args.frame_deg, fit_weights=args.fit_weights
    )
    peaks = _peaks_file(args.file)
    if peaks is not None:
        _ignored_detection_options(args)
        res = strain_from_peaks(peaks, params, source=InputRef.of(args.file, kind="peaks"))
    else:
        res = run_on_cube(args, iter_strain, detection=_detection(args), strain=params)
    res.save(args.out, overwrite=args.overwrite)
    lat = res.lattice
    print(
        f"lattice: g1 ({lat.g1[0]:.3f}, {lat.g1[1]:.3f}) px, g2 ({lat.g2[0]:.3f}, {lat.g2[1]:.3f}) px; "
        f"{res.fit.summary()}"
    )
    print(f"wrote {args.out}: strain (e_xx, e_yy, e_xy, theta_rad; true strain), confidence, reason")
    return EXIT_OK


# -- acom ---------------------------------------------------------------------------------------
def _intensity_power(text: str) -> float | str:
    """``auto`` or a number in (0, 1]."""
    if text.strip().lower() == "auto":
        return "auto"
    q = v.positive_float(text)
    if q > 1:
        raise argparse.ArgumentTypeError(f"must be 'auto' or in (0, 1], got {q:g}")
    return q


def add_acom(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("acom", help="crystal orientation (and phase) map from Bragg disks (ACOM)")
    p.add_argument("file", type=Path, help="a 4D-STEM file, or an EMD file of Bragg peaks (from `disks`)")
    p.add_argument("out", type=Path, help="output .h5 (EMD): euler, orientation, correlation, phase, IPF maps")
    p.add_argument(
        "--crystal",
        action="append",
        required=True,
        metavar="NAME|CIF",
        help="bundled crystal (Au, Cu, Al, Si, Fe-bcc, Ti-hcp) or a CIF; repeat for a phase map",
    )
    p.add_argument(
        "--step", type=v.positive_float, default=2.0, help="zone-axis step of the plan in degrees (default 2)"
    )
    p.add_argument("--inplane-step", type=v.positive_float, help="in-plane step in degrees (default: --step)")
    p.add_argument(
        "--k-max", type=v.positive_float, metavar="1/A", help="largest |g| used (default: the detector's reach)"
    )
    p.add_argument(
        "--thickness-nm",
        type=v.positive_float,
        default=10.0,
        help="sample thickness for the excitation errors (default 10, as the API)",
    )
    p.add_argument(
        "--excitation-width",
        type=v.positive_float,
        metavar="1/A",
        help="excitation-error width of the plan (default: from the thickness; 0.04 for thick, dynamical data)",
    )
    p.add_argument(
        "--rocking-curve",
        choices=("lorentzian", "gaussian", "sinc2"),
        default="lorentzian",
        help="excitation-error profile of the templates (default lorentzian: thin films)",
    )
    p.add_argument(
        "--intensity-power",
        type=_intensity_power,
        default="auto",
        metavar="auto|Q",
        help="intensities to this power, in (0, 1]; auto (default): 0.25, the first match refined again at 0.5 "
        "when the patterns follow the plan's rocking curve",
    )
    p.add_argument(
        "--overlap",
        choices=("residual", "candidates"),
        default="residual",
        help="matches 2..N: further grains from the unexplained peaks (residual) or alternatives",
    )
    p.add_argument(
        "--pair-score",
        choices=("joint", "share"),
        default="joint",
        help="overlaps: the two grains from a joint fit of a candidate pool (joint) or session 8's choice (share)",
    )
    p.add_argument(
        "--pair-pool", type=v.positive_int, default=8, help="first-pass candidates in the joint fit's pool (default 8)"
    )
    p.add_argument(
        "--pair-gain",
        type=float,
        default=0.02,
        metavar="G",
        help="overlaps: the joint two-grain pair replaces the single-grain first match only where the second grain "
        "adds G to the squared cosine (default 0.02; -1: always); matches 2.. are reported either way",
    )
    p.add_argument(
        "--rank-width",
        type=v.nonnegative_float,
        default=0.0,
        metavar="X",
        help="also rank candidates under an X times wider rocking curve (default 0: off; docs/acom.md)",
    )
    p.add_argument(
        "--rank-likelihood",
        action="store_true",
        help="rank refined candidates last by a thin-film likelihood (sinc^2 at a fitted thickness, absent and "
        "unexplained spots penalised; default off; docs/acom.md, 'Likelihood ranking')",
    )
    p.add_argument(
        "--turn-line",
        type=v.nonnegative_float,
        default=0.1,
        metavar="D",
        help="flag a match turn_ambiguous where its zone partner's pattern differs by less than D "
        "(default 0.1; 0: off; docs/acom.md, 'The turn about the beam')",
    )
    p.add_argument(
        "--n-matches", type=v.positive_int, default=1, help="orientations kept per pattern (overlapping grains)"
    )
    p.add_argument("--min-peaks", type=v.nonnegative_int, default=5, help="mask patterns with fewer peaks (default 5)")
    p.add_argument("--max-memory-mb", type=v.positive_float, default=2048, help="refuse plans larger than this")
    p.add_argument("--ang", type=Path, help="also write a TSL .ang file (MTEX, orix)")
    _bragg_args(p)
    # unset: DiskDetectionParams.for_acom() (min_relative 3e-4, min_significance 5)
    p.set_defaults(min_relative=None, min_significance=None)
    return p


def run_acom(args) -> int:
    import numpy as np

    from .pipelines import ACOMParams, DiskDetectionParams, InputRef, iter_acom, run_acom

    need_emd(args, "acom")
    params = ACOMParams(
        crystals=tuple(args.crystal),
        step_deg=args.step,
        inplane_step_deg=args.inplane_step,
        k_max_inv_A=args.k_max,
        thickness_nm=args.thickness_nm,
        n_matches=args.n_matches,
        min_peaks=args.min_peaks,
        max_memory_mb=args.max_memory_mb,
        rocking_curve=args.rocking_curve,
        intensity_power=args.intensity_power,
        overlap=args.overlap,
        excitation_width_inv_A=args.excitation_width,
        pair_score=args.pair_score,
        pair_pool=args.pair_pool,
        pair_gain=args.pair_gain,
        rank_width=args.rank_width,
        rank_likelihood=args.rank_likelihood,
        turn_line=args.turn_line,
    )
    peaks = _peaks_file(args.file)
    if peaks is not None:
        _ignored_detection_options(args)
        run = run_acom(
            None,
            peaks=peaks,
            acom=params,
            source=InputRef.of(args.file, kind="peaks"),
            device=args.device,
            progress=ProgressBar(enabled=not args.quiet),
        )
    else:
        run = run_on_cube(args, iter_acom, acom=params, detection=_disk_params(args, DiskDetectionParams.for_acom()))
    run.save(args.out, overwrite=args.overwrite)
    res = run.result
    if args.ang:
        res.write_ang(args.ang, overwrite=args.overwrite)
    v = res.valid
    plan = run.plans[0]
    print(
        f"{int(v.sum())}/{v.size} patterns indexed (k_max {run.k_max_inv_A:.2f} 1/A, {plan.n_zones} zone axes x "
        f"{plan.n_inplane} in-plane); median correlation {np.median(res.correlation[..., 0][v]) if v.any() else 0:.3f}"
    )
    print(f"wrote {args.out}" + (f" and {args.ang}" if args.ang else ""))
    return EXIT_OK


# -- simulate -----------------------------------------------------------------------------------
def add_simulate(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("simulate", help="simulate a training set (CBED + probe + label shards)")
    p.add_argument("out", type=Path, help="output folder (manifest.json + shard-*.h5)")
    p.add_argument("-n", "--n-patterns", type=v.positive_int, default=256)
    p.add_argument("--shard-size", type=v.positive_int, default=64, help="patterns per shard")
    p.add_argument(
        "--engine",
        default="kinematic",
        help="kinematic, multislice (ours, torch; GPU when present), prismatic or abtem",
    )
    p.add_argument(
        "--crystal",
        action="append",
        metavar="NAME|CIF",
        help="bundled crystal (Au Cu Al Si Fe Ti) or CIF file; repeat for several",
    )
    p.add_argument("--shape", nargs=2, type=v.positive_int, default=(256, 256), metavar=("H", "W"))
    p.add_argument(
        "--pixel-size",
        nargs=2,
        type=float,
        default=(0.008, 0.016),
        metavar=("LO", "HI"),
        help="detector pixel size range, 1/A",
    )
    p.add_argument(
        "--zone-axis",
        action="append",
        nargs=3,
        type=int,
        metavar=("U", "V", "W"),
        help="zone axis [uvw]; repeat for several (default 001 011 111 112)",
    )
    p.add_argument(
        "--random-fraction",
        type=v.fraction,
        default=0.3,
        help="fraction of random orientations (the rest near zone axes)",
    )
    p.add_argument(
        "--zone-axis-tilt",
        type=v.nonnegative_float,
        default=1.0,
        metavar="DEG",
        help="largest tilt off the zone axis of the zone-axis patterns (default 1)",
    )
    v.range_arg(p, "--thickness", default=(20.0, 400.0), help="thickness range, Angstrom")
    p.add_argument(
        "--energy",
        nargs="+",
        type=v.positive_float,
        default=[80.0, 120.0, 200.0, 300.0],
        help="beam energies to choose from, keV",
    )
    v.range_arg(p, "--convergence", default=(0.5, 5.0), help="convergence semi-angle range, mrad")
    p.add_argument(
        "--defocus", nargs=2, type=float, default=(-200.0, 200.0), metavar=("LO", "HI"), help="defocus range, Angstrom"
    )
    p.add_argument("--strain-max", type=v.nonnegative_float, default=0.0, help="largest planted strain component")
    p.add_argument(
        "--label-heights",
        choices=("structure_factor", "uniform"),
        default="structure_factor",
        help="label peak heights: |F_g|/|F_000| (crystal4D) or 1 for every listed reflection",
    )
    p.add_argument(
        "--label-min-weight",
        type=v.nonnegative_float,
        default=1e-3,
        help="reflections under this structure-factor weight are left out of the label",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=v.positive_int, default=1)
    p.add_argument("--executor", choices=("serial", "threads", "processes"), default="threads")
    p.add_argument(
        "--scheduler", type=v.scheduler_address, help="dask.distributed scheduler address (instead of --executor)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a training set with other parameters in OUT")
    return p


def run_simulate(args) -> int:
    from .engine.jobs import run_job
    from .simulation.training import TrainingSetSpec, simulate_training_set

    kw = {}
    if args.crystal:
        kw["crystals"] = tuple(args.crystal)
    if args.zone_axis:
        kw["zone_axes"] = tuple(tuple(z) for z in args.zone_axis)
    spec = TrainingSetSpec(
        n_patterns=args.n_patterns,
        patterns_per_shard=args.shard_size,
        engine=args.engine,
        shape=tuple(args.shape),
        pixel_size_inv_A=tuple(args.pixel_size),
        random_orientation_fraction=args.random_fraction,
        thickness_A=tuple(args.thickness),
        zone_axis_tilt_deg=args.zone_axis_tilt,
        energies_kev=tuple(args.energy),
        convergence_mrad=tuple(args.convergence),
        defocus_A=tuple(args.defocus),
        strain_max=args.strain_max,
        seed=args.seed,
        label_heights=args.label_heights,
        label_min_weight=args.label_min_weight,
        **kw,
    )
    client = None
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)
    job = simulate_training_set(
        spec, args.out, workers=args.workers, executor=args.executor, client=client, overwrite=args.overwrite
    )
    res = run_job(job, ProgressBar(enabled=not args.quiet))
    print(
        f"wrote {args.out}: {res.n_patterns} patterns, {len(res.shards_written)} shards written, "
        f"{len(res.shards_skipped)} already complete, {res.seconds:.1f} s"
    )
    return EXIT_OK


# -- train / finetune / infer / models: in napari_4dstem._cli_nn (imported at the top) -------------------


SUBCOMMANDS: dict[str, tuple[Callable, Callable]] = {
    "info": (add_info, run_info),
    "convert": (add_convert, run_convert),
    "demo": (add_demo, run_demo),
    "samples": (add_samples, run_samples),
    "warmup": (add_warmup, run_warmup),
    "virtual": (add_virtual, run_virtual),
    "calibrate": (add_calibrate, run_calibrate),
    "dpc": (add_dpc, run_dpc),
    "disks": (add_disks, run_disks),
    "strain": (add_strain, run_strain),
    "acom": (add_acom, run_acom),
    "simulate": (add_simulate, run_simulate),
    "train": (add_train, run_train),
    "finetune": (add_finetune, run_finetune),
    "infer": (add_infer, run_infer),
    "models": (add_models, run_models),
    "script": (add_script, run_script),
    "session": (add_session, run_session),
    "phase": (add_phase, run_phase),
    "classify": (add_classify, run_classify),
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="napari-4dstem",
        description="4D-STEM analysis from the command line (axes: scan_y, scan_x, k_y, k_x).",
    )
    parser.add_argument("--version", action="version", version=f"napari-4dstem {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (add, run) in SUBCOMMANDS.items():
        p = add(sub)
        p.set_defaults(_run=run, _name=name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed (e.g. for model cards)
    try:
        with claim_outputs(args) as replaced:  # outputs checked before any work
            try:
                code = int(args._run(args) or EXIT_OK)
            finally:
                close_bars()  # a bar an error stopped ends its line before the message
        for p in replaced:
            print(f"napari-4dstem {args._name}: replaced the existing {p} (--overwrite)", file=sys.stderr)
        return code
    except Napari4DSTEMError as e:
        print(f"napari-4dstem {args._name}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        print(f"napari-4dstem {args._name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
