"""What the command line's subcommand modules share: exit codes, the progress bar, opening the
input (with a calibration and scan shape from the command line), the analysis options, writing
maps, running a workflow job on the input.

``cli.py`` and the subcommand modules next to it (``_cli_classify``, ``_cli_nn``, ...) import
from here; nothing here imports them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import weakref
from pathlib import Path
from typing import Any

from . import _cli_validate as v

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_ERROR",
    "EXIT_OK",
    "ProgressBar",
    "analysis_args",
    "close_bars",
    "need_emd",
    "open_calibrated",
    "open_cube",
    "run_on_cube",
    "scan_shape_arg",
    "workflow_inputs",
    "write_maps",
]

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2


class ProgressBar:
    """Progress of a command-line job on stderr, one bar per stage.

    A stage ends when it reaches its total; the next one starts afresh (another total, or a count
    that goes back). A message that changes within a stage is its status (a file, a loss) and
    updates the bar's text.

    Each stage is a tqdm bar (tqdm is a core dependency): rate, elapsed and remaining time, the
    terminal's width. Where tqdm cannot be imported (a vendored or trimmed install), a small text
    bar redrawn at most 10 times a second. ``use_tqdm`` forces one or the other.
    """

    def __init__(self, stream=None, enabled: bool = True, *, use_tqdm: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        if use_tqdm is None:
            use_tqdm = importlib.util.find_spec("tqdm") is not None
        self.use_tqdm = use_tqdm
        self._last = 0.0
        self._desc = None
        self._bar = None  # the current stage's tqdm bar
        self._open = False  # the text bar's line is drawn and not ended
        _LIVE.add(self)

    def __call__(self, p) -> None:
        if not self.enabled:
            return
        if self.use_tqdm:
            self._tqdm_step(p)
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
        self._open = not final
        if final:
            self.stream.write("\n")
        self.stream.flush()

    def _tqdm_step(self, p) -> None:
        from tqdm import tqdm

        total = max(int(p.total), 0)
        done = min(max(int(p.done), 0), total)
        bar = self._bar
        if bar is None or total != bar.total or done < bar.n:
            self.close()  # a new stage (the last one ended, or this one counts afresh)
            # counted from its first report: no rate made up from work done before it
            bar = self._bar = tqdm(
                total=total,
                initial=done,
                desc=p.message or None,
                file=self.stream,
                mininterval=0.1,
                dynamic_ncols=True,
                leave=True,
            )
            self._desc = p.message
        elif p.message != self._desc:  # a status within the stage ("epoch 3 loss 0.12")
            bar.set_description(p.message or None, refresh=False)
            self._desc = p.message
        bar.update(done - bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        """End the current stage's bar (its last state stays on screen, its line ended)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


_LIVE: weakref.WeakSet = weakref.WeakSet()


def close_bars() -> None:
    """End every bar still drawn (a job stopped by an error or Ctrl-C), so that the message
    printed next starts on its own line."""
    for bar in list(_LIVE):
        bar.close()


def scan_shape_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scan-shape",
        nargs=2,
        type=v.positive_int,
        metavar=("NY", "NX"),
        help="scan shape (scan_y scan_x) for files whose header lacks it",
    )


def open_cube(args) -> Any:
    from .io import open_datacube

    kw = {}
    if getattr(args, "scan_shape", None):
        kw["scan_shape"] = tuple(args.scan_shape)
    return open_datacube(args.file, **kw)


def open_calibrated(args) -> Any:
    from .data.calibration import Calibration
    from .errors import CalibrationError

    dc = open_cube(args)
    if args.calibration is not None:
        try:
            cal = Calibration.from_dict(json.loads(Path(args.calibration).read_text()))
        except (OSError, ValueError, TypeError) as e:
            dc.close()
            raise CalibrationError(f"{args.calibration}: cannot read the calibration ({e})") from None
        om = cal.origin_map_px
        if om is not None and om.shape[:2] != dc.scan_shape:
            dc.close()
            raise CalibrationError(
                f"{args.calibration}: origin map {om.shape[:2]} does not fit the scan {dc.scan_shape}"
            )
        dc.calibration = cal
    return dc


def analysis_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--calibration",
        type=Path,
        metavar="JSON",
        help="calibration written by `napari-4dstem calibrate` (replaces the file's)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        type=v.scheduler_address,
        help="run on this dask.distributed scheduler (tcp://host:8786), not locally",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    scan_shape_arg(p)


def write_maps(path: Path, maps: list, overwrite: bool) -> None:
    from .io import emd
    from .io._atomic import atomic_output

    if path.suffix.lower() == ".npy":
        import numpy as np

        with atomic_output(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
            np.save(f, np.stack([m.data for m in maps], axis=-1) if len(maps) > 1 else maps[0].data)
    elif path.suffix.lower() in (".h5", ".hdf5", ".emd"):
        emd.write(path, *maps, overwrite=overwrite)
    else:
        from .errors import FileFormatError

        raise FileFormatError(path, "results are written to .h5 (EMD) or .npy")


def workflow_inputs(args) -> dict[str, Any]:
    """Keywords every workflow gets from the command line (input file, calibration, where to run)."""
    from .pipelines import InputRef, ProbeSource

    kw = {"source": InputRef.of(args.file, scan_shape=getattr(args, "scan_shape", None)), "backend": args.scheduler}
    if hasattr(args, "probe"):  # the Bragg workflows
        kw.update(probe=ProbeSource.parse(args.probe) if args.probe else None, device=args.device)
    return kw


def run_on_cube(args, job_fn, **kwargs):
    """Open the (calibrated) file and run a workflow job on it with a progress bar."""
    from .engine.jobs import run_job

    dc = open_calibrated(args)
    try:
        calibration = dc.calibration if args.calibration is not None else None
        return run_job(
            job_fn(dc, calibration=calibration, **workflow_inputs(args), **kwargs), ProgressBar(enabled=not args.quiet)
        )
    finally:
        dc.close()


def need_emd(args, what: str) -> None:
    if args.out.suffix.lower() not in (".h5", ".hdf5", ".emd"):
        from .errors import FileFormatError

        raise FileFormatError(args.out, f"{what} writes an EMD file (.h5)")
