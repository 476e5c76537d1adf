"""Command-line parameters are validated before any work: one line on stderr, exit code 2;
outputs are checked before computing, and --overwrite replaces only what existed at the start."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem import DataCube
from napari_4dstem.cli import main
from napari_4dstem.io import save_datacube


@pytest.fixture
def cube(tmp_path):
    a = np.random.default_rng(0).integers(0, 50, (4, 4, 8, 8), dtype=np.uint16)
    return save_datacube(tmp_path / "in.npy", DataCube(a))


@pytest.mark.parametrize(
    "argv",
    [
        ["convert", "IN", "OUT.npy", "--bin-k", "0"],
        ["convert", "IN", "OUT.npy", "--bin-scan", "-2"],
        ["convert", "IN", "OUT.npy", "--scan-shape", "0", "4"],
        ["acom", "IN", "OUT.h5", "--crystal", "Si", "--step", "0"],
        ["acom", "IN", "OUT.h5", "--crystal", "Si", "--k-max", "-1"],
        ["acom", "IN", "OUT.h5", "--crystal", "Si", "--thickness-nm", "-5"],
        ["acom", "IN", "OUT.h5", "--crystal", "Si", "--step", "nan"],
        ["calibrate", "IN", "OUT.json", "--ring", "9", "3"],
        ["calibrate", "IN", "OUT.json", "--ring", "-1", "3"],
        ["disks", "IN", "OUT.h5", "--max-peaks", "0"],
        ["disks", "IN", "OUT.h5", "--min-relative", "1.5"],
        ["infer", "IN", "OUT.h5", "--probe", "p.npy", "--batch-size", "0"],
        ["train", "IN", "OUTDIR", "--epochs", "0"],
        ["train", "IN", "OUTDIR", "--lr", "-1e-3"],
        ["simulate", "OUTDIR", "--thickness", "400", "20"],
        ["simulate", "OUTDIR", "-n", "0"],
        ["virtual", "IN", "OUT.h5", "--scheduler", "not an address"],
    ],
)
def test_bad_parameters_exit_2_with_one_line(argv, cube, tmp_path, capsys):
    argv = [a.replace("IN", str(cube)).replace("OUT", str(tmp_path / "out")) for a in argv]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error:" in err, err
    assert not list(tmp_path.glob("out*"))


def test_scheduler_without_distributed_is_refused_at_parse(monkeypatch, cube, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "distributed" else real(name, *a))  # fmt: skip
    with pytest.raises(SystemExit) as e:
        main(["virtual", str(cube), str(tmp_path / "v.h5"), "--scheduler", "tcp://h:8786"])
    assert e.value.code == 2 and "not installed" in capsys.readouterr().err


def test_existing_output_is_refused_before_the_work(tmp_path, capsys):
    out = tmp_path / "out.npy"
    out.write_bytes(b"precious")
    # the input does not even exist: the output is checked first, so that is what is reported
    assert main(["convert", str(tmp_path / "missing.npy"), str(out)]) == 2
    err = capsys.readouterr().err
    assert "output file exists" in err and "missing.npy" not in err
    assert out.read_bytes() == b"precious"


def test_overwrite_replaces_only_what_existed_at_start(cube, tmp_path, monkeypatch, capsys):
    import napari_4dstem.io as io

    out = tmp_path / "out.npy"
    out.write_bytes(b"old")
    assert main(["convert", str(cube), str(out), "--overwrite"]) == 0
    assert "replaced the existing" in capsys.readouterr().err
    assert np.load(out).shape == (4, 4, 8, 8)
    # now the output appears while the command runs: it is not ours, it is kept
    fresh = tmp_path / "fresh.npy"
    real = io.open_datacube

    def open_and_intrude(*a, **k):
        fresh.write_bytes(b"someone else's")
        return real(*a, **k)

    monkeypatch.setattr(io, "open_datacube", open_and_intrude)
    assert main(["convert", str(cube), str(fresh), "--overwrite"]) == 2
    assert fresh.read_bytes() == b"someone else's"
    assert "output file exists" in capsys.readouterr().err
