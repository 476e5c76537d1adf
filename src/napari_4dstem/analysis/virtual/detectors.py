"""Virtual detectors: small frozen dataclasses that render a mask for a detector shape.

Coordinates are detector pixels ``(k_y, k_x)``, y first, with pixel centres at integer
coordinates (pixel ``(r, c)`` covers ``[r - 0.5, r + 0.5)``). A pixel belongs to a detector
when its centre does:

- :class:`PointDetector` -- the one pixel nearest ``center_px``;
- :class:`DiskDetector` -- ``d <= radius_px`` where ``d`` is the distance of the pixel centre
  from ``center_px``;
- :class:`AnnulusDetector` -- ``inner_px < d <= outer_px`` (so a disk of radius ``R`` and an
  annulus with ``inner_px = R`` tile the detector without counting a pixel twice);
- :class:`RectangleDetector` -- rows ``rows[0] : rows[1]`` and columns ``cols[0] : cols[1]``
  (half-open, like slices);
- :class:`WedgeDetector` -- an annular sector: ``inner_px < d <= outer_px`` and the angle
  ``phi = atan2(k_y - c_y, k_x - c_x)`` (degrees, from ``+k_x`` towards ``+k_y``) within
  ``start_deg .. end_deg`` going that way (ends included);
- :class:`MaskDetector` -- any boolean mask, or a weighted (float) mask
  (:func:`mask_from_file` reads one from ``.npy`` or ``.tif``);
- :class:`GridDetector` -- ``rows x cols`` circular apertures of ``radius_px`` on a square
  lattice of ``pitch_px`` centred on ``center_px`` and turned by ``rotation_deg`` (a pixel is
  in it when it is in any aperture; :meth:`GridDetector.apertures` gives one
  :class:`DiskDetector` per aperture, for one image each);
- :class:`CombinedDetector` -- the weighted sum of several detectors' masks (``A - B`` is
  weights ``(1, -1)``): a weighted detector.

Every detector knows its bounding box of rows (:meth:`~Detector.row_bounds`), so a small
detector reads only the rows it needs, and gives its parameters as a plain dict
(:meth:`~Detector.to_params`) to record with a result. Presets BF / ABF / ADF / HAADF come from
calibrated angles (:func:`preset_detector`).
"""

from __future__ import annotations

import abc
import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ...data.calibration import Calibration
from ...errors import CalibrationError, DataShapeError

__all__ = [
    "PRESETS",
    "AnnulusDetector",
    "CombinedDetector",
    "Detector",
    "DiskDetector",
    "GridDetector",
    "MaskDetector",
    "PointDetector",
    "RectangleDetector",
    "WedgeDetector",
    "farthest_pixel_px",
    "mask_from_file",
    "mask_runs",
    "preset_detector",
    "ring_covers_pixel",
]


def _shape2(shape) -> tuple[int, int]:
    s = tuple(int(v) for v in shape)
    if len(s) != 2 or min(s) < 1:
        raise DataShapeError(f"detector shape must be two positive ints (k_y, k_x), got {shape!r}")
    return s  # type: ignore[return-value]


def _point(p, what: str) -> tuple[float, float]:
    a = np.asarray(p, dtype=float)
    if a.shape != (2,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{what} must be two finite numbers (k_y, k_x), got {p!r}")
    return float(a[0]), float(a[1])


class Detector(abc.ABC):
    """Base of the virtual detectors (see the module docstring for the pixel rule).

    Attributes
    ----------
    kind : str
        The detector's kind (``"disk"``, ``"annulus"``...), its default channel name.
    weighted : bool
        True for a float (weighted) mask, False for a boolean one.
    """

    kind = "detector"

    @property
    def weighted(self) -> bool:
        """True for a float (weighted) mask, False for a boolean one."""
        return False

    @abc.abstractmethod
    def _render(self, shape: tuple[int, int]) -> np.ndarray:
        """The mask on a detector of ``shape`` (each concrete detector draws its own)."""

    def render(self, shape) -> np.ndarray:
        """The mask on a detector of ``shape``: bool, or float64 for a weighted detector.

        Raises :class:`DataShapeError` when no pixel of the detector lies on the pattern.
        """
        shape = _shape2(shape)
        m = self._render(shape)
        if not np.any(m):
            raise DataShapeError(f"{self!r} covers no pixel of the {shape[0]}x{shape[1]} detector")
        return m

    def row_bounds(self, shape) -> tuple[int, int]:
        """Rows ``(start, stop)`` of the detector that the mask touches."""
        rows = np.flatnonzero(np.any(self.render(shape), axis=1))
        return int(rows[0]), int(rows[-1]) + 1

    def weights_box(self, shape) -> tuple[np.ndarray, int, int]:
        """The mask's bounding box as float64 weights, with its first row and column.

        Parameters
        ----------
        shape : (int, int)
            ``(k_y, k_x)`` of the patterns.

        Returns
        -------
        weights : ndarray ``(h, w)`` float64, C-contiguous
            The mask (1.0 inside a boolean detector) on its bounding box.
        r0, c0 : int
            Detector row and column of ``weights[0, 0]``.
        """
        m = self.render(shape).astype(np.float64)
        rows = np.flatnonzero(np.any(m != 0, axis=1))
        cols = np.flatnonzero(np.any(m != 0, axis=0))
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        return np.ascontiguousarray(m[r0:r1, c0:c1]), r0, c0

    def fraction(self, shape) -> float:
        """Fraction of the detector pixels the mask covers (non-zero weight)."""
        m = self.render(shape)
        return float(np.count_nonzero(m)) / m.size

    def to_params(self) -> dict[str, Any]:
        """The detector as a plain dict (kind plus fields), to store with a result."""
        d = {"kind": self.kind}
        d.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()})
        return d


@dataclass(frozen=True)
class PointDetector(Detector):
    """The single pixel nearest ``center_px`` ``(k_y, k_x)``.

    Parameters
    ----------
    center_px : (float, float)
        Position ``(k_y, k_x)`` in detector pixels; the pixel whose centre is nearest is used.

    Raises
    ------
    ValueError
        When ``center_px`` is not two finite numbers.
    """

    center_px: tuple[float, float]
    kind = "point"

    def __post_init__(self):
        """Store the centre as a float pair; refuse a non-finite one."""
        object.__setattr__(self, "center_px", _point(self.center_px, "center_px"))

    def _render(self, shape):
        m = np.zeros(shape, dtype=bool)
        r, c = (math.floor(v + 0.5) for v in self.center_px)
        if 0 <= r < shape[0] and 0 <= c < shape[1]:
            m[r, c] = True
        return m


def _dist2(shape, center) -> np.ndarray:
    yy = (np.arange(shape[0]) - center[0])[:, None]
    xx = (np.arange(shape[1]) - center[1])[None, :]
    return yy * yy + xx * xx


@dataclass(frozen=True)
class DiskDetector(Detector):
    """Pixels within ``radius_px`` of ``center_px`` ``(k_y, k_x)``.

    Parameters
    ----------
    center_px : (float, float)
        Disk centre ``(k_y, k_x)`` in detector pixels.
    radius_px : float
        Radius in pixels, ``>= 0``; a pixel belongs when its centre is at distance ``<= radius_px``.

    Raises
    ------
    ValueError
        When the centre is not two finite numbers or the radius is negative or not finite.
    """

    center_px: tuple[float, float]
    radius_px: float
    kind = "disk"

    def __post_init__(self):
        """Store the centre and radius as floats; refuse non-finite or negative values."""
        object.__setattr__(self, "center_px", _point(self.center_px, "center_px"))
        r = float(self.radius_px)
        if not (math.isfinite(r) and r >= 0):
            raise ValueError(f"radius_px must be a finite number >= 0, got {self.radius_px!r}")
        object.__setattr__(self, "radius_px", r)

    def _render(self, shape):
        return _dist2(shape, self.center_px) <= self.radius_px**2


def _check_ring(det: AnnulusDetector | WedgeDetector) -> None:
    """Check and store, as floats, the centre and the radii ``0 <= inner_px < outer_px`` of a ring detector."""
    object.__setattr__(det, "center_px", _point(det.center_px, "center_px"))
    i, o = float(det.inner_px), float(det.outer_px)
    if not (math.isfinite(i) and math.isfinite(o) and 0 <= i < o):
        raise ValueError(
            f"{det.kind} radii must satisfy 0 <= inner_px < outer_px, got {det.inner_px!r}, {det.outer_px!r}"
        )
    object.__setattr__(det, "inner_px", i)
    object.__setattr__(det, "outer_px", o)


@dataclass(frozen=True)
class AnnulusDetector(Detector):
    """Pixels with ``inner_px < distance <= outer_px`` from ``center_px`` ``(k_y, k_x)``.

    Parameters
    ----------
    center_px : (float, float)
        Ring centre ``(k_y, k_x)`` in detector pixels.
    inner_px, outer_px : float
        Radii in pixels, ``0 <= inner_px < outer_px`` (a disk of radius ``R`` and an annulus
        with ``inner_px = R`` count no pixel twice).

    Raises
    ------
    ValueError
        When the centre is not two finite numbers or the radii are not ordered and finite.
    """

    center_px: tuple[float, float]
    inner_px: float
    outer_px: float
    kind = "annulus"

    def __post_init__(self):
        """Store the centre and radii as floats; refuse radii not ``0 <= inner < outer``."""
        _check_ring(self)

    def _render(self, shape):
        d2 = _dist2(shape, self.center_px)
        return (d2 > self.inner_px**2) & (d2 <= self.outer_px**2)


@dataclass(frozen=True)
class RectangleDetector(Detector):
    """Rows ``rows[0]:rows[1]`` and columns ``cols[0]:cols[1]`` (half-open pixel ranges).

    Parameters
    ----------
    rows, cols : (int, int)
        ``(start, stop)`` pixel ranges like slices (rounded to integers), ``stop > start``;
        the parts outside the detector are clipped.

    Raises
    ------
    ValueError
        When a range is not two numbers with ``stop > start``.
    """

    rows: tuple[int, int]
    cols: tuple[int, int]
    kind = "rectangle"

    def __post_init__(self):
        """Round the ranges to integers; refuse empty or reversed ones."""
        for name in ("rows", "cols"):
            v = tuple(round(float(x)) for x in getattr(self, name))
            if len(v) != 2 or v[1] <= v[0]:
                raise ValueError(f"{name} must be (start, stop) with stop > start, got {v}")
            object.__setattr__(self, name, v)

    def _render(self, shape):
        m = np.zeros(shape, dtype=bool)
        r0, r1 = max(self.rows[0], 0), min(self.rows[1], shape[0])
        c0, c1 = max(self.cols[0], 0), min(self.cols[1], shape[1])
        if r1 > r0 and c1 > c0:
            m[r0:r1, c0:c1] = True
        return m


@dataclass(frozen=True)
class WedgeDetector(Detector):
    """An annular sector around ``center_px`` ``(k_y, k_x)``.

    A pixel belongs when ``inner_px < distance <= outer_px`` and its angle ``atan2(k_y - c_y,
    k_x - c_x)`` lies between ``start_deg`` and ``end_deg``, counted from ``+k_x`` towards ``+k_y``
    (clockwise on screen, where row 0 is at the top). ``end_deg`` may be below ``start_deg`` (the
    sector then crosses 0 deg: 350 -> 10 is 20 deg wide); ``end_deg = start_deg + 360`` is the
    whole annulus. Both edges are included.

    Parameters
    ----------
    center_px : (float, float)
        Sector centre ``(k_y, k_x)`` in detector pixels.
    inner_px, outer_px : float
        Radii in pixels, ``0 <= inner_px < outer_px``.
    start_deg, end_deg : float
        Angular edges in degrees; they differ and span at most 360 deg.

    Raises
    ------
    ValueError
        When the centre, radii or angles break the rules above.
    """

    center_px: tuple[float, float]
    inner_px: float
    outer_px: float
    start_deg: float
    end_deg: float
    kind = "wedge"

    def __post_init__(self):
        """Store the centre, radii and angles as floats; refuse invalid ones."""
        _check_ring(self)
        a0, a1 = float(self.start_deg), float(self.end_deg)
        if not (math.isfinite(a0) and math.isfinite(a1)) or a0 == a1 or abs(a1 - a0) > 360:
            raise ValueError(
                f"wedge angles must be finite, differ, and span at most 360 deg, got {self.start_deg!r}, "
                f"{self.end_deg!r}"
            )
        object.__setattr__(self, "start_deg", a0)
        object.__setattr__(self, "end_deg", a1)

    @property
    def span_deg(self) -> float:
        """The sector's opening angle, in (0, 360]."""
        d = self.end_deg - self.start_deg
        return 360.0 if abs(d) == 360 else d % 360.0

    def _render(self, shape):
        cy, cx = self.center_px
        yy = (np.arange(shape[0]) - cy)[:, None]
        xx = (np.arange(shape[1]) - cx)[None, :]
        d2 = yy * yy + xx * xx
        phi = np.degrees(np.arctan2(yy, xx))
        inside = (phi - self.start_deg) % 360.0 <= self.span_deg
        return (d2 > self.inner_px**2) & (d2 <= self.outer_px**2) & inside

    def polygon(self, n_arc: int = 48) -> np.ndarray:
        """Vertices ``(k_y, k_x)`` of the sector's outline, for drawing.

        The outer arc, then the inner arc back (the centre for ``inner_px = 0``), with about
        ``n_arc`` points per full turn.
        """
        n = max(2, int(np.ceil(n_arc * self.span_deg / 360.0)) + 1)
        a = np.radians(self.start_deg + np.linspace(0.0, self.span_deg, n))
        cy, cx = self.center_px
        outer = np.stack([cy + self.outer_px * np.sin(a), cx + self.outer_px * np.cos(a)], axis=1)
        if self.inner_px > 0:
            inner = np.stack([cy + self.inner_px * np.sin(a), cx + self.inner_px * np.cos(a)], axis=1)[::-1]
        else:
            inner = np.array([[cy, cx]])
        return np.vstack([outer, inner])


@dataclass(frozen=True, eq=False)
class MaskDetector(Detector):
    """An arbitrary mask ``(k_y, k_x)``: boolean, or float weights (a weighted detector).

    Parameters
    ----------
    mask : ndarray ``(k_y, k_x)``
        Boolean mask, or numeric weights (stored as float64); kept read-only. It must have
        exactly the patterns' detector shape.
    name : str
        Name recorded with results (default ``"mask"``).

    Raises
    ------
    DataShapeError
        When the mask is not 2D (or, at render, not the detector's shape).
    ValueError
        When a weight is NaN or inf.
    TypeError
        For a mask that is neither boolean nor numeric.
    """

    mask: np.ndarray = field(repr=False)
    name: str = "mask"
    kind = "mask"

    def __post_init__(self):
        """Store the mask read-only (numeric as float64); refuse non-2D, non-numeric or non-finite masks."""
        m = np.asarray(self.mask)
        if m.ndim != 2:
            raise DataShapeError(f"a detector mask must be 2D (k_y, k_x), got shape {m.shape}")
        if m.dtype.kind == "b":
            m = m.copy()
        elif m.dtype.kind in "uif":
            m = m.astype(np.float64)
            if not np.all(np.isfinite(m)):
                raise ValueError("the detector mask contains NaN or inf weights")
        else:
            raise TypeError(f"a detector mask must be boolean or numeric, got dtype {m.dtype}")
        m.setflags(write=False)
        object.__setattr__(self, "mask", m)

    @property
    def weighted(self) -> bool:
        """True for a float (weighted) mask, False for a boolean one."""
        return self.mask.dtype.kind != "b"

    def _render(self, shape):
        if self.mask.shape != shape:
            raise DataShapeError(f"detector mask {self.name!r} has shape {self.mask.shape}, the patterns {shape}")
        return self.mask

    def __repr__(self) -> str:
        """Kind, shape and name (not the mask's values)."""
        kind = "weighted" if self.weighted else "boolean"
        return f"MaskDetector({kind} {self.mask.shape[0]}x{self.mask.shape[1]}, name={self.name!r})"

    def to_params(self) -> dict[str, Any]:
        """Kind, name, weighted, shape, pixel count and the mask's SHA-1 (not the mask itself)."""
        digest = hashlib.sha1(np.ascontiguousarray(self.mask).tobytes()).hexdigest()
        return {
            "kind": self.kind,
            "name": self.name,
            "weighted": self.weighted,
            "shape": list(self.mask.shape),
            "n_pixels": int(np.count_nonzero(self.mask)),
            "sha1": digest,
        }


@dataclass(frozen=True)
class GridDetector(Detector):
    """``rows x cols`` circular apertures of radius ``radius_px`` on a square lattice.

    Aperture ``(i, j)`` (``i < rows``, ``j < cols``) is centred at ``center_px + pitch_px *
    (u * e_col + v * e_row)`` with ``u = j - (cols - 1) / 2``, ``v = i - (rows - 1) / 2`` and,
    for ``t = rotation_deg`` (from ``+k_x`` towards ``+k_y``, as for :class:`WedgeDetector`),
    ``e_col = (sin t, cos t)`` and ``e_row = (cos t, -sin t)`` in ``(k_y, k_x)``: at 0 degrees
    columns run along ``+k_x`` and rows along ``+k_y``. A pixel belongs to the grid when its
    centre is within ``radius_px`` of any aperture centre (each pixel counted once).

    Parameters
    ----------
    center_px : (float, float)
        Centre of the grid ``(k_y, k_x)``, detector pixels.
    pitch_px : float
        Distance between neighbouring apertures, pixels (> 0).
    radius_px : float
        Radius of each aperture, pixels (> 0).
    shape : (int, int)
        ``(rows, cols)`` (default 3 x 3).
    rotation_deg : float
        Rotation of the grid, degrees from ``+k_x`` towards ``+k_y`` (default 0).

    Raises
    ------
    ValueError
        On an empty shape, or a pitch or radius that is not positive and finite.
    """

    center_px: tuple[float, float]
    pitch_px: float
    radius_px: float
    shape: tuple[int, int] = (3, 3)
    rotation_deg: float = 0.0
    kind = "grid"

    def __post_init__(self):
        """Normalise the centre, shape and sizes; refuse an empty grid or non-positive sizes."""
        object.__setattr__(self, "center_px", _point(self.center_px, "center_px"))
        n = tuple(int(v) for v in np.atleast_1d(self.shape))
        if len(n) != 2 or min(n) < 1:
            raise ValueError(f"grid shape must be two positive ints (rows, cols), got {self.shape!r}")
        object.__setattr__(self, "shape", n)
        for name in ("pitch_px", "radius_px", "rotation_deg"):
            v = float(getattr(self, name))
            if not math.isfinite(v):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
            object.__setattr__(self, name, v)
        if self.pitch_px <= 0 or self.radius_px <= 0:
            raise ValueError(f"pitch_px and radius_px must be positive, got {self.pitch_px}, {self.radius_px}")

    def centers(self) -> np.ndarray:
        """The aperture centres ``(rows * cols, 2)`` ``(k_y, k_x)``, row by row."""
        t = math.radians(self.rotation_deg)
        e_col = np.array([math.sin(t), math.cos(t)])
        e_row = np.array([math.cos(t), -math.sin(t)])
        rows, cols = self.shape
        v, u = np.meshgrid(np.arange(rows) - (rows - 1) / 2, np.arange(cols) - (cols - 1) / 2, indexing="ij")
        off = self.pitch_px * (u.reshape(-1, 1) * e_col + v.reshape(-1, 1) * e_row)
        return np.asarray(self.center_px) + off

    def apertures(self) -> list[DiskDetector]:
        """One :class:`DiskDetector` per aperture, row by row (one image each)."""
        return [DiskDetector((float(c[0]), float(c[1])), self.radius_px) for c in self.centers()]

    def _render(self, shape):
        m = np.zeros(shape, dtype=bool)
        r2 = self.radius_px * self.radius_px
        for c in self.centers():
            m |= _dist2(shape, c) <= r2
        return m


@dataclass(frozen=True, eq=False)
class CombinedDetector(Detector):
    """The weighted sum ``sum_i weights[i] * mask_i`` of several detectors.

    A boolean mask counts 1 on its pixels: ``A - B`` is ``CombinedDetector((A, B), (1, -1))``.
    Always a weighted detector; a component may lie partly off the pattern, the sum may not be zero.

    Parameters
    ----------
    detectors : tuple of Detector
        The parts.
    weights : tuple of float
        One finite weight per part.

    Raises
    ------
    ValueError
        When the counts differ or a weight is not finite.
    TypeError
        When a part is not a :class:`Detector`.
    """

    detectors: tuple
    weights: tuple
    kind = "combined"

    def __post_init__(self):
        """Store the parts and weights; refuse a weight count that differs or non-finite weights."""
        dets = tuple(self.detectors)
        w = tuple(float(v) for v in self.weights)
        if not dets or len(dets) != len(w):
            raise ValueError(f"a combined detector needs one weight per detector, got {len(dets)} and {len(w)}")
        if not all(isinstance(d, Detector) for d in dets):
            raise TypeError("a combined detector combines Detector objects")
        if not all(math.isfinite(v) for v in w):
            raise ValueError(f"weights must be finite, got {w}")
        object.__setattr__(self, "detectors", dets)
        object.__setattr__(self, "weights", w)

    @property
    def weighted(self) -> bool:
        """Always True: the weights make a weighted mask."""
        return True

    def _render(self, shape):
        m = np.zeros(shape, dtype=np.float64)
        for d, w in zip(self.detectors, self.weights, strict=True):
            m += w * d._render(shape)
        return m

    def __repr__(self) -> str:
        """The weighted terms, e.g. ``CombinedDetector(+1*disk -1*annulus)``."""
        terms = " ".join(f"{w:+g}*{d.kind}" for d, w in zip(self.detectors, self.weights, strict=True))
        return f"CombinedDetector({terms})"

    def to_params(self) -> dict[str, Any]:
        """Kind, weights and the parameters of each part (what recipes store)."""
        return {"kind": self.kind, "weights": list(self.weights), "detectors": [d.to_params() for d in self.detectors]}


def mask_from_file(path, detector_shape=None, name: str | None = None) -> MaskDetector:
    """A :class:`MaskDetector` from a ``.npy`` or ``.tif``/``.tiff`` file.

    Parameters
    ----------
    path : str or path
        The file: a 2D boolean or numeric image, or a stack of one image.
    detector_shape : (int, int), optional
        When given, a mask of another shape is refused.
    name : str, optional
        The detector's name (default: the file's stem).

    Returns
    -------
    MaskDetector
        The mask, with the resolved file path as its ``path`` attribute (so a recipe that uses
        it can be replayed).

    Raises
    ------
    DataShapeError
        For a missing file, another suffix, a mask that is not 2D, a shape other than
        ``detector_shape`` (naming both), or a ``.tif`` without the tifffile package.
    """
    from pathlib import Path

    p = Path(path)
    suffix = p.suffix.lower()
    if not p.is_file():
        raise DataShapeError(f"no mask file at {str(p)!r}")
    if suffix == ".npy":
        m = np.load(p, allow_pickle=False)
    elif suffix in (".tif", ".tiff"):
        try:
            import tifffile
        except ImportError:  # a core install (napari brings tifffile)
            raise DataShapeError("reading a .tif mask needs the tifffile package (pip install tifffile)") from None
        m = tifffile.imread(p)
    else:
        raise DataShapeError(f"a mask file must be .npy or .tif, got {p.name!r}")
    m = np.asarray(m)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise DataShapeError(
            f"mask file {p.name!r} holds an array of shape {m.shape}; a detector mask is 2D (k_y, k_x)"
        )
    if detector_shape is not None and tuple(m.shape) != tuple(int(v) for v in detector_shape):
        raise DataShapeError(
            f"mask file {p.name!r} has shape {tuple(m.shape)}, the detector is {tuple(int(v) for v in detector_shape)}"
        )
    det = MaskDetector(m, name=name or p.stem)
    object.__setattr__(det, "path", str(p.resolve()))
    return det


def mask_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A boolean mask as horizontal runs: rows ``r`` and column ranges ``c0 : c1`` (int64).

    Parameters
    ----------
    mask : array-like ``(k_y, k_x)``
        The mask (non-zero counts as inside).

    Returns
    -------
    r, c0, c1 : ndarray ``(n_runs,)`` int64
        Row, first column and one past the last column of each run, in raster order.
    """
    m = np.asarray(mask, dtype=bool)
    pad = np.zeros((m.shape[0], 1), dtype=bool)
    edges = np.diff(np.hstack([pad, m, pad]).astype(np.int8), axis=1)
    r_start, c_start = np.nonzero(edges == 1)
    r_stop, c_stop = np.nonzero(edges == -1)
    # both lists come out in raster order, so the k-th start pairs with the k-th stop
    assert np.array_equal(r_start, r_stop)
    return r_start.astype(np.int64), c_start.astype(np.int64), c_stop.astype(np.int64)


# inner, outer radius in units of the convergence semi-angle alpha; None = the detector corner
PRESETS: dict[str, tuple[float, float | None]] = {
    "BF": (0.0, 1.0),
    "ABF": (0.5, 1.0),
    "LAADF": (1.0, 2.0),
    "ADF": (1.0, 3.0),
    "HAADF": (3.0, None),
    "FULL": (0.0, None),
}


def preset_detector(
    name: str,
    *,
    detector_shape: tuple[int, int],
    calibration: Calibration | None = None,
    center_px: tuple[float, float] | None = None,
    bf_radius_px: float | None = None,
    inner_mrad: float | None = None,
    outer_mrad: float | None = None,
) -> DiskDetector | AnnulusDetector:
    """A BF, ABF, ADF or HAADF detector sized from the convergence semi-angle.

    Parameters
    ----------
    name : {"BF", "ABF", "LAADF", "ADF", "HAADF", "FULL"}
        The preset (case-insensitive; see :data:`PRESETS`).
    detector_shape : (int, int)
        ``(k_y, k_x)`` of the patterns.
    calibration : Calibration, optional
        Gives the convergence semi-angle, the detector pixel size in mrad and the mean origin.
    center_px : (float, float), optional
        Detector centre (default: the calibration's mean origin, else the detector's centre).
    bf_radius_px : float, optional
        The convergence semi-angle in pixels (e.g. the radius of the detected bright-field
        disk), for an uncalibrated detector.
    inner_mrad, outer_mrad : float, optional
        Override the preset's angles (they need the mrad calibration).

    Returns
    -------
    DiskDetector or AnnulusDetector
        A disk when the inner radius is 0, else an annulus.

    Raises
    ------
    ValueError
        For an unknown preset or a ``bf_radius_px`` that is not positive.
    CalibrationError
        When the angles are not calibrated and no ``bf_radius_px`` is given (FULL needs neither).
    DataShapeError
        When the preset covers no pixel of the detector: its inner edge lies beyond the farthest
        pixel (e.g. HAADF's 3 alpha on a small detector; the message says where the detector
        ends, in alpha), or its radii fall between the pixel centres of a tiny detector.

    Notes
    -----
    With ``alpha`` the convergence semi-angle: BF is the disk ``d <= alpha``, ABF the annulus
    ``alpha/2 < d <= alpha``, LAADF ``alpha < d <= 2 alpha``, ADF ``alpha < d <= 3 alpha``, HAADF
    ``3 alpha < d`` out to the farthest detector corner and FULL the whole detector. ``alpha`` in
    pixels is ``calibration.convergence_semiangle_mrad / calibration.k_pixel_size_in('mrad')``,
    or ``bf_radius_px`` when given. A preset is never clamped to the detector: one that would
    cover no pixel raises instead.
    """
    key = str(name).upper()
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; use one of {sorted(PRESETS)}")
    shape = _shape2(detector_shape)
    cal = calibration or Calibration()
    if center_px is None:
        center_px = cal.origin_px if cal.origin_px is not None else ((shape[0] - 1) / 2, (shape[1] - 1) / 2)
    cy, cx = _point(center_px, "center_px")
    farthest = farthest_pixel_px(shape, (cy, cx))
    if key == "FULL" and inner_mrad is None and outer_mrad is None:
        return DiskDetector((cy, cx), farthest + 1.0)  # the whole pattern: no angle needed
    px_mrad = None
    if inner_mrad is not None or outer_mrad is not None or bf_radius_px is None:
        try:
            px_mrad = cal.k_pixel_size_in("mrad")
        except CalibrationError as e:
            raise CalibrationError(
                f"the {key} preset needs the detector pixel size in mrad ({e}); calibrate the "
                "detector or pass bf_radius_px (the bright-field disk radius in pixels)"
            ) from None
    if bf_radius_px is not None:
        alpha_px = float(bf_radius_px)
        if not (math.isfinite(alpha_px) and alpha_px > 0):
            raise ValueError(f"bf_radius_px must be positive, got {bf_radius_px!r}")
    else:
        if cal.convergence_semiangle_mrad is None:
            raise CalibrationError(
                f"the {key} preset needs the convergence semi-angle "
                "(Calibration.convergence_semiangle_mrad) or bf_radius_px"
            )
        alpha_px = cal.convergence_semiangle_mrad / px_mrad
    lo, hi = PRESETS[key]
    inner = lo * alpha_px if inner_mrad is None else float(inner_mrad) / px_mrad
    if outer_mrad is not None:
        outer = float(outer_mrad) / px_mrad
    elif hi is None:
        outer = farthest + 1.0
    else:
        outer = hi * alpha_px
    where = f"{lo:g} alpha" if inner_mrad is None else f"{float(inner_mrad):g} mrad"
    if inner >= farthest:  # no pixel centre lies beyond the inner edge (audit3 defect 3)
        raise DataShapeError(
            f"the {key} preset starts at {where} ({inner:.1f} px from the centre), beyond the "
            f"detector's farthest pixel ({farthest:.1f} px): the detector ends at "
            f"{farthest / alpha_px:.2g} alpha"
        )
    if inner >= outer:
        raise ValueError(f"the {key} preset's inner radius {inner:g} px is not below its outer radius {outer:g} px")
    if not ring_covers_pixel(shape, (cy, cx), inner if inner > 0 else None, outer):
        raise DataShapeError(
            f"the {key} preset ({inner:.2g} to {outer:.2g} px from the centre, alpha = {alpha_px:.2g} px) "
            f"lies between the pixel centres of this {shape[0]} x {shape[1]} px detector and covers none of them"
        )
    if inner <= 0:
        return DiskDetector((cy, cx), outer)
    return AnnulusDetector((cy, cx), inner, outer)


def farthest_pixel_px(detector_shape, center_px) -> float:
    """Distance in pixels from ``center_px`` to the farthest pixel centre of the detector.

    Parameters
    ----------
    detector_shape : (int, int)
        ``(k_y, k_x)`` of the patterns.
    center_px : (float, float)
        The centre ``(k_y, k_x)`` in detector pixels.

    Returns
    -------
    float
        The distance to the farthest pixel centre (one of the detector's corners).
    """
    h, w = _shape2(detector_shape)
    cy, cx = _point(center_px, "center_px")
    return max(math.hypot(r - cy, c - cx) for r in (0, h - 1) for c in (0, w - 1))


def ring_covers_pixel(detector_shape, center_px, inner_px: float | None, outer_px: float) -> bool:
    """Whether a disk or an annulus around ``center_px`` holds a pixel centre of the detector.

    By the detectors' own pixel rule, without drawing the mask (O(rows): cheap enough for a
    GUI thread).

    Parameters
    ----------
    detector_shape : (int, int)
        ``(k_y, k_x)`` of the patterns.
    center_px : (float, float)
        The centre ``(k_y, k_x)`` in detector pixels.
    inner_px : float or None
        The annulus' inner radius (pixels with ``inner_px < distance``); None for a disk.
    outer_px : float
        The outer radius (pixels with ``distance <= outer_px``).

    Returns
    -------
    bool
        True when at least one pixel centre lies in the disk or annulus.

    Notes
    -----
    In each row the pixels within ``outer_px`` form one run of columns; the run's pixel farthest
    from the centre (one of its two ends) is the one most likely beyond ``inner_px``, so only the
    run ends (and their neighbours, against rounding) are tested, with the mask's own arithmetic.
    """
    h, w = _shape2(detector_shape)
    cy, cx = _point(center_px, "center_px")
    dy = np.arange(h) - cy
    room = outer_px * outer_px - dy * dy
    rows = room >= 0
    if not np.any(rows):
        return False
    dy, s = dy[rows], np.sqrt(room[rows])
    a = np.clip(np.ceil(cx - s), 0, w - 1)
    b = np.clip(np.floor(cx + s), 0, w - 1)
    cols = np.stack([a - 1, a, a + 1, b - 1, b, b + 1], axis=1)
    cols = np.clip(cols, 0, w - 1)
    dx = cols - cx
    d2 = dy[:, None] * dy[:, None] + dx * dx
    inside = d2 <= outer_px * outer_px
    if inner_px is not None:
        inside &= d2 > inner_px * inner_px
    return bool(np.any(inside))
