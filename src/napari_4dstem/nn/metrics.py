"""Scores for disk detection against known reflections, and strain against planted truth."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..data.results import BraggPeaks

__all__ = ["match_disks", "score_detection", "strain_rmse"]


def match_disks(pred: np.ndarray, true: np.ndarray, tol_px: float) -> np.ndarray:
    """One-to-one matches (Hungarian, on distance) within ``tol_px``: ``(k, 2)`` index pairs."""
    if len(pred) == 0 or len(true) == 0:
        return np.zeros((0, 2), int)
    d = np.hypot(pred[:, None, 0] - true[None, :, 0], pred[:, None, 1] - true[None, :, 1])
    big = 1e6
    cost = np.where(d <= tol_px, d, big)
    r, c = linear_sum_assignment(cost)
    ok = cost[r, c] < big
    return np.stack([r[ok], c[ok]], axis=1)


def score_detection(pred_lists, true_lists, *, tols=(0.5, 1.0)) -> dict[str, float]:
    """F1 at each tolerance (``f1_0.5px`` ...), and the RMS position error of the 1-px matches.

    ``pred_lists``/``true_lists``: one ``(m, 2)`` array of ``(k_y, k_x)`` per pattern, or a
    BraggPeaks for the predictions. The true lists may hold NaN rows (ignored).
    """
    if isinstance(pred_lists, BraggPeaks):
        bp = pred_lists
        pred_lists = [
            np.stack([bp.qy[a:b], bp.qx[a:b]], 1) for a, b in zip(bp.offsets[:-1], bp.offsets[1:], strict=True)
        ]
    out = {}
    sq, n_sq = 0.0, 0
    for tol in tols:
        tp = fp = fn = 0
        for p, t in zip(pred_lists, true_lists, strict=True):
            t = t[np.all(np.isfinite(t), axis=1)]
            p = p[np.all(np.isfinite(p), axis=1)]
            m = match_disks(p, t, tol)
            tp += len(m)
            fp += len(p) - len(m)
            fn += len(t) - len(m)
            if tol == max(tols) and len(m):
                d = p[m[:, 0]] - t[m[:, 1]]
                sq += float((d**2).sum())
                n_sq += len(m)
        out[f"f1_{tol:g}px"] = 2 * tp / max(2 * tp + fp + fn, 1)
        out[f"recall_{tol:g}px"] = tp / max(tp + fn, 1)
        out[f"precision_{tol:g}px"] = tp / max(tp + fp, 1)
    out["position_rmse_px"] = float(np.sqrt(sq / n_sq)) if n_sq else float("nan")
    return out


def strain_rmse(peaks: BraggPeaks, truth: np.ndarray, *, reference, exclude_reference=False) -> dict:
    """Strain from ``peaks`` (automatic lattice, per-pattern fits, true strain against the
    ``reference`` rectangle) and its RMS error against ``truth (scan_y, scan_x, >=3)``
    (e_xx, e_yy, e_xy). Failed fits count in ``valid_fraction``, not in the RMSE."""
    from ..analysis.bragg.disks import bragg_vector_map, origin_from_peaks
    from ..analysis.bragg.lattice import LatticeError, find_lattice, fit_lattice
    from ..analysis.bragg.strain import StrainError, strain_from_lattice

    try:
        bvm = bragg_vector_map(peaks, origin=origin_from_peaks(peaks))
        fit = fit_lattice(peaks, find_lattice(bvm))
        sm = strain_from_lattice(fit, reference=reference)
    except (LatticeError, StrainError, ValueError) as e:
        return {
            "strain_rmse": float("nan"),
            "e_xx_rmse": float("nan"),
            "valid_fraction": 0.0,
            "error": str(e),
        }
    est = np.stack([sm.channel(c) for c in ("e_xx", "e_yy", "e_xy")], -1)
    err = est - truth[..., :3]
    ok = np.all(np.isfinite(err), axis=-1)
    e = err[ok]
    return {
        "strain_rmse": float(np.sqrt(np.mean(e**2))) if len(e) else float("nan"),
        "e_xx_rmse": float(np.sqrt(np.mean(e[:, 0] ** 2))) if len(e) else float("nan"),
        "e_yy_rmse": float(np.sqrt(np.mean(e[:, 1] ** 2))) if len(e) else float("nan"),
        "e_xy_rmse": float(np.sqrt(np.mean(e[:, 2] ** 2))) if len(e) else float("nan"),
        "valid_fraction": float(ok.mean()),
    }
