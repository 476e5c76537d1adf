"""The headless command line: ``napari-4dstem SUBCOMMAND ...``.

Every subcommand is a pair ``add_<name>(subparsers)`` / ``run_<name>(args) -> int`` registered
in ``SUBCOMMANDS``; it calls the same core functions as the napari widgets. Bad input ends with
a one-line message on stderr and exit code 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .errors import Napari4DSTEMError

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2


class ProgressBar:
    """A small text progress bar on stderr (redrawn at most 10 times a second)."""

    def __init__(self, stream=None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._last = 0.0
        self._desc = None

    def __call__(self, p) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        final = p.done >= p.total
        if not final and now - self._last < 0.1 and p.message == self._desc:
            return
        self._last, self._desc = now, p.message
        width = 30
        filled = int(width * p.fraction)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{p.message[:28]:28s} [{bar}] {p.done}/{p.total}")
        if final:
            self.stream.write("\n")
        self.stream.flush()


def _scan_shape_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scan-shape", nargs=2, type=int, metavar=("NY", "NX"),
        help="scan shape (scan_y scan_x) for files whose header lacks it",
    )


def _open(args) -> Any:
    from .io import open_datacube

    kw = {}
    if getattr(args, "scan_shape", None):
        kw["scan_shape"] = tuple(args.scan_shape)
    return open_datacube(args.file, **kw)


# -- info ---------------------------------------------------------------------------------------
def add_info(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="shape, dtype, chunks and calibration of a 4D-STEM file")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    _scan_shape_arg(p)
    return p


def run_info(args) -> int:
    from .io import detect_format

    fmt = detect_format(args.file)
    dc = _open(args)
    try:
        info = {
            "file": str(args.file),
            "format": fmt.name if fmt else None,
            "name": dc.name,
            "shape": list(dc.shape),
            "axes": list(dc.axis_labels),
            "dtype": str(dc.dtype),
            "chunks": list(dc.chunks) if dc.chunks else None,
            "nbytes": dc.nbytes,
            "calibration": dc.calibration.to_dict(),
        }
    finally:
        dc.close()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"{info['file']}  ({info['format']})")
        print(f"  shape    {tuple(info['shape'])}  (scan_y, scan_x, k_y, k_x)")
        print(f"  dtype    {info['dtype']}   {info['nbytes'] / 2**20:.1f} MiB")
        print(f"  chunks   {tuple(info['chunks']) if info['chunks'] else 'contiguous'}")
        for k, v in info["calibration"].items():
            if v is not None and v is not False:
                print(f"  {k:27s}{v}")
    return EXIT_OK


# -- convert ------------------------------------------------------------------------------------
def add_convert(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("convert", help="convert a 4D-STEM file to EMD (.h5), .npy or .zarr")
    p.add_argument("file", type=Path, help="input file")
    p.add_argument("out", type=Path, help="output file: .h5/.hdf5/.emd (py4DSTEM), .npy or .zarr")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--compression", choices=["none", "gzip", "lzf"], default="none",
                   help="compression of an EMD output (default none)")
    p.add_argument("--bin-k", type=int, default=1, help="bin the detector by this factor")
    p.add_argument("--bin-scan", type=int, default=1, help="bin the scan by this factor")
    _scan_shape_arg(p)
    return p


def run_convert(args) -> int:
    from .io import save_datacube

    dc = _open(args)
    try:
        out_dc = dc.bin(k=args.bin_k, scan=args.bin_scan)
        kw: dict[str, Any] = {}
        if args.out.suffix.lower() in (".h5", ".hdf5", ".emd"):
            kw = {"compression": None if args.compression == "none" else args.compression,
                  "progress": ProgressBar(enabled=not args.quiet)}
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
        args.out, sample=args.sample, overwrite=args.overwrite,
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


SUBCOMMANDS: dict[str, tuple[Callable, Callable]] = {
    "info": (add_info, run_info),
    "convert": (add_convert, run_convert),
    "demo": (add_demo, run_demo),
    "samples": (add_samples, run_samples),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    try:
        return int(args._run(args) or EXIT_OK)
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
