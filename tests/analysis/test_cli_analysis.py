"""The `virtual`, `calibrate` and `dpc` subcommands, end to end on a small .npy file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_4dstem.cli import main
from napari_4dstem.io import emd


@pytest.fixture
def npy_file(tmp_path, synth):
    rng = np.random.default_rng(4)
    iy, ix = np.indices((12, 14), dtype=np.float64)
    descan = np.stack([0.12 * iy - 0.08 * ix, 0.05 * iy + 0.1 * ix], -1)  # up to 1.5 px
    centers = np.array([23.0, 24.0]) + descan
    data = synth.disk_cube(centers, det=(48, 48), rng=rng, dtype=np.float64).astype(np.uint16)
    path = tmp_path / "cube.npy"
    np.save(path, data)
    return path, data, centers


def test_calibrate_then_virtual_and_dpc(tmp_path, npy_file, capsys):
    path, _, centers = npy_file
    cal_path = tmp_path / "cal.json"
    assert main(["-q", "calibrate", str(path), str(cal_path)]) == 0
    cal = json.loads(cal_path.read_text())
    om = np.array(cal["origin_map_px"])
    assert om.shape == (12, 14, 2) and np.abs(om - centers).max() < 0.05

    out = tmp_path / "vi.h5"
    argv = [
        "-q",
        "virtual",
        str(path),
        str(out),
        "--calibration",
        str(cal_path),
        "--descan",
        "--disk",
        "23",
        "24",
        "8",
        "--annulus",
        "23",
        "24",
        "9",
        "20",
        "--preset",
        "BF",
        "--preset",
        "ADF",
        "--bf-radius",
        "auto",
    ]
    assert main(argv) == 0
    res = emd.read(out)
    assert {"virtual_disk", "virtual_annulus", "virtual_BF", "virtual_ADF"} <= set(res)
    disk = res["virtual_disk"]
    assert disk.data.shape == (12, 14) and disk.params["descan"]
    # a detector on the edge of the bright-field disk: with the descan correction it follows
    # the beam and the image is flat (Poisson noise only); without, the descan shows
    out_raw = tmp_path / "raw.npy"
    assert main(["-q", "virtual", str(path), str(out_raw), "--disk", "23", "24", "8"]) == 0
    raw = np.load(out_raw)
    assert disk.data.std() / disk.data.mean() < 0.012  # Poisson noise: 1 / sqrt(11000)
    assert raw.std() > 2 * disk.data.std()

    out_dpc = tmp_path / "dpc.h5"
    assert main(["-q", "dpc", str(path), str(out_dpc), "--rotation", "10"]) == 0
    maps = emd.read(out_dpc)
    assert {"com", "dpc", "idpc"} <= set(maps)
    assert maps["dpc"].params["rotation_deg"] == 10.0


def test_cli_bad_input(tmp_path, npy_file, capsys):
    path, _, _ = npy_file
    out = tmp_path / "x.h5"
    assert main(["-q", "virtual", str(path), str(out)]) == 2
    assert "at least one detector" in capsys.readouterr().err
    assert main(["-q", "virtual", str(path), str(out), "--preset", "ADF"]) == 2
    assert "mrad" in capsys.readouterr().err
    assert main(["-q", "virtual", str(path), str(out), "--annulus", "5", "5", "9", "3"]) == 2
    assert "inner_px < outer_px" in capsys.readouterr().err
    assert main(["-q", "virtual", str(path), str(out), "--disk", "500", "500", "3"]) == 2
    assert "covers no pixel" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["-q", "dpc", str(path), str(out), "--calibration", str(bad)]) == 2
    assert "cannot read the calibration" in capsys.readouterr().err
    assert not out.exists()


def test_calibrate_rotation_without_dpc_signal_warns_in_one_line(tmp_path, npy_file, capsys):
    # a descan plane and Poisson noise, no phase: the rotation is arbitrary and the CLI says so
    path, _, _ = npy_file
    cal_path = tmp_path / "cal.json"
    assert main(["-q", "calibrate", str(path), str(cal_path), "--rotation"]) == 0
    out, err = capsys.readouterr()
    line = next(x for x in out.splitlines() if x.startswith("rotation:"))
    confidence = float(line.split("confidence ")[1].split()[0])
    assert confidence < 3
    warned = [x for x in err.splitlines() if "ill-conditioned" in x]
    assert len(warned) == 1 and warned[0].startswith("WARNING: DPC rotation fit is ill-conditioned")
    assert f"confidence {confidence:.2g}" in warned[0]
    assert json.loads(cal_path.read_text())["rotation_deg"] is not None


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--disk", "-30", "24", "20"], "DiskDetector(center_px=(-30.0, 24.0), radius_px=20.0)"),
        (["--annulus", "24", "24", "40", "60"], "AnnulusDetector(center_px=(24.0, 24.0), inner_px=40.0"),
        (["--rect", "48", "96", "0", "48"], "RectangleDetector(rows=(48, 96), cols=(0, 48))"),
        (["--point", "10", "48"], "PointDetector(center_px=(10.0, 48.0))"),
        (["--disk", "100", "100", "5", "--descan"], "DiskDetector(center_px=(100.0, 100.0)"),
    ],
)
def test_virtual_detector_off_the_detector_is_refused_in_one_line(tmp_path, npy_file, capsys, args, named):
    # the detector lies wholly outside the 48x48 patterns: exit 2 before any pass, one line that
    # names the detector and the detector shape, no output written
    path, _, _ = npy_file
    out = tmp_path / "vi.h5"
    assert main(["-q", "virtual", str(path), str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert named in err[0] and "covers no pixel of the 48x48 detector" in err[0]
    assert not out.exists()


def test_virtual_mask_larger_or_empty_is_refused(tmp_path, npy_file, capsys):
    path, _, _ = npy_file
    big, empty = tmp_path / "big.npy", tmp_path / "empty.npy"
    np.save(big, np.ones((64, 64), bool))
    np.save(empty, np.zeros((48, 48), bool))
    out = tmp_path / "vi.npy"
    assert main(["-q", "virtual", str(path), str(out), "--mask", str(big)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(64, 64)" in err[0] and "(48, 48)" in err[0]
    assert main(["-q", "virtual", str(path), str(out), "--mask", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "covers no pixel of the 48x48 detector" in err[0]
    assert not out.exists()
