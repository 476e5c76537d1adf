"""Gatan DM3/DM4 files written by DigitalMicrograph itself (``shared/realdata``), against the
values the instrument software was told to write.

The 3D stacks ``3D/test-<DataType>.dm3|dm4`` were made by a DigitalMicrograph script
(rosettasciio's ``generate_dm_testing_files.py``): ``NewImage("test", DataType, 2, 2, 2)`` with
the eight pixels set to 1..8, saved with ``SaveAsGatan``. rosettasciio 0.15.0 reads each as the
C-ordered array ``arange(1, 9).reshape(2, 2, 2)`` in the pixel type (RGB pixels with
R = G = B = value, A = 0; bool pixels all True); so must we. ``test-5``/``27``/``28`` asked for
packed complex, which DigitalMicrograph saved as plain complex (DataType 3 and 13).
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem.cli import main
from napari_4dstem.errors import FileFormatError
from napari_4dstem.io import detect_format, dm, open_datacube

# requested DataType -> numpy dtype of the pixels (DigitalMicrograph's scripting reference)
PIXEL = {1: "<i2", 2: "<f4", 3: "<c8", 5: "<c8", 6: "u1", 7: "<i4", 9: "i1", 10: "<u2",
         11: "<u4", 12: "<f8", 13: "<c16", 14: "?", 8: "rgba", 23: "rgba", 27: "<c8",
         28: "<c16"}  # fmt: skip
DM3_KEYS = [k for k in PIXEL if k not in (27, 28)]
STACKS = [(k, 3) for k in DM3_KEYS] + [(k, 4) for k in PIXEL]  # 14 + 16 = 30 files
REAL_TYPES = {k for k, v in PIXEL.items() if v not in ("rgba",) and "c" not in v}


def _expected(key: int) -> np.ndarray:
    vals = np.arange(1, 9).reshape(2, 2, 2)
    if PIXEL[key] == "rgba":
        out = np.zeros((2, 2, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])
        out["R"] = out["G"] = out["B"] = vals
        return out
    return vals.astype(PIXEL[key])


@pytest.mark.parametrize(("key", "version"), STACKS, ids=[f"test-{k}.dm{v}" for k, v in STACKS])
def test_dm_stack_every_pixel_type(realdata, key, version):
    path = realdata / "digitalmicrograph" / "3D" / f"test-{key}.dm{version}"
    assert detect_format(path).name == "dm"
    images = dm.list_images(path)
    assert [im.dims for im in images] == [(64, 64), (2, 2, 2)]  # the RGB thumbnail, the stack
    assert images[0].data_type == 23
    got = dm.read_image(path)
    want = _expected(key)
    assert isinstance(got, np.memmap) and got.shape == (2, 2, 2)
    if PIXEL[key] == "rgba":
        for ch in "RGBA":
            np.testing.assert_array_equal(got[ch], want[ch])
    else:
        assert got.dtype == np.dtype(PIXEL[key])
        np.testing.assert_array_equal(got, want)
    if key in REAL_TYPES:
        dc = open_datacube(path)
        assert dc.shape == (1, 2, 2, 2) and dc.dtype == np.dtype(PIXEL[key])
        assert isinstance(dc.data, np.memmap)
        np.testing.assert_array_equal(np.asarray(dc.data)[0], want)
        np.testing.assert_array_equal(open_datacube(path, scan_shape=(2, 1)).data[1, 0], want[1])
    else:
        with pytest.raises(FileFormatError, match=r"not detector intensities .*read_image"):
            open_datacube(path)


def test_dm_stack_builder(realdata):
    """A DigitalMicrograph StackBuilder image stack: three 2 x 16 uint32 STEM frames."""
    path = realdata / "digitalmicrograph" / "test_stackbuilder_imagestack.dm3"
    (im,) = [i for i in dm.list_images(path) if len(i.dims) == 3]
    assert im.shape == (3, 2, 16) and im.dtype == np.dtype("<u4") and im.name
    dc = open_datacube(path)
    assert dc.shape == (1, 3, 2, 16) and dc.dtype == np.dtype("<u4")
    # the memmap is exactly the stored bytes after the Data tag's header
    raw = np.frombuffer(path.read_bytes(), "<u4", count=96, offset=im.offset).reshape(3, 2, 16)
    np.testing.assert_array_equal(np.asarray(dc.data)[0], raw)
    # scale in µm is real space: no detector (reciprocal) calibration is invented from it
    assert dc.calibration.k_pixel_size is None


@pytest.mark.parametrize(
    ("name", "shape", "dtype"),
    [("test_diffraction_pattern.dm3", (87, 87), "<i4"), ("test_STEM_image.dm3", (68, 68), "<u4")],
)
def test_dm_2d_images_refused(realdata, name, shape, dtype):
    path = realdata / "digitalmicrograph" / "2D" / name
    assert dm.read_image(path).shape == shape and dm.read_image(path).dtype == np.dtype(dtype)
    with pytest.raises(FileFormatError, match=rf"{name}: holds no 3D or 4D image .*{shape}"):
        open_datacube(path)


def test_dm_eels_spectrum_image_refused(realdata):
    path = realdata / "digitalmicrograph" / "3D" / "EELS_SI.dm4"
    img = dm.read_image(path)
    assert img.shape == (2048, 2, 2) and img.dtype == np.dtype("<f4")
    with pytest.raises(FileFormatError, match=r"EELS_SI\.dm4: holds a EELS spectrum image"):
        open_datacube(path)


def test_dm_info_cli(realdata, capsys):
    path = realdata / "digitalmicrograph" / "3D" / "test-10.dm4"
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "(dm)" in out and "(1, 2, 2, 2)" in out and "uint16" in out
