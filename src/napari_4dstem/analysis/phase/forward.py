"""A single-slice 4D-STEM forward model with a known answer, for tests and benchmarks.

``I(R, k) = |F[psi(r - R) O(r)](k)|^2`` on the conventions of :mod:`.probe`: the object ``O``
is a complex transmission function on a grid of pixel ``1 / (n * k_pixel)`` Angstrom (the
reciprocal of the detector), probe positions are in object pixels (detector axes), sub-pixel
parts are applied to the probe by a Fourier phase ramp. A multislice model of thick crystals
is :mod:`napari_4dstem.simulation.multislice`; this one is exact for a thin object and fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...data.calibration import Calibration
from ...data.datacube import DataCube
from .probe import ProbeModel, probe_real, scan_to_detector

__all__ = [
    "SimulatedPhaseData",
    "fresnel_propagator",
    "probe_positions_px",
    "random_atoms_phase",
    "simulate_patterns",
    "simulate_phase_dataset",
]


def random_atoms_phase(
    shape: tuple[int, int],
    *,
    pixel_A: float,
    density_per_A2: float = 0.08,
    sigma_A: float = 0.45,
    phase_per_atom_rad: float = 0.25,
    min_distance_A: float = 1.2,
    seed: int = 0,
) -> np.ndarray:
    """An amorphous "2D material": Gaussian atoms at random positions, a phase map in rad.

    Random (not periodic) so that image alignment has one answer; the peak phase of one atom is
    ``phase_per_atom_rad``. Periodic boundaries (the map tiles without seams).

    Parameters
    ----------
    shape : (int, int)
        Map shape in pixels.
    pixel_A : float
        Pixel size in Angstrom.
    density_per_A2 : float
        Atoms per Angstrom^2 (default 0.08).
    sigma_A : float
        Gaussian width of an atom in Angstrom (default 0.45).
    phase_per_atom_rad : float
        Peak phase of the map, radians (default 0.25).
    min_distance_A : float
        Smallest distance between atoms (periodic), Angstrom (default 1.2).
    seed : int
        Random seed.

    Returns
    -------
    ndarray ``shape`` float64
        The phase map in radians, maximum ``phase_per_atom_rad``.

    Notes
    -----
    Positions by random sequential addition with the minimum distance; the Gaussians are summed
    exactly in Fourier space (``exp(-2 pi^2 s^2 |f|^2)`` times one phase ramp per atom).
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    area = ny * nx * pixel_A**2
    n_try = int(3 * density_per_A2 * area) + 10
    cand = rng.uniform(0, 1, (n_try, 2)) * np.array([ny, nx]) * pixel_A
    keep: list[np.ndarray] = []
    n_want = round(density_per_A2 * area)
    box = np.array([ny, nx]) * pixel_A
    for c in cand:
        if keep:
            d = np.abs(np.asarray(keep) - c)
            d = np.minimum(d, box - d)
            if np.min(np.hypot(d[:, 0], d[:, 1])) < min_distance_A:
                continue
        keep.append(c)
        if len(keep) >= n_want:
            break
    atoms = np.asarray(keep) / pixel_A  # in pixels
    # sum of Gaussians, exact and periodic in Fourier space
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.fftfreq(nx)[None, :]
    s = sigma_A / pixel_A
    g = np.exp(-2 * math.pi**2 * s**2 * (fy**2 + fx**2))
    ey = np.exp(-2j * math.pi * fy[None, :, 0] * atoms[:, 0, None])  # (n_atoms, ny)
    ex = np.exp(-2j * math.pi * fx[None, 0, :] * atoms[:, 1, None])  # (n_atoms, nx)
    spec = ey.T @ ex  # (ny, nx)
    img = np.fft.ifft2(spec * g).real
    return img / img.max() * phase_per_atom_rad


def probe_positions_px(
    scan_shape: tuple[int, int],
    *,
    step_A: tuple[float, float],
    pixel_A: float,
    rotation_deg: float = 0.0,
    flip: bool = False,
) -> np.ndarray:
    """Probe centres ``(n, 2)`` (y, x) in object pixels, detector axes, raster order, from 0.

    Parameters
    ----------
    scan_shape : (int, int)
        ``(scan_y, scan_x)``.
    step_A : (float, float)
        Scan step ``(y, x)`` in Angstrom.
    pixel_A : float
        Object pixel size in Angstrom.
    rotation_deg, flip : optional
        Detector axes in scan axes (:func:`~.probe.scan_to_detector`).

    Returns
    -------
    ndarray ``(scan_y * scan_x, 2)`` float64
        Positions in object pixels, shifted so the smallest coordinate is 0.
    """
    iy, ix = np.meshgrid(np.arange(scan_shape[0]), np.arange(scan_shape[1]), indexing="ij")
    uy, ux = iy.ravel() * step_A[0], ix.ravel() * step_A[1]
    vy, vx = scan_to_detector(uy, ux, rotation_deg=rotation_deg, flip=flip)
    p = np.stack([vy, vx], axis=1) / pixel_A
    return p - p.min(axis=0)


def simulate_patterns(
    obj: np.ndarray,
    psi: np.ndarray,
    positions_px: np.ndarray,
    *,
    batch: int = 256,
    propagator: np.ndarray | None = None,
) -> np.ndarray:
    """Diffraction intensities ``(n_pos, n_y, n_x)`` (float64) of a thin object.

    ``obj`` may be a stack of slices ``(n_slices, H, W)``: the wave is multiplied by each slice
    in turn and propagated between them by ``propagator`` (``(n_y, n_x)``, numpy FFT order,
    e.g. :func:`fresnel_propagator`): a multislice model.

    ``psi`` is the probe on the ``(n_y, n_x)`` window, centred at ``n // 2`` (:func:`probe_real`);
    ``positions_px`` are probe centres ``(y, x)`` in pixels of ``obj``; every window
    ``[floor(p) - n // 2, + n)`` must lie inside ``obj``. FFTs are orthonormal, so a vacuum
    pattern sums to ``sum |psi|^2``.

    Parameters
    ----------
    obj : ndarray ``(H, W)`` or ``(n_slices, H, W)`` complex
        Transmission function(s).
    psi : ndarray ``(n_y, n_x)`` complex
        The probe in real space.
    positions_px : ndarray ``(n_pos, 2)``
        Probe centres ``(y, x)`` in object pixels.
    batch : int
        Positions per vectorised batch (default 256).
    propagator : ndarray ``(n_y, n_x)`` complex, optional
        Fresnel propagator between slices; needed for more than one slice.

    Returns
    -------
    ndarray ``(n_pos, n_y, n_x)`` float64
        Intensities, unscattered beam at ``(n_y // 2, n_x // 2)``.

    Raises
    ------
    ValueError
        When a multislice object has no propagator, or a probe window leaves the object.

    Notes
    -----
    The sub-pixel part of each position is a Fourier phase ramp on the probe; the wave is
    ``psi(r - R) O_1``, then ``F^-1[F[wave] P] O_s`` per further slice, and the pattern
    ``|F[wave]|^2``. ``O(n_pos n_slices n_y n_x log(n_y n_x))``.

    References
    ----------
    .. [1] E. J. Kirkland, *Advanced Computing in Electron Microscopy*, 2nd ed., Springer
       (2010).
    """
    obj = np.asarray(obj)
    slices = obj if obj.ndim == 3 else obj[None]
    if len(slices) > 1 and propagator is None:
        raise ValueError("a multislice object needs a propagator")
    n_y, n_x = psi.shape
    pos = np.asarray(positions_px, float)
    base = np.floor(pos).astype(int)
    frac = pos - base
    y0, x0 = base[:, 0] - n_y // 2, base[:, 1] - n_x // 2
    if y0.min() < 0 or x0.min() < 0 or (y0.max() + n_y) > obj.shape[-2] or (x0.max() + n_x) > obj.shape[-1]:
        raise ValueError("a probe window falls outside the object: pad the object")
    fy = np.fft.fftfreq(n_y)[None, :, None]
    fx = np.fft.fftfreq(n_x)[None, None, :]
    psi_k = np.fft.fft2(psi)
    ay, ax = np.arange(n_y), np.arange(n_x)
    out = np.empty((len(pos), n_y, n_x))
    for a in range(0, len(pos), batch):
        b = slice(a, a + batch)
        ramp = np.exp(-2j * math.pi * (fy * frac[b, 0, None, None] + fx * frac[b, 1, None, None]))
        pr = np.fft.ifft2(psi_k[None] * ramp)
        iy_ = y0[b, None, None] + ay[None, :, None]
        ix_ = x0[b, None, None] + ax[None, None, :]
        wave = pr * slices[0][iy_, ix_]
        for sl in slices[1:]:
            wave = np.fft.ifft2(np.fft.fft2(wave) * propagator) * sl[iy_, ix_]
        wave = np.fft.fft2(wave, norm="ortho")
        out[b] = np.abs(np.fft.fftshift(wave, axes=(-2, -1))) ** 2
    return out


def fresnel_propagator(shape: tuple[int, int], *, pixel_A: float, wavelength_A: float, dz_A: float) -> np.ndarray:
    """Fresnel propagator ``exp(-i pi lambda dz |k|^2)`` over ``dz_A`` (numpy FFT order).

    Parameters
    ----------
    shape : (int, int)
        Grid shape in pixels.
    pixel_A : float
        Pixel size in Angstrom.
    wavelength_A : float
        Electron wavelength in Angstrom.
    dz_A : float
        Propagation distance in Angstrom.

    Returns
    -------
    ndarray ``shape`` complex128
        The propagator in numpy FFT order (zero frequency at ``[0, 0]``).

    References
    ----------
    .. [1] E. J. Kirkland, *Advanced Computing in Electron Microscopy*, 2nd ed., Springer
       (2010).
    """
    ky = np.fft.fftfreq(shape[0], pixel_A)[:, None]
    kx = np.fft.fftfreq(shape[1], pixel_A)[None, :]
    return np.exp(-1j * math.pi * wavelength_A * dz_A * (ky**2 + kx**2))


@dataclass(frozen=True, eq=False)
class SimulatedPhaseData:
    """A simulated 4D-STEM dataset with its truth.

    Attributes
    ----------
    datacube : DataCube ``(scan_y, scan_x, k_y, k_x)``
        The patterns, float32, fully calibrated.
    object : ndarray complex
        The transmission function (detector axes, pixel ``pixel_A``).
    positions_px : ndarray ``(n, 2)``
        The true probe centres in object pixels (raster order over the scan).
    pixel_A : float
        Object pixel size in Angstrom.
    probe : ProbeModel
        The probe used.
    phase_at_scan : ndarray ``(scan_y, scan_x)``
        The object phase (rad) at the probe centres.
    params : dict
        The simulation's arguments.
    """

    datacube: DataCube
    object: np.ndarray
    positions_px: np.ndarray
    pixel_A: float
    probe: ProbeModel
    phase_at_scan: np.ndarray
    params: dict = field(default_factory=dict)


def simulate_phase_dataset(
    *,
    scan_shape: tuple[int, int] = (32, 32),
    detector_px: int = 64,
    energy_kev: float = 300.0,
    convergence_mrad: float = 20.0,
    bf_radius_px: float = 12.0,
    step_A: float = 0.4,
    defocus_A: float = 0.0,
    astig_A: float = 0.0,
    astig_angle_deg: float = 0.0,
    rotation_deg: float = 0.0,
    phase: np.ndarray | None = None,
    phase_per_atom_rad: float = 0.25,
    dose_e_per_A2: float | None = None,
    position_jitter_px: float = 0.0,
    seed: int = 0,
) -> SimulatedPhaseData:
    """A small 4D-STEM scan of a thin phase object (amorphous atoms unless ``phase`` is given).

    The detector is ``detector_px`` square with the bright-field disk ``bf_radius_px`` in
    radius; scan step ``step_A`` in both axes. With ``dose_e_per_A2``, patterns get Poisson
    noise at that dose (electrons per A^2 over the scanned area). ``position_jitter_px`` moves
    the true probe positions randomly (normal, in object pixels) from the nominal raster
    (to test position correction). The calibration is complete (energy, convergence, pixel
    sizes, origin at the centre, rotation).

    Parameters
    ----------
    scan_shape : (int, int)
        ``(scan_y, scan_x)`` (default 32 x 32).
    detector_px : int
        Detector side in pixels (default 64).
    energy_kev, convergence_mrad : float
        Beam energy (keV) and convergence semi-angle (mrad).
    bf_radius_px : float
        Bright-field disk radius in detector pixels (sets the detector pixel size).
    step_A : float
        Scan step in Angstrom.
    defocus_A, astig_A, astig_angle_deg : float
        Probe aberrations (:class:`~.probe.ProbeModel`).
    rotation_deg : float
        Detector rotation relative to the scan, degrees.
    phase : ndarray, optional
        The object's phase map (rad), at least the object's shape; default random atoms.
    phase_per_atom_rad : float
        Peak phase of the random atoms.
    dose_e_per_A2 : float, optional
        Poisson noise at this dose (electrons per Angstrom^2); default noise-free.
    position_jitter_px : float
        Standard deviation of the random position errors, object pixels.
    seed : int
        Random seed.

    Returns
    -------
    SimulatedPhaseData
        The calibrated datacube and its truth.

    Raises
    ------
    ValueError
        When ``phase`` is smaller than the object.

    Notes
    -----
    Single-slice model ``I(R, k) = |F[psi(r - R) O(r)](k)|^2`` with ``O = exp(i phase)``
    (:func:`simulate_patterns`).
    """
    rng = np.random.default_rng(seed)
    probe = ProbeModel(
        energy_kev, convergence_mrad, defocus_A=defocus_A, astig_A=astig_A, astig_angle_deg=astig_angle_deg
    )
    dk = probe.k_aperture_inv_A / bf_radius_px
    n = int(detector_px)
    pixel_A = 1.0 / (n * dk)
    nominal = probe_positions_px(scan_shape, step_A=(step_A, step_A), pixel_A=pixel_A, rotation_deg=rotation_deg)
    pad = n // 2 + 4
    pos = nominal + pad
    true_pos = pos + rng.normal(0.0, 1.0, pos.shape) * position_jitter_px
    shape = tuple(math.ceil(v) + n // 2 + pad + 2 for v in true_pos.max(axis=0))
    if phase is None:
        phase = random_atoms_phase(shape, pixel_A=pixel_A, phase_per_atom_rad=phase_per_atom_rad, seed=seed)
    phase = np.asarray(phase, float)
    if phase.shape[0] < shape[0] or phase.shape[1] < shape[1]:
        raise ValueError(f"the phase map must be at least {shape} pixels, got {phase.shape}")
    obj = np.exp(1j * phase)
    psi = probe_real((n, n), dk, probe)
    patterns = simulate_patterns(obj, psi, true_pos)
    if dose_e_per_A2 is not None:
        per_pattern = dose_e_per_A2 * step_A * step_A
        patterns = rng.poisson(patterns * per_pattern).astype(np.float32)
    cube = patterns.reshape(*scan_shape, n, n).astype(np.float32)
    from scipy.ndimage import map_coordinates

    at_scan = map_coordinates(phase, true_pos.T, order=1, mode="wrap").reshape(scan_shape)
    cal = Calibration(
        scan_step=(step_A, step_A),
        scan_units="A",
        k_pixel_size=dk,
        k_units="1/A",
        beam_energy_kev=energy_kev,
        convergence_semiangle_mrad=convergence_mrad,
        origin_px=(n // 2, n // 2),
        rotation_deg=rotation_deg,
    )
    params = dict(
        scan_shape=list(scan_shape),
        detector_px=n,
        energy_kev=energy_kev,
        convergence_mrad=convergence_mrad,
        bf_radius_px=bf_radius_px,
        step_A=step_A,
        defocus_A=defocus_A,
        astig_A=astig_A,
        astig_angle_deg=astig_angle_deg,
        rotation_deg=rotation_deg,
        dose_e_per_A2=dose_e_per_A2,
        position_jitter_px=position_jitter_px,
        seed=seed,
    )
    return SimulatedPhaseData(
        datacube=DataCube(cube, cal, name="simulated_phase"),
        object=obj,
        positions_px=true_pos,
        pixel_A=pixel_A,
        probe=probe,
        phase_at_scan=at_scan,
        params=params,
    )
