"""What napari's first Open imports (#15: napari calls our reader on its GUI thread, so every module
it imports there is GUI-thread CPU): only what the file needs, checked in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_4dstem.data.datacube import DataCube
from napari_4dstem.io import emd

# not imported by napari's own start-up, and needed only by some files: h5py, hdf5plugin, the XML
# parser and the HDF5 formats' readers (napari imports dask but not dask.array; docs/performance.md)
WATCHED = (
    "h5py",
    "hdf5plugin",
    "xml.etree.ElementTree",
    "napari_4dstem.io.arina",
    "napari_4dstem.io.emd",
    "napari_4dstem.io.p4legacy",
)


def _first_open(path) -> dict:
    """In a fresh process: napari's reader call (importing our reader module, ``get_reader``, then
    the reader) on ``path``, and which of ``WATCHED`` it imported."""
    code = f"""
        import json, sys
        import numpy as np
        before = {{m for m in {WATCHED!r} if m in sys.modules}}
        from napari_4dstem._reader import get_reader  # napari imports it at the first Open
        layers = get_reader({str(path)!r})({str(path)!r})
        data = layers[0][0]
        out = {{"imported": sorted(m for m in {WATCHED!r} if m in sys.modules and m not in before),
                "shape": list(data.shape), "centre": int(np.asarray(data[1, 2]).sum())}}
        print(json.dumps(out))
        """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, env=env
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def cube():
    return np.random.default_rng(5).poisson(4, size=(4, 5, 16, 16)).astype(np.uint16)


def test_opening_an_npy_imports_no_hdf5_and_no_xml(tmp_path, cube):
    p = tmp_path / "c.npy"
    np.save(p, cube)
    out = _first_open(p)
    assert out["imported"] == []
    assert out["shape"] == list(cube.shape) and out["centre"] == int(cube[1, 2].sum())


def test_opening_a_mib_imports_no_hdf5_and_no_xml(tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
    try:
        from bench_readers import write_mib
    finally:
        sys.path.pop(0)
    p = tmp_path / "c.mib"
    write_mib(p, 3, 4)
    out = _first_open(p)
    assert out["imported"] == []
    assert out["shape"] == [3, 4, 512, 512] and out["centre"] > 0


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_opening_an_emd_imports_h5py_but_not_hdf5plugin_when_no_filter_needs_it(tmp_path, cube, compression):
    p = emd.write(tmp_path / "c.h5", DataCube(cube), compression=compression)
    out = _first_open(p)
    # the ARINA sniffer looks into every HDF5 file first (its master is HDF5 too)
    assert out["imported"] == ["h5py", "napari_4dstem.io.arina", "napari_4dstem.io.emd"]
    assert out["shape"] == list(cube.shape) and out["centre"] == int(cube[1, 2].sum())
