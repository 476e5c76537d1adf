"""The kernel warm-up covers the Virtual imaging dock's binned drag preview (#15, audit s13 defect 5)."""

import subprocess
import sys
import textwrap

# Run in a fresh interpreter: kernels compiled by other tests of this session would hide a gap.
SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from napari_4dstem.engine import kernels as K
    from napari_4dstem.analysis.warm import CORE_STEPS, tiny_cube
    from napari_4dstem.analysis.virtual.detectors import AnnulusDetector, DiskDetector
    from napari_4dstem.analysis.virtual.images import iter_virtual_image, virtual_image
    from napari_4dstem.analysis.virtual.preview import binned_detector, iter_preview_cube
    from napari_4dstem.data.datacube import DataCube

    def signatures():
        return {
            (n, str(s))
            for n, k in vars(K).items() if isinstance(k, K.Kernel)
            for s in (*k.parallel.signatures, *k.serial.signatures)
        }

    def run(gen):
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            return stop.value

    cube = tiny_cube(np.uint16)
    for step in CORE_STEPS[: [s.__name__ for s in CORE_STEPS].index("warm_com")]:  # the steps before CoM
        step(cube)
    warmed = signatures()
    # what the dock does on a large in-RAM uint16 cube while a detector is dragged: the exact image,
    # and the image through the block-mean detector on the 4x-binned copy
    dc = DataCube(np.random.default_rng(3).integers(0, 60, (12, 10, 64, 64), dtype=np.uint16))
    preview = run(iter_preview_cube(dc, factor=4))
    for det in (DiskDetector((30.5, 33.0), 9.0), AnnulusDetector((32.0, 32.0), 10.0, 25.0)):
        exact = virtual_image(dc, det)
        approx = run(iter_virtual_image(preview, binned_detector(det, dc.detector_shape, 4)))
        # the preview is the image of the same detector, up to its edges: a correlation near 1
        r = np.corrcoef(np.ravel(exact.data), np.ravel(approx.data))[0, 1]
        assert r > 0.5, r
    new = signatures() - warmed
    print("NEW", sorted(new))
    """
)


def test_virtual_warm_steps_compile_the_drag_preview_kernels():
    """After the warm-up's virtual-imaging steps, the drag's exact and preview images compile no new
    kernel signature: the first drag never waits on numba's compiler (the old warm-up left the
    preview's uint32 ``weighted_sum_block`` to the first drag)."""
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("NEW")]
    assert line == ["NEW []"], out.stdout[-3000:]
