"""Repro (session 15 audit, finding S11): File > Open of our own EMD file (written by
``io.save_datacube``) or of a .npy does not reach our reader directly: napari's GUI open
(``viewer._open_or_raise_error``, what ``handle_gui_reading`` calls) raises MultipleReaderError
("Select plugin from {'napari': 'napari builtins', 'napari-4dstem': ...}") and shows its choose-a-reader
dialog; a plain ``viewer.open(path)`` takes the builtins: the .npy becomes an uncalibrated 4D image
(reader_plugin 'napari') and our EMD fails with "OSError: cannot find loader for this HDF5 file".
Exit 1 while the EMD file is claimed by more than our reader.

Run: xvfb-run -a -s "-screen 0 1920x1080x24" python s19_open_dialog_repro.py"""
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import napari
import npe2

from napari_4dstem.data.calibration import Calibration
from napari_4dstem.data.datacube import DataCube
from napari_4dstem.io import save_datacube

tmp = Path(tempfile.mkdtemp(prefix="s19-open-"))
cube = np.random.default_rng(0).poisson(5, (4, 4, 16, 16)).astype(np.uint16)
np.save(tmp / "c.npy", cube)
save_datacube(tmp / "c.h5", DataCube(cube, calibration=Calibration(scan_step=(2.0, 2.0), scan_units="A")), overwrite=True)
v = napari.Viewer(show=True)
bad = False
for name in ("c.npy", "c.h5"):
    p = str(tmp / name)
    readers = [r.plugin_name for r in npe2.PluginManager.instance().iter_compatible_readers([p])]
    try:
        v._open_or_raise_error([p])
        gui = "opened directly"
    except Exception as e:
        gui = f"{type(e).__name__}"
    try:
        ls = v.open(p)
        plain = [(l.ndim, l.source.reader_plugin) for l in ls]
    except Exception as e:
        plain = f"{type(e).__name__}: {e}"[:120]
    print(f"{name}: compatible readers {readers}; GUI open: {gui}; viewer.open without plugin: {plain}")
    if name == "c.h5" and readers != ["napari-4dstem"]:
        bad = True
print("DEFECT: our own EMD file is claimed by napari builtins too" if bad else "ok")
sys.stdout.flush()
os._exit(1 if bad else 0)
