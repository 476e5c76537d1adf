"""Electron scattering factors of neutral atoms.

We use the five-Gaussian parametrisation of Peng, Ren, Dudarev & Whelan (1996), Acta Cryst. A52,
257-276, as tabulated in International Tables for Crystallography Vol. C, Table 4.3.2.2:

    f_e(s) = sum_i a_i exp(-b_i s^2),   s = sin(theta)/lambda = |g| / 2   [f_e in Angstrom]

valid for ``0 <= s <= 2 1/A`` (``|g| <= 4 1/A``), elements H to Cf. The coefficients are read
from gemmi's copy of that table (``gemmi.Element(...).c4322``), so no numbers are typed in here.
The values are the non-relativistic factors; the relativistic factor ``gamma`` of the beam only
scales all intensities together and is left out (every use here is relative).

Debye-Waller damping of an atom with isotropic ``B`` (Angstrom^2) multiplies ``f_e`` by
``exp(-B s^2)``.
"""

from __future__ import annotations

import functools

import numpy as np

from ..._docstrings import cite
from ...errors import Napari4DSTEMError

__all__ = ["element_number", "element_symbol", "peng_coefficients", "scattering_factor"]

S_MAX_INV_A = 2.0  # range of validity of the fit, in s = |g|/2


@functools.lru_cache(maxsize=256)
def _element(key: int | str):
    import gemmi

    el = gemmi.Element(key)
    if el.atomic_number == 0:
        raise Napari4DSTEMError(f"unknown chemical element {key!r}")
    return el


def element_number(symbol_or_z: int | str) -> int:
    """Atomic number of an element symbol (``'Au'``) or number (79).

    Parameters
    ----------
    symbol_or_z : int or str
        An atomic number 1..98, or a symbol; charges and labels are stripped (``'Fe2+'``,
        ``'Au1'``), case is ignored.

    Returns
    -------
    int
        The atomic number.

    Raises
    ------
    Napari4DSTEMError
        When the number is out of 1..98 or the symbol names no element.
    """
    if isinstance(symbol_or_z, (int, np.integer)):
        z = int(symbol_or_z)
        if not 1 <= z <= 98:
            raise Napari4DSTEMError(f"atomic number must be 1..98, got {z}")
        return z
    s = str(symbol_or_z).strip()
    s = "".join(c for c in s if c.isalpha())[:2]  # 'Fe2+', 'Au1' -> 'Fe', 'Au'
    if not s:
        raise Napari4DSTEMError(f"not an element: {symbol_or_z!r}")
    s = s[0].upper() + s[1:].lower()
    el = _element(s)
    if el.name.lower() != s.lower():  # gemmi maps unknown two-letter names to X
        el = _element(s[0])
    return int(el.atomic_number)


def element_symbol(z: int) -> str:
    """Chemical symbol of an element.

    Parameters
    ----------
    z : int
        Atomic number.

    Returns
    -------
    str
        The symbol (``'Au'`` for 79), from gemmi.

    Raises
    ------
    Napari4DSTEMError
        When ``z`` names no element.
    """
    return _element(int(z)).name


@functools.lru_cache(maxsize=128)
@cite
def peng_coefficients(z: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)``: the five Peng (1996) coefficients of element ``z`` (Angstrom, Angstrom^2).

    Parameters
    ----------
    z : int
        Atomic number.

    Returns
    -------
    a : ndarray ``(5,)`` float64, read-only
        Amplitudes in Angstrom.
    b : ndarray ``(5,)`` float64, read-only
        Widths in Angstrom^2.

    Raises
    ------
    Napari4DSTEMError
        When ``z`` names no element or has no tabulated factor.

    Notes
    -----
    Read from gemmi's copy of International Tables Vol. C, Table 4.3.2.2 (``Element.c4322``);
    cached.

    References
    ----------
    %(peng1996_1)s
    """
    c = _element(int(z)).c4322
    a, b = np.array(c.a, float), np.array(c.b, float)
    if a.shape != (5,) or not np.any(a):
        raise Napari4DSTEMError(f"no electron scattering factor tabulated for Z = {z}")
    a.setflags(write=False)
    b.setflags(write=False)
    return a, b


@cite
def scattering_factor(z: int, g_inv_A: np.ndarray) -> np.ndarray:
    """Electron scattering factor ``f_e`` (Angstrom) of element ``z`` at ``|g|`` (1/A).

    Parameters
    ----------
    z : int
        Atomic number.
    g_inv_A : array-like
        Scattering vector lengths ``|g|`` in 1/Angstrom (valid up to 4 1/A).

    Returns
    -------
    ndarray
        ``f_e`` in Angstrom, the shape of ``g_inv_A``; non-relativistic, no Debye-Waller
        factor.

    Raises
    ------
    Napari4DSTEMError
        When ``z`` names no element or has no tabulated factor.

    Notes
    -----
    ``f_e(s) = sum_i a_i exp(-b_i s^2)`` with ``s = |g| / 2``, five Gaussians [1]_.

    References
    ----------
    %(peng1996_1)s
    """
    a, b = peng_coefficients(int(z))
    s2 = (0.5 * np.asarray(g_inv_A, float)) ** 2
    return np.exp(-s2[..., None] * b) @ a
