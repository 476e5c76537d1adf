"""The exact virtual image without numba (``kernel="numpy"``: the napari dock's first image while
numba still compiles the kernels of a new dtype, #15) against the numba kernels and naive numpy."""

import numpy as np
import pytest

from napari_4dstem.analysis.virtual.detectors import (
    AnnulusDetector,
    DiskDetector,
    MaskDetector,
    RectangleDetector,
    WedgeDetector,
)
from napari_4dstem.analysis.virtual.images import virtual_images
from napari_4dstem.data.datacube import DataCube
from napari_4dstem.engine.jobs import run_job


def _images(dc, dets, kernel):
    from napari_4dstem.analysis.virtual.images import iter_virtual_images

    return run_job(iter_virtual_images(dc, dets, kernel=kernel)).data


@pytest.mark.parametrize("dtype", ["int32", "uint8", "uint16", ">u2", "float32"])
def test_numpy_sums_equal_the_kernels_and_naive_numpy(dtype, rng, tmp_path):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    hi = 250 if info is None else min(int(info.max), 2**20)
    lo = -1000 if np.dtype(dtype).kind == "i" else 0
    data = rng.integers(lo, hi, (5, 7, 40, 44)).astype(dtype)
    if np.dtype(dtype).kind == "f":
        data = data + rng.random(data.shape).astype(dtype)
    weights = rng.random((40, 44))
    dets = [
        DiskDetector((19.5, 22.0), 8.0),
        AnnulusDetector((20.0, 21.0), 9.0, 17.0),
        RectangleDetector((3, 11), (30, 42)),
        WedgeDetector((20.0, 22.0), 4.0, 18.0, 10.0, 100.0),
        MaskDetector(weights),
    ]
    path = tmp_path / "cube.npy"
    np.save(path, data)
    for arr in (data, np.load(path, mmap_mode="r")):  # in memory and a memory map
        dc = DataCube(arr)
        fast = _images(dc, dets, "numpy")
        kern = _images(dc, dets, "numba")
        naive = np.stack(
            [np.tensordot(data.astype(np.float64), d.render((40, 44)).astype(np.float64), 2) for d in dets], -1
        )
        if np.dtype(dtype).kind in "iu":
            # integer data, binary detectors: every product and sum exact in float64, equal to the bit
            np.testing.assert_array_equal(fast[..., :4], kern[..., :4])
            np.testing.assert_array_equal(fast[..., :4], naive[..., :4])
            # float weights: the summation order differs, so equal to rounding
            np.testing.assert_allclose(fast[..., 4], kern[..., 4], rtol=1e-12)
            np.testing.assert_allclose(fast[..., 4], naive[..., 4], rtol=1e-12)
        else:
            np.testing.assert_allclose(fast, kern, rtol=1e-6)
            np.testing.assert_allclose(fast, naive, rtol=1e-6)
    assert virtual_images(DataCube(data), dets[:1]).data.shape == (5, 7, 1)


def test_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match="kernel"):
        _images(DataCube(np.zeros((2, 2, 8, 8), np.uint8)), [DiskDetector((4, 4), 2)], "cuda")
