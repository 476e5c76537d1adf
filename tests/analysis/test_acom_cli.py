"""`napari-4dstem acom` on the bundled gold polycrystal."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem._sample_data import sample_path
from napari_4dstem.cli import main


def test_acom_cli(tmp_path, capsys):
    src = sample_path("polycrystal_au")
    out, ang = tmp_path / "acom.h5", tmp_path / "acom.ang"
    rc = main(
        [
            "-q",
            "acom",
            str(src),
            str(out),
            "--crystal",
            "Au",
            "--probe",
            str(src),
            "--step",
            "3",
            "--thickness-nm",
            "10",
            "--min-peaks",
            "3",
            "--excitation-width",
            "0.04",
            "--ang",
            str(ang),
        ]
    )
    assert rc == 0
    assert "patterns indexed" in capsys.readouterr().out
    import json

    from napari_4dstem.io import emd

    res = emd.read(out)
    assert res["euler_bunge"].data.shape == (32, 32, 3)
    plan = json.loads(res["euler_bunge"].params["plans_json"])[0]
    assert plan["excitation_width_inv_A"] == 0.04 and plan["thickness_A"] == 100.0
    assert np.loadtxt(ang, comments="#").shape == (1024, 10)


def test_acom_cli_bad_crystal(tmp_path, capsys):
    rc = main(["-q", "acom", str(sample_path("polycrystal_au")), str(tmp_path / "x.h5"), "--crystal", "nope.cif"])
    assert rc == 2 and "no such CIF" in capsys.readouterr().err


def test_acom_cli_unparsable_cif(tmp_path, capsys):
    bad = tmp_path / "bad.cif"
    bad.write_text("data_x\n_cell_length_a {{{ not a number\n")
    rc = main(["-q", "acom", str(sample_path("polycrystal_au")), str(tmp_path / "x.h5"), "--crystal", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and "bad.cif" in err and "Traceback" not in err
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.slow  # two plans and two passes over 1024 patterns: about a minute on 2 cores
def test_acom_cli_writes_every_match_and_a_phase_map(tmp_path, capsys):
    src = sample_path("polycrystal_au")
    out = tmp_path / "acom2.h5"
    rc = main(
        [
            "-q",
            "acom",
            str(src),
            str(out),
            "--crystal",
            "Au",
            "--crystal",
            "Fe-bcc",
            "--probe",
            str(src),
            "--step",
            "3",
            "--min-peaks",
            "3",
            "--n-matches",
            "2",
            "--rocking-curve",
            "lorentzian",
            "--intensity-power",
            "0.25",
            "--overlap",
            "residual",
        ]
    )
    assert rc == 0
    from napari_4dstem.io import emd

    res = emd.read(out)
    # every match is written, as stacks over the scan (read_acom reads them back)
    assert res["acom_matches_orientation"].data.shape == (32, 32, 18)
    ph2 = res["acom_matches_phase"].data
    assert ph2.shape == (32, 32, 2)
    # the sample has one grain under each probe position: the residual pass finds a second grain
    # almost nowhere (measured 2 of 1024 patterns), rather than repeating the first
    assert np.any(ph2[..., 1] >= 0) and np.mean(ph2[..., 1] >= 0) < 0.05
    phase = res["phase"].data
    # the gold sample: indexed pixels are mostly phase 0 (Au), not the bcc iron offered beside it
    indexed = phase >= 0
    assert indexed.mean() > 0.5 and np.mean(phase[indexed] == 0) > 0.8


def test_acom_cli_bare_npy_names_every_missing_calibration_key(tmp_path, capsys):
    """A bare .npy has no calibration: one error naming what ACOM needs and the JSON to give."""
    import json

    cube = tmp_path / "cube.npy"
    np.save(cube, np.ones((2, 2, 16, 16), np.float32))
    rc = main(["-q", "acom", str(cube), str(tmp_path / "x.h5"), "--crystal", "Au"])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    assert "k_pixel_size" in err and "beam_energy_kev" in err and "--calibration" in err
    half = tmp_path / "cal.json"
    half.write_text(json.dumps({"k_pixel_size": 0.02, "k_units": "1/A"}))
    rc = main(["-q", "acom", str(cube), str(tmp_path / "x.h5"), "--crystal", "Au", "--calibration", str(half)])
    err = capsys.readouterr().err
    assert rc != 0 and "beam_energy_kev" in err and "the detector pixel size" not in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"pixel_size": 0.02}))
    rc = main(["-q", "acom", str(cube), str(tmp_path / "x.h5"), "--crystal", "Au", "--calibration", str(bad)])
    assert rc != 0 and "pixel_size" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


class _Captured(Exception):
    """Raised by the stand-in run: the parameters got that far."""


@pytest.fixture
def acom_params(tmp_path, monkeypatch):
    """``acom_params(*flags)``: the ACOMParams that ``napari-4dstem acom`` on the bundled gold
    polycrystal builds from ``flags``, caught where the run would start (nothing is computed;
    the CLI runs for real until the first call)."""
    from napari_4dstem import cli

    seen = {}

    def stand_in(args, job, **kwargs):
        seen.update(kwargs)
        raise _Captured

    src = str(sample_path("polycrystal_au"))
    argv = ["-q", "acom", src, str(tmp_path / "x.h5"), "--crystal", "Au", "--probe", src]

    def run(*flags):
        monkeypatch.setattr(cli, "run_on_cube", stand_in)
        seen.clear()
        with pytest.raises(_Captured):
            main([*argv, *flags])
        return seen["acom"]

    run.argv = argv
    return run


def test_acom_cli_overlap_flags_reach_the_matcher(acom_params):
    """--pair-score / --pair-pool / --pair-gain / --rank-width land in ACOMParams and in the matcher's keywords."""
    import inspect

    from napari_4dstem.analysis.acom.matching import _PAIR_GAIN, iter_match_orientations

    flags = ("--pair-score", "share", "--pair-pool", "4", "--rank-width", "12", "--pair-gain", "0.05")
    kw = acom_params(*flags).match_kwargs()
    assert (kw["pair_score"], kw["pair_pool"], kw["rank_width"], kw["pair_gain"]) == ("share", 4, 12.0, 0.05)
    assert set(kw) <= set(inspect.signature(iter_match_orientations).parameters)
    params = acom_params()  # the API's defaults
    kw = params.match_kwargs()
    assert (kw["pair_score"], kw["pair_pool"], kw["rank_width"], kw["pair_gain"]) == ("joint", 8, 0.0, 0.02)
    assert kw["pair_gain"] == _PAIR_GAIN  # the CLI's default is the matcher's
    assert params.changed() == {"crystals": ["Au"]}  # defaults are not spelled out in scripts
    with pytest.raises(SystemExit) as e:  # argparse refuses an unknown choice
        main([*acom_params.argv, "--pair-score", "best"])
    assert e.value.code == 2


def test_acom_cli_intensity_power_auto_or_a_number(acom_params, capsys):
    """--intensity-power: auto (the default, as the API) or a number in (0, 1]; else a one-line error."""
    for flag, want in (([], "auto"), (["--intensity-power", "AUTO"], "auto"), (["--intensity-power", "0.5"], 0.5)):
        assert acom_params(*flag).match_kwargs()["intensity_power"] == want
    for bad in ("1.5", "0", "amplitudes"):
        with pytest.raises(SystemExit) as e:
            main([*acom_params.argv, "--intensity-power", bad])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "--intensity-power" in err and len(err.strip().splitlines()) == 1


def test_pair_gain_default_is_the_matchers_and_always_is_accepted():
    """ACOMParams and the CLI spell the matcher's default pair gain (one number in three places:
    retuning the matcher's constant must reach them); -1 and -inf (always) are accepted, NaN not."""
    import math

    from napari_4dstem.analysis.acom import matching
    from napari_4dstem.pipelines.params import ACOMParams, ParameterError

    assert ACOMParams().pair_gain == matching._PAIR_GAIN
    ACOMParams(pair_gain=-1.0)
    ACOMParams(pair_gain=-math.inf)
    with pytest.raises(ParameterError):
        ACOMParams(pair_gain=math.nan)


def test_acom_cli_turn_line_flag_and_turn_ambiguous_map(tmp_path, acom_params):
    """``--turn-line`` reaches the matcher (default the matcher's 0.1), and the output file
    carries the ``turn_ambiguous`` map: 1 on a pattern 2 deg from Au [111] (its zone partner
    draws the same peaks), 0 on an off-zone pattern; all 0 with ``--turn-line 0``."""
    from napari_4dstem.analysis.acom.matching import kinematic_bragg_peaks
    from napari_4dstem.analysis.acom.plan import build_orientation_plan, rotation_z
    from napari_4dstem.analysis.acom.turn import TURN_LINE, turn_partners
    from napari_4dstem.analysis.crystal.structure import bundled_crystal
    from napari_4dstem.data.results import BraggPeaks
    from napari_4dstem.io import emd
    from napari_4dstem.simulation.samples import random_rotations

    au = bundled_crystal("Au")
    # 2 deg from [111] (tilted about [1-10]); an orientation whose rows are lab x, y, z in the crystal frame
    a = np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(2.0)
    d = (np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K) @ np.array([1.0, 1.0, 1.0])
    d /= np.linalg.norm(d)
    e1 = np.cross(d, [0.3, 0.5, 0.8])
    e1 /= np.linalg.norm(e1)
    near = rotation_z(0.3) @ np.stack([e1, np.cross(d, e1), d])
    plan = build_orientation_plan(au, energy_kev=300, k_max_inv_A=1.5, step_deg=3.0)
    Us = random_rotations(40, np.random.default_rng(5))
    _, D, _ = turn_partners(plan, Us[:, None])
    far = Us[int(np.argmax(np.where(np.isfinite(D[:, 0]), D[:, 0], -1.0)))]
    kw = dict(k_max_inv_A=1.5, thickness_A=100.0, origin_px=(128.0, 128.0))
    pk = kinematic_bragg_peaks(au, np.stack([near, far]), **kw)
    pk = BraggPeaks.from_lists(
        [pk.at(0, i) for i in range(2)], (1, 2), calibration=pk.calibration, params={"detector_shape": [256, 256]}
    )
    src = emd.write(tmp_path / "peaks.h5", pk)
    argv = ["-q", "acom", str(src), "--crystal", "Au", "--step", "3", "--min-peaks", "3", "--k-max", "1.5"]
    assert main([*argv[:3], str(tmp_path / "a.h5"), *argv[3:]]) == 0
    out = emd.read(tmp_path / "a.h5")
    assert out["turn_ambiguous"].data.tolist() == [[1, 0]]
    assert out["euler_bunge"].params["turn_line"] == TURN_LINE
    assert main([*argv[:3], str(tmp_path / "b.h5"), *argv[3:], "--turn-line", "0"]) == 0
    out = emd.read(tmp_path / "b.h5")
    assert out["turn_ambiguous"].data.tolist() == [[0, 0]] and out["euler_bunge"].params["turn_line"] == 0.0

    assert acom_params("--turn-line", "0.25").match_kwargs()["turn_line"] == 0.25
    with pytest.raises(SystemExit) as e:
        main([*acom_params.argv, "--turn-line", "-1"])
    assert e.value.code == 2


def test_acom_cli_rank_likelihood_flag_reaches_the_matcher(acom_params):
    """--rank-likelihood lands in ACOMParams and the matcher's keywords; without it, off (and unwritten)."""
    assert acom_params("--rank-likelihood").match_kwargs()["rank_likelihood"] is True
    params = acom_params()
    assert params.match_kwargs()["rank_likelihood"] is False
    assert "rank_likelihood" not in params.changed()
