"""The numba kernels' LLVM prefetch hint falls back to a no-op where it does not compile."""

import os
import subprocess
import sys

# In a fresh process with an empty numba cache (so the kernel really compiles): the intrinsic
# builder fails as a changed llvmlite or LLVM would make it, and the small-detector kernel
# (groups of four with the prefetch two groups on) must still give numpy's sums.
CODE = """
import numpy as np
from napari_4dstem.engine import kernels as K

def broken_builder(builder, ptr_type):
    raise RuntimeError("llvm.prefetch: no such intrinsic")

K._declare_prefetch = broken_builder
rng = np.random.default_rng(7)
block = rng.integers(0, 60000, size=(9, 13, 20, 24), dtype=np.uint16)  # 117 patterns
yy, xx = np.mgrid[:20, :24]
mask = (yy - 11.0) ** 2 + (xx - 9.5) ** 2 <= 9.0
rows = np.nonzero(mask.any(1))[0]
runs_r = rows.astype(np.int64)
runs_c0 = np.array([np.nonzero(mask[r])[0][0] for r in rows], np.int64)
runs_c1 = np.array([np.nonzero(mask[r])[0][-1] + 1 for r in rows], np.int64)
e = np.zeros((0, 0))
out = np.zeros((9, 13))
K.runs_sum_block(block, 0, runs_r, runs_c0, runs_c1, e, e, np.uint32(0), out, parallel=False)
ref = (block.astype(np.float64) * mask).sum(axis=(2, 3))
np.testing.assert_array_equal(out, ref)
assert K._prefetch_compiles() is False
print("noop-ok")
"""


def test_prefetch_hint_falls_back_to_noop(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    res = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "noop-ok"


def test_prefetch_hint_compiles_here():
    # the hint itself works on this numba/llvmlite (the fallback is for other versions)
    from napari_4dstem.engine import kernels

    assert kernels._prefetch_compiles() is True
