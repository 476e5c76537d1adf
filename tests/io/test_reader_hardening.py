"""Readers validate declared sizes, cap eager reads, open only regular files and check frame
headers (#19 items 4, 5, 6, 9). Each test plants one malformation and expects our error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tracemalloc

import h5py
import numpy as np
import pytest

from napari_4dstem import DataCube
from napari_4dstem.errors import FileFormatError, Napari4DSTEMError
from napari_4dstem.io import detect_format, emd, mib, open_datacube, save_datacube

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")


def _mib_file(path, n=6, width=16, height=12, ptype="U16", depth=12):
    hb = 384
    dt = {"U16": ">u2", "U08": "u1"}[ptype]
    frames = np.arange(n * height * width).reshape(n, height, width).astype(dt)
    with open(path, "wb") as fh:
        for i, fr in enumerate(frames):
            head = (f"MQ1,{i + 1:06d},{hb:05d},01,{width:04d},{height:04d},{ptype},   1x1,01,"
                    f"2021-04-15 14:43:24.703250,0.001000,0,0,0," + ",".join(["2.0"] * 8)
                    + f",3RX,MQ1A,2021-04-15T13:43:00.{i:02d}0000000Z,1000000ns,{depth},")  # fmt: skip
            fh.write(head.encode().ljust(hb, b"\0"))
            fh.write(fr.tobytes())
    return frames


def _in_subprocess(code: str, timeout: float = 60) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=timeout, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_fifos_and_devices_are_never_opened(tmp_path):
    # a FIFO as the file, a FIFO named *.xml beside a .raw, a sibling symlinked to /dev/zero:
    # each used to hang or read forever; run in a subprocess so a regression fails, not hangs
    fifo = tmp_path / "pipe.mib"
    os.mkfifo(fifo)
    (tmp_path / "data.raw").write_bytes(b"\0" * 1000)
    os.mkfifo(tmp_path / "hdr.xml")
    if os.path.exists("/dev/zero"):
        os.symlink("/dev/zero", tmp_path / "zero.xml")
        os.symlink("/dev/zero", tmp_path / "zero.h5")
    out = _in_subprocess(f"""
        from pathlib import Path
        from napari_4dstem._reader import get_reader
        from napari_4dstem.io import detect_format, open_datacube
        from napari_4dstem.errors import FileFormatError
        d = Path({str(tmp_path)!r})
        for name in ["pipe.mib", "data.raw", "hdr.xml", "zero.xml", "zero.h5"]:
            if not (d / name).exists() and not (d / name).is_symlink():
                continue
            assert detect_format(d / name) is None, name
            assert get_reader(str(d / name)) is None, name
            try:
                open_datacube(d / name)
            except FileFormatError as e:
                print(name, "refused:", e)
        """, timeout=60)  # fmt: skip
    assert "pipe.mib refused" in out and "is not a regular file" in out


def test_mib_frame_headers_are_checked(tmp_path):
    p = tmp_path / "a.mib"
    frames = _mib_file(p)
    np.testing.assert_array_equal(np.asarray(open_datacube(p).data)[0], frames)
    blob = bytearray(p.read_bytes())
    # width edited 16 -> 8: the records no longer line up with the headers
    edited = tmp_path / "w.mib"
    edited.write_bytes(bytes(blob).replace(b",0016,0012,", b",0008,0012,", 1))
    with pytest.raises(FileFormatError, match="frame 1 does not start with a Merlin header"):
        open_datacube(edited)
    # 100 bytes dropped inside frame 2, opened with allow_truncated: later frames misaligned
    fb = 384 + 16 * 12 * 2
    dropped = tmp_path / "d.mib"
    dropped.write_bytes(bytes(blob[: 2 * fb + 500] + blob[2 * fb + 600 :]))
    with pytest.raises(FileFormatError, match="does not start with a Merlin header"):
        open_datacube(dropped, allow_truncated=True)
    with pytest.raises(FileFormatError, match="truncated"):
        open_datacube(dropped)


def test_mib_raw_1bit_opens_lazily(tmp_path):
    # 1-bit RAW frames are decoded through dask: opening must not read (or copy) the file
    n, w = 64, 256
    p = tmp_path / "raw.mib"
    hb = 384
    with open(p, "wb") as fh:
        for i in range(n):
            head = (f"MQ1,{i + 1:06d},{hb:05d},01,{w:04d},{w:04d},R64,   1x1,01,2021-04-15 "
                    "14:43:24.703250,0.001000,0,0,0," + ",".join(["2.0"] * 8)
                    + f",3RX,MQ1A,2021-04-15T13:43:00.{i:02d}0000000Z,1000000ns,1,")  # fmt: skip
            fh.write(head.encode().ljust(hb, b"\0"))
            fh.write(b"\x55" * (w * w // 8))
    DataCube(np.zeros((2, 2, 2, 2))).to_dask()  # dask imported outside the measurement
    tracemalloc.start()
    dc = open_datacube(p, scan_shape=(8, 8))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert dc.shape == (8, 8, 256, 256)
    assert peak < n * w * w / 4, peak  # decoded size 4 MiB; before the fix dask copied it all
    assert np.asarray(dc.pattern(7, 7)).sum() == w * w // 2


def test_mrc_and_blockfile_sizes_must_match(tmp_path):
    from napari_4dstem.io import blockfile, mrc

    head = bytearray(1024)
    head[0:16] = np.array([6, 5, 8, 6], "<i4").tobytes()
    head[208:212] = b"MAP "
    data = np.arange(8 * 5 * 6, dtype="<u2").tobytes()
    p = tmp_path / "s.mrc"
    p.write_bytes(bytes(head) + data)
    assert open_datacube(p).shape == (1, 8, 5, 6)
    head[8:12] = np.array([4], "<i4").tobytes()  # NZ edited 8 -> 4: half the frames would vanish
    p.write_bytes(bytes(head) + data)
    with pytest.raises(FileFormatError, match="longer than its header says"):
        mrc.read_datacube(p)
    # blockfile: scan 2 x 3 edited to 2 x 2; records must start with 0x55AA
    import struct

    hdr = struct.pack(blockfile._FMT, b"IMGBLO", 0x0102, 64, 64, 0, 4, 0, 3, 2, 0, 1.0, 1.0,
                      200000, 100, 10, 0.0)  # fmt: skip
    recs = b"".join(b"\xaa\x55" + struct.pack("<I", i) + bytes(range(i, i + 16)) for i in range(6))
    b = tmp_path / "a.blo"
    b.write_bytes(hdr + recs)
    assert open_datacube(b).shape == (2, 3, 4, 4)
    b.write_bytes(hdr.replace(struct.pack("<HH", 3, 2), struct.pack("<HH", 2, 2), 1) + recs)
    with pytest.raises(FileFormatError, match="longer than its header says"):
        open_datacube(b)
    b.write_bytes(hdr + recs[:30] + b"\0" + recs[30:-1])  # one byte inserted, one lost
    with pytest.raises(FileFormatError, match="0x55AA"):
        open_datacube(b)


def test_header_calibration_that_is_not_valid_opens_uncalibrated(tmp_path):
    # a blockfile header's scan step and beam energy become the calibration; a step that
    # Calibration refuses opens the data uncalibrated instead of failing
    import struct

    from napari_4dstem.data.calibration import Calibration
    from napari_4dstem.io import blockfile

    recs = b"".join(b"\xaa\x55" + struct.pack("<I", i) + bytes(range(i, i + 16)) for i in range(6))

    def blo(name, step_nm):
        hdr = struct.pack(blockfile._FMT, b"IMGBLO", 0x0102, 64, 64, 0, 4, 0, 3, 2, 0, step_nm, 1.5,
                          200000, 100, 10, 0.0)  # fmt: skip
        path = tmp_path / name
        path.write_bytes(hdr + recs)
        return blockfile.read_datacube(path).calibration

    good = blo("good.blo", 2.5)
    assert good.scan_step == (1.5, 2.5) and good.scan_units == "nm" and good.beam_energy_kev == 200.0
    # a negative step is not read (the energy stays); an infinite one is, and Calibration refuses it
    assert blo("negative.blo", -2.5) == Calibration(beam_energy_kev=200.0)
    assert blo("infinite.blo", float("inf")) == Calibration()


def _de_movie(tmp_path, n=12):
    head = bytearray(1024)
    head[0:16] = np.array([4, 3, n, 6], "<i4").tobytes()
    head[208:212] = b"MAP "
    p = tmp_path / "x_movie.mrc"
    p.write_bytes(bytes(head) + np.arange(n * 12, dtype="<u2").tobytes())
    (tmp_path / "x_info.txt").write_text("Scan - Enable = Enable\nScan - Type = Random\n")
    return p


def test_de_scan_coordinates_are_validated(tmp_path):
    p = _de_movie(tmp_path)
    csv = tmp_path / "x_scan_coordinates.csv"
    csv.write_text("".join(f"{i % 4},{i // 4}\n" for i in range(12)))
    assert open_datacube(p).shape == (3, 4, 3, 4)
    csv.write_text("0,0\n")  # one line for 12 frames: 11 frames would be dropped
    with pytest.raises(FileFormatError, match="lists 1 positions but the movie has 12 frames"):
        open_datacube(p)
    csv.write_text("".join(f"{i % 4},{i // 4}\n" for i in range(11)) + "20000,20000\n")
    with pytest.raises(FileFormatError, match="corrupt coordinates"):
        open_datacube(p)  # used to allocate a 20001 x 20001 index (3.2 GB)
    with open(csv, "wb") as fh:  # a huge sidecar is not read
        fh.truncate(2**33)
    with pytest.raises(FileFormatError, match="too large"):
        open_datacube(p)


def test_emd_declared_sizes_are_capped(tmp_path):
    p = tmp_path / "m.h5"
    save_datacube(p, DataCube(np.ones((2, 3, 4, 5), np.uint8)))
    with h5py.File(p, "a") as f:
        root = next(iter(k for k in f if isinstance(f[k], h5py.Group)))
        node = next(iter(emd._walk(f))).path
        bundle = f[node].require_group("metadatabundle")
        g = bundle.require_group("evil")
        d = g.create_dataset("big", shape=(2**29,), dtype="f8", chunks=(2**16,))  # 4 GiB declared
        d.attrs["type"] = "array"
        assert root
    assert p.stat().st_size < 10**6
    with pytest.raises(FileFormatError, match="declares 4294967296 bytes"):
        open_datacube(p)


def test_emd_virtual_dataset_with_missing_source(tmp_path):
    p = tmp_path / "v.h5"
    save_datacube(p, DataCube(np.ones((2, 3, 4, 5), np.uint8)))
    src = tmp_path / "src.h5"
    with h5py.File(src, "w") as f:
        f["d"] = np.full((2, 3, 4, 5), 7, np.uint8)
    with h5py.File(p, "a") as f:
        node = emd._walk(f)[0].path
        del f[node]["data"]
        layout = h5py.VirtualLayout(shape=(2, 3, 4, 5), dtype=np.uint8)
        layout[:] = h5py.VirtualSource("src.h5", "d", shape=(2, 3, 4, 5))
        f[node].create_virtual_dataset("data", layout, fillvalue=0)
    assert int(np.asarray(open_datacube(p).data).max()) == 7
    src.unlink()
    with pytest.raises(FileFormatError, match="maps the missing file src.h5"):
        open_datacube(p)


def test_emd_registers_hdf5plugin_filters(tmp_path):
    # a Blosc2-compressed EMD must open in a fresh process that never opened an ARINA file
    hdf5plugin = pytest.importorskip("hdf5plugin")
    p = tmp_path / "b.h5"
    save_datacube(p, DataCube(np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 3, 4, 5)))
    with h5py.File(p, "a") as f:
        node = emd._walk(f)[0].path
        a = f[node]["data"][()]
        del f[node]["data"]
        f[node].create_dataset("data", data=a, chunks=(1, 3, 4, 5), **hdf5plugin.Blosc2())
    out = _in_subprocess(f"""
        import sys
        from napari_4dstem.io import open_datacube
        assert "hdf5plugin" not in sys.modules
        dc = open_datacube({str(p)!r})
        print(int(dc.pattern(1, 2).sum()))
        """)  # fmt: skip
    assert int(out) == int(np.arange(120, dtype=np.int64).reshape(2, 3, 4, 5)[1, 2].sum())


def test_close_releases_direct_chunk_maps(tmp_path):
    from napari_4dstem.io._h5direct import _CACHE, direct_reader

    p = tmp_path / "c.h5"
    save_datacube(p, DataCube(np.ones((4, 4, 6, 6), np.uint16)))
    dc = open_datacube(p)
    reader = direct_reader(dc.data)
    assert reader is not None and not reader.closed
    dc.close()
    assert reader.closed
    assert not any(k[0] == str(p) for k in _CACHE)


def test_dm_fields_past_the_end_are_refused(tmp_path):
    # a DM string tag declaring 2**40 bytes: refused before any read (no huge allocation)
    import struct

    body = b"\x00\x01" + struct.pack(">I", 1)
    tag = b"%%%%" + struct.pack(">I", 2) + struct.pack(">II", 18, 2**31)
    body += bytes([21]) + struct.pack(">H", 1) + b"s" + tag
    p = tmp_path / "x.dm3"
    p.write_bytes(struct.pack(">III", 3, len(body), 1) + body)
    with pytest.raises(FileFormatError, match="runs past the end"):
        open_datacube(p)


def test_malformed_library_errors_become_ours(tmp_path):
    # an HDF5 file cut in half: h5py's errors arrive as our FileFormatError, one line
    p = tmp_path / "t.h5"
    save_datacube(p, DataCube(np.ones((4, 4, 6, 6), np.uint16)))
    blob = p.read_bytes()
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(Napari4DSTEMError):
        open_datacube(p, format="emd")
    with pytest.raises(Napari4DSTEMError, match="does not take these options"):
        open_datacube(p, format="emd", bogus=1)
    assert detect_format(tmp_path / "missing.h5") is None
    assert mib.is_mib(tmp_path) is False


def test_zarr_store_checks(tmp_path):
    import json

    a = np.arange(4 * 4 * 6 * 6, dtype=np.uint16).reshape(4, 4, 6, 6)
    p = save_datacube(tmp_path / "c.zarr", DataCube(a))
    np.testing.assert_array_equal(np.asarray(open_datacube(p).data[:]), a)
    meta = p / "datacube" / "zarr.json"
    doc = json.loads(meta.read_text())
    chunk = next(f for f in (p / "datacube").rglob("*") if f.is_file() and f.name != "zarr.json")
    blob = chunk.read_bytes()
    # the array's shape edited smaller: data would vanish silently
    meta.write_text(json.dumps({**doc, "shape": [2, 4, 6, 6]}))
    with pytest.raises(FileFormatError, match="differs from the shape written|outside"):
        open_datacube(p)
    meta.write_text(json.dumps(doc))
    # a chunk replaced by a FIFO (would hang the first read) or lost (would read as zeros)
    chunk.unlink()
    os.mkfifo(chunk)
    with pytest.raises(FileFormatError, match="not a regular file"):
        open_datacube(p)
    chunk.unlink()
    with pytest.raises(FileFormatError, match="chunks of .* are present"):
        open_datacube(p)
    # a corrupt chunk: zarr's codec error arrives as our error when the data is read
    chunk.write_bytes(blob[:-5] + b"\xff" * 5)
    dc = open_datacube(p)
    with pytest.raises(FileFormatError, match="cannot read zarr data"):
        np.asarray(dc.data[:])


def test_emd_unwritten_datacube_and_header_scan_shapes(tmp_path):
    p = tmp_path / "u.h5"
    save_datacube(p, DataCube(np.ones((2, 3, 4, 5), np.uint8)))
    with h5py.File(p, "a") as f:
        node = emd._walk(f)[0].path
        del f[node]["data"]
        f[node].create_dataset("data", shape=(2**20, 2**20, 4, 5), dtype="u1", chunks=(1, 1, 4, 5))
    assert p.stat().st_size < 10**6
    with pytest.raises(FileFormatError, match="stored: the file was not completely written"):
        open_datacube(p)
    # a header scan shape with fewer positions than frames drops frames: refused, with a hint
    from napari_4dstem.io._helpers import check_scan_shape

    with pytest.raises(FileFormatError, match=r"scan_shape=\(3, 4\)"):
        check_scan_shape(p, 13, None, guess=(3, 4))
    assert check_scan_shape(p, 12, None, guess=(3, 4)) == (3, 4)
    assert check_scan_shape(p, 13, (3, 4), guess=(9, 9)) == (3, 4)  # the user's choice


def test_corrupt_bitshuffle_chunk_is_an_error_not_a_crash(tmp_path):
    # a block size inside a compressed ARINA frame pointing past the chunk's end crashed the
    # native filter (SIGSEGV); the framing is now checked first. Run in a subprocess: if the
    # check regresses, the child dies and the test fails instead of the test run.
    hdf5plugin = pytest.importorskip("hdf5plugin")
    data = np.random.default_rng(1).poisson(2.0, (6, 16, 16)).astype(np.uint32)
    with h5py.File(tmp_path / "s_data_000001.h5", "w") as f:
        f.create_dataset("entry/data/data", data=data, chunks=(1, 16, 16),
                         **hdf5plugin.Bitshuffle(cname="lz4"))  # fmt: skip
    with h5py.File(tmp_path / "s_master.h5", "w") as f:
        f.create_group("entry/data")
        f["entry/data/data_000001"] = h5py.ExternalLink("s_data_000001.h5", "/entry/data/data")
        det = f.create_group("entry/instrument/detector")
        det["description"] = b"Dectris ARINA"
        spec = det.create_group("detectorSpecific")
        spec["nimages"], spec["ntrigger"] = np.uint64(1), np.uint64(6)
    with open_datacube(tmp_path / "s_master.h5", scan_shape=(2, 3)) as dc:
        np.testing.assert_array_equal(np.asarray(dc.data), data.reshape(2, 3, 16, 16))
    with h5py.File(tmp_path / "s_data_000001.h5", "r") as f:
        offset = f["entry/data/data"].id.get_chunk_info(4).byte_offset
    with open(tmp_path / "s_data_000001.h5", "r+b") as fh:
        fh.seek(offset + 12)
        fh.write(b"\xb9\x1c\xc4\x1b")  # the first block's size: 3.1 GB
    out = _in_subprocess(f"""
        import numpy as np
        from napari_4dstem.errors import FileFormatError
        from napari_4dstem.io import open_datacube
        dc = open_datacube({str(tmp_path / "s_master.h5")!r}, scan_shape=(2, 3))
        print("opened")
        try:
            dc.pattern(1, 1)
        except FileFormatError as e:
            print("refused:", e)
        dc.close()
        """)  # fmt: skip
    assert out.startswith("opened") and "compressed frame 4" in out and "is corrupt" in out
