"""Orientation plan: kinematic templates over the symmetry-reduced zone axes, and orientation maths.

A plan samples beam directions ``v`` (crystal frame) over the sphere modulo the crystal's proper
rotations (:func:`.symmetry.fundamental_zone_axes`) at ``step_deg``; for each it stores the
reflections excited at the zone-axis orientation ``U0(v)`` (``U0 v = +z``) as a *sparse* template:
per radial shell ``|g|`` the in-plane angles and amplitudes of its spots. In-plane rotations
``Rz(phi)`` are not stored: the matcher scores all of them at once (see :mod:`.acom`), so the
memory grows with the number of zone axes only, ``~ 4 pi / (step^2 |G|)`` templates.

Template amplitudes are ``|F| exp(-(s / w(g))^2 / 2)`` with an excitation width widened for the
sampling, ``w(g)^2 = w^2 + (|g| step / 2)^2``: an orientation up to half a step away from a plan
node tilts reflections by that much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from ...data.calibration import electron_wavelength_A
from ...engine.jobs import Job, Progress, eager
from ...errors import FileFormatError, Napari4DSTEMError
from ..crystal.structure import Crystal
from ..crystal.symmetry import fundamental_zone_axes

__all__ = [
    "ROCKING_CURVES",
    "OrientationPlan",
    "PlanTooLargeError",
    "build_orientation_plan",
    "estimate_plan_memory",
    "euler_bunge_deg",
    "gaussian_width_inv_A",
    "iter_build_orientation_plan",
    "load_orientation_plan",
    "orientation_from_euler_bunge",
    "rocking_profile",
    "rotation_z",
    "zone_axis_orientation",
]


class PlanTooLargeError(Napari4DSTEMError, MemoryError):
    """The orientation plan would need more memory than allowed."""


def rotation_z(phi_rad) -> np.ndarray:
    """Rotations about the beam (+z) by ``phi`` (radians), shape ``(..., 3, 3)``.

    Parameters
    ----------
    phi_rad : float or ndarray
        Angles in radians, counter-clockwise from +x towards +y.

    Returns
    -------
    ndarray ``(..., 3, 3)``
        The rotation matrices.
    """
    c, s = np.cos(phi_rad), np.sin(phi_rad)
    z, o = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def zone_axis_orientation(v: np.ndarray) -> np.ndarray:
    """Orientations ``U0`` (crystal -> lab) that put crystal directions ``v (..., 3)`` along +z.

    The lab x axis is the crystal direction perpendicular to ``v`` closest to crystal x (or y
    when ``v`` is nearly along x): a deterministic choice of the in-plane origin.

    Parameters
    ----------
    v : ndarray ``(..., 3)``
        Crystal Cartesian directions (any length).

    Returns
    -------
    ndarray ``(..., 3, 3)``
        Orientations whose rows are the lab axes x, y, z in crystal coordinates.
    """
    v = np.asarray(v, float)
    z = v / np.linalg.norm(v, axis=-1, keepdims=True)
    helper = np.where(np.abs(z[..., :1]) < 0.9, [1.0, 0, 0], [0, 1.0, 0])
    x = helper - np.sum(helper * z, -1, keepdims=True) * z
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=-2)  # rows: lab axes in crystal coordinates


def euler_bunge_deg(U: np.ndarray) -> np.ndarray:
    """Bunge ZXZ Euler angles ``(phi1, Phi, phi2)`` in degrees of orientations ``U (..., 3, 3)``.

    Bunge's passive matrix ``g = Rz(phi2) Rx(Phi) Rz(phi1)`` maps sample (lab) coordinates to
    crystal coordinates, so ``g = U^T`` (lab = sample frame ``x = k_x, y = k_y, z = beam``).
    ``phi1, phi2`` in [0, 360), ``Phi`` in [0, 180]; NaN in, NaN out.

    Parameters
    ----------
    U : ndarray ``(..., 3, 3)``
        Orientations (crystal -> lab).

    Returns
    -------
    ndarray ``(..., 3)``
        ``(phi1, Phi, phi2)`` in degrees (``phi2 = 0`` and ``phi1`` the whole in-plane angle
        when ``Phi`` is 0 or 180).
    """
    g = np.swapaxes(np.asarray(U, float), -1, -2)
    Phi = np.arccos(np.clip(g[..., 2, 2], -1, 1))
    sP = np.sin(Phi)
    gen = sP > 1e-6
    phi1 = np.where(gen, np.arctan2(g[..., 2, 0], -g[..., 2, 1]), np.arctan2(g[..., 0, 1], g[..., 0, 0]))
    phi2 = np.where(gen, np.arctan2(g[..., 0, 2], g[..., 1, 2]), 0.0)
    out = np.stack([np.degrees(phi1) % 360, np.degrees(Phi), np.degrees(phi2) % 360], -1)
    return np.where(np.isfinite(g[..., :1, 0]), out, np.nan)


def orientation_from_euler_bunge(euler_deg: np.ndarray) -> np.ndarray:
    """Orientations ``U`` (crystal -> lab) from Bunge Euler angles in degrees ``(..., 3)``.

    Parameters
    ----------
    euler_deg : ndarray ``(..., 3)``
        ``(phi1, Phi, phi2)`` in degrees, Bunge ZXZ.

    Returns
    -------
    ndarray ``(..., 3, 3)``
        ``U = g^T`` with ``g = Rz(phi2) Rx(Phi) Rz(phi1)`` (the inverse of
        :func:`euler_bunge_deg`).
    """
    p1, P, p2 = np.moveaxis(np.radians(np.asarray(euler_deg, float)), -1, 0)
    c1, s1, c, s, c2, s2 = np.cos(p1), np.sin(p1), np.cos(P), np.sin(P), np.cos(p2), np.sin(p2)
    g = np.stack(
        [
            np.stack([c1 * c2 - s1 * s2 * c, s1 * c2 + c1 * s2 * c, s2 * s], -1),
            np.stack([-c1 * s2 - s1 * c2 * c, -s1 * s2 + c1 * c2 * c, c2 * s], -1),
            np.stack([s1 * s, -c1 * s, c], -1),
        ],
        -2,
    )
    return np.swapaxes(g, -1, -2)


@dataclass(frozen=True, eq=False)
class OrientationPlan:
    """Sparse kinematic templates of one crystal over the fundamental zone of zone axes.

    Attributes
    ----------
    crystal : Crystal
        The crystal the templates are of.
    zone_axes : ndarray ``(n_zones, 3)``
        Beam directions in crystal Cartesian coordinates (unit vectors).
    zone_orientations : ndarray ``(n_zones, 3, 3)``
        ``U0`` of each zone axis (crystal -> lab, beam = +z).
    n_inplane : int
        Number of in-plane angles, ``phi_k = 2 pi k / n_inplane``.
    shell_radii : ndarray ``(n_shells,)``
        Distinct ``|g|`` (1/A) of the reflections, sorted.
    template_offsets : ndarray ``(n_zones * n_shells + 1,)`` int64
        CSR offsets of the spots of zone ``z``, shell ``f`` at ``[z * n_shells + f]``.
    spot_angle : ndarray ``(n_spots,)`` float32
        In-plane angle ``atan2(g_y, g_x)`` at ``U0`` (radians).
    spot_weight : ndarray ``(n_spots,)`` float32
        Template amplitude.
    template_norm : ndarray ``(n_zones,)``
        ``sqrt(sum spot_weight^2)`` per zone (inf for an empty template).
    params : dict
        The parameters (energy_kev, k_max_inv_A, step_deg, ...).
    """

    crystal: Crystal
    zone_axes: np.ndarray
    zone_orientations: np.ndarray
    n_inplane: int
    shell_radii: np.ndarray
    template_offsets: np.ndarray
    spot_angle: np.ndarray
    spot_weight: np.ndarray
    template_norm: np.ndarray
    params: dict

    @property
    def n_zones(self) -> int:
        """Number of zone axes."""
        return len(self.zone_axes)

    @property
    def n_orientations(self) -> int:
        """Zone axes times in-plane angles."""
        return self.n_zones * self.n_inplane

    @property
    def nbytes(self) -> int:
        """Bytes held by the plan's arrays."""
        return sum(
            a.nbytes
            for a in (
                self.zone_axes,
                self.zone_orientations,
                self.shell_radii,
                self.template_offsets,
                self.spot_angle,
                self.spot_weight,
                self.template_norm,
            )
        )

    def orientation(self, zone: np.ndarray, inplane_index: np.ndarray) -> np.ndarray:
        """``U = Rz(phi) U0[zone]`` for plan indices (broadcast), shape ``(..., 3, 3)``."""
        phi = 2 * np.pi * np.asarray(inplane_index) / self.n_inplane
        return rotation_z(phi) @ self.zone_orientations[np.asarray(zone)]

    def save(self, path: str | PathLike) -> Path:
        """Write the plan and its crystal to ``.npz`` (atomic)."""
        from ...io._atomic import atomic_output

        path = Path(path)
        arrays = {
            **self.crystal.to_dict(),
            "zone_axes": self.zone_axes,
            "zone_orientations": self.zone_orientations,
            "n_inplane": np.array(self.n_inplane),
            "shell_radii": self.shell_radii,
            "template_offsets": self.template_offsets,
            "spot_angle": self.spot_angle,
            "spot_weight": self.spot_weight,
            "template_norm": self.template_norm,
            "params_json": np.array(_json(self.params)),
            "format": np.array("napari-4dstem orientation plan 1"),
        }
        with atomic_output(path, overwrite=True) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        return path


def _json(d: dict) -> str:
    import json

    return json.dumps(d)


def load_orientation_plan(path: str | PathLike) -> OrientationPlan:
    """Read a plan written by :meth:`OrientationPlan.save`.

    Parameters
    ----------
    path : str or PathLike
        The ``.npz`` file.

    Returns
    -------
    OrientationPlan
        The plan with its crystal.

    Raises
    ------
    FileFormatError
        When the file is not readable or not an orientation plan.
    """
    import json
    import zipfile

    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise FileFormatError(p, f"not an orientation plan ({e})") from None
    if str(d.get("format", "")) != "napari-4dstem orientation plan 1":
        raise FileFormatError(p, "not a napari-4dstem orientation plan (.npz written by OrientationPlan.save)")
    return OrientationPlan(
        Crystal.from_dict(d),
        d["zone_axes"],
        d["zone_orientations"],
        int(d["n_inplane"]),
        d["shell_radii"],
        d["template_offsets"],
        d["spot_angle"],
        d["spot_weight"],
        d["template_norm"],
        json.loads(str(d["params_json"])),
    )


#: rocking-curve (excitation-error) profiles of the templates and the refinement, as relative
#: intensities ``S(s / w)`` with ``S(0) = 1``, and the largest ``|s| / w`` a template keeps
ROCKING_CURVES = ("lorentzian", "gaussian", "sinc2")
_PROFILE_CUT = {"lorentzian": 6.0, "gaussian": 3.7, "sinc2": 3.0}
#: each profile's width for a thickness t is ``_WIDTH_T[profile] / t`` (1/A); "sinc2" is sinc^2(s t)
_WIDTH_T = {"lorentzian": 0.35, "gaussian": 1.0, "sinc2": 1.0}


def rocking_profile(x: np.ndarray, kind: str) -> np.ndarray:
    """Relative intensity ``S(x)`` at ``x = s / w`` of a rocking-curve profile.

    ``"gaussian"``: ``exp(-x^2)``. ``"sinc2"``: ``sinc^2(x) = (sin(pi x) / (pi x))^2``, the thin
    film's own rocking curve with ``w = 1 / t`` (zeros at ``s = k / t``; the plan averages it over
    its sampling, see :func:`build_orientation_plan`). ``"lorentzian"``: ``1 / (1 + x^2)``, the envelope of a thin
    film's ``sinc^2(s t)`` (with ``w ~ 0.35 / t`` it has sinc^2's half width; its tail
    ``w^2 / s^2`` does not depend on the thickness, as the film's mean ``1 / (2 pi^2 s^2 t^2)``
    times ``t^2`` does not), so reflections far from the Bragg condition that a thin film still
    shows at a high dose are expected rather than unexplained.

    Parameters
    ----------
    x : array-like
        Excitation error over the width, ``s / w`` (dimensionless).
    kind : {"lorentzian", "gaussian", "sinc2"}
        The profile.

    Returns
    -------
    ndarray
        ``S(x)``, 1 at ``x = 0``.

    Raises
    ------
    ValueError
        When ``kind`` is unknown.
    """
    x = np.asarray(x, float)
    if kind == "gaussian":
        return np.exp(-(x**2))
    if kind == "lorentzian":
        return 1.0 / (1.0 + x**2)
    if kind == "sinc2":
        return np.sinc(x) ** 2
    raise ValueError(f"rocking_curve must be one of {ROCKING_CURVES}, got {kind!r}")


def _spots_per_zone(
    crystal: Crystal,
    axes: np.ndarray,
    refl_g,
    amp,
    g2,
    lam,
    w_base,
    step_rad,
    k_max,
    min_rel,
    profile="gaussian",
):
    U0 = zone_axis_orientation(axes)  # (n, 3, 3)
    gl = np.einsum("zij,gj->zgi", U0, refl_g)  # (n, n_g, 3)
    s = -(gl[..., 2] + 0.5 * lam * g2)
    gn = np.sqrt(g2)
    if profile == "sinc2":
        # the film's sinc^2(s t) averaged over the excitation errors of orientations up to half a
        # step from the node (s moves by up to |g| step / 2): its zeros fill in where the sampling
        # cannot place them
        half = 0.5 * step_rad * gn
        prof = np.mean([np.sinc((s + u * half) / w_base) ** 2 for u in np.linspace(-1.0, 1.0, 9)], axis=0)
        weight = amp * np.sqrt(prof)
        inside = np.abs(s) <= _PROFILE_CUT[profile] * w_base + half
    else:
        w2 = w_base**2 + (0.5 * step_rad * gn) ** 2
        x2 = s**2 / w2
        weight = amp * np.sqrt(rocking_profile(np.sqrt(x2), profile))
        inside = x2 <= _PROFILE_CUT[profile] ** 2
    keep = (np.hypot(gl[..., 0], gl[..., 1]) <= k_max) & (weight > min_rel * amp.max()) & inside
    return U0, gl, weight, keep


def _need_reflections(crystal, refl, k_max_inv_A: float) -> None:
    """Refuse a plan without reflections in plain words (4 x 5 px frames reach about 0.1 1/A)."""
    if len(refl.hkl) == 0:
        raise Napari4DSTEMError(
            f"{crystal.name}: no reflection within k_max = {k_max_inv_A:.3g} 1/A: the frames are too small "
            "(or their pixels too fine) to reach this crystal's first reflection; raise k_max if the detector "
            "reaches further"
        )


def _width(thickness_A, width_inv_A, profile) -> float:
    if profile not in ROCKING_CURVES:
        raise ValueError(f"rocking_curve must be one of {ROCKING_CURVES}, got {profile!r}")
    if width_inv_A is not None:
        return float(width_inv_A)
    return _WIDTH_T[profile] / thickness_A


def gaussian_width_inv_A(plan: OrientationPlan) -> float:
    """The excitation width of a Gaussian rocking curve for the same thickness as ``plan``'s.

    For ``Crystal.kinematic_pattern(excitation_width_inv_A=...)``, e.g. to draw its templates.

    Parameters
    ----------
    plan : OrientationPlan
        The plan.

    Returns
    -------
    float
        Width in 1/A (``w / 0.35`` for a Lorentzian plan, ``w`` for a Gaussian one).
    """
    return _width_as(plan, "gaussian")


def _plan_profile(plan: OrientationPlan) -> str:
    """The rocking curve a plan was built with (plans saved before #18: Gaussian)."""
    return str(plan.params.get("rocking_curve", "gaussian"))


def _width_as(plan: OrientationPlan, profile: str) -> float:
    """The plan's excitation width (1/A) under rocking curve ``profile``, for the same thickness."""
    return float(plan.params["excitation_width_inv_A"]) * _WIDTH_T[profile] / _WIDTH_T[_plan_profile(plan)]


def _reflections(plan: OrientationPlan, intensity_power: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The reflections the predicting kernels (refinement, scores, turn) read, out to 1.05 ``k_max``.

    ``(G (m, 3) 1/A in the crystal frame, |F|^(2 intensity_power), |G|^2, wavelength in A)``.
    """
    refl = plan.crystal.reciprocal_points(plan.params["k_max_inv_A"] * 1.05)
    return (
        refl.g,
        np.abs(refl.structure_factor) ** (2.0 * intensity_power),
        np.sum(refl.g**2, axis=1),
        electron_wavelength_A(plan.params["energy_kev"]),
    )


def estimate_plan_memory(
    crystal: Crystal,
    *,
    step_deg: float,
    inplane_step_deg: float | None = None,
    k_max_inv_A: float,
    energy_kev: float,
    thickness_A: float = 100.0,
    n_threads: int | None = None,
    rocking_curve: str = "lorentzian",
) -> dict[str, float]:
    """Estimated bytes of a plan and of the matcher's score buffers, without building it.

    Parameters
    ----------
    crystal : Crystal
        The crystal.
    step_deg, inplane_step_deg, k_max_inv_A, energy_kev, thickness_A, rocking_curve
        As :func:`build_orientation_plan`.
    n_threads : int, optional
        Matcher threads, one score buffer each (default all CPUs).

    Returns
    -------
    dict
        ``n_zones``, ``n_inplane``, ``plan_bytes``, ``match_bytes`` (per-thread buffers of
        ``n_zones x n_inplane`` float32 scores) and ``total_bytes``.

    Notes
    -----
    The spots per zone are counted on every ``n_zones // 16``-th zone axis and extrapolated;
    a spot costs 12 bytes, a zone about 100.
    """
    import os

    axes = fundamental_zone_axes(step_deg, crystal.point_group)
    lam = electron_wavelength_A(energy_kev)
    refl = crystal.reciprocal_points(k_max_inv_A)
    _need_reflections(crystal, refl, k_max_inv_A)  # session 14, audit3 #9: was numpy's zero-size max
    sample = axes[:: max(1, len(axes) // 16)]
    *_, keep = _spots_per_zone(
        crystal,
        sample,
        refl.g,
        np.abs(refl.structure_factor),
        refl.g_norm**2,
        lam,
        _width(thickness_A, None, rocking_curve),
        math.radians(step_deg),
        k_max_inv_A,
        1e-3,
        rocking_curve,
    )
    spots = float(keep.sum(axis=1).mean()) * len(axes)
    n_inplane = round(360.0 / (inplane_step_deg or step_deg))
    n_threads = n_threads or os.cpu_count() or 1
    plan = spots * 12 + len(axes) * 100
    buffers = n_threads * len(axes) * n_inplane * 4.0
    return {
        "n_zones": len(axes),
        "n_inplane": n_inplane,
        "plan_bytes": plan,
        "match_bytes": buffers,
        "total_bytes": plan + buffers,
    }


def iter_build_orientation_plan(
    crystal: Crystal,
    *,
    energy_kev: float,
    k_max_inv_A: float,
    step_deg: float = 2.0,
    inplane_step_deg: float | None = None,
    thickness_A: float = 100.0,
    excitation_width_inv_A: float | None = None,
    min_relative_amplitude: float = 1e-3,
    max_memory_bytes: float = 2 * 2**30,
    rocking_curve: str = "lorentzian",
) -> Job[OrientationPlan]:
    """Job: build the sparse template plan of ``crystal`` (progress per block of zone axes).

    Parameters
    ----------
    crystal : Crystal
        The crystal (its point group reduces the zone axes).
    energy_kev : float
        Beam energy (keV).
    k_max_inv_A : float
        Largest ``|g|`` (1/A) of the templates; at most the detector's reach.
    step_deg : float
        Angular step of the zone axes over the fundamental zone (0.05..30, default 2).
    inplane_step_deg : float, optional
        In-plane step (default ``step_deg``; at most 90).
    thickness_A : float
        Sample thickness; sets the excitation width (``1/t`` for the Gaussian, ``0.35/t`` for
        the Lorentzian profile) unless ``excitation_width_inv_A`` is given.
    excitation_width_inv_A : float, optional
        Excitation width ``w`` in 1/A.
    rocking_curve : {"lorentzian", "gaussian", "sinc2"}
        ``"lorentzian"`` (default since #18: the heavy-tailed envelope of a thin film's sinc^2
        rocking curve, robust to its shape and thickness), ``"gaussian"`` (the model before
        #18) or ``"sinc2"`` (the film's own ``sinc^2(s t)`` at ``thickness_A``, averaged over the
        plan's sampling; session 8); see :func:`rocking_profile`. The matcher's refinement uses
        the same profile (the Lorentzian envelope for ``"sinc2"``).
    min_relative_amplitude : float
        Spots weaker than this fraction of the strongest ``|F|`` are dropped.
    max_memory_bytes : float
        Refuse (:class:`PlanTooLargeError`, naming a step that fits) above this (default 2 GiB).

    Yields
    ------
    Progress
        Per block of zone axes (about 16 steps).

    Returns
    -------
    OrientationPlan
        The sparse templates, one per zone axis.

    Raises
    ------
    ValueError
        When a step or the rocking curve is out of range.
    PlanTooLargeError
        When the estimate exceeds ``max_memory_bytes``.
    Napari4DSTEMError
        When the crystal has no reflection within ``k_max_inv_A``.

    Notes
    -----
    Zone axes from :func:`~..crystal.symmetry.fundamental_zone_axes`; for each, the reflections
    at the zone-axis orientation with excitation error ``s = -(g_z + lambda |g|^2 / 2)`` get the
    amplitude ``|F| sqrt(S(s / w(g)))``, ``w(g)^2 = w^2 + (|g| step / 2)^2``, and are stored by
    radial shell as in-plane angle and weight (CSR). In-plane rotations are not stored; the
    matcher scores them all by FFT over the angle, after Ophus et al. [1]_.

    References
    ----------
    .. [1] C. Ophus et al., "Automated crystal orientation mapping in py4DSTEM using sparse
       correlation matching", Microsc. Microanal. 28, 390-403 (2022).
    """
    if not (0.05 <= step_deg <= 30):
        raise ValueError(f"step_deg must be within 0.05..30 degrees, got {step_deg}")
    inplane_step_deg = float(inplane_step_deg or step_deg)
    n_inplane = round(360.0 / inplane_step_deg)
    if n_inplane < 4:
        raise ValueError(f"inplane_step_deg must be at most 90 degrees, got {inplane_step_deg}")
    est = estimate_plan_memory(
        crystal,
        step_deg=step_deg,
        inplane_step_deg=inplane_step_deg,
        k_max_inv_A=k_max_inv_A,
        energy_kev=energy_kev,
        thickness_A=thickness_A,
        rocking_curve=rocking_curve,
    )
    if est["total_bytes"] > max_memory_bytes:
        # plan ~ 1/step^2, buffers ~ 1/step^3: the step that fits, rounded up to 0.1 deg
        ratio = est["total_bytes"] / max_memory_bytes
        suggest = math.ceil(10 * step_deg * ratio ** (1 / 2.5)) / 10
        raise PlanTooLargeError(
            f"an orientation plan of {crystal.name} at {step_deg} deg needs about "
            f"{est['total_bytes'] / 2**20:.0f} MiB ({est['n_zones']} zone axes x {est['n_inplane']} "
            f"in-plane angles), more than the {max_memory_bytes / 2**20:.0f} MiB allowed; "
            f"use a coarser step (about {suggest} deg) or a smaller k_max"
        )
    lam = electron_wavelength_A(energy_kev)
    w_base = _width(thickness_A, excitation_width_inv_A, rocking_curve)
    refl = crystal.reciprocal_points(k_max_inv_A)
    _need_reflections(crystal, refl, k_max_inv_A)
    amp = np.abs(refl.structure_factor)
    gn = refl.g_norm
    radii, shell_of = np.unique(np.round(gn, 4), return_inverse=True)
    axes = fundamental_zone_axes(step_deg, crystal.point_group)
    n_z, n_sh = len(axes), len(radii)
    U0s, ang_parts, w_parts = [], [], []
    counts = np.zeros((n_z, n_sh), np.int64)
    # blocks bound the memory (2e6 spots) and give about 16 progress steps
    chunk = max(1, min(int(2e6 // max(len(gn), 1)), math.ceil(n_z / 16)))
    for a in range(0, n_z, chunk):
        yield Progress(a, n_z, f"orientation plan of {crystal.name}: zone axes")
        U0, gl, weight, keep = _spots_per_zone(
            crystal,
            axes[a : a + chunk],
            refl.g,
            amp,
            gn**2,
            lam,
            w_base,
            math.radians(step_deg),
            k_max_inv_A,
            min_relative_amplitude,
            rocking_curve,
        )
        U0s.append(U0)
        zi, gi = np.nonzero(keep)
        order = np.lexsort((gi, shell_of[gi], zi))  # by zone, then shell
        zi, gi = zi[order], gi[order]
        np.add.at(counts, (zi + a, shell_of[gi]), 1)
        ang_parts.append(np.arctan2(gl[zi, gi, 1], gl[zi, gi, 0]))
        w_parts.append(weight[zi, gi])
    offsets = np.concatenate([[0], np.cumsum(counts.ravel())]).astype(np.int64)
    spot_w = np.concatenate(w_parts).astype(np.float32)
    per_zone = counts.sum(axis=1)
    zone_of_spot = np.repeat(np.arange(n_z), per_zone)
    norm = np.sqrt(np.bincount(zone_of_spot, spot_w.astype(np.float64) ** 2, minlength=n_z))
    norm[per_zone == 0] = np.inf
    params = {
        "energy_kev": float(energy_kev),
        "k_max_inv_A": float(k_max_inv_A),
        "step_deg": float(step_deg),
        "inplane_step_deg": 360.0 / n_inplane,
        "thickness_A": float(thickness_A),
        "excitation_width_inv_A": float(w_base),
        "rocking_curve": rocking_curve,
        "min_relative_amplitude": float(min_relative_amplitude),
        "crystal": crystal.name,
        "spacegroup": crystal.spacegroup,
        "point_group": crystal.point_group.name,
        "zone_axes": "sphere modulo the proper rotations of the point group",
        "orientation_convention": "U maps crystal Cartesian to lab (x = k_x, y = k_y, z = beam)",
    }
    yield Progress(n_z, n_z, f"orientation plan of {crystal.name}: {n_z} zone axes")
    return OrientationPlan(
        crystal,
        axes,
        np.concatenate(U0s),
        n_inplane,
        radii.astype(np.float64),
        offsets,
        np.concatenate(ang_parts).astype(np.float32),
        spot_w,
        norm,
        params,
    )


build_orientation_plan = eager(iter_build_orientation_plan, "Build the sparse template plan of ``crystal``.")
