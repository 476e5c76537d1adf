"""Format fuzzing: seed files of every format, mutations of them, and an isolated runner.

Used by ``tests/io/test_fuzz_formats.py`` (a small sample, in the default test run) and by
``benchmarks/bench_fuzz.py`` (the full run, >= 4,000 inputs). Not collected by pytest.

Seeds: one small synthetic dataset per format, written here (so the suite runs anywhere), plus
the real detector files of ``shared/realdata`` where present. Mutations: truncations, appended
bytes, bytes deleted or inserted, byte flips and extreme integers in header regions, edited
numbers and lines in text headers and sidecars, FIFOs / ``/dev/zero`` symlinks / folders /
huge sparse files in place of the file or a sidecar, HDF5 datasets declaring huge sizes or
mapping missing sources, and random windows anywhere.

Each input runs in a worker process with a per-case timeout (a hang kills and restarts the
worker) and an address-space cap; the worker reports what happened and the peak resident
memory. Outcomes, per input:

- ``refused``: our error type (:class:`Napari4DSTEMError`) - the expected answer to garbage;
- ``opened``: the shape and the first and last patterns are compared with the seed's;
- ``foreign``: any other exception (a bug: the CLI would print a traceback);
- ``hang``: no answer within the timeout;
- ``overalloc``: peak memory above ``2 x input bytes + slack`` (or MemoryError under the cap);
- ``wrong_shape`` (of ``opened``): a different number of pixels than the seed, i.e. data
  silently dropped or invented. A different shape over the same bytes (a consistent edit of
  the header, e.g. the scan shape) is reported as ``reinterpreted``, and the same shape with
  other pixel values (a consistently edited dtype or offset) as ``data_differs``: neither can
  be told from a genuine file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "rosettasciio"
SRC = Path(os.environ.get("FUZZ_SRC") or Path(__file__).resolve().parents[2] / "src")

#: allowed peak memory per input: twice the input's bytes plus this (library overheads)
SLACK_BYTES = 32 * 2**20


# ------------------------------------------------------------------------------------------
# seeds
# ------------------------------------------------------------------------------------------
@dataclass
class Seed:
    """A dataset to mutate: its files (relative name -> bytes), the path to open and how."""

    name: str
    fmt: str
    files: dict[str, bytes]
    main: str
    kwargs: dict = field(default_factory=dict)
    #: (file, start, stop) byte ranges that are headers: mutations there are structural
    headers: list[tuple[str, int, int]] = field(default_factory=list)
    #: text files whose numbers and lines are edited
    text: list[str] = field(default_factory=list)
    #: extra sidecars to replace by FIFOs, devices...
    sidecars: list[str] = field(default_factory=list)
    #: HDF5 files (the declared-size mutations apply)
    hdf5: list[str] = field(default_factory=list)
    expected: dict | None = None


def _mib_seed(raw: bool = False) -> Seed:
    hb = 384
    if raw:
        n, w, h, ptype, depth = 4, 256, 256, "R64", 1
        rng = np.random.default_rng(5)
        payloads = [rng.integers(0, 256, w * h // 8, dtype=np.uint8).tobytes() for _ in range(n)]
    else:
        n, w, h, ptype, depth = 12, 16, 12, "U16", 12
        payloads = [(np.arange(h * w, dtype=">u2") + 7 * i).tobytes() for i in range(n)]
    blob = b""
    for i, pay in enumerate(payloads):
        head = (f"MQ1,{i + 1:06d},{hb:05d},01,{w:04d},{h:04d},{ptype},   1x1,01,"
                "2021-04-15 14:43:24.703250,0.001000,0,0,0," + ",".join(["2.0"] * 8)
                + f",3RX,MQ1A,2021-04-15T13:43:00.{i:02d}0000000Z,1000000ns,{depth},")  # fmt: skip
        blob += head.encode().ljust(hb, b"\0") + pay
    name = "raw1" if raw else "u16"
    files = {f"{name}.mib": blob}
    text = []
    kwargs = {"scan_shape": (2, 2)} if raw else {}
    if not raw:
        files[f"{name}.hdr"] = (
            "HDR,\t\nTime and Date Stamp (day, mnth, yr, hr, min, s):\t15/04/2021 14:43:24\n"
            f"Chip ID:\tW529_F5\nFrames in Acquisition (Number):\t{n}\n"
            "Frames per Trigger (Number):\t4\nCounter Depth (number):\t12\nEnd\t\n"
        ).encode()
        text.append(f"{name}.hdr")
    fb = hb + len(payloads[0])
    headers = [(f"{name}.mib", i * fb, i * fb + hb) for i in range(min(n, 3))]
    return Seed(f"mib-{name}", "mib", files, f"{name}.mib", kwargs, headers, text,
                sidecars=list(files)[1:])  # fmt: skip


def _npy_seed() -> Seed:
    import io

    a = (np.arange(3 * 4 * 8 * 6, dtype=np.uint16) * 3).reshape(3, 4, 8, 6)
    buf = io.BytesIO()
    np.save(buf, a)
    return Seed("npy", "npy", {"c.npy": buf.getvalue()}, "c.npy", {}, [("c.npy", 0, 128)])


def _raw_seed() -> Seed:
    hb, fh = 16, 4
    frames = (np.arange(12 * 8 * 6, dtype="<u2") * 5).reshape(12, 8 * 6)
    blob = b"H" * hb + b"".join(b"F" * fh + f.tobytes() for f in frames)
    kw = {"scan_shape": (3, 4), "detector_shape": (8, 6), "dtype": "<u2", "header_bytes": hb,
          "frame_header_bytes": fh}  # fmt: skip
    return Seed("raw", "raw", {"c.raw": blob}, "c.raw", kw, [("c.raw", 0, hb)])


def _blockfile_seed() -> Seed:
    fmt = "<6sHIIIHHHHHddIHId"
    dp, nx, ny, off = 8, 3, 2, 64
    hdr = struct.pack(fmt, b"IMGBLO", 0x0102, off, off, 0, dp, 0, nx, ny, 0, 1.5, 1.5, 200000,
                      100, 10, 0.0)  # fmt: skip
    hdr = hdr.ljust(off, b"\0")
    recs = b"".join(
        b"\xaa\x55" + struct.pack("<I", i) + ((np.arange(dp * dp) * (i + 1)) % 251).astype(np.uint8).tobytes()
        for i in range(nx * ny)
    )
    return Seed("blockfile", "blockfile", {"c.blo": hdr + recs}, "c.blo", {}, [("c.blo", 0, off)])


def _tia_seed() -> Seed:
    n, ny, nx, (sy, sx) = 12, 8, 6, (3, 4)
    frames = (np.arange(n * ny * nx, dtype="<i2") * 3).reshape(n, ny, nx)
    head = struct.pack("<HHHIIii", 0x4949, 0x0197, 0x0220, 0x4122, 0x4152, n, n)
    dims = b"".join(struct.pack("<iddii", size, 0.0, 1e-9, 0, 8) + b"Position" + struct.pack("<i", 1)
                    + b"m" for size in (sx, sy))  # fmt: skip
    table = len(head) + 8 + 4 + len(dims)
    pos = table + 16 * n
    rec = 50 + ny * nx * 2 + 8
    offsets = [pos + i * rec for i in range(n)]
    tags = [o + 50 + ny * nx * 2 for o in offsets]
    elems = b"".join(struct.pack("<ddiddihII", 0.0, 1e8, 0, 0.0, 1e8, 0, 5, nx, ny) + f.tobytes()
                     + struct.pack("<ii", 0x4152, i) for i, f in enumerate(frames))  # fmt: skip
    blob = head + struct.pack("<q", table) + struct.pack("<i", 2) + dims
    blob += np.array(offsets, "<q").tobytes() + np.array(tags, "<q").tobytes() + elems
    emi = b"<ObjectInfo><AcceleratingVoltage>300000</AcceleratingVoltage></ObjectInfo>"
    return Seed("tia", "tia", {"t.emi": emi, "t_1.ser": blob}, "t.emi", {},
                [("t_1.ser", 0, pos + 50)], ["t.emi"], ["t_1.ser"])  # fmt: skip


def _tvips_seed() -> Seed:
    n, ny, nx, fh = 12, 8, 6, 60
    head = struct.pack("<13I", 256, 2, nx, ny, 16, 0, 0, 1, 1, 15, 300, 80, fh).ljust(256, b"\0")
    frames = [struct.pack("<3I", i, 0, 0).ljust(fh, b"\0")
              + (np.arange(ny * nx, dtype="<u2") * (i + 1)).tobytes() for i in range(n)]  # fmt: skip
    # split in two files at a frame boundary, as the recorder does
    return Seed("tvips", "tvips", {"v_000.tvips": head + b"".join(frames[:5]),
                                   "v_001.tvips": b"".join(frames[5:])}, "v_000.tvips",
                {"scan_shape": (3, 4)}, [("v_000.tvips", 0, 52), ("v_000.tvips", 256, 256 + fh)], [],
                ["v_001.tvips"])  # fmt: skip


def _mrc_head(nx, ny, nz, mode=6) -> bytes:
    head = bytearray(1024)
    head[0:16] = np.array([nx, ny, nz, mode], "<i4").tobytes()
    head[208:212] = b"MAP "
    head[212:216] = b"\x44\x44\x00\x00"
    return bytes(head)


def _mrc_seeds() -> list[Seed]:
    n, ky, kx = 12, 5, 6
    data = (np.arange(n * ky * kx, dtype="<u2") * 3).tobytes()
    raster = Seed("mrc-raster", "mrc", {
        "r_movie.mrc": _mrc_head(kx, ky, n) + data,
        "r_info.txt": b"Scan - Enable = Enable\nScan - Type = Raster\nScan - Size X = 4\n"
                      b"Scan - Size Y = 3\nSpecimen Pixel Size X (nanometers) = 0.5\n"
                      b"Specimen Pixel Size Y (nanometers) = 0.5\n",
    }, "r_movie.mrc", {}, [("r_movie.mrc", 0, 1024)], ["r_info.txt"], ["r_info.txt"])  # fmt: skip
    order = np.random.default_rng(2).permutation(n)
    csv = "".join(f"{i % 4},{i // 4}\n" for i in order).encode()
    custom = Seed("mrc-custom", "mrc", {
        "c_movie.mrc": _mrc_head(kx, ky, n) + data,
        "c_info.txt": b"Scan - Enable = Enable\nScan - Type = Custom\n",
        "c_scan_coordinates.csv": csv,
    }, "c_movie.mrc", {}, [("c_movie.mrc", 0, 1024)], ["c_info.txt", "c_scan_coordinates.csv"],
        ["c_info.txt", "c_scan_coordinates.csv"])  # fmt: skip
    return [raster, custom]


def _empad_seed() -> Seed:
    n = 4
    raw = (np.arange(n * 130 * 128, dtype="<f4") % 1000).tobytes()
    xml = (
        b'<root><raw_file filename="scan_x2_y2.raw"/><pix_x>2</pix_x><pix_y>2</pix_y>'
        b"<iom_measurements><high_voltage>300000</high_voltage></iom_measurements></root>"
    )
    return Seed("empad", "empad", {"e.xml": xml, "scan_x2_y2.raw": raw}, "e.xml", {}, [],
                ["e.xml"], ["scan_x2_y2.raw"])  # fmt: skip


def _dm_seed() -> Seed:
    def word(v):
        return struct.pack(">Q", v)

    def tag(kind, label, body):
        lab = label.encode()
        return bytes([kind]) + struct.pack(">H", len(lab)) + lab + struct.pack(">Q", len(body)) + body

    def data(v):
        if isinstance(v, np.ndarray):
            info, payload = [20, 4, v.size], v.astype("<u2").tobytes()
        else:
            info, payload = [5], struct.pack("<I", v)
        return b"%%%%" + word(len(info)) + b"".join(word(i) for i in info) + payload

    def group(items):
        body = b"\x00\x01" + word(len(items))
        for label, v in items:
            body += tag(20, label, group(v)) if isinstance(v, list) else tag(21, label, data(v))
        return body

    a = (np.arange(3 * 4 * 5 * 6) * 7 % 60000).astype("<u2").reshape(3, 4, 5, 6)
    image = [("ImageData", [("Data", a.ravel()), ("Dimensions", [("", d) for d in a.shape[::-1]])])]
    root = group([("ImageList", [("", image)])])
    blob = struct.pack(">I", 4) + struct.pack(">Q", len(root)) + struct.pack(">I", 1) + root
    blob += b"\0" * 8
    start = blob.index(a.astype("<u2").tobytes())
    return Seed("dm4", "dm", {"c.dm4": blob}, "c.dm4", {}, [("c.dm4", 0, start)])


def _h5_bytes(write) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.h5"
        write(p)
        return p.read_bytes()


def _emd_seed() -> Seed:
    from napari_4dstem import DataCube
    from napari_4dstem.io import emd

    a = (np.arange(3 * 4 * 8 * 6, dtype=np.uint16) * 3).reshape(3, 4, 8, 6)
    blob = _h5_bytes(lambda p: emd.write(p, DataCube(a, name="cube")))
    return Seed("emd", "emd", {"c.h5": blob}, "c.h5", {}, [("c.h5", 0, 2048)], hdf5=["c.h5"])


def _p4legacy_seed() -> Seed:
    import h5py

    a = (np.arange(3 * 4 * 8 * 6, dtype=np.uint16) * 3).reshape(3, 4, 8, 6)

    def write(p):
        with h5py.File(p, "w") as f:
            top = f.create_group("4DSTEM_experiment")
            top.attrs.update({"emd_group_type": 2, "version_major": 0, "version_minor": 12})
            cube = top.create_group("data/datacubes/cube")
            cube.create_dataset("data", data=a)
            for i in range(1, 5):
                cube.create_dataset(f"dim{i}", data=np.arange(a.shape[i - 1]) * 0.5).attrs["units"] = "nm"

    return Seed("py4dstem-legacy", "py4dstem-legacy", {"l.h5": _h5_bytes(write)}, "l.h5", {},
                [("l.h5", 0, 2048)], hdf5=["l.h5"])  # fmt: skip


def _arina_seed() -> Seed:
    import h5py
    import hdf5plugin

    qy, qx, per = 8, 6, (8, 8)
    files = {}
    for i, n in enumerate(per, start=1):
        d = (np.arange(n * qy * qx, dtype=np.uint32) + 1000 * i).reshape(n, qy, qx)

        def w(p, d=d):
            with h5py.File(p, "w") as f:
                f.create_dataset("entry/data/data", data=d, chunks=(1, qy, qx),
                                 **hdf5plugin.Bitshuffle(cname="lz4"))  # fmt: skip

        files[f"s_data_{i:06d}.h5"] = _h5_bytes(w)

    def m(p):
        with h5py.File(p, "w") as f:
            f.create_group("entry/data")
            for i in range(1, len(per) + 1):
                f[f"entry/data/data_{i:06d}"] = h5py.ExternalLink(f"s_data_{i:06d}.h5", "/entry/data/data")
            det = f.create_group("entry/instrument/detector")
            det["description"] = b"Dectris ARINA"
            spec = det.create_group("detectorSpecific")
            spec["nimages"] = np.uint64(1)
            spec["ntrigger"] = np.uint64(sum(per))
            spec["pixel_mask"] = np.zeros((qy, qx), np.uint32)
            spec["flatfield"] = np.ones((qy, qx), np.float32)

    master = _h5_bytes(m)
    return Seed("arina", "arina", {"s_master.h5": master, **files}, "s_master.h5", {},
                [("s_master.h5", 0, 2048)], [], list(files), hdf5=["s_master.h5"])  # fmt: skip


def _zarr_seed() -> Seed:
    from napari_4dstem import DataCube
    from napari_4dstem.io import zarr_store

    a = (np.arange(3 * 4 * 8 * 6, dtype=np.uint16) * 3).reshape(3, 4, 8, 6)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.zarr"
        zarr_store.write(p, DataCube(a))
        files = {str(f.relative_to(Path(d))): f.read_bytes() for f in p.rglob("*") if f.is_file()}
    text = [k for k in files if k.endswith(".json")]
    return Seed("zarr", "zarr", files, "c.zarr", {}, [], text, [k for k in files if "/c/" in k][:2])


def _real_seeds() -> list[Seed]:
    if not REALDATA.is_dir():
        return []
    out = []
    qd = REALDATA / "quantumdetector" / "Merlin_navigation4x2_ROI"
    if (qd / "002_4x2_6bit_roi128.mib").is_file():
        fb = 384 + 256 * 128
        out.append(Seed("real-mib", "mib", {
            "m.mib": (qd / "002_4x2_6bit_roi128.mib").read_bytes()[: 8 * fb],
            "m.hdr": (qd / "002_4x2_6bit_roi128.hdr").read_bytes(),
        }, "m.mib", {}, [("m.mib", 0, 384), ("m.mib", fb, fb + 384)], ["m.hdr"], ["m.hdr"]))  # fmt: skip
    blo = REALDATA / "blockfile" / "test2.blo"
    if blo.is_file():
        out.append(Seed("real-blockfile", "blockfile", {"b.blo": blo.read_bytes()}, "b.blo", {},
                        [("b.blo", 0, 4120)]))  # fmt: skip
    mrcd = REALDATA / "mrc"
    if (mrcd / "20241021_00405_movie.mrc").is_file():
        out.append(Seed("real-mrc", "mrc", {
            "x_movie.mrc": (mrcd / "20241021_00405_movie.mrc").read_bytes(),
            "x_info.txt": (mrcd / "20241021_00405_info.txt").read_bytes(),
        }, "x_movie.mrc", {}, [("x_movie.mrc", 0, 1024)], ["x_info.txt"], ["x_info.txt"]))  # fmt: skip
    xml = REALDATA / "empad" / "map4x4.xml"
    if xml.is_file():
        raw = (np.arange(16 * 130 * 128, dtype="<f4") % 977).tobytes()
        out.append(Seed("real-empad", "empad", {"map4x4.xml": xml.read_bytes(),
                                                 "scan_x4_y4.raw": raw}, "map4x4.xml", {}, [],
                        ["map4x4.xml"], ["scan_x4_y4.raw"]))  # fmt: skip
    ar = REALDATA / "arina"
    if (ar / "test_00_master.h5").is_file():
        out.append(Seed("real-arina", "arina", {
            "test_00_master.h5": (ar / "test_00_master.h5").read_bytes(),
            "test_00_data_000001.h5": (ar / "test_00_data_000001.h5").read_bytes(),
        }, "test_00_master.h5", {}, [("test_00_master.h5", 0, 2048)], [],
            ["test_00_data_000001.h5"], hdf5=["test_00_master.h5"]))  # fmt: skip
    t = REALDATA / "tia" / "new"
    if (t / "128x128x5-diffraction_preview_1.ser").is_file():
        out.append(Seed("real-tia", "tia", {
            "d.emi": (t / "128x128x5-diffraction_preview.emi").read_bytes(),
            "d_1.ser": (t / "128x128x5-diffraction_preview_1.ser").read_bytes(),
        }, "d.emi", {}, [("d_1.ser", 0, 202)], [], ["d_1.ser"]))  # fmt: skip
    dmf = REALDATA / "digitalmicrograph" / "test_stackbuilder_imagestack.dm3"
    if dmf.is_file():
        blob = dmf.read_bytes()
        out.append(
            Seed("real-dm3", "dm", {"s.dm3": blob}, "s.dm3", {}, [("s.dm3", 0, 23704)])
        )  # fmt: skip  (the tag tree, before the stack's pixels)
    # No real TVIPS seed: rosettasciio's recordings have 100-byte frame records, the very size of
    # the mutator's deletions, so deleting 100 bytes of the main header's padding leaves a valid
    # recording one frame shorter (the format has no frame count). The synthetic split seed
    # (156-byte records) covers the reader; a missing middle part or a FIFO part is refused.
    e = REALDATA / "emd" / "py4DSTEM_size2x3x4x5.h5"
    if e.is_file():
        out.append(Seed("real-emd", "emd", {"p.h5": e.read_bytes()}, "p.h5", {}, [("p.h5", 0, 2048)],
                        hdf5=["p.h5"]))  # fmt: skip
    return out


def make_seeds(include_real: bool = True) -> list[Seed]:
    seeds = [_npy_seed(), _raw_seed(), _mib_seed(), _mib_seed(raw=True), _blockfile_seed(),
             *_mrc_seeds(), _empad_seed(), _dm_seed(), _tia_seed(), _tvips_seed(), _emd_seed(),
             _p4legacy_seed(), _arina_seed(), _zarr_seed()]  # fmt: skip
    if include_real:
        seeds += _real_seeds()
    return seeds


# ------------------------------------------------------------------------------------------
# mutations
# ------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One input: a seed with one mutation."""

    seed: Seed
    kind: str
    label: str
    files: dict[str, bytes | tuple]  # bytes, or ("fifo",), ("link", target), ("dir",), ("sparse", n)
    h5edit: str | None = None


def _replace_num(text: bytes, rng) -> Iterator[tuple[str, bytes]]:
    runs = list(re.finditer(rb"\d+", text))
    if not runs:
        return
    for m in rng.permutation(len(runs))[:40]:
        r = runs[int(m)]
        for new in (b"0", b"-1", b"1", b"2", b"99999999999", b"20000",
                    str(int(r.group()) + 1).encode(), b"")[: 3 + int(rng.integers(0, 6))]:  # fmt: skip
            yield f"num@{r.start()}={new.decode()}", text[: r.start()] + new + text[r.end() :]


def mutations(seed: Seed, rng: np.random.Generator) -> Iterator[Case]:
    """Every mutation of ``seed`` (a few hundred), in a deterministic order for ``rng``."""
    files = seed.files
    main = seed.main if seed.main in files else max(files, key=lambda k: len(files[k]))
    data_file = max(files, key=lambda k: len(files[k]))
    targets = dict.fromkeys([main, data_file])

    def with_(name, blob):
        return {**files, name: blob}

    # A. truncations
    for name in targets:
        b = files[name]
        hdr_end = max([s for f, _, s in seed.headers if f == name] or [min(64, len(b))])
        cuts = {0, 1, 3, 8, 64, hdr_end - 1, hdr_end, hdr_end + 1, len(b) // 2, len(b) - 1,
                len(b) - 7, *(int(x) for x in rng.integers(0, len(b), 10))}  # fmt: skip
        for c in sorted(x for x in cuts if 0 <= x < len(b)):
            yield Case(seed, "truncate", f"{name}[:{c}]", with_(name, b[:c]))
    # B. appended bytes
    for k in (1, 7, 100, 4096):
        yield Case(seed, "append", f"{data_file}+{k}", with_(data_file, files[data_file] + bytes(k)))
    # C. deleted / inserted bytes in the data region
    for name in targets:
        b = files[name]
        for _ in range(6):
            pos, k = int(rng.integers(0, len(b))), int(rng.choice([1, 2, 100]))
            yield Case(seed, "splice", f"{name} del {k}@{pos}", with_(name, b[:pos] + b[pos + k :]))
            yield Case(seed, "splice", f"{name} ins {k}@{pos}",
                       with_(name, b[:pos] + rng.integers(0, 256, k, dtype=np.uint8).tobytes() + b[pos:]))  # fmt: skip
    # D. header byte flips, E. extreme integers in headers
    regions = seed.headers or [(main, 0, min(256, len(files[main])))]
    for _ in range(80):
        f, s, e = regions[int(rng.integers(0, len(regions)))]
        b = bytearray(files[f])
        for _ in range(int(rng.integers(1, 5))):
            pos = int(rng.integers(s, min(e, len(b))))
            b[pos] = int(rng.integers(0, 256))
        yield Case(seed, "flip", f"{f} flips", with_(f, bytes(b)))
    extremes = [0, 1, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, 2**40, 2**63 - 1]
    for _ in range(60):
        f, s, e = regions[int(rng.integers(0, len(regions)))]
        b = bytearray(files[f])
        width = int(rng.choice([2, 4, 8]))
        pos = int(rng.integers(s, max(s + 1, min(e, len(b)) - width)))
        pos -= pos % width
        v = int(rng.choice(extremes)) % (2 ** (8 * width))
        b[pos : pos + width] = v.to_bytes(width, str(rng.choice(["little", "big"])))
        yield Case(seed, "int", f"{f} int{8 * width}@{pos}={v}", with_(f, bytes(b[: len(files[f])])))
    # F. numbers in text headers (and MIB's text frame header), G. lines
    texts = list(seed.text)
    if seed.fmt == "mib":
        texts.append(main)
    for f in texts:
        b = files[f]
        framed = seed.fmt == "mib" and f == main  # the text header of the first frame
        region = b[: seed.headers[0][2]] if framed else b
        for label, new in _replace_num(region, rng):
            yield Case(seed, "text", f"{f} {label}", with_(f, new + b[len(region) :]))
        if framed:
            continue
        lines = b.splitlines(keepends=True)
        yield Case(seed, "lines", f"{f} empty", with_(f, b""))
        yield Case(seed, "lines", f"{f} first line", with_(f, b"".join(lines[:1])))
        for _ in range(min(4, len(lines))):
            i = int(rng.integers(0, len(lines)))
            yield Case(seed, "lines", f"{f} -line{i}", with_(f, b"".join(lines[:i] + lines[i + 1 :])))
            yield Case(seed, "lines", f"{f} +line{i}", with_(f, b"".join(lines[: i + 1] + lines[i:])))
    # H. special files in place of the file, a sidecar or a sibling
    for name in dict.fromkeys([main, *seed.sidecars]):
        for special in (("fifo",), ("link", "/dev/zero"), ("dir",), ("link", "missing-target")):
            yield Case(seed, "special", f"{name} -> {special}", with_(name, special))
        if name != main:
            yield Case(seed, "special", f"{name} sparse 8 GiB", with_(name, ("sparse", 8 * 2**30)))
            yield Case(seed, "special", f"{name} missing", {k: v for k, v in files.items() if k != name})
    for sib in ("sib.xml", "sib.hdr", "sib_info.txt", "sib_scan_coordinates.csv"):
        yield Case(seed, "special", f"FIFO {sib}", {**files, sib: ("fifo",)})
        yield Case(seed, "special", f"/dev/zero {sib}", {**files, sib: ("link", "/dev/zero")})
    # I. HDF5 declared sizes and sources
    for f in seed.hdf5:
        for edit in ("huge-metadata", "huge-flatfield", "huge-stem-attr", "virtual-missing",
                     "huge-declared-cube", "string-bomb"):  # fmt: skip
            yield Case(seed, "hdf5", f"{f} {edit}", dict(files), h5edit=f"{f}:{edit}")
    # J. random windows anywhere (data included: only shapes and errors are judged)
    for _ in range(20):
        name = list(files)[int(rng.integers(0, len(files)))]
        b = bytearray(files[name])
        if not b:
            continue
        pos, k = int(rng.integers(0, len(b))), int(rng.integers(1, 64))
        b[pos : pos + k] = rng.integers(0, 256, len(b[pos : pos + k]), dtype=np.uint8).tobytes()
        yield Case(seed, "window", f"{name} window {k}@{pos}", with_(name, bytes(b)))


def _h5_apply(path: Path, edit: str) -> None:
    """Plant a declared-size or missing-source problem into an HDF5 file (h5py)."""
    import h5py

    with h5py.File(path, "a") as f:
        if edit == "huge-metadata":
            for _name, obj in list(f.items()):
                if isinstance(obj, h5py.Group):
                    g = obj.require_group("metadatabundle").require_group("fuzz")
                    d = g.create_dataset("big", shape=(2**29,), dtype="f8", chunks=(2**16,))
                    d.attrs["type"] = "array"
                    break
        elif edit == "huge-flatfield":
            spec = f.require_group("entry/instrument/detector/detectorSpecific")
            if "flatfield" in spec:
                del spec["flatfield"]
            spec.create_dataset("flatfield", shape=(2**16, 2**16), dtype="f8", chunks=(64, 64))
        elif edit == "huge-stem-attr":
            f.require_group("STEM Metadata").attrs["big"] = np.zeros(2**14)
            f.create_dataset("entry/instrument/detector/description_big", shape=(), dtype="S100000000")
        elif edit == "virtual-missing" or edit == "huge-declared-cube":
            target = None

            def visit(name, obj):
                nonlocal target
                if target is None and isinstance(obj, h5py.Dataset) and obj.ndim in (3, 4):
                    target = name

            f.visititems(visit)
            if target is None:
                return
            shape, dtype = f[target].shape, f[target].dtype
            attrs = dict(f[target].attrs)
            del f[target]
            if edit == "virtual-missing":
                layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
                layout[:] = h5py.VirtualSource("gone.h5", "d", shape=shape)
                d = f.create_virtual_dataset(target, layout, fillvalue=0)
            else:
                big = (2**20,) * (len(shape) - 2) + shape[-2:]
                d = f.create_dataset(target, shape=big, dtype=dtype, chunks=(1,) * (len(shape) - 2) + shape[-2:])
            for k, v in attrs.items():
                d.attrs[k] = v
        elif edit == "string-bomb":
            f.attrs["emd_group_type"] = "file"
            f.create_dataset("bomb", shape=(2**30,), dtype="S8", chunks=(2**20,))


def materialize(case: Case, folder: Path) -> None:
    """Write ``case``'s files into ``folder`` (FIFOs, links, folders and sparse files included)."""
    for rel, content in case.files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        elif content[0] == "fifo":
            os.mkfifo(p)
        elif content[0] == "link":
            os.symlink(content[1], p)
        elif content[0] == "dir":
            p.mkdir()
        elif content[0] == "sparse":
            with open(p, "wb") as fh:
                fh.truncate(content[1])
    if case.h5edit:
        rel, edit = case.h5edit.split(":", 1)
        with contextlib.suppress(Exception):
            _h5_apply(folder / rel, edit)


def input_bytes(folder: Path) -> int:
    """Bytes of the regular files of an input (sparse files count their holes as 0)."""
    total = 0
    for p in folder.rglob("*"):
        with contextlib.suppress(OSError):
            st = os.stat(p)  # follows links: /dev/zero is not a regular file and counts 0
            if p.is_file() and not p.is_symlink():
                total += min(st.st_size, st.st_blocks * 512)
    return total


# ------------------------------------------------------------------------------------------
# the worker (runs in a subprocess: `python fuzzing.py --worker`)
# ------------------------------------------------------------------------------------------
def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _digest(a) -> str:
    a = np.ascontiguousarray(np.asarray(a))
    return hashlib.sha256(a.tobytes() + str(a.dtype).encode() + str(a.shape).encode()).hexdigest()[:16]


def _run_one(req: dict) -> dict:
    from napari_4dstem._reader import get_reader
    from napari_4dstem.errors import Napari4DSTEMError
    from napari_4dstem.io import detect_format, open_datacube

    main, fmt, kwargs = req["main"], req["fmt"], req["kwargs"]
    if "scan_shape" in kwargs:
        kwargs["scan_shape"] = tuple(kwargs["scan_shape"])
    if "detector_shape" in kwargs:
        kwargs["detector_shape"] = tuple(kwargs["detector_shape"])
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (Linux >= 4.0)
    rss0 = _status("VmRSS")
    out: dict = {}
    t0 = time.perf_counter()
    try:
        detected = detect_format(main)  # must never raise
        out["detected"] = detected.name if detected else None
        get_reader(main)  # napari asks this about every file: must never raise
        dc = open_datacube(main, format=fmt, **kwargs)
        try:
            out.update(outcome="opened", shape=list(dc.shape), nbytes=int(dc.nbytes),
                       dtype=str(dc.dtype), p0=_digest(dc.pattern(0, 0)),
                       pl=_digest(dc.pattern(-1, -1)))  # fmt: skip
            out["visited"] = dc.metadata.get("visited")  # custom scans: frames placed
        finally:
            dc.close()
    except Napari4DSTEMError as e:
        out.update(outcome="refused", error=str(e)[:300])
    except MemoryError:
        out.update(outcome="overalloc", error="MemoryError under the address-space cap")
    except Exception as e:
        out.update(outcome="foreign", error=f"{type(e).__name__}: {str(e)[:300]}")
    out["secs"] = time.perf_counter() - t0
    out["peak"] = max(0, _status("VmHWM") - rss0)
    return out


def _warm_up() -> None:
    """Do once what the first input of each kind would otherwise pay for (lazy imports, thread
    pools, the HDF5 filter plugins, zarr), so a fresh worker measures the input, not itself."""
    import dask.array as da

    from napari_4dstem import DataCube
    from napari_4dstem.io import save_datacube

    cube = DataCube(np.arange(16, dtype=np.uint16).reshape(2, 2, 2, 2))
    DataCube(da.zeros((2, 2, 2, 2), chunks=1)).pattern(0, 0)
    with tempfile.TemporaryDirectory() as d:
        for ext in (".npy", ".h5", ".zarr"):
            p = save_datacube(Path(d) / f"w{ext}", cube)
            _run_one({"main": str(p), "fmt": None, "kwargs": {}})
        for s in (_arina_seed(), _mib_seed(raw=True)):
            folder = Path(d) / s.name
            folder.mkdir()
            materialize(Case(s, "seed", "seed", dict(s.files)), folder)
            _run_one({"main": str(folder / s.main), "fmt": s.fmt, "kwargs": dict(s.kwargs)})


def worker_main() -> None:  # pragma: no cover - runs in the subprocess
    import resource
    import warnings

    warnings.simplefilter("ignore")
    import h5py  # noqa: F401 - imported before the cap and the measurements
    import hdf5plugin  # noqa: F401

    import napari_4dstem.io  # noqa: F401

    if os.environ.get("FUZZ_WARM_UP", "1") == "1":
        _warm_up()
    with contextlib.suppress(Exception):
        cap = _status("VmSize") + int(os.environ.get("FUZZ_CAP_BYTES", str(3 * 2**30)))
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        res = _run_one(json.loads(line))
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


class Runner:
    """Runs inputs one at a time in a worker subprocess, with a timeout per input."""

    def __init__(self, timeout_s: float = 10.0, warm_up: bool = True):
        self.timeout_s = timeout_s
        self.warm_up = warm_up
        self.proc = None

    def _start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), *sys.path]),
               "FUZZ_WARM_UP": "1" if self.warm_up else "0"}  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True,
        )  # fmt: skip
        line = self._readline(120.0)
        if line != "ready":
            raise RuntimeError(f"fuzz worker did not start ({line!r})")

    def _readline(self, timeout: float) -> str | None:
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            return None
        return self.proc.stdout.readline().strip()

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def run(self, req: dict) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self._readline(self.timeout_s)
        if line is None:
            self.kill()
            return {"outcome": "hang", "secs": self.timeout_s, "peak": 0}
        if not line:  # the worker died (a signal: SIGBUS, SIGSEGV, killed for memory)
            code = self.proc.wait()
            self.proc = None
            return {"outcome": "crash", "error": f"worker died ({code})", "secs": 0, "peak": 0}
        return json.loads(line)


def expected_of(seed: Seed, runner: Runner, root: Path) -> dict:
    """What the unmutated seed opens as (it must open)."""
    case = Case(seed, "seed", "seed", dict(seed.files))
    res = run_case(case, runner, root, judge=False)
    if res["outcome"] != "opened":
        raise RuntimeError(f"seed {seed.name} does not open: {res}")
    return res


def run_case(case: Case, runner: Runner, root: Path, judge: bool = True) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="c-", dir=root))
    try:
        materialize(case, folder)
        size = input_bytes(folder)
        res = runner.run({"main": str(folder / case.seed.main), "fmt": case.seed.fmt,
                          "kwargs": dict(case.seed.kwargs)})  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    res.update(seed=case.seed.name, kind=case.kind, label=case.label, input_bytes=size)
    if judge:
        res["verdict"] = judge_result(case.seed.expected, res)
    return res


def judge_result(exp: dict, res: dict) -> str:
    """One verdict per input (see the module docstring)."""
    out = res["outcome"]
    if out in ("foreign", "hang", "crash", "overalloc"):
        return out
    if res.get("peak", 0) > 2 * res["input_bytes"] + SLACK_BYTES:
        return "overalloc"
    if out == "refused":
        return "refused"
    if res["nbytes"] != exp["nbytes"]:
        if res.get("visited") is not None and res.get("visited") == exp.get("visited"):
            return "reinterpreted"  # a custom scan grew: every frame placed, gaps read as 0
        return "wrong_shape"
    if res["shape"] != exp["shape"]:
        return "reinterpreted"
    if (res["p0"], res["pl"]) != (exp["p0"], exp["pl"]):
        return "data_differs"
    return "same"


BAD = ("foreign", "hang", "crash", "overalloc", "wrong_shape")


def all_cases(seeds: list[Seed], seed: int = 0) -> list[Case]:
    rng = np.random.default_rng(seed)
    return [c for s in seeds for c in mutations(s, rng)]


def summarize(results: list[dict]) -> dict:
    verdicts = Counter(r["verdict"] for r in results)
    by_seed: dict = {}
    for r in results:
        by_seed.setdefault(r["seed"], Counter())[r["verdict"]] += 1
    return {"inputs": len(results), "verdicts": dict(verdicts),
            "by_seed": {k: dict(v) for k, v in by_seed.items()},
            "bad": [r for r in results if r["verdict"] in BAD]}  # fmt: skip


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] == ["--worker"]:
        worker_main()
