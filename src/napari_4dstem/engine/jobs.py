"""Long jobs as generators: they yield :class:`Progress` and return their result.

Every long computation in napari-4dstem is written as a generator so that the napari widgets
can run it in a ``thread_worker`` (progress bar, cancel between steps) and the command line can
drive it with :func:`run_job`. The result is the generator's return value.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Job", "Progress", "run_job"]

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One step of a long job: ``done`` of ``total`` units (patterns, chunks, epochs...)."""

    done: int
    total: int
    message: str = ""

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
