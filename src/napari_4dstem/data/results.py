"""Result types: real-space maps, diffraction images and ragged Bragg peak lists.

Each result carries the Calibration of the data it came from and the parameters that made it,
so a saved result says how it was computed (they go into the EMD file as metadata).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataShapeError
from .calibration import Calibration

__all__ = ["PEAK_FIELDS", "BraggPeaks", "DiffractionImage", "RealSpaceMap"]


def _frozen(a: Any, dtype=None) -> np.ndarray:
    arr = np.array(a, dtype=dtype, copy=True)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class RealSpaceMap:
    """A map over the scan: ``(scan_y, scan_x)`` or a stack ``(scan_y, scan_x, n)`` of channels.

    Parameters
    ----------
    data : ndarray
        The values, shape ``(scan_y, scan_x)`` or ``(scan_y, scan_x, len(channels))``.
    name : str
        Node and layer name (e.g. ``"virtual_bf"``, ``"strain"``).
    units : str
        Units of the values (``"counts"``, ``"px"``, ``"rad"``, ``""`` for dimensionless).
    channels : tuple of str
        Names of the channels of a stack (e.g. ``("e_xx", "e_yy", "e_xy", "theta")``).
    calibration : Calibration
        Calibration of the scan.
    params : mapping
        Parameters of the computation that made this map.
    """

    data: np.ndarray
    name: str = "map"
    units: str = ""
    channels: tuple[str, ...] = ()
    calibration: Calibration = field(default_factory=Calibration)
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        """Store the data read-only; check its channels against the names."""
        d = _frozen(self.data)
        if d.ndim not in (2, 3):
            raise DataShapeError(f"a real-space map must be 2D or 3D, got shape {d.shape}")
        channels = tuple(str(c) for c in self.channels)
        if d.ndim == 3 and len(channels) != d.shape[2]:
            raise DataShapeError(f"{d.shape[2]} channels need as many names, got {channels}")
        if d.ndim == 2 and channels:
            raise DataShapeError("a 2D map has no channels")
        object.__setattr__(self, "data", d)
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "params", dict(self.params))

    @property
    def scan_shape(self) -> tuple[int, int]:
        """``(scan_y, scan_x)``."""
        return self.data.shape[:2]

    def channel(self, name: str) -> np.ndarray:
        """One channel of a stack by name."""
        try:
            return self.data[..., self.channels.index(name)]
        except ValueError:
            raise KeyError(f"{self.name} has no channel {name!r}; it has {self.channels}") from None


@dataclass(frozen=True, eq=False)
class DiffractionImage:
    """An image on the detector ``(k_y, k_x)``: mean pattern, probe, Bragg vector map...

    Parameters
    ----------
    data : ndarray ``(k_y, k_x)``
        The image (stored read-only).
    name : str
        Node and layer name (default ``"pattern"``).
    units : str
        Units of the values (default ``"counts"``).
    calibration : Calibration
        Calibration of the detector.
    params : mapping
        Parameters of the computation that made this image.

    Raises
    ------
    DataShapeError
        When ``data`` is not 2D.
    """

    data: np.ndarray
    name: str = "pattern"
    units: str = "counts"
    calibration: Calibration = field(default_factory=Calibration)
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        """Store the image read-only; refuse one that is not 2D."""
        d = _frozen(self.data)
        if d.ndim != 2:
            raise DataShapeError(f"a diffraction image must be 2D (k_y, k_x), got shape {d.shape}")
        object.__setattr__(self, "data", d)
        object.__setattr__(self, "params", dict(self.params))


PEAK_FIELDS = ("qy", "qx", "intensity", "correlation")


@dataclass(frozen=True, eq=False)
class BraggPeaks:
    """Bragg peaks found in every pattern, stored ragged (CSR) for vectorised work.

    The peaks of scan position ``(iy, ix)`` are rows ``offsets[i]:offsets[i + 1]`` of the
    flat field arrays, with ``i = iy * scan_x + ix``. Positions ``qy``, ``qx`` are raw detector
    pixel coordinates (row, column; not origin-corrected).

    Parameters
    ----------
    scan_shape : (int, int)
    offsets : int64 array of length ``scan_y * scan_x + 1``
    qy, qx : float arrays
        Peak positions in detector pixels.
    intensity : float array
        Peak intensity (correlation peak height or integrated counts, see ``params``).
    correlation : float array
        Detection score (cross-correlation value; the NN confidence for NN detections).
    """

    scan_shape: tuple[int, int]
    offsets: np.ndarray
    qy: np.ndarray
    qx: np.ndarray
    intensity: np.ndarray
    correlation: np.ndarray
    name: str = "braggpeaks"
    calibration: Calibration = field(default_factory=Calibration)
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        """Store the offsets as int64 and the fields as float64, read-only; check their lengths."""
        shape = tuple(int(s) for s in self.scan_shape)
        if len(shape) != 2:
            raise DataShapeError(f"scan_shape must be (scan_y, scan_x), got {self.scan_shape}")
        off = _frozen(self.offsets, np.int64)
        if off.shape != (shape[0] * shape[1] + 1,) or off[0] != 0 or np.any(np.diff(off) < 0):
            raise DataShapeError("offsets must start at 0, not decrease and have scan_y*scan_x+1 entries")
        n = int(off[-1])
        object.__setattr__(self, "scan_shape", shape)
        object.__setattr__(self, "offsets", off)
        for f in PEAK_FIELDS:
            a = _frozen(getattr(self, f), np.float64)
            if a.shape != (n,):
                raise DataShapeError(f"{f} must have {n} entries (offsets[-1]), got shape {a.shape}")
            object.__setattr__(self, f, a)
        object.__setattr__(self, "params", dict(self.params))

    @classmethod
    def from_padded(cls, table: np.ndarray, **kw) -> BraggPeaks:
        """Build from a padded peak table ``(scan_y, scan_x, 1 + max_peaks, >= 4)``.

        The table is a peak finder's scan map: per position the peak count at ``[0, 0]``, then
        one row ``(qy, qx, intensity, correlation, ...)`` per peak; ``kw`` as the class (name,
        calibration, params).
        """
        sy, sx = table.shape[:2]
        flat = table.reshape(sy * sx, *table.shape[2:])
        count = flat[:, 0, 0].astype(np.int64)
        keep = np.arange(flat.shape[1] - 1)[None, :] < count[:, None]
        rows = flat[:, 1:][keep]
        offsets = np.concatenate([[0], np.cumsum(count)]).astype(np.int64)
        return cls((sy, sx), offsets, rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], **kw)

    @classmethod
    def from_lists(
        cls, peaks: Sequence[Mapping[str, Any]] | np.ndarray, scan_shape: tuple[int, int], **kw
    ) -> BraggPeaks:
        """Build from one record per scan position (raster order).

        Each record is a mapping or structured array with fields ``qy``, ``qx``, ``intensity``
        and optionally ``correlation`` (NaN where missing); ``kw`` as the class.
        """
        n_pos = scan_shape[0] * scan_shape[1]
        if len(peaks) != n_pos:
            raise DataShapeError(f"need {n_pos} peak lists for scan {scan_shape}, got {len(peaks)}")
        counts = [len(np.atleast_1d(p["qy"])) for p in peaks]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        cols = {}
        for f in PEAK_FIELDS:
            parts = []
            for p, c in zip(peaks, counts, strict=True):
                has = f in (p.dtype.names if isinstance(p, np.ndarray) else p)
                parts.append(np.atleast_1d(p[f]) if has else np.full(c, np.nan))
            cols[f] = np.concatenate(parts) if parts else np.zeros(0)
        return cls(scan_shape, offsets, **cols, **kw)

    @property
    def n_peaks(self) -> int:
        """Number of peaks over the whole scan."""
        return int(self.offsets[-1])

    def counts(self) -> np.ndarray:
        """Number of peaks per scan position, shape ``(scan_y, scan_x)``."""
        return np.diff(self.offsets).reshape(self.scan_shape)

    def at(self, iy: int, ix: int) -> dict[str, np.ndarray]:
        """The peaks of one scan position as a dict of arrays (views, no copy)."""
        i = iy * self.scan_shape[1] + ix
        a, b = self.offsets[i], self.offsets[i + 1]
        return {f: getattr(self, f)[a:b] for f in PEAK_FIELDS}

    def position_index(self) -> np.ndarray:
        """Flat scan index of every peak (``iy * scan_x + ix``), shape ``(n_peaks,)``."""
        return np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))
