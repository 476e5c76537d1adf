"""The formats of #22 through the napari reader (layer tuples; napari itself is not needed):
each real file opens as one lazy 4D image layer holding the frames the format reader decodes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem._reader import get_reader
from napari_4dstem.io import open_datacube

CASES = [
    ("digitalmicrograph/test_stackbuilder_imagestack.dm3", (1, 3, 2, 16)),
    ("digitalmicrograph/3D/test-12.dm4", (1, 2, 2, 2)),
    ("tia/new/128x128x5-diffraction_preview.emi", (1, 5, 128, 128)),
    ("tia/new/128x128x5-diffraction_preview_1.ser", (1, 5, 128, 128)),
    ("tvips/test_tvips_2345_split_001.tvips", (1, 6, 4, 5)),
    ("emd/py4DSTEM_size2x3x4x5.h5", (2, 3, 4, 5)),
]


@pytest.mark.parametrize(("rel", "shape"), CASES, ids=[c[0].split("/")[-1] for c in CASES])
def test_napari_reader_opens_new_formats(realdata, rel, shape):
    path = realdata / rel
    read = get_reader(str(path))
    assert callable(read)
    (layer,) = read(str(path))
    data, kwargs, kind = layer
    assert kind == "image" and tuple(data.shape) == shape
    want = np.asarray(open_datacube(path).data)
    np.testing.assert_array_equal(np.asarray(data), want)
    cal = kwargs["metadata"]["napari_4dstem"]["calibration"]
    if rel.startswith("tia"):  # detector calibrated in 1/A: the layer's k scale says so
        assert kwargs["scale"][-1] == pytest.approx(cal.k_pixel_size)
        assert str(kwargs["units"][-1]) == "inverse_angstrom"  # Å⁻¹ (Calibration.napari_kwargs)
