"""Long jobs as generators: they yield :class:`Progress` and return their result.

Every long computation in napari-4dstem is written as a generator so that the napari widgets
can run it in a ``thread_worker`` (progress bar, cancel between steps) and the command line can
drive it with :func:`run_job`. The result is the generator's return value.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

__all__ = ["Job", "PartialMap", "Progress", "run_job"]

T = TypeVar("T")

# a job attaches its partial map to a Progress at most this often (the GUI shows 2-5 a second)
PARTIAL_EVERY_S = 0.2


@dataclass(frozen=True, eq=False)
class PartialMap:
    """A map over the scan as far as a running job has computed it (maps filling in).

    ``data`` is ``(scan_y, scan_x)`` float32 with NaN where nothing is computed yet; ``limits``
    the ``(min, max)`` of the computed part, for a display range that does not need a pass over
    the map; ``fraction`` the share of the scan computed.
    """

    name: str
    data: np.ndarray
    units: str = ""
    limits: tuple[float, float] = (0.0, 1.0)
    fraction: float = 0.0

    @classmethod
    def of(cls, name: str, values: np.ndarray, done: np.ndarray, units: str = "") -> PartialMap:
        """The map of ``values`` where ``done`` (a boolean scan mask), NaN elsewhere."""
        data = np.where(done, values, np.nan).astype(np.float32)
        shown = data[done]
        shown = shown[np.isfinite(shown)]
        lo, hi = (float(shown.min()), float(shown.max())) if shown.size else (0.0, 1.0)
        return cls(name, data, units, (lo, hi if hi > lo else lo + 1.0), float(np.mean(done)))


@dataclass(frozen=True)
class Progress:
    """One step of a long job: ``done`` of ``total`` units (patterns, chunks, epochs...), and,
    for jobs that build a map over the scan, the map so far (``partial``, at most every
    ``PARTIAL_EVERY_S``)."""

    done: int
    total: int
    message: str = ""
    partial: PartialMap | None = field(default=None, compare=False, repr=False)

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)


Job = Generator[Progress, None, T]


def run_job(job: Job[T], progress: Callable[[Progress], Any] | None = None) -> T:
    """Drive a job generator to its end and return its result.

    ``progress`` is called with every :class:`Progress` the job yields.
    """
    while True:
        try:
            p = next(job)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(p)
