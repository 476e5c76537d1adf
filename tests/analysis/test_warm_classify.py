"""The kernel warm-up covers Classification's feature kernels, per dtype (UX audit session 14, defect 4)."""

import subprocess
import sys
import textwrap

# Run in a fresh interpreter: kernels compiled by other tests of this session would hide a gap.
SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from napari_4dstem.analysis.classify import features as F
    from napari_4dstem.analysis.warm import CORE_STEPS, tiny_cube
    from napari_4dstem.data.datacube import DataCube

    kernels = {n: k for n, k in vars(F).items() if hasattr(k, "signatures") and hasattr(k, "py_func")}
    assert {"_pattern_block", "_polar_block", "_angular_block", "_fine_radial_block"} <= set(kernels), kernels

    def signatures():
        return {(n, str(s)) for n, k in kernels.items() for s in k.signatures}

    steps = [s for s in CORE_STEPS if "classify" in s.__name__]
    print("STEPS", [s.__name__ for s in steps])
    for dtype in (np.int8, np.uint32):  # TIA and DM int8/int32, ARINA uint32: none is uint16 or float32
        cube = tiny_cube(dtype)
        for step in steps:
            step(cube)
    warmed = signatures()
    # every feature kind the Classification dock offers, on a scan and detector of other shapes
    rng = np.random.default_rng(5)
    cubes = [
        DataCube(rng.integers(0, 100, shape).astype(dtype))
        for dtype in (np.int8, np.uint32)
        for shape in ((3, 2, 40, 56), (1, 1, 40, 56))  # a one-position scan: contiguous output slices
    ]
    for dc in cubes:
        for kind in F.FEATURE_KINDS:
            if kind == "bragg":
                continue
            job = F.iter_features(dc, F.FeatureParams(kind=kind))
            try:
                while True:
                    next(job)
            except StopIteration as stop:
                assert np.all(np.isfinite(stop.value.values)), kind
    print("NEW", sorted(signatures() - warmed))
    """
)


def test_warm_up_compiles_the_classification_feature_kernels_of_each_dtype():
    """After the warm-up's steps for a dtype, *Classify* on patterns of that dtype compiles no new kernel
    signature (the old warm-up had no classification step: the first *Classify* compiled them in its job)."""
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "STEPS ['warm_classify']" in out.stdout, out.stdout[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("NEW")]
    assert line == ["NEW []"], out.stdout[-3000:]
