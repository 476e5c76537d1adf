"""How per-pattern work is run: chunked streaming, jobs with progress, the scan driver.

The driver has a local (numba threads) and a dask.distributed backend; numba and
dask.distributed are imported only when a kernel runs.
"""

from .chunks import default_scan_chunk, iter_scan_blocks, native_chunks
from .driver import PerPattern, map_scan
from .jobs import Job, Progress, run_job

__all__ = [
    "Job",
    "PerPattern",
    "Progress",
    "default_scan_chunk",
    "iter_scan_blocks",
    "map_scan",
    "native_chunks",
    "run_job",
]
