"""Every result type saved reopens, in the library (and py4DSTEM where it has the type), with
its calibration, units, parameters and provenance (input file, software version, time)."""

from __future__ import annotations

import json
import subprocess
import textwrap

import numpy as np
import pytest

from napari_4dstem import __version__
from napari_4dstem.data.calibration import Calibration
from napari_4dstem.data.results import BraggPeaks, DiffractionImage, RealSpaceMap
from napari_4dstem.io import emd

CAL = Calibration(
    scan_step=(1.5, 1.5),
    scan_units="nm",
    k_pixel_size=0.02,
    k_units="1/A",
    origin_px=(10.0, 11.0),
    beam_energy_kev=300.0,
)


def _results(rng):
    strain = RealSpaceMap(
        rng.normal(0, 1e-3, (5, 6, 4)),
        name="strain",
        units="",
        channels=("e_xx", "e_yy", "e_xy", "theta_rad"),
        calibration=CAL,
        params={"reference": [0, 2, 0, 2], "nested": {"a": 1.5, "b": "x"}},
    )
    bf = RealSpaceMap(
        rng.random((5, 6)),
        name="virtual_bf",
        units="counts",
        calibration=CAL,
        params={"detector": {"kind": "disk", "radius_px": 4.0}},
    )
    ipf = RealSpaceMap(rng.random((5, 6, 3)), name="ipf_z", channels=("r", "g", "b"), calibration=CAL)
    pattern = DiffractionImage(
        rng.random((20, 24)), name="region_pattern", units="counts", calibration=CAL, params={"region": [0, 2, 0, 3]}
    )
    rows = [
        {"qy": rng.random(k) * 20, "qx": rng.random(k) * 24, "intensity": rng.random(k), "correlation": rng.random(k)}
        for k in rng.integers(0, 5, 30)
    ]
    peaks = BraggPeaks.from_lists(rows, (5, 6), calibration=CAL, params={"detector_shape": [20, 24]})
    return strain, bf, ipf, pattern, peaks


def _same(a, b):
    assert type(a) is type(b) and a.name == b.name
    if isinstance(a, BraggPeaks):
        for f in ("offsets", "qy", "qx", "intensity", "correlation"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        assert a.scan_shape == b.scan_shape
    else:
        np.testing.assert_array_equal(a.data, b.data)
        assert a.units == b.units
        if isinstance(a, RealSpaceMap):
            assert a.channels == b.channels
    assert a.calibration == b.calibration
    for k, v in a.params.items():
        assert b.params[k] == v, k


def test_every_result_type_round_trips_without_a_datacube(tmp_path, rng):
    """A results-only file (what the pipelines and napari's File > Save write) reopens whole:
    no 'no 4D datacube' error, units kept (strain is dimensionless, not 'intensity')."""
    src = tmp_path / "input.h5"
    src.write_bytes(b"x" * 1234)
    objs = _results(rng)
    path = emd.write(tmp_path / "results.h5", *objs, source=src)
    back = emd.read(path)
    for o in objs:
        _same(o, back[o.name])
    assert back["strain"].units == ""
    import h5py

    with h5py.File(path) as f:
        units = {n.split("/")[-1]: f[n]["data"].attrs["units"] for n in ("napari_4dstem_root/strain",)}
        assert units["strain"] == "dimensionless"
        assert f.attrs["napari_4dstem_version"] == __version__
    prov = emd.read_provenance(path)
    for o in objs:
        p = prov[o.name]
        assert p["input_file"] == str(src.resolve()) and p["input_size_bytes"] == 1234
        assert p["input_mtime_utc"].endswith("Z") and p["software_version"] == __version__
        assert p["written_utc"].endswith("Z")


_P4_READ_RESULTS = textwrap.dedent(
    """
    import json, sys, py4DSTEM
    root = py4DSTEM.read(sys.argv[1], verbose=False)
    out = {}
    for name in ("strain", "virtual_bf", "ipf_z", "region_pattern", "braggpeaks"):
        o = root.tree(name)
        d = {"class": type(o).__name__}
        if name == "braggpeaks":
            v = o.raw[2, 3]
            d.update(qx=v.qx.tolist(), qy=v.qy.tolist(), I=v.I.tolist())
        else:
            d.update(shape=list(o.data.shape), sum=float(o.data.sum()))
        out[name] = d
    print(json.dumps(out))
    """
)


def test_py4dstem_reads_a_results_only_file(tmp_path, rng, p4python):
    objs = _results(rng)
    path = emd.write(tmp_path / "results.h5", *objs)
    res = subprocess.run([p4python, "-c", _P4_READ_RESULTS, str(path)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    _, bf, _, pattern, peaks = objs
    assert got["strain"]["class"] == "RealSlice" and got["strain"]["shape"] == [5, 6, 4]
    assert got["virtual_bf"]["class"] == "RealSlice"
    assert got["virtual_bf"]["sum"] == pytest.approx(bf.data.sum())
    assert got["ipf_z"]["class"] == "RealSlice"
    assert got["region_pattern"]["class"] == "DiffractionSlice"
    assert got["region_pattern"]["sum"] == pytest.approx(pattern.data.sum())
    assert got["braggpeaks"]["class"] == "BraggVectors"
    mine = peaks.at(2, 3)  # py4DSTEM's qx is our qy
    np.testing.assert_allclose(got["braggpeaks"]["qx"], mine["qy"])
    np.testing.assert_allclose(got["braggpeaks"]["I"], mine["intensity"])
