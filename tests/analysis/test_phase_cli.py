"""``napari-4dstem phase``: each method on a simulated file, the result read back."""

import pytest

from napari_4dstem.analysis.phase._common import phase_correlation_with_truth
from napari_4dstem.analysis.phase.forward import simulate_phase_dataset
from napari_4dstem.cli import main
from napari_4dstem.io import emd


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory):
    s = simulate_phase_dataset(scan_shape=(16, 16), detector_px=48, step_A=0.25, phase_per_atom_rad=0.1, seed=1)
    path = tmp_path_factory.mktemp("phase") / "sim.h5"
    emd.write(path, s.datacube)
    return s, path


@pytest.mark.parametrize("method", ["ssb", "wdd"])
def test_cli_direct_ptychography_writes_the_phase(sim_file, tmp_path, method):
    s, path = sim_file
    out = tmp_path / f"{method}.h5"
    assert main(["-q", "phase", str(path), str(out), "--method", method]) == 0
    objs = emd.read(out)
    phase = next(v for k, v in objs.items() if k.endswith(f"{method}_phase"))
    assert phase.data.shape == (16, 16)
    assert phase_correlation_with_truth(phase.data, s.phase_at_scan)[0] >= 0.9
    assert phase.params["method"] == method


def test_cli_ssb_wiener_term_measured_by_default_or_fixed(sim_file, tmp_path):
    """No --regularization: the Wiener term is measured (the noise variance is in the result);
    --regularization X: fixed, as before; both in the recipe."""
    _, path = sim_file
    for flags, reg in (([], None), (["--regularization", "0.05"], 0.05)):
        out = tmp_path / f"ssb{len(flags)}.h5"
        assert main(["-q", "phase", str(path), str(out), "--method", "ssb", *flags]) == 0
        params = next(v for k, v in emd.read(out).items() if k.endswith("ssb_phase")).params
        assert params["regularization"] == reg
        assert ("noise_variance" in params) == (reg is None)
        assert params["recipe"]["params"]["phase"]["regularization"] == reg


def test_cli_ptycho_and_calibration_flags(sim_file, tmp_path, capsys):
    pytest.importorskip("torch")  # iterative ptychography is torch (the `nn` extra); the core venv has none
    _, path = sim_file
    out = tmp_path / "ptycho.h5"
    rc = main(
        [
            "-q",
            "phase",
            str(path),
            str(out),
            "--method",
            "ptycho",
            "--iterations",
            "2",
            "--batch-size",
            "32",
            "--energy-kev",
            "300",
        ]
    )
    assert rc == 0
    assert "error" in capsys.readouterr().out
    names = {k.split("/")[-1] for k in emd.read(out)}
    assert {"ptycho_phase", "ptycho_probe"} <= names


def test_cli_low_dose_ptycho_flags_are_used_and_recorded(sim_file, tmp_path):
    """--loss poisson --full-batch --step-decay reach PtychoParams: in the result's params and recipe."""
    pytest.importorskip("torch")
    _, path = sim_file
    out = tmp_path / "lowdose.h5"
    argv = ["-q", "phase", str(path), str(out), "--method", "ptycho", "--iterations", "2", "--batch-size", "32"]
    flags = ["--loss", "poisson", "--full-batch", "--step-decay", "0.5", "--pure-phase", "--coarse-to-fine"]
    assert main([*argv, *flags]) == 0
    params = emd.read(out)["ptycho_phase"].params
    used = params["params"]  # what the reconstruction ran with
    assert (used["loss"], used["full_batch"], used["step_decay"], used["pure_phase"]) == ("poisson", True, 0.5, True)
    assert used["coarse_to_fine"] is True
    recipe = str(params["recipe"])  # what a re-run would use
    assert all(
        t in recipe
        for t in (
            "'loss': 'poisson'",
            "'full_batch': True",
            "'step_decay': 0.5",
            "'pure_phase': True",
            "'coarse_to_fine': True",
        )
    )


def test_cli_parallax_and_bad_output(sim_file, tmp_path, capsys):
    _, path = sim_file
    assert main(["-q", "phase", str(path), str(tmp_path / "p.h5"), "--method", "parallax"]) == 0
    out = capsys.readouterr().out
    assert "defocus" in out and "95 % interval" in out  # version 3 (the default) states its interval
    # --parallax-version 1 replays the older refinement; the recipe spells the version out
    argv = ["-q", "phase", str(path), str(tmp_path / "p1.h5"), "--method", "parallax", "--parallax-version", "1"]
    assert main(argv) == 0
    maps = emd.read(tmp_path / "p1.h5")
    p1 = next(v for v in maps.values() if getattr(v, "params", {}).get("method") == "parallax")
    assert p1.params["version"] == 1 and "'parallax_version': 1" in str(p1.params["recipe"])
    assert main(["-q", "phase", str(path), str(tmp_path / "p.npy")]) == 2


def test_cli_without_convergence_angle_is_a_clear_error(tmp_path, capsys):
    s = simulate_phase_dataset(scan_shape=(8, 8), detector_px=32, bf_radius_px=6)
    from napari_4dstem import DataCube

    path = tmp_path / "nocal.h5"
    cube = DataCube(s.datacube.data, s.datacube.calibration.replace(convergence_semiangle_mrad=None))
    emd.write(path, cube)
    assert main(["-q", "phase", str(path), str(tmp_path / "o.h5")]) == 2
    assert "convergence" in capsys.readouterr().err


def test_phase_is_a_pipeline_whose_script_reproduces_it(sim_file, tmp_path, run_copied_script):
    """`phase` writes its recipe (calibration overrides included); the script of the file makes
    the same phase; a scan region is part of the recipe."""
    import numpy as np

    from napari_4dstem import open_datacube
    from napari_4dstem.pipelines import ParameterError, PhaseParams, run_phase, script_from_file

    _, path = sim_file
    out = tmp_path / "ssb.h5"
    assert (
        main(["-q", "phase", str(path), str(out), "--method", "ssb", "--defocus-A", "20", "--energy-kev", "300"]) == 0
    )
    text = script_from_file(out, tmp_path / "again.h5")
    assert "run_phase(" in text and "beam_energy_kev" in text
    assert "PhaseParams(defocus_A=20.0, parallax_version=3)" in text  # the version always spelled out
    run_copied_script(text, tmp_path)
    np.testing.assert_array_equal(emd.read(tmp_path / "again.h5")["ssb_phase"].data, emd.read(out)["ssb_phase"].data)
    dc = open_datacube(path)
    try:
        part = run_phase(dc, phase=PhaseParams(method="parallax", scan_region=(2, 14, 3, 13)), source=path)
    finally:
        dc.close()
    assert part.parallax is not None and part.maps[0].data.shape[0] >= 12
    run_copied_script(part.to_script("part.h5"), tmp_path)
    np.testing.assert_array_equal(emd.read(tmp_path / "part.h5")["parallax_bf"].data, part.maps[0].data)
    with pytest.raises(ParameterError, match="scan_region"):
        PhaseParams(scan_region=(5, 2, 0, 4))
    with pytest.raises(ParameterError, match="method must be"):
        PhaseParams(method="mixed-state-wdd")
