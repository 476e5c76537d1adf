"""Our own multislice engine, in PyTorch: on the CPU, and on a CUDA GPU when there is one.

Why a fourth engine: Prismatic (GPL, CPU build here) and abTEM (GPL) are optional extras, and
neither is installed on a GPU machine without a build or a network. This engine needs only
torch (the ``nn`` extra), runs the same code on CPU and GPU, and simulates a thick crystal on a
GPU in milliseconds, which is what training the disk-detection network on multislice data
needs.

The physics is the textbook multislice method (Cowley & Moodie 1957; Kirkland, *Advanced
Computing in Electron Microscopy*, 2nd ed., ch. 6), in Kirkland's conventions:

* **Potential, exact in Fourier space.** The phase an atom's projected potential gives the
  wave is ``sigma v_z(r)``; with ``sigma = 2 pi gamma m0 e lambda / h^2`` and
  ``v_z(q) = (h^2 / 2 pi m0 e) f_e(|q|)`` the constants cancel and a slice of atoms ``j``
  gives the phase, per Fourier coefficient of a box of area ``A``,

      phi(q) = (gamma lambda / A) sum_j occ_j f_e,j(|q|) exp(-2 pi i q . r_j)

  with the Peng (1996) scattering factors (:mod:`napari_4dstem.analysis.crystal.scattering`). The sum
  over atoms is separable, ``exp(-2 pi i qy y) exp(-2 pi i qx x)``, so for one element it is
  one complex matrix product ``E_y^T diag(occ) E_x`` (rows: atoms): exact sub-pixel atom
  positions, no real-space sampling of the sharp core of the potential, no aliasing of it.
* **Transmission** ``t = exp(i phi(r))``, band-limited to 2/3 of the grid's Nyquist frequency
  (as is the propagator) so that products do not alias; the detector is cropped inside that
  band (``box_geometry(usable_fraction=2/3)``).
* **Propagation** by the Fresnel propagator ``P(k) = exp(-i pi lambda dz |k|^2)``.
* **Probe** ``psi_0(k) = A(k) exp(-i chi(k))``, ``A`` the aperture ``|k| lambda <= alpha``,
  ``chi(k) = -pi lambda Delta_f |k|^2`` (Kirkland: ``Delta_f > 0`` underfocus, no Cs),
  normalised so that the vacuum pattern sums to 1.
* **Thermal diffuse scattering**: with ``frozen_phonons > 1``, that many configurations with
  Gaussian displacements of rms ``sqrt(B / 8 pi^2)`` per axis, intensities averaged; with one
  configuration the potential carries the Debye-Waller factor ``exp(-B q^2 / 4)`` instead.

Thickness series come from one pass: slice boundaries include every requested thickness and
the pattern is recorded there. Probe positions are one batch. The box and the detector grid
follow :func:`.engines.box_geometry` (box ``L = m / pixel``, ``m x m`` binning), so all
engines share the detector geometry.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np

from .._docstrings import cite
from ..analysis.crystal.scattering import peng_coefficients
from .engines import (
    EngineNotInstalledError,
    SimulationRequest,
    SimulationResult,
    bin_to_grid,
    box_geometry,
    box_result,
    slice_plan,
)

__all__ = ["MultisliceEngine"]

M0C2_KEV = 510.99895
INSTALL_HINT = (
    "the 'multislice' engine needs PyTorch: `pip install napari-4dstem[nn]` (CPU wheel: "
    "`pip install torch --index-url https://download.pytorch.org/whl/cpu`)"
)


@cite
class MultisliceEngine:
    """Multislice CBED in PyTorch (see the module docstring).

    Parameters
    ----------
    device : str or None
        ``"cuda"``, ``"cpu"`` or None (CUDA when available).
    max_batch : int
        Probe positions propagated together (memory: ``max_batch * N^2 * 8`` bytes per wave).
    band_potential : bool
        Compute the potential only inside the propagation band (2.3x faster on a CPU; see
        ``_slices``). Default: the full grid.

    References
    ----------
    .. [1] J. M. Cowley and A. F. Moodie, "The scattering of electrons by atoms and crystals.
       I. A new theoretical approach", Acta Cryst. 10, 609-619 (1957).
    .. [2] E. J. Kirkland, *Advanced Computing in Electron Microscopy*, 2nd ed., Springer
       (2010), ch. 6.
    %(peng1996_3)s
    """

    name = "multislice"

    def __init__(self, *, device: str | None = None, max_batch: int = 64, band_potential: bool = False):
        """Store the settings (torch is imported only when simulating)."""
        self.device = device
        self.max_batch = int(max_batch)
        self.band_potential = bool(band_potential)

    def available(self) -> bool:
        """Whether torch is installed."""
        return importlib.util.find_spec("torch") is not None

    def require(self) -> None:
        """Raise :class:`EngineNotInstalledError` (how to install torch) when it is missing."""
        if not self.available():
            raise EngineNotInstalledError(INSTALL_HINT)

    def _device(self):
        import torch

        if self.device is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dev = torch.device(self.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise EngineNotInstalledError(
                "the multislice engine was asked for device 'cuda' but torch sees no CUDA GPU "
                "(use device='cpu' or None)"
            )
        return dev

    def simulate(self, request: SimulationRequest) -> SimulationResult:
        """CBED patterns of ``request`` by multislice.

        Parameters
        ----------
        request : SimulationRequest
            What to simulate (thicknesses, probe positions, frozen phonons...).

        Returns
        -------
        SimulationResult
            Patterns per thickness and probe position on the request's grid (binned ``m x m``
            from the engine grid), fractions of the beam.

        Raises
        ------
        EngineNotInstalledError
            When torch is missing, or CUDA is asked for but absent.
        SamplingError
            When the box or grid cannot sample the pattern.

        Notes
        -----
        Per slice: transmission ``exp(i phi)`` with the projected potential summed exactly in
        Fourier space, then the Fresnel propagator; both band-limited to 2/3 of Nyquist. One
        pass records every thickness; ``O(n_slices N^2 log N)`` per probe position and phonon
        configuration.
        """
        self.require()
        import torch

        dev = self._device()
        geo = box_geometry(request, usable_fraction=2 / 3, grid_multiple=2)
        L, N, m = geo.box_A, geo.grid, geo.multiple
        lam = request.wavelength_A
        dzs, exit_of = slice_plan(request.thicknesses_A, request.slice_thickness_A)
        bounds = np.cumsum(dzs)  # exit depth of each slice
        t_max = max(request.thicknesses_A)
        # which outputs (thickness indices of the request) are recorded after slice j
        record: dict[int, list[int]] = {}
        for i, t in enumerate(request.thicknesses_A):
            record.setdefault(exit_of[t], []).append(i)
        Z, xyz, occ, b_iso = request.atoms((L, L, t_max))
        thermal = request.frozen_phonons > 1
        n_idx, q, q2, band, gkey, form = self._potential_setup(request, Z, b_iso, L, N, thermal, dev)
        k_alpha = request.convergence_mrad * 1e-3 / lam
        chi = -math.pi * lam * request.defocus_A * q2
        aperture = (q2 <= k_alpha**2).astype(float)
        psi_k0 = aperture * np.exp(-1j * chi)
        psi_k0 /= math.sqrt(float(np.sum(np.abs(psi_k0) ** 2)))
        pos = np.asarray(request.probe_positions_A, float) + L / 2  # (y, x) from the corner
        props = {}
        for dz in {round(d, 9) for d in dzs}:
            p = np.exp(-1j * math.pi * lam * dz * q2)
            props[dz] = torch.as_tensor(p, dtype=torch.complex64, device=dev) * band
        H, W = request.shape
        n_pos = len(pos)
        out = np.zeros((len(request.thicknesses_A), n_pos, H, W))
        rng = np.random.default_rng(request.seed)
        n_fp = max(1, int(request.frozen_phonons))
        qt = torch.as_tensor(n_idx, dtype=torch.float64, device=dev)
        for _fp in range(n_fp):
            r = xyz.copy()
            if thermal:
                u = np.sqrt(b_iso / (8 * math.pi**2))
                r = r + rng.normal(size=r.shape) * u[:, None]
            sl = np.searchsorted(bounds, r[:, 2], side="right")  # slice index of each atom
            sl = np.minimum(sl, len(bounds) - 1)
            trans = self._transmissions(r, occ, sl, gkey, len(bounds), form, qt, L, N, band, dev, self.band_potential)
            for a in range(0, n_pos, self.max_batch):
                pb = pos[a : a + self.max_batch]
                shift = np.exp(
                    -2j * math.pi * (q[None, :, None] * pb[:, 0, None, None] + q[None, None, :] * pb[:, 1, None, None])
                )
                psi = torch.fft.ifft2(torch.as_tensor(psi_k0[None] * shift, dtype=torch.complex64, device=dev))
                for j, dz in enumerate(dzs):
                    psi = torch.fft.ifft2(torch.fft.fft2(psi * trans[j]) * props[round(dz, 9)])
                    if j in record:
                        inten = torch.fft.fftshift(torch.fft.fft2(psi).abs() ** 2, dim=(-2, -1))
                        binned = bin_to_grid(inten.cpu().numpy(), multiple=m, shape=(H, W))
                        for i in record[j]:
                            out[i, a : a + len(pb)] += binned
        out /= n_fp
        return box_result(request, geo, engine=self.name, patterns=out, device=str(dev), n_slices=len(bounds))

    @staticmethod
    def _potential_setup(request, Z, b_iso, L, N, thermal, dev):
        """Box frequencies, the propagation band and the atoms' groups with their form factors.

        The ``N x N`` grid spans ``L`` A; atoms are grouped by (element, B), each group's form
        factor is ``(gamma lambda / A) f_e(q)`` (with the Debye-Waller factor unless ``thermal``).
        """
        import torch

        lam = request.wavelength_A
        gamma = 1.0 + request.energy_kev / M0C2_KEV
        # integer frequency indices (fft order): q = n / L
        n_idx = np.fft.fftfreq(N, 1.0 / N)
        q = n_idx / L
        q2 = q[:, None] ** 2 + q[None, :] ** 2
        band = torch.as_tensor(q2 <= (N / (3.0 * L)) ** 2, device=dev)
        keys, gkey = np.unique(np.stack([Z, b_iso], 1), axis=0, return_inverse=True)
        form = []
        for z_, b_ in keys:
            a, bcoef = peng_coefficients(int(z_))
            bb = bcoef[None, None, :] + (0.0 if thermal else b_)
            f = np.sum(a * np.exp(-bb * q2[..., None] / 4.0), axis=-1)
            form.append(torch.as_tensor((gamma * lam / (L * L)) * f, dtype=torch.complex64, device=dev))
        return n_idx, q, q2, band, gkey.ravel(), form

    def slice_phases(self, request: SimulationRequest, *, slices: int | None = None) -> tuple[np.ndarray, float]:
        """The phase ``sigma v_z`` each object slice gives the wave, on the engine's box grid.

        What the simulation's transmissions carry (``t = exp(i phi)``, band-limited), for the
        truth of phase retrieval: the object a ptychographic reconstruction should find.

        Parameters
        ----------
        request : SimulationRequest
            The simulation (crystal, orientation, largest thickness, beam, detector: they set the
            box). Thermal displacements are not drawn (Debye-Waller factors, as with one frozen
            phonon configuration).
        slices : int, optional
            Split the largest thickness into this many equal slices (1: the projected potential
            of the whole sample). Default: the request's slice plan.

        Returns
        -------
        phases : ndarray ``(n_slices, N, N)`` float
            Phase (rad) per slice, not wrapped (before the band limit the transmissions get);
            axes ``(y, x)`` of the box from its corner, pixel ``L / N``.
        pixel_A : float
            The box grid's pixel size in Angstrom. Probe position ``(y, x)`` of the request (from
            the box centre) is at pixel ``(y + L / 2, x + L / 2) / pixel_A``.

        Raises
        ------
        EngineNotInstalledError
            When torch is missing.
        """
        self.require()
        import torch

        dev = self._device()
        geo = box_geometry(request, usable_fraction=2 / 3, grid_multiple=2)
        L, N = geo.box_A, geo.grid
        t_max = max(request.thicknesses_A)
        if slices is None:
            dzs, _ = slice_plan(request.thicknesses_A, request.slice_thickness_A)
            bounds = np.cumsum(dzs)
        else:
            bounds = t_max * np.arange(1, int(slices) + 1) / int(slices)
        Z, xyz, occ, b_iso = request.atoms((L, L, t_max))
        n_idx, _, _, band, gkey, form = self._potential_setup(request, Z, b_iso, L, N, False, dev)
        sl = np.minimum(np.searchsorted(bounds, xyz[:, 2], side="right"), len(bounds) - 1)
        qt = torch.as_tensor(n_idx, dtype=torch.float64, device=dev)
        phi = self._transmissions(
            xyz, occ, sl, gkey, len(bounds), form, qt, L, N, band, dev, self.band_potential, phase_only=True
        )
        return phi.cpu().numpy().astype(np.float64), L / N

    @staticmethod
    def _transmissions(r, occ, sl, gkey, n_slices, form, qt, L, N, band, dev, band_potential, phase_only=False):
        """The band-limited transmissions of all slices, (n_slices, N, N) complex64.

        Built a chunk of slices at a time in batched tensor operations (one matrix product per
        element and chunk, no per-slice host work), once per frozen-phonon configuration; all
        probe batches reuse them: ``n_slices * N^2 * 8`` bytes.
        """
        import torch

        n_all = qt.cpu().numpy()
        # the potential on the full grid (as Kirkland and abTEM sample it), or with
        # ``band_potential`` only the frequencies inside the propagation band: the products then
        # run over (2/3)^2 of the grid, 2.3x faster, losing the products of high-frequency
        # potential terms that land in the band (a 6e-4 change of the total intensity of 100 A
        # of Si, see the tests)
        inband = np.nonzero(np.abs(n_all) <= (N / 3.0 if band_potential else N))[0]
        nb = len(inband)
        ib = torch.as_tensor(inband, device=dev)
        q_in = qt[ib]
        ffs = [ff[ib][:, ib] for ff in form]
        # atoms of each group, padded per slice: index (n_slices, max_count), -1 = none
        padded = []
        for g in range(len(ffs)):
            sel = np.nonzero(gkey == g)[0]
            order = sel[np.argsort(sl[sel], kind="stable")]
            s_sorted = sl[order]
            counts = np.bincount(s_sorted, minlength=n_slices)
            starts = np.concatenate([[0], np.cumsum(counts)])
            idx = np.full((n_slices, max(1, int(counts.max()))), -1, np.int64)
            idx[s_sorted, np.arange(len(order)) - starts[s_sorted]] = order
            padded.append(idx)
        rt = torch.as_tensor(np.concatenate([r[:, :2], [[0.0, 0.0]]]), dtype=torch.float64, device=dev)
        wt = torch.as_tensor(np.concatenate([occ, [0.0]]), dtype=torch.float32, device=dev)
        n_atoms = len(r)
        # memory of one chunk: the phase matrices (chunk, width, nb) x 2 and (chunk, N, N) x 3
        width_max = max(p.shape[1] for p in padded)
        per_slice = 8 * (2 * width_max * nb + 3 * N * N)
        chunk = int(max(1, min(n_slices, (256 * 2**20) // per_slice)))
        out: list[torch.Tensor] = []

        def phase(coord):
            # exp(-2 pi i n x / L) for the in-band n; argument reduced mod 1 in float64
            frac = torch.remainder(coord[..., None] * q_in / L, 1.0)
            return torch.polar(torch.ones_like(frac, dtype=torch.float32), (-2 * math.pi * frac).float())

        for a in range(0, n_slices, chunk):
            b = min(n_slices, a + chunk)
            sub = torch.zeros((b - a, nb, nb), dtype=torch.complex64, device=dev)
            for g, idx in enumerate(padded):
                it = torch.as_tensor(np.where(idx[a:b] < 0, n_atoms, idx[a:b]), device=dev)
                ey = phase(rt[it, 1])  # (chunk, width, nb); padding atoms have weight 0
                ex = phase(rt[it, 0]) * wt[it][..., None]
                sub += ffs[g] * torch.matmul(ey.transpose(1, 2), ex)
            phi_q = torch.zeros((b - a, N, N), dtype=torch.complex64, device=dev)
            phi_q[:, ib[:, None], ib[None, :]] = sub
            del sub
            phi = torch.fft.ifft2(phi_q).real * (N * N)
            del phi_q
            if phase_only:  # the slice's phase itself (not wrapped, not band-limited)
                out.append(phi)
                continue
            t = torch.polar(torch.ones_like(phi), phi)
            out.append(torch.fft.ifft2(torch.fft.fft2(t) * band))
        return torch.cat(out) if len(out) > 1 else out[0]
