"""Import the heavy modules that napari's Open and the docks need, in a background thread.

napari runs a plugin's reader and sample data on its GUI thread. Ours import dask.array (the lazy
cube layer, ``DataCube.to_dask``), h5py/hdf5plugin and our readers; napari's first slice of a
dask-backed cube makes dask import ``distributed`` (to look for a client). Cold, these held the GUI
thread 0.6 s of CPU at load 2 and 11.9-14.0 s of wall time at load 12-19 when the sample was opened
with a dock already open (#15, UX audit session 13, defect 11). This module is imported with the
widgets package (the first dock), and starts importing them in a daemon thread then, so that a
later Open finds them in ``sys.modules``. It imports nothing heavy itself.
"""

from __future__ import annotations

import functools
import importlib
import threading

PRELOAD = (
    "dask.array",
    "distributed",
    "h5py",
    "hdf5plugin",
    "scipy.ndimage",
    "napari_4dstem.io",
    "napari_4dstem.io.emd",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
)
_preloaded = threading.Event()


def preload_done() -> bool:
    """Whether :func:`preload_modules`' thread has finished (every module imported or absent)."""
    return _preloaded.is_set()


def _preload() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # an optional module that is not installed: nothing to prepare
            pass
    _preloaded.set()


@functools.cache
def preload_modules() -> threading.Thread:
    """Start importing :data:`PRELOAD` in a daemon thread (once per process) and return it.

    A module that the GUI thread asks for meanwhile waits for that import (Python's per-module
    lock) instead of importing it a second time: never slower than importing it there."""
    th = threading.Thread(target=_preload, name="napari-4dstem preload", daemon=True)
    th.start()
    return th
