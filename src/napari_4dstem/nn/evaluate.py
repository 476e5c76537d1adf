"""NN path vs correlation path on the same simulated strained scan (benchmark and tests).

Two held-out scans: the kinematic thick-sample proxy
(:func:`~napari_4dstem.nn.synthetic.make_thick_strained_scan`) and real multislice
(:func:`make_multislice_strained_scan`: our torch multislice engine, a strained crystal in a
zone axis whose local tilt wanders as in a bent thick foil, Poisson noise at a stated dose).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

__all__ = [
    "compare_on_scan",
    "compare_paths",
    "load_scans",
    "make_multislice_strained_scan",
    "save_scans",
]


def make_multislice_strained_scan(
    *,
    crystal: str = "Si",
    zone_axis: tuple[int, int, int] = (0, 0, 1),
    inplane_deg: float = 7.0,
    thicknesses_A: tuple[float, ...] = (300.0,),
    scan_shape: tuple[int, int] = (12, 12),
    size: int = 128,
    pixel_size_inv_A: float = 0.015,
    energy_kev: float = 300.0,
    convergence_mrad: float = 2.5,
    tilt_deg: float = 0.3,
    central_counts: float = 60.0,
    background_counts: float = 0.5,
    min_weight: float = 0.01,
    min_disk_counts: float = 2.0,
    seed: int = 11,
    device: str | None = None,
    noise: bool = True,
    progress=None,
) -> list:
    """Held-out strained scans simulated by multislice, one per thickness (one pass).

    Every scan position gets the planted strain of
    :func:`~napari_4dstem.simulation.samples.planted_strain` (``e_xx`` to 2 %, ``e_yy`` to
    -1 %, ``e_xy``, a rotation to 0.2 deg) and a local tilt: a smooth bend of amplitude
    ``tilt_deg`` plus a pattern-to-pattern wander of a third of it, about in-plane axes, so
    the dynamical contrast inside the disks changes over the scan as in a bent thick foil.
    Dose: a vacuum central disk would have ``central_counts`` electrons per pixel; background
    ``background_counts``/px; Poisson. Truth disks, per thickness and pattern: the reflections
    of the strained crystal (structure-factor label weight at least ``min_weight``) whose disk
    lies wholly on the detector and is there to be found: its mean intensity in the noise-free
    pattern at least ``min_disk_counts`` electrons per pixel above the background. Returns a
    list of :class:`~napari_4dstem.nn.synthetic.ThickScan`.
    """
    from ..analysis.crystal.structure import load_crystal
    from ..data.calibration import Calibration
    from ..data.datacube import DataCube
    from ..data.results import DiffractionImage
    from ..simulation.engines import SimulationRequest
    from ..simulation.labels import structure_factor_label
    from ..simulation.multislice import MultisliceEngine
    from ..simulation.samples import planted_strain, zone_axis_rotation
    from .synthetic import ThickScan, planted_reference, truth_strain_map

    rng = np.random.default_rng(seed)
    cr = load_crystal(crystal)
    ny, nx = scan_shape
    st = planted_strain(scan_shape)
    eng = MultisliceEngine(device=device)
    yy, xx = np.mgrid[0:ny, 0:nx] / max(ny, nx)
    bend = np.stack(
        [np.sin(2 * np.pi * (xx + 0.3 * yy)), np.cos(2 * np.pi * (0.5 * xx - yy))], -1
    ) * tilt_deg + rng.normal(0, tilt_deg / 3, (ny, nx, 2))
    n_t = len(thicknesses_A)
    patterns = np.zeros((n_t, ny * nx, size, size), np.float32)
    centers, probe = [], None
    for p in range(ny * nx):
        iy, ix = divmod(p, nx)
        th = st["theta"][iy, ix]
        ax, ay = np.deg2rad(bend[iy, ix])
        rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
        ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
        U = ry @ rx @ zone_axis_rotation(zone_axis, inplane_deg + math.degrees(th))
        e = np.array([[st["e_xx"][iy, ix], st["e_xy"][iy, ix]], [st["e_xy"][iy, ix], st["e_yy"][iy, ix]]])
        req = SimulationRequest(
            cr,
            orientation=U,
            thicknesses_A=tuple(thicknesses_A),
            energy_kev=energy_kev,
            convergence_mrad=convergence_mrad,
            shape=(size, size),
            pixel_size_inv_A=pixel_size_inv_A,
            strain=e,
            seed=seed * 100_003 + p,
        )
        res = eng.simulate(req)
        patterns[:, p] = res.patterns[:, 0]
        probe = res.probe
        lab = structure_factor_label(req, min_weight=min_weight)
        c = np.stack([lab.qy, lab.qx], 1)
        R = req.probe_radius_px
        inside = np.all(c >= R, axis=1) & np.all(c <= size - 1 - R, axis=1)
        centers.append(np.where(inside[:, None], c, np.nan))
        if progress is not None:
            progress(p + 1, ny * nx)
    m = max(len(c) for c in centers)
    all_c = np.full((ny * nx, m, 2), np.nan)
    for p, c in enumerate(centers):
        all_c[p, : len(c)] = c
    R = convergence_mrad * 1e-3 / SimulationRequest(cr, energy_kev=energy_kev).wavelength_A
    R /= pixel_size_inv_A
    per_pattern = central_counts * math.pi * R**2  # a vacuum disk of central_counts/px
    # mean counts/px inside each disk (0.8 R, away from the edge) of the noise-free patterns,
    # all reflections of a pattern at once
    kk = np.arange(size, dtype=float)
    disk_mean = np.zeros((n_t, ny * nx, m))
    for p in range(ny * nx):
        ok = np.isfinite(all_c[p, :, 0])
        cy, cx = all_c[p, ok, 0], all_c[p, ok, 1]
        inside = (kk[None, :, None] - cy[:, None, None]) ** 2 + (kk[None, None, :] - cx[:, None, None]) ** 2 <= (
            0.8 * R
        ) ** 2  # (n_ok, size, size)
        sums = np.tensordot(patterns[:, p], inside, axes=([1, 2], [1, 2]))  # (n_t, n_ok)
        disk_mean[:, p, ok] = sums / inside.sum(axis=(1, 2)) * per_pattern
    cal = Calibration(
        scan_step=(1.0, 1.0),
        scan_units="nm",
        k_pixel_size=pixel_size_inv_A,
        k_units="1/A",
        beam_energy_kev=energy_kev,
    )
    strain = truth_strain_map(st, cal)
    probe_img = DiffractionImage((per_pattern * probe).astype(np.float32), name="probe", calibration=cal)
    ref = planted_reference(scan_shape)
    out = []
    for it, t in enumerate(thicknesses_A):
        visible = disk_mean[it] >= min_disk_counts
        truth_c = np.where(visible[..., None], all_c, np.nan)
        lam = patterns[it] * per_pattern + background_counts
        data = rng.poisson(lam).astype(np.uint16) if noise else lam.astype(np.float32)
        dc = DataCube(
            data.reshape(ny, nx, size, size),
            cal,
            name=f"multislice_{crystal}_{t:g}A",
            metadata={
                "description": f"multislice {crystal} {list(zone_axis)}, t = {t:g} A, "
                f"{energy_kev:g} keV, {convergence_mrad:g} mrad, strained, bent "
                f"{tilt_deg:g} deg"
            },
        )
        out.append(ThickScan(dc, probe_img, strain, truth_c, ref))
    return out


def save_scans(path, scans, **meta) -> None:
    """Write held-out scans (ThickScans) to one compressed ``.npz`` (no pickle): the data in
    its dtype, probe, planted strain, true centres, reference, calibration and name of each,
    and ``meta`` (JSON-able: how they were made)."""
    import json

    arrays = {"meta": np.array(json.dumps(meta))}
    for i, sc in enumerate(scans):
        dc = sc.datacube
        arrays[f"{i}/data"] = np.asarray(dc.data)
        arrays[f"{i}/probe"] = np.asarray(sc.probe.data)
        arrays[f"{i}/strain"] = np.asarray(sc.strain.data)
        arrays[f"{i}/centers"] = np.asarray(sc.centers)
        arrays[f"{i}/reference"] = np.asarray(sc.reference, np.int64)
        info = {
            "name": dc.name,
            "metadata": dict(dc.metadata),
            "calibration": dc.calibration.to_dict(),
            "strain_channels": list(sc.strain.channels),
        }
        arrays[f"{i}/info"] = np.array(json.dumps(info, default=str))
    np.savez_compressed(path, **arrays)


def load_scans(path) -> tuple[list, dict]:
    """Scans written by :func:`save_scans`: ``(list of ThickScan, meta)``."""
    import json

    from ..data.calibration import Calibration
    from ..data.datacube import DataCube
    from ..data.results import DiffractionImage, RealSpaceMap
    from .synthetic import ThickScan

    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        n = len({k.split("/")[0] for k in z.files if "/" in k})
        out = []
        for i in range(n):
            info = json.loads(str(z[f"{i}/info"]))
            cal = Calibration.from_dict(info["calibration"])
            dc = DataCube(z[f"{i}/data"], cal, name=info["name"], metadata=info["metadata"])
            probe = DiffractionImage(z[f"{i}/probe"], name="probe", calibration=cal)
            strain = RealSpaceMap(
                z[f"{i}/strain"],
                name="truth_strain",
                channels=tuple(info["strain_channels"]),
                calibration=cal,
            )
            ref = tuple(int(v) for v in z[f"{i}/reference"])
            out.append(ThickScan(dc, probe, strain, z[f"{i}/centers"], ref))
    return out, meta


def compare_on_scan(
    scan,
    *,
    model: Any = None,
    device: str | None = None,
    models: dict | None = None,
    nn_options: dict | None = None,
) -> dict:
    """Disk F1 (0.5 / 1 px), position RMSE, strain RMSE and patterns/s of both paths on one
    scan (a ThickScan). Correlation: the default
    :func:`~napari_4dstem.analysis.bragg.disks.find_bragg_disks` with a template from the vacuum
    probe. ``models`` ``{name: model}`` scores several networks against one correlation run
    (keys of the result: ``"correlation"`` and each name); otherwise ``model`` as ``"nn"``.
    ``nn_options`` ``{name: {keyword: value}}``: extra options of
    :func:`~napari_4dstem.nn.infer.find_bragg_disks_nn` per network (e.g. ``scale="bin"``).
    Out-of-domain warnings are caught and listed in each result's ``"out_of_domain"``; paths
    whose peaks record other lattice-fit weights than their counts (the network's) also get
    ``"strain_rmse_counts_weights"``, the strain error with the counts alone."""
    import warnings

    from ..analysis.bragg.disks import find_bragg_disks
    from ..analysis.bragg.probe import make_template
    from .infer import OutOfDomainWarning, find_bragg_disks_nn
    from .metrics import score_detection, strain_rmse

    nets = models if models is not None else {"nn": model}
    out = {}
    for name in ("correlation", *nets):
        t0 = time.perf_counter()
        if name == "correlation":
            bp = find_bragg_disks(scan.datacube, template=make_template(scan.probe))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OutOfDomainWarning)  # listed in params
                bp = find_bragg_disks_nn(
                    scan.datacube,
                    probe=scan.probe,
                    model=nets[name],
                    device=device,
                    **(nn_options or {}).get(name, {}),
                )
        dt = time.perf_counter() - t0
        r = score_detection(bp, list(scan.centers))
        if name != "correlation":
            r["out_of_domain"] = list(bp.params.get("out_of_domain", []))
        r.update(strain_rmse(bp, scan.strain.data, reference=scan.reference, centres=scan.centers))
        if bp.params.get("fit_weights", "intensity") != "intensity":
            # the same peaks fitted with their counts alone (the NN path before session 10)
            alt = strain_rmse(bp, scan.strain.data, reference=scan.reference, weights="intensity")
            r["strain_rmse_counts_weights"] = alt["strain_rmse"]
        shape = scan.datacube.data.shape
        r["patterns_per_s"] = shape[0] * shape[1] / dt
        out[name] = r
    return out


def compare_paths(
    *,
    thickness_nm: float,
    model: Any = None,
    scan_shape: tuple[int, int] = (16, 16),
    seed: int = 3,
    central_counts: float = 60.0,
) -> dict[str, dict[str, float]]:
    """:func:`compare_on_scan` on one :func:`~napari_4dstem.nn.synthetic.
    make_thick_strained_scan` (the kinematic proxy; Poisson noise at ``central_counts``/px)."""
    from .synthetic import make_thick_strained_scan

    s = make_thick_strained_scan(
        scan_shape=scan_shape, thickness_nm=thickness_nm, seed=seed, central_counts=central_counts
    )
    return compare_on_scan(s, model=model)
