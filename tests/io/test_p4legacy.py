"""py4DSTEM 0.9-0.13 HDF5 layouts, on files written here from py4DSTEM's legacy-reader layouts
(no real pre-0.14 file is available; the real 0.14 file is tested in test_emd.py)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from napari_4dstem.cli import main
from napari_4dstem.errors import FileFormatError
from napari_4dstem.io import detect_format, open_datacube


def _v12(path, data, *, minor=12, dims=True):
    with h5py.File(path, "w") as f:
        top = f.create_group("4DSTEM_experiment")
        top.attrs.update({"emd_group_type": 2, "version_major": 0, "version_minor": minor})
        for g in ("datacubes", "counted_datacubes", "diffractionslices", "realslices"):
            top.create_group(f"data/{g}")
        top["data/diffractionslices"].create_group("mean").create_dataset("data", data=data[0, 0])
        cube = top.create_group("data/datacubes/scan")
        cube.create_dataset("data", data=data, chunks=(1, 1, *data.shape[2:]))
        if dims:
            for i, (step, name, units) in enumerate(
                [(0.5, "R_x", "[n_m]"), (0.5, "R_y", "[n_m]"), (0.02, "Q_x", "[A^-1]"),
                 (0.02, "Q_y", "[A^-1]")], start=1):  # fmt: skip
                d = cube.create_dataset(f"dim{i}", data=np.arange(data.shape[i - 1]) * step)
                d.attrs.update({"name": name, "units": units})
    return path


def _v13(path, data):
    with h5py.File(path, "w") as f:
        root = f.create_group("experiment")
        root.attrs.update({"emd_group_type": "root", "version_major": 0, "version_minor": 13})
        cube = root.create_group("datacube")
        cube.attrs.update({"emd_group_type": 1, "py4dstem_class": "DataCube"})
        cube.create_dataset("data", data=data).attrs["units"] = "pixel intensity"
        for i in range(4):
            cube.create_dataset(f"dim{i}", data=[0.0, 1.0]).attrs.update({"name": "x", "units": "pixels"})
        cal = cube.create_group("_metadata/calibration")
        cal.attrs.update({"emd_group_type": 0, "py4dstem_class": "Calibration"})
        for k, v, t in [("R_pixel_size", 1.25, "number"), ("Q_pixel_size", 0.031, "number"),
                        ("R_pixel_units", b"nm", "string"), ("Q_pixel_units", b"A^-1", "string"),
                        ("QR_flip", False, "bool")]:  # fmt: skip
            cal.create_dataset(k, data=v).attrs["type"] = t
    return path


@pytest.fixture
def cube():
    return (np.arange(3 * 4 * 5 * 6) * 7 % 1000).astype(np.uint16).reshape(3, 4, 5, 6)


@pytest.mark.parametrize("minor", [9, 12])
def test_py4dstem_v09_to_v12(tmp_path, cube, minor):
    p = _v12(tmp_path / "old.h5", cube, minor=minor)
    assert detect_format(p).name == "py4dstem-legacy"
    with open_datacube(p) as dc:
        assert isinstance(dc.data, h5py.Dataset) and dc.name == "scan"
        np.testing.assert_array_equal(dc.data[()], cube)
        assert dc.calibration.scan_step == (0.5, 0.5) and dc.calibration.scan_units == "nm"
        assert dc.calibration.k_pixel_size == pytest.approx(0.02) and dc.calibration.k_units == "1/A"
        assert dc.metadata["format"] == f"py4DSTEM 0.{minor} HDF5"
    with open_datacube(_v12(tmp_path / "nodims.h5", cube, dims=False)) as dc:
        assert dc.calibration.scan_step is None and dc.calibration.k_pixel_size is None


def test_py4dstem_v13(tmp_path, cube, capsys):
    p = _v13(tmp_path / "v13.h5", cube)
    assert detect_format(p).name == "py4dstem-legacy"
    with open_datacube(p) as dc:
        np.testing.assert_array_equal(dc.data[()], cube)
        assert dc.calibration.scan_step == (1.25, 1.25) and dc.calibration.scan_units == "nm"
        assert dc.calibration.k_pixel_size == 0.031 and dc.calibration.k_units == "1/A"
    assert main(["info", str(p)]) == 0
    assert "(py4dstem-legacy)" in capsys.readouterr().out


def test_py4dstem_legacy_refusals(tmp_path, cube):
    p = _v12(tmp_path / "old.h5", cube)
    with pytest.raises(FileFormatError, match=r"no datacube named 'nope' \(datacubes: \['/4DSTEM"):
        open_datacube(p, node="nope")
    with h5py.File(p, "a") as f:
        del f["4DSTEM_experiment/data/datacubes/scan"]
    with pytest.raises(FileFormatError, match=r"old\.h5: py4DSTEM 0\.12 file with no 4D datacube"):
        open_datacube(p)
    newer = tmp_path / "v8.h5"
    _v12(newer, cube, minor=8)  # 0.8 and older: another layout, not claimed
    assert detect_format(newer) is None


def test_py4dstem_legacy_unwritten_cube_refused(tmp_path, cube):
    p = _v12(tmp_path / "empty.h5", cube)
    with h5py.File(p, "a") as f:
        g = f["4DSTEM_experiment/data/datacubes/scan"]
        del g["data"]
        g.create_dataset("data", shape=(300, 300, 256, 256), dtype="u2", chunks=(1, 1, 256, 256))
    with pytest.raises(FileFormatError, match=r"empty\.h5: datacube .* has only 0 of its 90000 chunks stored"):
        open_datacube(p)
