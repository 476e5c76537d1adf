"""Session 14, defect: the Virtual imaging dock shows no image at all on a file with a small
detector when no BF disk is found (the Direct Electron MRC 20241021_00405_movie.mrc, 4 x 8 px
frames): its fallback first detector (`virtual._first_detector`: a disk of radius min(k)/8 at the
pattern centre) covers no pixel centre, and the status line shows a repr. No GUI needed.
Exit status 1 while the defect is there. Run: PYTHONPATH=src python s18_tiny_detector_repro.py"""
import sys

import numpy as np

from napari_4dstem.analysis.virtual.detectors import DiskDetector  # noqa: F401
from napari_4dstem.io import open_datacube
from napari_4dstem.widgets.virtual import _first_detector

bad = []
dc = open_datacube("/work/shared/realdata/rosettasciio/mrc/20241021_00405_movie.mrc")
for shape in [dc.shape, (2, 3, 4, 8), (2, 3, 6, 6), (2, 3, 8, 8), (2, 3, 4, 4), (2, 3, 16, 16)]:

    class _DC:  # only .shape is read by the fallback
        pass

    d = _DC()
    d.shape = shape
    det = _first_detector(d, None)
    try:
        n = int(np.count_nonzero(det.render(shape[2:])))
    except Exception as e:  # noqa
        n = 0
        bad.append(shape)
        print(f"{shape}: fallback {det!r} -> {type(e).__name__}: {e}")
        continue
    print(f"{shape}: fallback {det!r} covers {n} px")
sys.exit(1 if bad else 0)
