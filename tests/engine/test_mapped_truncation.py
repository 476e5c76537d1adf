"""A memory-mapped file truncated by another program while open is refused with our error,
never a SIGBUS (#19): the engine checks the file's size before each block it hands a kernel
(and with SAFE_READS copies blocks out with pread, never touching mapped pages).

Each read runs in a fresh process, so a SIGBUS fails the test instead of ending pytest."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_4dstem.engine import chunks
from napari_4dstem.engine.chunks import mapped_file, read_mapped

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Windows refuses to truncate a mapped file")

_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from napari_4dstem.engine.driver import map_scan
    from napari_4dstem.engine.jobs import run_job
    from napari_4dstem.errors import FileFormatError
    from napari_4dstem.io import open_datacube

    def total(block, *, row0, parallel):  # a virtual image over the whole detector
        return block.sum(axis=(2, 3), dtype=np.float64)

    path, cut = sys.argv[1], int(sys.argv[2])
    dc = open_datacube(path)
    image = lambda: run_job(map_scan(dc, total, k_rows_exact=False, scan_chunk=(4, 16)))
    whole = image()  # all pages read once while the file is whole
    os.truncate(path, cut)  # "another program" shortens the file
    try:
        image()
        print("read", float(whole.sum()))
    except FileFormatError as e:
        print("refused", e)
    """
)


def _run(path, cut, safe: bool) -> tuple[int, str]:
    env = {**os.environ, "NAPARI_4DSTEM_SAFE_READS": "1" if safe else "0"}
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(path), str(cut)], capture_output=True,
                         text=True, timeout=300, env=env)  # fmt: skip
    return out.returncode, out.stdout.strip() + out.stderr[-400:]


@pytest.fixture
def cube():
    rng = np.random.default_rng(3)
    return rng.integers(0, 1000, (16, 16, 32, 32), dtype=np.uint16)


@pytest.mark.parametrize("safe", [False, True], ids=["checked-views", "pread"])
def test_truncated_npy_is_refused_not_sigbus(tmp_path, cube, safe):
    p = tmp_path / "c.npy"
    np.save(p, cube)
    code, out = _run(p, p.stat().st_size // 2, safe)
    assert code == 0, f"the reader died (signal {-code}): {out}"  # -7 is SIGBUS
    assert out.startswith("refused") and "was truncated while open" in out, out


@pytest.mark.parametrize("safe", [False, True], ids=["checked-views", "pread"])
def test_truncated_emd_direct_chunks_are_refused_not_sigbus(tmp_path, cube, safe):
    from napari_4dstem import DataCube
    from napari_4dstem.io import emd
    from napari_4dstem.io._h5direct import direct_reader

    p = tmp_path / "c.h5"
    emd.write(p, DataCube(cube, name="cube"))
    with emd.read_datacube(p) as dc:
        assert direct_reader(dc.data) is not None  # the mapped-chunk path is the one tested
    code, out = _run(p, p.stat().st_size // 2, safe)
    assert code == 0, f"the reader died (signal {-code}): {out}"
    assert out.startswith("refused") and "was truncated while open" in out, out


def test_pread_copies_equal_the_mapped_views_strided_ones_included(tmp_path, monkeypatch):
    # frames with 16-byte headers between them (as MIB/raw readers map them): views with gaps
    rng = np.random.default_rng(4)
    rec = np.dtype([("h", "V16"), ("f", "<u2", (8, 6))])
    data = np.zeros(24, rec)
    data["f"] = rng.integers(0, 60000, (24, 8, 6))
    p = tmp_path / "f.bin"
    p.write_bytes(b"\0" * 40 + data.tobytes())
    frames = np.memmap(p, dtype=rec, mode="r", offset=40, shape=(24,))["f"].reshape(4, 6, 8, 6)
    mf = mapped_file(frames)
    assert mf is not None and mapped_file(np.zeros(3)) is None
    for key in [(slice(None),) * 2, (slice(1, 3), slice(2, 5)), (slice(0, 4), slice(0, 6), slice(2, 5))]:
        view = frames[key]
        monkeypatch.setattr(chunks, "SAFE_READS", True)
        copy = read_mapped(view)
        assert mapped_file(copy) is None  # anonymous memory, not the map
        np.testing.assert_array_equal(copy, data["f"].reshape(4, 6, 8, 6)[key])
        monkeypatch.setattr(chunks, "SAFE_READS", False)
        assert read_mapped(view) is view  # the fast path: the view itself, checked
    os.truncate(p, 40 + 5 * rec.itemsize)
    from napari_4dstem.errors import FileFormatError

    with pytest.raises(FileFormatError, match="truncated while open"):
        read_mapped(frames[1:2])  # frames 6..11 are past the new end
    assert read_mapped(frames[0, :5]) is not None  # frames 0..4 are still in the file
    monkeypatch.setattr(chunks, "SAFE_READS", True)
    with pytest.raises(FileFormatError, match="truncated while open"):
        read_mapped(frames[1:2])


def test_plain_views_of_a_memmap_and_datacube_patterns_are_guarded(tmp_path, cube):
    from napari_4dstem.errors import FileFormatError
    from napari_4dstem.io import open_datacube

    p = tmp_path / "c.npy"
    np.save(p, cube)
    dc = open_datacube(p)
    plain = np.asarray(dc.data)[2:4]  # np.asarray drops the memmap class: found through .base
    assert not isinstance(plain, np.memmap) and mapped_file(plain) is not None
    pat = dc.pattern(15, 15)
    np.testing.assert_array_equal(pat, cube[15, 15])
    assert mapped_file(pat) is None  # a pread copy the caller may keep
    os.truncate(p, p.stat().st_size // 2)
    np.testing.assert_array_equal(pat, cube[15, 15])  # still readable after the truncation
    np.testing.assert_array_equal(dc.pattern(2, 3), cube[2, 3])  # still inside the file
    with pytest.raises(FileFormatError, match="truncated while open"):
        dc.pattern(15, 15)
    with pytest.raises(FileFormatError, match="truncated while open"):
        dc.region_pattern(slice(10, 16), slice(0, 16))
    with pytest.raises(FileFormatError, match="truncated while open"):
        read_mapped(np.asarray(dc.data)[12:])
    dc.close()
