"""The ``script`` and ``session`` subcommands (registered in :mod:`napari_4dstem.cli`): the
script that remakes a saved result, and a saved session recomputed headless."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_script(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("script", help="print the Python script that recomputes a saved result file")
    p.add_argument("file", type=Path, help="an EMD file written by a workflow (disks, strain, acom, ...)")
    p.add_argument("--out", type=Path, help="where the script saves its result (default: FILE)")
    return p


def run_script(args) -> int:
    from .pipelines import script_from_file

    sys.stdout.write(script_from_file(args.file, args.out))
    return 0


def add_session(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("session", help="recompute every result of a saved session (JSON) into a folder")
    p.add_argument("file", type=Path, help="session file (Results dock > Save session...)")
    p.add_argument("out", type=Path, help="output folder: one EMD file per result")
    p.add_argument(
        "--data-folder", type=Path, help="where the input files are now, when they moved (e.g. on another machine)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace results of an earlier run")
    return p


def run_session(args) -> int:
    from ._cli_common import ProgressBar
    from .pipelines import Session

    session = Session.load(args.file)
    if args.data_folder is not None:
        session = session.relocated(args.data_folder)
    args.out.mkdir(parents=True, exist_ok=True)
    bar = ProgressBar(enabled=not args.quiet)
    for e in session.entries:
        res = e.recipe.run(bar)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in e.name)
        out = res.save(args.out / f"{safe}.h5", overwrite=args.overwrite)
        print(f"{e.name}: wrote {out}")
    return 0
