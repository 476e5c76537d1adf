"""Session 14, defect: Bragg disk detection on the real FEI TIA file
(tia/new/128x128x5-diffraction_preview.emi, int32, calibrated) returns disks with NaN intensity
(58-60 of the 100 disks of a pattern), through the dock's own worker functions with the dock's
defaults (template from the BF disk, "plain" kernel, DiskDetectionParams()). In the dock the NaN
intensities become NaN point sizes (`bragg.py:_show_peaks`) and napari's Points controls raise
`ValueError: cannot convert float NaN to integer` (a traceback per pattern shown).
Exit 1 while the defect is there. Run: PYTHONPATH=src python s18_nan_peaks_repro.py"""
import sys

import numpy as np

from napari_4dstem.io import open_datacube
from napari_4dstem.pipelines import DiskDetectionParams
from napari_4dstem.widgets.bragg import _detect_job, _template_job


def drive(gen):
    try:
        while True:
            next(gen)
    except StopIteration as e:
        return e.value


dc = open_datacube("/work/shared/realdata/rosettasciio/tia/new/128x128x5-diffraction_preview.emi")
template, _probe, _pic = drive(_template_job(dc, None, "plain", None))
bad = 0
for pos in [(0, 0), (0, 2), (0, 4)]:
    _, p, _s = _detect_job(dc, pos, template, DiskDetectionParams())
    n_nan = int(np.isnan(p[:, 2]).sum()) if len(p) else 0
    bad += n_nan
    print(f"pattern {pos}: {len(p)} disks, {n_nan} with NaN intensity; first rows (qy qx intensity corr):\n{p[:2]}")
sys.exit(1 if bad else 0)
