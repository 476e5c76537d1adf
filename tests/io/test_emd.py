import json
import subprocess
import textwrap

import h5py
import numpy as np
import pytest

from napari_4dstem import BraggPeaks, DataCube, DiffractionImage, RealSpaceMap
from napari_4dstem.errors import FileFormatError, OutputExistsError
from napari_4dstem.io import emd, open_datacube


def _objects(small_cube, rng):
    cal = small_cube.calibration
    a = np.asarray(small_cube.data)
    vi = RealSpaceMap(
        a.sum(axis=(2, 3)).astype(float),
        name="virtual_bf",
        units="counts",
        calibration=cal,
        params={"detector": "disk", "radius_px": 3.0, "center_px": (6.0, 5.0)},
    )
    strain = RealSpaceMap(
        rng.normal(size=(7, 9, 3)),
        name="strain",
        channels=("e_xx", "e_yy", "e_xy"),
        calibration=cal,
        params={"reference": "median"},
    )
    mean = DiffractionImage(a.mean(axis=(0, 1)), name="mean_pattern", calibration=cal)
    lists = [
        {
            "qy": rng.uniform(0, 13, k),
            "qx": rng.uniform(0, 11, k),
            "intensity": rng.random(k),
            "correlation": rng.random(k),
        }
        for k in rng.integers(0, 5, 63)
    ]
    peaks = BraggPeaks.from_lists(lists, (7, 9), calibration=cal, params={"subpixel": "poly", "n": 3})
    return vi, strain, mean, peaks


def test_round_trip_everything(tmp_path, small_cube, rng):
    vi, strain, mean, peaks = _objects(small_cube, rng)
    path = emd.write(tmp_path / "r.h5", small_cube, vi, strain, mean, peaks)
    assert emd.is_emd(path)
    got = emd.read(path)
    assert set(got) == {"small", "virtual_bf", "strain", "mean_pattern", "braggpeaks"}
    dc = got["small"]
    assert isinstance(dc.data, h5py.Dataset)  # lazy
    np.testing.assert_array_equal(dc.data[()], np.asarray(small_cube.data))
    assert dc.calibration == small_cube.calibration
    assert dc.chunks == (7, 9, 13, 11)
    np.testing.assert_array_equal(got["virtual_bf"].data, vi.data)
    assert got["virtual_bf"].params == {"detector": "disk", "radius_px": 3.0, "center_px": (6.0, 5.0)}
    assert got["strain"].channels == ("e_xx", "e_yy", "e_xy")
    np.testing.assert_array_equal(got["mean_pattern"].data, mean.data)
    p = got["braggpeaks"]
    for f in ("offsets", "qy", "qx", "intensity", "correlation"):
        np.testing.assert_array_equal(getattr(p, f), getattr(peaks, f))
    assert p.params == {"subpixel": "poly", "n": 3}
    dc.close()
    with emd.read_datacube(path) as dc2:
        assert dc2.name == "small" and dc2.source == str(path)


def test_chunks_and_compression(tmp_path, rng):
    a = rng.poisson(1, (20, 18, 32, 32)).astype(np.uint16)
    p = emd.write(tmp_path / "c.h5", DataCube(a), compression="gzip")
    with h5py.File(p) as f:
        d = f["datacube_root/datacube/data"]
        assert d.chunks == (16, 16, 32, 32) and d.compression == "gzip"
        np.testing.assert_array_equal(d[()], a)


def test_never_overwrites_silently_and_leaves_nothing_on_failure(tmp_path, small_cube):
    p = tmp_path / "x.h5"
    emd.write(p, small_cube)
    before = p.read_bytes()
    with pytest.raises(OutputExistsError, match="x.h5: output file exists"):
        emd.write(p, small_cube)

    class Boom(Exception):
        pass

    def explode(progress):
        raise Boom

    with pytest.raises(Boom):
        emd.write(p, small_cube, overwrite=True, progress=explode)
    assert p.read_bytes() == before  # the old file is untouched
    assert [q.name for q in tmp_path.iterdir()] == ["x.h5"]  # no temporary left behind
    with pytest.raises(FileFormatError, match="output folder does not exist"):
        emd.write(tmp_path / "nope" / "y.h5", small_cube)


def test_bad_files_give_clear_errors(tmp_path, small_cube):
    p = emd.write(tmp_path / "ok.h5", small_cube)
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(p.read_bytes()[:2000])
    with pytest.raises(FileFormatError, match=r"trunc.h5: not a readable HDF5 file"):
        emd.read_datacube(trunc)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(300))
    with pytest.raises(FileFormatError, match="junk.h5"):
        open_datacube(junk, format="emd")
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros((2, 2, 2, 2))
    assert not emd.is_emd(plain)
    with pytest.raises(FileFormatError, match="without EMD 1.0 root attributes"):
        emd.read_datacube(plain)
    with pytest.raises(FileFormatError, match="no such file"):
        emd.read_datacube(tmp_path / "missing.h5")
    only_map = emd.write(tmp_path / "map.h5", RealSpaceMap(np.zeros((3, 3)), name="m"))
    with pytest.raises(FileFormatError, match="no 4D datacube"):
        emd.read_datacube(only_map)
    assert not emd.is_emd(tmp_path)


# -- py4DSTEM in both directions --------------------------------------------------------------
_P4_READ = textwrap.dedent(
    """
    import json, sys, numpy as np, py4DSTEM
    d = py4DSTEM.read(sys.argv[1], verbose=False)
    c = d.calibration
    out = {"class": type(d).__name__, "shape": list(d.data.shape), "dtype": str(d.data.dtype),
           "sum": int(d.data.sum()), "R": c.get_R_pixel_size(), "Ru": c.get_R_pixel_units(),
           "Q": c.get_Q_pixel_size(), "Qu": c.get_Q_pixel_units(),
           "qx0": np.asarray(c.get_qx0()).tolist(), "rot": c.get_QR_rotation_degrees()}
    vi = d.tree("virtual_bf"); out["vi_sum"] = float(vi.data.sum()); out["vi_class"] = type(vi).__name__
    bv = d.tree("braggpeaks"); v = bv.raw[2, 3]
    out["bv_qx"] = v.qx.tolist(); out["bv_qy"] = v.qy.tolist(); out["bv_I"] = v.I.tolist()
    print(json.dumps(out))
    """
)

_P4_WRITE = textwrap.dedent(
    """
    import sys, numpy as np, py4DSTEM
    rng = np.random.default_rng(7)
    a = rng.poisson(3, (5, 6, 20, 24)).astype(np.uint16)
    dc = py4DSTEM.DataCube(data=a, name="p4cube")
    c = dc.calibration
    c.set_R_pixel_size(2.5); c.set_R_pixel_units("A"); c.set_Q_pixel_size(0.7); c.set_Q_pixel_units("mrad")
    c.set_origin((np.full((5, 6), 10.25), np.full((5, 6), 11.5)))
    c.set_QR_rotation_degrees(4.0)
    vi = dc.get_virtual_image(mode="circle", geometry=((10, 12), 4), name="bf")
    py4DSTEM.save(sys.argv[1], dc, mode="o")
    np.save(sys.argv[2], a)
    np.save(sys.argv[3], vi.data)
    """
)


def test_py4dstem_reads_our_file(tmp_path, small_cube, rng, p4python):
    vi, strain, mean, peaks = _objects(small_cube, rng)
    path = emd.write(tmp_path / "ours.h5", small_cube, vi, strain, mean, peaks)
    res = subprocess.run([p4python, "-c", _P4_READ, str(path)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    a = np.asarray(small_cube.data)
    assert got["class"] == "DataCube" and got["shape"] == list(a.shape) and got["dtype"] == "uint16"
    assert got["sum"] == int(a.sum())
    assert (got["R"], got["Ru"], got["Q"], got["Qu"]) == (1.5, "nm", 0.02, "A^-1")
    np.testing.assert_allclose(got["qx0"], small_cube.calibration.origin_map_px[..., 0])
    assert got["rot"] == pytest.approx(11.0)  # py4DSTEM's sign convention, see below
    assert got["vi_class"] == "RealSlice" and got["vi_sum"] == pytest.approx(vi.data.sum())
    mine = peaks.at(2, 3)  # py4DSTEM's qx is our qy (first detector axis)
    np.testing.assert_allclose(got["bv_qx"], mine["qy"])
    np.testing.assert_allclose(got["bv_qy"], mine["qx"])
    np.testing.assert_allclose(got["bv_I"], mine["intensity"])


def test_we_read_py4dstem_file(tmp_path, p4python):
    path, ref, ref_vi = tmp_path / "p4.h5", tmp_path / "ref.npy", tmp_path / "vi.npy"
    cmd = [p4python, "-c", _P4_WRITE, str(path), str(ref), str(ref_vi)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = emd.read(path)
    dc = got["p4cube"]
    np.testing.assert_array_equal(dc.data[()], np.load(ref))
    cal = dc.calibration
    assert cal.scan_step == (2.5, 2.5) and cal.scan_units == "A"
    assert cal.k_pixel_size == 0.7 and cal.k_units == "mrad"
    assert cal.rotation_deg == -4.0  # py4DSTEM's QR_rotation 4 deg is our -4 deg
    np.testing.assert_allclose(cal.origin_map_px[..., 0], 10.25)
    np.testing.assert_allclose(cal.origin_map_px[..., 1], 11.5)
    np.testing.assert_array_equal(got["bf"].data, np.load(ref_vi))
    assert got["bf"].params["mode"] == "circle"
    dc.close()


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("rotation_deg", [0.0, 17.0, -123.0, 179.0])
def test_rotation_convention_matches_py4dstem_formula(rotation_deg, flip, rng):
    from napari_4dstem.analysis.virtual.dpc import rotate_to_scan
    from napari_4dstem.io.emd import rotation_from_py4dstem, rotation_to_py4dstem

    v_y, v_x = rng.normal(size=5), rng.normal(size=5)
    u_y, u_x = rotate_to_scan(v_y, v_x, rotation_deg=rotation_deg, flip=flip)
    # py4DSTEM 0.14 BraggVectors.cal: R(QR_rotation) @ (qx, qy), or (qy, qx) when QR_flip,
    # giving (Rx, Ry) = (scan_y, scan_x); its qx is our k_y
    t = np.deg2rad(rotation_to_py4dstem(rotation_deg, flip))
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    p = R @ (np.vstack([v_x, v_y]) if flip else np.vstack([v_y, v_x]))
    np.testing.assert_allclose(p[0], u_y, atol=1e-12)
    np.testing.assert_allclose(p[1], u_x, atol=1e-12)
    assert rotation_from_py4dstem(rotation_to_py4dstem(rotation_deg, flip), flip) == pytest.approx(rotation_deg)


def test_real_py4dstem_file(realdata):
    """A datacube written by py4DSTEM itself (rosettasciio's test file): data and calibration
    against what the file's own HDF5 datasets say, read here with h5py."""
    path = realdata / "emd" / "py4DSTEM_size2x3x4x5.h5"
    with h5py.File(path) as f:
        want = f["datacube_root/datacube/data"][()]
        cal = f["datacube_root/metadatabundle/calibration"]
        r_size, q_size = float(cal["R_pixel_size"][()]), float(cal["Q_pixel_size"][()])
        assert cal["R_pixel_units"][()] == b"nm" and cal["Q_pixel_units"][()] == b"A^-1"
        dim0 = f["datacube_root/datacube/dim0"][()]
    with open_datacube(path) as dc:
        assert dc.shape == (2, 3, 4, 5) and dc.dtype == np.dtype("<f4")
        assert isinstance(dc.data, h5py.Dataset)
        np.testing.assert_array_equal(dc.data[()], want)
        assert dc.calibration.scan_step == (r_size, r_size) and dc.calibration.scan_units == "nm"
        assert dc.calibration.k_pixel_size == q_size and dc.calibration.k_units == "1/A"
        assert dim0[1] == pytest.approx(r_size)
