"""Crystal structures, kinematic structure factors and kinematic diffraction patterns.

Frames and units
----------------
``Crystal.lattice`` holds the real-space lattice vectors **a, b, c as rows**, in Angstrom, in
the crystal Cartesian frame of the usual crystallographic convention: ``a`` along ``x``, ``b``
in the ``xy`` plane, ``c`` completing a right-handed set. Reciprocal vectors (``Crystal.
reciprocal``, rows ``a*, b*, c*``) carry no factor ``2 pi``: ``g = h a* + k b* + l c*`` in
1/Angstrom and ``|g| = 1/d``. An orientation ``U`` maps crystal Cartesian coordinates to the lab
frame ``(x = k_x, y = k_y, z = beam direction)``.

Structure factor (kinematic, electron)::

    F(g) = sum_j occ_j f_j(|g|) exp(-B_j |g|^2 / 4) exp(2 pi i (h x_j + k y_j + l z_j))

with Peng (1996) electron scattering factors (:mod:`.scattering`), in Angstrom.

Excitation error of ``g`` in the lab frame (Ewald sphere through the origin, beam along +z,
to first order in ``lambda |g|``)::

    s_g = -(g_z + lambda |g|^2 / 2)

and the kinematic intensity ``I = |F|^2 S(s_g)`` with the shape function
``S = exp(-(s / w)^2)`` (``shape="gaussian"``, ``w = 1 / thickness`` unless given) or
``S = sinc^2(t s)`` (``shape="sinc"``, a plate of thickness ``t``; normalised to 1 at ``s = 0``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

import numpy as np

from ..._docstrings import cite
from ...data.calibration import electron_wavelength_A
from ...errors import FileFormatError, Napari4DSTEMError
from .scattering import element_number, element_symbol, scattering_factor
from .symmetry import PointGroup

__all__ = [
    "BUNDLED_CRYSTALS",
    "Crystal",
    "CrystalError",
    "KinematicPattern",
    "ReciprocalPoints",
    "bundled_crystal",
    "lattice_from_parameters",
]


class CrystalError(Napari4DSTEMError, ValueError):
    """A crystal structure is invalid (no atoms, degenerate cell, unknown element...)."""


def lattice_from_parameters(a, b, c, alpha_deg, beta_deg, gamma_deg) -> np.ndarray:
    """Lattice vectors as rows (Angstrom): ``a`` along x, ``b`` in the xy plane.

    Parameters
    ----------
    a, b, c : float
        Cell lengths in Angstrom.
    alpha_deg, beta_deg, gamma_deg : float
        Cell angles in degrees (alpha between b and c, beta between a and c, gamma between a
        and b).

    Returns
    -------
    ndarray ``(3, 3)`` float64
        Rows a, b, c in crystal Cartesian coordinates, Angstrom.

    Raises
    ------
    CrystalError
        When a length is not positive or the angles make no cell.
    """
    al, be, ga = np.radians([alpha_deg, beta_deg, gamma_deg])
    cx = c * math.cos(be)
    cy = c * (math.cos(al) - math.cos(be) * math.cos(ga)) / math.sin(ga)
    cz2 = c * c - cx * cx - cy * cy
    if not (a > 0 and b > 0 and c > 0 and cz2 > 0):
        raise CrystalError(
            f"lattice parameters do not make a cell: a={a} b={b} c={c} "
            f"alpha={alpha_deg} beta={beta_deg} gamma={gamma_deg}"
        )
    return np.array([[a, 0.0, 0.0], [b * math.cos(ga), b * math.sin(ga), 0.0], [cx, cy, math.sqrt(cz2)]])


@dataclass(frozen=True, eq=False)
class ReciprocalPoints:
    """Reflections of a crystal: Miller indices, Cartesian ``g`` (1/A, crystal frame) and ``F``.

    Attributes
    ----------
    hkl : ndarray ``(n, 3)`` int
        Miller indices.
    g : ndarray ``(n, 3)`` float
        Reciprocal vectors in crystal Cartesian coordinates, 1/A (no 2 pi).
    structure_factor : ndarray ``(n,)`` complex
        Kinematic electron structure factors ``F`` in Angstrom.
    """

    hkl: np.ndarray  # (n, 3) int
    g: np.ndarray  # (n, 3) float, crystal Cartesian, 1/A
    structure_factor: np.ndarray  # (n,) complex, Angstrom

    @property
    def g_norm(self) -> np.ndarray:
        """``|g|`` (1/A), shape (n,)."""
        return np.linalg.norm(self.g, axis=1)

    @property
    def intensity(self) -> np.ndarray:
        """``|F|^2`` (Angstrom^2)."""
        return np.abs(self.structure_factor) ** 2


@dataclass(frozen=True, eq=False)
class KinematicPattern:
    """Excited reflections of one orientation.

    Attributes
    ----------
    g_lab : ndarray ``(n, 3)`` float
        Lab-frame vectors in 1/A (``g_lab[:, 0]`` along k_x, ``[:, 1]`` along k_y).
    hkl : ndarray ``(n, 3)`` int
        Miller indices.
    intensity : ndarray ``(n,)`` float
        ``|F|^2 S(s)`` in Angstrom^2.
    excitation_error : ndarray ``(n,)`` float
        ``s_g`` in 1/A.
    """

    g_lab: np.ndarray
    hkl: np.ndarray
    intensity: np.ndarray
    excitation_error: np.ndarray

    def detector_px(self, *, origin_px: tuple[float, float], k_pixel_size_inv_A: float) -> np.ndarray:
        """Spot positions ``(k_y, k_x)`` in detector pixels, shape (n, 2).

        Parameters
        ----------
        origin_px : (float, float)
            The direct beam ``(k_y, k_x)`` in detector pixels.
        k_pixel_size_inv_A : float
            Detector pixel size in 1/A.

        Returns
        -------
        ndarray ``(n, 2)``
            ``origin + (g_y, g_x) / k_pixel_size``.
        """
        return np.asarray(origin_px, float) + self.g_lab[:, 1::-1] / k_pixel_size_inv_A


def _spglib_dataset(cell, symprec: float):
    """``spglib.get_symmetry_dataset`` raising ``SpglibError`` on failure, for this call only.

    spglib 2.7-2.8 raise only when asked: per call (``_throw=True``, what we use) or process-wide
    (``spglib.error.OLD_ERROR_HANDLING = False``, which would change every other caller's spglib
    in the process, so we never set it). spglib 3 drops the flag and always raises.
    """
    import spglib

    if "_throw" in inspect.signature(spglib.get_symmetry_dataset).parameters:
        return spglib.get_symmetry_dataset(cell, symprec=symprec, _throw=True)
    return spglib.get_symmetry_dataset(cell, symprec=symprec)


def shape_function(s: np.ndarray, *, thickness_A: float | None, width_inv_A: float | None, shape: str) -> np.ndarray:
    """Relative intensity of a reflection at excitation error ``s`` (1/A), 1 at ``s = 0``."""
    if shape == "gaussian":
        w = width_inv_A if width_inv_A is not None else (1.0 / thickness_A if thickness_A else None)
        if w is None or not w > 0:
            raise ValueError("the gaussian shape function needs thickness_A > 0 or width_inv_A > 0")
        return np.exp(-((s / w) ** 2))
    if shape == "sinc":
        if not thickness_A or thickness_A <= 0:
            raise ValueError("the sinc shape function needs thickness_A > 0")
        return np.sinc(thickness_A * s) ** 2
    raise ValueError(f"shape must be 'gaussian' or 'sinc', got {shape!r}")


@dataclass(frozen=True, eq=False)
class Crystal:
    """A crystal structure.

    Parameters
    ----------
    lattice : array (3, 3)
        Lattice vectors a, b, c as rows, Angstrom (see the module docstring for the frame).
    numbers : int array (n,)
        Atomic numbers of the atoms in the unit cell (all of them, symmetry-expanded).
    positions : array (n, 3)
        Fractional coordinates.
    occupancy : array (n,)
        Site occupancies (default 1).
    b_iso : array (n,)
        Isotropic Debye-Waller factors ``B = 8 pi^2 <u^2>`` in Angstrom^2 (default 0).
    name : str
        A name for messages and files.
    spacegroup : str
        Hermann-Mauguin symbol; found with spglib from the atoms when not given.
    """

    lattice: np.ndarray
    numbers: np.ndarray
    positions: np.ndarray
    occupancy: np.ndarray = None  # type: ignore[assignment]
    b_iso: np.ndarray = None  # type: ignore[assignment]
    name: str = "crystal"
    spacegroup: str = ""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        """Check the structure and store its arrays as float/int (defaults filled in)."""
        set_ = object.__setattr__
        lat = np.array(self.lattice, float)
        if lat.shape != (3, 3) or not np.all(np.isfinite(lat)) or abs(np.linalg.det(lat)) < 1e-6:
            raise CrystalError(f"{self.name}: lattice must be 3 non-coplanar vectors (3x3), got {lat.shape}")
        if np.linalg.det(lat) < 0:
            raise CrystalError(f"{self.name}: lattice vectors must form a right-handed set")
        nums = np.atleast_1d(np.asarray(self.numbers, dtype=np.int64))
        if nums.size == 0:
            raise CrystalError(f"{self.name}: the structure has no atoms")
        pos = np.asarray(self.positions, float).reshape(-1, 3)
        if len(pos) != len(nums):
            raise CrystalError(f"{self.name}: {len(nums)} atoms but {len(pos)} positions")
        n = len(nums)
        occ = np.ones(n) if self.occupancy is None else np.broadcast_to(np.asarray(self.occupancy, float), (n,)).copy()
        biso = np.full(n, 0.5) if self.b_iso is None else np.broadcast_to(np.asarray(self.b_iso, float), (n,)).copy()
        if np.any((nums < 1) | (nums > 98)):
            raise CrystalError(f"{self.name}: atomic numbers must be 1..98, got {sorted(set(nums.tolist()))}")
        if not (np.all(np.isfinite(pos)) and np.all(occ >= 0) and np.all(biso >= 0)):
            raise CrystalError(f"{self.name}: positions must be finite, occupancies and B non-negative")
        for a in (lat, nums, pos, occ, biso):
            a.setflags(write=False)
        set_(self, "lattice", lat)
        set_(self, "numbers", nums)
        set_(self, "positions", pos % 1.0)
        self.positions.setflags(write=False)
        set_(self, "occupancy", occ)
        set_(self, "b_iso", biso)

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_parameters(
        cls,
        a: float,
        b: float,
        c: float,
        alpha_deg: float = 90.0,
        beta_deg: float = 90.0,
        gamma_deg: float = 90.0,
        *,
        atoms: Iterable[Sequence[Any]],
        spacegroup: str | int | None = None,
        name: str = "crystal",
    ) -> Crystal:
        """From lattice parameters and atoms ``(element, (x, y, z)[, occupancy[, B]])``.

        With ``spacegroup`` (symbol or number) the atoms are the asymmetric unit and are
        expanded with its operations (gemmi); without it they are the whole unit cell.

        Parameters
        ----------
        a, b, c : float
            Cell lengths in Angstrom.
        alpha_deg, beta_deg, gamma_deg : float
            Cell angles in degrees (default 90).
        atoms : iterable of (str or int, (float, float, float)[, float[, float]])
            Element, fractional position, occupancy (default 1), ``B`` in Angstrom^2 (default 0).
        spacegroup : str or int, optional
            Space group of the asymmetric unit.
        name : str
            Name of the crystal.

        Returns
        -------
        Crystal
            The symmetry-expanded structure.

        Raises
        ------
        CrystalError
            On an empty atom list, a bad cell, an unknown element or space group.
        """
        lat = lattice_from_parameters(a, b, c, alpha_deg, beta_deg, gamma_deg)
        rows = [tuple(at) for at in atoms]
        if not rows:
            raise CrystalError(f"{name}: the structure has no atoms")
        try:
            z = [element_number(r[0]) for r in rows]
            xyz = np.array([r[1] for r in rows], float).reshape(-1, 3)
            occ = np.array([r[2] if len(r) > 2 else 1.0 for r in rows], float)
            biso = np.array([r[3] if len(r) > 3 else 0.5 for r in rows], float)
        except (TypeError, ValueError, IndexError) as e:
            raise CrystalError(f"{name}: atoms must be (element, (x, y, z), occupancy, B): {e}") from None
        sg_name = ""
        if spacegroup is not None:
            z, xyz, occ, biso, sg_name = _expand(spacegroup, z, xyz, occ, biso, name)
        return cls(lat, z, xyz, occ, biso, name=name, spacegroup=sg_name)

    @classmethod
    def from_cif(cls, path: str | PathLike, *, name: str | None = None) -> Crystal:
        """Read a small-molecule/inorganic CIF (cell, atom sites, symmetry operations) with gemmi.

        Parameters
        ----------
        path : str or PathLike
            The CIF file.
        name : str, optional
            Name of the crystal (default the CIF's block name).

        Returns
        -------
        Crystal
            The structure with every site of the unit cell.

        Raises
        ------
        FileFormatError
            When the file is not a readable CIF, or has no cell, atom sites or known elements.
        """
        import gemmi

        p = str(path)
        try:
            st = gemmi.read_small_structure(p)
        except (RuntimeError, ValueError, OSError, IndexError) as e:
            raise FileFormatError(p, f"not a readable CIF ({e})") from None
        cell = st.cell
        if not (cell.a > 0 and cell.b > 0 and cell.c > 0):
            raise FileFormatError(p, "the CIF has no unit cell (_cell_length_a/b/c)")
        sites = st.get_all_unit_cell_sites()
        if not sites:
            raise FileFormatError(p, "the CIF has no atom sites (_atom_site_fract_x/y/z)")
        z = [s.element.atomic_number for s in sites]
        if 0 in z:
            bad = sorted({s.type_symbol or s.label for s in sites if s.element.atomic_number == 0})
            raise FileFormatError(p, f"unknown element types {bad}")
        xyz = np.array([[s.fract.x, s.fract.y, s.fract.z] for s in sites])
        occ = np.array([s.occ for s in sites])
        biso = np.array([8 * math.pi**2 * s.u_iso if s.u_iso > 0 else 0.5 for s in sites])
        lat = lattice_from_parameters(cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma)
        sg = st.spacegroup
        return cls(
            lat,
            z,
            xyz,
            occ,
            biso,
            name=name or st.name or "crystal",
            spacegroup=sg.hm if sg else "",
        )

    # -- geometry -------------------------------------------------------------------------------
    @property
    def reciprocal(self) -> np.ndarray:
        """Reciprocal lattice vectors a*, b*, c* as rows (1/A, no 2 pi)."""
        return np.linalg.inv(self.lattice).T

    @property
    def volume_A3(self) -> float:
        """Unit-cell volume in Angstrom^3."""
        return float(abs(np.linalg.det(self.lattice)))

    @property
    def cell_parameters(self) -> tuple[float, float, float, float, float, float]:
        """``(a, b, c, alpha_deg, beta_deg, gamma_deg)``."""
        a, b, c = np.linalg.norm(self.lattice, axis=1)
        la = self.lattice

        def ang(u, v):
            return float(np.degrees(np.arccos(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v))))

        return (
            float(a),
            float(b),
            float(c),
            ang(la[1], la[2]),
            ang(la[0], la[2]),
            ang(la[0], la[1]),
        )

    @property
    def formula(self) -> str:
        """Unit-cell content as a formula (``'Au4'``)."""
        zs, counts = np.unique(self.numbers, return_counts=True)
        return "".join(f"{element_symbol(z)}{c if c > 1 else ''}" for z, c in zip(zs, counts, strict=True))

    # -- symmetry -------------------------------------------------------------------------------
    def _symmetry(self) -> dict:
        if "sym" not in self._cache:
            from spglib.error import SpglibError

            cell = (self.lattice, self.positions, self.numbers)
            try:
                ds = _spglib_dataset(cell, symprec=1e-3)
            except SpglibError as e:
                raise CrystalError(f"{self.name}: spglib could not find the symmetry of the structure: {e}") from None
            if ds is None:
                raise CrystalError(f"{self.name}: spglib could not find the symmetry of the structure")
            L = self.lattice.T  # columns a, b, c: r = L x
            rot_frac = np.asarray(ds.rotations, float)
            cart = np.einsum("ij,njk,kl->nil", L, rot_frac, np.linalg.inv(L))
            self._cache["sym"] = {
                "number": int(ds.number),
                "international": str(ds.international),
                "pointgroup": str(ds.pointgroup),
                "cartesian": cart,
            }
        return self._cache["sym"]

    @property
    def spacegroup_number(self) -> int:
        """International space-group number, found by spglib."""
        return self._symmetry()["number"]

    @property
    def point_group(self) -> PointGroup:
        """Point group of the structure (found by spglib from the atoms), Cartesian matrices."""
        if "pg" not in self._cache:
            sym = self._symmetry()
            n = sym["number"]
            system = (
                "triclinic"
                if n <= 2
                else "monoclinic"
                if n <= 15
                else "orthorhombic"
                if n <= 74
                else "tetragonal"
                if n <= 142
                else "trigonal"
                if n <= 167
                else "hexagonal"
                if n <= 194
                else "cubic"
            )
            self._cache["pg"] = PointGroup.from_matrices(sym["cartesian"], sym["pointgroup"], system)
        return self._cache["pg"]

    # -- diffraction ----------------------------------------------------------------------------
    @cite
    def structure_factors(self, hkl: np.ndarray) -> np.ndarray:
        """Kinematic electron structure factors ``F(hkl)`` (complex, Angstrom), shape (n,).

        Parameters
        ----------
        hkl : array-like ``(n, 3)``
            Miller indices (integers or not).

        Returns
        -------
        ndarray ``(n,)`` complex
            ``F(g) = sum_j occ_j f_j(|g|) exp(-B_j |g|^2 / 4) exp(2 pi i hkl . x_j)``, Angstrom.

        References
        ----------
        %(peng1996_1)s
        """
        hkl = np.atleast_2d(np.asarray(hkl, float))
        gn = np.linalg.norm(hkl @ self.reciprocal, axis=1)
        F = np.zeros(len(hkl), complex)
        for z in np.unique(self.numbers):
            sel = self.numbers == z
            f = scattering_factor(int(z), gn)  # (n,)
            dw = np.exp(-np.outer(gn**2 / 4, self.b_iso[sel]))  # (n, n_at)
            ph = np.exp(2j * np.pi * hkl @ self.positions[sel].T)  # (n, n_at)
            F += f * np.sum(self.occupancy[sel] * dw * ph, axis=1)
        return F

    def reciprocal_points(self, k_max_inv_A: float, *, min_relative_intensity: float = 1e-6) -> ReciprocalPoints:
        """All reflections with ``0 < |g| <= k_max`` (1/A) and non-negligible ``|F|^2``.

        Parameters
        ----------
        k_max_inv_A : float
            Largest ``|g|`` in 1/A.
        min_relative_intensity : float
            Reflections with ``|F|^2`` below this fraction of the strongest are dropped
            (systematic absences; default 1e-6).

        Returns
        -------
        ReciprocalPoints
            The reflections (cached per arguments).

        Raises
        ------
        ValueError
            When ``k_max_inv_A`` is not positive.
        """
        if not k_max_inv_A > 0:
            raise ValueError(f"k_max must be positive, got {k_max_inv_A}")
        key = ("refl", float(k_max_inv_A), float(min_relative_intensity))
        if key in self._cache:
            return self._cache[key]
        n = np.ceil(k_max_inv_A * np.linalg.norm(self.lattice, axis=1)).astype(int)
        grids = np.meshgrid(*(np.arange(-m, m + 1) for m in n), indexing="ij")
        hkl = np.stack(grids, -1).reshape(-1, 3)
        g = hkl @ self.reciprocal
        gn = np.linalg.norm(g, axis=1)
        sel = (gn > 0) & (gn <= k_max_inv_A)
        hkl, g = hkl[sel], g[sel]
        F = self.structure_factors(hkl)
        I2 = np.abs(F) ** 2
        keep = I2 > min_relative_intensity * I2.max() if len(I2) else np.zeros(0, bool)
        out = ReciprocalPoints(hkl[keep].astype(np.int64), g[keep], F[keep])
        self._cache[key] = out
        return out

    def kinematic_pattern(
        self,
        orientation: np.ndarray,
        *,
        energy_kev: float,
        k_max_inv_A: float,
        thickness_A: float | None = 100.0,
        excitation_width_inv_A: float | None = None,
        shape: str = "gaussian",
        min_relative_intensity: float = 1e-4,
    ) -> KinematicPattern:
        """Kinematic diffraction pattern of orientation ``U`` (crystal -> lab).

        Reflections within ``k_max_inv_A`` of the beam (in-plane) whose intensity
        ``|F|^2 S(s_g)`` exceeds ``min_relative_intensity`` times the strongest ``|F|^2``.

        Parameters
        ----------
        orientation : ndarray ``(3, 3)``
            Rotation from crystal Cartesian to lab coordinates.
        energy_kev : float
            Beam energy in keV (sets the Ewald sphere).
        k_max_inv_A : float
            In-plane radius in 1/A.
        thickness_A : float or None
            Sample thickness in Angstrom for the shape function (default 100).
        excitation_width_inv_A : float, optional
            Width ``w`` of the Gaussian shape function in 1/A (default ``1 / thickness``).
        shape : {"gaussian", "sinc"}
            Shape function ``S(s)`` (see the module docstring).
        min_relative_intensity : float
            Threshold relative to the strongest ``|F|^2`` (default 1e-4).

        Returns
        -------
        KinematicPattern
            The excited reflections in the lab frame.

        Raises
        ------
        ValueError
            When the shape function's parameters are invalid.

        Notes
        -----
        ``s_g = -(g_z + lambda |g|^2 / 2)`` for the rotated ``g``, ``I = |F|^2 S(s_g)``; the
        kinematic (single-scattering) model.
        """
        U = np.asarray(orientation, float)
        lam = electron_wavelength_A(energy_kev)
        refl = self.reciprocal_points(k_max_inv_A * 1.2)
        g_lab = refl.g @ U.T
        gn2 = np.sum(refl.g**2, axis=1)
        s = -(g_lab[:, 2] + 0.5 * lam * gn2)
        inten = refl.intensity * shape_function(
            s, thickness_A=thickness_A, width_inv_A=excitation_width_inv_A, shape=shape
        )
        inplane = np.hypot(g_lab[:, 0], g_lab[:, 1]) <= k_max_inv_A
        sel = inplane & (inten > min_relative_intensity * refl.intensity.max())
        return KinematicPattern(g_lab[sel], refl.hkl[sel], inten[sel], s[sel])

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Arrays and names (npz/HDF5-friendly) that :meth:`from_dict` reads back."""
        return {
            "crystal_name": np.array(self.name),
            "crystal_spacegroup": np.array(self.spacegroup),
            "crystal_lattice": self.lattice,
            "crystal_numbers": self.numbers,
            "crystal_positions": self.positions,
            "crystal_occupancy": self.occupancy,
            "crystal_b_iso": self.b_iso,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Crystal:
        """The Crystal that :meth:`to_dict` wrote."""
        return cls(
            np.asarray(d["crystal_lattice"]),
            np.asarray(d["crystal_numbers"]),
            np.asarray(d["crystal_positions"]),
            np.asarray(d["crystal_occupancy"]),
            np.asarray(d["crystal_b_iso"]),
            name=str(d["crystal_name"]),
            spacegroup=str(d["crystal_spacegroup"]),
        )


def _expand(spacegroup, z, xyz, occ, biso, name):
    import gemmi

    try:
        sg = (
            gemmi.find_spacegroup_by_number(int(spacegroup))
            if isinstance(spacegroup, (int, np.integer))
            else gemmi.find_spacegroup_by_name(str(spacegroup))
        )
    except (ValueError, RuntimeError):
        sg = None
    if sg is None:
        raise CrystalError(f"{name}: unknown space group {spacegroup!r}")
    ops = list(sg.operations())
    rot = np.array([op.rot for op in ops], float) / ops[0].DEN
    tra = np.array([op.tran for op in ops], float) / ops[0].DEN
    Z, P, Oc, B = [], [], [], []
    for zi, p, o, b in zip(z, xyz, occ, biso, strict=True):
        eq = (np.einsum("nij,j->ni", rot, p) + tra) % 1.0
        uniq: list[np.ndarray] = []
        for e in eq:
            if not any(np.all(np.abs((e - u + 0.5) % 1.0 - 0.5) < 1e-4) for u in uniq):
                uniq.append(e)
        Z += [zi] * len(uniq)
        P += uniq
        Oc += [o] * len(uniq)
        B += [b] * len(uniq)
    return Z, np.array(P), np.array(Oc), np.array(B), sg.hm


# Bundled crystals: room-temperature lattice parameters (Angstrom) from standard references and
# approximate room-temperature isotropic B (Angstrom^2; Debye-model values, good to ~20 %).
BUNDLED_CRYSTALS: dict[str, dict[str, Any]] = {
    "Au": {
        "cell": (4.0782,) * 3 + (90, 90, 90),
        "sg": "F m -3 m",
        "atoms": [("Au", (0, 0, 0), 1, 0.60)],
    },
    "Cu": {
        "cell": (3.6149,) * 3 + (90, 90, 90),
        "sg": "F m -3 m",
        "atoms": [("Cu", (0, 0, 0), 1, 0.55)],
    },
    "Al": {
        "cell": (4.0495,) * 3 + (90, 90, 90),
        "sg": "F m -3 m",
        "atoms": [("Al", (0, 0, 0), 1, 0.85)],
    },
    "Si": {
        "cell": (5.4309,) * 3 + (90, 90, 90),
        "sg": 227,
        "atoms": [("Si", (0.125, 0.125, 0.125), 1, 0.47)],
    },
    "Fe": {
        "cell": (2.8665,) * 3 + (90, 90, 90),
        "sg": "I m -3 m",
        "atoms": [("Fe", (0, 0, 0), 1, 0.35)],
    },
    "Ti": {
        "cell": (2.9508, 2.9508, 4.6855, 90, 90, 120),
        "sg": "P 63/m m c",
        "atoms": [("Ti", (1 / 3, 2 / 3, 0.25), 1, 0.55)],
    },
}
_ALIASES = {
    "fe-bcc": "Fe",
    "ti-hcp": "Ti",
    "gold": "Au",
    "copper": "Cu",
    "aluminium": "Al",
    "aluminum": "Al",
    "silicon": "Si",
    "iron": "Fe",
    "titanium": "Ti",
}


def bundled_crystal(name: str) -> Crystal:
    """One of the bundled crystals, built from its cell, sites and space group.

    Parameters
    ----------
    name : str
        ``Au``, ``Cu``, ``Al`` (fcc), ``Si`` (diamond), ``Fe`` (bcc, alias ``Fe-bcc``) or ``Ti``
        (hcp, alias ``Ti-hcp``); case is ignored.

    Returns
    -------
    Crystal
        The symmetry-expanded structure.

    Raises
    ------
    CrystalError
        When the name is not bundled.
    """
    key = _ALIASES.get(name.lower(), name[:1].upper() + name[1:].lower())
    if key not in BUNDLED_CRYSTALS:
        raise CrystalError(f"unknown bundled crystal {name!r}; choose from {sorted(BUNDLED_CRYSTALS)} or give a CIF")
    d = BUNDLED_CRYSTALS[key]
    # Si: origin choice 1 in gemmi's default setting of Fd-3m puts the atom at 0,0,0 / 1/4,1/4,1/4;
    # we give the origin-2 site 1/8,1/8,1/8 and expand with the origin-choice-2 operations
    sg = "F d -3 m:2" if key == "Si" else d["sg"]
    return Crystal.from_parameters(*d["cell"], atoms=d["atoms"], spacegroup=sg, name=key)


def load_crystal(spec: str | PathLike | Crystal) -> Crystal:
    """A Crystal from a bundled name, a CIF path, or a Crystal (returned as is)."""
    if isinstance(spec, Crystal):
        return spec
    s = str(spec)
    if s.lower().endswith(".cif") or "/" in s or "\\" in s:
        from pathlib import Path

        if not Path(s).is_file():
            raise FileFormatError(s, "no such CIF file")
        return Crystal.from_cif(s)
    return bundled_crystal(s)
