"""Prismatic adapter: units per version and file handling with a fake module; the real
engine (when installed) against the kinematic engine on a thin crystal."""

import sys
import types

import numpy as np
import pytest

from napari_4dstem.analysis.crystal.structure import bundled_crystal
from napari_4dstem.simulation import prismatic as pm
from napari_4dstem.simulation.engines import EngineNotInstalledError, SimulationRequest, get_engine
from napari_4dstem.simulation.kinematic import excited_reflections

AU = bundled_crystal("Au")
A = AU.lattice[0, 0]


def test_units_per_version():
    v1 = pm.prismatic_units((1, 1, 16), energy_kev=300.0, convergence_mrad=2.0, alpha_max_mrad=20.0)
    assert v1 == {"E0": 300e3, "probeSemiangle": 2e-3, "alphaBeamMax": 20e-3}
    v2 = pm.prismatic_units((2, 0, 0), energy_kev=300.0, convergence_mrad=2.0, alpha_max_mrad=20.0)
    assert v2 == {"E0": 300.0, "probeSemiangle": 2.0, "alphaBeamMax": 20.0}


def _write_mrc(path, arr):
    head = np.zeros(256, np.int32)
    head[:4] = (arr.shape[1], arr.shape[0], 1, 2)
    with open(path, "wb") as f:
        head.tofile(f)
        arr.astype(np.float32).tofile(f)


def test_fake_module_file_handling(monkeypatch, tmp_path):
    seen = {}

    class Metadata:
        def __init__(self, **kw):
            self.__dict__.update(kw)

        def go(self):
            seen.update(self.__dict__)
            n = round(self.cellDimX / self.realspacePixelSizeX)
            pat = np.zeros((n, n))
            pat[0, 0] = 0.9  # the unscattered beam sits at index 0 in Prismatic's output
            pat[0, 3 * 5] = 0.1  # a reflection 5 detector pixels along +x (m = 3)
            base = self.filenameOutput[:-4]
            _write_mrc(base + "_X0_Y0_FP1.mrc", pat)
            seen["dir"] = base.rsplit("/", 1)[0]

    fake = types.ModuleType("pyprismatic")
    fake.Metadata = Metadata
    monkeypatch.setitem(sys.modules, "pyprismatic", fake)
    monkeypatch.setattr(pm, "prismatic_version", lambda: (1, 1, 16))
    r = SimulationRequest(
        AU,
        thicknesses_A=(10.0,),
        shape=(32, 32),
        pixel_size_inv_A=0.05,
        convergence_mrad=3.0,
        box_multiple=3,
    )
    res = pm.PrismaticEngine(threads=1).simulate(r)
    assert seen["E0"] == 300e3 and seen["probeSemiangle"] == pytest.approx(3e-3)
    assert seen["cellDimZ"] == 10.0 and seen["cellDimX"] == pytest.approx(60.0)
    assert res.patterns.shape == (1, 1, 32, 32)
    assert res.patterns[0, 0, 16, 16] == pytest.approx(0.9) and res.patterns[0, 0, 16, 21] == pytest.approx(0.1)
    assert res.probe.sum() == pytest.approx(1.0)
    import os

    assert not os.path.exists(seen["dir"])  # temporary folder removed
    monkeypatch.setattr(pm, "prismatic_version", lambda: (2, 0, 0))
    res2 = pm.PrismaticEngine(threads=1)
    seen.clear()
    with pytest.raises(OSError):  # the fake writes no HDF5; the units were already set for 2.x
        res2.simulate(r)
    assert seen["E0"] == 300.0 and seen["probeSemiangle"] == pytest.approx(3.0)


def test_not_installed_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyprismatic", None)
    with pytest.raises(EngineNotInstalledError, match="libfftw3-dev libboost-dev.*pyprismatic==1.1.16"):
        get_engine("prismatic")


def test_cross_check_against_kinematic():
    # real Prismatic multislice (about 6 s; CI builds pyprismatic so this runs there)
    pytest.importorskip("pyprismatic")
    r = SimulationRequest(
        AU,
        thicknesses_A=(10.0,),
        convergence_mrad=1.5,
        shape=(64, 64),
        pixel_size_inv_A=(2 / A) / 12,
        energy_kev=300.0,
    )
    P = get_engine("prismatic", threads=2).simulate(r).patterns[0, 0]
    K = get_engine("kinematic").simulate(r).patterns[0, 0]
    refl = excited_reflections(r)
    yy, xx = np.mgrid[:64, :64]
    R = r.probe_radius_px

    def centre(img, cy, cx):  # clipped centroid: the disk outline, not its inside, decides
        m = np.hypot(yy - cy, xx - cx) < R + 1.5
        w = np.minimum(img * m, 0.25 * (img * m).max())
        return np.array([(w * yy).sum(), (w * xx).sum()]) / w.sum(), (img * m).sum()

    err, ip, ik, seen = [], [], [], set()
    for qy, qx in zip(refl.qy, refl.qx, strict=True):
        key = (round(qy, 2), round(qx, 2))
        if 6 < qy < 58 and 6 < qx < 58 and key not in seen and np.hypot(qy - 32, qx - 32) > 1:
            seen.add(key)
            a, i_p = centre(P, qy, qx)
            b, i_k = centre(K, qy, qx)
            if i_k > 1e-4:
                err.append(np.hypot(*(a - b)))
                ip.append(i_p)
                ik.append(i_k)
    assert len(err) > 20
    assert max(err) < 0.3 and np.median(err) < 0.1
    assert np.corrcoef(ip, ik)[0, 1] > 0.99
