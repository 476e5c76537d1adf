"""Session 14 audit: every real detector file in /work/shared/realdata through the plugin's npe2
reader (what napari's File > Open calls): does get_reader claim it, does read() work, layer shape,
dtype, sum, scale, units, and the reader's error text when it refuses. No GUI.
Run: PYTHONPATH=src python benchmarks/ux_audit/s18_reader_sweep.py"""
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from napari_4dstem._reader import get_reader

ROOT = Path("/work/shared/realdata/rosettasciio")
files = sorted(p for p in ROOT.rglob("*") if p.is_file() and p.suffix not in (".txt", ".csv", ".zip", ".hdr")
               and "COPYING" not in p.name and "_data_0" not in p.name and not p.name.endswith("_1.ser"))
rows = []
for p in files:
    rel = str(p.relative_to(ROOT))
    t0 = time.perf_counter()
    try:
        r = get_reader(str(p))
    except Exception as e:  # get_reader must never raise
        rows.append({"file": rel, "get_reader": "RAISED " + repr(e)})
        continue
    if r is None:
        rows.append({"file": rel, "get_reader": None})
        continue
    try:
        layers = r(str(p))
    except Exception as e:
        rows.append({"file": rel, "read": "ERROR", "err": f"{type(e).__name__}: {e}"[:400]})
        continue
    dt = time.perf_counter() - t0
    for data, kw, kind in layers:
        a = np.asarray(data)
        rows.append({"file": rel, "t_s": round(dt, 3), "name": kw.get("name"), "kind": kind, "shape": a.shape,
                     "dtype": str(a.dtype), "sum": float(a.sum(dtype=np.float64)) if a.dtype.kind in "biuf" else None,
                     "scale": kw.get("scale"), "units": kw.get("units"),
                     "meta": sorted((kw.get("metadata") or {}).keys())})
for r in rows:
    print(json.dumps(r, default=str))
