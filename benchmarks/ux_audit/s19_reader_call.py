"""#15: the CPU our reader costs in napari's first Open, without a window: a fresh process imports
napari (what its start-up has loaded), then times napari's reader call on one file: importing our
reader module, ``get_reader(path)`` and the reader itself (thread CPU and wall), and lists the
watched modules it imported. Alternate the code before and after in fresh processes:

    PYTHONPATH=<src> python s19_reader_call.py PATH|sample
"""

import os
import sys
import time

import napari.viewer  # noqa: F401 (napari's start-up: dask, scipy, numba, skimage, as a shown window has them)

WATCH = ("dask.array", "h5py", "hdf5plugin", "xml.etree.ElementTree", "napari_4dstem.io.emd", "napari_4dstem.io.arina")

what = sys.argv[1]
before = set(sys.modules)
t0, c0 = time.perf_counter(), time.thread_time()
if what == "sample":
    from napari_4dstem._sample_data import strained_crystal

    layers = strained_crystal()
else:
    from napari_4dstem._reader import get_reader

    layers = get_reader(what)(what)
wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
new = [m for m in WATCH if m in sys.modules and m not in before]
print(
    f"RESULT {os.path.basename(what)} reader_call wall {wall:.3f} cpu {cpu:.3f} imported {','.join(new) or '-'}"
    f" load {os.getloadavg()[0]:.2f}",
    flush=True,
)
