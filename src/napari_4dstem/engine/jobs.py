"""Long jobs as generators: they yield :class:`Progress` and return their result.

Every long computation in napari-4dstem is written as a generator so that the napari widgets
can run it in a ``thread_worker`` (progress bar, cancel between steps) and the command line can
drive it with :func:`run_job`. The result is the generator's return value.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from .._docstrings import docfiller

__all__ = [
    "JOB_DOCS",
    "Job",
    "PartialMap",
    "Progress",
    "as_part",
    "eager",
    "iter_imports",
    "iter_in_thread",
    "job_doc",
    "run_job",
]

T = TypeVar("T")

# a job attaches its partial map to a Progress at most this often (the GUI shows 2-5 a second)
PARTIAL_EVERY_S = 0.2


@dataclass(frozen=True, eq=False)
class PartialMap:
    """A map over the scan as far as a running job has computed it (maps filling in).

    Attributes
    ----------
    name : str
        The map's name.
    data : ndarray ``(scan_y, scan_x)`` float32
        NaN where nothing is computed yet.
    units : str
        The values' units.
    limits : (float, float)
        ``(min, max)`` of the computed part, for a display range that does not need a pass
        over the map.
    fraction : float
        The share of the scan computed.
    """

    name: str
    data: np.ndarray
    units: str = ""
    limits: tuple[float, float] = (0.0, 1.0)
    fraction: float = 0.0

    @classmethod
    def of(cls, name: str, values: np.ndarray, done: np.ndarray, units: str = "") -> PartialMap:
        """The map of ``values`` where ``done`` (a boolean scan mask), NaN elsewhere.

        Parameters
        ----------
        name : str
            The map's name.
        values : ndarray ``(scan_y, scan_x)``
            The map being filled in.
        done : bool ndarray ``(scan_y, scan_x)``
            Where it is computed.
        units : str
            The values' units.

        Returns
        -------
        PartialMap
            Limits from the finite computed values (``(0, 1)`` when there are none; a flat map gets
            ``(v, v + 1)``).
        """
        data = np.where(done, values, np.nan).astype(np.float32)
        shown = data[done]
        shown = shown[np.isfinite(shown)]
        lo, hi = (float(shown.min()), float(shown.max())) if shown.size else (0.0, 1.0)
        return cls(name, data, units, (lo, hi if hi > lo else lo + 1.0), float(np.mean(done)))


@dataclass(frozen=True)
class Progress:
    """One step of a long job: ``done`` of ``total`` units (patterns, chunks, epochs...).

    Attributes
    ----------
    done, total : int
        Units done and in all.
    message : str
        What the job is doing.
    partial : PartialMap or None
        For jobs that build a map over the scan, the map so far (at most every
        ``PARTIAL_EVERY_S``).
    """

    done: int
    total: int
    message: str = ""
    partial: PartialMap | None = field(default=None, compare=False, repr=False)

    @property
    def fraction(self) -> float:
        """``done / total`` clipped to 1 (1 when ``total`` is 0)."""
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)


Job = Generator[Progress, None, T]


def run_job(job: Job[T], progress: Callable[[Progress], Any] | None = None) -> T:
    """Drive a job generator to its end and return its result.

    Parameters
    ----------
    job : Job
        A generator yielding :class:`Progress` and returning the result.
    progress : callable, optional
        Called with every :class:`Progress` the job yields.

    Returns
    -------
    object
        The generator's return value.
    """
    while True:
        try:
            p = next(job)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(p)


def as_part(job: Job[T], index: int, count: int, *, resolution: int = 1000) -> Job[T]:
    """Run ``job`` as part ``index`` of ``count`` equal parts of a larger job.

    Parameters
    ----------
    job : Job
        The sub-job.
    index, count : int
        Which part it is (0-based) and how many parts the larger job has.
    resolution : int
        Progress units per part.

    Yields
    ------
    Progress
        The sub-job's progress re-expressed over all parts (its message kept).

    Returns
    -------
    object
        The sub-job's result (``result = yield from as_part(job, k, n)``).
    """
    while True:
        try:
            p = next(job)
        except StopIteration as stop:
            return stop.value
        frac = p.done / p.total if p.total else 0.0
        yield Progress(round(resolution * (index + frac)), resolution * count, p.message)


#: seconds between the steps :func:`iter_in_thread` yields while it waits (a Cancel point each)
WAIT_STEP_S = 0.1


def iter_in_thread(fn: Callable[..., T], *args: Any, message: str, **kwargs: Any) -> Job[T]:
    """Run ``fn(*args, **kwargs)`` in a thread of its own and wait for it in steps.

    For a blocking call that cannot be split (a first ``import torch``: seconds, up to 15 s on a
    loaded machine): the job yields a step every :data:`WAIT_STEP_S` while it waits, so a
    Cancel stops the job within that time. A call left behind by a cancelled job runs on to its
    end in its (daemon) thread, so use it for work that is harmless to finish, such as imports.

    Parameters
    ----------
    fn : callable
        The call.
    *args, **kwargs
        Its arguments.
    message : str
        The message of the steps (e.g. ``"loading torch..."``).

    Yields
    ------
    Progress
        ``Progress(0, 1, message)`` before the call and every :data:`WAIT_STEP_S` while it runs.

    Returns
    -------
    object
        ``fn``'s return value (``result = yield from iter_in_thread(fn, message=...)``); its
        exception is raised here.
    """
    import threading

    out: dict[str, Any] = {}

    def call():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as e:  # raised again in the job
            out["error"] = e

    yield Progress(0, 1, message)
    t = threading.Thread(target=call, name=f"n4d-{getattr(fn, '__name__', 'call')}", daemon=True)
    t.start()
    while t.is_alive():
        t.join(WAIT_STEP_S)
        if t.is_alive():
            yield Progress(0, 1, message)
    if "error" in out:
        raise out["error"]
    yield Progress(1, 1, message)
    return out["value"]


def iter_imports(modules: tuple[str, ...] | list[str], message: str) -> Job[None]:
    """Import ``modules`` (dotted names) in a thread, with Cancel points while they load.

    A step every :data:`WAIT_STEP_S` (:func:`iter_in_thread`): a job's first use of a heavy
    library (torch, scikit-learn, scipy.signal) no longer delays its Cancel by seconds.

    Parameters
    ----------
    modules : sequence of str
        Modules to import; those already imported cost nothing (no step is yielded then).
    message : str
        The message of the steps.

    Yields
    ------
    Progress
        While the imports run.

    Returns
    -------
    None
    """
    import importlib
    import sys

    def loaded(name: str) -> bool:
        # a module still being imported (by a cancelled job's thread) is in sys.modules already:
        # waiting for it here keeps the Cancel points
        mod = sys.modules.get(name)
        return mod is not None and not getattr(getattr(mod, "__spec__", None), "_initializing", False)

    todo = [m for m in modules if not loaded(m)]
    if not todo:
        return None

    def load():
        for m in todo:
            importlib.import_module(m)

    yield from iter_in_thread(load, message=message)
    return None


# a numpydoc section header, and the job's phrasing of its result that the eager twin drops
_SECTION = re.compile(r"^(\w[\w ]*)\n-{3,}\n", re.MULTILINE)
_RETURN_VALUE = re.compile(r"The generator's return value(?: \([^)]*\))?: (\w)")
_PROGRESS_DOC = "progress : callable, optional\n    Called with each :class:`~napari_4dstem.engine.jobs.Progress`.\n"


def eager(job_fn: Callable[..., Job[T]], summary: str, *, name: str | None = None) -> Callable[..., T]:
    """The eager twin of a job function: the job's arguments and ``progress``, the job's result.

    Parameters
    ----------
    job_fn : callable
        A function returning a :data:`Job` (its name ``iter_<name>`` by convention).
    summary : str
        The twin's one-line summary.
    name : str, optional
        The twin's name (default: ``job_fn``'s without its ``iter_`` prefix).

    Returns
    -------
    callable
        ``twin(*args, progress=None, **kwargs)`` = ``run_job(job_fn(*args, **kwargs), progress)``,
        defined in ``job_fn``'s module, with ``job_fn``'s signature plus ``progress`` and a
        docstring made of ``summary`` and ``job_fn``'s own (its Parameters with ``progress`` added,
        its Returns as the result of the run), so each is written once, on the job.
    """

    def twin(*args: Any, progress: Callable[[Progress], Any] | None = None, **kwargs: Any) -> T:
        return run_job(job_fn(*args, **kwargs), progress)

    twin.__name__ = twin.__qualname__ = name or job_fn.__name__.removeprefix("iter_")
    twin.__module__ = job_fn.__module__
    sig = inspect.signature(job_fn)
    params = list(sig.parameters.values())
    at = len(params) - (params and params[-1].kind is inspect.Parameter.VAR_KEYWORD)
    if "progress" not in sig.parameters:
        annotation = "Callable[[Progress], Any] | None"
        params.insert(
            at, inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        )
    result = sig.return_annotation
    if isinstance(result, str) and result.startswith("Job[") and result.endswith("]"):
        result = result[4:-1]
    twin.__signature__ = sig.replace(parameters=params, return_annotation=result)  # type: ignore[attr-defined]
    twin.__doc__ = _eager_doc(summary, job_fn)
    return twin


def _eager_doc(summary: str, job_fn: Callable) -> str:
    doc = inspect.cleandoc(job_fn.__doc__ or "")
    heads = list(_SECTION.finditer(doc))
    body_end = heads[0].start() if heads else len(doc)
    _, _, body = doc[:body_end].partition("\n\n")
    out = [f"{summary}\n\nRuns :func:`{job_fn.__name__}` to its end and returns its result.", body.strip()]
    sections = {
        m.group(1): doc[m.end() : heads[i + 1].start() if i + 1 < len(heads) else len(doc)] for i, m in enumerate(heads)
    }
    if heads:
        sections["Parameters"] = sections.get("Parameters", "").rstrip() + "\n" + _PROGRESS_DOC
    for title, text in sections.items():
        if title == "Yields":
            continue  # the twin hands each Progress to ``progress``
        if title == "Returns":
            text = _RETURN_VALUE.sub(lambda m: m.group(1).upper(), text)
        out.append(f"{title}\n{'-' * len(title)}\n{text.strip()}")
    return "\n\n".join(part for part in out if part) + "\n"


#: numpydoc text shared by the streaming jobs, filled into their docstrings by :func:`job_doc`
JOB_DOCS = {
    "data": "data : DataCube or 4D array ``(scan_y, scan_x, k_y, k_x)``\n"
    "    The 4D-STEM data (in memory, memory-mapped or dask), read block by block in its native dtype.",
    "scan_chunk": "scan_chunk : (int, int), optional\n"
    "    Scan block read at a time (see :func:`napari_4dstem.engine.driver.map_scan`).\n"
    "backend : optional\n"
    "    Where the blocks run (see :func:`napari_4dstem.engine.driver.map_scan`).",
    "yields": "Progress\n    One per block of the scan.",
}
job_doc = docfiller(JOB_DOCS)
job_doc.__doc__ = "Fill a job's ``%(data)s``, ``%(scan_chunk)s`` and ``%(yields)s`` docstring lines from JOB_DOCS."
