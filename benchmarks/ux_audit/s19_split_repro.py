"""Repro (session 15 audit, finding S9): Classification dock, *Split class* with its defaults (class 0
into 2) after a classification that found 1 class -> "error: IndexError: index 2 is out of bounds for
axis 0 with size 2" (a raw Python error in the notification and the status line). Headless: the dock's
own worker job (`widgets.classify._split_job`) on the pipeline result of `run_classification` with the
defaults, on the session-15 SrTiO3 cube (s19_make_data.py) when present, else on a uniform synthetic
cube. Exit 1 while the split raises an IndexError (a plain refusal or a 2-class split is fine).

Run: python s19_split_repro.py"""
import sys
import traceback
from pathlib import Path

import numpy as np

from napari_4dstem import open_datacube
from napari_4dstem.pipelines import ClassificationParams, run_classification

src = Path("/tmp/s19/sto.npy")
if src.exists():
    dc = open_datacube(str(src))
else:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    disk = ((yy - 16) ** 2 + (xx - 16) ** 2 < 25).astype(float) * 40
    from napari_4dstem.data.datacube import DataCube

    dc = DataCube(rng.poisson(disk + 1, (16, 16, 32, 32)).astype(np.uint16))
res = run_classification(dc, classify=ClassificationParams())
print("classes found:", res.classification.n_classes)
from napari_4dstem.widgets.classify import _split_job

try:
    gen = _split_job(res, 0, 2, dc)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        split, _ = stop.value
    print("split ok:", split.classification.n_classes, "classes")
    sys.exit(0)
except IndexError:
    traceback.print_exc(limit=-4)
    print("DEFECT: Split class 0 into 2 raises IndexError")
    sys.exit(1)
except Exception as e:  # a refusal in words is acceptable
    print(f"refused: {type(e).__name__}: {e}")
    sys.exit(0)
