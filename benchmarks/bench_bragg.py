"""Bragg disk detection, lattice fit and strain: napari-4dstem vs py4DSTEM on the same data.

    python benchmarks/bench_bragg.py [--scan 64] [--repeats 3] [--p4venv /work/p4venv]

1. Speed: the TARGETS data (make_strained_crystal, 64 x 64 scan, 128 x 128 patterns) as .npy;
   py4DSTEM's ``find_Bragg_disks`` (subpixel ``poly``, and ``multicorr`` on a subset) runs in a
   subprocess of its own venv on the same file; medians of ``--repeats`` runs each.
2. Position accuracy against the Cramer-Rao bound: one disk per pattern at a random sub-pixel
   position (radius 8, logistic edge 0.5 px, background 0.5 counts/px), Poisson noise at 4, 8,
   12 and 60 counts/px, plus noise-free. The bound per axis is ``1 / sqrt(I)``,
   ``I = sum_k (d mu / d c_x)^2 / mu``, for the known disk model mu(k; c).
3. Strain against the planted field (noise and noise-free): RMS error of e_xx, e_yy, e_xy over
   the scan; for py4DSTEM (a) its peaks go through our lattice fit and strain, which isolates
   the detection's share of the error, and (b) its own full pipeline on the same peaks:
   ``measure_origin`` + plane ``fit_origin``, then ``StrainMap`` (``choose_basis_vectors`` on
   the Bragg vector map, ``set_max_peak_spacing(4)``, ``fit_basis_vectors``, ``get_strain``
   with the reference region = the unstrained top-left quarter), scored as-is (axes swapped:
   its x is our y) and converted to our F = R (I + e) convention (see ``p4_strain_errors``).
   Its time is ``fit_basis_vectors`` + ``get_strain`` (figure rendering stubbed out).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_4dstem.analysis.bragg.disks import find_bragg_disks
from napari_4dstem.analysis.bragg.lattice import find_lattice, fit_lattice
from napari_4dstem.analysis.bragg.probe import make_template
from napari_4dstem.analysis.bragg.strain import strain_from_lattice
from napari_4dstem.data.results import BraggPeaks
from napari_4dstem.simulation.samples import make_strained_crystal, soft_disk

P4_SCRIPT = r"""
import json, sys, time
import numpy as np
import py4DSTEM
data = np.load(sys.argv[1], mmap_mode="r")
probe = np.load(sys.argv[2])
mode, n_pat, repeats, out = sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
sy, sx = data.shape[:2]
ny = max(1, min(sy, n_pat // sx)) if n_pat < sy * sx else sy
dc = py4DSTEM.DataCube(data=np.ascontiguousarray(data[:ny]))
kernel = py4DSTEM.Probe(data=probe.astype(float)).get_kernel(mode="flat")
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    bv = dc.find_Bragg_disks(template=kernel, corrPower=1, subpixel=mode,
                             upsample_factor=16, minAbsoluteIntensity=0, minRelativeIntensity=0.03,
                             relativeToPeak=0, minPeakSpacing=8, edgeBoundary=8, maxNumPeaks=100)
    times.append(time.perf_counter() - t0)
rows = []
for i in range(ny):
    for j in range(sx):
        d = bv._v_uncal[i, j].data
        rows.append(np.stack([d["qx"], d["qy"], d["intensity"]], -1))
np.savez(out, counts=[len(r) for r in rows], peaks=np.concatenate(rows), ny=ny, sx=sx)
info = {"seconds": float(np.median(times)), "n": ny * sx}
if len(sys.argv) > 8:  # py4DSTEM's own strain pipeline on these peaks
    import warnings
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    strain_out, q_ref = sys.argv[7], int(sys.argv[8])
    warnings.simplefilter("ignore")
    qn = dc.data.shape[2:]
    t0 = time.perf_counter()
    bv.measure_origin(center_guess=(qn[0] / 2, qn[1] / 2), score_method="distance")
    bv.fit_origin(fitfunction="plane", plot=False)
    t_origin = time.perf_counter() - t0
    sm = py4DSTEM.StrainMap(bv)
    sm.choose_basis_vectors(subpixel="multicorr", upsample_factor=16, minRelativeIntensity=0.005,
                            minSpacing=8, edgeBoundary=4, maxNumPeaks=60)
    sm.set_max_peak_spacing(4)
    plt.close("all")
    sm.show_strain = lambda *a, **k: (None, None)  # skip figure rendering in the timing
    ref = np.zeros(bv.Rshape, dtype=bool)
    ref[:q_ref, :q_ref] = True
    t0 = time.perf_counter()
    sm.fit_basis_vectors()
    sm.get_strain(gvects=ref)
    t_fit = time.perf_counter() - t0
    np.savez(strain_out, e_xx=sm.get_slice("e_xx").data, e_yy=sm.get_slice("e_yy").data,
             e_xy=sm.get_slice("e_xy").data, theta=sm.get_slice("theta").data,
             mask=sm.get_slice("mask").data, n_dirs=len(sm.braggdirections.data))
    info.update(strain_seconds=t_fit, origin_seconds=t_origin)
print(json.dumps(info))
"""


def run_p4(
    p4venv: Path,
    data_npy: Path,
    probe_npy: Path,
    mode: str,
    n_pat: int,
    repeats: int,
    strain_ref: int | None = None,
):
    """py4DSTEM's detection in its own venv: (patterns/s, BraggPeaks[, strain]).

    With ``strain_ref`` set, py4DSTEM's own strain pipeline also runs on its peaks (origin
    measured and plane-fitted, then ``StrainMap`` with the reference region = scan rows and
    columns < ``strain_ref``) and a third item comes back: its maps and timings.
    """
    script = data_npy.parent / "p4.py"
    script.write_text(P4_SCRIPT)
    out = data_npy.parent / f"p4_{mode}.npz"
    strain_out = data_npy.parent / "p4_strain.npz"
    res = subprocess.run(
        [
            str(p4venv / "bin" / "python"),
            str(script),
            str(data_npy),
            str(probe_npy),
            mode,
            str(n_pat),
            str(repeats),
            str(out),
        ]
        + ([str(strain_out), str(strain_ref)] if strain_ref else []),
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"py4DSTEM failed:\n{res.stderr[-3000:]}")
    info = json.loads(res.stdout.strip().splitlines()[-1])
    z = np.load(out)
    counts = z["counts"]
    p = z["peaks"]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    bp = BraggPeaks(
        (int(z["ny"]), int(z["sx"])),
        offsets,
        p[:, 0],
        p[:, 1],
        p[:, 2],
        p[:, 2],
        params={"detector_shape": [128, 128]},
    )
    if strain_ref:
        st = dict(np.load(strain_out))
        st["seconds"] = info["strain_seconds"]
        return info["n"] / info["seconds"], bp, st
    return info["n"] / info["seconds"], bp


def p4_strain_errors(st, sample):
    """Score py4DSTEM's StrainMap against the planted truth exactly as ours is scored.

    py4DSTEM's (x, y) are our (y, x): its e_xx is our e_yy and vice versa. Its maps are
    ``1 - beta`` with ``beta`` the least-squares map of the reference g-vectors onto the
    measured ones (an infinitesimal strain, ~ e - e^2 for a stretch e); ours are true
    strain, F = R (I + e) with g' = F^-T g. Returns (as-is RMS, converted RMS, failed fits):
    "as-is" only swaps the axes; "converted" rebuilds ``beta`` from its e_xx, e_yy, e_xy
    and theta, takes F = beta^-T, its polar decomposition F = R U, and e = U - I.
    """
    bad = ~st["mask"].astype(bool)
    exx, eyy, exy, th = (np.where(bad, np.nan, st[k]) for k in ("e_xx", "e_yy", "e_xy", "theta"))
    truth = sample.truth[0].data[: exx.shape[0], : exx.shape[1], :3]
    as_is = np.stack([eyy, exx, exy], -1)
    beta = np.stack([np.stack([1 - exx, th - exy], -1), np.stack([-th - exy, 1 - eyy], -1)], -2)
    beta = np.where(bad[..., None, None], np.eye(2), beta)
    f = np.linalg.inv(beta).swapaxes(-1, -2)
    _, sv, vt = np.linalg.svd(f)
    u = np.einsum("...ji,...j,...jk->...ik", vt, sv, vt)  # U = sqrt(F^T F)
    conv = np.stack([u[..., 1, 1] - 1, u[..., 0, 0] - 1, u[..., 0, 1]], -1)
    conv[bad] = np.nan

    def rms(e):
        return np.sqrt(np.nanmean((e - truth) ** 2, axis=(0, 1)))

    return rms(as_is), rms(conv), int(bad.sum())


# -- accuracy against the Cramer-Rao bound -------------------------------------------------------
DET = (64, 64)


def disk_set(rng, n, amp, noise=True):
    c = 32 + rng.uniform(-3, 3, (n, 2))
    yy, xx = np.indices(DET)
    r = np.hypot(yy - c[:, 0, None, None], xx - c[:, 1, None, None])
    lam = 0.5 + amp * soft_disk(r, 8.0, 0.5)
    data = rng.poisson(lam).astype(np.uint16) if noise else lam.astype(np.float32)
    return data.reshape(1, n, *DET), c


def crlb(amp, center=(32.3, 31.7)):
    yy, xx = np.indices(DET, dtype=float)
    r = np.hypot(yy - center[0], xx - center[1])
    mu = 0.5 + amp * soft_disk(r, 8.0, 0.5)
    dmu = -amp / (4 * 0.5) / np.cosh((r - 8) / 1.0) ** 2 * (-(xx - center[1]) / np.maximum(r, 1e-9))
    return 1 / np.sqrt(np.sum(dmu**2 / mu))


def per_axis_rms(bp, truth):
    ok = bp.counts().ravel() >= 1
    first = bp.offsets[:-1][ok]
    e = np.stack([bp.qy[first], bp.qx[first]], -1) - truth[ok]
    return float(np.sqrt(np.mean(e**2))), float(np.abs(e.mean(axis=0)).max()), int((~ok).sum())


def strain_errors(bp, sample, reference):
    fit = fit_lattice(bp, find_lattice(bp))
    t0 = time.perf_counter()
    fit = fit_lattice(bp, find_lattice(bp))
    sm = strain_from_lattice(fit, reference=reference)
    dt = time.perf_counter() - t0
    sy, sx = bp.scan_shape
    e = sm.strain.data[..., :3] - sample.truth[0].data[:sy, :sx, :3]
    return np.sqrt(np.nanmean(e**2, axis=(0, 1))), dt, int((~fit.valid).sum())


def propagated_strain_bound(bp, scan, reference, n_mc=20, seed=0):
    """The strain error bound: RMS (e_xx, e_yy, e_xy) that unbiased disk positions at the
    Cramer-Rao bound would give, propagated through the per-pattern lattice fit.

    For every disk our detector found, its amplitude is read from the noise-free pattern and its
    per-axis bound is :func:`crlb`; the optimal (inverse-variance) least-squares fit of
    ``q = o + h g1 + k g2`` then has covariance ``(A^T W A)^-1``. Lattice vectors drawn from that
    covariance around the planted ones go through our own strain map (reference region included)
    ``n_mc`` times; the RMS against the planted strain is the bound.
    """
    s0 = make_strained_crystal(scan_shape=(scan, scan), noise=False)
    lam = np.asarray(s0.datacube.data, dtype=float)
    origin = s0.truth[1].data
    g = s0.truth[2].data  # (sy, sx, 4): g1_y, g1_x, g2_y, g2_x
    sy, sx = bp.scan_shape
    cache = {}
    cov = np.full((sy, sx, 3, 3), np.nan)
    for i in range(sy * sx):
        iy, ix = divmod(i, sx)
        pk = bp.at(iy, ix)
        if len(pk["qy"]) < 4:
            continue
        G = np.array([[g[iy, ix, 0], g[iy, ix, 2]], [g[iy, ix, 1], g[iy, ix, 3]]])  # columns g1, g2 (y, x)
        rel = np.stack([pk["qy"], pk["qx"]]) - origin[iy, ix][:, None]
        hk = np.rint(np.linalg.solve(G, rel))
        sites = origin[iy, ix][:, None] + G @ hk
        r, c = np.clip(np.rint(sites).astype(int), 0, lam.shape[2] - 1)
        amp = np.maximum(lam[iy, ix, r, c] - 0.5, 0.1)
        sig = np.array([cache.setdefault(round(a, 1), crlb(round(a, 1))) for a in amp])
        A = np.stack([np.ones(len(amp)), hk[0], hk[1]], -1)
        M = (A / sig[:, None] ** 2).T @ A
        cov[iy, ix] = np.linalg.inv(M)
    ok = np.all(np.isfinite(cov), axis=(2, 3))
    L = np.zeros_like(cov)
    L[ok] = np.linalg.cholesky(cov[ok])
    fit = fit_lattice(bp, find_lattice(bp))
    rng = np.random.default_rng(seed)
    rms = []
    truth = s0.truth[0].data[..., :3]
    for _ in range(n_mc):
        dy = np.einsum("yxij,yxj->yxi", L, rng.normal(size=(sy, sx, 3)))
        dx = np.einsum("yxij,yxj->yxi", L, rng.normal(size=(sy, sx, 3)))
        g1 = np.stack([g[..., 0] + dy[..., 1], g[..., 1] + dx[..., 1]], -1)
        g2 = np.stack([g[..., 2] + dy[..., 2], g[..., 3] + dx[..., 2]], -1)
        g1[~ok] = np.nan
        g2[~ok] = np.nan
        f = dataclasses.replace(fit, g1=g1, g2=g2, reason=np.where(ok, 0, 2).astype(np.uint8))
        sm = strain_from_lattice(f, reference=reference)
        e = sm.strain.data[..., :3] - truth
        rms.append(np.sqrt(np.nanmean(e**2, axis=(0, 1))))
    return np.sqrt(np.mean(np.square(rms), axis=0))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--scan", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--p4venv", type=Path, default=Path("/work/p4venv"))
    ap.add_argument("--n-crlb", type=int, default=1000)
    ap.add_argument(
        "--bound-only", action="store_true", help="only our detection + strain against the propagated Cramer-Rao bound"
    )
    args = ap.parse_args(argv)
    have_p4 = (args.p4venv / "bin" / "python").exists()
    rng = np.random.default_rng(7)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 1. speed and strain on the TARGETS data ------------------------------------------------
        for noise in (True, False):
            s = make_strained_crystal(scan_shape=(args.scan, args.scan), noise=noise)
            data = np.asarray(s.datacube.data)
            n = data.shape[0] * data.shape[1]
            t = make_template(s.probe)
            find_bragg_disks(data[:2, :2], template=t)  # compile
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                bp = find_bragg_disks(data, template=t)
                times.append(time.perf_counter() - t0)
            ours = n / np.median(times)
            q = args.scan // 4
            our_strain, our_dt, our_bad = strain_errors(bp, s, (0, q, 0, q))
            tag = "Poisson" if noise else "noise-free"
            if noise:
                bound = propagated_strain_bound(bp, args.scan, (0, q, 0, q))
                rows.append(
                    (
                        "strain RMS error / propagated Cramer-Rao bound, Poisson",
                        " / ".join(f"{v:.2f}x" for v in our_strain / bound),
                        "bound " + " / ".join(f"{v:.2e}" for v in bound),
                    )
                )
                if args.bound_only:
                    break
            rows.append(("detection, " + tag, f"{ours:.0f} patterns/s", ""))
            rows.append(
                (
                    f"strain RMS error e_xx/e_yy/e_xy, {tag}",
                    " / ".join(f"{v:.2e}" for v in our_strain),
                    "",
                )
            )
            rows.append(
                (
                    f"lattice fit + strain, {n} patterns, {tag}",
                    f"{our_dt * 1e3:.1f} ms",
                    f"{our_bad} failed fits",
                )
            )
            if have_p4:
                np.save(tmp / "data.npy", data)
                np.save(tmp / "probe.npy", np.asarray(s.probe.data))
                p4_rate, p4_bp, p4_st = run_p4(
                    args.p4venv,
                    tmp / "data.npy",
                    tmp / "probe.npy",
                    "poly",
                    n,
                    args.repeats,
                    strain_ref=q,
                )
                rows.append(
                    (
                        f"  py4DSTEM poly, {tag}",
                        f"{p4_rate:.0f} patterns/s",
                        f"ours {ours / p4_rate:.2f}x",
                    )
                )
                p4_strain, _, _p4_bad = strain_errors(p4_bp, s, (0, q, 0, q))
                ratio = " / ".join(f"{a / b:.2f}" for a, b in zip(our_strain, p4_strain))
                rows.append(
                    (
                        f"  py4DSTEM poly peaks -> our strain, {tag}",
                        " / ".join(f"{v:.2e}" for v in p4_strain),
                        f"ours/py4DSTEM {ratio}",
                    )
                )
                sm_asis, sm_conv, sm_bad = p4_strain_errors(p4_st, s)
                for label, v in (("as-is", sm_asis), ("converted to F = R(I+e)", sm_conv)):
                    ratio = " / ".join(f"{a / b:.2f}" for a, b in zip(our_strain, v))
                    rows.append(
                        (
                            f"  py4DSTEM StrainMap (same data, same run), {tag}, {label}",
                            " / ".join(f"{x:.2e}" for x in v),
                            f"ours/py4DSTEM {ratio}; {sm_bad} failed fits",
                        )
                    )
                rows.append(
                    (
                        f"  py4DSTEM fit_basis_vectors + get_strain, {n} patterns, {tag}",
                        f"{p4_st['seconds'] * 1e3:.0f} ms",
                        f"ours {p4_st['seconds'] / our_dt:.0f}x faster",
                    )
                )
                mc_rate, _ = run_p4(args.p4venv, tmp / "data.npy", tmp / "probe.npy", "multicorr", 256, 1)
                rows.append(
                    (
                        f"  py4DSTEM multicorr, {tag} (256 patterns)",
                        f"{mc_rate:.0f} patterns/s",
                        f"ours {ours / mc_rate:.1f}x",
                    )
                )
        # 2. accuracy against the Cramer-Rao bound ------------------------------------------------
        t = None
        for amp in () if args.bound_only else (4.0, 8.0, 12.0, 60.0, None):
            noise = amp is not None
            a = amp if noise else 8.0
            data, truth = disk_set(rng, args.n_crlb, a, noise)
            if t is None:
                yy, xx = np.indices(DET)
                t = make_template(960 * soft_disk(np.hypot(yy - 32, xx - 32), 8.0, 0.5) + 8)
            bound = crlb(a)
            line = []
            for sub in ("fit", "parabolic", "upsample"):
                if sub == "upsample" and noise and amp != 8.0:
                    continue
                k = data if sub != "upsample" else data[:, :200]
                bp = find_bragg_disks(k, template=t, subpixel=sub, min_relative=0.3)
                rms, bias, _miss = per_axis_rms(bp, truth[: k.shape[1]])
                line.append(f"{sub} {rms:.4f}" + (f" ({rms / bound:.3f}x)" if noise else f" (bias {bias:.1e})"))
            p4 = ""
            if have_p4:
                np.save(tmp / "d.npy", data)
                np.save(
                    tmp / "p.npy",
                    (960 * soft_disk(np.hypot(*(np.indices(DET) - 32)), 8.0, 0.5) + 8),
                )
                _, p4bp = run_p4(args.p4venv, tmp / "d.npy", tmp / "p.npy", "poly", data.shape[1], 1)
                p4bp = BraggPeaks(
                    p4bp.scan_shape,
                    p4bp.offsets,
                    p4bp.qy,
                    p4bp.qx,
                    p4bp.intensity,
                    p4bp.correlation,
                    params={"detector_shape": list(DET)},
                )
                rms, bias, _ = per_axis_rms(p4bp, truth)
                p4 = f"py4DSTEM poly {rms:.4f}" + (f" ({rms / bound:.3f}x)" if noise else "")
            label = f"disk position RMS per axis, {amp:g} counts/px" if noise else "disk position error, noise-free"
            rows.append((label, "; ".join(line), (f"CRLB {bound:.4f} px; " if noise else "") + p4))
    print("| measurement | ours | reference / ratio |\n|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    sys.exit(main())
