import numpy as np

from napari_4dstem import DataCube
from napari_4dstem.analysis.virtual.detectors import (
    AnnulusDetector,
    DiskDetector,
    RectangleDetector,
)
from napari_4dstem.analysis.virtual.images import virtual_image
from napari_4dstem.analysis.virtual.preview import binned_detector, iter_preview_cube
from napari_4dstem.engine import run_job


def test_preview_is_exact_for_block_aligned_detectors_and_close_otherwise(rng):
    a = rng.poisson(4.0, (6, 7, 32, 36)).astype(np.uint16)
    dc = DataCube(a)
    prev = run_job(iter_preview_cube(dc, factor=4))
    assert prev.shape == (6, 7, 8, 9) and prev.dtype == np.uint32
    np.testing.assert_array_equal(prev.data, a.astype(np.uint32).reshape(6, 7, 8, 4, 9, 4).sum(axis=(3, 5)))
    rect = RectangleDetector((8, 20), (4, 28))  # block aligned: identical
    np.testing.assert_allclose(
        virtual_image(prev, binned_detector(rect, (32, 36), 4)).data, virtual_image(dc, rect).data
    )
    # a disk is not block aligned: the preview is the exact image up to its edge pixels
    disk = DiskDetector((15.3, 17.8), 7.0)
    p = virtual_image(prev, binned_detector(disk, (32, 36), 4)).data
    e = virtual_image(dc, disk).data
    assert np.corrcoef(p.ravel(), e.ravel())[0, 1] > 0.8
    assert abs(p.mean() / e.mean() - 1) < 0.05  # same expected counts (area preserved in mean)
    ann = AnnulusDetector((16.0, 18.0), 3.0, 12.0)
    assert virtual_image(prev, binned_detector(ann, (32, 36), 4)).data.shape == (6, 7)
