"""abTEM 1.x measurements saved with ``to_zarr``: 4D diffraction patterns over a scan.

abTEM (GPL, never imported here) writes a zarr group with the array ``array0`` and its
description in the group attribute ``metadata0``: ``type`` ``"DiffractionPatterns"``, the beam
``energy`` in eV and ``semiangle_cutoff`` in mrad, and per axis (``axes.axis_0`` ...) its
``type`` (``ScanAxis``, ``ReciprocalSpaceAxis``), ``sampling``, ``offset`` and ``units``.

abTEM indexes arrays ``(x, y, k_x, k_y)`` with x the first axis; ours are ``(scan_y, scan_x,
k_y, k_x)`` (x horizontal), so the data is transposed lazily ``(1, 0, 3, 2)``, the same turn
our abTEM simulation engine applies to each pattern. The patterns are centred (``fftshift``):
the origin is where k = 0, ``-offset / sampling`` on each detector axis.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from ..data.calibration import Calibration
from ..errors import CalibrationError, FileFormatError

__all__ = ["abtem_calibration", "abtem_metadata", "transpose_to_ours"]

_SCAN, _RECIP = "ScanAxis", "ReciprocalSpaceAxis"


def abtem_metadata(attrs: Mapping[str, Any]) -> dict | None:
    """The ``metadata0`` attribute of an abTEM 4D diffraction measurement, or None if not one.

    Parameters
    ----------
    attrs : mapping
        A zarr group's attributes.

    Returns
    -------
    dict or None
        abTEM's metadata of the measurement.
    """
    meta = attrs.get("metadata0")
    if not isinstance(meta, Mapping) or meta.get("type") != "DiffractionPatterns":
        return None
    if not str(meta.get("data_origin", "")).startswith("abTEM"):
        return None
    return dict(meta)


def _axis(meta: Mapping[str, Any], i: int, path) -> Mapping[str, Any]:
    ax = (meta.get("axes") or {}).get(f"axis_{i}")
    if not isinstance(ax, Mapping):
        raise FileFormatError(path, f"abTEM metadata has no axis_{i}")
    return ax


def _sampling(ax: Mapping[str, Any], i: int, path) -> float:
    s = ax.get("sampling")
    if not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
        raise FileFormatError(path, f"abTEM axis_{i} has no positive sampling ({s!r})")
    return float(s)


def abtem_calibration(meta: Mapping[str, Any], shape: tuple[int, ...], path: str | os.PathLike) -> Calibration:
    """Our calibration of an abTEM measurement of array shape ``shape`` (abTEM's axis order).

    Parameters
    ----------
    meta : mapping
        The measurement's ``metadata0`` (:func:`abtem_metadata`).
    shape : tuple of int
        The array's shape, abTEM's ``(x, y, k_x, k_y)``.
    path : str or path
        The store, for error messages.

    Returns
    -------
    Calibration
        Scan step in Angstrom and detector pixel size in 1/A, with the beam energy where given.

    Raises
    ------
    FileFormatError
        For an array that is not 4D, axes that are not two scan then two reciprocal axes,
        units other than Å and 1/Å, non-square detector pixels, or an invalid calibration.
    """
    if len(shape) != 4:
        raise FileFormatError(
            path, f"abTEM array is {len(shape)}D {tuple(shape)}; need a 4D scan of diffraction patterns "
            "(reduce frozen phonons or other ensemble axes in abTEM before saving)",
        )  # fmt: skip
    axes = [_axis(meta, i, path) for i in range(4)]
    kinds = [ax.get("type") for ax in axes]
    if kinds != [_SCAN, _SCAN, _RECIP, _RECIP]:
        raise FileFormatError(
            path, f"abTEM axes are {kinds}; need two ScanAxis then two ReciprocalSpaceAxis "
            "(a grid scan of diffraction patterns)",
        )  # fmt: skip
    sx, sy, kx, ky = (_sampling(ax, i, path) for i, ax in enumerate(axes))
    units = {str(ax.get("units", "")) for ax in axes[:2]}, {str(ax.get("units", "")) for ax in axes[2:]}
    if units[0] not in ({"Å"}, {"A"}) or units[1] not in ({"1/Å"}, {"1/A"}):
        raise FileFormatError(path, f"abTEM axis units {sorted(units[0])} / {sorted(units[1])}; expected Å and 1/Å")
    if not math.isclose(kx, ky, rel_tol=1e-6):
        raise FileFormatError(path, f"abTEM detector pixels are not square ({kx} x {ky} 1/Å)")
    # origin: where k = 0 on each detector axis (ours: k_y is abTEM's axis 3, k_x its axis 2)
    off_x = float(axes[2].get("offset", 0.0))
    off_y = float(axes[3].get("offset", 0.0))
    energy = meta.get("energy")
    alpha = meta.get("semiangle_cutoff")
    try:
        return Calibration(
            scan_step=(sy, sx),
            scan_units="A",
            k_pixel_size=kx,
            k_units="1/A",
            beam_energy_kev=float(energy) / 1000.0 if isinstance(energy, (int, float)) and energy > 0 else None,
            convergence_semiangle_mrad=float(alpha) if isinstance(alpha, (int, float)) and alpha > 0 else None,
            origin_px=(-off_y / ky, -off_x / kx),
        )
    except CalibrationError as e:
        raise FileFormatError(path, f"abTEM metadata gives an invalid calibration: {e}") from None


def transpose_to_ours(arr: Any) -> Any:
    """The abTEM ``(x, y, k_x, k_y)`` array as a lazy dask array ``(scan_y, scan_x, k_y, k_x)``.

    Parameters
    ----------
    arr : array-like
        The store's array (zarr or dask).

    Returns
    -------
    dask.array.Array
        A transposed view; nothing is read.
    """
    import dask.array as da

    chunks = getattr(arr, "chunks", None)
    return da.from_array(arr, chunks=chunks if chunks is not None else "auto").transpose(1, 0, 3, 2)
