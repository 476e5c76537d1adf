"""How per-pattern work is run: chunked streaming, jobs with progress (and later backends)."""

from .chunks import default_scan_chunk, iter_scan_blocks, native_chunks
from .jobs import Job, Progress, run_job

__all__ = ["Job", "Progress", "default_scan_chunk", "iter_scan_blocks", "native_chunks", "run_job"]
