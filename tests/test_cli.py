import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from napari_4dstem import DataCube
from napari_4dstem.cli import main
from napari_4dstem.io import emd


def test_info_text_and_json(tmp_path, small_cube, capsys):
    p = emd.write(tmp_path / "a.h5", small_cube)
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "(7, 9, 13, 11)  (scan_y, scan_x, k_y, k_x)" in out and "uint16" in out
    assert main(["info", "--json", str(p)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [7, 9, 13, 11] and info["format"] == "emd"
    assert info["calibration"]["scan_units"] == "nm" and info["chunks"] == [7, 9, 13, 11]
    assert info["nodes"][0]["class"] == "DataCube"


def test_info_on_a_results_file_lists_its_nodes(tmp_path, capsys):
    from napari_4dstem import RealSpaceMap

    p = emd.write(tmp_path / "r.h5", RealSpaceMap(np.zeros((3, 4)), name="bf"))
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "/napari_4dstem_root/bf" in out and "RealSlice" in out and "(3, 4)" in out


def test_convert_with_binning(tmp_path, small_cube, capsys):
    src = emd.write(tmp_path / "a.h5", small_cube)
    out = tmp_path / "b.h5"
    assert main(["-q", "convert", str(src), str(out), "--bin-k", "2", "--compression", "gzip"]) == 0
    with emd.read_datacube(out) as dc:
        assert dc.shape == (7, 9, 6, 5)
        a = np.asarray(small_cube.data)[:, :, :12, :10].astype(np.uint32)
        np.testing.assert_array_equal(dc.data[()], a.reshape(7, 9, 6, 2, 5, 2).sum(axis=(3, 5)))
    assert main(["-q", "convert", str(src), str(tmp_path / "c.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), np.asarray(small_cube.data))


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    np.save(tmp_path / "two.npy", np.zeros((3, 4)))
    assert main(["info", str(tmp_path / "two.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "two.npy: not a 4D-STEM file" in err
    assert main(["info", str(tmp_path / "none.h5")]) == 2
    assert "none.h5: no such file" in capsys.readouterr().err
    src = emd.write(tmp_path / "a.h5", DataCube(np.zeros((2, 2, 4, 4), np.uint8)))
    (tmp_path / "exists.h5").write_bytes(b"keep me")
    assert main(["convert", str(src), str(tmp_path / "exists.h5")]) == 2
    assert "output file exists" in capsys.readouterr().err
    assert (tmp_path / "exists.h5").read_bytes() == b"keep me"


def test_demo_writes_results_and_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"results: {out / 'results.h5'}" in printed
    res = emd.read(out / "results.h5")
    assert {"mean_pattern", "max_pattern", "total_counts"} <= set(res)
    with h5py.File(out / "results.h5") as f:
        assert f.attrs["emd_group_type"] == "file"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "patterns.png" in pngs
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["-q", "demo", "--out", str(out)]) == 2  # refuses to overwrite
    assert main(["-q", "demo", "--out", str(out), "--overwrite"]) == 0


def test_console_script_runs():
    res = subprocess.run([sys.executable, "-m", "napari_4dstem.cli", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("napari-4dstem ")


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2


def test_simulate_with_our_multislice_and_detection_labels(tmp_path, capsys):
    pytest.importorskip("torch")
    from napari_4dstem.simulation.shards import ShardSet, read_manifest

    out = tmp_path / "set"
    args = [
        "-q",
        "simulate",
        str(out),
        "-n",
        "2",
        "--shard-size",
        "2",
        "--engine",
        "multislice",
        "--shape",
        "48",
        "48",
        "--pixel-size",
        "0.03",
        "0.03",
        "--convergence",
        "3",
        "3",
        "--thickness",
        "10",
        "20",
        "--energy",
        "300",
        "--crystal",
        "Si",
        "--label-heights",
        "uniform",
        "--label-min-weight",
        "0.01",
    ]
    assert main(args) == 0
    spec = read_manifest(out)["spec"]
    assert spec["engine"] == "multislice" and spec["label_heights"] == "uniform"
    s = ShardSet(out)[0]
    assert abs(float(s.pattern.sum()) - 1) < 0.02  # fractions of the beam, thin crystal
    iy, ix = np.round(s.bragg["qy"]).astype(int), np.round(s.bragg["qx"]).astype(int)
    assert np.all(s.label[iy, ix] > 0.6)  # every listed reflection is a peak of height ~1


def test_warmup_compiles_each_group_once_per_dtype(capsys):
    """`napari-4dstem warmup`: every group of kernels once per dtype, the orientation matcher (peak
    lists, no dtype) once; a bad dtype is one line and exit 2."""
    from napari_4dstem.analysis.warm import CORE_STEPS, iter_warm

    ran = [(d, s) for d, s, _ in iter_warm(["uint8", "float32"])]
    names = [f.__name__ for f in CORE_STEPS]
    assert ran == [("uint8", n) for n in names] + [("float32", n) for n in names if n != "warm_acom"]
    assert main(["warmup", "--dtype", "uint8"]) == 0
    out = capsys.readouterr().out
    assert "warm_bragg" in out and "kernels ready" in out
    assert main(["warmup", "--dtype", "nonsense"]) == 2
    assert "--dtype" in capsys.readouterr().err
