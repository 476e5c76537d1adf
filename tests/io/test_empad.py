"""EMPAD reader: the real .xml headers with .raw files generated as rosettasciio's tests do."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from napari_4dstem.errors import FileFormatError
from napari_4dstem.io import detect_format, open_datacube

# (xml, raw file it names, frames) as in the realdata README; raw = np.arange(n * 130 * 128)
# as float32, frames of 130 x 128. Reference values derived once with rosettasciio 0.15.0
# (rsciio.empad.file_reader on the same generated files, in a side venv):
# (rsciio data shape, sha256 of its C-ordered float32 bytes, scan step in nm or None).
EMPAD = {
    "stack_images.xml": (
        "series_x10.raw",
        10,
        (10, 128, 128),
        "efad1918841aebf5691a879b69ba35be853afe126bb54384a778e6bb8cc6fff4",
        None,
    ),
    "map4x4.xml": (
        "scan_x4_y4.raw",
        16,
        (4, 4, 128, 128),
        "88657bd6f521a99df0a17ef99a846d2c6b42b8324759667d77434acff2d5bd79",
        1141.5856626420549,
    ),
    "EMPAD_v1.2.2_x32_y64_size0.8.xml": (
        "scan_x32_y64.raw",
        64 * 32,
        (64, 32, 128, 128),
        "ef2d5eae4f493fd5953339ef225c0788a1107519e0d64bd8803d4dd743f4f1f1",
        27.613115051205376,
    ),
}


def _make(realdata, tmp_path, xml, n_frames=None):
    raw, n, *_ = EMPAD[xml]
    shutil.copy(realdata / "empad" / xml, tmp_path / xml)
    np.arange((n_frames or n) * 130 * 128).astype("float32").tofile(tmp_path / raw)
    return tmp_path / xml, tmp_path / raw


@pytest.mark.parametrize("xml", sorted(EMPAD))
def test_empad_matches_rosettasciio(realdata, tmp_path, xml):
    path, raw = _make(realdata, tmp_path, xml)
    _, _, shape, sha, step_nm = EMPAD[xml]
    assert detect_format(path).name == "empad"
    assert detect_format(raw).name == "empad"
    dc = open_datacube(path)
    assert dc.dtype == np.dtype("<f4")
    assert dc.shape == ((1, *shape) if len(shape) == 3 else shape)
    assert isinstance(dc.data, np.ndarray)  # memmap view, metadata rows skipped without copy
    data = np.ascontiguousarray(dc.data)
    assert hashlib.sha256(data.tobytes()).hexdigest() == sha
    # the two metadata rows are skipped: frame 1 starts at element 130 * 128
    assert data.reshape(-1, 128, 128)[1, 0, 0] == np.float32(130 * 128)
    if step_nm is None:
        assert dc.calibration.scan_step is None
    else:
        assert dc.calibration.scan_units == "nm"
        assert dc.calibration.scan_step == pytest.approx((step_nm, step_nm))
        assert dc.calibration.beam_energy_kev == 300.0


def test_empad_calibration_and_override(realdata, tmp_path):
    path, _ = _make(realdata, tmp_path, "map4x4.xml")
    dc = open_datacube(path)
    assert dc.calibration.k_units == "mrad"
    assert dc.calibration.k_pixel_size == pytest.approx(0.42906574394463665)  # header: rad * 1000
    dc = open_datacube(path, scan_shape=(2, 8))
    assert dc.shape == (2, 8, 128, 128)


def test_empad_bad_input(realdata, tmp_path):
    path, raw = _make(realdata, tmp_path, "map4x4.xml", n_frames=12)
    with pytest.raises(FileFormatError, match=r"scan_x4_y4\.raw.*promises 16 frames.*holds 12"):
        open_datacube(path)
    raw.write_bytes(raw.read_bytes()[:-100])
    with pytest.raises(FileFormatError, match="not a whole number of EMPAD frames"):
        open_datacube(path)
    raw.unlink()
    with pytest.raises(FileFormatError, match=r"scan_x4_y4\.raw is missing"):
        open_datacube(path)
    # a header that names neither a scan nor a series
    bad = tmp_path / "noscan.xml"
    bad.write_text('<root><raw_file filename="data.raw"/></root>')
    np.zeros(6 * 130 * 128, dtype="float32").tofile(tmp_path / "data.raw")
    with pytest.raises(FileFormatError, match=r"pass scan_shape=\(ny, nx\)"):
        open_datacube(bad)
    assert open_datacube(bad, scan_shape=(2, 3)).shape == (2, 3, 128, 128)
