"""Per-pattern features for classification, streamed over scan chunks.

Every feature is computed by one pass of the engine (:func:`~napari_4dstem.engine.map_scan`)
over the scan in the data's native dtype: the whole dataset is never copied into memory, only
the features ``(scan_y, scan_x, n_features)`` (float32) are kept. All features are taken about
the origin of each pattern (the unscattered beam, from the calibration's origin map when it
has one), so descan does not move them.

Kinds
-----
``"pattern"``
    The pattern cropped to a disk of radius ``radius_px`` about the origin and binned
    ``bin_px x bin_px`` (bins fixed to the origin, not to the detector). Keeps orientation.
``"radial"``
    Mean intensity in rings of width ``bin_px`` about the origin: rotation-invariant.
``"polar"``
    Intensity on a polar grid (rings of width ``bin_px``, ``n_angles`` sectors), then the
    magnitudes of its angular Fourier harmonics 0..``n_harmonics`` per ring: invariant to an
    in-plane rotation of the pattern, but it still sees the lattice's angular symmetry.
``"angular"``
    Orientation-sensitive and blind to disk intensities: the intensity at each angle about
    the origin (``n_angles`` sectors, summed over radii ``inner_px``..``radius_px``, each pixel
    split linearly between the two nearest sector centres), smoothed over ``smooth_deg`` and
    divided by its own running maximum over ``window_deg`` (plus 10 % of its mean): every disk
    becomes a bump of height about 1 at its angle whatever its intensity, so an in-plane
    rotation of a few degrees shifts every bump while thickness and dynamical intensities
    change them little.
``"pattern+angular"``
    Both, from one pass; :mod:`.model` weighs each block by its own noise level (from scan
    neighbours) so the decomposition keeps whichever block's variance rises above its noise:
    lattice spacing and phase from the pattern, small rotations from the angular profile.
``"pattern+radial"``
    The pattern block and a fine radial profile blind to disk intensities, from one pass: the
    mean intensity in rings of ``radial_bin_px`` (0.5 px) about each pattern's own origin (each
    pixel split linearly between the two nearest ring centres, so sub-pixel origins and radii
    move it continuously), smoothed over ``radial_smooth_px`` and divided by its running maximum
    over ``radial_window_px`` (plus 10 % of its mean): each ring of disks becomes a bump of height
    about 1 at its radius, so a lattice 2-3 % larger moves every bump outwards by a fraction of a
    pixel while thickness and dynamical intensities change them little. Rotation-invariant.
``"bragg"``
    A histogram of detected Bragg vectors (disk positions minus origin) on a grid of
    ``bin_px`` bins within ``radius_px``, each disk counted once (not weighted by its
    intensity), spread bilinearly: independent of thickness and dynamical intensities. Made
    from a :class:`~napari_4dstem.data.results.BraggPeaks` (no pass over the data).

The features are raw binned counts (float32); :mod:`.decompose` normalises and transforms
them (per-pattern sum, square root) before any decomposition, so the same features also serve
the linear unmixing of boundary pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numba
import numpy as np

from ...data.calibration import Calibration
from ...data.results import BraggPeaks
from ...engine.driver import map_scan
from ...engine.jobs import Job, PartialMap, eager, job_doc
from ...engine.kernels import as_kernel_input
from ...errors import DataShapeError

__all__ = [
    "FEATURE_KINDS",
    "FeatureParams",
    "Features",
    "bragg_features",
    "compute_features",
    "iter_features",
]

FEATURE_KINDS = ("pattern", "radial", "polar", "angular", "pattern+angular", "pattern+radial", "bragg")


@dataclass(frozen=True)
class FeatureParams:
    """How features are made (all lengths in detector pixels).

    Parameters
    ----------
    kind : {"pattern", "radial", "polar", "angular", "pattern+angular", "pattern+radial", "bragg"}
        The feature kind (see the module docstring).
    radius_px : float or None
        Outer radius about the origin; None: the largest circle inside the detector for the
        mean origin, less 1 px.
    bin_px : float or None
        Bin size (square bins for ``"pattern"``/``"bragg"``, ring width for ``"radial"`` and
        ``"polar"``). None: about 40 bins across the diameter for ``"pattern"`` and
        ``"bragg"``, 1 px for ``"radial"``/``"polar"``.
    inner_px : float
        Pixels closer than this to the origin are left out (e.g. the bright-field disk, whose
        intensity mostly follows thickness); 0 keeps them.
    n_angles : int
        Sectors of the polar grid (``"polar"``).
    n_harmonics : int
        Angular harmonics kept per ring (``"polar"``), 0 is the ring mean.
    angle_deg, smooth_deg, window_deg : float
        ``"angular"``: sector width, smoothing width and running-maximum window (degrees; the
        window should span a disk and the gap to its neighbour).
    radial_bin_px, radial_smooth_px, radial_window_px : float
        ``"pattern+radial"``: ring width, smoothing width and running-maximum window of the fine
        radial profile (pixels; the window should span a disk).

    Raises
    ------
    ValueError
        For an unknown kind, non-positive radius or bin, negative ``inner_px``, or polar and
        angular settings out of range.
    """

    kind: str = "pattern"
    radius_px: float | None = None
    bin_px: float | None = None
    inner_px: float = 0.0
    n_angles: int = 64
    n_harmonics: int = 12
    angle_deg: float = 1.0
    smooth_deg: float = 5.0
    window_deg: float = 15.0
    radial_bin_px: float = 0.5
    radial_smooth_px: float = 1.0
    radial_window_px: float = 6.0

    def __post_init__(self):
        """Refuse an unknown kind and out-of-range sizes, angles and harmonics."""
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"feature kind must be one of {FEATURE_KINDS}, got {self.kind!r}")
        if self.radius_px is not None and not self.radius_px > 0:
            raise ValueError(f"radius_px must be positive, got {self.radius_px}")
        if self.bin_px is not None and not self.bin_px > 0:
            raise ValueError(f"bin_px must be positive, got {self.bin_px}")
        if self.inner_px < 0:
            raise ValueError(f"inner_px must be >= 0, got {self.inner_px}")
        if self.kind == "polar" and not (2 <= self.n_angles and 0 <= self.n_harmonics <= self.n_angles // 2):
            raise ValueError("polar features need n_angles >= 2 and 0 <= n_harmonics <= n_angles/2")
        if not (0 < self.angle_deg <= 30 and self.smooth_deg >= 0 and self.window_deg >= self.angle_deg):
            raise ValueError("angular features need 0 < angle_deg <= 30, smooth_deg >= 0 and window_deg >= angle_deg")
        if not (self.radial_bin_px > 0 and self.radial_smooth_px >= 0 and self.radial_window_px >= self.radial_bin_px):
            raise ValueError(
                "fine radial features need radial_bin_px > 0, radial_smooth_px >= 0 and "
                "radial_window_px >= radial_bin_px"
            )

    def resolved(self, detector_shape: tuple[int, int], origin_px: tuple[float, float]) -> FeatureParams:
        """These parameters with ``radius_px`` and ``bin_px`` filled in for a detector."""
        H, W = detector_shape
        oy, ox = origin_px
        r = self.radius_px
        if r is None:
            r = max(2.0, min(oy, ox, H - 1 - oy, W - 1 - ox) - 1.0)
        b = self.bin_px
        if b is None:
            grid = ("pattern", "bragg", "pattern+angular", "pattern+radial")
            b = max(1.0, math.ceil(2 * r / 40)) if self.kind in grid else 1.0
        return replace(self, radius_px=float(r), bin_px=float(b))

    def n_side(self) -> int:
        """Bins per side of the square ``"pattern"``/``"bragg"`` grid: ``ceil(2 radius / bin)``."""
        return math.ceil(2 * self.radius_px / self.bin_px)

    def n_rings(self) -> int:
        """Rings of the radial and polar grids: ``ceil(radius / bin)``."""
        return math.ceil(self.radius_px / self.bin_px)

    def n_sectors(self) -> int:
        """Sectors of the angular profile: ``round(360 / angle_deg)``, at least 8."""
        return max(8, round(360.0 / self.angle_deg))

    def n_fine_rings(self) -> int:
        """Rings of the fine radial profile (``"pattern+radial"``): ``ceil(radius / radial_bin_px)``."""
        return math.ceil(self.radius_px / self.radial_bin_px)


@dataclass(frozen=True, eq=False)
class Features:
    """Features of every pattern.

    Attributes
    ----------
    values : float32 array ``(scan_y, scan_x, n_features)``
        Raw (binned counts); normalised later.
    total : float64 array ``(scan_y, scan_x)``
        Counts of each whole pattern (the dose, for the noise model).
    params : FeatureParams
        Resolved parameters.
    shape : tuple of int
        Shape of one feature vector as an image (``(n, n)`` pattern/Bragg grids, ``(n_rings,)``
        radial profiles, ``(n_rings, n_harmonics + 1)`` polar harmonics).
    origin_px : float array ``(scan_y, scan_x, 2)``
        Origin used for each pattern ``(k_y, k_x)``.
    """

    values: np.ndarray
    total: np.ndarray
    params: FeatureParams
    shape: tuple[int, ...]
    origin_px: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def scan_shape(self) -> tuple[int, int]:
        """``(scan_y, scan_x)``."""
        return self.values.shape[:2]

    def flat(self) -> np.ndarray:
        """``(n_patterns, n_features)`` view."""
        return self.values.reshape(-1, self.values.shape[-1])

    def as_image(self, vector: np.ndarray) -> np.ndarray:
        """One feature vector (or a component) as its image (see ``shape``)."""
        return np.asarray(vector).reshape(self.shape)


# -- kernels ------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _pattern_block(block, row0, origin, radius, binpx, inner, nside, out, total):
    ny, nx, h, w = block.shape
    r2 = radius * radius
    i2 = inner * inner
    for a in range(ny):
        for b in range(nx):
            oy = origin[a, b, 0]
            ox = origin[a, b, 1]
            y0 = oy - radius
            x0 = ox - radius
            tot = 0.0
            for i in range(h):
                dy = row0 + i - oy
                for j in range(w):
                    v = float(block[a, b, i, j])
                    tot += v
                    dx = j - ox
                    d2 = dy * dy + dx * dx
                    if d2 > r2 or d2 < i2:
                        continue
                    # bilinear splat of the pixel centre onto bin centres: the features
                    # move continuously with a sub-pixel origin (no jumps with descan)
                    fy = (row0 + i - y0) / binpx - 0.5
                    fx = (j - x0) / binpx - 0.5
                    by = math.floor(fy)
                    bx = math.floor(fx)
                    wy = fy - by
                    wx = fx - bx
                    for ky in range(2):
                        yy = by + ky
                        if yy < 0 or yy >= nside:
                            continue
                        vy = v * (wy if ky else 1.0 - wy)
                        for kx in range(2):
                            xx = bx + kx
                            if 0 <= xx < nside:
                                out[a, b, yy * nside + xx] += vy * (wx if kx else 1.0 - wx)
            total[a, b] = tot


@numba.njit(cache=True, nogil=True)
def _polar_block(block, row0, origin, radius, binpx, inner, nrings, nang, out, total):
    # out (ny, nx, nrings * nang): summed intensity per (ring, sector), later divided by counts
    ny, nx, h, w = block.shape
    r2 = radius * radius
    i2 = inner * inner
    two_pi = 2.0 * math.pi
    for a in range(ny):
        for b in range(nx):
            oy = origin[a, b, 0]
            ox = origin[a, b, 1]
            tot = 0.0
            for i in range(h):
                dy = row0 + i - oy
                for j in range(w):
                    v = float(block[a, b, i, j])
                    tot += v
                    dx = j - ox
                    d2 = dy * dy + dx * dx
                    if d2 >= r2 or d2 < i2:
                        continue
                    # linear split between the two nearest ring centres (continuous in origin)
                    fr = math.sqrt(d2) / binpx - 0.5
                    r0 = math.floor(fr)
                    wr = fr - r0
                    t = math.atan2(dy, dx)
                    if t < 0:
                        t += two_pi
                    ti = int(t / two_pi * nang)
                    if ti >= nang:
                        ti = nang - 1
                    if 0 <= r0 < nrings:
                        out[a, b, r0 * nang + ti] += v * (1.0 - wr)
                    if 0 <= r0 + 1 < nrings:
                        out[a, b, (r0 + 1) * nang + ti] += v * wr
            total[a, b] = tot


@numba.njit(cache=True, nogil=True)
def _angular_block(block, row0, origin, radius, inner, nsec, out):
    # out (ny, nx, nsec): intensity per sector about the origin, each pixel split linearly
    # between the two nearest sector centres (continuous in the origin)
    ny, nx, h, w = block.shape
    r2 = radius * radius
    i2 = inner * inner
    two_pi = 2.0 * math.pi
    for a in range(ny):
        for b in range(nx):
            oy = origin[a, b, 0]
            ox = origin[a, b, 1]
            for i in range(h):
                dy = row0 + i - oy
                for j in range(w):
                    dx = j - ox
                    d2 = dy * dy + dx * dx
                    if d2 >= r2 or d2 < i2:
                        continue
                    v = float(block[a, b, i, j])
                    t = math.atan2(dy, dx)
                    if t < 0:
                        t += two_pi
                    ft = t / two_pi * nsec - 0.5
                    t0 = math.floor(ft)
                    wt = ft - t0
                    out[a, b, t0 % nsec] += v * (1.0 - wt)
                    out[a, b, (t0 + 1) % nsec] += v * wt


@numba.njit(cache=True, nogil=True)
def _fine_radial_block(block, row0, origin, radius, inner, binpx, nrings, out):
    # out (ny, nx, nrings): mean intensity per ring about each pattern's own origin, each pixel
    # split linearly between the two nearest ring centres; the pixel weights are summed about the
    # same origin, so the mean is exact for any sub-pixel origin
    ny, nx, h, w = block.shape
    r2 = radius * radius
    i2 = inner * inner
    wsum = np.zeros(nrings)
    for a in range(ny):
        for b in range(nx):
            oy = origin[a, b, 0]
            ox = origin[a, b, 1]
            wsum[:] = 0.0
            for i in range(h):
                dy = row0 + i - oy
                for j in range(w):
                    dx = j - ox
                    d2 = dy * dy + dx * dx
                    if d2 >= r2 or d2 < i2:
                        continue
                    v = float(block[a, b, i, j])
                    fr = math.sqrt(d2) / binpx - 0.5
                    r0 = math.floor(fr)
                    wr = fr - r0
                    if 0 <= r0 < nrings:
                        out[a, b, r0] += v * (1.0 - wr)
                        wsum[r0] += 1.0 - wr
                    if 0 <= r0 + 1 < nrings:
                        out[a, b, r0 + 1] += v * wr
                        wsum[r0 + 1] += wr
            for k in range(nrings):
                if wsum[k] > 0:
                    out[a, b, k] /= wsum[k]


def radial_profile_normalised(profile: np.ndarray, p: FeatureParams) -> np.ndarray:
    """Fine radial profiles normalised so that each ring of disks is a bump of height about 1.

    Parameters
    ----------
    profile : array ``(..., n_rings)``
        Mean intensity per ring of width ``p.radial_bin_px``.
    p : FeatureParams
        Gives ``radial_bin_px``, ``radial_smooth_px`` and ``radial_window_px``.

    Returns
    -------
    ndarray
        float64, the same shape: smoothed over ``radial_smooth_px``, divided by the running
        maximum over ``radial_window_px`` plus 10 % of that maximum's mean along the radius.
    """
    from scipy import ndimage

    a = np.asarray(profile, np.float64)
    s = max(1, round(p.radial_smooth_px / p.radial_bin_px))
    if s > 1:
        a = ndimage.uniform_filter1d(a, s, axis=-1, mode="nearest")
    w = max(1, round(p.radial_window_px / p.radial_bin_px))
    mx = ndimage.maximum_filter1d(a, w, axis=-1, mode="nearest")
    return a / (mx + 0.1 * mx.mean(axis=-1, keepdims=True) + 1e-12)


def _features_kernel(block, *, row0, parallel, origin, p: FeatureParams, n_out):
    block = as_kernel_input(block)
    ny, nx = block.shape[:2]
    out = np.zeros((ny, nx, n_out + 1))
    total = np.empty((ny, nx))
    if p.kind in ("pattern", "pattern+angular", "pattern+radial"):
        _pattern_block(block, row0, origin, p.radius_px, p.bin_px, p.inner_px, p.n_side(), out, total)
        if p.kind == "pattern+radial":
            fine = out[..., p.n_side() ** 2 :]
            _fine_radial_block(block, row0, origin, p.radius_px, p.inner_px, p.radial_bin_px, p.n_fine_rings(), fine)
        if p.kind == "pattern+angular":
            _angular_block(block, row0, origin, p.radius_px, p.inner_px, p.n_sectors(), out[..., p.n_side() ** 2 :])
    elif p.kind == "angular":
        _angular_block(block, row0, origin, p.radius_px, p.inner_px, p.n_sectors(), out)
        total[:] = block.sum(axis=(2, 3), dtype=np.float64)
    else:
        _polar_block(
            block,
            row0,
            origin,
            p.radius_px,
            p.bin_px,
            p.inner_px,
            p.n_rings(),
            p.n_angles,
            out,
            total,
        )
    out[..., -1] = total
    return out


def _pixels_per_polar_cell(p: FeatureParams, detector_shape, origin) -> np.ndarray:
    """How many detector pixels fall into each (ring, sector) cell for the mean origin."""
    one = np.ones((1, 1, *detector_shape), np.float32)
    out = np.zeros((1, 1, p.n_rings() * p.n_angles + 1))
    tot = np.empty((1, 1))
    _polar_block(
        one,
        0,
        np.asarray(origin, float).reshape(1, 1, 2),
        p.radius_px,
        p.bin_px,
        p.inner_px,
        p.n_rings(),
        p.n_angles,
        out,
        tot,
    )
    return out[0, 0, :-1].reshape(p.n_rings(), p.n_angles)


def _pixels_per_sector(p: FeatureParams, detector_shape, origin) -> np.ndarray:
    """How many detector pixels fall into each sector of the angular profile (mean origin)."""
    one = np.ones((1, 1, *detector_shape), np.float32)
    out = np.zeros((1, 1, p.n_sectors()))
    _angular_block(one, 0, np.asarray(origin, float).reshape(1, 1, 2), p.radius_px, p.inner_px, p.n_sectors(), out)
    return out[0, 0]


def angular_profile_normalised(profile: np.ndarray, p: FeatureParams) -> np.ndarray:
    """Angular profiles normalised so that each disk is a bump of height about 1.

    Profiles ``(..., n_sectors)`` (mean intensity per sector) are smoothed over ``smooth_deg``
    and divided by their running maximum over ``window_deg`` plus 10 % of their mean, whatever
    each disk's intensity.
    """
    from scipy import ndimage

    a = np.asarray(profile, np.float64)
    s = max(1, round(p.smooth_deg / p.angle_deg))
    if s > 1:
        a = ndimage.uniform_filter1d(a, s, axis=-1, mode="wrap")
    w = max(1, round(p.window_deg / p.angle_deg))
    mx = ndimage.maximum_filter1d(a, w, axis=-1, mode="wrap")
    return a / (mx + 0.1 * mx.mean(axis=-1, keepdims=True) + 1e-12)


def _origin_map(cal: Calibration, scan_shape, detector_shape, origin_px) -> np.ndarray:
    if origin_px is not None:
        o = np.asarray(origin_px, float)
        if o.shape == (2,):
            return np.broadcast_to(o, (*scan_shape, 2)).copy()
        if o.shape != (*scan_shape, 2):
            raise DataShapeError(f"origin_px must be (2,) or {(*scan_shape, 2)}, got {o.shape}")
        return o.copy()
    if cal.origin_map_px is not None:
        return np.array(cal.origin_map_px, float)
    o = cal.origin_px
    if o is None:
        o = ((detector_shape[0] - 1) / 2, (detector_shape[1] - 1) / 2)
    return np.broadcast_to(np.asarray(o, float), (*scan_shape, 2)).copy()


PATTERN_TOTAL = "pattern total"  # the partial map of the features pass: each pattern's total counts


@job_doc
def iter_features(
    data: Any,
    params: FeatureParams | None = None,
    *,
    origin_px: np.ndarray | None = None,
    calibration: Calibration | None = None,
    scan_chunk: tuple[int, int] | None = None,
    backend: Any = None,
) -> Job[Features]:
    """Job: the features of every pattern (one streamed pass over the data).

    Parameters
    ----------
    %(data)s
    params : FeatureParams, optional
        Default ``FeatureParams()``; ``kind`` must not be ``"bragg"`` (see :func:`bragg_features`).
    origin_px : array ``(2,)`` or ``(scan_y, scan_x, 2)``, optional
        Origin of each pattern ``(k_y, k_x)`` in pixels. Default: the calibration's origin map,
        else its origin, else the detector centre.
    calibration : Calibration, optional
        Gives the origin (defaults to the DataCube's).
    %(scan_chunk)s

    Yields
    ------
    %(yields)s

    Returns
    -------
    Features
        The generator's return value: float32 features ``(scan_y, scan_x, n_features)``, the
        pattern totals, the resolved parameters, the feature image shape and the origins used.

    Raises
    ------
    ValueError
        For ``kind="bragg"``.
    DataShapeError
        For an ``origin_px`` of another shape.

    Notes
    -----
    One numba pass per block, about each pattern's own origin (so descan does not move the
    features): ``"pattern"`` splats each pixel bilinearly onto bins fixed to the origin,
    ``"radial"``/``"polar"`` split it linearly between the two nearest rings (then divide by the
    pixels per cell; polar takes ``|FFT|`` over the angle, rotation-invariant harmonics),
    ``"angular"`` between the two nearest sectors (then :func:`angular_profile_normalised`).
    """
    from ..virtual.images import as_datacube

    params = params or FeatureParams()
    if params.kind == "bragg":
        raise ValueError("Bragg-vector features come from detected disks: use bragg_features()")
    cube, cal = as_datacube(data, calibration)
    origin = _origin_map(cal, cube.scan_shape, cube.detector_shape, origin_px)
    mean_o = tuple(float(v) for v in origin.reshape(-1, 2).mean(axis=0))
    p = params.resolved(cube.detector_shape, mean_o)
    blocks = None
    if p.kind == "pattern":
        n_out, shape = p.n_side() ** 2, (p.n_side(), p.n_side())
    elif p.kind == "angular":
        n_out, shape = p.n_sectors(), (p.n_sectors(),)
    elif p.kind == "pattern+angular":
        n_out = p.n_side() ** 2 + p.n_sectors()
        shape = (n_out,)
        # (name, start, stop, counts?): counts are normalised and transformed, the
        # angular profile is already normalised
        blocks = (("pattern", 0, p.n_side() ** 2, True), ("angular", p.n_side() ** 2, n_out, False))
    elif p.kind == "pattern+radial":
        n_out = p.n_side() ** 2 + p.n_fine_rings()
        shape = (n_out,)
        blocks = (("pattern", 0, p.n_side() ** 2, True), ("radial", p.n_side() ** 2, n_out, False))
    else:
        n_out = p.n_rings() * p.n_angles
        shape = (p.n_rings(),) if p.kind == "radial" else (p.n_rings(), p.n_harmonics + 1)
    raw = yield from map_scan(
        cube.data,
        _features_kernel,
        out_tail=(n_out + 1,),
        out_dtype=np.float64,
        kwargs={"p": p, "n_out": n_out},
        scan_kwargs={"origin": origin},
        scan_chunk=scan_chunk,
        backend=backend,
        message=f"features ({p.kind})",
        partial=lambda out, done: PartialMap.of(PATTERN_TOTAL, out[..., -1], done, "counts"),  # the pass so far
    )
    total = raw[..., -1].copy()
    vals = raw[..., :-1]
    if p.kind in ("angular", "pattern+angular"):
        n0 = n_out - p.n_sectors()
        dens = vals[..., n0:] / np.maximum(_pixels_per_sector(p, cube.detector_shape, mean_o), 1.0)
        vals = np.array(vals, copy=True) if n0 else vals
        vals[..., n0:] = angular_profile_normalised(dens, p)
    elif p.kind == "pattern+radial":
        n0 = p.n_side() ** 2
        vals = np.array(vals, copy=True)
        vals[..., n0:] = radial_profile_normalised(vals[..., n0:], p)
    elif p.kind != "pattern":
        cells = _pixels_per_polar_cell(p, cube.detector_shape, mean_o)
        polar = vals.reshape(*cube.scan_shape, p.n_rings(), p.n_angles)
        if p.kind == "radial":
            vals = polar.sum(axis=-1) / np.maximum(cells.sum(axis=-1), 1.0)
        else:
            # mean per cell, then |FFT| over the angle: rotation-invariant harmonics
            dens = polar / np.maximum(cells, 1.0)
            vals = np.abs(np.fft.rfft(dens, axis=-1)[..., : p.n_harmonics + 1]) / p.n_angles
            vals = vals.reshape(*cube.scan_shape, -1)
    values = np.ascontiguousarray(vals, dtype=np.float32)
    meta = {"source": cube.source or cube.name}
    if blocks is not None:
        meta["blocks"] = blocks
    return Features(values, total, p, shape, origin, meta=meta)


compute_features = eager(iter_features, "The features of every pattern.", name="compute_features")


def bragg_features(
    peaks: BraggPeaks,
    params: FeatureParams | None = None,
    *,
    origin_px: np.ndarray | None = None,
    detector_shape: tuple[int, int] | None = None,
    min_intensity: float = 0.0,
) -> Features:
    """Bragg-vector histograms per pattern from detected disks (no pass over the data).

    Parameters
    ----------
    peaks : BraggPeaks
        Raw detector positions of the disks.
    params : FeatureParams, optional
        Grid radius, bin and ``inner_px`` (its kind is taken as ``"bragg"``).
    origin_px : array ``(2,)`` or ``(scan_y, scan_x, 2)``, optional
        Default: the peaks' calibration (origin map or origin), else the detector centre.
    detector_shape : (int, int), optional
        Needed only when neither ``radius_px`` nor an origin is known (default: the peaks'
        recorded detector shape).
    min_intensity : float
        Disks weaker than this are ignored.

    Returns
    -------
    Features
        Float32 histograms ``(scan_y, scan_x, n * n)`` (feature shape ``(n, n)``) with the disk
        count of each pattern as its total.

    Raises
    ------
    ValueError
        When neither an origin nor a detector shape (or ``radius_px``) is known.

    Notes
    -----
    Each disk at ``q - origin`` within ``radius_px`` adds 1 to the grid, spread bilinearly over
    the four nearest bins, so the histogram depends on where the disks are, not on their
    intensity (thickness, dynamical scattering). Disks closer than ``inner_px`` (the unscattered
    beam) are left out.
    """
    params = params or FeatureParams(kind="bragg")
    if params.kind != "bragg":
        params = FeatureParams("bragg", params.radius_px, params.bin_px, params.inner_px)
    scan_shape = peaks.scan_shape
    det = detector_shape or peaks.params.get("detector_shape") or (0, 0)
    cal = peaks.calibration
    if origin_px is None and cal.origin_map_px is None and cal.origin_px is None and det == (0, 0):
        raise ValueError("bragg_features needs origin_px or detector_shape")
    origin = _origin_map(cal, scan_shape, det, origin_px)
    mean_o = tuple(float(v) for v in origin.reshape(-1, 2).mean(axis=0))
    if params.radius_px is None and det == (0, 0):
        raise ValueError("bragg_features needs radius_px or detector_shape")
    p = params.resolved(tuple(det), mean_o)
    n = p.n_side()
    idx = peaks.position_index()
    o = origin.reshape(-1, 2)[idx]
    dy = peaks.qy - o[:, 0]
    dx = peaks.qx - o[:, 1]
    r = np.hypot(dy, dx)
    keep = (
        (r <= p.radius_px)
        & (r >= max(p.inner_px, 1e-9))
        & (np.nan_to_num(peaks.intensity, nan=np.inf) >= min_intensity)
    )
    fy = (dy[keep] + p.radius_px) / p.bin_px - 0.5
    fx = (dx[keep] + p.radius_px) / p.bin_px - 0.5
    pos = idx[keep]
    out = np.zeros((scan_shape[0] * scan_shape[1], n * n), np.float64)
    y0 = np.floor(fy).astype(np.int64)
    x0 = np.floor(fx).astype(np.int64)
    wy, wx = fy - y0, fx - x0
    for oy_, ox_, w in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx), (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
        yy, xx = y0 + oy_, x0 + ox_
        ok = (yy >= 0) & (yy < n) & (xx >= 0) & (xx < n)
        np.add.at(out, (pos[ok], yy[ok] * n + xx[ok]), w[ok])
    values = out.reshape(*scan_shape, n * n).astype(np.float32)
    total = peaks.counts().astype(np.float64)
    return Features(values, total, p, (n, n), origin, meta={"source": peaks.name})
