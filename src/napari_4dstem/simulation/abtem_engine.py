"""The abTEM engine: multislice CBED with abTEM (GPL-3), imported only when used.

``pip install abtem`` (or ``pip install napari-4dstem[sim]``); tested with abTEM 1.0.11.

Geometry and conventions are those of the Prismatic adapter (:mod:`.prismatic`): the oriented,
strained crystal fills a box ``L x L x t`` with ``L = m / pixel`` (:func:`.engines.box_geometry`
with ``usable_fraction=2/3``, abTEM's default anti-aliasing aperture), sampled on an ``N x N``
grid; abTEM's diffraction patterns (reciprocal pixel ``1 / L``, ``fftshift``-ed so the beam is
at ``N // 2``) are cropped and binned ``m x m`` (:func:`.engines.bin_to_grid`) onto the
detector, beam at ``(H // 2, W // 2)``, intensities as fractions of the incident beam.

Translations to abTEM, all in :meth:`AbTEMEngine.simulate`:

* abTEM arrays are indexed ``(x, y)``; ours ``(y, x)``: every pattern is transposed.
* probe positions: ours ``(y, x)`` relative to the box centre -> abTEM ``(x, y)`` from the
  box corner (:class:`abtem.CustomScan`).
* energy keV -> eV; convergence semi-angle in mrad (``semiangle_cutoff``, abTEM's soft-edged
  aperture); defocus: abTEM's ``defocus`` is ``-C10``, positive = the probe focuses *below*
  the entrance surface (underfocus), which is our convention: the value is passed unchanged
  (``test_defocus_sign`` propagates a defocused probe through vacuum to its focus).
* potential: independent-atom model with the Lobato & Van Dyck (2014) parametrisation by
  default (``parametrization='kirkland'`` for Kirkland 2010), infinite projection (each atom's
  projected potential in the slice holding its centre).
* thickness series: one run through the deepest crystal, slices cut so that every requested
  thickness is a slice boundary, one exit plane per thickness (abTEM ``exit_planes``).
* frozen phonons (``request.frozen_phonons > 1``): :class:`abtem.FrozenPhonons` with
  per-atom Gaussian displacements of rms ``sqrt(B / (8 pi^2))`` along x, y and z from the
  crystal's isotropic B factors, seeded by ``request.seed``; the patterns are the mean over
  the configurations (thermal diffuse scattering appears; Bragg intensities get their
  Debye-Waller damping). With one configuration the atoms sit still (no Debye-Waller factor).
* partial occupancy: abTEM has none; a site with occupancy < 1 is kept with that probability
  (one draw from ``default_rng(seed)``, the same for every configuration).

Computation: abTEM builds a lazy dask graph; it is computed with dask's ``synchronous``
scheduler by default (one task at a time in the calling thread; FFTs use ``threads`` FFTW
threads), or ``scheduler='threads'`` (``threads`` dask workers, one FFTW thread each).
``device='gpu'`` runs abTEM on CUDA through cupy; without cupy it falls back to the CPU with an
:class:`AbTEMDeviceWarning`. The used device is recorded in ``params['device']``.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np

from ..errors import Napari4DSTEMError
from .engines import (
    SimulationRequest,
    SimulationResult,
    bin_to_grid,
    box_geometry,
    box_result,
    engine_doc,
    installed_version,
    require_module,
    slice_plan,
)

__all__ = ["AbTEMDeviceWarning", "AbTEMEngine", "abtem_version", "slice_plan"]

INSTALL_HINT = (
    "the 'abtem' engine needs abTEM (GPL-3): `pip install abtem` (tested with 1.0.11) or "
    "`pip install napari-4dstem[sim]`"
)
USABLE_FRACTION = 2 / 3  # abTEM's default anti-aliasing cutoff (config 'antialias.cutoff')


class AbTEMDeviceWarning(UserWarning):
    """The requested device is not usable; abTEM runs on the CPU instead."""


def abtem_version() -> tuple[int, ...] | None:
    """The installed abTEM version, or None.

    Returns
    -------
    tuple of int or None
        Up to three numeric version parts; None when abTEM is not installed.
    """
    return installed_version("abtem")


class AbTEMEngine:
    """Multislice CBED with abTEM.

    Parameters
    ----------
    device : {'cpu', 'gpu'}
        Where abTEM computes; 'gpu' needs cupy and falls back to the CPU (with a warning)
        without it.
    threads : int
        FFTW threads (synchronous scheduler) or dask workers (threads scheduler). Default 1:
        FFTW's threads only pay on large grids of an idle machine; on 2 busy cores 2 FFTW
        threads made a 144 x 144 run 15-30x slower than 1.
    parametrization : {'lobato', 'kirkland'}
        Atomic potential parametrisation.
    scheduler : {'synchronous', 'threads'}
        dask scheduler used to compute abTEM's lazy result.
    fft_planning : {'estimate', 'measure'}
        FFTW planning effort. 'measure' plans each new grid size by timing (about 20 s for
        480 x 480 on one core) for FFTs a few percent faster: worth it only for many patterns
        on one grid.

    Raises
    ------
    Napari4DSTEMError
        When an option is not one of its choices.
    """

    name = "abtem"

    def __init__(
        self,
        *,
        device: str = "cpu",
        threads: int = 1,
        parametrization: str = "lobato",
        scheduler: str = "synchronous",
        fft_planning: str = "estimate",
    ):
        """Check and store the options (abTEM is imported only when simulating)."""
        if device not in ("cpu", "gpu"):
            raise Napari4DSTEMError(f"abTEM device must be 'cpu' or 'gpu', got {device!r}")
        if parametrization not in ("lobato", "kirkland"):
            raise Napari4DSTEMError(f"abTEM parametrization must be 'lobato' or 'kirkland', got {parametrization!r}")
        if scheduler not in ("synchronous", "threads"):
            raise Napari4DSTEMError(f"scheduler must be 'synchronous' or 'threads', got {scheduler!r}")
        if fft_planning not in ("estimate", "measure"):
            raise Napari4DSTEMError(f"fft_planning must be 'estimate' or 'measure', got {fft_planning!r}")
        self.fft_planning = fft_planning
        self.device = device
        self.threads = max(1, int(threads))
        self.parametrization = parametrization
        self.scheduler = scheduler

    def available(self) -> bool:
        """Whether abTEM is installed."""
        return importlib.util.find_spec("abtem") is not None

    def require(self) -> None:
        """Raise :class:`EngineNotInstalledError` (how to install) when abTEM is missing."""
        require_module("abtem", INSTALL_HINT)

    def resolved_device(self) -> str:
        """The device abTEM will use: 'gpu' only when asked for and cupy imports."""
        if self.device == "gpu":
            try:
                import cupy

                if cupy.cuda.runtime.getDeviceCount() < 1:
                    raise RuntimeError("no CUDA device")
            except Exception as e:  # ImportError, or a CUDA runtime error
                warnings.warn(
                    f"abTEM device 'gpu' needs cupy with a working CUDA device ({e}); running on the CPU",
                    AbTEMDeviceWarning,
                    stacklevel=3,
                )
                return "cpu"
        return self.device

    def probe(self, request: SimulationRequest, *, extent_A: float, gpts: int):
        """The abTEM :class:`~abtem.Probe` of a request (energy, aperture, defocus) on a grid."""
        import abtem

        return abtem.Probe(
            extent=extent_A,
            gpts=(gpts, gpts),
            energy=request.energy_kev * 1e3,  # eV
            semiangle_cutoff=request.convergence_mrad,  # mrad
            defocus=request.defocus_A,  # abTEM: -C10, positive = underfocus, as ours
        )

    def _atoms(self, request: SimulationRequest, L: float, t: float):
        from ase import Atoms

        Z, xyz, occ, b = request.atoms((L, L, t))
        if np.any(occ < 1):
            keep = np.random.default_rng(request.seed).random(len(occ)) < occ
            Z, xyz, b = Z[keep], xyz[keep], b[keep]
        atoms = Atoms(numbers=Z, positions=xyz, cell=[L, L, t], pbc=True)
        return atoms, np.sqrt(np.maximum(b, 0.0) / (8 * np.pi**2))

    @engine_doc
    def simulate(self, request: SimulationRequest) -> SimulationResult:
        """CBED patterns of ``request`` by abTEM's multislice, every thickness in one pass.

        %(simulate)s
        Napari4DSTEMError
            When frozen phonons are asked for an empty box.
        """
        self.require()
        import abtem

        device = self.resolved_device()
        geo = box_geometry(request, usable_fraction=USABLE_FRACTION, grid_multiple=2)
        L, N, m = geo.box_A, geo.grid, geo.multiple
        slices, exit_of = slice_plan(request.thicknesses_A, request.slice_thickness_A)
        t_max = max(request.thicknesses_A)
        atoms, sigmas = self._atoms(request, L, t_max)
        if request.frozen_phonons > 1:
            if len(atoms) == 0:
                raise Napari4DSTEMError("no atoms in the simulated box: nothing to displace")
            atoms = abtem.FrozenPhonons(
                atoms,
                num_configs=int(request.frozen_phonons),
                sigmas=[float(s) for s in sigmas],
                seed=int(request.seed),
            )
        planes = tuple(sorted(set(exit_of.values())))
        # positions: ours (y, x) from the box centre -> abTEM (x, y) from the corner
        pos = np.asarray(request.probe_positions_A, float)
        scan = abtem.CustomScan(np.column_stack([L / 2 + pos[:, 1], L / 2 + pos[:, 0]]))
        dask_kw = {"scheduler": self.scheduler}
        fftw_threads = self.threads
        if self.scheduler == "threads":
            dask_kw["num_workers"] = self.threads
            fftw_threads = 1
        with abtem.config.set(
            {
                "device": device,
                "diagnostics.progress_bar": False,
                "fftw.threads": fftw_threads,
                "fftw.planning_effort": f"FFTW_{self.fft_planning.upper()}",
            }
        ):
            potential = abtem.Potential(
                atoms,
                gpts=(N, N),
                slice_thickness=slices,
                parametrization=self.parametrization,
                exit_planes=planes,
                device=device,
            )
            probe = self.probe(request, extent_A=L, gpts=N)
            measured = probe.multislice(
                potential,
                scan=scan,
                detectors=abtem.PixelatedDetector(max_angle="full"),
                lazy=True,
            )
            dp = np.asarray(measured.compute(**dask_kw).to_cpu().array, dtype=np.float64)
            vacuum = probe.build(scan=abtem.CustomScan([[L / 2, L / 2]]), lazy=False)
            vac = np.asarray(vacuum.diffraction_patterns(max_angle="full").to_cpu().array, np.float64)
        # (exit planes, positions, kx, ky); abTEM drops length-1 axes of the ensemble
        n_pos = len(request.probe_positions_A)
        dp = dp.reshape(len(planes), n_pos, N, N)
        H, W = request.shape
        out = np.empty((len(request.thicknesses_A), n_pos, H, W), np.float32)
        for it, t in enumerate(request.thicknesses_A):
            ip = planes.index(exit_of[t])
            out[it] = bin_to_grid(dp[ip].swapaxes(-1, -2), multiple=m, shape=(H, W))
        p = bin_to_grid(vac.reshape(N, N).T, multiple=m, shape=(H, W))
        version = abtem_version() or ()
        return box_result(
            request,
            geo,
            engine=self.name,
            patterns=out,
            probe=p / p.sum(),
            abtem_version=".".join(map(str, version)),
            n_slices=len(slices),
            parametrization=self.parametrization,
            projection="infinite",
            device=device,
            scheduler=self.scheduler,
            threads=self.threads,
            fft_planning=self.fft_planning,
        )
