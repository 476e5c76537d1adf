"""Shared fixtures: small synthetic datacubes, the real-data folder, the py4DSTEM side venv."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from napari_4dstem import Calibration, DataCube

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata is not present")
    return REALDATA


@pytest.fixture
def calibrated() -> Calibration:
    return Calibration(
        scan_step=(1.5, 2.0), scan_units="nm", k_pixel_size=0.02, k_units="1/A",
        beam_energy_kev=200.0, convergence_semiangle_mrad=2.5, ellipse=(1.0, 1.03, 25.0),
        rotation_deg=-11.0,
    )


@pytest.fixture
def small_cube(rng, calibrated) -> DataCube:
    """An awkward (odd, non-square) uint16 datacube with a calibration."""
    data = rng.poisson(3.0, (7, 9, 13, 11)).astype(np.uint16)
    om = rng.normal(6.0, 0.3, (7, 9, 2))
    return DataCube(data, calibrated.replace(origin_map_px=om), name="small")


@pytest.fixture
def p4python() -> str:
    """Python of a side venv with py4DSTEM (py4DSTEM pins numpy<2, so it cannot live here).

    Set NAPARI_4DSTEM_PY4DSTEM_PYTHON to it (.ci/run does); skipped otherwise.
    """
    exe = os.environ.get("NAPARI_4DSTEM_PY4DSTEM_PYTHON")
    if exe and Path(exe).exists():
        return exe
    try:
        import py4DSTEM  # noqa: F401
    except ImportError:
        pytest.skip("py4DSTEM is not installed (set NAPARI_4DSTEM_PY4DSTEM_PYTHON to a side venv's python)")
    import sys

    return sys.executable


@pytest.fixture
def run_copied_script():
    """Run a "Copy as Python" script in a fresh interpreter (this checkout's src first) in a
    folder; fails the test with the script's stderr when it does not exit 0."""
    import os
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[1] / "src"

    def run(text: str, cwd: Path) -> None:
        script = Path(cwd) / "copied.py"
        script.write_text(text)
        env = {**os.environ, "PYTHONPATH": str(src) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=cwd, env=env,
                             timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]

    return run
