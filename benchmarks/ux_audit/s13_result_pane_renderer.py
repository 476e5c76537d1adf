"""UX 15/24: the Result pane and a plugin's registered renderer, as a user opens them, on an
uncalibrated .npy (``npy``: the plugin's reader, no scan step in the file) and on the calibrated
bundled sample (``sample``). Run: xvfb-run -a python s13_result_pane_renderer.py npy|sample"""
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from harness import Audit, qt_mouse, real_space_model, rs_canvas_native, world_to_native

MODE = sys.argv[1] if len(sys.argv) > 1 else "npy"
A = Audit(f"s13_{MODE}")
v = A.viewer
from napari_4dstem import plugin_api
from napari_4dstem.widgets._common import scan_position

plugin_api.register_result_renderer("audit log pattern", lambda p: np.log1p(np.maximum(p, 0)), source="pattern")
A.measure("loadavg start", os.getloadavg())
if MODE == "npy":
    p = Path(tempfile.mkdtemp()) / "small.npy"
    rng = np.random.default_rng(3)
    np.save(p, rng.poisson(5.0, size=(16, 16, 32, 32)).astype(np.uint16))
    v.open(str(p), plugin="napari-4dstem")
else:
    v.open_sample("napari-4dstem", "strained_crystal")
cube = [l for l in v.layers if l.ndim == 4][0]
w = A.dock("Virtual imaging")
A.wait(lambda: w.last_image is not None and w._worker is None and w.presets_ready, 300)
A.process(0.5)
n_exc = len(A.excs)
try:
    pane = A.dock("Result pane")
    A.measure("Result pane opened", True, exceptions=len(A.excs) - n_exc)
except Exception as e:  # noqa
    A.measure("Result pane FAILED to open", repr(e), tb=traceback.format_exc()[-700:])
    pane = None
if pane is not None:
    A.process(1.0)
    A.measure("pane shows (default mode)", pane.mode.currentText(), status=pane.status.text()[:200], shown=None if pane.shown is None else pane.shown[0])
    modes = [pane.mode.itemText(i) for i in range(pane.mode.count())]
    A.measure("pane lists the registered renderer", "audit log pattern" in modes, modes=modes)
    pane.mode.setCurrentText("audit log pattern")
    ok = A.wait(lambda: pane.shown is not None and "audit" in str(pane.shown[0]), 30)
    pos = scan_position(v, cube)
    want = np.log1p(np.maximum(np.asarray(cube.data[pos], float), 0))
    A.measure("renderer output == log1p(pattern at scan position)", (ok, pane.shown is not None and bool(np.allclose(np.asarray(pane.shown[1], float), want, rtol=1e-5))), what=pane.shown[0] if pane.shown else None)
    rs = real_space_model(v)
    native = rs_canvas_native(rs)
    sy, sx = cube.scale[:2]
    pp = world_to_native(rs, (5 * sy, 9 * sx))
    qt_mouse(native, "press", pp); qt_mouse(native, "release", pp)
    ok = A.wait(lambda: scan_position(v, cube) == (5, 9) and pane.shown is not None and bool(np.allclose(np.asarray(pane.shown[1], float), np.log1p(np.asarray(cube.data[5, 9], float)), rtol=1e-5)), 10)
    A.measure("renderer follows a real click on real space (s)", ok)
    pane.mode.setCurrentIndex(0)
    ok = A.wait(lambda: pane.shown is not None and "audit" not in str(pane.shown[0]), 20)
    A.measure("FFT mode back (s)", ok, what=pane.shown[0] if pane.shown else None, status=pane.status.text()[:200])
A.shot("pane")
A.dump()
os._exit(0)
