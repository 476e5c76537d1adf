"""Raw binary reader, and a fuzz test: malformed headers give FileFormatError, never a crash."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_4dstem.errors import FileFormatError
from napari_4dstem.io import FORMATS, detect_format, open_datacube

from .conftest import REALDATA


def test_raw_binary_layouts(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 2**16, size=(4, 6, 10, 12), dtype=np.uint16).astype(">u2")
    p = tmp_path / "scan.bin"
    with open(p, "wb") as fh:
        fh.write(b"H" * 100)
        for frame in data.reshape(-1, 10, 12):
            fh.write(b"h" * 8 + frame.tobytes() + b"f" * 4)
    assert detect_format(p) is None  # nothing to sniff in a raw file
    kw = dict(format="raw", scan_shape=(4, 6), detector_shape=(10, 12), dtype=">u2",
              header_bytes=100, frame_header_bytes=8, frame_footer_bytes=4)  # fmt: skip
    dc = open_datacube(p, **kw)
    assert dc.dtype == np.dtype(">u2") and isinstance(dc.data, np.ndarray)
    np.testing.assert_array_equal(np.asarray(dc.data), data)
    with pytest.raises(FileFormatError, match=r"scan\.bin: the layout needs"):
        open_datacube(p, **{**kw, "frame_footer_bytes": 0})
    with pytest.raises(FileFormatError, match=r"pass a scan_shape=\(ny, nx\)"):
        open_datacube(p, **{**kw, "scan_shape": (5, 6)})
    with pytest.raises(FileFormatError, match="needs scan_shape, dtype"):
        open_datacube(p, format="raw", detector_shape=(10, 12))
    part = open_datacube(p, **{**kw, "scan_shape": (2, 6), "allow_extra_bytes": True})
    np.testing.assert_array_equal(np.asarray(part.data), data[:2])


# -- fuzz ------------------------------------------------------------------------------------
def _seeds() -> dict[str, bytes]:
    """Real file heads to mutate (small files whole, large ones cut to a few frames)."""
    if not REALDATA.is_dir():
        return {}
    qd = REALDATA / "quantumdetector"
    files = {
        "a.mib": (qd / "Merlin_navigation4x2_ROI/002_4x2_6bit_roi128.mib", 3 * (384 + 256 * 128)),
        "b.mib": (qd / "Merlin_Single_Quad/Quad_1_Frame_CounterDepth_1_Rows_256RAW.mib", None),
        "c.blo": (REALDATA / "blockfile/test2.blo", None),
        "d.mrc": (REALDATA / "mrc/20241021_00405_movie.mrc", None),
        "e.xml": (REALDATA / "empad/map4x4.xml", None),
    }
    return {k: p.read_bytes()[:n] if n else p.read_bytes() for k, (p, n) in files.items()}


SEEDS = _seeds()
_TMP = Path(tempfile.mkdtemp(prefix="n4d-fuzz-"))


def _check(name: str, blob: bytes) -> None:
    p = _TMP / name
    p.write_bytes(blob)
    if name.endswith(".xml"):  # EMPAD: give the header a raw file to point at
        (_TMP / "scan_x4_y4.raw").write_bytes(b"\0" * (16 * 130 * 128 * 4))
    for fmt in FORMATS:
        assert fmt.detect(str(p)) in (True, False)
    for fmt in FORMATS:
        if fmt.name in ("raw", "emd", "npy", "zarr"):
            continue
        try:
            dc = open_datacube(p, format=fmt.name)
        except FileFormatError:
            continue
        # opened: the shape must be consistent with the data it reads
        pat = dc.pattern(0, 0)
        assert pat.shape == dc.detector_shape
        dc.close()


@pytest.mark.skipif(not SEEDS, reason=f"real detector files not found at {REALDATA}")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(SEEDS) or ["none"]),
    edits=st.lists(st.tuples(st.integers(0, 2047), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 4096)),
)
def test_fuzz_readers_raise_only_file_format_error(name, edits, cut):
    blob = bytearray(SEEDS[name])
    for pos, val in edits:  # mutate header bytes (the first 2 kB)
        if pos < len(blob):
            blob[pos] = val
    if cut is not None:
        blob = blob[: min(len(blob), cut)]
    _check(name, bytes(blob))


@pytest.mark.skipif(not SEEDS, reason=f"real detector files not found at {REALDATA}")
@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(sorted(SEEDS) or ["none"]),
    header=st.binary(min_size=0, max_size=1200),
)
def test_fuzz_random_headers(name, header):
    blob = SEEDS[name]
    _check(name, header + blob[len(header) :])


def teardown_module():
    for f in _TMP.iterdir():
        os.remove(f)
    _TMP.rmdir()
