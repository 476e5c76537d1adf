"""Validators for command-line parameters: checked while parsing, before any work starts.

Each is an ``argparse`` ``type=`` function (or ``action=`` class) so that a subcommand adopts
one with a one-word edit; a bad value ends the command with one line on stderr and exit
code 2 (argparse's usage block is not printed: :class:`OneLineParser`).

:func:`claim_outputs` checks the output path(s) of a command before it computes: an existing
output without ``--overwrite`` is refused at once instead of after the work, and with
``--overwrite`` only the file that existed at that moment may be replaced (see
:mod:`napari_4dstem.io._atomic`).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "OneLineParser",
    "OrderedRange",
    "claim_outputs",
    "fraction",
    "nonnegative_float",
    "nonnegative_int",
    "positive_float",
    "positive_int",
    "range_arg",
    "scheduler_address",
]


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``prog: error: ...``) and exit code 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def _number(text: str, conv, what: str):
    try:
        v = conv(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def _bounded(name: str, doc: str, conv, what: str, ok, rule: str):
    """An ``argparse`` type: ``text`` as ``conv`` (``what``), refused unless ``ok(value)`` (``must be <rule>``)."""
    fmt = "g" if conv is float else ""

    def check(text: str):
        v = _number(text, conv, what)
        if not ok(v):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {v:{fmt}}")
        return v

    check.__name__ = check.__qualname__ = name
    check.__doc__ = doc
    return check


positive_int = _bounded("positive_int", "An integer >= 1.", int, "an integer", lambda v: v >= 1, ">= 1")
nonnegative_int = _bounded("nonnegative_int", "An integer >= 0.", int, "an integer", lambda v: v >= 0, ">= 0")
positive_float = _bounded("positive_float", "A finite number > 0.", float, "a number", lambda v: v > 0, "> 0")
nonnegative_float = _bounded("nonnegative_float", "A finite number >= 0.", float, "a number", lambda v: v >= 0, ">= 0")
fraction = _bounded("fraction", "A number in [0, 1].", float, "a number", lambda v: 0.0 <= v <= 1.0, "between 0 and 1")


_ADDRESS = re.compile(r"(tcp|tls|inproc|ucx|ws|wss)://[^\s]+|[A-Za-z0-9.\-]+:\d+")


def scheduler_address(text: str) -> str:
    """A dask.distributed scheduler address; refused at once when distributed is missing."""
    import importlib.util

    if text in ("local", "threads", "prange", "serial"):  # in-process backends
        return text
    if not _ADDRESS.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a scheduler address (e.g. tcp://host:8786)")
    if importlib.util.find_spec("distributed") is None:
        raise argparse.ArgumentTypeError(
            "needs dask.distributed, which is not installed (pip install 'dask[distributed]')"
        )
    return text


class OrderedRange(argparse.Action):
    """``nargs=2`` numbers ``LO HI`` with ``0 <= LO <= HI`` (a ring, a thickness range; equal
    ends fix the value)."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            lo, hi = (float(v) for v in values)
        except (TypeError, ValueError):
            parser.error(f"argument {option_string}: expects two numbers, got {values!r}")
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or lo > hi:
            parser.error(f"argument {option_string}: expects 0 <= LO <= HI, got {lo:g} {hi:g}")
        setattr(namespace, self.dest, type(values)(values))


def range_arg(
    p: argparse.ArgumentParser, flag: str, *, help: str, default=None, metavar: tuple[str, str] = ("LO", "HI")
) -> None:
    """Add the option ``flag LO HI``: two numbers with ``0 <= LO <= HI`` (:class:`OrderedRange`)."""
    p.add_argument(flag, nargs=2, type=float, action=OrderedRange, default=default, metavar=metavar, help=help)


#: outputs that are files (or a zarr store) written atomically; folders of results (demo,
#: simulate, train) manage their own contents
_OUTPUT_SUFFIXES = {".h5", ".hdf5", ".emd", ".npy", ".zarr", ".json", ".ang", ".npz", ".csv"}


@contextlib.contextmanager
def claim_outputs(args) -> Iterator[list[Path]]:
    """Check a command's output files before it runs; yield the list of files it replaced.

    The outputs are ``args.out`` (when it names a file, not a folder) and ``args.ang``. Raises
    :class:`~napari_4dstem.errors.OutputExistsError` at once for an existing output without
    ``--overwrite``; with it, records what exists now so that only that is replaced later.
    """
    from .io._atomic import output_claims, snapshot_output

    paths = []
    for name in ("out", "ang"):
        p = getattr(args, name, None)
        if isinstance(p, Path) and p.suffix.lower() in _OUTPUT_SUFFIXES and not p.is_dir():
            paths.append(p)
    if not paths or not hasattr(args, "overwrite"):
        yield []
        return
    overwrite = bool(getattr(args, "overwrite", False))
    snaps = [snapshot_output(p, overwrite=overwrite) for p in paths]
    with output_claims(snaps) as replaced:
        yield replaced
