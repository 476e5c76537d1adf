"""The dask.distributed backend of :func:`~napari_4dstem.engine.driver.map_scan`.

One task per scan block; the tasks call the same kernels as the local engine, compiled
single-threaded (``parallel=False``), so a worker's threads are its parallelism. In-memory
numpy blocks are scattered to the workers; lazy arrays (zarr, dask, h5py on an in-process
cluster) are read by the workers themselves through dask slicing, so the data never passes
through the client. ``dask.distributed`` is imported only here, only when asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .jobs import Job, Progress

__all__ = ["run_distributed"]


def _apply(block, kernel, row0, kwargs, scan_kwargs):
    from .driver import _run_block

    return _run_block(np.asarray(block), kernel, row0, False, kwargs, scan_kwargs)


def run_distributed(
    arr, kernel, out, blocks, rows: slice, kwargs, scan_kwargs, backend: Any, message: str
) -> Job[None]:
    from distributed import Client, as_completed

    from .driver import _slice_scan_kwargs

    own = isinstance(backend, str)
    client = Client(backend) if own else backend
    futures: list = []
    try:
        index = {}
        in_memory = isinstance(arr, np.ndarray) and not isinstance(arr, np.memmap)
        if in_memory:
            # views, not copies (a remote worker gets the bytes it needs when they are
            # pickled); hash=False: hashing gigabytes for a key would cost more than the work
            parts = client.scatter([arr[sy, sx, rows] for sy, sx in blocks], hash=False)
            for k, ((sy, sx), part) in enumerate(zip(blocks, parts)):
                f = client.submit(
                    _apply,
                    part,
                    kernel,
                    rows.start,
                    kwargs,
                    _slice_scan_kwargs(scan_kwargs, sy, sx),
                    pure=False,
                )
                futures.append(f)
                index[f.key] = k
        else:
            import dask
            import dask.array as da

            if isinstance(arr, da.Array):
                d = arr
            else:
                by = blocks[0][0].stop - blocks[0][0].start
                bx = blocks[0][1].stop - blocks[0][1].start
                d = da.from_array(arr, chunks=(by, bx, *arr.shape[2:]), name=False, asarray=True)
            tasks = [
                dask.delayed(_apply, pure=False)(
                    d[sy, sx, rows],
                    kernel,
                    rows.start,
                    kwargs,
                    _slice_scan_kwargs(scan_kwargs, sy, sx),
                )
                for sy, sx in blocks
            ]
            futures = client.compute(tasks)
            index = {f.key: k for k, f in enumerate(futures)}
        total = len(blocks)
        for done, (fut, part) in enumerate(as_completed(futures, with_results=True)):
            sy, sx = blocks[index[fut.key]]
            out[sy, sx] = part
            yield Progress(done + 1, total, message)
        futures = []
    finally:
        if futures:
            client.cancel(futures)
        if own:
            client.close()
