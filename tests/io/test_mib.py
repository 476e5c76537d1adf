"""Merlin .mib reader: real files against rosettasciio, RAW decoding, scan shapes, bad input."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from napari_4dstem.errors import FileFormatError
from napari_4dstem.io import detect_format, mib, open_datacube

# Reference values derived once with rosettasciio 0.15.0 (``rsciio.quantumdetector.file_reader``
# in a side venv): data = np.flip(rsciio_data, axis=-2) (undoing rsciio's vertical flip, i.e. in
# file order, which is also LiberTEM's orientation); frames = data.reshape(-1, ky, kx);
# values: (rsciio shape, dtype, frames.sum(), frames.max(), np.unravel_index(frames.argmax()),
# sha256(frames.tobytes())).
RSCIIO = {
    "Merlin_Single_Quad/Quad_1_Frame_CounterDepth_12_Rows_256.mib": (
        (512, 512),
        ">u2",
        845907,
        4093,
        (0, 12, 286),
        "e309cbe853f55ed9ca154668473b79e9e1739d9521e506c18badf173fc782259",
    ),
    "Merlin_Single_Quad/Quad_1_Frame_CounterDepth_1_Rows_256.mib": (
        (512, 512),
        "|u1",
        10331,
        1,
        (0, 0, 0),
        "e024a50d4e46cd120c4b0a6528d2f10227ded44794331421e22bcd992ddf1510",
    ),
    "Merlin_Single_Quad/Quad_1_Frame_CounterDepth_24_Rows_256.mib": (
        (512, 512),
        ">u4",
        778764,
        4095,
        (0, 188, 347),
        "a8ad5cdb3f3b75ea30765aba3e5a067614764d042b10e96b3ed078c2d1d4f612",
    ),
    "Merlin_Single_Quad/Quad_1_Frame_CounterDepth_6_Rows_256.mib": (
        (512, 512),
        "|u1",
        115263,
        63,
        (0, 2, 287),
        "755b88aadc305b7e383f80182e4446a176cf915691f2b46a4ac97b92f21c495d",
    ),
    "Merlin_Single_Quad/Quad_9_Frame_CounterDepth_12_Rows_256.mib": (
        (9, 512, 512),
        ">u2",
        7229086,
        4095,
        (5, 100, 266),
        "98583ffce0a141f6ee04c7feb84a18631661650a10a82470af8cc95c4d699a44",
    ),
    "Merlin_Single_Quad/Quad_9_Frame_CounterDepth_1_Rows_256.mib": (
        (9, 512, 512),
        "|u1",
        92639,
        1,
        (0, 0, 0),
        "be3fd5ba7a34fb0bb2f43606c4dbcc5696238ae5f7de5bd49a0252358903178c",
    ),
    "Merlin_Single_Quad/Quad_9_Frame_CounterDepth_24_Rows_256.mib": (
        (3, 3, 512, 512),
        ">u4",
        7285037,
        4095,
        (3, 100, 266),
        "50999a4978ac10793a65021532ab121dd0d54d3ac333bef9e82c361a034daf5e",
    ),
    "Merlin_Single_Quad/Quad_9_Frame_CounterDepth_6_Rows_256.mib": (
        (9, 512, 512),
        "|u1",
        1032369,
        63,
        (0, 1, 134),
        "74ed0bada74326595c684732a4c0fbb2a58649d4533f825ce32aed2e58bb4a9f",
    ),
    "Merlin_Single_Quad/Single_1_Frame_CounterDepth_12_Rows_256.mib": (
        (256, 256),
        ">u2",
        28911,
        2239,
        (0, 108, 200),
        "7884047abcd152710d5cc0888b9af2af41b69cdbcf5c3a248ad044d5c278c64d",
    ),
    "Merlin_Single_Quad/Single_1_Frame_CounterDepth_1_Rows_256.mib": (
        (256, 256),
        "|u1",
        2398,
        1,
        (0, 0, 0),
        "c802e5eca96e4e0f936eef75426e4f40331a2c6c8e952f4bb6ced7112b5eff3b",
    ),
    "Merlin_Single_Quad/Single_1_Frame_CounterDepth_24_Rows_256.mib": (
        (256, 256),
        ">u4",
        29416,
        2255,
        (0, 108, 200),
        "94d472f1bb100bdcb9a3f7472c26e77bf46e5adb61c95bd54371ff9681966fd8",
    ),
    "Merlin_Single_Quad/Single_1_Frame_CounterDepth_6_Rows_256.mib": (
        (256, 256),
        "|u1",
        24336,
        63,
        (0, 1, 134),
        "1e3927b628766222d8e5bd3f78a9a2acb6e6eb945003198b890733151483b496",
    ),
    "Merlin_Single_Quad/Single_9_Frame_CounterDepth_12_Rows_256.mib": (
        (9, 256, 256),
        ">u2",
        260753,
        2216,
        (7, 210, 213),
        "9982363b39902684bd30801fd44a292ce65ce8b1d63927086553cd99cec037a2",
    ),
    "Merlin_Single_Quad/Single_9_Frame_CounterDepth_1_Rows_256.mib": (
        (9, 256, 256),
        "|u1",
        21614,
        1,
        (0, 0, 0),
        "5390a497acd2f1e8fbffef1aa9464445a8f4223144de9c2bc9819d2f93e854ba",
    ),
    "Merlin_Single_Quad/Single_9_Frame_CounterDepth_24_Rows_256.mib": (
        (9, 256, 256),
        ">u4",
        258156,
        2074,
        (0, 210, 213),
        "03443c60cf2f8465db0dfef87d9fb37d00160bba9afdbd8bbcf4b5e63075a00a",
    ),
    "Merlin_Single_Quad/Single_9_Frame_CounterDepth_6_Rows_256.mib": (
        (9, 256, 256),
        "|u1",
        217684,
        63,
        (0, 1, 134),
        "d0bbb81acecbed41897f2fa8b7b073b9084af628f38c1e54389f55bfa61af466",
    ),
    "Merlin_navigation4x2_ROI/001_4x2_6bit.mib": (
        (2, 4, 256, 256),
        "|u1",
        3623664,
        63,
        (0, 73, 19),
        "ad4f95c4baa54eb1d82a69f06da287ef77f79872fe37e7623fc427e9c0f378ac",
    ),
    "Merlin_navigation4x2_ROI/002_4x2_6bit_roi128.mib": (
        (2, 4, 128, 256),
        "|u1",
        3263829,
        63,
        (0, 17, 1),
        "da74e20313731e5ddc4eabe712c6a1ce8f66bdc2ece09965eec2855168caa78e",
    ),
    "Merlin_navigation4x2_signalNx256_ROI/002_merlin_test_roi_sig256x128_nav4x2_hot_pixel_52x_39y.mib": (
        (2, 4, 128, 256),
        ">u2",
        79,
        10,
        (5, 39, 52),
        "583f1ce693a0187d2788832bba498cab05768a700b60e125a03bf7454bd7bfdf",
    ),
    "Merlin_navigation4x2_signalNx256_ROI/003_merlin_test_roi_sig256x64_nav4x2_hot_pixel_52x_39y.mib": (
        (2, 4, 64, 256),
        ">u2",
        77,
        15,
        (0, 39, 52),
        "193df9a474b23ada70cf2f66bcb9a341b1a40d66ea936256e8a50fedd088ab0a",
    ),
}
QD = "quantumdetector"


def _frames(dc):
    d = np.asarray(dc.data.compute() if hasattr(dc.data, "compute") else dc.data)
    return d.reshape(-1, *d.shape[-2:])


@pytest.mark.parametrize("rel", sorted(RSCIIO))
def test_mib_matches_rosettasciio(realdata, rel):
    shape, dtype, total, vmax, argmax, sha = RSCIIO[rel]
    path = realdata / QD / rel
    assert detect_format(path).name == "mib"
    with open_datacube(path) as dc:
        fr = _frames(dc)
        assert fr.shape[-2:] == tuple(shape[-2:])
        assert fr.shape[0] == int(np.prod(shape[:-2]))
        assert dc.dtype == np.dtype(dtype)
        assert int(fr.sum(dtype=np.uint64)) == total
        assert int(fr.max()) == vmax
        assert tuple(int(v) for v in np.unravel_index(fr.argmax(), fr.shape)) == argmax
        assert hashlib.sha256(np.ascontiguousarray(fr).tobytes()).hexdigest() == sha


def test_mib_is_a_lazy_memmap_view(realdata):
    dc = open_datacube(realdata / QD / "Merlin_Single_Quad/Quad_9_Frame_CounterDepth_12_Rows_256.mib")
    base = dc.data
    while getattr(base, "base", None) is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap)
    assert dc.dtype == np.dtype(">u2")  # native big-endian, no conversion copy


def test_mib_scan_shape_from_flyback_and_hot_pixel_position(realdata):
    d = realdata / QD / "Merlin_navigation4x2_ROI"
    dc = open_datacube(d / "001_4x2_6bit.mib")
    assert dc.shape == (2, 4, 256, 256)  # rsciio (2, 4); the hdr only says 8 frames
    assert dc.metadata["scan_shape_from"] == "fly-back in frame time stamps"
    # per-frame sums from rsciio, in scan order
    sums = dc.data.sum(axis=(2, 3), dtype=np.int64).ravel().tolist()
    assert sums == [448386, 449671, 452147, 455427, 450760, 453755, 455591, 457927]
    hot = open_datacube(
        realdata
        / QD
        / "Merlin_navigation4x2_signalNx256_ROI"
        / "003_merlin_test_roi_sig256x64_nav4x2_hot_pixel_52x_39y.mib"
    )
    # the file name says x=52, y=39: true in file order (rsciio's flip puts it at y=24)
    assert np.asarray(hot.data)[0, 0, 39, 52] == hot.data.max()


def test_mib_opens_from_hdr_and_accepts_scan_shape(realdata):
    hdr = realdata / QD / "Merlin_navigation4x2_ROI/001_4x2_6bit.hdr"
    assert detect_format(hdr).name == "mib"
    dc = open_datacube(hdr, scan_shape=(4, 2))
    assert dc.shape == (4, 2, 256, 256)
    ref = np.asarray(open_datacube(hdr.with_suffix(".mib")).data).reshape(8, 256, 256)
    np.testing.assert_array_equal(np.asarray(dc.data).reshape(8, 256, 256), ref)
    with pytest.raises(FileFormatError, match=r"scan_shape=\(ny, nx\)"):
        open_datacube(hdr, scan_shape=(3, 3))


# -- RAW ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("base", ["Single_1", "Single_9", "Quad_1", "Quad_9"])
def test_mib_raw_matches_decoded_twin(realdata, base):
    """RAW and decoded twins are separate acquisitions (other time stamps), so their counts differ
    by shot noise and cannot be identical; the same orientation and chip placement shows as
    >= 99.9 % identical pixels and a summed-frame correlation near 1 in every chip, while any
    flip or chip swap drops far below."""
    d = realdata / QD / "Merlin_Single_Quad"
    raw = open_datacube(d / f"{base}_Frame_CounterDepth_1_Rows_256RAW.mib")
    twin = open_datacube(d / f"{base}_Frame_CounterDepth_1_Rows_256.mib")
    assert raw.metadata["format"] == "Merlin MIB (RAW)"
    assert raw.shape == twin.shape and raw.dtype == np.uint8
    r, t = _frames(raw), _frames(twin)
    assert set(np.unique(r)) <= {0, 1}
    assert (r == t).mean() >= 0.999
    rs, ts = r.sum(0).astype(float), t.sum(0).astype(float)
    n = rs.shape[0] // 256
    for cy in range(n):
        for cx in range(n):
            sl = np.s_[cy * 256 : (cy + 1) * 256, cx * 256 : (cx + 1) * 256]
            c = np.corrcoef(rs[sl].ravel(), ts[sl].ravel())[0, 1]
            c_flip = np.corrcoef(rs[sl][::-1].ravel(), ts[sl].ravel())[0, 1]
            assert c > 0.95 and c_flip < 0.8, (cy, cx, c, c_flip)


def _encode_raw(frames, depth, quad):
    """Inverse of the RAW layout (written from the format description): frames -> stored bytes."""
    n, ky, kx = frames.shape
    if quad:
        h, c = ky // 2, kx // 2
        top, bottom = frames[:, :h], frames[:, h:]
        blocks = np.stack(
            [
                bottom[:, ::-1, c:][:, :, ::-1],
                bottom[:, ::-1, :c][:, :, ::-1],
                top[:, :, c:],
                top[:, :, :c],
            ],
            axis=2,
        )  # stored row: [chip 4 | chip 3 | chip 2 | chip 1]
        rows = blocks.reshape(n, h, 4 * c)
    else:
        rows = frames
    px = rows.reshape(n, -1)
    if depth == 1:
        words = np.packbits(px.reshape(n, -1, 64).astype(np.uint8), axis=-1, bitorder="little")
        return np.ascontiguousarray(words.reshape(n, -1, 8)[:, :, ::-1]).reshape(n, -1)
    if depth == 6:
        return np.ascontiguousarray(px.astype(np.uint8).reshape(n, -1, 8)[:, :, ::-1]).reshape(n, -1)
    if depth == 12:
        v = px.astype(">u2").reshape(n, -1, 4)[:, :, ::-1]
        return np.ascontiguousarray(v).view(np.uint8).reshape(n, -1)
    hi = _encode_raw(frames >> 12, 12, quad)
    lo = _encode_raw(frames & 0xFFF, 12, quad)
    return np.concatenate([hi, lo], axis=1)


def _write_mib(path, stored, *, width, height, n_chips, ptype, depth, layout):
    hb = 768 if n_chips == 4 else 384
    with open(path, "wb") as fh:
        for i, frame in enumerate(stored):
            head = (
                f"MQ1,{i + 1:06d},{hb:05d},{n_chips:02d},{width:04d},{height:04d},{ptype},"
                f"{layout:>6},0F,2021-04-15 14:43:24.703250,0.001000,0,0,0,"
                + ",".join(["2.0"] * 8)
                + f",3RX,MQ1A,2021-04-15T13:43:{i // 100:02d}.{i % 100:02d}0000000Z,1000000ns,{depth},"
            ).encode()
            fh.write(head.ljust(hb, b"\0"))
            fh.write(np.ascontiguousarray(frame).tobytes())


@pytest.mark.parametrize("depth", [1, 6, 12, 24])
@pytest.mark.parametrize("quad", [False, True])
def test_mib_raw_decoding_round_trip(tmp_path, depth, quad):
    rng = np.random.default_rng(depth + 10 * quad)
    k = 512 if quad else 256
    hi = {1: 2, 6: 64, 12: 4096, 24: 2**24}[depth]
    frames = rng.integers(0, hi, size=(6, k, k), dtype=np.uint32)
    stored = _encode_raw(frames, depth, quad)
    w = 1024 if quad else 256
    if depth == 24:
        w *= 2
    path = tmp_path / "raw.mib"
    _write_mib(
        path,
        stored,
        width=w,
        height=256,
        n_chips=4 if quad else 1,
        ptype="R64",
        depth=depth,
        layout="2x2" if quad else "1x1",
    )
    dc = open_datacube(path, scan_shape=(2, 3))
    assert dc.shape == (2, 3, k, k)
    assert dc.dtype == {1: np.uint8, 6: np.uint8, 12: np.uint16, 24: np.uint32}[depth]
    assert dc.data.chunksize[:2] == (2, 3)
    np.testing.assert_array_equal(np.asarray(dc.data).reshape(6, k, k), frames)


# -- bad input ---------------------------------------------------------------------------------
def _copy(realdata, tmp_path, rel, n_bytes=None):
    src = realdata / QD / rel
    data = src.read_bytes()
    dst = tmp_path / src.name
    dst.write_bytes(data if n_bytes is None else data[:n_bytes])
    hdr = src.with_suffix(".hdr")
    if hdr.exists():
        dst.with_suffix(".hdr").write_bytes(hdr.read_bytes())
    return dst


def test_mib_truncated(realdata, tmp_path):
    rel = "Merlin_navigation4x2_ROI/001_4x2_6bit.mib"
    size = (realdata / QD / rel).stat().st_size
    p = _copy(realdata, tmp_path, rel, size - 1000)
    with pytest.raises(FileFormatError, match=r"truncated.*allow_truncated=True") as e:
        open_datacube(p)
    assert p.name in str(e.value)
    dc = open_datacube(p, allow_truncated=True)
    assert dc.shape == (1, 7, 256, 256)
    # whole frames missing: the .hdr promises 8
    p = _copy(realdata, tmp_path, rel, size // 8 * 6)
    with pytest.raises(FileFormatError, match="promises 8 frames"):
        open_datacube(p)


def test_mib_bad_headers(realdata, tmp_path):
    rel = "Merlin_Single_Quad/Single_1_Frame_CounterDepth_6_Rows_256.mib"
    p = _copy(realdata, tmp_path, rel)
    raw = bytearray(p.read_bytes())
    raw[raw.index(b"U08") : raw.index(b"U08") + 3] = b"U07"
    p.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="unknown Merlin pixel type"):
        open_datacube(p, format="mib")
    p = _copy(realdata, tmp_path, rel)
    raw = bytearray(p.read_bytes())
    i = raw.index(b"ns,6,") + 3
    raw[i : i + 1] = b"9"
    p.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="counter depth 9"):
        open_datacube(p)


def test_mib_hdr_without_mib(tmp_path, realdata):
    hdr = tmp_path / "lonely.hdr"
    hdr.write_bytes((realdata / QD / "Merlin_navigation4x2_ROI/001_4x2_6bit.hdr").read_bytes())
    assert mib.is_mib(hdr)
    with pytest.raises(FileFormatError, match=r"lonely\.hdr.*without its \.mib"):
        open_datacube(hdr)


def test_flyback_detection_rules():
    t = np.arange(12, dtype=float) * 1e6
    t[4:] += 5e4
    t[8:] += 5e4
    assert mib.detect_flyback(t, 12) == (3, 4)
    assert mib.detect_flyback(np.arange(12) * 1e6, 12) is None  # no fly-back seen
    t = np.arange(12, dtype=float) * 1e6
    t[5:] += 5e4  # a single late frame, not periodic
    assert mib.detect_flyback(t, 12) is None


# -- acquisitions saved as several files; trigger offset -------------------------------------
def _split_acquisition(realdata, tmp_path, parts=((1, 0, 3), (2, 3, 5), (10, 5, 8))):
    """The real 8-frame 4x2 scan saved as several .mib files (acq1, acq2, acq10) + its .hdr."""
    src = realdata / QD / "Merlin_navigation4x2_ROI" / "001_4x2_6bit.mib"
    raw = src.read_bytes()
    fb = len(raw) // 8
    for num, a, b in parts:
        (tmp_path / f"acq{num}.mib").write_bytes(raw[a * fb : b * fb])
    (tmp_path / "acq.hdr").write_bytes(src.with_suffix(".hdr").read_bytes())
    ref = np.asarray(open_datacube(src, scan_shape=(1, 8)).data)[0]
    return tmp_path / "acq.hdr", ref


def test_mib_acquisition_in_several_files(realdata, tmp_path):
    hdr, ref = _split_acquisition(realdata, tmp_path)
    assert [f.name for f in mib.acquisition_files(hdr)] == ["acq1.mib", "acq2.mib", "acq10.mib"]
    dc = open_datacube(hdr, scan_shape=(2, 4))
    assert dc.shape == (2, 4, 256, 256) and dc.metadata["frames_per_file"] == [3, 2, 3]
    np.testing.assert_array_equal(np.asarray(dc.data).reshape(8, 256, 256), ref)
    np.testing.assert_array_equal(dc.data[1, 1], ref[5])  # a frame in the third file
    shifted = open_datacube(hdr, scan_shape=(2, 3), frame_offset=2)
    np.testing.assert_array_equal(np.asarray(shifted.data).reshape(6, 256, 256), ref[2:8])
    padded = open_datacube(hdr, scan_shape=(2, 4), frame_offset=-1)
    got = np.asarray(padded.data).reshape(8, 256, 256)
    assert not got[0].any()
    np.testing.assert_array_equal(got[1:], ref[:7])


def test_mib_frame_offset_single_file(realdata):
    path = realdata / QD / "Merlin_navigation4x2_ROI" / "001_4x2_6bit.mib"
    ref = np.asarray(open_datacube(path, scan_shape=(1, 8)).data)[0]
    dc = open_datacube(path, scan_shape=(3, 2), frame_offset=1)
    assert isinstance(dc.data, np.ndarray)  # still a memmap view
    np.testing.assert_array_equal(np.asarray(dc.data).reshape(6, 256, 256), ref[1:7])
    assert dc.metadata["frame_offset"] == 1
    dc = open_datacube(path, scan_shape=(2, 4), frame_offset=-2)
    got = np.asarray(dc.data).reshape(8, 256, 256)
    assert not got[:2].any()
    np.testing.assert_array_equal(got[2:], ref[:6])
    with pytest.raises(FileFormatError, match=r"frame_offset=8 drops every one of the 8 frames"):
        open_datacube(path, frame_offset=8)


def test_mib_several_files_refusals(realdata, tmp_path):
    hdr, _ = _split_acquisition(realdata, tmp_path, parts=((1, 0, 3), (2, 3, 6)))
    with pytest.raises(FileFormatError, match=r"acq\.hdr: truncated: it promises 8 frames, its 2 \.mib files hold 6"):
        open_datacube(hdr)
    assert open_datacube(hdr, allow_truncated=True, scan_shape=(2, 3)).shape == (2, 3, 256, 256)
    other = realdata / QD / "Merlin_navigation4x2_ROI" / "002_4x2_6bit_roi128.mib"
    (tmp_path / "acq3.mib").write_bytes(other.read_bytes()[: len(other.read_bytes()) // 4])
    with pytest.raises(FileFormatError, match=r"acq3\.mib: its frames \(256 x 128 U08.*differ"):
        open_datacube(hdr, allow_truncated=True)
