"""Calibration of a 4D-STEM dataset: scan step, detector pixel size, origin, ellipse, rotation.

Axis order everywhere is ``(scan_y, scan_x, k_y, k_x)``; pairs are given y first.
Every field is optional and carries its unit in its name or in a companion ``*_units`` field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._docstrings import docfiller
from ..errors import CalibrationError

__all__ = [
    "AXIS_LABELS",
    "Calibration",
    "electron_wavelength_A",
    "mrad_per_inv_A",
    "normalize_k_units",
    "normalize_scan_units",
    "positive_number",
]

AXIS_LABELS = ("scan_y", "scan_x", "k_y", "k_x")

_SCAN_UNITS = {
    "px": "px",
    "pixel": "px",
    "pixels": "px",
    "a": "A",
    "å": "A",
    "angstrom": "A",
    "angstroms": "A",
    "nm": "nm",
    "nanometer": "nm",
    "nanometers": "nm",
    "um": "um",
    "µm": "um",
    "μm": "um",
    "micron": "um",
    "micrometer": "um",
}
_K_UNITS = {
    "px": "px",
    "pixel": "px",
    "pixels": "px",
    "1/a": "1/A",
    "a^-1": "1/A",
    "1/å": "1/A",
    "å^-1": "1/A",
    "1/angstrom": "1/A",
    "inv_a": "1/A",
    "a-1": "1/A",
    "å-1": "1/A",
    "mrad": "mrad",
    "milliradian": "mrad",
}
# what napari (pint) calls our units. Reciprocal angstroms are ``inverse_angstrom`` (symbol
# Å⁻¹), a unit this module defines in pint's application registry (the one napari parses layer
# units with, :func:`napari_unit_registry`): napari's scale bar writes its length with pint's
# compact prefixes (``{:~#P}``), and with "1 / angstrom" a bar of 0.2 Å⁻¹ read "200 1/kÅ" (any
# length below 1 Å⁻¹, i.e. nearly always). The prefixes come from the magnitude of the unit's
# dimension, so no unit of dimension 1/length escapes them (1/nm reads "1/µm" below 1 nm⁻¹);
# ``inverse_angstrom`` is defined as a plain number (like "percent"), which pint leaves as it
# is: the bar then reads "0.2 Å⁻¹", "0.05 Å⁻¹", "2 Å⁻¹". Layer scales stay in Å⁻¹ per pixel
# (world coordinates unchanged); pint cannot convert it to 1/nm, which nothing here asks.
_NAPARI_UNITS = {
    "px": "pixel",
    "A": "angstrom",
    "nm": "nanometer",
    "um": "micrometer",
    "1/A": "inverse_angstrom",
    "mrad": "milliradian",
}
# spatial frequencies of a real-space map (the Result pane's FFT), plain numbers for the same
# reason as Å⁻¹: "1/nm" read "750 1/µm" on the FFT's scale bar (UX audit, session 12)
_INVERSE_LENGTHS = {"1/A": "inverse_angstrom", "1/nm": "inverse_nanometer", "1/um": "inverse_micrometer"}
_FROM_NAPARI = {
    "pixel": "px",
    "angstrom": "A",
    "nanometer": "nm",
    "micrometer": "um",
    "inverse_angstrom": "1/A",
    "inverse_nanometer": "1/nm",
    "inverse_micrometer": "1/um",
    "1 / angstrom": "1/A",
    "milliradian": "mrad",
}
_UNITS_DEFINED = False


def napari_unit_registry() -> None:
    """Define ``inverse_angstrom`` (Å⁻¹) in pint's application registry.

    napari looks layer units up there. Done once; a no-op without pint (which napari brings).
    """
    global _UNITS_DEFINED
    if _UNITS_DEFINED:
        return
    try:
        import pint
    except ImportError:  # no napari: nobody parses the names
        return
    reg = pint.get_application_registry()
    for name, symbol in (("inverse_angstrom", "Å⁻¹"), ("inverse_nanometer", "nm⁻¹"), ("inverse_micrometer", "µm⁻¹")):
        if name not in reg:
            reg.define(f"{name} = 1 = {symbol}")
    _UNITS_DEFINED = True


def napari_unit(unit: str | None) -> str | None:
    """The name napari (pint) is given for one of our unit names.

    ``"1/nm"`` -> ``inverse_nanometer`` (a plain number, so the scale bar reads "0.5 nm⁻¹", not
    pint's compact "500 1/µm"), lengths and angles by their pint names; other strings unchanged,
    None as None.

    Parameters
    ----------
    unit : str or None
        Our unit name (``px``, ``A``, ``nm``, ``um``, ``1/A``, ``1/nm``, ``1/um``, ``mrad``).

    Returns
    -------
    str or None
        The name napari parses.
    """
    if unit is None:
        return None
    if unit in _INVERSE_LENGTHS:
        napari_unit_registry()
        return _INVERSE_LENGTHS[unit]
    return _NAPARI_UNITS.get(unit, unit)


_SCAN_TO_NM = {"A": 0.1, "nm": 1.0, "um": 1000.0}


def _norm(value: str, table: dict[str, str], what: str) -> str:
    key = str(value).strip().lower().replace(" ", "")
    if key not in table:
        allowed = sorted(set(table.values()))
        raise CalibrationError(f"unknown {what} unit {value!r}; use one of {allowed}")
    return table[key]


#: the Returns and Raises sections of the two unit normalisers, filled in by ``docfiller``
_UNIT_DOCS = {
    "unit_returns": "Returns\n-------\nstr\n    The canonical unit.\n\n"
    "Raises\n------\nCalibrationError\n    For an unknown unit (the allowed ones are listed).",
}


@docfiller(_UNIT_DOCS)
def normalize_scan_units(value: str) -> str:
    """Return the canonical scan unit (``'px'``, ``'A'``, ``'nm'``, ``'um'``) for ``value``.

    Parameters
    ----------
    value : str
        A unit as users write it (case and spaces ignored; e.g. ``"Å"``, ``"nanometer"``).

    %(unit_returns)s
    """
    return _norm(value, _SCAN_UNITS, "scan")


@docfiller(_UNIT_DOCS)
def normalize_k_units(value: str) -> str:
    """Return the canonical detector unit (``'px'``, ``'1/A'``, ``'mrad'``) for ``value``.

    Parameters
    ----------
    value : str
        A unit as users write it (case and spaces ignored).

    %(unit_returns)s
    """
    return _norm(value, _K_UNITS, "detector")


def electron_wavelength_A(energy_kev: float) -> float:
    """Relativistic electron wavelength in Angstrom for a beam energy in keV.

    Parameters
    ----------
    energy_kev : float
        Beam energy, keV (> 0).

    Returns
    -------
    float
        ``lambda = h c / sqrt(E (2 m0 c^2 + E))`` in Angstrom (``h c`` = 12.3984 keV A,
        ``m0 c^2`` = 510.999 keV; CODATA 2018).

    Raises
    ------
    CalibrationError
        For an energy that is not positive.
    """
    if not energy_kev > 0:
        raise CalibrationError(f"beam energy must be positive, got {energy_kev} keV")
    m0c2_kev = 510.99895
    hc_kev_A = 12.398419843320026
    e = float(energy_kev)
    return hc_kev_A / math.sqrt(e * (2.0 * m0c2_kev + e))


def mrad_per_inv_A(energy_kev: float) -> float:
    """Detector angle in mrad per 1/A of scattering vector, at a beam energy in keV.

    Parameters
    ----------
    energy_kev : float
        As for :func:`electron_wavelength_A`, which raises for a bad one.

    Returns
    -------
    float
        ``1000 lambda`` with ``lambda`` in Angstrom (small angle: ``theta = lambda k``).
    """
    return 1000.0 * electron_wavelength_A(energy_kev)


def positive_number(name: str, value: Any, *, optional: bool = False) -> float | None:
    """``value`` as a positive finite float, or a one-line error naming it.

    Parameters
    ----------
    name : str
        What the value is, for the message (e.g. ``"k_pixel_size"``).
    value : float, None or anything ``float()`` takes
        The value to check.
    optional : bool
        Whether None is allowed (it is then returned as is); default False.

    Returns
    -------
    float or None
        ``float(value)``; None for None when ``optional``.

    Raises
    ------
    CalibrationError
        When ``value`` is not a number (None included, unless ``optional``), not finite, zero
        or negative.
    """
    if value is None and optional:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CalibrationError(f"{name} must be a positive finite number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise CalibrationError(f"{name} must be a positive finite number, got {value!r}")
    return v


@dataclass(frozen=True, eq=False)
class Calibration:
    """How pixels of a 4D-STEM dataset map to physical quantities.

    Parameters
    ----------
    scan_step : (float, float) or None
        Probe step ``(y, x)`` in ``scan_units``.
    scan_units : str
        ``'px'`` (uncalibrated), ``'A'``, ``'nm'`` or ``'um'``.
    k_pixel_size : float or None
        Detector pixel size in ``k_units`` (square pixels; distortion goes in ``ellipse``).
    k_units : str
        ``'px'`` (uncalibrated), ``'1/A'`` (reciprocal Angstrom) or ``'mrad'``.
    beam_energy_kev : float or None
        Beam energy in keV; with it, ``1/A`` and ``mrad`` convert into each other.
    convergence_semiangle_mrad : float or None
        Probe convergence semi-angle in mrad.
    origin_px : (float, float) or None
        Mean position ``(k_y, k_x)`` of the unscattered beam, in detector pixels.
    origin_map_px : ndarray of shape (scan_y, scan_x, 2) or None
        Origin ``(k_y, k_x)`` per scan position (measured or plane-fitted), in pixels.
    ellipse : (a, b, theta_deg) or None
        Elliptic distortion: semi-axis lengths ``a``, ``b`` (relative) and the angle of
        ``a`` from the ``k_x`` axis towards ``k_y``, in degrees.
    rotation_deg : float or None
        Rotation of the detector axes relative to the scan axes, in degrees.
    flip : bool
        Whether the detector axes are mirrored relative to the scan axes.
    """

    scan_step: tuple[float, float] | None = None
    scan_units: str = "px"
    k_pixel_size: float | None = None
    k_units: str = "px"
    beam_energy_kev: float | None = None
    convergence_semiangle_mrad: float | None = None
    origin_px: tuple[float, float] | None = None
    origin_map_px: np.ndarray | None = field(default=None, repr=False)
    ellipse: tuple[float, float, float] | None = None
    rotation_deg: float | None = None
    flip: bool = False

    def __post_init__(self):
        """Normalise the units and store every field in its canonical type; refuse bad values."""
        set_ = object.__setattr__
        set_(self, "scan_units", normalize_scan_units(self.scan_units))
        set_(self, "k_units", normalize_k_units(self.k_units))
        if self.scan_step is not None:
            step = np.broadcast_to(np.asarray(self.scan_step, dtype=float), (2,))
            set_(self, "scan_step", tuple(positive_number("scan_step", s) for s in step))
        elif self.scan_units != "px":
            raise CalibrationError(f"scan_units {self.scan_units!r} given without scan_step")
        set_(self, "k_pixel_size", positive_number("k_pixel_size", self.k_pixel_size, optional=True))
        if self.k_pixel_size is None and self.k_units != "px":
            raise CalibrationError(f"k_units {self.k_units!r} given without k_pixel_size")
        set_(self, "beam_energy_kev", positive_number("beam_energy_kev", self.beam_energy_kev, optional=True))
        set_(
            self,
            "convergence_semiangle_mrad",
            positive_number("convergence_semiangle_mrad", self.convergence_semiangle_mrad, optional=True),
        )
        if self.origin_px is not None:
            o = np.asarray(self.origin_px, dtype=float)
            if o.shape != (2,) or not np.all(np.isfinite(o)):
                raise CalibrationError(f"origin_px must be two finite numbers, got {self.origin_px!r}")
            set_(self, "origin_px", (float(o[0]), float(o[1])))
        if self.origin_map_px is not None:
            m = np.array(self.origin_map_px, dtype=np.float64)
            if m.ndim != 3 or m.shape[-1] != 2:
                raise CalibrationError(f"origin_map_px must have shape (scan_y, scan_x, 2), got {m.shape}")
            m.setflags(write=False)
            set_(self, "origin_map_px", m)
            if self.origin_px is None:
                set_(self, "origin_px", tuple(float(v) for v in np.nanmean(m, axis=(0, 1))))
        if self.ellipse is not None:
            e = tuple(float(v) for v in self.ellipse)
            if len(e) != 3 or not (e[0] > 0 and e[1] > 0):
                raise CalibrationError(f"ellipse must be (a > 0, b > 0, theta_deg), got {self.ellipse!r}")
            set_(self, "ellipse", e)
        if self.rotation_deg is not None:
            set_(self, "rotation_deg", float(self.rotation_deg))
        set_(self, "flip", bool(self.flip))

    # -- comparison ---------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        """Equal fields (the origin map compared by value, NaN equal to NaN)."""
        if not isinstance(other, Calibration):
            return NotImplemented
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if a is None or b is None or not np.array_equal(a, b, equal_nan=True):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def replace(self, **changes: Any) -> Calibration:
        """Return a copy with the given fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # -- physics --------------------------------------------------------------------------------
    @property
    def wavelength_A(self) -> float | None:
        """Electron wavelength in Angstrom, or None without a beam energy."""
        return None if self.beam_energy_kev is None else electron_wavelength_A(self.beam_energy_kev)

    def k_pixel_size_in(self, units: str) -> float:
        """Detector pixel size converted to ``units`` (``'1/A'`` or ``'mrad'``).

        Raises :class:`CalibrationError` when the detector is uncalibrated or the conversion
        needs a beam energy that is missing.
        """
        units = normalize_k_units(units)
        if self.k_pixel_size is None or self.k_units == "px":
            raise CalibrationError("the detector pixel size is not calibrated")
        if units == self.k_units:
            return self.k_pixel_size
        if units == "px":
            raise CalibrationError("cannot convert a calibrated pixel size to pixels")
        if self.beam_energy_kev is None:
            raise CalibrationError(f"converting detector units {self.k_units} -> {units} needs the beam energy")
        per = mrad_per_inv_A(self.beam_energy_kev)
        return self.k_pixel_size * per if self.k_units == "1/A" else self.k_pixel_size / per

    def scan_step_nm(self) -> tuple[float, float] | None:
        """Scan step ``(y, x)`` in nm, or None when the scan is uncalibrated."""
        if self.scan_step is None or self.scan_units == "px":
            return None
        f = _SCAN_TO_NM[self.scan_units]
        return (self.scan_step[0] * f, self.scan_step[1] * f)

    def origin_at(self, iy: int, ix: int) -> tuple[float, float] | None:
        """Origin ``(k_y, k_x)`` in pixels at scan position ``(iy, ix)``."""
        if self.origin_map_px is not None:
            return tuple(float(v) for v in self.origin_map_px[iy, ix])
        return self.origin_px

    # -- napari mapping -------------------------------------------------------------------------
    def scan_scale(self) -> tuple[tuple[float, float], tuple[str, str]]:
        """The napari ``scale`` and ``units`` of the scan axes (1 px steps when uncalibrated)."""
        step = self.scan_step or (1.0, 1.0)
        u = _NAPARI_UNITS[self.scan_units]
        return (float(step[0]), float(step[1])), (u, u)

    def k_scale(self) -> tuple[tuple[float, float], tuple[str, str]]:
        """The napari ``scale`` and ``units`` of the detector axes (1 px when uncalibrated)."""
        napari_unit_registry()
        s = self.k_pixel_size or 1.0
        u = _NAPARI_UNITS[self.k_units]
        return (float(s), float(s)), (u, u)

    def napari_kwargs(self, part: str = "4d") -> dict[str, Any]:
        """``scale``, ``units`` and ``axis_labels`` for a napari layer.

        ``part`` is ``'4d'`` for the full dataset, ``'scan'`` for a real-space map
        ``(scan_y, scan_x)`` or ``'k'`` for a diffraction image ``(k_y, k_x)``.
        """
        (ss, su), (ks, ku) = self.scan_scale(), self.k_scale()
        if part == "4d":
            return {"scale": ss + ks, "units": su + ku, "axis_labels": AXIS_LABELS}
        if part == "scan":
            return {"scale": ss, "units": su, "axis_labels": AXIS_LABELS[:2]}
        if part == "k":
            return {"scale": ks, "units": ku, "axis_labels": AXIS_LABELS[2:]}
        raise ValueError(f"part must be '4d', 'scan' or 'k', got {part!r}")

    @classmethod
    def from_napari(
        cls, scale: Sequence[float], units: Sequence[Any], *, base: Calibration | None = None
    ) -> Calibration:
        """Rebuild a calibration from a 4D napari layer's ``scale`` and ``units``.

        Fields napari does not carry (origin, energy, ...) are taken from ``base``.
        """
        if len(scale) != 4 or len(units) != 4:
            raise CalibrationError(f"need 4 scale and unit values, got {len(scale)} and {len(units)}")
        names = [_FROM_NAPARI.get(str(u), str(u)) for u in units]
        su, ku = normalize_scan_units(names[0]), normalize_k_units(names[2])
        base = base or cls()
        return base.replace(
            scan_step=None if su == "px" and np.allclose(scale[:2], 1) else (scale[0], scale[1]),
            scan_units=su,
            k_pixel_size=None if ku == "px" and np.isclose(scale[2], 1) else float(scale[2]),
            k_units=ku,
        )

    # -- plain dict (JSON) ----------------------------------------------------------------------
    def to_dict(self, *, include_origin_map: bool = False) -> dict[str, Any]:
        """A JSON-compatible dict; the origin map only if asked (it can be large)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "origin_map_px":
                if include_origin_map and v is not None:
                    out[f.name] = v.tolist()
                elif v is not None:
                    out["origin_map_shape"] = list(v.shape)
                continue
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        """The Calibration of a :meth:`to_dict` mapping (unknown keys refused)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names - {"origin_map_shape", "recipe"}  # recipe: how `calibrate` made it
        if unknown:
            raise CalibrationError(f"unknown calibration fields {sorted(unknown)}")
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("scan_step", "origin_px", "ellipse"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)
