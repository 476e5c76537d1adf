"""Bloch-wave vs kinematic spot intensities, both against our multislice (dynamical) patterns.

    /work/venv/bin/python benchmarks/check_bloch_multislice.py [--n 6] [--cache FILE.npz]

Patterns: those of ``bench_acom_multislice.py`` (fcc Au at random orientations, seed 2027, our
torch multislice, 300 kV, 1.5 mrad, 10 / 30 / 60 nm; ``--cache`` reuses its file). For each
pattern and thickness, the intensity inside a 5 px disk at every reflection within 1.45 1/A
(direct beam excluded) is compared with :func:`~napari_4dstem.analysis.crystal.bloch.bloch_intensities`
at the true orientation (plane wave, and averaged over 7 incident directions within the 1.5 mrad
cone) and with the kinematic ``|F|^2 sinc^2(s t)``: the cosine between the square roots
(amplitudes), 1 = identical up to a scale. Prints one row per pattern and thickness.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def _tilts(conv_mrad: float, n: int = 7) -> list[np.ndarray]:
    """Small rotations: none, and n - 1 tilts of 0.7 x the convergence around the beam."""
    out = [np.eye(3)]
    th = 0.7 * conv_mrad * 1e-3
    for k in range(n - 1):
        a = 2 * math.pi * k / (n - 1)
        ax = np.array([math.cos(a), math.sin(a), 0.0])
        X = np.array([[0, -ax[2], ax[1]], [ax[2], 0, -ax[0]], [-ax[1], ax[0], 0]])
        out.append(np.eye(3) + math.sin(th) * X + (1 - math.cos(th)) * X @ X)
    return out


def _cos_amp(a, b) -> float:
    a, b = np.sqrt(np.maximum(a, 0)), np.sqrt(np.maximum(b, 0))
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main(argv=None) -> int:
    import bench_acom_multislice as B

    from napari_4dstem.analysis.crystal.bloch import bloch_intensities
    from napari_4dstem.analysis.crystal.structure import bundled_crystal
    from napari_4dstem.data.calibration import electron_wavelength_A

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6, help="patterns compared")
    ap.add_argument("--n-sim", type=int, default=64, help="patterns of the (cached) set")
    ap.add_argument("--cache", default=None)
    args = ap.parse_args(argv)
    thick = [10.0, 30.0, 60.0]
    d = B.simulate(args.n_sim, thick, cache=args.cache)
    au = bundled_crystal("Au")
    lam = electron_wavelength_A(B.ENERGY)
    H, W = B.SHAPE
    yy, xx = np.indices(B.SHAPE)
    rows = []
    print("| pattern | t (nm) | reflections | Bloch, cone | Bloch, plane wave | kinematic |")
    print("|---|---|---|---|---|---|")
    for i in range(min(args.n, len(d["U"]))):
        for it, t_nm in enumerate(thick):
            t = 10.0 * t_nm
            ref = bloch_intensities(au, d["U"][i], energy_kev=B.ENERGY, thicknesses_A=t, k_max_inv_A=B.K_MAX)
            idx = {tuple(h): j for j, h in enumerate(ref.hkl)}
            acc = np.zeros(len(ref.hkl))
            for R in _tilts(B.CONV):
                p = bloch_intensities(au, R @ d["U"][i], energy_kev=B.ENERGY, thicknesses_A=t, k_max_inv_A=B.K_MAX)
                for j, h in enumerate(p.hkl):
                    if tuple(h) in idx:
                        acc[idx[tuple(h)]] += p.intensity[0, j]
            sel = np.hypot(ref.g_lab[:, 0], ref.g_lab[:, 1]) < 1.45
            sel[0] = False
            g = ref.g_lab[sel]
            meas = np.array(
                [
                    d["patterns"][it, i][
                        (xx - (W // 2 + x / B.PIXEL)) ** 2 + (yy - (H // 2 + y / B.PIXEL)) ** 2 <= 25.0
                    ].sum()
                    for x, y in g[:, :2]
                ]
            )
            F2 = np.abs(au.structure_factors(ref.hkl[sel])) ** 2
            s = -(g[:, 2] + 0.5 * lam * np.sum((ref.hkl[sel] @ au.reciprocal) ** 2, axis=1))
            kin = F2 * np.sinc(s * t) ** 2
            r = (
                _cos_amp(meas, acc[sel]),
                _cos_amp(meas, ref.intensity[0, sel]),
                _cos_amp(meas, kin),
            )
            rows.append(r)
            print(f"| {i} | {t_nm:g} | {int(sel.sum())} | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} |")
    r = np.array(rows)
    print(f"| min over all | | | {r[:, 0].min():.3f} | {r[:, 1].min():.3f} | {r[:, 2].min():.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
