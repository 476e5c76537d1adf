"""The .ang export read by orix (#18), in a side environment like the py4DSTEM round trip.

Set NAPARI_4DSTEM_ORIX_PYTHON to a Python with orix (e.g. a venv made with
``--system-site-packages`` plus ``pip install orix``); skipped otherwise. Conventions checked:
orix reads our Bunge angles as the rotation ``g = U^T`` (sample/lab -> crystal, orix's
``Orientation``), positions in micrometres, not-indexed points as phase -1, phase names.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from napari_4dstem.analysis.acom.result import ACOMResult
from napari_4dstem.analysis.crystal.structure import bundled_crystal
from napari_4dstem.data.calibration import Calibration
from napari_4dstem.simulation.samples import random_rotations

ORIX_SCRIPT = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
from orix import io
xmap = io.load(sys.argv[1])
print(json.dumps({
    "phase_id": xmap.get_map_data("phase_id").ravel().tolist(),
    "x": xmap.x.tolist(), "y": xmap.y.tolist(), "scan_unit": xmap.scan_unit,
    "names": {int(i): p.name for i, p in xmap.phases_in_data if i >= 0},
    "point_groups": {int(i): p.point_group.name for i, p in xmap.phases_in_data if i >= 0},
    "matrices": xmap.rotations.to_matrix().tolist(),
    "is_indexed": xmap.is_indexed.tolist(),
    "ci": xmap.prop["ci"].tolist(),
}))
"""


@pytest.fixture
def orix_python() -> str:
    exe = os.environ.get("NAPARI_4DSTEM_ORIX_PYTHON")
    if exe and Path(exe).exists():
        return exe
    pytest.skip("orix is not installed (set NAPARI_4DSTEM_ORIX_PYTHON to a side venv's python)")


def _result(sy=3, sx=4):
    rng = np.random.default_rng(3)
    U = random_rotations(sy * sx, rng).reshape(sy, sx, 1, 3, 3)
    phase = rng.integers(0, 2, (sy, sx, 1))
    phase[0, 1, 0] = -1  # not indexed
    U[0, 1] = np.nan
    corr = rng.uniform(0.3, 0.9, (sy, sx, 1))
    cal = Calibration(scan_step=(2.0, 2.0), scan_units="nm")
    return ACOMResult(
        orientation=U,
        correlation=np.where(phase >= 0, corr, 0.0),
        phase=phase,
        reliability=rng.uniform(0, 1, (sy, sx)),
        phase_reliability=np.ones((sy, sx)),
        n_peaks=np.full((sy, sx), 12),
        n_matched=np.full((sy, sx, 1), 10),
        residual_inv_A=np.full((sy, sx, 1), 0.01),
        crystals=(bundled_crystal("Au"), bundled_crystal("Ti")),
        calibration=cal,
    )


def test_ang_header_has_no_foreign_vendor_footprint(tmp_path):
    # orix takes any header line containing "ACOM" for an ASTAR file (other columns, nm)
    text = _result().write_ang(tmp_path / "m.ang").read_text()
    assert "ACOM" not in text and "EMsoft" not in text
    data = np.loadtxt(tmp_path / "m.ang", comments="#")
    assert np.allclose(data[:4, 3], [0, 0.002, 0.004, 0.006])  # x in micrometres
    assert data[1, 7] == 0 and data[1, 6] == -1  # not indexed: phase 0, CI -1


def test_orix_reads_the_ang_export(tmp_path, orix_python):
    res = _result()
    path = res.write_ang(tmp_path / "m.ang")
    script = tmp_path / "read.py"
    script.write_text(ORIX_SCRIPT)
    out = subprocess.run([orix_python, str(script), str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    d = json.loads(out.stdout.strip().splitlines()[-1])
    assert d["scan_unit"] == "um"
    sy, sx = res.scan_shape
    yy, xx = np.mgrid[0:sy, 0:sx]
    assert np.allclose(d["x"], 0.002 * xx.ravel()) and np.allclose(d["y"], 0.002 * yy.ravel())
    ph = res.phase[..., 0].ravel()
    assert np.array_equal(np.array(d["phase_id"]), np.where(ph >= 0, ph + 1, -1))
    assert d["is_indexed"] == (ph >= 0).tolist()
    assert d["names"] == {"1": "Au", "2": "Ti"}
    # TSL symmetry codes 43 / 62: orix takes the proper groups of those Laue classes
    assert d["point_groups"] == {"1": "432", "2": "622"}
    M = np.array(d["matrices"])
    U = res.orientation[:, :, 0].reshape(-1, 3, 3)
    ok = ph >= 0
    # orix's rotation from Bunge angles is g = U^T (lab/sample -> crystal); to 1e-4 (5 decimals
    # of radians in the file)
    assert np.allclose(M[ok], np.swapaxes(U[ok], -1, -2), atol=1e-4)
