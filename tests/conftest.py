"""Shared fixtures: small synthetic datacubes, the real-data folder, the py4DSTEM side venv."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_4dstem import Calibration, DataCube

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"

# The plugin's kernel warm-up compiles in a child process (widgets/_warmup.py). Here it compiles in its
# worker, as before: on a cold cache the tests' own jobs and a child would compile the same kernels twice
# (tests/widgets/test_warmup_child.py turns the child back on).
os.environ.setdefault("NAPARI_4DSTEM_WARMUP_CHILD", "0")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# Every test that needs the real detector files skips with a reason starting with this text;
# the hooks below fold those skips into one summary line (how many, why, what to do).
REALDATA_MISSING = "real detector files not found"
_REALDATA_LINE = sys._getframe().f_lineno - 1  # where the skip summary points


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"{REALDATA_MISSING} at {REALDATA}")
    return REALDATA


_realdata_runs = {"skipped": 0, "ran": 0}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when != "call" and not (report.when == "setup" and report.skipped):
        return report
    if report.skipped and isinstance(report.longrepr, tuple):
        if REALDATA_MISSING in str(report.longrepr[2]):
            _realdata_runs["skipped"] += 1
            # one location for all of them, so `-ra` folds them into a single SKIPPED line
            report.longrepr = (
                __file__,
                _REALDATA_LINE,
                f"Skipped: {REALDATA_MISSING} at {REALDATA}: these tests decode real detector "
                "files and did NOT run (put ../shared/realdata beside the clone to run them)",
            )
    elif report.when == "call" and {"realdata"} & set(getattr(item, "fixturenames", ())):
        _realdata_runs["ran"] += 1
    return report


def pytest_terminal_summary(terminalreporter):
    skipped, ran = _realdata_runs["skipped"], _realdata_runs["ran"]
    if skipped:
        terminalreporter.write_line(
            f"realdata: {skipped} real-file tests SKIPPED ({REALDATA_MISSING} at {REALDATA}); {ran} ran",
            yellow=True,
        )
    elif ran:
        terminalreporter.write_line(f"realdata: {ran} tests decoded real detector files in {REALDATA}")


@pytest.fixture
def calibrated() -> Calibration:
    return Calibration(
        scan_step=(1.5, 2.0),
        scan_units="nm",
        k_pixel_size=0.02,
        k_units="1/A",
        beam_energy_kev=200.0,
        convergence_semiangle_mrad=2.5,
        ellipse=(1.0, 1.03, 25.0),
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
        res = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
        )
        assert res.returncode == 0, res.stderr[-3000:]

    return run


def _counts_reached(steps) -> list[int]:
    """The ``done`` counts ``steps`` reached, in order, each once (0 left out).

    A job may repeat a count: the engine's threads mode yields a waiting step (the same count, no
    map) every ``WAIT_STEP_S`` while a block runs, as a Cancel point; how many depends on the load
    and on a first call's compile. A count that goes back fails here.
    """
    dones = [p.done for p in steps]
    assert dones == sorted(dones), f"progress went back: {dones}"
    return sorted(set(dones) - {0})


@pytest.fixture
def counts_reached():
    """:func:`_counts_reached`: a job's progress counts, each once, whatever its waiting steps."""
    return _counts_reached
