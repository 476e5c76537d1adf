"""Fresh napari under Xvfb: open a .npy, open Virtual imaging, time to the first virtual image and the
GUI gaps until then (#15, session 15, orient). The caller sets NUMBA_CACHE_DIR (empty: a fresh
install; filled: the dtype's kernels cached) and CHECKOUT (the checkout whose src/ runs)::

    CHECKOUT=$PWD NUMBA_CACHE_DIR=$(mktemp -d) PYTHONPATH=src xvfb-run -a -s "-screen 0 1920x1080x24" \
        python benchmarks/ux_audit/s19_first_virtual_image.py cube_int32.npy

``SHOW_COMP=1`` lists the numba compiles in this process (thread, start..end after the dock opened)
before the first image. The session-15 files: the bundled strained_crystal sample (32 x 32 x 128 x 128)
cast to int32, and to uint8."""
import os, sys, time
sys.path.insert(0, os.path.join(os.environ["CHECKOUT"], "benchmarks", "ux_audit"))
from harness import Audit
import threading
import numba.core.event as ev
COMP = []
_depth = threading.local()
class Rec(ev.Listener):
    def on_start(self, event):
        d = getattr(_depth, "d", 0); _depth.d = d + 1
        if d == 0:
            _depth.t = time.perf_counter()
    def on_end(self, event):
        _depth.d -= 1
        if _depth.d == 0:
            COMP.append((threading.current_thread().name, _depth.t, time.perf_counter(), str(event.data.get("dispatcher", ""))[:60]))
ev.register("numba:compile", Rec())
path = sys.argv[1]
A = Audit("firstvi_" + os.path.basename(path))
v = A.viewer
A.process(0.3)
t_open = time.perf_counter()
v.open(path, plugin="napari-4dstem")
A.process(0.2)
A.act("open virtual dock")
t0 = time.perf_counter()
w = A.dock("Virtual imaging")
A.wait(lambda: w.last_image is not None, 400)
t_img = time.perf_counter() - t0
gaps = [g for g in A.gaps.gaps if g["action"] == "open virtual dock"]
worst = max(gaps, key=lambda g: g["wall_ms"], default={"wall_ms": 0, "cpu_ms": 0})
st = w.status.text() if hasattr(w, "status") else ""
print(f"MEASURE file={os.path.basename(path)} first_image_s={t_img:.2f} gaps={len(gaps)} "
      f"gap_wall_s={sum(g['wall_ms'] for g in gaps)/1e3:.2f} worst_gap_ms={worst['wall_ms']} worst_cpu_ms={worst['cpu_ms']} "
      f"load={os.getloadavg()[0]:.1f} cache={os.environ.get('NUMBA_CACHE_DIR')} code={os.environ['CHECKOUT']}", flush=True)
if os.environ.get("SHOW_COMP"):
    for th, a, b, d in COMP:
        if a - t0 < t_img:
            print(f"  COMP {th[:20]:20s} {a - t0:6.1f}..{b - t0:6.1f} ({b - a:5.1f} s) {d}")
os._exit(0)
