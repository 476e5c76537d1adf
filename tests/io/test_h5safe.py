"""Bounded HDF5 attribute/dataset reads (#19): variable-length references are checked against
the file's global heap before libhdf5 allocates their declared lengths."""

from __future__ import annotations

import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from napari_4dstem.errors import FileFormatError
from napari_4dstem.io import _h5safe, open_datacube
from napari_4dstem.io._h5safe import read_attr, read_dataset


def _gcol(blob: bytes) -> int:
    m = [x.start() for x in re.finditer(b"GCOL", blob)]
    assert m, "no global heap in the file"
    return m[0]


def _ref(length: int, addr: int, idx: int) -> bytes:
    return length.to_bytes(4, "little") + addr.to_bytes(8, "little") + idx.to_bytes(4, "little")


def _heap_index(blob: bytes, gcol: int, value: bytes) -> int:
    """The global heap index of the object holding ``value`` (walks the collection)."""
    pos = gcol + 16
    while True:
        idx = int.from_bytes(blob[pos : pos + 2], "little")
        size = int.from_bytes(blob[pos + 8 : pos + 16], "little")
        assert idx != 0, "value not in the heap"
        if blob[pos + 16 : pos + 16 + size] == value:
            return idx
        pos += 16 + ((size + 7) & ~7)


def _write(path, libver="earliest", userblock=0, n_attrs=2):
    kw = {"userblock_size": userblock} if userblock else {}
    with h5py.File(path, "w", libver=libver, **kw) as f:
        f.attrs["kind"] = "file"
        f.attrs["number"] = 7
        for i in range(n_attrs - 2):
            f.attrs[f"extra{i}"] = f"value {i}"
        g = f.create_group("g")
        g.attrs["tags"] = np.array(["alpha", "beta", "gamma"], dtype=h5py.string_dtype())


@pytest.mark.parametrize("libver,userblock", [("earliest", 0), ("latest", 0), ("earliest", 512)])
def test_attributes_read_exactly_through_our_header_parser(tmp_path, libver, userblock):
    p = tmp_path / "a.h5"
    _write(p, libver, userblock)
    with h5py.File(p, "r") as f:
        assert read_attr(f, "kind") == "file"
        assert read_attr(f, "number") == 7
        assert read_attr(f, "missing", "d") == "d"
        assert list(read_attr(f["g"], "tags")) == ["alpha", "beta", "gamma"]
        # the located raw references name the heap objects of the right lengths
        raw = _h5safe._Raw(f)
        try:
            data = _h5safe._attr_data(raw, _h5safe._addr(f["g"]), "tags", 3 * 16)
            assert [int.from_bytes(data[i * 16 : i * 16 + 4], "little") for i in range(3)] == [5, 4, 5]
        finally:
            raw.close()


def test_a_damaged_string_length_is_refused_before_libhdf5_allocates_it(tmp_path):
    # the fuzz case: 4 bytes of a v1 header's string reference edited; libhdf5 zeroes that many
    # bytes (2.2 GB) before it finds the heap object does not match
    p = tmp_path / "a.h5"
    _write(p)
    blob = bytearray(p.read_bytes())
    g = _gcol(blob)
    ref = _ref(4, g, _heap_index(blob, g, b"file"))
    assert blob.count(ref) == 1
    at = blob.index(ref)
    blob[at : at + 4] = (0x88000004).to_bytes(4, "little")
    p.write_bytes(bytes(blob))
    with h5py.File(p, "r") as f:
        with pytest.raises(FileFormatError, match="declares 2281701380 bytes, but its global heap object holds 4"):
            read_attr(f, "kind")
        assert read_attr(f, "number") == 7  # the other attributes still read


def test_the_refused_read_allocates_nothing(tmp_path):
    # in a fresh process: peak RSS stays near its start (libhdf5 alone would add 2.2 GB)
    p = tmp_path / "a.h5"
    _write(p)
    blob = bytearray(p.read_bytes())
    g = _gcol(blob)
    at = blob.index(_ref(4, g, _heap_index(blob, g, b"file")))
    blob[at : at + 4] = (0x88000004).to_bytes(4, "little")
    p.write_bytes(bytes(blob))
    code = (
        "import resource, h5py\n"
        "from napari_4dstem.io._h5safe import read_attr\n"
        "from napari_4dstem.errors import FileFormatError\n"
        f"f = h5py.File({str(p)!r}, 'r')\n"
        "r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    read_attr(f, 'kind')\nexcept FileFormatError:\n    print('refused')\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - r0) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = out.stdout.split()
    assert lines[0] == "refused", out.stderr[-500:]
    assert int(lines[1]) < 16  # MiB


@pytest.mark.parametrize("libver", ["earliest", "latest"])
def test_a_damaged_heap_object_or_collection_is_refused(tmp_path, libver):
    # the global heap has no checksum, so this also reaches files with v2 (checksummed) headers
    p = tmp_path / "a.h5"
    _write(p, libver)
    clean = p.read_bytes()
    g = _gcol(clean)
    obj = g + 16
    while clean[obj + 16 : obj + 20] != b"file":
        obj += 16 + ((int.from_bytes(clean[obj + 8 : obj + 16], "little") + 7) & ~7)
    blob = bytearray(clean)
    blob[obj + 8 : obj + 16] = (5000).to_bytes(8, "little")  # object runs past its collection
    p.write_bytes(bytes(blob))
    with h5py.File(p, "r") as f, pytest.raises(FileFormatError, match="runs past its collection"):
        read_attr(f, "kind")
    _h5safe._GCOLS.clear()
    blob = bytearray(clean)
    blob[g + 8 : g + 16] = (2**40).to_bytes(8, "little")  # collection size past the end
    p.write_bytes(bytes(blob))
    with h5py.File(p, "r") as f, pytest.raises(FileFormatError, match="declares 1099511627776 bytes, past the end"):
        read_attr(f, "kind")


@pytest.mark.parametrize("layout", ["contiguous", "compact", "chunked"])
def test_variable_length_datasets_are_checked_in_every_unfiltered_layout(tmp_path, layout):
    p = tmp_path / "d.h5"
    vals = np.array(["one", "three", "", "fifteen"], dtype=object)
    with h5py.File(p, "w") as f:
        dcpl_kw = {"chunks": (2,)} if layout == "chunked" else {}
        if layout == "compact":
            sid = h5py.h5s.create_simple((4,))
            plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            plist.set_layout(h5py.h5d.COMPACT)
            tid = h5py.h5t.py_create(h5py.string_dtype(), logical=True)
            h5py.h5d.create(f.id, b"s", tid, sid, dcpl=plist)
            f["s"][...] = vals
        else:
            f.create_dataset("s", data=vals, dtype=h5py.string_dtype(), **dcpl_kw)
        peaks = np.empty(2, dtype=object)
        peaks[0], peaks[1] = np.arange(3.0), np.arange(5.0)
        f.create_dataset("v", data=peaks, dtype=h5py.vlen_dtype(np.float64))
    with h5py.File(p, "r") as f:
        assert [x.decode() for x in read_dataset(f["s"])] == list(vals)
        v = read_dataset(f["v"])
        assert [list(x) for x in v] == [[0, 1, 2], [0, 1, 2, 3, 4]]
    blob = bytearray(p.read_bytes())
    g = _gcol(blob)
    ref = _ref(7, g, _heap_index(blob, g, b"fifteen"))
    assert blob.count(ref) == 1
    at = blob.index(ref)
    blob[at : at + 4] = (7 + 2**30).to_bytes(4, "little")
    p.write_bytes(bytes(blob))
    with h5py.File(p, "r") as f, pytest.raises(FileFormatError, match="element 3 declares 1073741831 bytes"):
        read_dataset(f["s"])


def test_what_cannot_be_checked_is_refused_not_read(tmp_path):
    p = tmp_path / "x.h5"
    _write(p, "latest", n_attrs=12)  # > 8 attributes: dense storage (a fractal heap)
    with h5py.File(p, "a") as f:
        f.create_dataset("z", data=np.array(["a", "b"], dtype=object), dtype=h5py.string_dtype(),
                         chunks=(1,), compression="gzip")  # fmt: skip
        f.create_dataset("n", data=np.arange(4))
    with h5py.File(p, "r") as f:
        assert read_attr(f, "number") == 7  # fixed-size attributes need no heap
        with pytest.raises(FileFormatError, match="cannot be checked"):
            read_attr(f, "kind")
        with pytest.raises(FileFormatError, match="cannot be checked"):
            read_dataset(f["z"])
        assert read_dataset(f["n"]).tolist() == [0, 1, 2, 3]
        assert list(read_attr(f["g"], "tags")) == ["alpha", "beta", "gamma"]  # g's own header


def test_emd_with_a_damaged_root_string_is_refused_with_our_error(tmp_path):
    from napari_4dstem import DataCube
    from napari_4dstem.io import save_datacube

    p = save_datacube(tmp_path / "c.h5", DataCube(np.arange(3 * 4 * 8 * 6, dtype=np.uint16).reshape(3, 4, 8, 6)))
    blob = bytearray(p.read_bytes())
    g = _gcol(blob)
    ref = _ref(4, g, _heap_index(blob, g, b"file"))
    at = blob.index(ref)
    blob[at : at + 4] = (0x88000004).to_bytes(4, "little")
    p.write_bytes(bytes(blob))
    with pytest.raises(FileFormatError, match="emd_group_type.*declares 2281701380 bytes"):
        open_datacube(p, format="emd")  # detection already says "not a 4D-STEM file"


def _isolated(path, timeout=60) -> str:
    """read_attr(f, 'kind') in a fresh process: a hang or a crash inside libhdf5 fails the test
    instead of ending pytest."""
    code = (
        "import h5py\n"
        "from napari_4dstem.io._h5safe import read_attr\n"
        "from napari_4dstem.errors import FileFormatError\n"
        f"f = h5py.File({str(path)!r}, 'r')\n"
        "try:\n    print('value', read_attr(f, 'kind'))\nexcept FileFormatError as e:\n    print('refused', e)\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hang"
    return out.stdout.strip() or f"died {out.returncode}"


def test_a_free_space_object_of_size_zero_is_refused_not_looped_on(tmp_path):
    # libhdf5 walks a collection object by object, free space included; a free-space object
    # whose size is 0 made that walk loop forever (a hang in detection, 100 % CPU)
    p = tmp_path / "a.h5"
    _write(p)
    blob = bytearray(p.read_bytes())
    g = _gcol(blob)
    csize = int.from_bytes(blob[g + 8 : g + 16], "little")
    pos = g + 16
    while int.from_bytes(blob[pos : pos + 2], "little") != 0:
        pos += 16 + ((int.from_bytes(blob[pos + 8 : pos + 16], "little") + 7) & ~7)
    assert int.from_bytes(blob[pos + 8 : pos + 16], "little") == g + csize - pos  # free space: the rest
    blob[pos + 8 : pos + 16] = bytes(8)
    p.write_bytes(bytes(blob))
    out = _isolated(p)
    assert out.startswith("refused") and "runs past its collection or is too short" in out, out


@pytest.mark.parametrize("bits", [0x0B, 0x48, 0xC2, 0x60])
def test_an_invalid_variable_length_kind_is_refused_not_crashed_on(tmp_path, bits):
    # the vlen datatype's kind nibble edited (0x01 'string' -> 11, 8, 2; or padding 6 on a
    # sequence): libhdf5 SIGSEGVed converting it (the fuzz's 3 crashes and 1 foreign error)
    p = tmp_path / "a.h5"
    _write(p)
    blob = bytearray(p.read_bytes())
    name = blob.index(b"kind\0")
    dt = name + 8  # v1 attribute message: the name padded to 8, then the datatype
    assert blob[dt] == 0x19 and blob[dt + 1] == 0x01  # version 1, class 9 (vlen), kind string
    blob[dt + 1] = bits
    p.write_bytes(bytes(blob))
    out = _isolated(p)
    assert out.startswith("refused") and "invalid variable-length datatype" in out, out
    plain = subprocess.run([sys.executable, "-c", f"import h5py; print(h5py.File({str(p)!r}, 'r').attrs['kind'])"],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    if bits != 0x60:  # what h5py alone does: dies of SIGSEGV (0x60 reads "file" as 4 integers)
        assert plain.returncode == -11
