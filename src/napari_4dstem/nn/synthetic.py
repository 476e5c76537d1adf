"""Kinematic "thick-sample proxy" simulations: training shards and a strained test scan.

Not multislice. Each Bragg disk is a soft disk (as :func:`~napari_4dstem.simulation.samples.
render_disks`) whose interior follows the two-beam rocking curve across the disk: in
convergent-beam diffraction every point of a disk is a different incidence angle, so the
excitation error varies linearly along ``g`` across the disk, ``s(k) = s0 + kappa (k - c).g_hat``,
and the intensity is ``I(s) = sin^2(pi t w) / (xi w)^2`` with ``w = sqrt(s^2 + xi^-2)``
(extinction distance ``xi``, thickness ``t``). Thin samples give nearly flat disks; at tens of
nm the disks carry several asymmetric thickness fringes, which pull a cross-correlation peak
away from the disk centre -- the failure mode of correlation on thick samples that the network
is trained to avoid. The central disk gets the complementary deficiency fringes, and a
thermal-diffuse background grows with thickness.

Labels are Gaussian peaks (``sigma`` 1 px) at the disk centres, height 1 (a detection target:
weak and strong reflections count the same), for reflections inside the detector (one disk radius from the
border) with a mean intensity of at least 1 % of the central disk.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.calibration import Calibration
from ..data.datacube import DataCube
from ..data.results import DiffractionImage, RealSpaceMap
from ..simulation.samples import accumulate_disks, deformation_gradient, planted_strain, soft_disk

__all__ = [
    "ThickScan",
    "make_thick_strained_scan",
    "planted_reference",
    "render_label",
    "render_proxy",
    "simulate_training_patterns",
    "write_training_shards",
]

MIN_RELATIVE = 0.01


def render_proxy(
    centers: np.ndarray,
    amplitudes: np.ndarray,
    s0: np.ndarray,
    xi_nm: np.ndarray,
    *,
    thickness_nm: np.ndarray,
    kappa: np.ndarray,
    shape: tuple[int, int],
    radius: float,
    edge: float,
) -> np.ndarray:
    """Disks with two-beam rocking-curve interiors, ``(n, H, W)`` float64.

    ``centers (n, m, 2)`` px ``(k_y, k_x)``, disk 0 the central beam; ``amplitudes (n, m)``
    mean intensity of each disk; ``s0, xi_nm (n, m)``; ``thickness_nm, kappa (n,)`` (kappa in
    1/nm per px). Absent disks: NaN centres.
    """
    n = centers.shape[0]
    origin = centers[:, 0]
    t = thickness_nm[:, None, None]

    def disk_value(j, ok, dy, dx):
        disk = soft_disk(np.hypot(dy, dx), radius, edge)
        g = np.stack([np.ones(n), np.zeros(n)], -1) if j == 0 else centers[:, j] - origin
        g = g / np.maximum(np.hypot(g[:, 0], g[:, 1]), 1e-9)[:, None]
        along = dy * g[:, 0, None, None] + dx * g[:, 1, None, None]
        s = s0[:, j, None, None] + kappa[:, None, None] * along
        xi = xi_nm[:, j, None, None]
        w = np.sqrt(s * s + 1.0 / xi**2)
        rock = np.sin(np.pi * t * w) ** 2 / (xi * w) ** 2
        if j == 0:  # central beam: deficiency fringes
            rock = 1.0 - 0.6 * rock
        inside = disk > 0.5
        mean = (rock * inside).sum(axis=(1, 2)) / np.maximum(inside.sum(axis=(1, 2)), 1)
        prof = rock / np.maximum(mean, 1e-3)[:, None, None]
        return disk * prof * np.where(ok, amplitudes[:, j], 0.0)[:, None, None]

    return accumulate_disks(centers, shape, math.ceil(radius + 6 * edge) + 1, disk_value)


def render_label(centers: np.ndarray, heights: np.ndarray, shape, sigma_px: float = 1.0) -> np.ndarray:
    """Gaussian peaks of height ``heights (n, m)`` at ``centers (n, m, 2)`` (NaN: absent)."""
    n, m, _ = centers.shape
    out = np.zeros((n, *shape), np.float32)
    h = math.ceil(4 * sigma_px)
    win = np.arange(-h, h + 1)
    for i in range(n):
        for j in range(m):
            cy, cx = centers[i, j]
            if not (np.isfinite(cy) and heights[i, j] > 0):
                continue
            iy, ix = math.floor(cy + 0.5), math.floor(cx + 0.5)
            ys, xs = iy + win, ix + win
            gy = np.exp(-0.5 * ((ys - cy) / sigma_px) ** 2)
            gx = np.exp(-0.5 * ((xs - cx) / sigma_px) ** 2)
            vy = (ys >= 0) & (ys < shape[0])
            vx = (xs >= 0) & (xs < shape[1])
            patch = heights[i, j] * gy[vy, None] * gx[None, vx]
            sub = out[i, ys[vy][0] : ys[vy][-1] + 1, xs[vx][0] : xs[vx][-1] + 1]
            np.maximum(sub, patch, out=sub)
    return out


def _lattice_points(g1, g2, origin, shape, radius):
    """All lattice sites (incl. the origin first) whose disks touch the detector."""
    n = int(max(shape) / max(min(np.hypot(*g1), np.hypot(*g2)), 1.0)) + 2
    hk = np.array([(h, k) for h in range(-n, n + 1) for k in range(-n, n + 1) if (h, k) != (0, 0)])
    pts = origin + hk[:, :1] * g1 + hk[:, 1:] * g2
    ok = np.all(pts > -radius, axis=1) & (pts[:, 0] < shape[0] + radius) & (pts[:, 1] < shape[1] + radius)
    return np.concatenate([origin[None], pts[ok]]), np.concatenate([[[0, 0]], hk[ok]])


@dataclass(frozen=True)
class _Batch:
    patterns: np.ndarray
    probes: np.ndarray
    labels: np.ndarray
    centers: np.ndarray
    rel: np.ndarray
    meta: dict


def _probe(shape, radius, edge) -> np.ndarray:
    c = np.array([[[shape[0] // 2, shape[1] // 2]]], float)
    return soft_disk(np.hypot(*(np.mgrid[0 : shape[0], 0 : shape[1]] - c[0, 0][:, None, None])), radius, edge)


def simulate_training_patterns(
    n: int,
    *,
    size: int = 128,
    thickness_nm: tuple[float, float] = (5.0, 80.0),
    seed: int = 0,
    label_sigma_px: float = 1.0,
) -> _Batch:
    """``n`` noise-free proxy patterns of random lattices, radii, thicknesses and tilts.

    Intensities are relative: central disk mean 1, background included; dose and Poisson
    noise come from the augmentation at training time.

    Every length in pixels is drawn for a 128-pixel detector and multiplied by ``size / 128``
    (disk radius and edge, lattice spacing, beam offset), so pattern ``i`` of a set at
    ``size=256`` is pattern ``i`` of the same seed at 128, sampled twice as finely (the same
    draws; the disk centres from the detector centre are twice as far in pixels).
    """
    rng = np.random.default_rng(seed)
    f = size / 128  # pixels per pixel of the 128 geometry
    shape = (size, size)
    pats = np.zeros((n, size, size), np.float32)
    probes = np.zeros_like(pats)
    labels = np.zeros_like(pats)
    all_c, all_rel = [], []
    meta = {k: [] for k in ("thickness_A", "origin_px", "seed", "strain")}
    for i in range(n):
        radius = rng.uniform(3.0, 9.0) * f
        edge = rng.uniform(0.4, 1.0) * f
        spacing = rng.uniform(max(2.2 * radius + 3 * f, 10.0 * f), max(2.2 * radius + 4 * f, 0.3 * size))
        ratio = rng.uniform(0.8, 1.25)
        ang = math.radians(rng.uniform(60, 120))
        rot = rng.uniform(0, 2 * np.pi)
        g1 = spacing * np.array([math.sin(rot), math.cos(rot)])
        g2 = spacing * ratio * np.array([math.sin(rot + ang), math.cos(rot + ang)])
        origin = np.array([size // 2, size // 2], float) + rng.uniform(-3, 3, 2) * f
        c, _ = _lattice_points(g1, g2, origin, shape, radius)
        m = len(c)
        gm = np.hypot(*(c - origin).T)
        amp = np.exp(-gm / (rng.uniform(0.5, 1.5) * size)) * rng.uniform(0.2, 1.0, m)
        amp = amp * rng.uniform(0.04, 0.3) * (rng.uniform(size=m) > 0.15)  # 15 % extinct
        amp[0] = 1.0
        t = rng.uniform(*thickness_nm)
        xi = rng.uniform(25.0, 120.0, m)
        s0 = rng.normal(0, 0.03, m)
        kappa = rng.uniform(0.02, 0.06) / radius  # s span +-0.02..0.06 1/nm over the radius
        lam = render_proxy(
            c[None],
            amp[None],
            s0[None],
            xi[None],
            thickness_nm=np.array([t]),
            kappa=np.array([kappa]),
            shape=shape,
            radius=radius,
            edge=edge,
        )[0]
        kk = np.hypot(*(np.mgrid[0:size, 0:size] - origin[:, None, None]))
        tds = (t / 50.0) * rng.uniform(0.01, 0.05) * np.exp(-kk / (rng.uniform(0.2, 0.5) * size))
        pats[i] = lam + tds + rng.uniform(0.0, 0.01)
        probes[i] = _probe(shape, radius, edge)
        inside = np.all(c >= radius, axis=1) & np.all(c <= size - 1 - radius, axis=1)
        keep = inside & (amp >= MIN_RELATIVE)
        cc = np.where(keep[:, None], c, np.nan)
        h = np.ones(m)
        labels[i] = render_label(cc[None], h[None], shape, label_sigma_px)[0]
        all_c.append(cc[keep])
        all_rel.append(amp[keep])
        meta["thickness_A"].append(10 * t)
        meta["origin_px"].append(origin)
        meta["seed"].append(seed * 1_000_003 + i)
        meta["strain"].append(np.zeros((2, 2)))
    return _Batch(pats, probes, labels, all_c, all_rel, {k: np.array(v) for k, v in meta.items()})


def write_training_shards(
    folder: str | os.PathLike,
    *,
    n_patterns: int,
    per_shard: int = 256,
    size: int = 128,
    seed: int = 0,
    thickness_nm: tuple[float, float] = (5.0, 80.0),
    overwrite: bool = False,
) -> list[Path]:
    """Simulate ``n_patterns`` proxy patterns into shards (the :mod:`~napari_4dstem.simulation.
    shards` format, engine ``"kinematic-thick-proxy"``) plus ``manifest.json``."""
    from ..simulation.shards import write_manifest, write_shard

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, start in enumerate(range(0, n_patterns, per_shard)):
        b = simulate_training_patterns(
            min(per_shard, n_patterns - start),
            size=size,
            thickness_nm=thickness_nm,
            seed=seed * 10_000 + k,
        )
        bragg = [
            {"qy": c[:, 0], "qx": c[:, 1], "intensity": r, "hkl": np.zeros((len(c), 3), int)}
            for c, r in zip(b.centers, b.rel, strict=True)
        ]
        meta = dict(b.meta)
        meta["crystal"] = ["random-2d-lattice"] * len(bragg)
        paths.append(
            write_shard(
                folder / f"shard-{k:05d}.h5",
                patterns=b.patterns,
                probes=b.probes,
                labels=b.labels,
                bragg=bragg,
                meta=meta,
                engine="kinematic-thick-proxy",
                overwrite=overwrite,
            )
        )
    write_manifest(
        folder,
        {
            "engine": "kinematic-thick-proxy",
            "n_patterns": n_patterns,
            "size": size,
            "seed": seed,
            "thickness_nm": list(thickness_nm),
            "shards": [p.name for p in paths],
            "generator": "napari_4dstem.nn.synthetic.write_training_shards",
        },
    )
    return paths


def planted_reference(scan_shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The rectangle ``(row0, row1, col0, col1)`` where :func:`planted_strain` is exactly zero:
    every such pattern and only those (rows and columns up to a quarter of the scan, inclusive).

    The strain reference of the held-out scans: the median lattice of all of them, so the error
    of one reference pattern is not added to every strain value (a 5x5 scan has 4 such patterns;
    ``ny // 4`` rows would keep 1).
    """
    ny, nx = (int(v) for v in scan_shape)
    return (0, min(ny, ny // 4 + 1), 0, min(nx, nx // 4 + 1))


def truth_strain_map(st: dict, calibration: Calibration) -> RealSpaceMap:
    """The planted strain (:func:`planted_strain`'s dict) as a RealSpaceMap
    ``(e_xx, e_yy, e_xy, theta_rad)``."""
    return RealSpaceMap(
        np.stack([st["e_xx"], st["e_yy"], st["e_xy"], st["theta"]], -1),
        name="truth_strain",
        channels=("e_xx", "e_yy", "e_xy", "theta_rad"),
        calibration=calibration,
    )


@dataclass(frozen=True)
class ThickScan:
    """A strained scan of the thick-sample proxy with its truth."""

    datacube: DataCube
    probe: DiffractionImage
    strain: RealSpaceMap
    centers: np.ndarray  # (n_pos, m, 2) true disk centres (NaN: not a detectable reflection)
    reference: tuple[int, int, int, int]


def make_thick_strained_scan(
    *,
    scan_shape: tuple[int, int] = (16, 16),
    size: int = 128,
    thickness_nm: float = 40.0,
    spacing_px: float = 24.0,
    radius_px: float = 8.0,
    central_counts: float = 60.0,
    background_counts: float = 0.5,
    seed: int = 7,
    noise: bool = True,
    sampling: float = 1.0,
    lattice_angle_deg: float = 90.0,
) -> ThickScan:
    """A strained single crystal (``planted_strain``) imaged through the thick proxy.

    The local tilt (excitation errors ``s0``) wanders from pattern to pattern as in a bent
    thick foil, so the fringe bias of correlation changes over the scan. Dose as the sample of
    ``shared/TARGETS.md``: central disk ``central_counts``/px, background 0.5/px, Poisson.

    ``sampling`` images the same crystal at the same dose on a detector with ``sampling``
    times finer pixels (give ``size`` to match, e.g. 256 with 2): the lengths in px
    (``spacing_px``, ``radius_px``, the disk edge and the beam wander) are multiplied by it,
    the counts per px (``central_counts``, ``background_counts``, the Bragg disks) divided by
    its square; the random draws are the same, so only the Poisson noise differs.
    ``lattice_angle_deg``: the angle between the two reciprocal basis vectors (90: square,
    60 or 120: hexagonal).
    """
    rng = np.random.default_rng(seed)
    f = float(sampling)
    spacing_px, radius_px = spacing_px * f, radius_px * f
    counts_rel = central_counts  # the Bragg disks' counts are set at sampling 1
    central_counts, background_counts = central_counts / f**2, background_counts / f**2
    ny, nx = scan_shape
    shape = (size, size)
    a = math.radians(7.0)
    g1 = spacing_px * np.array([math.cos(a), math.sin(a)])  # (x, y)
    b = a + math.radians(lattice_angle_deg)
    g2 = spacing_px * np.array([math.cos(b), math.sin(b)])
    st = planted_strain(scan_shape)
    finvT = np.linalg.inv(deformation_gradient(st)).swapaxes(-1, -2).reshape(-1, 2, 2)
    kmax = 0.5 * size + radius_px
    n = int(kmax // spacing_px) + 2
    hk = np.array([(h, k) for h in range(-n, n + 1) for k in range(-n, n + 1) if (h, k) != (0, 0)])
    g_ref = hk[:, :1] * g1 + hk[:, 1:] * g2
    hk = hk[np.hypot(*g_ref.T) < kmax * 1.2]
    g_ref = hk[:, :1] * g1 + hk[:, 1:] * g2
    m = len(hk) + 1
    gm = np.hypot(*g_ref.T)
    amp_ref = np.concatenate(
        [
            [1.0],
            (4 + 8 * np.clip((kmax - gm) / kmax, 0, 1)) / counts_rel * rng.uniform(0.85, 1.15, m - 1),
        ]
    )
    npos = ny * nx
    origin = np.array([size // 2, size // 2], float) + rng.uniform(-0.8, 0.8, (npos, 2)) * f
    gdef = np.einsum("pij,nj->pni", finvT, g_ref)[..., ::-1]  # (p, n, (y, x))
    centers = np.concatenate([origin[:, None], origin[:, None] + gdef], axis=1)
    # local tilt: a smooth bend plus pattern-to-pattern wander
    yy, xx = np.mgrid[0:ny, 0:nx] / max(ny, nx)
    bend = (0.02 * np.sin(2 * np.pi * (xx + 0.3 * yy))).reshape(-1, 1)
    s0 = rng.normal(0, 0.03, (1, m)) + bend + rng.normal(0, 0.015, (npos, m))
    xi = np.broadcast_to(rng.uniform(25, 120, (1, m)), (npos, m))
    amps = np.broadcast_to(amp_ref, (npos, m))
    t = np.full(npos, float(thickness_nm))
    kappa = np.full(npos, 0.04 / radius_px)
    lam = render_proxy(
        centers,
        amps * central_counts,
        s0,
        xi,
        thickness_nm=t,
        kappa=kappa,
        shape=shape,
        radius=radius_px,
        edge=0.5 * f,
    )
    ky, kx = np.mgrid[0:size, 0:size]
    kk = np.hypot(ky[None] - origin[:, 0, None, None], kx[None] - origin[:, 1, None, None])
    lam += background_counts + central_counts * 0.02 * (thickness_nm / 50.0) * np.exp(-kk / (0.3 * size))
    data = rng.poisson(lam).astype(np.uint16) if noise else lam.astype(np.float32)
    cal = Calibration(
        scan_step=(1.0, 1.0),
        scan_units="nm",
        k_pixel_size=0.01 / f,
        k_units="1/A",
        beam_energy_kev=300.0,
    )
    dc = DataCube(
        data.reshape(ny, nx, size, size),
        cal,
        name="thick_proxy",
        metadata={"description": f"kinematic thick-sample proxy, t = {thickness_nm} nm"},
    )
    probe = DiffractionImage(
        (16 * central_counts * _probe(shape, radius_px, 0.5 * f)).astype(np.float32),
        name="probe",
        calibration=cal,
    )
    strain = truth_strain_map(st, cal)
    inside = np.all(centers >= radius_px, axis=2) & np.all(centers <= size - 1 - radius_px, axis=2)
    keep = inside & (amps >= MIN_RELATIVE)
    truth_c = np.where(keep[..., None], centers, np.nan)
    ref = (0, max(1, ny // 4), 0, max(1, nx // 4))
    return ThickScan(dc, probe, strain, truth_c, ref)
