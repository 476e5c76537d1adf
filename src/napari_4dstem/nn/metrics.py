"""Scores for disk detection against known reflections, and strain against planted truth."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..data.results import BraggPeaks

__all__ = ["lattice_error", "match_disks", "score_detection", "strain_rmse"]


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


def _peaks_from_centres(centres, like: BraggPeaks) -> BraggPeaks:
    """True disk centres ``(n_pos, m, 2)`` (NaN rows: none) as BraggPeaks like ``like``; the
    disk nearest the detector centre is the "strongest" (the origin of the indexing)."""
    shape = like.params.get("detector_shape")
    mid = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2]) if shape is not None else np.zeros(2)
    c = np.asarray(centres, dtype=np.float64).reshape(len(centres), -1, 2)
    ok = np.all(np.isfinite(c), axis=2)  # (n_pos, m); row-major: the rows of each position in order
    off = np.concatenate([[0], np.cumsum(ok.sum(axis=1))]).astype(np.int64)
    yx = c[ok]
    w = 1.0 / (1.0 + np.hypot(yx[:, 0] - mid[0], yx[:, 1] - mid[1]))
    return BraggPeaks(
        like.scan_shape, off, yx[:, 0], yx[:, 1], w, np.full(len(yx), np.nan),
        calibration=like.calibration, params=dict(like.params),
    )  # fmt: skip


def lattice_error(fit, true_peaks: BraggPeaks) -> dict:
    """The error of per-pattern lattice vectors ``fit`` (a LatticeFit) against the exact ones
    (``true_peaks``, the true disk centres of the same patterns, fitted with the same basis,
    equal weights, every disk), split into the part **common** to all patterns (a bias of the
    detector path that a strain reference from the same scan subtracts) and the
    **pattern-to-pattern scatter** around it (what the strain map shows). Pixels:
    ``g_rmse_px`` (all), ``g_common_px`` (the rms of the mean error of g1 and g2),
    ``g_scatter_px`` (the rms deviation from it, per vector)."""
    from ..analysis.bragg.lattice import fit_lattice

    tf = fit_lattice(true_peaks, fit.lattice, weights="uniform", outlier_sigma=np.inf)
    g = np.concatenate([fit.g1, fit.g2], -1).reshape(-1, 2, 2)
    gt = np.concatenate([tf.g1, tf.g2], -1).reshape(-1, 2, 2)
    e = g - gt
    e = e[np.all(np.isfinite(e), axis=(1, 2))]
    if not len(e):
        return {"g_rmse_px": float("nan"), "g_common_px": float("nan"), "g_scatter_px": float("nan")}
    common = e.mean(0)
    return {
        "g_rmse_px": float(np.sqrt(np.mean(np.sum(e**2, -1)))),
        "g_common_px": float(np.sqrt(np.mean(np.sum(common**2, -1)))),
        "g_scatter_px": float(np.sqrt(np.mean(np.sum((e - common) ** 2, -1)))),
    }


def strain_rmse(
    peaks: BraggPeaks, truth: np.ndarray, *, reference, exclude_reference=False, centres=None, weights="auto"
) -> dict:
    """Strain from ``peaks`` (automatic lattice, per-pattern fits with ``weights`` as
    :func:`~napari_4dstem.analysis.bragg.lattice.fit_lattice`, true strain against the
    ``reference`` rectangle) and its RMS error against ``truth (scan_y, scan_x, >=3)``
    (e_xx, e_yy, e_xy). Failed fits count in ``valid_fraction``, not in the RMSE. With the true
    disk ``centres`` ``(n_pos, m, 2)`` also the lattice-vector error (:func:`lattice_error`)."""
    from ..analysis.bragg.disks import bragg_vector_map, origin_from_peaks
    from ..analysis.bragg.lattice import LatticeError, find_lattice, fit_lattice
    from ..analysis.bragg.strain import StrainError, strain_from_lattice

    try:
        bvm = bragg_vector_map(peaks, origin=origin_from_peaks(peaks))
        fit = fit_lattice(peaks, find_lattice(bvm), weights=weights)
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
    extra = {}
    if centres is not None:
        extra = lattice_error(fit, _peaks_from_centres(centres, peaks))
    return {
        **extra,
        "strain_rmse": float(np.sqrt(np.mean(e**2))) if len(e) else float("nan"),
        "e_xx_rmse": float(np.sqrt(np.mean(e[:, 0] ** 2))) if len(e) else float("nan"),
        "e_yy_rmse": float(np.sqrt(np.mean(e[:, 1] ** 2))) if len(e) else float("nan"),
        "e_xy_rmse": float(np.sqrt(np.mean(e[:, 2] ** 2))) if len(e) else float("nan"),
        "valid_fraction": float(ok.mean()),
    }
