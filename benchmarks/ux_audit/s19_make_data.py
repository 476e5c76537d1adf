"""Session 15 audit data: a 4D-STEM scan of a crystal the bundled samples do not use, made with the
package's own simulation API (``simulate_cbed``, kinematic engine): cubic perovskite SrTiO3 on
[001] (a = 3.905 A, Pm-3m), 24 x 24 scan x 128 x 128 detector, a planted strain gradient
(exx from -1 % to +1 % along x, eyy from +0.5 % to -0.5 % along y, exy = 0), a descan of up to
2 px (integer shift, linear in the scan), two columns of vacuum at the left (probe only), Poisson
noise at 2e4 electrons per pattern, uint16 counts, 4 nm thick.

Writes, under OUT (argv[1], default /tmp/s19): ``sto.npy`` (plain numpy, no calibration, as a
microscopist's raw export is), ``sto.h5`` (EMD 1.0 through our writer ``io.save_datacube``, with
the true calibration), ``SrTiO3.cif`` (hand-written, for the Orientation dock), ``truth.npz``."""
import sys
import time
from pathlib import Path

import numpy as np

from napari_4dstem.analysis.crystal.structure import Crystal
from napari_4dstem.data.calibration import Calibration
from napari_4dstem.data.datacube import DataCube
from napari_4dstem.io import save_datacube
from napari_4dstem.simulation.engines import simulate_cbed

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/s19")
OUT.mkdir(parents=True, exist_ok=True)
SY = SX = 24
K = 128
PIX = 0.01  # 1/A per detector pixel
KEV, ALPHA = 300.0, 1.2
CIF = """data_SrTiO3
_cell_length_a 3.905
_cell_length_b 3.905
_cell_length_c 3.905
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P m -3 m'
_symmetry_Int_Tables_number 221
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Sr1 Sr 0.0 0.0 0.0 1.0
Ti1 Ti 0.5 0.5 0.5 1.0
O1 O 0.5 0.5 0.0 1.0
"""
(OUT / "SrTiO3.cif").write_text(CIF)
crystal = Crystal.from_cif(OUT / "SrTiO3.cif")
print("crystal", crystal.name, "atoms in cell", len(crystal.z) if hasattr(crystal, "z") else "?")
rng = np.random.default_rng(20261208)
exx = np.linspace(-0.01, 0.01, SX)
eyy = np.linspace(0.005, -0.005, SY)
data = np.zeros((SY, SX, K, K), np.uint16)
t0 = time.perf_counter()
probe = None
for iy in range(SY):
    for ix in range(SX):
        if ix < 2:
            if probe is None:
                r = simulate_cbed(crystal, shape=(K, K), pixel_size_inv_A=PIX, energy_kev=KEV, convergence_mrad=ALPHA,
                                  thicknesses_A=(40.0,))
                probe = r.probe / r.probe.sum()
            pat = probe
        else:
            e = np.array([[exx[ix], 0.0], [0.0, eyy[iy]]])
            r = simulate_cbed(crystal, shape=(K, K), pixel_size_inv_A=PIX, energy_kev=KEV, convergence_mrad=ALPHA,
                              thicknesses_A=(40.0,), strain=e)
            pat = r.patterns[0, 0] / r.patterns[0, 0].sum()
        dy, dx = int(round(2 * iy / (SY - 1))), int(round(-2 * ix / (SX - 1)))
        pat = np.roll(pat, (dy, dx), (0, 1))
        data[iy, ix] = rng.poisson(np.clip(pat, 0, None) * 2e4).astype(np.uint16)
print(f"simulated {SY*SX} patterns in {time.perf_counter()-t0:.1f} s; probe radius {r.pixel_size_inv_A}")
np.save(OUT / "sto.npy", data)
cal = Calibration(scan_step=(4.0, 4.0), scan_units="A", k_pixel_size=PIX, k_units="1/A", beam_energy_kev=KEV,
                  convergence_semiangle_mrad=ALPHA)
save_datacube(OUT / "sto.h5", DataCube(data, calibration=cal, name="sto"), overwrite=True)
np.savez(OUT / "truth.npz", exx=exx, eyy=eyy, data_sum=data.sum(dtype=np.int64))
print("wrote", sorted(p.name for p in OUT.iterdir()), "sum", int(data.sum(dtype=np.int64)), "max", int(data.max()))
