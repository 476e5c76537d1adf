"""Cold numba cache (NUMBA_CACHE_DIR set to an empty folder by the caller): open the sample, open the
Virtual imaging dock, record GUI gaps until the first image. Run:
rm -rf /tmp/ux_numba_cold && mkdir /tmp/ux_numba_cold && cd <checkout> && NUMBA_CACHE_DIR=/tmp/ux_numba_cold nice -n 10 xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python benchmarks/ux_audit/s5_cold_cache.py"""
import os, sys, time
import os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Audit
A = Audit("s5")
v = A.viewer
A.measure("NUMBA_CACHE_DIR", os.environ.get("NUMBA_CACHE_DIR"), loadavg=os.getloadavg())
A.act("open sample")
v.open_sample("napari-4dstem", "strained_crystal")
A.process(0.5)
import threading, sys as _sys
from collections import Counter
held = Counter()
_stop = threading.Event()
def sampler():
    main = threading.main_thread().ident
    while not _stop.wait(0.1):
        fr = _sys._current_frames()
        mf = fr.get(main)
        # only while the GUI thread waits on numba's compiler lock
        f = mf; waiting = False
        while f is not None:
            if "compiler_lock" in f.f_code.co_filename:
                waiting = True; break
            f = f.f_back
        if not waiting:
            continue
        for tid, f in fr.items():
            if tid in (main, threading.get_ident()):
                continue
            labs = []
            while f is not None:
                fn = f.f_code.co_filename
                if "napari_4dstem" in fn:
                    labs.append(f"{fn.split('src/')[-1]}:{f.f_code.co_name}:{f.f_lineno}")
                f = f.f_back
            if labs:
                held[" < ".join(labs[:4])] += 1
threading.Thread(target=sampler, daemon=True).start()
A.act("open virtual dock")
t0 = time.perf_counter()
w = A.dock("Virtual imaging")
A.measure("first image s", A.wait(lambda: w.last_image is not None, 240))
A.act("after first image")
A.process(1)
gs = sorted(A.gaps.gaps, key=lambda g: -g["wall_ms"])[:5]
for g in gs:
    print("GAP", g)
_stop.set()
A.measure("other threads (napari_4dstem frames) while the GUI thread waited on numba's compiler lock", [f"{n}x {k}" for k, n in held.most_common(6)])
A.dump()
os._exit(0)
