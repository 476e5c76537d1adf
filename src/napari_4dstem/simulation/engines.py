"""One interface for the CBED simulation engines: kinematic, Prismatic (pyprismatic), abTEM.

A :class:`SimulationRequest` says what to simulate (a crystal, an orientation, a thickness
series, the beam and the detector sampling); an engine turns it into a
:class:`SimulationResult` (CBED patterns for every thickness and probe position, plus the
vacuum probe image on the same grid). All engines use the same detector grid:

* pattern shape ``(H, W)``, pixel size ``pixel_size_inv_A`` (1/A per pixel, no 2 pi);
* the unscattered beam at pixel ``(H // 2, W // 2)`` (``origin_px``);
* intensities as fractions of the incident beam (the vacuum probe sums to 1).

The multislice engines simulate a box of atoms of lateral size ``L = m / pixel_size_inv_A``
(``m`` a whole number, so their reciprocal grid ``1 / L`` falls exactly on our pixels after
``m x m`` binning; no interpolation moves a disk) filled with the oriented, optionally strained
crystal (:func:`atoms_in_box`).

Units: the request is in keV, mrad and Angstrom; each engine converts to what its backend
wants in one place (:func:`napari_4dstem.simulation.prismatic.prismatic_units`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .._docstrings import cite, docfiller
from ..analysis.crystal.structure import Crystal
from ..data.calibration import electron_wavelength_A
from ..errors import Napari4DSTEMError

__all__ = [
    "ENGINES",
    "Engine",
    "EngineNotInstalledError",
    "SamplingError",
    "SimulationRequest",
    "SimulationResult",
    "atoms_in_box",
    "box_geometry",
    "box_result",
    "get_engine",
    "installed_version",
    "require_module",
    "simulate_cbed",
    "slice_plan",
    "vacuum_probe_image",
]


class EngineNotInstalledError(Napari4DSTEMError, ImportError):
    """A simulation engine's backend is not installed; the message says how to install it."""


class SamplingError(Napari4DSTEMError, ValueError):
    """The requested detector sampling cannot be simulated with the given cell/box."""


@dataclass(frozen=True, eq=False)
class SimulationRequest:
    """What to simulate: one crystal, one orientation, a thickness series, one beam.

    Parameters
    ----------
    crystal : Crystal
        The structure.
    orientation : array (3, 3)
        ``U``: crystal Cartesian -> lab (x = k_x, y = k_y, z = beam).
    thicknesses_A : tuple of float
        Sample thicknesses (Angstrom); one pattern per thickness.
    energy_kev, convergence_mrad, defocus_A
        Beam energy, probe convergence semi-angle, probe defocus (positive = underfocus,
        Angstrom).
    shape : (H, W)
        Detector grid in pixels.
    pixel_size_inv_A : float
        Detector pixel size in 1/A.
    probe_positions_A : tuple of (y, x)
        Probe positions in Angstrom relative to the box centre.
    strain : array (2, 2) or None
        True strain ``e`` (x, y components) applied to the crystal in the lab frame:
        ``r' = (I + e) r`` in the plane perpendicular to the beam.
    frozen_phonons : int
        Frozen-phonon configurations (multislice engines; the kinematic engine uses
        Debye-Waller factors instead).
    box_multiple : int or None
        ``m``: the simulated box is ``m / pixel_size_inv_A`` wide. None picks the smallest
        ``m`` whose box holds the probe (multislice engines only).
    slice_thickness_A : float
        Multislice slice thickness.
    seed : int
        Seed for frozen phonons.

    Raises
    ------
    Napari4DSTEMError
        When the orientation is not a rotation, a thickness, the energy, convergence, pixel
        size or slice thickness is not positive, the shape is not two sizes >= 8 px, or the
        strain is not 2 x 2.
    """

    crystal: Crystal
    orientation: np.ndarray = field(default_factory=lambda: np.eye(3))
    thicknesses_A: tuple[float, ...] = (100.0,)
    energy_kev: float = 300.0
    convergence_mrad: float = 2.0
    defocus_A: float = 0.0
    shape: tuple[int, int] = (256, 256)
    pixel_size_inv_A: float = 0.01
    probe_positions_A: tuple[tuple[float, float], ...] = ((0.0, 0.0),)
    strain: np.ndarray | None = None
    frozen_phonons: int = 1
    box_multiple: int | None = None
    slice_thickness_A: float = 2.0
    seed: int = 0

    def __post_init__(self):
        """Check the request and store normalised values (tuples, float arrays)."""
        set_ = object.__setattr__
        U = np.asarray(self.orientation, float)
        if U.shape != (3, 3) or not np.allclose(U @ U.T, np.eye(3), atol=1e-6):
            raise Napari4DSTEMError(f"orientation must be a 3x3 rotation matrix, got {U.tolist()}")
        set_(self, "orientation", U)
        th = tuple(float(t) for t in np.atleast_1d(self.thicknesses_A))
        if not th or min(th) <= 0:
            raise Napari4DSTEMError(f"thicknesses must be positive Angstrom values, got {th}")
        set_(self, "thicknesses_A", th)
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 2 or min(shape) < 8:
            raise Napari4DSTEMError(f"pattern shape must be two sizes >= 8 px, got {self.shape}")
        set_(self, "shape", shape)
        for name in ("energy_kev", "convergence_mrad", "pixel_size_inv_A", "slice_thickness_A"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v > 0):
                raise Napari4DSTEMError(f"{name} must be positive, got {v}")
            set_(self, name, v)
        pos = np.asarray(self.probe_positions_A, float).reshape(-1, 2)
        set_(self, "probe_positions_A", tuple(map(tuple, pos.tolist())))
        e = np.zeros((2, 2)) if self.strain is None else np.asarray(self.strain, float)
        if e.shape != (2, 2):
            raise Napari4DSTEMError(f"strain must be 2x2, got shape {e.shape}")
        set_(self, "strain", e)

    @property
    def wavelength_A(self) -> float:
        """Relativistic electron wavelength in Angstrom."""
        return electron_wavelength_A(self.energy_kev)

    @property
    def origin_px(self) -> tuple[float, float]:
        """The unscattered beam ``(H // 2, W // 2)`` in pixels."""
        return (float(self.shape[0] // 2), float(self.shape[1] // 2))

    @property
    def probe_radius_px(self) -> float:
        """Radius of the bright-field disk in pixels: ``alpha / lambda / pixel``."""
        return self.convergence_mrad * 1e-3 / self.wavelength_A / self.pixel_size_inv_A

    @property
    def deformation(self) -> np.ndarray:
        """3x3 lab-frame deformation ``F = diag(I + e, 1)`` (rows/cols x, y, z)."""
        F = np.eye(3)
        F[:2, :2] += self.strain
        return F

    def atoms(self, box_A: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The request's crystal, oriented and deformed, inside a box (:func:`atoms_in_box`).

        Parameters
        ----------
        box_A : (float, float, float)
            ``(Lx, Ly, t)`` in Angstrom.

        Returns
        -------
        tuple of ndarray
            ``(Z, xyz_A, occupancy, b_iso)`` as :func:`atoms_in_box` returns them.
        """
        return atoms_in_box(self.crystal, orientation=self.orientation, box_A=box_A, deformation=self.deformation)

    def params(self) -> dict[str, Any]:
        """Every parameter as plain JSON-able values (for manifests and result attributes)."""
        return {
            "crystal": self.crystal.name,
            "orientation": self.orientation.tolist(),
            "thicknesses_A": list(self.thicknesses_A),
            "energy_kev": self.energy_kev,
            "convergence_mrad": self.convergence_mrad,
            "defocus_A": self.defocus_A,
            "shape": list(self.shape),
            "pixel_size_inv_A": self.pixel_size_inv_A,
            "probe_positions_A": [list(p) for p in self.probe_positions_A],
            "strain": self.strain.tolist(),
            "frozen_phonons": self.frozen_phonons,
            "box_multiple": self.box_multiple,
            "slice_thickness_A": self.slice_thickness_A,
            "seed": self.seed,
        }


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """CBED patterns of a thickness series and the vacuum probe, on the request's grid.

    Attributes
    ----------
    patterns : ndarray ``(n_thickness, n_positions, H, W)`` float32
        Fractions of the incident beam.
    probe : ndarray ``(H, W)`` float32
        The vacuum probe, summing to 1.
    thicknesses_A : ndarray ``(n_thickness,)``
        The thicknesses in Angstrom.
    pixel_size_inv_A : float
        Detector pixel size in 1/A.
    origin_px : (float, float)
        ``(k_y, k_x)`` of the unscattered beam.
    engine : str
        The engine's name.
    params : dict
        The request's parameters and the engine's own.
    """

    patterns: np.ndarray
    probe: np.ndarray
    thicknesses_A: np.ndarray
    pixel_size_inv_A: float
    origin_px: tuple[float, float]
    engine: str
    params: dict[str, Any]


class Engine(Protocol):
    """A CBED simulation engine.

    Attributes
    ----------
    name : str
        The engine's name (a key of :data:`ENGINES`).
    """

    name: str

    def available(self) -> bool:
        """Whether the engine's backend is installed."""
        ...

    def simulate(self, request: SimulationRequest) -> SimulationResult:
        """Run ``request``; patterns on the request's detector grid."""
        ...


_REQUEST_DOC = "request : SimulationRequest\n    What to simulate."
#: numpydoc text shared by the engines' ``simulate`` methods, filled in by :func:`engine_doc`:
#: the parameter, and the whole sections of the external multislice engines (Prismatic, abTEM)
ENGINE_DOCS = {
    "request": _REQUEST_DOC,
    "simulate": f"""Parameters
----------
{_REQUEST_DOC}

Returns
-------
SimulationResult
    Patterns per thickness and probe position on the request's grid (the engine's
    output ``fftshift``-ed, cropped to the alias-free band and binned ``m x m``).

Raises
------
EngineNotInstalledError
    When the backend is missing.
SamplingError
    When the box or grid cannot sample the pattern.""",
}
engine_doc = docfiller(ENGINE_DOCS)


# ------------------------------------------------------------------------------------------
# geometry shared by the multislice engines
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BoxGeometry:
    """The simulated box and grid of a multislice engine.

    Attributes
    ----------
    box_A : float
        Lateral size of the (square) box in Angstrom.
    multiple : int
        ``m``: the engine's reciprocal pixel is ``pixel_size_inv_A / m``.
    grid : int
        Real-space pixels per side.
    dx_A : float
        Real-space pixel size in Angstrom.
    """

    box_A: float
    multiple: int
    grid: int
    dx_A: float


def box_geometry(
    request: SimulationRequest,
    *,
    usable_fraction: float,
    grid_multiple: int = 2,
    max_grid: int = 4096,
) -> BoxGeometry:
    """Choose the box and real-space grid for a request.

    ``usable_fraction`` is the part of the engine's reciprocal grid (per axis) that is free of
    aliasing (1/2 for Prismatic, 2/3 for abTEM).

    Parameters
    ----------
    request : SimulationRequest
        The request (shape, pixel size, beam).
    usable_fraction : float
        Alias-free part of the engine's reciprocal grid per axis.
    grid_multiple : int
        The grid side is a multiple of this (default 2).
    max_grid : int
        Largest grid side (default 4096).

    Returns
    -------
    BoxGeometry
        Box ``L = m / pixel_size_inv_A`` (``m`` odd, the box holds the probe out to its fifth
        Airy ring plus the defocus blur) and the real-space grid.

    Raises
    ------
    SamplingError
        With what to change, when the box is even, smaller than the probe, or needs a grid
        beyond ``max_grid``.
    """
    px = request.pixel_size_inv_A
    lam = request.wavelength_A
    alpha = request.convergence_mrad * 1e-3
    # the probe (airy disk out to its 5th ring, plus the defocus blur) must fit in the box
    probe_extent = 2 * (5 * 0.61 * lam / alpha + abs(request.defocus_A) * alpha)
    m = request.box_multiple or max(1, math.ceil(probe_extent * px))
    if request.box_multiple is None and m % 2 == 0:
        m += 1
    if m % 2 == 0:
        raise SamplingError(f"box_multiple must be odd (got {m}) so that binned pixels stay centred on the beam")
    L = m / px
    if L < probe_extent:
        raise SamplingError(
            f"the simulated box ({L:.0f} A = box_multiple {m} / pixel {px} 1/A) is smaller "
            f"than the probe ({probe_extent:.0f} A at {request.convergence_mrad} mrad, defocus "
            f"{request.defocus_A} A); raise box_multiple to {math.ceil(probe_extent * px)}, use a "
            "larger pixel size or a larger convergence angle"
        )
    need = max(request.shape) * m / usable_fraction
    n = int(grid_multiple * math.ceil(need / grid_multiple))
    if n > max_grid:
        raise SamplingError(
            f"the pattern of {request.shape} px at {px} 1/A with a {L:.0f} A box needs a "
            f"{n}x{n} real-space grid (limit {max_grid}); use fewer detector pixels, a "
            "larger pixel size, or box_multiple=1"
        )
    return BoxGeometry(box_A=L, multiple=m, grid=n, dx_A=L / n)


def atoms_in_box(
    crystal: Crystal,
    *,
    orientation: np.ndarray,
    box_A: tuple[float, float, float],
    deformation: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Atoms of the oriented (and deformed) crystal inside a box ``[0, Lx) x [0, Ly) x [0, t)``.

    A lattice point sits at the lateral centre of the box at the entrance surface.

    Parameters
    ----------
    crystal : Crystal
        The structure.
    orientation : ndarray ``(3, 3)``
        ``U``: crystal Cartesian -> lab.
    box_A : (float, float, float)
        ``(Lx, Ly, t)`` in Angstrom.
    deformation : ndarray ``(3, 3)``, optional
        Lab-frame deformation ``F`` applied after the orientation (default none).

    Returns
    -------
    Z : ndarray ``(n,)`` int
        Atomic numbers.
    xyz_A : ndarray ``(n, 3)`` float
        Positions in the lab frame, Angstrom.
    occupancy : ndarray ``(n,)``
        Site occupancies.
    b_iso : ndarray ``(n,)``
        Debye-Waller factors in Angstrom^2.

    Raises
    ------
    SamplingError
        When the box would hold more than about 50 million atoms.
    """
    U = np.asarray(orientation, float)
    F = np.eye(3) if deformation is None else np.asarray(deformation, float)
    Lx, Ly, t = (float(v) for v in box_A)
    centre = np.array([Lx / 2, Ly / 2, 0.0])
    M = F @ U  # crystal Cartesian -> lab
    Minv = np.linalg.inv(M)
    corners = np.array([[x, y, z] for x in (0, Lx) for y in (0, Ly) for z in (0, t)]) - centre
    frac = corners @ Minv.T @ np.linalg.inv(crystal.lattice)  # r_cryst = frac @ lattice
    lo = np.floor(frac.min(0)).astype(int) - 1
    hi = np.ceil(frac.max(0)).astype(int) + 1
    n_cells = int(np.prod(hi - lo + 1)) * len(crystal.numbers)
    if n_cells > 50_000_000:
        raise SamplingError(
            f"the box {Lx:.0f} x {Ly:.0f} x {t:.0f} A holds about {n_cells} atoms; use a thinner "
            "sample or a larger pixel size"
        )
    grids = np.meshgrid(*(np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)), indexing="ij")
    cells = np.stack(grids, -1).reshape(-1, 3).astype(float)
    frac_all = (cells[:, None, :] + crystal.positions[None]).reshape(-1, 3)
    xyz = frac_all @ crystal.lattice @ M.T + centre
    inside = (
        (xyz[:, 0] >= 0) & (xyz[:, 0] < Lx) & (xyz[:, 1] >= 0) & (xyz[:, 1] < Ly) & (xyz[:, 2] >= 0) & (xyz[:, 2] < t)
    )
    n_at = len(crystal.numbers)
    idx = np.nonzero(inside)[0] % n_at
    return crystal.numbers[idx], xyz[inside], crystal.occupancy[idx], crystal.b_iso[idx]


def bin_to_grid(pattern_centred: np.ndarray, *, multiple: int, shape: tuple[int, int]) -> np.ndarray:
    """Crop a centred (fftshifted) engine pattern and bin it ``m x m`` onto the detector grid.

    Input origin at ``(N // 2, N // 2)`` with reciprocal pixel ``pixel / m``; output origin at
    ``(H // 2, W // 2)``: detector pixel ``i`` covers engine pixels ``m (i - H//2) + N//2 +
    [-(m//2), m - m//2)`` so that the origin pixel stays centred on the beam.
    """
    m = int(multiple)
    H, W = shape
    *lead, N0, N1 = pattern_centred.shape
    y0 = N0 // 2 - m * (H // 2) - m // 2  # m is odd: m // 2 engine pixels either side
    x0 = N1 // 2 - m * (W // 2) - m // 2
    if y0 < 0 or x0 < 0 or y0 + m * H > N0 or x0 + m * W > N1:
        raise SamplingError(f"engine grid {N0}x{N1} too small for {H}x{W} px binned by {m}")
    crop = pattern_centred[..., y0 : y0 + m * H, x0 : x0 + m * W]
    return crop.reshape(*lead, H, m, W, m).sum(axis=(-3, -1))


def installed_version(dist: str) -> tuple[int, ...] | None:
    """The installed version of distribution ``dist`` as integers, or None if not installed.

    Parameters
    ----------
    dist : str
        Distribution name (``"abtem"``, ``"pyprismatic"``).

    Returns
    -------
    tuple of int or None
        Up to three numeric version parts.
    """
    from importlib import metadata

    try:
        v = metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
    return tuple(int(p) for p in v.split(".")[:3] if p.isdigit())


def require_module(module: str, install_hint: str) -> Any:
    """Import an engine's backend, or say how to install it.

    Parameters
    ----------
    module : str
        The module to import (``"abtem"``, ``"pyprismatic"``).
    install_hint : str
        How to install it: the message of the error, with the import error after it.

    Returns
    -------
    module
        The imported module.

    Raises
    ------
    EngineNotInstalledError
        When the import fails.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise EngineNotInstalledError(f"{install_hint} ({e})") from None


def slice_plan(
    thicknesses_A: tuple[float, ...], slice_thickness_A: float
) -> tuple[tuple[float, ...], dict[float, int]]:
    """Slices through the thickest sample with a boundary at every requested thickness.

    Each interval between consecutive thicknesses is cut into ``ceil(dt / slice_thickness)``
    equal slices (none thicker than asked, no sliver).

    Parameters
    ----------
    thicknesses_A : tuple of float
        Requested thicknesses in Angstrom.
    slice_thickness_A : float
        Largest slice thickness in Angstrom.

    Returns
    -------
    slices : tuple of float
        Slice thicknesses, top to bottom.
    exit_of : dict
        ``{thickness: index of the last slice above it}`` (abTEM's ``exit_planes``; the slice
        after which our multislice records the pattern).
    """
    slices: list[float] = []
    exit_of: dict[float, int] = {}
    top = 0.0
    for t in sorted(set(thicknesses_A)):
        n = max(1, math.ceil((t - top) / slice_thickness_A - 1e-9))
        slices += [(t - top) / n] * n
        exit_of[t] = len(slices) - 1
        top = t
    return tuple(slices), exit_of


def box_result(
    request: SimulationRequest,
    geo: BoxGeometry,
    *,
    engine: str,
    patterns: np.ndarray,
    probe: np.ndarray | None = None,
    **extra: Any,
) -> SimulationResult:
    """The :class:`SimulationResult` of a multislice engine.

    Parameters
    ----------
    request : SimulationRequest
        The request.
    geo : BoxGeometry
        The engine's box.
    engine : str
        The engine's name.
    patterns : ndarray ``(n_thickness, n_positions, H, W)``
        Patterns on the detector grid.
    probe : ndarray ``(H, W)``, optional
        The vacuum probe (default: :func:`vacuum_probe_image` of the box).
    **extra
        More parameters to record.

    Returns
    -------
    SimulationResult
        Patterns as float32; params = the request's plus the engine, its box (``box_A``,
        ``grid``, ``box_multiple``) and ``extra``.
    """
    if probe is None:
        probe = vacuum_probe_image(request, L=geo.box_A, N=geo.grid, multiple=geo.multiple)
    return SimulationResult(
        patterns=np.asarray(patterns, np.float32),
        probe=np.asarray(probe, np.float32),
        thicknesses_A=np.asarray(request.thicknesses_A),
        pixel_size_inv_A=request.pixel_size_inv_A,
        origin_px=request.origin_px,
        engine=engine,
        params={
            **request.params(),
            "engine": engine,
            "box_A": geo.box_A,
            "grid": geo.grid,
            "box_multiple": geo.multiple,
            **extra,
        },
    )


def vacuum_probe_image(request: SimulationRequest, *, L: float, N: int, multiple: int) -> np.ndarray:
    """The vacuum probe on the detector grid.

    Parameters
    ----------
    request : SimulationRequest
        Beam and detector grid.
    L : float
        Engine box side in Angstrom.
    N : int
        Engine grid side in pixels.
    multiple : int
        Binning ``m`` onto the detector grid.

    Returns
    -------
    ndarray ``(H, W)`` float32
        The sampled aperture (ones inside ``alpha / lambda``) of the engine grid, binned like
        the patterns, normalised to sum 1.
    """
    k = (np.arange(N) - N // 2) / L
    k_alpha = request.convergence_mrad * 1e-3 / request.wavelength_A
    ap = (np.hypot(k[:, None], k[None, :]) <= k_alpha).astype(float)
    p = bin_to_grid(ap, multiple=multiple, shape=request.shape)
    return (p / p.sum()).astype(np.float32)


# ------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------
ENGINES = ("kinematic", "multislice", "prismatic", "abtem")


def get_engine(name: str, **options) -> Engine:
    """An engine by name: kinematic, multislice (ours, torch), prismatic or abtem.

    Parameters
    ----------
    name : str
        ``'kinematic'``, ``'multislice'``, ``'prismatic'`` (or ``'pyprismatic'``), ``'abtem'``.
    **options
        Passed to the engine's constructor.

    Returns
    -------
    Engine
        The engine, its backend checked.

    Raises
    ------
    EngineNotInstalledError
        Naming what to install, when its backend is missing.
    Napari4DSTEMError
        When the name is unknown.
    """
    key = name.lower()
    if key == "kinematic":
        from .kinematic import KinematicEngine

        return KinematicEngine(**options)
    if key == "multislice":
        from .multislice import MultisliceEngine

        ms = MultisliceEngine(**options)
        ms.require()
        return ms
    if key in ("prismatic", "pyprismatic"):
        from .prismatic import PrismaticEngine

        eng = PrismaticEngine(**options)
    elif key == "abtem":
        from .abtem_engine import AbTEMEngine

        eng = AbTEMEngine(**options)
    else:
        raise Napari4DSTEMError(f"unknown simulation engine {name!r}; choose from {ENGINES}")
    eng.require()
    return eng


@cite
def simulate_cbed(crystal: Crystal, *, engine: str | Engine = "kinematic", **request_options) -> SimulationResult:
    """Simulate CBED patterns of ``crystal``: a :class:`SimulationRequest` run by ``engine``.

    Parameters
    ----------
    crystal : Crystal
        The structure.
    engine : str or Engine
        Engine name (:func:`get_engine`) or instance (default ``"kinematic"``).
    **request_options
        The fields of :class:`SimulationRequest` (orientation, thicknesses, beam, grid...).

    Returns
    -------
    SimulationResult
        Patterns for every thickness and probe position, and the vacuum probe.

    Raises
    ------
    Napari4DSTEMError
        On an invalid request or unknown engine.
    EngineNotInstalledError
        When the engine's backend is missing.
    SamplingError
        When a multislice engine cannot sample the pattern.

    References
    ----------
    %(kirkland2010_1)s
    """
    eng = get_engine(engine) if isinstance(engine, str) else engine
    return eng.simulate(SimulationRequest(crystal, **request_options))
