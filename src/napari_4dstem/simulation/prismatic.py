"""The Prismatic engine (pyprismatic): CPU multislice, GPL, imported only when used.

Two pyprismatic generations exist and differ in units and output:

* 1.x (PyPI, e.g. 1.1.16; builds from source with ``apt-get install libfftw3-dev libboost-dev``
  then ``pip install pyprismatic==1.1.16``): ``E0`` in volts, angles in radians, one MRC file
  per probe position (``<base>_X<i>_Y<j>_FP<k>.mrc``);
* 2.x (conda-forge ``pyprismatic``): ``E0`` in kV, angles in mrad, one HDF5 file.

:func:`prismatic_units` is the one place that converts our keV/mrad to what the installed
version wants. Every run happens in a temporary folder (atoms file in, patterns out) that is
removed afterwards, whatever happens.

Geometry: the oriented crystal fills a box ``L x L x t`` (``L = m / pixel``, see
:func:`.engines.box_geometry`) sampled on an ``N x N`` grid (``N`` a multiple of 16, as
Prismatic rounds to that); Prismatic's 4D output has reciprocal pixel ``1 / L``, origin at
index 0 and is free of aliasing inside the central half of each axis (its band limit), so we
``fftshift`` it, crop the detector and bin ``m x m``. One run per thickness and probe position
(1.x has no thickness series). The vacuum probe is the sampled aperture (all ones inside
``alpha / lambda``), binned the same way.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .._docstrings import cite
from .engines import (
    SimulationRequest,
    SimulationResult,
    bin_to_grid,
    box_geometry,
    box_result,
    engine_doc,
    installed_version,
    require_module,
    vacuum_probe_image,
)

__all__ = ["PrismaticEngine", "prismatic_units", "prismatic_version", "read_mrc"]

INSTALL_HINT = (
    "the 'prismatic' engine needs pyprismatic: `apt-get install libfftw3-dev libboost-dev` then "
    "`pip install pyprismatic==1.1.16` (about a minute to build), or `conda install -c "
    "conda-forge pyprismatic` (2.x)"
)


def prismatic_version() -> tuple[int, ...] | None:
    """The installed pyprismatic version, or None.

    Returns
    -------
    tuple of int or None
        Up to three numeric version parts; None when pyprismatic is not installed.
    """
    return installed_version("pyprismatic")


def prismatic_units(
    version: tuple[int, ...], *, energy_kev: float, convergence_mrad: float, alpha_max_mrad: float
) -> dict[str, float]:
    """Metadata values for beam energy and angles in the units of pyprismatic ``version``.

    Parameters
    ----------
    version : tuple of int
        The pyprismatic version.
    energy_kev : float
        Beam energy in keV.
    convergence_mrad : float
        Probe convergence semi-angle in mrad.
    alpha_max_mrad : float
        Largest scattering angle kept, mrad.

    Returns
    -------
    dict
        ``E0``, ``probeSemiangle``, ``alphaBeamMax``: volts and radians for 1.x, kV and mrad
        for 2.x.
    """
    if version[0] < 2:
        return {
            "E0": energy_kev * 1e3,  # volts
            "probeSemiangle": convergence_mrad * 1e-3,  # radians
            "alphaBeamMax": alpha_max_mrad * 1e-3,
        }
    return {"E0": energy_kev, "probeSemiangle": convergence_mrad, "alphaBeamMax": alpha_max_mrad}


def read_mrc(path: str | os.PathLike) -> np.ndarray:
    """Read a float32 MRC volume (Prismatic's output): array (nz, ny, nx).

    Parameters
    ----------
    path : str or PathLike
        The ``.mrc`` file (native byte order).

    Returns
    -------
    ndarray ``(nz, ny, nx)`` float32
        The volume, after the 1024-byte header and the extended header.

    Raises
    ------
    ValueError
        When the mode is not 2 (float32).
    """
    head = np.fromfile(path, np.int32, 256)
    nx, ny, nz, mode = (int(v) for v in head[:4])
    if mode != 2:
        raise ValueError(f"{path}: MRC mode {mode}, expected 2 (float32)")
    data = np.fromfile(path, np.float32, nx * ny * nz, offset=1024 + int(head[23]))
    return data.reshape(nz, ny, nx)


def _write_xyz(path: Path, Z, xyz, occ, b_iso, box) -> None:
    u = np.sqrt(np.asarray(b_iso) / (8 * np.pi**2))  # rms displacement per axis (Angstrom)
    rows = np.column_stack([Z, xyz, occ, u])
    with open(path, "w") as f:
        f.write("napari-4dstem box\n")
        f.write(f"{box[0]:.6f} {box[1]:.6f} {box[2]:.6f}\n")
        np.savetxt(f, rows, fmt=["%d", "%.5f", "%.5f", "%.5f", "%.4f", "%.5f"])
        f.write("-1\n")


class _quiet_stdout:
    """Silence Prismatic's C++ progress printing (file descriptor 1) during a run."""

    def __enter__(self):
        import sys

        sys.stdout.flush()
        self.saved = os.dup(1)
        self.null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self.null, 1)

    def __exit__(self, *exc):
        os.dup2(self.saved, 1)
        os.close(self.saved)
        os.close(self.null)


@cite
class PrismaticEngine:
    """Multislice CBED with pyprismatic (1.x or 2.x, detected).

    Parameters
    ----------
    threads : int, optional
        CPU threads of Prismatic (default all CPUs).
    pot_bound_A : float
        Radius of the projected atomic potentials, Angstrom (default 2).

    References
    ----------
    %(kirkland2010_1)s
    """

    name = "prismatic"

    def __init__(self, *, threads: int | None = None, pot_bound_A: float = 2.0):
        """Store the settings (pyprismatic is imported only when simulating)."""
        self.threads = threads or os.cpu_count() or 1
        self.pot_bound_A = float(pot_bound_A)

    def available(self) -> bool:
        """Whether pyprismatic is installed."""
        return prismatic_version() is not None

    def require(self) -> None:
        """Raise :class:`EngineNotInstalledError` (how to install) when pyprismatic is missing."""
        require_module("pyprismatic", INSTALL_HINT)

    @engine_doc
    def simulate(self, request: SimulationRequest) -> SimulationResult:
        """CBED patterns of ``request`` by Prismatic's multislice, one run per thickness.

        %(simulate)s
        """
        self.require()
        import pyprismatic

        version = prismatic_version() or (1,)
        geo = box_geometry(request, usable_fraction=0.5, grid_multiple=16)
        L, N, m = geo.box_A, geo.grid, geo.multiple
        lam = request.wavelength_A
        k_band = N / L / 4  # Prismatic's band limit: a quarter of the sampling frequency
        units = prismatic_units(
            version,
            energy_kev=request.energy_kev,
            convergence_mrad=request.convergence_mrad,
            alpha_max_mrad=k_band * lam * 1e3,
        )
        H, W = request.shape
        out = np.zeros((len(request.thicknesses_A), len(request.probe_positions_A), H, W))
        with tempfile.TemporaryDirectory(prefix="n4d-prismatic-") as tmp:
            tmp = Path(tmp)
            for it, t in enumerate(request.thicknesses_A):
                Z, xyz, occ, b = request.atoms((L, L, t))
                atoms = tmp / f"atoms_{it}.xyz"
                _write_xyz(atoms, Z, xyz, occ, b, (L, L, t))
                for ip, (py, px) in enumerate(request.probe_positions_A):
                    base = tmp / f"out_{it}_{ip}"
                    fx, fy = (L / 2 + px) / L, (L / 2 + py) / L
                    meta = pyprismatic.Metadata(
                        filenameAtoms=str(atoms),
                        filenameOutput=str(base) + (".mrc" if version[0] < 2 else ".h5"),
                    )
                    for k, v in {
                        **units,
                        "algorithm": "multislice",
                        "cellDimX": L,
                        "cellDimY": L,
                        "cellDimZ": t,
                        "tileX": 1,
                        "tileY": 1,
                        "tileZ": 1,
                        "realspacePixelSizeX": L / N,
                        "realspacePixelSizeY": L / N,
                        "potBound": self.pot_bound_A,
                        "sliceThickness": request.slice_thickness_A,
                        "numFP": max(1, request.frozen_phonons),
                        "includeThermalEffects": request.frozen_phonons > 1,
                        "randomSeed": int(request.seed) % 999999,
                        "probeDefocus": request.defocus_A,
                        "probeStepX": 10 * L,
                        "probeStepY": 10 * L,
                        "scanWindowXMin": fx,
                        "scanWindowXMax": fx + 1e-6,
                        "scanWindowYMin": fy,
                        "scanWindowYMax": fy + 1e-6,
                        "save2DOutput": False,
                        "save3DOutput": False,
                        "save4DOutput": True,
                        "numGPUs": 0,
                        "numThreads": self.threads,
                    }.items():
                        setattr(meta, k, v)
                    with _quiet_stdout():
                        meta.go()
                    cbed = self._read(tmp, base.name, version)
                    if cbed.shape != (N, N):
                        raise RuntimeError(f"Prismatic wrote a {cbed.shape} pattern, expected {N}x{N}")
                    centred = np.fft.fftshift(cbed)
                    out[it, ip] = bin_to_grid(centred, multiple=m, shape=(H, W))
                    for p in tmp.glob(base.name + "*"):
                        p.unlink()
        return box_result(
            request,
            geo,
            engine=self.name,
            patterns=out,
            prismatic_version=".".join(map(str, version)),
            pot_bound_A=self.pot_bound_A,
        )

    vacuum_probe = staticmethod(vacuum_probe_image)

    @staticmethod
    def _read(folder: Path, base: str, version: tuple[int, ...]) -> np.ndarray:
        if version[0] < 2:
            files = sorted(folder.glob(f"{base}_X0_Y0_FP*.mrc"))
            if not files:
                raise RuntimeError(f"Prismatic wrote no 4D output for {base} in {folder}")
            return np.mean([read_mrc(f)[0] for f in files], axis=0)
        import h5py

        # 2.x: a 4D datacube (x, y, qx, qy) of the first depth; not tested here (no 2.x build)
        with h5py.File(folder / f"{base}.h5", "r") as f:
            grp = f["4DSTEM_simulation/data/datacubes"]
            name = sorted(k for k in grp if k.startswith("CBED_array_depth"))[-1]
            return np.asarray(grp[name]["data"][0, 0], float).T
