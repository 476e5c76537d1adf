"""The probe of a phase-retrieval model: aperture, aberration function, geometry.

Conventions (used by every method of :mod:`napari_4dstem.analysis.phase`):

- Spatial frequencies ``k = (k_y, k_x)`` in 1/Angstrom, scattering angle ``theta = lambda |k|``.
- Aberration function (Kirkland's sign: ``defocus_A > 0`` is underfocus, as in
  :mod:`napari_4dstem.simulation.multislice`)::

      chi(k) = pi lambda |k|^2 (-defocus + astig cos 2(phi - astig_angle))
               + (pi / 2) Cs lambda^3 |k|^4,            phi = atan2(k_y, k_x)

- Probe in Fourier space ``P(k) = A(k) exp(-i chi(k))``, ``A`` the aperture ``lambda |k| <=
  alpha`` (a soft edge of about one detector pixel keeps it band-limited); in real space
  ``psi = F^-1[P]`` with numpy's FFT conventions (``F[f](k) = sum_r f(r) exp(-2 pi i k.r)``).
- A diffraction pattern is ``I(R, k) = |F[psi(r - R) O(r)](k)|^2`` with the unscattered beam at
  detector pixel ``(n_y // 2, n_x // 2)`` (numpy's ``fftshift`` centre).
- Scan and detector axes: :func:`scan_to_detector` maps a vector in scan axes (a probe
  position) into detector axes with the calibration's ``rotation_deg`` and ``flip``, the
  inverse of :func:`napari_4dstem.analysis.virtual.dpc.rotate_to_scan`. Reconstructions live in
  detector axes; maps over the scan are returned in scan axes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ...data.calibration import Calibration, electron_wavelength_A
from ...errors import CalibrationError

__all__ = [
    "ProbeModel",
    "aberration_chi",
    "detector_k_grid",
    "probe_fourier",
    "probe_real",
    "scan_to_detector",
]


@dataclass(frozen=True)
class ProbeModel:
    """Microscope settings that define the probe.

    Parameters
    ----------
    energy_kev : float
        Beam energy in keV.
    convergence_mrad : float
        Probe convergence semi-angle ``alpha`` in mrad.
    defocus_A : float
        Defocus in Angstrom, positive = underfocus (Kirkland).
    astig_A : float
        Two-fold astigmatism amplitude in Angstrom (``C12``).
    astig_angle_deg : float
        Angle of the astigmatism axis from ``+k_x`` towards ``+k_y``, in degrees.
    cs_mm : float
        Spherical aberration in mm.

    Raises
    ------
    CalibrationError
        When the energy or the convergence angle is not positive.
    """

    energy_kev: float
    convergence_mrad: float
    defocus_A: float = 0.0
    astig_A: float = 0.0
    astig_angle_deg: float = 0.0
    cs_mm: float = 0.0

    def __post_init__(self):
        """Refuse a non-positive energy or convergence angle."""
        if not self.energy_kev > 0:
            raise CalibrationError(f"beam energy must be positive, got {self.energy_kev} keV")
        if not self.convergence_mrad > 0:
            raise CalibrationError(f"convergence semi-angle must be positive, got {self.convergence_mrad} mrad")

    @property
    def wavelength_A(self) -> float:
        """Relativistic electron wavelength in Angstrom."""
        return electron_wavelength_A(self.energy_kev)

    @property
    def k_aperture_inv_A(self) -> float:
        """Radius of the aperture (the bright-field disk) in 1/Angstrom."""
        return self.convergence_mrad * 1e-3 / self.wavelength_A

    def to_dict(self) -> dict:
        """The settings as a plain dict (for result parameters)."""
        return asdict(self)

    @classmethod
    def from_calibration(cls, calibration: Calibration, **aberrations) -> ProbeModel:
        """The probe of a calibrated dataset (energy and convergence angle) plus aberrations.

        Parameters
        ----------
        calibration : Calibration
            Needs ``beam_energy_kev`` and ``convergence_semiangle_mrad``.
        **aberrations
            ``defocus_A``, ``astig_A``, ``astig_angle_deg``, ``cs_mm``.

        Returns
        -------
        ProbeModel
            The probe.

        Raises
        ------
        CalibrationError
            When the energy or the convergence angle is not calibrated.
        """
        if calibration.beam_energy_kev is None or calibration.convergence_semiangle_mrad is None:
            raise CalibrationError(
                "phase retrieval needs the beam energy and the convergence semi-angle in the "
                "calibration (Calibration(beam_energy_kev=..., convergence_semiangle_mrad=...))"
            )
        return cls(calibration.beam_energy_kev, calibration.convergence_semiangle_mrad, **aberrations)


def k_pixel_inv_A(calibration: Calibration) -> float:
    """Detector pixel size in 1/Angstrom (clear error when uncalibrated)."""
    try:
        return calibration.k_pixel_size_in("1/A")
    except CalibrationError as e:
        raise CalibrationError(f"phase retrieval needs a calibrated detector: {e}") from None


def scan_step_A(calibration: Calibration) -> tuple[float, float]:
    """Scan step ``(y, x)`` in Angstrom (clear error when uncalibrated)."""
    nm = calibration.scan_step_nm()
    if nm is None:
        raise CalibrationError(
            "phase retrieval needs a calibrated scan step (Calibration(scan_step=..., scan_units='A' or 'nm'))"
        )
    return (nm[0] * 10.0, nm[1] * 10.0)


def scan_to_detector(
    u_y: np.ndarray, u_x: np.ndarray, *, rotation_deg: float = 0.0, flip: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors in scan axes ``(u_y, u_x)`` expressed in detector axes ``(v_y, v_x)``.

    The inverse of :func:`napari_4dstem.analysis.virtual.dpc.rotate_to_scan`.

    Parameters
    ----------
    u_y, u_x : ndarray
        Components along scan_y and scan_x (any units, broadcastable).
    rotation_deg : float
        Detector rotation relative to the scan, degrees (the calibration's).
    flip : bool
        Whether the detector's x axis is flipped (the calibration's).

    Returns
    -------
    v_y, v_x : ndarray
        Components along k_y and k_x, same units.
    """
    t = math.radians(rotation_deg)
    c, s = math.cos(t), math.sin(t)
    vx = c * u_x + s * u_y
    vy = -s * u_x + c * u_y
    return vy, (-vx if flip else vx)


def detector_k_grid(shape: tuple[int, int], k_pixel_inv_A: float) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies ``(k_y, k_x)`` in 1/A of each detector pixel, unscattered beam at ``n // 2``.

    Parameters
    ----------
    shape : (int, int)
        Detector shape ``(k_y, k_x)`` in pixels.
    k_pixel_inv_A : float
        Detector pixel size in 1/A.

    Returns
    -------
    k_y, k_x : ndarray ``shape`` float64
        The frequency of every pixel, ``(i - n // 2) * k_pixel_inv_A``.
    """
    ny, nx = shape
    ky = (np.arange(ny) - ny // 2) * k_pixel_inv_A
    kx = (np.arange(nx) - nx // 2) * k_pixel_inv_A
    return np.meshgrid(ky, kx, indexing="ij")


def aberration_chi(k_y, k_x, probe: ProbeModel) -> np.ndarray:
    """The aberration function ``chi(k)`` in radians (module docstring) at frequencies in 1/A.

    Parameters
    ----------
    k_y, k_x : array-like
        Spatial frequencies in 1/A (broadcastable).
    probe : ProbeModel
        Energy and aberrations.

    Returns
    -------
    ndarray
        ``chi = pi lambda |k|^2 (-defocus + astig cos 2(phi - astig_angle))
        + (pi / 2) Cs lambda^3 |k|^4`` in radians.

    References
    ----------
    .. [1] E. J. Kirkland, *Advanced Computing in Electron Microscopy*, 2nd ed., Springer
       (2010).
    """
    lam = probe.wavelength_A
    k2 = np.asarray(k_y) ** 2 + np.asarray(k_x) ** 2
    phi = np.arctan2(k_y, k_x)
    a = math.radians(probe.astig_angle_deg)
    chi = math.pi * lam * k2 * (-probe.defocus_A + probe.astig_A * np.cos(2 * (phi - a)))
    if probe.cs_mm:
        chi = chi + 0.5 * math.pi * probe.cs_mm * 1e7 * lam**3 * k2**2
    return chi


def aperture(k_y, k_x, probe: ProbeModel, *, edge_inv_A: float = 0.0) -> np.ndarray:
    """The aperture ``A(k)`` in [0, 1]: 1 inside ``alpha``, a linear edge ``edge_inv_A`` wide."""
    k = np.hypot(k_y, k_x)
    ka = probe.k_aperture_inv_A
    if edge_inv_A <= 0:
        return (k <= ka).astype(float)
    return np.clip((ka - k) / edge_inv_A + 0.5, 0.0, 1.0)


def probe_fourier(k_y, k_x, probe: ProbeModel, *, edge_inv_A: float = 0.0) -> np.ndarray:
    """``P(k) = A(k) exp(-i chi(k))`` at any frequencies (complex128).

    Parameters
    ----------
    k_y, k_x : array-like
        Spatial frequencies in 1/A (broadcastable).
    probe : ProbeModel
        Energy, convergence angle and aberrations.
    edge_inv_A : float
        Width of the aperture's linear edge in 1/A (0: a hard edge).

    Returns
    -------
    ndarray complex128
        The probe's Fourier amplitude, unnormalised (1 inside the aperture).
    """
    return aperture(k_y, k_x, probe, edge_inv_A=edge_inv_A) * np.exp(-1j * aberration_chi(k_y, k_x, probe))


def probe_real(shape: tuple[int, int], k_pixel_inv_A: float, probe: ProbeModel, *, edge_px: float = 1.0) -> np.ndarray:
    """The probe in real space on an ``shape`` window, centred at ``(n_y // 2, n_x // 2)``.

    The window's pixel is ``1 / (n * k_pixel_inv_A)`` Angstrom (the detector's reciprocal).
    Normalised so that ``sum |psi|^2 = 1``.

    Parameters
    ----------
    shape : (int, int)
        Window (detector) shape in pixels.
    k_pixel_inv_A : float
        Detector pixel size in 1/A.
    probe : ProbeModel
        The probe settings.
    edge_px : float
        Soft aperture edge in detector pixels (default 1).

    Returns
    -------
    ndarray ``shape`` complex128
        ``psi = F^-1[P]``, centred at ``(n_y // 2, n_x // 2)``.
    """
    ky, kx = detector_k_grid(shape, k_pixel_inv_A)
    pk = probe_fourier(ky, kx, probe, edge_inv_A=edge_px * k_pixel_inv_A)
    psi = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(pk)))
    return psi / math.sqrt(float(np.sum(np.abs(psi) ** 2)))
