"""Session 15 audit, part 1b: napari closed, a FRESH napari process: Results dock, Load session (the
session.json s19_session.py saved), then the docks' states against the saved ones, the reopened
datacube's calibration, and Recompute of every row compared with the arrays the first process had
(results.npz).  Run after s19_session.py: python s19_session_reload.py [DATA_DIR=/tmp/s19]"""
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from s19_common import Audit, Dialogs, after, arm_stack_dumps, arrays_of, click, compare, mark

DATA = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/s19")
WORK = DATA / "session"
A = Audit("s19_reload")
stalls = arm_stack_dumps(A, "s19_reload")
v = A.viewer
D = Dialogs()
A.measure("loadavg start", os.getloadavg())
_, rl = v.window.add_plugin_dock_widget("napari-4dstem", "Results")
A.process(0.3)
D.path = WORK / "session.json"
m = mark(A, "Load session in a fresh process")
t0, c0 = time.perf_counter(), time.thread_time()
click(rl.load_session_btn)
t_click, c_click = time.perf_counter() - t0, time.thread_time() - c0
A.process(3.0)
after(A, "Load session", m, click_s=round(t_click, 2), click_cpu_s=round(c_click, 2), status=rl.status.text()[:300],
      layers=[l.name for l in v.layers], rows=rl.names())
cubes = [l for l in v.layers if l.ndim == 4]
A.measure("reopened cube calibration", [(c.name, list(map(float, c.scale)), [str(u) for u in c.units]) for c in cubes])
saved_states = json.loads((WORK / "dock_states.json").read_text())
from napari_4dstem.widgets._state import dock_states

A.process(5.0)
now = json.loads(json.dumps(dock_states(v), default=str))
diffs = {}
for key, st in saved_states.items():
    st2 = now.get(key)
    if st2 is None:
        diffs[key] = "dock not restored"
        continue
    d = {f: (val, (st2.get("form") or {}).get(f)) for f, val in (st.get("form") or {}).items() if (st2.get("form") or {}).get(f) != val}
    d.update({f: (st.get(f), st2.get(f)) for f in st if f != "form" and st.get(f) != st2.get(f)})
    diffs[key] = d or "same"
A.measure("dock states saved vs fresh process", diffs)
ref = np.load(WORK / "results.npz")
names = sorted({k.split("::")[0] for k in ref.files})
for name in rl.names():
    m = mark(A, f"Recompute {name}")
    try:
        rl.select(name)
        A.process(0.2)
        click(rl.rerun_btn)
        ok = A.wait(lambda: name in rl.store.results and not rl.jobs.busy if hasattr(rl, "jobs") else name in rl.store.results, 600)
        A.process(0.5)
        mine = [ref[f"{name}::{k}"] for k in range(sum(1 for f in ref.files if f.startswith(name + "::")))]
        theirs = arrays_of(rl.store.results[name]) if name in rl.store.results else None
        after(A, f"Recompute in fresh process == first process: {name}", m, compare=compare(mine, theirs), s=ok,
              status=rl.status.text()[:200])
    except Exception:  # noqa
        A.measure(f"Recompute {name} RAISED (script)", traceback.format_exc()[-1200:])
A.shot("reloaded")
A.measure("loadavg end", os.getloadavg())
A.dump()
stalls.flush()
os._exit(0)
