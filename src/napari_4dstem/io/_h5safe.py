"""Bounded reads of HDF5 attributes and small datasets (#19).

h5py allocates an attribute's or dataset's declared shape before it reads it, and libhdf5
allocates (and zeroes) each variable-length element's declared length before it looks the
element up in the global heap: a 4-byte length damaged inside a 17 KB file made libhdf5 ask
for 2.2 GB, then fail with "Expected global heap object size does not match". Neither can be
bounded from Python once the read has started, so before every eager read we check, from the
file's own bytes:

* the declared size (elements x item size) against the file's size (:func:`check_eager`);
* for variable-length data (h5py's ``str`` attributes, vlen sequences), every element's
  reference ``(length, collection address, object index)``: the global heap collection must
  be a ``GCOL`` lying inside the file, and hold that object with exactly that many bytes.

The raw reference bytes are found by parsing the object header ourselves (versions 1 and 2,
continuation chunks; attribute messages 1-3; compact and contiguous dataset layouts).
Attributes in dense storage (objects with many attributes in files written with
``libver="latest"``) are found in their fractal heap. Variable-length data we cannot locate
(filtered chunked datasets, shared attribute messages, huge dense heaps) or nested
variable-length types are refused with a :class:`FileFormatError` rather than read
unchecked. Readers use :func:`read_attr` and :func:`read_dataset` instead of ``attrs[...]`` and
``dset[()]``.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from typing import Any

import h5py
import numpy as np

from ..errors import FileFormatError
from ._helpers import check_eager

__all__ = ["check_dataset", "read_attr", "read_dataset"]

_MAX_HEADER = 16 * 2**20  # bytes of object header we are willing to walk for one object
_MAX_CHUNKS = 4096
_MAX_HEAP_OBJECTS = 1 << 20
_UNDEF = (1 << 64) - 1
# index of global heap collections already walked: (dev, ino, size, mtime_ns, addr) -> {idx: size}
_GCOLS: OrderedDict = OrderedDict()
_GCOLS_LOCK = threading.Lock()


class _Bad(Exception):
    """The file's own bytes do not allow the check (corrupt header or heap)."""


class _Raw:
    """The file's bytes, read with ``pread`` on our own descriptor (bounded, never mapped)."""

    def __init__(self, f: h5py.File):
        self.path = f.filename
        fcpl = f.id.get_create_plist()
        self.sa, self.sl = fcpl.get_sizes()  # sizes of offsets and lengths in this file
        self.base = int(fcpl.get_userblock())
        self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
        st = os.fstat(self.fd)
        self.size = st.st_size
        self.key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def close(self) -> None:
        os.close(self.fd)

    def read(self, rel_addr: int, n: int) -> bytes:
        """``n`` bytes at ``rel_addr`` (relative to the base address), all inside the file."""
        a = self.base + rel_addr
        if n < 0 or rel_addr < 0 or rel_addr >= _UNDEF or a + n > self.size:
            raise _Bad(f"{n} bytes at address {rel_addr} lie past the end of the file ({self.size} bytes)")
        b = os.pread(self.fd, n, a)
        if len(b) != n:
            raise _Bad(f"short read at address {rel_addr}")
        return b

    def uint(self, b: bytes, pos: int, width: int) -> int:
        if pos + width > len(b):
            raise _Bad("field past the end of its structure")
        return int.from_bytes(b[pos : pos + width], "little")


def _messages(raw: _Raw, addr: int):
    """``(type, flags, payload)`` of every message of the object header at ``addr``."""
    head = raw.read(addr, max(0, min(32, raw.size - raw.base - addr)))
    chunks: list[tuple[int, int]] = []
    if head[:4] == b"OHDR":
        version = 2
        if len(head) < 7 or head[4] != 2:
            raise _Bad("object header version")
        flags = head[5]
        p = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        w = 1 << (flags & 3)
        chunks.append((addr + p + w, raw.uint(head, p, w)))
        mhdr = 4 + (2 if flags & 0x04 else 0)
    elif head[:1] == b"\x01":
        version = 1
        chunks.append((addr + 16, raw.uint(head, 8, 4)))
        mhdr = 8
    else:
        raise _Bad(f"no object header at address {addr}")
    seen, total = set(), 0
    while chunks:
        a, n = chunks.pop(0)
        if (a, n) in seen or len(seen) >= _MAX_CHUNKS:
            raise _Bad("object header continuation loop")
        seen.add((a, n))
        total += n
        if total > _MAX_HEADER:
            raise _Bad("object header larger than 16 MiB")
        data = raw.read(a, n)
        pos = 0
        while pos + mhdr <= len(data):
            if version == 1:
                mtype, size, mflags = raw.uint(data, pos, 2), raw.uint(data, pos + 2, 2), data[pos + 4]
            else:
                mtype, size, mflags = data[pos], raw.uint(data, pos + 1, 2), data[pos + 3]
            payload = data[pos + mhdr : pos + mhdr + size]
            if len(payload) != size:
                raise _Bad("object header message past the end of its chunk")
            if mtype == 0x10:  # continuation: (address, length) of the next chunk
                ca, cn = raw.uint(payload, 0, raw.sa), raw.uint(payload, raw.sa, raw.sl)
                if version == 2:  # "OCHK" + messages + checksum
                    if raw.read(ca, 4) != b"OCHK" or cn < 8:
                        raise _Bad("object header continuation without OCHK")
                    chunks.append((ca + 4, cn - 8))
                else:
                    chunks.append((ca, cn))
            yield mtype, mflags, payload
            pos += mhdr + size


def _attr_in(raw: _Raw, m: bytes, want: bytes, nbytes: int) -> bytes | None:
    """The raw data of attribute message ``m`` (bytes from its start) if it is named ``want``."""
    if len(m) < 8:
        return None
    ver = m[0]
    nsz, dsz, ssz = raw.uint(m, 2, 2), raw.uint(m, 4, 2), raw.uint(m, 6, 2)
    if ver == 1:
        pad = lambda x: (x + 7) & ~7  # noqa: E731
        nm = m[8 : 8 + nsz]
        dt_at = 8 + pad(nsz)
        p = dt_at + pad(dsz) + pad(ssz)
    elif ver in (2, 3):
        q = 8 if ver == 2 else 9
        nm = m[q : q + nsz]
        dt_at = q + nsz
        p = dt_at + dsz + ssz
    else:
        raise _Bad(f"attribute message version {ver}")
    if nm.rstrip(b"\0") != want:
        return None
    if p + nbytes > len(m):
        raise _Bad(f"attribute {want.decode(errors='replace')!r} holds fewer bytes than its type and shape need")
    if not m[1] & 0x01:  # the datatype is stored here, not shared
        _check_vlen_type(m[dt_at : dt_at + dsz])
    return m[p : p + nbytes]


def _attr_data(raw: _Raw, addr: int, name: str, nbytes: int) -> bytes | None:
    """The raw data of attribute ``name`` of the object whose header is at ``addr``.

    The raw data of attribute ``name`` of the object whose header is at ``addr``, in the header or in its
    dense attribute storage (None when it cannot be found).
    """
    want = name.encode("utf-8")
    heap = None
    for mtype, mflags, m in _messages(raw, addr):
        if mtype == 0x15 and len(m) >= 2 + raw.sa:  # attribute info: dense storage
            q = 2 + (2 if m[1] & 0x01 else 0)
            heap = raw.uint(m, q, raw.sa)
        if mtype != 0x0C or mflags & 0x02:  # a shared attribute: not located
            continue
        got = _attr_in(raw, m, want, nbytes)
        if got is not None:
            return got
    if heap is None or heap >= (1 << (8 * raw.sa)) - 1:
        return None
    # dense storage: attribute messages are objects of a fractal heap; find the one whose
    # header says it is named ``want`` (name length, then the name) in the heap's direct blocks
    found = []
    for block in _heap_direct_blocks(raw, heap):
        i = block.find(want + b"\0")
        while i >= 0:
            for ver, hdr in ((3, 9), (2, 8), (1, 8)):
                at = i - hdr
                if at >= 0 and block[at] == ver and raw.uint(block, at + 2, 2) == len(want) + 1:
                    got = _attr_in(raw, block[at:], want, nbytes)
                    if got is not None:
                        found.append(got)
                        break
            i = block.find(want + b"\0", i + 1)
    if len(found) != 1:
        return None  # absent, or ambiguous: not checked, so refused
    return found[0]


def _heap_direct_blocks(raw: _Raw, addr: int) -> list[bytes]:
    """The object bytes of the direct blocks of the (unfiltered) fractal heap at ``addr``."""
    sa, sl = raw.sa, raw.sl
    n = 22 + 12 * sl + 3 * sa  # the header up to the current number of rows
    h = raw.read(addr, n)
    if h[:4] != b"FRHP" or h[4] != 0:
        raise _Bad(f"no fractal heap at address {addr}")
    filt_len, flags = raw.uint(h, 7, 2), h[9]
    if filt_len:
        raise _Bad("filtered dense attribute storage")
    p = 14 + 10 * sl + 2 * sa  # table width
    width = raw.uint(h, p, 2)
    start, max_direct = raw.uint(h, p + 2, sl), raw.uint(h, p + 2 + sl, sl)
    heap_bits = raw.uint(h, p + 2 + 2 * sl, 2)
    root = raw.uint(h, p + 2 + 2 * sl + 4, sa)
    rows = raw.uint(h, p + 2 + 2 * sl + 4 + sa, 2)
    off_len = (heap_bits + 7) // 8
    head = 5 + sa + off_len + (4 if flags & 0x02 else 0)  # "FHDB", version, heap, offset, checksum
    if start <= 0 or width <= 0 or start > 2**26 or max_direct > 2**26:
        raise _Bad("implausible fractal heap block sizes")

    def direct(a: int, size: int) -> bytes:
        b = raw.read(a, size)
        if b[:4] != b"FHDB":
            raise _Bad(f"no fractal heap direct block at address {a}")
        return b[head:]

    if rows == 0:
        return [direct(root, start)] if root < (1 << (8 * sa)) - 1 else []
    max_direct_rows = (max_direct // start).bit_length() + 1
    if rows > max_direct_rows:
        raise _Bad("dense attribute storage larger than one level of blocks")
    ib = raw.read(root, 5 + sa + off_len + rows * width * sa)
    if ib[:4] != b"FHIB":
        raise _Bad(f"no fractal heap indirect block at address {root}")
    out, q, total = [], 5 + sa + off_len, 0
    for r in range(rows):
        size = start * (1 << max(0, r - 1))
        for _ in range(width):
            a = raw.uint(ib, q, sa)
            q += sa
            if a < (1 << (8 * sa)) - 1 and a != 0:
                total += size
                if total > 64 * 2**20:
                    raise _Bad("dense attribute storage larger than 64 MiB")
                out.append(direct(a, size))
    return out


def _check_vlen_type(dt: bytes) -> None:
    """Refuse variable-length datatype class bits libhdf5 cannot convert.

    A variable-length datatype message's class bits must be ones libhdf5 can convert: it crashed (SIGSEGV) on
    a vlen whose kind field was neither 'sequence' nor 'string'.
    """
    if len(dt) < 8 or dt[0] & 0x0F != 9:
        return
    kind, pad, cset = dt[1] & 0x0F, dt[1] >> 4, dt[2] & 0x0F
    if kind > 1 or (kind == 1 and (pad > 2 or cset > 1)) or (kind == 0 and dt[1] >> 4):
        raise _Bad(f"invalid variable-length datatype (kind {kind}, padding {pad}, character set {cset})")


def _compact_data(raw: _Raw, addr: int, nbytes: int) -> bytes | None:
    """The raw data of a compact dataset (in its layout message), or None."""
    for mtype, _, m in _messages(raw, addr):
        if mtype == 0x08 and len(m) >= 4 and m[0] in (3, 4) and m[1] == 0:
            size = raw.uint(m, 2, 2)
            if size < nbytes or len(m) < 4 + size:
                raise _Bad("compact dataset holds fewer bytes than its type and shape need")
            return m[4 : 4 + nbytes]
    return None


def _chunked_data(raw: _Raw, dset: h5py.Dataset) -> bytes | None:
    """The raw elements of an unfiltered chunked dataset in C order, or None.

    The raw elements of an unfiltered chunked dataset in C order (unwritten chunks: empty references), or None
    when they cannot be assembled.
    """
    ref = 4 + raw.sa + 4
    shape, chunks = dset.shape, dset.chunks
    out = np.zeros((*shape, ref), np.uint8)
    cbytes = math.prod(chunks) * ref
    for i in range(dset.id.get_num_chunks()):
        info = dset.id.get_chunk_info(i)
        if info.byte_offset is None or info.size != cbytes:
            raise _Bad("a chunk of variable-length references has the wrong size")
        block = np.frombuffer(raw.read(int(info.byte_offset) - raw.base, cbytes), np.uint8)
        block = block.reshape(*chunks, ref)
        sel = tuple(slice(o, min(o + c, s)) for o, c, s in zip(info.chunk_offset, chunks, shape, strict=True))
        out[sel] = block[tuple(slice(0, x.stop - x.start) for x in sel)]
    return out.tobytes()


def _heap_objects(raw: _Raw, addr: int) -> dict[int, int]:
    """``{index: size}`` of the objects of the global heap collection at ``addr``."""
    key = (*raw.key, addr)
    with _GCOLS_LOCK:
        if key in _GCOLS:
            _GCOLS.move_to_end(key)
            return _GCOLS[key]
    head = raw.read(addr, 8 + raw.sl)
    if head[:4] != b"GCOL" or head[4] != 1:
        raise _Bad(f"no global heap collection at address {addr}")
    csize = raw.uint(head, 8, raw.sl)
    hdr = 8 + raw.sl
    if csize < hdr or addr + csize > raw.size - raw.base:
        raise _Bad(f"the global heap collection at {addr} declares {csize} bytes, past the end of the file")
    # Walk the collection the way libhdf5 parses it on load (every object, free space included),
    # refusing what makes that parse go wrong: a free-space object of size 0 made it loop
    # forever, one shorter than its header or running past the collection misaligns the rest.
    objs: dict[int, int] = {}
    pos, ohdr = hdr, 8 + raw.sl
    buf, buf_at = b"", 0
    while pos + ohdr <= csize:  # a tail shorter than an object header is free space
        if len(objs) > _MAX_HEAP_OBJECTS:
            raise _Bad(f"the global heap collection at {addr} holds too many objects")
        if not (buf_at <= pos and pos + ohdr <= buf_at + len(buf)):
            buf_at = pos
            buf = raw.read(addr + pos, min(csize - pos, 2**20))
        h = buf[pos - buf_at : pos - buf_at + ohdr]
        idx, size = raw.uint(h, 0, 2), raw.uint(h, 8, raw.sl)
        need = ohdr + ((size + 7) & ~7) if idx else size  # free space counts its own header
        if need < ohdr or need > csize - pos:
            raise _Bad(f"global heap object {idx} at {addr} runs past its collection or is too short")
        if idx:
            objs[idx] = size
        pos += need
    with _GCOLS_LOCK:
        _GCOLS[key] = objs
        if len(_GCOLS) > 256:
            _GCOLS.popitem(last=False)
    return objs


def _vlen_base_size(tid) -> int | None:
    """Bytes per element in the heap of a variable-length type.

    Bytes per element in the heap of a variable-length type (1 for vlen strings), or None for a type without
    variable-length data. Nested variable-length types are refused.
    """
    if isinstance(tid, h5py.h5t.TypeStringID) and tid.is_variable_str():
        return 1
    if isinstance(tid, h5py.h5t.TypeVlenID):
        base = tid.get_super()
        if base.detect_class(h5py.h5t.VLEN) or _has_vlen_str(base):
            raise _Bad("nested variable-length type")
        return base.get_size()
    if tid.detect_class(h5py.h5t.VLEN) or (tid.detect_class(h5py.h5t.STRING) and _has_vlen_str(tid)):
        raise _Bad("variable-length data inside a compound or array type")
    return None


def _has_vlen_str(tid) -> bool:
    if isinstance(tid, h5py.h5t.TypeStringID):
        return tid.is_variable_str()
    if isinstance(tid, h5py.h5t.TypeCompoundID):
        return any(_has_vlen_str(tid.get_member_type(i)) for i in range(tid.get_nmembers()))
    if isinstance(tid, h5py.h5t.TypeArrayID):
        return _has_vlen_str(tid.get_super())
    return False


def _check_refs(raw: _Raw, data: bytes, n: int, base_size: int) -> None:
    """Every variable-length reference in ``data`` must name a heap object of its length."""
    ref = 4 + raw.sa + 4
    if len(data) < n * ref:
        raise _Bad("variable-length references cut short")
    if raw.sa not in (2, 4, 8):
        raise _Bad(f"{raw.sa}-byte file addresses")
    refs = np.frombuffer(data, np.dtype([("len", "<u4"), ("addr", f"<u{raw.sa}"), ("idx", "<u4")]), n)
    used = np.flatnonzero(refs["len"])
    want = refs["len"][used].astype(np.int64) * base_size
    addrs = refs["addr"][used]
    for a in np.unique(addrs):
        objs = _heap_objects(raw, int(a))
        sel = np.flatnonzero(addrs == a)
        have = np.array([objs.get(int(i), -1) for i in refs["idx"][used[sel]]], dtype=np.int64)
        wrong = np.flatnonzero(have != want[sel])
        if wrong.size:
            j = sel[wrong[0]]
            h = int(have[wrong[0]])
            raise _Bad(
                f"variable-length element {int(used[j])} declares {int(want[j])} bytes, but its global "
                + ("heap object does not exist" if h < 0 else f"heap object holds {h}")
            )


def _check_vlen(obj, tid, n: int, locate, what: str) -> None:
    try:
        base = _vlen_base_size(tid)
        if base is None or n == 0:
            return
        raw = _Raw(obj.file)
        try:
            data = locate(raw, n * (4 + raw.sa + 4))
            if data is None:
                raise _Bad("stored where it cannot be checked (dense attribute storage or chunks)")
            _check_refs(raw, data, n, base)
        finally:
            raw.close()
    except _Bad as e:
        raise FileFormatError(obj.file.filename, f"{what}: variable-length data refused ({e})") from None
    except OSError as e:
        raise FileFormatError(obj.file.filename, f"{what}: cannot check its variable-length data ({e})") from None


def _addr(obj) -> int:
    return int(h5py.h5o.get_info(obj.id).addr)


def read_attr(obj, key: str, default: Any = None, *, decode: bool = True) -> Any:
    """``obj.attrs[key]`` (bytes decoded as UTF-8), or ``default``; checked against the file.

    ``obj.attrs[key]`` (bytes decoded as UTF-8), or ``default`` when absent or of a type h5py cannot read;
    raises :class:`FileFormatError` when its declared size or any of its variable-length references does not
    fit the file.
    """
    try:
        if key not in obj.attrs:
            return default
        aid = obj.attrs.get_id(key)
        tid = aid.get_type()
        n = aid.get_space().get_simple_extent_npoints()
        nbytes = n * aid.dtype.itemsize
    except (KeyError, OSError, TypeError, ValueError, RuntimeError):
        return default
    what = f"attribute {key!r} of {obj.name}"
    check_eager(obj.file.filename, nbytes, what)
    _check_vlen(obj, tid, n, lambda raw, nb: _attr_data(raw, _addr(obj), key, nb), what)
    try:
        v = obj.attrs[key]
    except (KeyError, OSError, TypeError, ValueError) as e:
        raise FileFormatError(obj.file.filename, f"{what} is unreadable ({e})") from None
    return v.decode("utf-8", errors="replace") if decode and isinstance(v, bytes) else v


def check_dataset(dset: h5py.Dataset, what: str | None = None) -> None:
    """Refuse an eager read of ``dset`` that the file cannot hold.

    Refuse an eager read of ``dset`` whose declared size exceeds twice the file's, or whose variable-length
    references do not match the file's global heap.
    """
    what = what or f"dataset {dset.name}"
    n = int(math.prod(dset.shape or ()))
    check_eager(dset.file.filename, n * dset.dtype.itemsize, what)
    tid = dset.id.get_type()

    def locate(raw: _Raw, nbytes: int) -> bytes | None:
        for mtype, mflags, m in _messages(raw, _addr(dset)):
            if mtype == 0x03 and not mflags & 0x02:
                _check_vlen_type(m)
        layout = dset.id.get_create_plist().get_layout()
        if layout == h5py.h5d.COMPACT:
            return _compact_data(raw, _addr(dset), nbytes)
        if layout == h5py.h5d.CONTIGUOUS and not dset.is_virtual:
            off = dset.id.get_offset()
            if off is None:  # never written: all elements are empty
                return bytes(nbytes)
            return raw.read(int(off) - raw.base, nbytes)
        if layout == h5py.h5d.CHUNKED and dset.id.get_create_plist().get_nfilters() == 0:
            return _chunked_data(raw, dset)
        return None

    _check_vlen(dset, tid, n, locate, what)


def read_dataset(dset: h5py.Dataset, what: str | None = None) -> Any:
    """``dset[()]`` after :func:`check_dataset`."""
    check_dataset(dset, what)
    return dset[()]


def scalar_dataset(f: h5py.Group, key: str, default: Any = None) -> Any:
    """A scalar dataset's value (bytes decoded), or ``default``.

    A scalar dataset's value (bytes decoded), or ``default`` when it is absent or not a scalar; checked like
    :func:`read_dataset`.
    """
    d = f.get(key)
    if not isinstance(d, h5py.Dataset) or d.shape != ():
        return default
    v = read_dataset(d)
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    return v.item() if isinstance(v, np.generic) else v
