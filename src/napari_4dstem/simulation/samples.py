"""Deterministic simulated 4D-STEM sample datasets with their ground truth.

Two samples, small enough to ship and fast enough to regenerate (a few seconds):

``strained_crystal``
    A single crystal with a square lattice of Bragg disks (spacing 24 px, disk radius 8 px,
    logistic edge 0.5 px), a planted strain field with an unstrained reference corner, a
    linear descan under 1 px and Poisson noise: central disk 60 counts/px, Bragg disks
    4-12 counts/px, background 0.5 counts/px (the data of ``shared/TARGETS.md``).
``polycrystal_au``
    Grains of fcc gold (a = 4.0782 A) at known orientations, kinematic intensities with
    excitation errors (Ewald sphere at 300 kV, 10 nm thick grains), small probe disks
    (nanobeam ACOM conditions) and Poisson noise.

Both come with a vacuum probe image and their ground truth (strain, origins, grain map,
orientation matrices), stored as results next to the datacube so tests and docs can score
analyses against it.

Conventions: strain is true strain in the scan frame (x = scan_x = k_x, y = scan_y = k_y; the
scan and detector axes are aligned, rotation 0): the real-space deformation gradient is
``F = R(theta) (I + e)`` with ``e = [[e_xx, e_xy], [e_xy, e_yy]]`` in (x, y) components, and
reciprocal lattice vectors transform as ``g' = F^-T g``. Orientation matrices ``U`` map crystal
Cartesian coordinates to the lab frame ``(x = k_x, y = k_y, z = beam direction)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._docstrings import docfiller
from ..data.calibration import Calibration, electron_wavelength_A, mrad_per_inv_A
from ..data.datacube import DataCube
from ..data.results import DiffractionImage, RealSpaceMap

__all__ = ["SAMPLES", "Sample", "make_polycrystal_au", "make_sample", "make_strained_crystal"]


@dataclass(frozen=True)
class Sample:
    """A simulated dataset: the DataCube, the vacuum probe and the ground-truth results.

    Attributes
    ----------
    datacube : DataCube ``(scan_y, scan_x, k_y, k_x)``
        The patterns, calibrated.
    probe : DiffractionImage
        A vacuum probe (16 frames summed).
    truth : tuple of RealSpaceMap
        The ground truth (strain, origins, lattice; or grains and orientations).
    description : str
        One line saying what it is.
    """

    datacube: DataCube
    probe: DiffractionImage
    truth: tuple[RealSpaceMap, ...]
    description: str

    def objects(self):
        """Everything to write to one EMD file (datacube first)."""
        return (self.datacube, self.probe, *self.truth)


#: numpydoc parameters shared by the sample makers, filled in by :data:`_sample_doc`
SAMPLE_DOCS = {
    "shapes": "scan_shape : (int, int)\n    ``(scan_y, scan_x)`` (default 32 x 32).\n"
    "detector_shape : (int, int)\n    ``(k_y, k_x)`` (default 128 x 128).",
    "seed_noise": "seed : int\n    Random seed.\n"
    "noise : bool\n    Poisson noise (uint16 counts); False gives the float32 expectation.",
}
_sample_doc = docfiller(SAMPLE_DOCS)


def _vacuum_probe(
    origin_yx, counts: float, shape, radius_px: float, edge_px: float, rng, noise: bool, cal, description: str
) -> DiffractionImage:
    """The central disk alone at ``origin_yx``, summed over 16 frames (Poisson unless ``noise`` is False)."""
    lam = render_disks(np.asarray(origin_yx, float)[None, None], np.array([counts]), shape, radius_px, edge_px)[0]
    probe = rng.poisson(16 * lam).astype(np.uint16) if noise else (16 * lam).astype(np.float32)
    return DiffractionImage(probe, name="probe", units="counts", calibration=cal, params={"description": description})


# ------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------
def soft_disk(r: np.ndarray, radius: float, edge: float) -> np.ndarray:
    """Disk profile with a logistic edge: 1 inside, 0 outside, 0.5 at ``r = radius``."""
    return 0.5 * (1.0 - np.tanh((r - radius) / (2.0 * edge)))


def render_disks(
    centers: np.ndarray, intensities: np.ndarray, shape: tuple[int, int], radius: float, edge: float
) -> np.ndarray:
    """Sum of soft disks per pattern.

    Parameters
    ----------
    centers : array (n_patterns, n_disks, 2)
        Disk centres ``(k_y, k_x)`` in pixels (NaN for absent disks).
    intensities : array (n_patterns, n_disks) or (n_disks,)
        Peak value of each disk.

    Returns
    -------
    array (n_patterns, k_y, k_x) float64
    """
    n_pat, n_disk, _ = centers.shape
    intensities = np.broadcast_to(intensities, (n_pat, n_disk))

    def disk(j, ok, dy, dx):
        amp = np.where(ok, intensities[:, j], 0.0)[:, None, None]
        return soft_disk(np.hypot(dy, dx), radius, edge) * amp

    return accumulate_disks(centers, shape, math.ceil(radius + 6 * edge) + 1, disk)


def accumulate_disks(centers: np.ndarray, shape: tuple[int, int], half: int, value) -> np.ndarray:
    """Sum per-disk windows into patterns, vectorised over patterns (one pass per disk index).

    ``value(j, ok, dy, dx)`` returns disk ``j``'s values ``(n_patterns, w, w)`` on its window of
    half-width ``half`` around each pattern's centre (``dy, dx``: pixel minus centre); ``ok``
    marks patterns where the disk exists and its window touches the detector (zero elsewhere).
    """
    n_pat, n_disk, _ = centers.shape
    pad = 2 * half + 2  # room for any window of a disk centred within half a window of the edge
    out = np.zeros((n_pat, shape[0] + 2 * pad, shape[1] + 2 * pad))
    win = np.arange(-half, half + 1)
    p_idx = np.arange(n_pat)[:, None, None]
    for j in range(n_disk):
        c = centers[:, j]
        ok = np.all(np.isfinite(c), axis=1) & np.all(c > -half, axis=1)
        ok &= (c[:, 0] < shape[0] + half) & (c[:, 1] < shape[1] + half)
        if not ok.any():
            continue
        cy, cx = np.where(ok, c[:, 0], 0.0), np.where(ok, c[:, 1], 0.0)
        iy, ix = np.floor(cy).astype(int), np.floor(cx).astype(int)
        yy = iy[:, None, None] + win[None, :, None]
        xx = ix[:, None, None] + win[None, None, :]
        out[p_idx, yy + pad, xx + pad] += value(j, ok, yy - cy[:, None, None], xx - cx[:, None, None])
    return out[:, pad:-pad, pad:-pad]


# ------------------------------------------------------------------------------------------
# (a) strained single crystal
# ------------------------------------------------------------------------------------------
def planted_strain(scan_shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """The planted strain field: zero in the top-left reference quarter, ramps elsewhere.

    e_xx 0 -> 2 % along x, e_yy 0 -> -1 % along y, e_xy 0 -> 0.4 % and a rotation 0 -> 0.2 deg
    growing towards the far corner.
    """
    ny, nx = scan_shape
    y, x = np.mgrid[0:ny, 0:nx].astype(float)
    ry = np.clip((y - ny / 4) / (ny - 1 - ny / 4), 0, 1)
    rx = np.clip((x - nx / 4) / (nx - 1 - nx / 4), 0, 1)
    return {
        "e_xx": 0.02 * rx,
        "e_yy": -0.01 * ry,
        "e_xy": 0.004 * rx * ry,
        "theta": np.deg2rad(0.2) * rx * ry,
    }


def deformation_gradient(strain: dict[str, np.ndarray]) -> np.ndarray:
    """The deformation gradient ``F = R (I + e)`` of a strain field such as :func:`planted_strain`'s.

    Parameters
    ----------
    strain : dict of str to ndarray ``(scan_y, scan_x)``
        ``e_xx``, ``e_yy``, ``e_xy`` (the symmetric strain ``e``) and ``theta`` (the rotation
        ``R``, radians).

    Returns
    -------
    ndarray ``(scan_y, scan_x, 2, 2)``
        ``F`` in ``(x, y)`` components; a reciprocal vector ``g`` of the reference lattice
        moves to ``F^-T g``.
    """
    eps = np.zeros((*np.shape(strain["e_xx"]), 2, 2))
    eps[..., 0, 0], eps[..., 1, 1] = strain["e_xx"], strain["e_yy"]
    eps[..., 0, 1] = eps[..., 1, 0] = strain["e_xy"]
    c, sn = np.cos(strain["theta"]), np.sin(strain["theta"])
    rot = np.stack([np.stack([c, -sn], -1), np.stack([sn, c], -1)], -2)
    return rot @ (np.eye(2) + eps)


@_sample_doc
def make_strained_crystal(
    *,
    scan_shape: tuple[int, int] = (32, 32),
    detector_shape: tuple[int, int] = (128, 128),
    spacing_px: float = 24.0,
    lattice_angle_deg: float = 7.0,
    disk_radius_px: float = 8.0,
    edge_px: float = 0.5,
    central_counts: float = 60.0,
    bragg_counts: tuple[float, float] = (4.0, 12.0),
    background_counts: float = 0.5,
    seed: int = 2026,
    noise: bool = True,
) -> Sample:
    """Simulate the strained single-crystal sample (see the module docstring).

    Parameters
    ----------
    %(shapes)s
    spacing_px : float
        Lattice spacing of the Bragg disks in pixels (default 24).
    lattice_angle_deg : float
        Angle of g1 from +k_x, degrees (default 7).
    disk_radius_px, edge_px : float
        Disk radius and logistic edge in pixels (default 8, 0.5).
    central_counts : float
        Counts per pixel of the central disk (default 60).
    bragg_counts : (float, float)
        Range of the Bragg disks' counts per pixel (default 4-12, falling with ``|g|``).
    background_counts : float
        Flat background, counts per pixel (default 0.5).
    %(seed_noise)s

    Returns
    -------
    Sample
        The datacube (1 nm scan step, 0.01 1/A pixels, 300 keV), a vacuum probe and the truth:
        strain ``(e_xx, e_yy, e_xy, theta_rad)``, origins and lattice vectors per pattern.

    Notes
    -----
    Per pattern ``g' = F^-T g`` with ``F = R(theta) (I + e)`` from the planted field, disks
    rendered with a logistic edge around a descanned origin.
    """
    rng = np.random.default_rng(seed)
    ny, nx = scan_shape
    qy, qx = detector_shape
    a = np.deg2rad(lattice_angle_deg)
    # reciprocal lattice vectors as (x, y) components in pixels
    g1 = spacing_px * np.array([math.cos(a), math.sin(a)])
    g2 = spacing_px * np.array([-math.sin(a), math.cos(a)])
    kmax = 0.5 * min(qy, qx) - 2
    n = int(kmax // spacing_px) + 2
    hk = np.array([(h, k) for h in range(-n, n + 1) for k in range(-n, n + 1) if (h, k) != (0, 0)])
    g_ref = hk[:, :1] * g1 + hk[:, 1:] * g2
    hk = hk[np.hypot(*g_ref.T) < kmax * 1.1]
    g_ref = hk[:, :1] * g1 + hk[:, 1:] * g2
    # intensity falls with |g| from the top of the range to the bottom, with a fixed
    # pseudo-random structure-factor modulation per reflection
    gm = np.hypot(*g_ref.T)
    lo, hi = bragg_counts
    inten = lo + (hi - lo) * np.clip((kmax - gm) / (kmax - spacing_px), 0, 1)
    inten = np.clip(inten * rng.uniform(0.85, 1.15, len(inten)), lo, hi)

    # per-pattern deformation: F = R (I + e); g' = F^-T g
    s = planted_strain(scan_shape)
    finvT = np.linalg.inv(deformation_gradient(s)).swapaxes(-1, -2)  # (ny, nx, 2, 2)
    g_def = np.einsum("yxij,nj->yxni", finvT, g_ref)  # (ny, nx, n_refl, 2) in (x, y)

    # descan: origin moves linearly over the scan, under 1 px in total
    yy, xx = np.mgrid[0:ny, 0:nx] / np.array([max(ny - 1, 1), max(nx - 1, 1)])[:, None, None]
    origin = np.stack(
        [
            qy / 2 - 0.3 + 0.6 * (yy - 0.5) + 0.2 * (xx - 0.5),
            qx / 2 + 0.2 + 0.7 * (xx - 0.5) - 0.15 * (yy - 0.5),
        ],
        axis=-1,
    )  # (ny, nx, 2) as (k_y, k_x)
    centers = np.concatenate([origin[:, :, None, :], origin[:, :, None, :] + g_def[..., ::-1]], axis=2).reshape(
        ny * nx, -1, 2
    )
    intens = np.concatenate([[central_counts], inten])
    lam = render_disks(centers, intens, detector_shape, disk_radius_px, edge_px) + background_counts
    data = rng.poisson(lam).astype(np.uint16) if noise else lam.astype(np.float32)
    data = data.reshape(ny, nx, qy, qx)

    k_pix = 0.01  # 1/A per pixel: the lattice spacing 24 px is 0.24 1/A (d = 4.17 A)
    conv_mrad = disk_radius_px * k_pix * mrad_per_inv_A(300.0)
    cal = Calibration(
        scan_step=(1.0, 1.0),
        scan_units="nm",
        k_pixel_size=k_pix,
        k_units="1/A",
        beam_energy_kev=300.0,
        convergence_semiangle_mrad=round(conv_mrad, 4),
    )
    params = {
        "generator": "napari_4dstem.simulation.samples.make_strained_crystal",
        "seed": seed,
        "noise": "poisson" if noise else "none",
        "spacing_px": spacing_px,
        "lattice_angle_deg": lattice_angle_deg,
        "disk_radius_px": disk_radius_px,
        "edge_px": edge_px,
        "central_counts_per_px": central_counts,
        "bragg_counts_per_px": tuple(bragg_counts),
        "background_counts_per_px": background_counts,
        "g1_ref_px_yx": (float(g1[1]), float(g1[0])),
        "g2_ref_px_yx": (float(g2[1]), float(g2[0])),
        "reference_region": "scan_y < scan_y_size/4 and scan_x < scan_x_size/4",
        "strain_convention": "true strain, F = R(theta)(I + e), g' = F^-T g, scan frame x=k_x y=k_y",
    }
    dc = DataCube(data, cal, name="strained_crystal", metadata={"description": "simulated, see params"})
    probe_im = _vacuum_probe(
        (qy / 2, qx / 2),
        central_counts,
        detector_shape,
        disk_radius_px,
        edge_px,
        rng,
        noise,
        cal,
        "vacuum probe, 16 frames summed, centred on the detector",
    )
    truth_strain = RealSpaceMap(
        np.stack([s["e_xx"], s["e_yy"], s["e_xy"], s["theta"]], axis=-1),
        name="truth_strain",
        units="",
        channels=("e_xx", "e_yy", "e_xy", "theta_rad"),
        calibration=cal,
        params=params,
    )
    truth_origin = RealSpaceMap(
        origin, name="truth_origin", units="px", channels=("k_y", "k_x"), calibration=cal, params=params
    )
    g_maps = np.concatenate(
        [
            np.einsum("yxij,j->yxi", finvT, g1)[..., ::-1],
            np.einsum("yxij,j->yxi", finvT, g2)[..., ::-1],
        ],
        axis=-1,
    )
    truth_lattice = RealSpaceMap(
        g_maps,
        name="truth_lattice",
        units="px",
        channels=("g1_y", "g1_x", "g2_y", "g2_x"),
        calibration=cal,
        params=params,
    )
    return Sample(dc, probe_im, (truth_strain, truth_origin, truth_lattice), "strained single crystal")


# ------------------------------------------------------------------------------------------
# (b) polycrystalline gold
# ------------------------------------------------------------------------------------------
AU_LATTICE_A = 4.0782
_FCC_BASIS = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def screened_coulomb_fe(q_inv_A: np.ndarray, z: int) -> np.ndarray:
    """Electron scattering factor (Angstrom) of a screened-Coulomb (Wentzel) atom.

    ``f(q) = 2 Z / (a0 ((2 pi q)^2 + 1/R^2))`` with the Thomas-Fermi radius
    ``R = 0.885 a0 Z^(-1/3)``; ``q = 1/d`` in 1/A. A physically sensible stand-in used for the
    sample data; the crystal module uses a published parametrisation.
    """
    a0 = 0.529177
    r_tf = 0.885 * a0 * z ** (-1.0 / 3.0)
    return 2.0 * z / (a0 * ((2 * np.pi * q_inv_A) ** 2 + 1.0 / r_tf**2))


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotation matrices uniform on SO(3) (from random unit quaternions)."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def zone_axis_rotation(uvw, inplane_deg: float, tilt: np.ndarray | None = None) -> np.ndarray:
    """Rotation ``U`` that puts crystal direction ``uvw`` along the beam (+z).

    It then rotates it in-plane by ``inplane_deg`` and applies an optional small extra rotation
    ``tilt``.
    """
    z = np.asarray(uvw, float)
    z /= np.linalg.norm(z)
    helper = np.array([1.0, 0, 0]) if abs(z[0]) < 0.9 else np.array([0, 1.0, 0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    U = np.stack([x, y, z])  # rows: lab axes expressed in crystal coordinates
    a = np.deg2rad(inplane_deg)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    U = rz @ U
    return U if tilt is None else tilt @ U


def small_rotation(max_deg: float, rng: np.random.Generator) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    ang = np.deg2rad(rng.uniform(0, max_deg))
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(ang) * K + (1 - math.cos(ang)) * K @ K


def kinematic_au_spots(
    U: np.ndarray, *, energy_kev: float, kmax_inv_A: float, thickness_A: float, b_iso: float = 0.6
) -> tuple[np.ndarray, np.ndarray]:
    """Excited reflections of fcc Au in orientation ``U``: ``(g_xy [1/A], intensity)``.

    Kinematic: ``I = |F_g|^2 exp(-(s_g / sigma)^2)`` with excitation error
    ``s_g = -(g_z + lambda |g|^2 / 2)`` and ``sigma = 1/thickness``; Debye-Waller ``exp(-B q^2/4)``
    on ``F``. Intensities are relative to the strongest possible reflection.
    """
    lam = electron_wavelength_A(energy_kev)
    n = int(np.ceil(kmax_inv_A * AU_LATTICE_A)) + 1
    r = np.arange(-n, n + 1)
    hkl = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    hkl = hkl[np.any(hkl != 0, axis=1)]
    phase = np.exp(2j * np.pi * hkl @ _FCC_BASIS.T).sum(axis=1)  # 4 or 0 for fcc
    hkl, phase = hkl[np.abs(phase) > 1e-6], phase[np.abs(phase) > 1e-6]
    g_cryst = hkl / AU_LATTICE_A
    q = np.linalg.norm(g_cryst, axis=1)
    keep = q <= kmax_inv_A * 1.5
    g_cryst, phase, q = g_cryst[keep], phase[keep], q[keep]
    F = np.abs(phase) * screened_coulomb_fe(q, 79) * np.exp(-b_iso * q**2 / 4)
    g_lab = g_cryst @ U.T
    s = -(g_lab[:, 2] + 0.5 * lam * q**2)
    sigma = 1.0 / thickness_A
    inten = (F**2) * np.exp(-((s / sigma) ** 2))
    inten /= (4 * screened_coulomb_fe(1.0 / AU_LATTICE_A, 79)) ** 2  # relative to a low-order max
    inplane = np.hypot(g_lab[:, 0], g_lab[:, 1]) <= kmax_inv_A
    sel = inplane & (inten > 1e-3)
    return g_lab[sel, :2], inten[sel]


@_sample_doc
def make_polycrystal_au(
    *,
    scan_shape: tuple[int, int] = (32, 32),
    detector_shape: tuple[int, int] = (128, 128),
    n_grains: int = 6,
    k_pixel_size: float = 0.02,
    energy_kev: float = 300.0,
    convergence_mrad: float = 1.2,
    thickness_nm: float = 10.0,
    central_counts: float = 80.0,
    bragg_peak_counts: float = 30.0,
    background_counts: float = 0.3,
    seed: int = 1979,
    noise: bool = True,
) -> Sample:
    """Simulate the polycrystalline gold sample (see the module docstring).

    Parameters
    ----------
    %(shapes)s
    n_grains : int
        Voronoi grains (default 6; the first ones near zone axes).
    k_pixel_size : float
        Detector pixel size in 1/A (default 0.02).
    energy_kev : float
        Beam energy in keV (default 300).
    convergence_mrad : float
        Convergence semi-angle in mrad (default 1.2).
    thickness_nm : float
        Grain thickness in nm, for the excitation errors (default 10).
    central_counts, bragg_peak_counts, background_counts : float
        Counts per pixel of the central disk, of the strongest Bragg disks and of the
        background (default 80, 30, 0.3).
    %(seed_noise)s

    Returns
    -------
    Sample
        The datacube (2 nm scan step), a vacuum probe and the truth: grain map and orientation
        matrices ``U`` per pattern.

    Notes
    -----
    Kinematic spot intensities with a screened-Coulomb scattering factor and the Ewald
    sphere's excitation errors (:func:`kinematic_au_spots`), plus a diffuse background.
    """
    rng = np.random.default_rng(seed)
    ny, nx = scan_shape
    qy, qx = detector_shape
    radius_px = convergence_mrad / mrad_per_inv_A(energy_kev) / k_pixel_size
    # grains: Voronoi cells of random seeds; the first three grains sit near zone axes
    seeds = rng.uniform(0, 1, (n_grains, 2)) * np.array([ny, nx])
    yy, xx = np.mgrid[0:ny, 0:nx]
    d2 = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    grain = np.argmin(d2, axis=-1)
    zone_axes = [(0, 0, 1), (0, 1, 1), (1, 1, 1), (1, 1, 2)]
    Us = []
    for i in range(n_grains):
        if i < min(len(zone_axes), n_grains - 2):
            Us.append(zone_axis_rotation(zone_axes[i], rng.uniform(0, 90), small_rotation(1.0, rng)))
        else:
            Us.append(random_rotations(1, rng)[0])
    Us = np.array(Us)
    kmax = (0.5 * min(qy, qx) - radius_px - 2) * k_pixel_size
    spots = [kinematic_au_spots(U, energy_kev=energy_kev, kmax_inv_A=kmax, thickness_A=10 * thickness_nm) for U in Us]
    n_max = max(len(g) for g, _ in spots)
    origin = np.array([qy / 2 - 0.4, qx / 2 + 0.3])
    cen = np.full((n_grains, n_max + 1, 2), np.nan)
    amp = np.zeros((n_grains, n_max + 1))
    for i, (g, inten) in enumerate(spots):
        cen[i, 0] = origin
        cen[i, 1 : len(g) + 1] = origin + g[:, ::-1] / k_pixel_size
        amp[i, 0] = central_counts
        amp[i, 1 : len(g) + 1] = bragg_peak_counts * np.clip(inten, 0, 1)
    per_grain = render_disks(cen, amp, detector_shape, radius_px, 0.5)
    # diffuse background falling off from the centre (thermal diffuse + inelastic)
    ky, kx = np.mgrid[0:qy, 0:qx]
    rk = np.hypot(ky - origin[0], kx - origin[1]) * k_pixel_size
    diffuse = background_counts + 1.5 * np.exp(-rk / 0.25)
    lam_maps = per_grain[grain.reshape(-1)] + diffuse
    data = rng.poisson(lam_maps).astype(np.uint16) if noise else lam_maps.astype(np.float32)
    data = data.reshape(ny, nx, qy, qx)
    cal = Calibration(
        scan_step=(2.0, 2.0),
        scan_units="nm",
        k_pixel_size=k_pixel_size,
        k_units="1/A",
        beam_energy_kev=energy_kev,
        convergence_semiangle_mrad=convergence_mrad,
    )
    params = {
        "generator": "napari_4dstem.simulation.samples.make_polycrystal_au",
        "seed": seed,
        "noise": "poisson" if noise else "none",
        "crystal": "fcc Au, a = 4.0782 A, Fm-3m",
        "scattering_factor": "screened Coulomb (Wentzel, Thomas-Fermi radius)",
        "thickness_nm": thickness_nm,
        "energy_kev": energy_kev,
        "convergence_mrad": convergence_mrad,
        "central_counts_per_px": central_counts,
        "bragg_peak_counts_per_px": bragg_peak_counts,
        "origin_px_yx": tuple(float(o) for o in origin),
        "orientation_convention": "U maps crystal Cartesian to lab (x = k_x, y = k_y, z = beam)",
        "orientation_matrices": Us.reshape(n_grains, 9),
    }
    dc = DataCube(data, cal, name="polycrystal_au", metadata={"description": "simulated, see params"})
    probe_im = _vacuum_probe(
        origin, central_counts, detector_shape, radius_px, 0.5, rng, noise, cal, "vacuum probe, 16 frames summed"
    )
    truth_grain = RealSpaceMap(grain.astype(np.int32), name="truth_grain", units="", calibration=cal, params=params)
    truth_U = RealSpaceMap(
        Us[grain].reshape(ny, nx, 9),
        name="truth_orientation",
        units="",
        channels=tuple(f"U{i}{j}" for i in range(1, 4) for j in range(1, 4)),
        calibration=cal,
        params=params,
    )
    return Sample(dc, probe_im, (truth_grain, truth_U), "polycrystalline fcc gold")


SAMPLES = {
    "strained_crystal": make_strained_crystal,
    "polycrystal_au": make_polycrystal_au,
}


def make_sample(key: str, **kwargs) -> Sample:
    """Make a sample by key (``'strained_crystal'`` or ``'polycrystal_au'``).

    Parameters
    ----------
    key : str
        A key of :data:`SAMPLES`.
    **kwargs
        Passed to its maker.

    Returns
    -------
    Sample
        The sample.

    Raises
    ------
    KeyError
        When the key is unknown.
    """
    if key not in SAMPLES:
        raise KeyError(f"unknown sample {key!r}; known: {sorted(SAMPLES)}")
    return SAMPLES[key](**kwargs)
