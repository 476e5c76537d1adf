"""Automated crystal orientation mapping (ACOM): match measured Bragg peaks to an orientation plan.

Method (docs/acom.md has the derivation and the accuracy figures):

1. *Sparse correlation.* Each measured peak ``(|g|, angle, amplitude sqrt(I))`` is compared with
   the template spots of every zone axis that lie on the same radial shell ``|g|`` (within a
   radial tolerance); each pair votes for the in-plane rotation ``phi = angle_peak -
   angle_spot`` with weight ``amp_peak * amp_spot``, spread over about +-1.5 in-plane steps by
   a smooth kernel. The best ``phi`` per zone, normalised by the template and pattern norms, is
   the correlation (a cosine similarity, 0..1). Work per pattern ~ peaks x spots per shell x
   zones, not zones x in-plane angles x detector pixels: a few hundred microseconds.
2. *Top-N and reliability.* Zone candidates are taken best first, skipping those within
   ``separation_deg`` (symmetry-aware misorientation) of one already taken. The reliability
   index is ``1 - c2 / c1`` with ``c2`` the best candidate more than ``separation_deg`` from the
   best one.
3. *Refinement.* Gauss-Newton on the three rotation angles: measured peaks are paired with
   the predicted reflections (``U g``) nearest to them, and the fit minimises the in-plane
   position residuals together with the amplitude residuals ``sqrt(I_meas) - a |F| exp(-(s /
   w)^2 / 2)`` of every reflection near the Ewald sphere (observed or not, ``a`` a scale fitted in
   closed form). The excitation errors carry the out-of-plane tilt, which the positions cannot
   (they move only to second order in the tilt). The width ``w`` starts four times wider and
   shrinks to the plan's value over the first iterations.
4. *The turn.* Each match's zone partner (the match turned by 180 deg about the low-index zone
   axis it is near) and whether the peaks can tell the two apart (``turn.py``; ``turn_ambiguous``).

Orientation convention: ``U`` maps crystal Cartesian coordinates to the lab frame
``(x = k_x, y = k_y, z = beam direction)``; measured ``g = ((qx - origin_x), (qy - origin_y)) *
pixel size`` in 1/A.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np

from ...data.calibration import Calibration, electron_wavelength_A
from ...data.results import BraggPeaks
from ...engine.jobs import PARTIAL_EVERY_S, Job, PartialMap, Progress, run_job
from ...errors import CalibrationError, DataShapeError, Napari4DSTEMError
from ..crystal.symmetry import misorientation_deg
from .plan import _WIDTH_T, OrientationPlan, _plan_profile, _reflections, _width_as, rotation_z
from .turn import TURN_LINE, _turn_range, turn_arguments

__all__ = [
    "ACOM_DISK_DEFAULTS",
    "ACOMResult",
    "iter_match_orientations",
    "kinematic_bragg_peaks",
    "match_orientations",
    "peaks_to_lab",
]


from .result import ACOMResult

#: Bragg-disk settings for ACOM (``find_bragg_disks`` keywords; CLI and widget use them). A thin
#: crystal at a random orientation has Bragg disks 1e-3-1e-4 of the central beam: the default
#: ``min_relative`` 0.03 keeps one or two and masks most patterns; 3e-4 with the disk
#: significance test keeps ~18 per pattern (multislice benchmark: 77-86 % within 2 deg against
#: 3-14 % with 0.03; docs/acom.md).
ACOM_DISK_DEFAULTS = {"min_relative": 3e-4, "min_significance": 5.0}


# ------------------------------------------------------------------------------------------
# measured peaks in the lab frame
# ------------------------------------------------------------------------------------------
def peaks_to_lab(
    peaks: BraggPeaks,
    *,
    calibration: Calibration | None = None,
    origin_px: tuple[float, float] | None = None,
    k_max_inv_A: float | None = None,
    min_radius_inv_A: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays ``(offsets, g_x, g_y, amplitude)`` of the peaks in 1/A (lab frame).

    The central beam (``|g| < min_radius``), peaks beyond ``k_max`` and non-finite or
    non-positive intensities are removed. Amplitude is ``sqrt(intensity)``.

    Parameters
    ----------
    peaks : BraggPeaks
        Peaks in raw detector pixels.
    calibration : Calibration, optional
        Detector pixel size and origin (default the peaks' own).
    origin_px : (float, float), optional
        Origin ``(k_y, k_x)`` in pixels for every pattern (default the calibration's origin
        map, else its origin).
    k_max_inv_A : float, optional
        Drop peaks beyond this ``|g|`` (1/A).
    min_radius_inv_A : float
        Drop peaks nearer the origin than this (1/A; default 0).

    Returns
    -------
    offsets : ndarray ``(n_patterns + 1,)`` int64
        CSR offsets of each pattern's kept peaks (raster order).
    g_x, g_y : ndarray ``(n_kept,)`` float64
        Lab-frame vectors in 1/A (``g_x`` along k_x).
    amplitude : ndarray ``(n_kept,)`` float64
        ``sqrt(intensity)``.

    Raises
    ------
    CalibrationError
        When the pixel size in 1/A or the origin is unknown.
    """
    cal = calibration or peaks.calibration
    try:
        px = cal.k_pixel_size_in("1/A")
    except CalibrationError as e:
        raise CalibrationError(
            f"ACOM needs the detector pixel size in 1/A (or mrad with the beam energy): {e}"
        ) from None
    n_pos = len(peaks.offsets) - 1
    pos = peaks.position_index()
    if origin_px is not None:
        oy, ox = float(origin_px[0]), float(origin_px[1])
        oy, ox = np.full(len(pos), oy), np.full(len(pos), ox)
    elif cal.origin_map_px is not None and cal.origin_map_px.shape[:2] == peaks.scan_shape:
        om = cal.origin_map_px.reshape(-1, 2)
        oy, ox = om[pos, 0], om[pos, 1]
    elif cal.origin_px is not None:
        oy, ox = np.full(len(pos), cal.origin_px[0]), np.full(len(pos), cal.origin_px[1])
    else:
        raise CalibrationError("ACOM needs the origin (unscattered beam position): calibrate it or pass origin_px")
    gx = (peaks.qx - ox) * px
    gy = (peaks.qy - oy) * px
    r = np.hypot(gx, gy)
    inten = peaks.intensity
    keep = np.isfinite(r) & np.isfinite(inten) & (inten > 0) & (r >= min_radius_inv_A)
    if k_max_inv_A is not None:
        keep &= r <= k_max_inv_A
    counts = np.bincount(pos[keep], minlength=n_pos)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return offsets, gx[keep], gy[keep], np.sqrt(inten[keep])


# ------------------------------------------------------------------------------------------
# numba kernels (nogil: run on a thread pool over pattern ranges)
# ------------------------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _score_range(
    i0,
    i1,
    p_off,
    p_r,
    p_th,
    p_w,
    shell_r,
    t_off,
    sp_th,
    sp_w,
    t_norm,
    n_phi,
    tol_r,
    tol_pos,
    out_z,
    out_phi,
    out_s,
):  # pragma: no cover - numba
    n_z = t_norm.shape[0]
    n_sh = shell_r.shape[0]
    top_k = out_z.shape[1]
    dphi = 2.0 * math.pi / n_phi
    score = np.zeros((n_z, n_phi), np.float32)
    for i in range(i0, i1):
        a, b = p_off[i], p_off[i + 1]
        if b <= a:
            continue
        score[:, :] = 0.0
        pw2 = 0.0
        for p in range(a, b):
            pw2 += p_w[p] * p_w[p]
        for p in range(a, b):
            r = p_r[p]
            hr = tol_r + 0.01 * r
            hb = max(1.5, tol_pos / max(r, 1e-6) / dphi + 1.0)
            f0 = np.searchsorted(shell_r, r - hr)
            f1 = np.searchsorted(shell_r, r + hr)
            for f in range(f0, f1):
                d = (shell_r[f] - r) / hr
                if d * d >= 1.0:
                    continue
                kr = (1.0 - d * d) ** 2 * p_w[p]
                for z in range(n_z):
                    j0 = t_off[z * n_sh + f]
                    j1 = t_off[z * n_sh + f + 1]
                    for j in range(j0, j1):
                        x = (p_th[p] - sp_th[j]) / dphi
                        x = x - n_phi * math.floor(x / n_phi)
                        w = kr * sp_w[j]
                        lo = math.ceil(x - hb)
                        hi = math.floor(x + hb)
                        for bb in range(lo, hi + 1):
                            u = (bb - x) / hb
                            k = 1.0 - u * u
                            bm = bb % n_phi
                            score[z, bm] += w * k * k
        norm_p = math.sqrt(pw2)
        for z in range(n_z):
            m = 0.0
            bi = 0
            for q in range(n_phi):
                if score[z, q] > m:
                    m = score[z, q]
                    bi = q
            val = m / (t_norm[z] * norm_p)
            if val <= out_s[i, top_k - 1]:
                continue
            # sub-bin peak by a parabola through the best bin and its neighbours
            ym, y0, yp = score[z, (bi - 1) % n_phi], m, score[z, (bi + 1) % n_phi]
            den = ym - 2.0 * y0 + yp
            off = 0.5 * (ym - yp) / den if den < 0 else 0.0
            k = top_k - 1
            while k > 0 and out_s[i, k - 1] < val:
                out_s[i, k] = out_s[i, k - 1]
                out_z[i, k] = out_z[i, k - 1]
                out_phi[i, k] = out_phi[i, k - 1]
                k -= 1
            out_s[i, k] = val
            out_z[i, k] = z
            out_phi[i, k] = (bi + off) * dphi


@numba.njit(nogil=True, cache=True)
def _solve3(A, b):  # pragma: no cover - numba
    # Cramer's rule on a symmetric positive 3x3 system
    det = (
        A[0, 0] * (A[1, 1] * A[2, 2] - A[1, 2] * A[2, 1])
        - A[0, 1] * (A[1, 0] * A[2, 2] - A[1, 2] * A[2, 0])
        + A[0, 2] * (A[1, 0] * A[2, 1] - A[1, 1] * A[2, 0])
    )
    x = np.zeros(3)
    if abs(det) < 1e-300:
        return x
    for c in range(3):
        M = A.copy()
        for r in range(3):
            M[r, c] = b[r]
        x[c] = (
            M[0, 0] * (M[1, 1] * M[2, 2] - M[1, 2] * M[2, 1])
            - M[0, 1] * (M[1, 0] * M[2, 2] - M[1, 2] * M[2, 0])
            + M[0, 2] * (M[1, 0] * M[2, 1] - M[1, 1] * M[2, 0])
        ) / det
    return x


@numba.njit(nogil=True, cache=True)
def _rodrigues(w):  # pragma: no cover - numba
    th = math.sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2])
    R = np.eye(3)
    if th < 1e-15:
        return R
    kx, ky, kz = w[0] / th, w[1] / th, w[2] / th
    c, s, t = math.cos(th), math.sin(th), 1.0 - math.cos(th)
    R[0, 0] = c + kx * kx * t
    R[0, 1] = kx * ky * t - kz * s
    R[0, 2] = kx * kz * t + ky * s
    R[1, 0] = ky * kx * t + kz * s
    R[1, 1] = c + ky * ky * t
    R[1, 2] = ky * kz * t - kx * s
    R[2, 0] = kz * kx * t - ky * s
    R[2, 1] = kz * ky * t + kx * s
    R[2, 2] = c + kz * kz * t
    return R


@numba.njit(nogil=True, cache=True)
def _refine_range(
    i0,
    i1,
    p_off,
    p_x,
    p_y,
    p_a,
    U_in,
    ok,
    G,
    Famp,
    g2,
    lam,
    w_exc,
    power,
    k_max,
    tol_pos,
    step_rad,
    n_iter,
    profile,
    s_cut,
    U_out,
    corr,
    n_match,
    rms,
):  # pragma: no cover - numba
    n_g = G.shape[0]
    n_c = U_in.shape[1]
    v = np.empty((n_g, 3))
    s = np.empty(n_g)
    m = np.empty(n_g)
    obs2 = np.zeros(n_g)
    cand = np.empty(n_g, np.int64)
    for i in range(i0, i1):
        a, b = p_off[i], p_off[i + 1]
        amax = 0.0
        for p in range(a, b):
            amax = max(amax, p_a[p])
        assign = np.full(b - a, -1, np.int64)
        for c in range(n_c):
            if not ok[i, c]:
                continue
            U = U_in[i, c].copy()
            for it in range(n_iter + 1):
                final = it == n_iter
                wf = w_exc * max(1.0, 4.0 * 0.5**it)
                slack = step_rad * 0.5**it
                nc = 0
                for g in range(n_g):
                    for k in range(3):
                        v[g, k] = U[k, 0] * G[g, 0] + U[k, 1] * G[g, 1] + U[k, 2] * G[g, 2]
                    s[g] = -(v[g, 2] + 0.5 * lam * g2[g])
                    if abs(s[g]) < s_cut * wf and v[g, 0] ** 2 + v[g, 1] ** 2 <= k_max * k_max:
                        x2 = (s[g] / wf) ** 2
                        if profile == 1:
                            m[g] = Famp[g] * (1.0 + x2) ** (-power)
                        else:
                            m[g] = Famp[g] * math.exp(-power * x2)
                        cand[nc] = g
                        nc += 1
                # pair every peak with the nearest predicted reflection within tolerance
                for p in range(a, b):
                    best, bestd = -1, 1.0
                    for q in range(nc):
                        g = cand[q]
                        tol = tol_pos + slack * math.sqrt(g2[g])
                        d = ((p_x[p] - v[g, 0]) ** 2 + (p_y[p] - v[g, 1]) ** 2) / (tol * tol)
                        if d < bestd:
                            best, bestd = g, d
                    assign[p - a] = best
                    if best >= 0:
                        obs2[best] += p_a[p] * p_a[p]
                # unpaired peaks count in the pattern norm: an orientation that explains only
                # some of the peaks must not score as well as one that explains all
                num, den, oo = 0.0, 0.0, 0.0
                for p in range(a, b):
                    oo += p_a[p] * p_a[p]
                for q in range(nc):
                    g = cand[q]
                    o = math.sqrt(obs2[g])
                    num += o * m[g]
                    den += m[g] * m[g]
                sc = num / den if den > 0 else 0.0
                if final:
                    corr[i, c] = num / math.sqrt(den * oo) if den > 0 and oo > 0 else 0.0
                    nm, e2 = 0, 0.0
                    for p in range(a, b):
                        g = assign[p - a]
                        if g >= 0:
                            nm += 1
                            e2 += (p_x[p] - v[g, 0]) ** 2 + (p_y[p] - v[g, 1]) ** 2
                    n_match[i, c] = nm
                    rms[i, c] = math.sqrt(e2 / nm) if nm > 0 else np.nan
                    for q in range(nc):
                        obs2[cand[q]] = 0.0
                    break
                JTJ = np.zeros((3, 3))
                JTr = np.zeros(3)
                J = np.zeros(3)
                sA = 0.1 * amax if amax > 0 else 1.0
                for q in range(nc):
                    g = cand[q]
                    res = (math.sqrt(obs2[g]) - sc * m[g]) / sA
                    f = -2.0 * power * sc * m[g] * s[g] / (wf * wf) / sA
                    if profile == 1:
                        f /= 1.0 + (s[g] / wf) ** 2
                    J[0], J[1], J[2] = f * v[g, 1], -f * v[g, 0], 0.0
                    for r in range(3):
                        JTr[r] += J[r] * res
                        for t in range(3):
                            JTJ[r, t] += J[r] * J[t]
                    obs2[g] = 0.0
                for p in range(a, b):
                    g = assign[p - a]
                    if g < 0:
                        continue
                    rx = (p_x[p] - v[g, 0]) / tol_pos
                    ry = (p_y[p] - v[g, 1]) / tol_pos
                    Jx = (0.0, -v[g, 2] / tol_pos, v[g, 1] / tol_pos)
                    Jy = (v[g, 2] / tol_pos, 0.0, -v[g, 0] / tol_pos)
                    for r in range(3):
                        JTr[r] += Jx[r] * rx + Jy[r] * ry
                        for t in range(3):
                            JTJ[r, t] += Jx[r] * Jx[t] + Jy[r] * Jy[t]
                for r in range(3):
                    JTJ[r, r] = JTJ[r, r] * 1.001 + 1e-9
                d = _solve3(JTJ, -JTr)
                nd = math.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
                lim = max(0.5 * step_rad, 0.002)
                if nd > lim:
                    for r in range(3):
                        d[r] *= lim / nd
                U = _rodrigues(d) @ U
            U_out[i, c] = U


@numba.njit(nogil=True, cache=True)
def _predict(U, G, Famp, g2, g0, g1, lam, w_exc, profile, s_cut, power, k_max, vx, vy, mm):  # pragma: no cover
    # the reflections G[g0:g1] of orientation U within s_cut widths of the Ewald sphere and k_max
    # in-plane: their lab positions (vx, vy) and model amplitudes mm (Famp under the rocking
    # curve, to the intensity power); returns how many
    nr = 0
    for g in range(g0, g1):
        x = U[0, 0] * G[g, 0] + U[0, 1] * G[g, 1] + U[0, 2] * G[g, 2]
        y = U[1, 0] * G[g, 0] + U[1, 1] * G[g, 1] + U[1, 2] * G[g, 2]
        z = U[2, 0] * G[g, 0] + U[2, 1] * G[g, 1] + U[2, 2] * G[g, 2]
        s = -(z + 0.5 * lam * g2[g])
        if abs(s) < s_cut * w_exc and x * x + y * y <= k_max * k_max:
            x2 = (s / w_exc) ** 2
            vx[nr], vy[nr] = x, y
            if profile == 1:
                mm[nr] = Famp[g] * (1.0 + x2) ** (-power)
            else:
                mm[nr] = Famp[g] * math.exp(-power * x2)
            nr += 1
    return nr


@numba.njit(nogil=True, cache=True)
def _nearest(px, py, vx, vy, nr, tol_pos):  # pragma: no cover - numba
    # the predicted reflection nearest to the peak (px, py) within the position tolerance:
    # (index, squared distance over tol^2), (-1, 1.0) if none
    best, bestd = -1, 1.0
    for j in range(nr):
        d = ((px - vx[j]) ** 2 + (py - vy[j]) ** 2) / (tol_pos * tol_pos)
        if d < bestd:
            best, bestd = j, d
    return best, bestd


@numba.njit(nogil=True, cache=True)
def _paired_cosine(obs, mm, nr, oo):  # pragma: no cover - numba
    # cosine of the measured amplitudes (sqrt of the paired peaks' summed squares, obs; zeroed
    # here for the next use) and the model amplitudes mm, with every peak in the norm oo
    num, den = 0.0, 0.0
    for j in range(nr):
        num += math.sqrt(obs[j]) * mm[j]
        den += mm[j] * mm[j]
        obs[j] = 0.0
    return num / math.sqrt(den * oo) if den > 0 and oo > 0 else 0.0


@numba.njit(nogil=True, cache=True)
def _pair_score_range(
    i0,
    i1,
    p_off,
    p_x,
    p_y,
    p_a,
    U,
    ok,
    cplan,
    distinct,
    G,
    Famp,
    g2,
    r_off,
    lam,
    w_exc,
    profile,
    s_cut,
    power,
    k_max,
    tol_pos,
    out_a,
    out_b,
    out_s,
    out_ca,
    out_cb,
):  # pragma: no cover - numba
    # joint two-grain score of every distinct pair of candidates (docs/acom.md, "Overlapping
    # grains"): each peak is paired with the nearest predicted reflection of either grain (within
    # the position tolerance); each grain's amplitudes get their own fitted scale, so the cosine
    # of the measured and the fitted amplitudes is sqrt(c_a^2 + c_b^2), c_x the share of grain x.
    # Every reflection within s_cut widths counts, observed or not (as in the refinement). Each
    # peak's nearest reflection is found once per candidate; a pair compares the two
    n_p = U.shape[1]
    n_gmax = 0
    for k in range(r_off.shape[0] - 1):
        n_gmax = max(n_gmax, r_off[k + 1] - r_off[k])
    n_pk = 0
    for i in range(i0, i1):
        n_pk = max(n_pk, p_off[i + 1] - p_off[i])
    vx = np.empty((n_p, n_gmax))
    vy = np.empty((n_p, n_gmax))
    mm = np.empty((n_p, n_gmax))
    nr = np.zeros(n_p, np.int64)
    near = np.empty((n_p, n_pk), np.int64)
    neard = np.empty((n_p, n_pk))
    obs = np.zeros((2, n_gmax))
    for i in range(i0, i1):
        a, b = p_off[i], p_off[i + 1]
        out_a[i], out_b[i], out_s[i] = -1, -1, 0.0
        if b <= a:
            continue
        oo = 0.0
        for p in range(a, b):
            oo += p_a[p] * p_a[p]
        for c in range(n_p):
            nr[c] = 0
            if not ok[i, c]:
                continue
            k = cplan[i, c]
            nr[c] = _predict(
                U[i, c],
                G,
                Famp,
                g2,
                r_off[k],
                r_off[k + 1],
                lam,
                w_exc[k],
                profile[k],
                s_cut[k],
                power,
                k_max,
                vx[c],
                vy[c],
                mm[c],
            )
            for p in range(a, b):
                near[c, p - a], neard[c, p - a] = _nearest(p_x[p], p_y[p], vx[c], vy[c], nr[c], tol_pos)
        for ca in range(n_p):
            if nr[ca] == 0:
                continue
            for cb in range(ca + 1, n_p):
                if nr[cb] == 0 or not distinct[i, ca, cb]:
                    continue
                for p in range(b - a):
                    # grain a keeps ties, as when the two grains' reflections are searched in turn
                    if neard[cb, p] < neard[ca, p]:
                        obs[1, near[cb, p]] += p_a[a + p] * p_a[a + p]
                    elif near[ca, p] >= 0:
                        obs[0, near[ca, p]] += p_a[a + p] * p_a[a + p]
                cs0 = _paired_cosine(obs[0], mm[ca], nr[ca], oo)
                cs1 = _paired_cosine(obs[1], mm[cb], nr[cb], oo)
                sc = math.sqrt(cs0**2 + cs1**2)
                if sc > out_s[i]:
                    out_s[i], out_a[i], out_b[i], out_ca[i], out_cb[i] = sc, ca, cb, cs0, cs1


@numba.njit(nogil=True, cache=True)
def _wide_score_range(
    i0, i1, p_off, p_x, p_y, p_a, U, ok, G, Famp, g2, lam, w_exc, profile, s_cut, power, k_max, tol_pos, out
):  # pragma: no cover - numba
    # each refined candidate's cosine of measured and predicted amplitudes under a wider rocking
    # curve (the peaks paired with the nearest reflection within the position tolerance; every
    # reflection within s_cut widths counts, observed or not); docs/acom.md, "Wider ranking"
    n_g = G.shape[0]
    n_c = U.shape[1]
    vx = np.empty(n_g)
    vy = np.empty(n_g)
    mm = np.empty(n_g)
    obs = np.zeros(n_g)
    for i in range(i0, i1):
        a, b = p_off[i], p_off[i + 1]
        oo = 0.0
        for p in range(a, b):
            oo += p_a[p] * p_a[p]
        for c in range(n_c):
            out[i, c] = 0.0
            if not ok[i, c] or b <= a:
                continue
            nr = _predict(U[i, c], G, Famp, g2, 0, n_g, lam, w_exc, profile, s_cut, power, k_max, vx, vy, mm)
            for p in range(a, b):
                best, _d = _nearest(p_x[p], p_y[p], vx, vy, nr, tol_pos)
                if best >= 0:
                    obs[best] += p_a[p] * p_a[p]
            out[i, c] = _paired_cosine(obs, mm, nr, oo)


def _run_ranges(fn, n: int, args: tuple, n_threads: int, chunk: int):
    """Run ``fn(i0, i1, *args)`` over ``range(n)`` in chunks on a thread pool; yields chunk ends."""
    bounds = [(i, min(i + chunk, n)) for i in range(0, n, chunk)]
    if n_threads <= 1 or len(bounds) == 1:
        for i0, i1 in bounds:
            fn(i0, i1, *args)
            yield i1
        return
    ex = ThreadPoolExecutor(n_threads)
    try:
        futs = [ex.submit(fn, i0, i1, *args) for i0, i1 in bounds]
        for f, (_, i1) in zip(futs, bounds, strict=True):
            f.result()
            yield i1
    finally:
        # a job closed early (Cancel) waits for the running chunks only, not for every queued
        # one (it waited for the whole plan's matching)
        ex.shutdown(wait=True, cancel_futures=True)


# patterns per piece of the candidate ranking between two cancel points (~0.05-0.2 s here: at
# 4096 a piece took 0.7-1.1 s on the loaded 2-core machine, 256x256 patterns)
_RANK_ROWS = 1024


def _distinct_best_job(U, score, ok, group, separation_deg, n_keep, progress: Progress):
    """:func:`_distinct_best` in pieces of ``_RANK_ROWS`` patterns, yielding between them.

    Each pattern is ranked on its own; ``progress`` is yielded between pieces: a cancel point
    every ~0.05 s (the whole scan at once held Cancel for 0.4 s at 128x128 patterns).
    """
    n = score.shape[0]
    idx = np.zeros((n, n_keep), np.int64)
    taken = np.zeros((n, n_keep), bool)
    for a in range(0, n, _RANK_ROWS):
        b = min(a + _RANK_ROWS, n)
        idx[a:b], taken[a:b] = _distinct_best(U[a:b], score[a:b], ok[a:b], group, separation_deg, n_keep)
        yield progress
    return idx, taken


def _ranked_candidates_job(plan, out_z, out_phi, out_s, group, separation_deg, n_keep, progress: Progress):
    """The plan candidates of every pattern as orientations, ranked by :func:`_distinct_best`.

    In pieces of ``_RANK_ROWS`` patterns with a cancel point between them: the orientations of
    all candidates at once (``n_pat x n_cand`` 3x3 products) held Cancel for 0.9 s at 128x128
    patterns, and grew with the scan. Returns the kept candidates' orientations, indices and
    which are real, ``(U0 (n, n_keep, 3, 3), idx (n, n_keep), ok (n, n_keep))``.
    """
    n, n_cand = out_s.shape
    idx = np.zeros((n, n_keep), np.int64)
    taken = np.zeros((n, n_keep), bool)
    U0 = np.full((n, n_keep, 3, 3), np.nan)
    for a in range(0, n, _RANK_ROWS):
        b = min(a + _RANK_ROWS, n)
        z = out_z[a:b]
        has = z >= 0
        U = np.full((b - a, n_cand, 3, 3), np.nan)
        U[has] = rotation_z(out_phi[a:b][has]) @ plan.zone_orientations[z[has]]
        idx[a:b], taken[a:b] = _distinct_best(U, out_s[a:b], has, group, separation_deg, n_keep)
        U0[a:b] = U[np.arange(b - a)[:, None], idx[a:b]]
        yield progress
    return U0, idx, taken


def _reliability_job(U0, score, ok, group, separation_deg, n_keep, progress: Progress):
    """Per pattern, the best score of a candidate far from the best one, and that candidate.

    Far: more than ``separation_deg`` (the candidate NaN where there is none). In pieces of
    ``_RANK_ROWS`` patterns with a cancel point between them (each pattern on its own).
    """
    n = U0.shape[0]
    second = np.zeros(n)
    alt = np.full((n, 3, 3), np.nan)  # the candidate that sets the reliability
    for a in range(0, n, _RANK_ROWS):
        b = min(a + _RANK_ROWS, n)
        for k in range(1, n_keep):
            far = misorientation_deg(U0[a:b, 0], U0[a:b, k], group) > separation_deg
            better = ok[a:b, k] & far & (score[a:b, k] > second[a:b])
            second[a:b] = np.where(better, score[a:b, k], second[a:b])
            alt[a:b][better] = U0[a:b][better, k]
        yield progress
    return second, alt


def _distinct_best(U, score, ok, group, separation_deg, n_keep):
    """Per pattern, indices of up to ``n_keep`` distinct candidates, and which of them are real.

    Candidates are taken best first, skipping any within ``separation_deg`` (symmetry-aware) of
    one already taken.

    ``U (n, k, 3, 3)``, ``score (n, k)``, ``ok (n, k)``. Returns ``idx (n, n_keep)`` into the
    candidate axis and ``taken (n, n_keep)``.
    """
    n_pat, n_cand = score.shape
    order = np.argsort(-np.where(ok, score, -np.inf), axis=1, kind="stable")
    rows = np.arange(n_pat)[:, None]
    U, ok = U[rows, order], ok[rows, order]
    taken = np.zeros((n_pat, n_cand), bool)
    taken[:, 0] = ok[:, 0]
    n_taken = taken[:, 0].astype(int)
    for k in range(1, n_cand):
        todo = ok[:, k] & (n_taken < n_keep)
        if not todo.any():
            continue
        far = todo.copy()
        for j in range(k):
            near = taken[:, j] & far
            if near.any():
                mis = misorientation_deg(U[near, j], U[near, k], group)
                far[np.nonzero(near)[0][~(mis > separation_deg)]] = False
        taken[:, k] = far
        n_taken += far
    pick = np.argsort(~taken, axis=1, kind="stable")[:, :n_keep]
    if pick.shape[1] < n_keep:  # fewer candidates than asked for
        pad = np.zeros((n_pat, n_keep - pick.shape[1]), int)
        pick = np.concatenate([pick, pad], axis=1)
        taken = np.concatenate([taken, np.zeros((n_pat, n_keep - n_cand), bool)], axis=1)
    return order[rows, pick], taken[rows, pick]


# ------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------
class _ScanPartial:
    """The map of a per-pattern value over the scan while patterns ``0 .. n_done`` are matched.

    Raster order; a :class:`PartialMap` at most every ``PARTIAL_EVERY_S`` (else None).
    """

    def __init__(self, scan_shape: tuple[int, int]):
        self.shape = tuple(scan_shape)
        self.last = -math.inf

    def __call__(self, name: str, n_done: int, values) -> PartialMap | None:
        now = time.perf_counter()
        if now - self.last < PARTIAL_EVERY_S:
            return None
        n = self.shape[0] * self.shape[1]
        vals = np.zeros(n)
        vals[:n_done] = values(n_done)
        done = np.arange(n) < n_done
        self.last = time.perf_counter()
        return PartialMap.of(name, vals.reshape(self.shape), done.reshape(self.shape))


def _no_partial(name, n_done, values):
    return None


def _match_one_plan(
    plan,
    off,
    gx,
    gy,
    amp,
    *,
    n_cand,
    n_matches,
    separation_deg,
    tol_r,
    tol_pos,
    refine,
    n_refine,
    n_iter,
    k_max,
    n_threads,
    chunk,
    progress_total,
    done0,
    intensity_power=0.5,
    device=None,
    n_flip=0,
    partial=_no_partial,
    rank_width=0.0,
    rank_likelihood=False,
):
    n_pat = len(off) - 1
    template = _powered(plan, intensity_power)
    r = np.hypot(gx, gy)
    th = np.arctan2(gy, gx)
    out_z = np.full((n_pat, n_cand), -1, np.int64)
    out_phi = np.zeros((n_pat, n_cand))
    out_s = np.zeros((n_pat, n_cand))
    args = (
        off,
        r,
        th,
        amp,
        plan.shell_radii,
        plan.template_offsets,
        plan.spot_angle.astype(np.float64),
        template.spot_weight.astype(np.float64),
        template.template_norm,
        plan.n_inplane,
        tol_r,
        tol_pos,
        out_z,
        out_phi,
        out_s,
    )

    def coarse(n):  # best sparse-correlation score of each matched pattern
        return out_s[:n].max(axis=1)

    if device is None:
        chunk_ends = _run_ranges(_score_range, n_pat, args, n_threads, chunk)
    else:
        from ._torch import score_batches_torch

        chunk_ends = score_batches_torch(
            off, r, th, amp, template, out_z, out_phi, out_s, tol_r=tol_r, tol_pos=tol_pos, device=device
        )
    for i1 in chunk_ends:
        yield Progress(
            done0 + i1 // 2,
            progress_total,
            f"matching {plan.crystal.name}",
            partial=partial("matching score", i1, coarse),
        )
    group = plan.crystal.point_group
    n_keep = max(n_matches, n_refine) if refine else n_matches
    U0, idx, ok = yield from _ranked_candidates_job(
        plan,
        out_z,
        out_phi,
        out_s,
        group,
        separation_deg,
        n_keep,
        Progress(done0 + n_pat // 2, progress_total, f"ranking the {plan.crystal.name} candidates"),
    )
    rows = np.arange(n_pat)[:, None]
    score = np.where(ok, out_s[rows, idx], 0.0)
    if refine and n_flip > 0:
        # a turn by 180 deg about the beam keeps every excitation error and mirrors the spot
        # positions through the origin: with Friedel pairs only the Ewald sphere's curvature
        # tells the two apart, so the sparse correlation cannot; refine both and let the
        # excitation errors decide
        nf = min(n_flip, n_keep)
        U0 = np.concatenate([U0, rotation_z(np.pi) @ U0[:, :nf]], axis=1)
        ok = np.concatenate([ok, ok[:, :nf]], axis=1)
        score = np.concatenate([score, score[:, :nf]], axis=1)
        n_keep_all = n_keep + nf
    else:
        n_keep_all = n_keep
    n_match = np.zeros((n_pat, n_keep_all), np.int64)
    rms = np.full((n_pat, n_keep_all), np.nan)
    auto_score = None  # the score intensity_power="auto" reads, where not the reported one
    if refine:
        # cancel points between the whole-scan steps that prepare the refinement (each a few
        # array passes over n_pat x n_keep orientations: together 1.35 s before the first
        # refined chunk at 256x256 patterns on the loaded 2-core machine)
        preparing = Progress(done0 + n_pat // 2, progress_total, f"preparing the {plan.crystal.name} refinement")
        yield preparing
        U0_nan = np.where(ok[..., None, None], U0, np.nan)
        yield preparing
        clean = np.where(ok[..., None, None], U0, 0.0)  # finite where ok: nan_to_num of U0_nan
        yield preparing
        # one set of refinement inputs; the Lorentzian plans refine it twice (below)
        refine_with = functools.partial(
            refine_arguments,
            plan,
            off,
            gx,
            gy,
            amp,
            U0_nan,
            ok,
            intensity_power=intensity_power,
            k_max=k_max,
            tol_pos=tol_pos,
            n_iter=n_iter,
            clean=clean,
        )
        args, (U_out, corr, n_match, rms) = refine_with()
        yield preparing

        def refined(n):  # best refined correlation of each refined pattern
            return np.max(np.where(ok[:n], np.nan_to_num(corr[:n]), 0.0), axis=1)

        twice = _plan_profile(plan) in ("lorentzian", "sinc2")
        ranking = Progress(done0 + n_pat, progress_total, f"ranking the refined {plan.crystal.name} matches")
        share = 4 if twice else 2  # the refinement's half of the progress, in one or two passes
        for i1 in _run_ranges(_refine_range, n_pat, args, n_threads, chunk):
            yield Progress(
                done0 + n_pat // 2 + i1 // share,
                progress_total,
                f"refining {plan.crystal.name}",
                partial=partial("correlation", i1, refined),
            )
        if twice:
            # robust to the rocking-curve shape: refine every candidate under the Gaussian
            # fall-off too and keep, per candidate, the model that explains the peaks better
            args_g, outs_g = refine_with(profile="gaussian")
            yield Progress(
                done0 + n_pat // 2 + n_pat // 4, progress_total, f"refining {plan.crystal.name} (Gaussian fall-off)"
            )
            for i1 in _run_ranges(_refine_range, n_pat, args_g, n_threads, chunk):
                # progress and Cancel between chunks here too (it ran 0.3-0.5 s without either)
                yield Progress(
                    done0 + n_pat // 2 + n_pat // 4 + i1 // 4,
                    progress_total,
                    f"refining {plan.crystal.name} (Gaussian fall-off)",
                )
            better = outs_g[1] > corr
            U_out = np.where(better[..., None, None], outs_g[0], U_out)
            yield ranking
            corr = np.where(better, outs_g[1], corr)
            n_match = np.where(better, outs_g[2], n_match)
            rms = np.where(better, outs_g[3], rms)
        U0, score = U_out, np.where(ok, corr, 0.0)
        # candidates that refined into the same orientation are one answer: keep the best
        order, ok = yield from _distinct_best_job(
            U0,
            score,
            ok,
            group,
            separation_deg,
            n_keep,
            ranking,
        )
        U0, score, n_match, rms = (a[rows, order] for a in (U0, score, n_match, rms))
        score = np.where(ok, score, 0.0)
        if rank_width > 0:
            # rank the refined candidates by the mean of their cosine and the cosine under a wider
            # rocking curve (docs/acom.md, "Wider ranking"): it is their correlation from here on
            wide = yield from _wide_scores_job(
                plan,
                off,
                gx,
                gy,
                amp,
                U0,
                ok,
                width=rank_width,
                intensity_power=intensity_power,
                k_max=k_max,
                tol_pos=tol_pos,
                n_threads=n_threads,
                chunk=chunk,
                progress=ranking,
            )
            wide = (1.0 - _RANK_MIX) * wide + _RANK_MIX * score
            order = np.argsort(-np.where(ok, wide, -np.inf), axis=1, kind="stable")
            U0, n_match, rms, ok, wide = (a[rows, order] for a in (U0, n_match, rms, ok, wide))
            score = np.where(ok, wide, 0.0)
        if rank_likelihood:
            # final ranking by the thin-film likelihood (docs/acom.md, "Likelihood ranking"): it is
            # their correlation from here on; intensity_power="auto" still decides from the score
            # it was made for (the cosine scale of its line), carried along in the new order
            auto_score = score
            lik = yield from _likelihood_job(
                plan,
                off,
                gx,
                gy,
                amp ** (1.0 / intensity_power),
                U0,
                ok,
                k_max=k_max,
                tol_pos=tol_pos,
                n_threads=n_threads,
                chunk=chunk,
                progress=ranking,
            )
            order = np.argsort(-np.where(ok, lik, -np.inf), axis=1, kind="stable")
            U0, n_match, rms, ok, lik, auto_score = (a[rows, order] for a in (U0, n_match, rms, ok, lik, auto_score))
            score = np.where(ok, lik, 0.0)
    # reliability: best score of a candidate that ended more than the separation from the best
    second, alt = yield from _reliability_job(
        U0,
        score,
        ok,
        group,
        separation_deg,
        n_keep,
        Progress(done0 + n_pat, progress_total, f"reliability of the {plan.crystal.name} matches"),
    )
    reliability = np.where(score[:, 0] > 0, 1.0 - second / np.maximum(score[:, 0], 1e-300), 0.0)
    sl = slice(0, n_matches)
    return (
        U0[:, sl],
        score[:, sl],
        ok[:, sl],
        n_match[:, sl],
        rms[:, sl],
        reliability,
        out_s[:, 0],
        alt,
        score[:, sl] if auto_score is None else np.where(ok, auto_score, 0.0)[:, sl],
    )


def _bcast(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``mask (n,)`` shaped to broadcast against ``like (n, ...)``."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


def _explained_peaks(plans, U, ok, phase, off, gx, gy, tol_pos, k_max) -> np.ndarray:
    """Per peak: True when it lies within ``tol_pos`` of a reflection of its pattern's orientation.

    Reflections near the Ewald sphere, as the refinement counts them, of the orientation
    ``U (n, 3, 3)`` of ``plans[phase]``.
    """
    out = np.zeros(len(gx), bool)
    for k, plan in enumerate(plans):
        refl = plan.crystal.reciprocal_points(plan.params["k_max_inv_A"] * 1.05)
        lam = electron_wavelength_A(plan.params["energy_kev"])
        prof = _plan_profile(plan)
        cut = (3.0 if prof == "gaussian" else 30.0 * _WIDTH_T["lorentzian"] / _WIDTH_T[prof]) * plan.params[
            "excitation_width_inv_A"
        ]
        g2 = np.sum(refl.g**2, axis=1)
        for i in np.nonzero(ok & (phase == k))[0]:
            a, b = off[i], off[i + 1]
            if b <= a:
                continue
            v = refl.g @ U[i].T
            s = -(v[:, 2] + 0.5 * lam * g2)
            near = (np.abs(s) < cut) & (np.hypot(v[:, 0], v[:, 1]) <= k_max)
            d2 = (gx[a:b, None] - v[near, 0]) ** 2 + (gy[a:b, None] - v[near, 1]) ** 2
            if d2.shape[1]:
                out[a:b] = d2.min(axis=1) <= tol_pos**2
    return out


#: the joint two-grain score's rocking-curve width, in units of the plan's (its cut at 30 of
#: them): tuned on draw 18 of the thin-film overlaps (1, 3, 6, 12, 30; a cut kept at the plan's
#: 30 widths lost what the wider width gained), checked on draw 307172 (docs/acom.md)
_PAIR_WIDTH = 12.0
#: the refined candidates' rank: this share of the refinement's cosine, the rest the cosine under
#: the ``rank_width`` times wider rocking curve (0.5 chosen on draw 18 over 0 and 0.75: 0, the wide
#: cosine alone, gained more on the thin films and cost 4-10 points on own-model patterns)
_RANK_MIX = 0.5
#: distinct grains each residual pass adds to the pool of the joint pair choice (its best and
#: the runner-up, often the first turned by 180 deg about the beam)
_PAIR_RESIDUALS = 2
#: the joint pair replaces the single-grain answer only where it explains the pattern better than
#: the first pass's best candidate alone: ``score^2 - alone^2`` (the share of the measured
#: amplitudes' norm the second grain adds) at least this (draw 18 of the thin-film sets: single
#: grains median 0, 90th percentile 0.006-0.015; overlaps median 0.017-0.049; 0.02 moved the
#: first match of 2-9 % of single grains and cost the overlaps 0-2 points, docs/acom.md)
_PAIR_GAIN = 0.02
# intensity_power="auto": the power of the ranking, the power of the second refinement of the
# first match, and the median best correlation (of the ranking) at which that refinement runs:
# own-model sets 0.97-0.99, thin films and Gaussian films of other thicknesses 0.68-0.89 on
# draw 18 (docs/acom.md, "Intensity power")
_AUTO_POWERS = (0.25, 0.5)
_AUTO_LINE = 0.95


def _polish_job(
    plans,
    U,
    n_matched,
    rms,
    ok,
    phase,
    off,
    gx,
    gy,
    amp_raw,
    *,
    intensity_power,
    k_max,
    tol_pos,
    n_iter,
    n_threads,
    chunk,
    progress,
):
    """Job: the matches ``U (n, 3, 3)`` of ``plans[phase]`` refined again at ``intensity_power``.

    ``amp_raw`` are the measured intensities. Under the plan's rocking curve and the Gaussian,
    each keeping the better; returns ``(U, n_matched, rms)`` (those given, unchanged, where ``ok``
    is False).
    """
    amp = amp_raw ** (2.0 * intensity_power)
    U_new = np.array(U, dtype=float)
    n_m = np.array(n_matched, copy=True)
    rms = np.array(rms, dtype=float, copy=True)
    for k, plan in enumerate(plans):
        sel = ok & (phase == k)
        if not sel.any():
            continue
        U0 = np.where(sel[:, None, None], U, np.nan)[:, None]
        profiles = [None, "gaussian"] if _plan_profile(plan) in ("lorentzian", "sinc2") else [None]
        best = None
        for prof in profiles:
            args, outs = refine_arguments(
                plan,
                off,
                gx,
                gy,
                amp,
                U0,
                sel[:, None],
                intensity_power=intensity_power,
                k_max=k_max,
                tol_pos=tol_pos,
                n_iter=n_iter,
                profile=prof,
            )
            for _ in _run_ranges(_refine_range, len(U), args, n_threads, chunk):
                yield progress
            if best is None:
                best = outs
            else:
                better = outs[1] > best[1]
                rest = (np.where(better, o, b) for o, b in zip(outs[1:], best[1:], strict=True))
                best = (np.where(better[..., None, None], outs[0], best[0]), *rest)
        U_new[sel] = best[0][sel, 0]
        n_m[sel] = best[2][sel, 0]
        rms[sel] = best[3][sel, 0]
    return U_new, n_m, rms


def _joint_pairs_job(
    plans, U, ok, phase, off, gx, gy, amp, *, tol_pos, k_max, intensity_power, separation, n_threads, chunk, progress
):
    """Job: the best pair of distinct candidates per pattern by the joint two-grain score.

    Yields ``progress`` between chunks of patterns (cancel points).

    ``U (n, P, 3, 3)`` candidates of ``plans[phase (n, P)]`` (``ok (n, P)``); ``amp`` measured
    intensities raised to ``intensity_power``. Returns ``(a, b, score, c_a, c_b)`` per pattern
    (``a = b = -1`` where no pair is possible); ``c_a``, ``c_b`` are the two grains' shares of
    the cosine (``score^2 = c_a^2 + c_b^2``).
    """
    n, n_p = ok.shape
    G, F, g2, r_off, w_exc, prof, s_cut = [], [], [], [0], [], [], []
    for plan in plans:
        g_k, f_k, g2_k, _lam = _reflections(plan, intensity_power)
        G.append(g_k)
        F.append(f_k)
        g2.append(g2_k)
        r_off.append(r_off[-1] + len(g_k))
        w0, prof_k, cut_k = _kernel_profile(plan)
        w_exc.append(_PAIR_WIDTH * w0)
        prof.append(prof_k)
        s_cut.append(cut_k)
    distinct = np.zeros((n, n_p, n_p), bool)
    for a in range(n_p):
        for b in range(a + 1, n_p):
            both = ok[:, a] & ok[:, b]
            d = both & (phase[:, a] != phase[:, b])
            for k, plan in enumerate(plans):
                same = both & (phase[:, a] == k) & (phase[:, b] == k)
                if same.any():
                    mis = misorientation_deg(U[same, a], U[same, b], plan.crystal.point_group)
                    d[np.nonzero(same)[0]] = mis > separation[k]
            distinct[:, a, b] = d
        yield progress  # a cancel point per row of pairs (each a few whole-scan misorientations)
    outs = (np.full(n, -1, np.int64), np.full(n, -1, np.int64), np.zeros(n), np.zeros(n), np.zeros(n))
    args = (
        off,
        gx,
        gy,
        amp,
        np.where(ok[..., None, None], U, 0.0),
        ok,
        np.where(ok, phase, 0).astype(np.int64),
        distinct,
        np.concatenate(G),
        np.concatenate(F),
        np.concatenate(g2),
        np.array(r_off, np.int64),
        electron_wavelength_A(plans[0].params["energy_kev"]),
        np.array(w_exc, float),
        np.array(prof, np.int64),
        np.array(s_cut, float),
        float(intensity_power),
        float(k_max),
        float(tol_pos),
        *outs,
    )
    for _ in _run_ranges(_pair_score_range, n, args, n_threads, chunk):
        yield progress
    return outs


def _wide_scores_job(
    plan, off, gx, gy, amp, U, ok, *, width, intensity_power, k_max, tol_pos, n_threads, chunk, progress
):
    """Job: :func:`_wide_score_range` of candidates ``U (n, k, 3, 3)`` under ``width`` x the plan's width."""
    w0, prof, s_cut = _kernel_profile(plan)
    out = np.zeros(ok.shape)
    args = (
        off,
        gx,
        gy,
        amp,
        np.where(ok[..., None, None], U, 0.0),
        ok,
        *_reflections(plan, intensity_power),
        float(width * w0),
        prof,
        s_cut,
        float(intensity_power),
        float(k_max),
        float(tol_pos),
        out,
    )
    for _ in _run_ranges(_wide_score_range, len(ok), args, n_threads, chunk):
        yield progress
    return out


def _likelihood_job(plan, off, gx, gy, intensity, U, ok, *, k_max, tol_pos, n_threads, chunk, progress):
    """Job: the thin-film likelihood score (:mod:`.likelihood`) of candidates ``U (n, k, 3, 3)``."""
    from . import likelihood as _lik

    G, F2, g2, lam = _reflections(plan, 1.0)
    args, (score, _t) = _lik.likelihood_arguments(
        off, gx, gy, intensity, U, ok, G=G, F2=F2, g2=g2, lam=lam, k_max=k_max, tol_pos=tol_pos
    )
    for _ in _run_ranges(_lik._likelihood_range, len(ok), args, n_threads, chunk):
        yield progress
    return score


def _separation(plan: OrientationPlan, separation_deg: float | None) -> float:
    """Candidates closer than this (degrees) are one answer: ``separation_deg``, or 2.5 plan steps (5 at least)."""
    return separation_deg if separation_deg is not None else max(5.0, 2.5 * plan.params["step_deg"])


def _kernel_profile(plan: OrientationPlan, profile: str | None = None) -> tuple[float, int, float]:
    """The rocking curve the refining kernels use for ``plan``: ``(width 1/A, code, cut in widths)``.

    ``profile`` defaults to the plan's; "sinc2" is refined under its envelope, the Lorentzian of
    the same thickness (code 1, cut at 30 widths); the Gaussian is code 0, cut at 3 widths.
    """
    p = profile or _plan_profile(plan)
    if p == "sinc2":
        p = "lorentzian"
    lorentzian = p == "lorentzian"
    return _width_as(plan, p), 1 if lorentzian else 0, 30.0 if lorentzian else 3.0


def refine_arguments(
    plan, off, gx, gy, amp, U0, ok, *, intensity_power, k_max, tol_pos, n_iter, profile=None, clean=None
) -> tuple[tuple, tuple]:
    """The argument tuple of :func:`_refine_range` (after its pattern range), and its outputs.

    For candidates ``U0 (n, k, 3, 3)`` (NaN where ``ok`` is False) against ``plan``; the
    outputs ``(U_out, corr, n_match, rms)`` are filled in place. ``amp`` are measured
    intensities already raised to ``intensity_power``; ``off/gx/gy`` as from
    :func:`peaks_to_lab`. ``clean`` is ``U0`` with its NaN as 0 when the caller has it (each
    whole-scan pass over ``U0`` takes 0.25-0.35 s at 256x256 patterns).
    """
    n_pat, n_keep = ok.shape
    w_exc, prof, s_cut = _kernel_profile(plan, profile)
    U_out = np.array(U0, dtype=float)
    outs = (
        U_out,
        np.zeros((n_pat, n_keep)),
        np.zeros((n_pat, n_keep), np.int64),
        np.full((n_pat, n_keep), np.nan),
    )
    args = (
        off,
        gx,
        gy,
        amp,
        np.nan_to_num(U0) if clean is None else clean,
        ok,
        *_reflections(plan, intensity_power),
        w_exc,
        intensity_power,
        k_max,
        tol_pos,
        math.radians(plan.params["step_deg"]),
        n_iter,
        prof,
        s_cut,
        *outs,
    )
    return args, outs


def _powered(plan: OrientationPlan, intensity_power: float) -> OrientationPlan:
    """The plan with template weights ``(|F|^2 S(s))^power`` (the plan stores power 1/2)."""
    if intensity_power == 0.5:
        return plan
    w = plan.spot_weight.astype(np.float64) ** (2.0 * intensity_power)
    counts = np.diff(plan.template_offsets).reshape(plan.n_zones, -1).sum(axis=1)
    zone = np.repeat(np.arange(plan.n_zones), counts)
    norm = np.sqrt(np.bincount(zone, w**2, minlength=plan.n_zones))
    norm[counts == 0] = np.inf
    return dataclasses.replace(plan, spot_weight=w.astype(np.float32), template_norm=norm)


def _scoring_device(device: str | None) -> str | None:
    """The torch device of the scoring step, or None for the numba kernels."""
    if device is None:
        from ._torch import auto_device

        return auto_device()
    if device == "numba":
        return None
    from ...engine.devices import torch_device_usable

    return str(device) if torch_device_usable(device, instead="numba on the CPU") else None


def iter_match_orientations(
    peaks: BraggPeaks,
    plans: OrientationPlan | Sequence[OrientationPlan],
    *,
    calibration: Calibration | None = None,
    origin_px: tuple[float, float] | None = None,
    n_matches: int = 1,
    min_peaks: int = 5,
    refine: bool = True,
    n_refine: int = 8,
    n_iter: int = 8,
    position_tolerance_inv_A: float | None = None,
    separation_deg: float | None = None,
    intensity_power: float | str = "auto",
    n_threads: int | None = None,
    device: str | None = None,
    flip_candidates: int = 4,
    overlap: str = "residual",
    pair_candidates: int = 3,
    pair_score: str = "joint",
    pair_pool: int = 8,
    pair_gain: float | None = None,
    rank_width: float = 0.0,
    rank_likelihood: bool = False,
    turn_line: float = TURN_LINE,
) -> Job[ACOMResult]:
    """Job: orientation (and phase) of every pattern from its Bragg peaks.

    Parameters
    ----------
    peaks : BraggPeaks
        Raw detector positions; origin and pixel size from ``calibration`` (default: the
        peaks' own) or ``origin_px``.
    plans : OrientationPlan or sequence of OrientationPlan
        One plan, or several (one per phase: the result has a phase map).
    calibration : Calibration, optional
        Detector pixel size (1/A, or mrad with the energy), origin and energy.
    origin_px : (float, float), optional
        Origin ``(k_y, k_x)`` in detector pixels for every pattern.
    n_matches : int
        Orientations kept per pattern (overlapping grains), best first.
    min_peaks : int
        Patterns with fewer peaks (central beam excluded) are masked (NaN, phase -1).
    refine : bool
        Refine each match to a continuous orientation (else plan-grid orientations).
    n_refine : int
        Distinct plan candidates refined per pattern; the best refined ones are kept.
    n_iter : int
        Gauss-Newton iterations of the refinement (default 8).
    position_tolerance_inv_A : float, optional
        Expected peak-position error in 1/A (default 1.5 detector pixels).
    separation_deg : float, optional
        Minimum misorientation between the top-N matches and for the reliability index
        (default ``max(5, 2.5 * step)``).
    intensity_power : float or "auto"
        Weights are intensities to this power, on both sides: measured peak intensities and
        kinematic template intensities ``|F|^2 S(s)``, in the scoring and in the refinement;
        within (0, 1]. 0.5: amplitudes, most precise on patterns that follow the plan's rocking
        curve. 0.25 compresses the intensities further, which suits thin films (sinc^2 rocking
        curves, other thicknesses) and dynamical patterns better, but quadruples the median error
        on patterns that follow the plan's model (0.14 vs 0.04 deg). ``"auto"`` (default): 0.25,
        and when the median best correlation of the patterns is >= 0.95 (the peaks follow the
        plan's model) the first match is refined again at 0.5 (its correlation and the
        reliability stay those of 0.25); ``params["auto_median_correlation"]`` is the median,
        ``params["polish_power"]`` 0.5 when it ran (else 0).
    n_threads : int, optional
        Threads (default: all cores).
    device : str, optional
        Where the scoring step (plan x pattern correlation) runs: ``None`` (default) a CUDA GPU
        when torch sees one, else the numba CPU kernels; ``"numba"``; or a torch device
        (``"cuda"``, ``"cuda:1"``, ``"cpu"``). ``"cuda"`` without CUDA falls back to numba with
        a RuntimeWarning. Refinement always runs on the CPU.
    flip_candidates : int
        Candidates turned by 180 degrees about the beam also refined per pattern (default 4;
        the two are told apart only by the Ewald sphere's curvature).
    overlap : {"residual", "candidates"}
        With ``n_matches > 1``: match k re-matches the peaks that matches 1..k-1 leave
        unexplained (``"residual"``, distinct grains), or keeps the next-best distinct
        candidates of one match (``"candidates"``).
    pair_candidates : int
        With ``overlap="residual"``: this many of the first pass's distinct candidates are each
        re-matched with the peaks they leave unexplained (default 3; 1: the best candidate and
        its residual, the behaviour before session 8).
    pair_score : {"joint", "share"}
        How the pair of overlapping grains (matches 1 and 2) is chosen. ``"joint"`` (default,
        session 9): among ``pair_pool`` candidates of the first pass and the two best grains of
        each residual, the pair whose predicted reflections, each grain with its own fitted
        scale, explain the measured amplitudes best (the cosine, under a rocking curve 12 times
        the plan's width); the grain with the larger share comes first. ``"share"`` (session 8):
        each of the ``pair_candidates`` with its residual's best grain, the pair whose
        reflections hold the larger share of the pattern's intensity.
    pair_pool : int
        With ``pair_score="joint"``: distinct candidates of the first pass in the pool (default 8).
    pair_gain : float, optional
        With ``pair_score="joint"``: the joint pair replaces the single-grain answer (the first
        pass's best candidate, as with ``n_matches=1``, and the best grain of the peaks it leaves)
        only where ``score^2 - alone^2 >= pair_gain``, ``alone`` the cosine of the best candidate
        by itself under the same rocking curve (default 0.02; ``-1`` or ``-inf``: always, about
        as before session 11, whose first pass ranked more candidates). It decides only whether
        the first match is replaced: matches 2.. are reported either way.
    rank_width : float
        When > 0, the refined candidates are ranked (and the reliability index computed) by the
        mean of the refinement's cosine and the cosine of measured and predicted amplitudes
        under a rocking curve this many times the plan's width, which is then the reported
        ``correlation``. 12 gained 4-7 points within 2 deg on held-out thin films (Au, Fe at
        1e5 e) and cost 3 on the shipped sample (docs/acom.md); default 0: the refinement's
        cosine alone.
    rank_likelihood : bool
        When True, a final ranking of the refined candidates by a thin-film likelihood
        (:mod:`.likelihood`: ``sinc^2`` rocking curves at a fitted thickness and scale, detected
        peaks left unpredicted and predicted reflections above the detection line left undetected
        both count against a candidate), which is then the reported ``correlation`` and the
        reliability's score. Default False (docs/acom.md, "Likelihood ranking").
    turn_line : float
        Each match's *zone partner* (the match turned by 180 deg about the low-index zone axis
        it is near, which the refinement reaches from the match turned about the beam) is
        found, with the difference of the two predicted patterns (0..1; docs/acom.md, "The turn
        about the beam"); a match whose partner's pattern differs by less than this is flagged
        ``turn_ambiguous`` (default 0.1; 0: the partners are not computed).

    Yields
    ------
    Progress
        Per chunk of patterns and plan, with partial maps of the first pass.

    Returns
    -------
    ACOMResult
        The generator's return value: orientations ``(scan_y, scan_x, n_matches, 3, 3)``,
        correlation, phase, reliability and fit residuals.

    Raises
    ------
    Napari4DSTEMError
        When no plan is given or the plans differ in beam energy.
    CalibrationError
        When the energy differs from the plans', or the pixel size or origin is unknown.
    ValueError
        When ``n_matches``, ``intensity_power`` or ``overlap`` is out of range.

    Notes
    -----
    Sparse correlation of each pattern's peaks with every zone-axis template shell by shell,
    votes for the in-plane angle spread by a smooth kernel, the best angle per zone scored by
    the normalised (cosine) correlation; distinct top candidates; Gauss-Newton refinement of
    the three rotation angles on peak positions and excitation-error amplitudes (see the
    module docstring). Work per pattern ~ peaks x spots per shell x zones, on numba threads
    (or torch for the scoring).

    References
    ----------
    .. [1] C. Ophus et al., "Automated crystal orientation mapping in py4DSTEM using sparse
       correlation matching", Microsc. Microanal. 28, 390-403 (2022).
    """
    plans = [plans] if isinstance(plans, OrientationPlan) else list(plans)
    if not plans:
        raise Napari4DSTEMError("give at least one orientation plan")
    if n_matches < 1:
        raise ValueError(f"n_matches must be at least 1, got {n_matches}")
    cal = calibration or peaks.calibration
    e0 = plans[0].params["energy_kev"]
    if any(abs(p.params["energy_kev"] - e0) > 1e-6 for p in plans):
        raise Napari4DSTEMError("all orientation plans must be made for the same beam energy")
    if cal.beam_energy_kev is not None and abs(cal.beam_energy_kev - e0) > 0.5:
        raise CalibrationError(f"the plans are for {e0} keV but the data were taken at {cal.beam_energy_kev} keV")
    px = cal.k_pixel_size_in("1/A") if cal.k_units != "px" else None
    if px is None:
        raise CalibrationError("ACOM needs the detector pixel size in 1/A (or mrad with the beam energy)")
    k_max = min(p.params["k_max_inv_A"] for p in plans)
    min_r = 0.5 * min(p.shell_radii[0] for p in plans)
    off, gx, gy, amp = peaks_to_lab(
        peaks, calibration=cal, origin_px=origin_px, k_max_inv_A=k_max, min_radius_inv_A=min_r
    )
    n_pat = len(off) - 1
    counts = np.diff(off)
    valid = counts >= min_peaks
    # patterns with too few peaks are matched with no peaks at all (masked below)
    keep = np.repeat(valid, counts)
    off_v = np.concatenate([[0], np.cumsum(np.where(valid, counts, 0))]).astype(np.int64)
    auto_power = isinstance(intensity_power, str)
    if auto_power and intensity_power != "auto":
        raise ValueError(f"intensity_power must be 'auto' or within (0, 1], got {intensity_power!r}")
    if not auto_power and not (0.0 < intensity_power <= 1.0):
        raise ValueError(f"intensity_power must be 'auto' or within (0, 1], got {intensity_power}")
    if auto_power:
        intensity_power = _AUTO_POWERS[0]
    gx, gy, amp_raw = gx[keep], gy[keep], amp[keep]
    amp = amp_raw ** (2.0 * intensity_power)
    tol_pos = float(position_tolerance_inv_A or 1.5 * px)
    n_threads = int(n_threads or os.cpu_count() or 1)
    device = _scoring_device(device)
    # chunks of at most 32 patterns (tens of ms): progress, the map so far and Cancel between them
    # (64 took up to 0.44 s a chunk on the loaded 2-core machine at 256x256 patterns)
    chunk = max(16, min(32, n_pat // (4 * n_threads) + 1))
    residual = overlap == "residual" and n_matches > 1 and refine
    if overlap not in ("residual", "candidates"):
        raise ValueError(f"overlap must be 'residual' or 'candidates', got {overlap!r}")
    pair_candidates = max(1, int(pair_candidates))
    n_pass = 1 + pair_candidates + max(0, n_matches - 2) if residual else 1
    total = n_pat * len(plans) * n_pass
    yield Progress(0, total, "peaks in the lab frame")  # a cancel point before the first chunk
    # maps filling in (the first pass only: the others re-match the peaks left unexplained)
    scan_partial = _ScanPartial(peaks.scan_shape)

    def one_pass(off_p, gx_p, gy_p, amp_p, n_m, i_pass, n_m_cand=None):
        per_plan = []
        for k, plan in enumerate(plans):
            sep = _separation(plan, separation_deg)
            n_cand = max(24, 4 * (n_m if n_m_cand is None else n_m_cand), 2 * n_refine)
            res = yield from _match_one_plan(
                plan,
                off_p,
                gx_p,
                gy_p,
                amp_p,
                n_cand=n_cand,
                n_matches=n_m,
                separation_deg=sep,
                tol_r=max(tol_pos, 1.0 * px),
                tol_pos=tol_pos,
                refine=refine,
                n_refine=n_refine,
                n_iter=n_iter,
                k_max=k_max,
                n_threads=n_threads,
                chunk=chunk,
                progress_total=total,
                done0=(i_pass * len(plans) + k) * n_pat,
                intensity_power=intensity_power,
                device=device,
                n_flip=flip_candidates,
                partial=scan_partial if i_pass == 0 else _no_partial,
                rank_width=rank_width,
                rank_likelihood=rank_likelihood,
            )
            per_plan.append(res)
        # merge phases: the best n_m over all plans
        U = np.concatenate([r[0] for r in per_plan], axis=1)
        corr = np.concatenate([r[1] for r in per_plan], axis=1)
        okm = np.concatenate([r[2] for r in per_plan], axis=1)
        nmatch = np.concatenate([r[3] for r in per_plan], axis=1)
        rms = np.concatenate([r[4] for r in per_plan], axis=1)
        phase = np.concatenate([np.full((n_pat, n_m), k) for k in range(len(plans))], axis=1)
        corr = np.where(okm, corr, -1.0)
        order = np.argsort(-corr, axis=1, kind="stable")[:, :n_m]
        rows = np.arange(n_pat)[:, None]
        U, corr, okm, nmatch, rms, phase = (a[rows, order] for a in (U, corr, okm, nmatch, rms, phase))
        rel = np.stack([r[5] for r in per_plan], axis=1)[np.arange(n_pat), phase[:, 0]]
        alt = np.stack([r[7] for r in per_plan], axis=1)[np.arange(n_pat), phase[:, 0]]
        # the score intensity_power="auto" reads (the correlation, but the refinement's under the likelihood ranking)
        auto_corr = np.concatenate([r[8] for r in per_plan], axis=1)[rows, order]
        if len(plans) > 1:
            best = np.stack([np.where(r[2][:, 0], r[1][:, 0], 0.0) for r in per_plan], axis=1)
            srt = np.sort(best, axis=1)
            phase_rel = np.where(srt[:, -1] > 0, 1.0 - srt[:, -2] / np.maximum(srt[:, -1], 1e-300), 0.0)
        else:
            phase_rel = np.ones(n_pat)
        return U, corr, okm, nmatch, rms, phase, rel, phase_rel, alt, auto_corr

    if pair_score not in ("joint", "share"):
        raise ValueError(f"pair_score must be 'joint' or 'share', got {pair_score!r}")
    joint = residual and pair_score == "joint"
    n_first = (max(pair_candidates, int(pair_pool)) if joint else pair_candidates) if residual else 1
    # the first pass of the overlap path scores as many plan candidates as one match would, so that
    # its best candidate is the single-grain answer (kept where no second grain is found)
    U, corr, okm, nmatch, rms, phase, rel, phase_rel, alt, auto_corr = yield from one_pass(
        off_v, gx, gy, amp, n_first if residual else n_matches, 0, 1 if residual else None
    )
    corr_first, ok_first = auto_corr[:, 0].copy(), okm[:, 0].copy()
    if residual:
        # overlapping grains: match k is the best orientation of the peaks that matches
        # 1..k-1 leave unexplained (peaks within the position tolerance of one of their
        # reflections near the Ewald sphere are taken out), so the top-N are distinct grains
        # rather than alternatives for the first one
        pat_of_peak = np.repeat(np.arange(n_pat), np.diff(off_v))
        w2 = amp**2  # each peak's share of the pattern (intensities to 2 x the power, as the scores)
        total_w = np.bincount(pat_of_peak, w2, minlength=n_pat)

        def explained_by(part):
            return _explained_peaks(
                plans, part[0][:, 0], part[2][:, 0] & valid, part[5][:, 0], off_v, gx, gy, tol_pos, k_max
            )

        def residual_pass(explained, earlier, i_pass, n_res=1):
            left = ~explained
            cnt = np.bincount(pat_of_peak[left], minlength=n_pat)
            use = cnt >= 3
            keep_r = left & np.repeat(use, np.diff(off_v))
            off_r = np.concatenate([[0], np.cumsum(np.where(use, cnt, 0))]).astype(np.int64)
            res_k = yield from one_pass(off_r, gx[keep_r], gy[keep_r], amp[keep_r], n_res, i_pass)
            res_k = list(res_k[:6])
            res_k[2] = res_k[2] & use[:, None]
            for prev in earlier:  # a residual that only re-finds an earlier grain is no new grain
                for k, plan in enumerate(plans):
                    sep = _separation(plan, separation_deg)
                    same = (res_k[5][:, 0] == k) & (prev[5][:, 0] == k) & res_k[2][:, 0]
                    if same.any():
                        mis = misorientation_deg(res_k[0][same, 0], prev[0][same, 0], plan.crystal.point_group)
                        idx = np.nonzero(same)[0][~(mis > sep)]
                        res_k[2][idx, 0] = False
            return tuple(res_k)

        def share(explained):
            return np.bincount(pat_of_peak[explained], w2[explained], minlength=n_pat) / np.maximum(total_w, 1e-300)

        # the pair of grains: each of the first pass's n_first distinct candidates with the best
        # grain of the peaks it leaves; the pair that explains most of the pattern wins (a wrong
        # first grain that borrows peaks of both leaves a residual no grain explains), and the
        # grain that explains more of the pattern on its own comes first
        first = [tuple(a[:, c : c + 1] for a in (U, corr, okm, nmatch, rms, phase)) for c in range(n_first)]
        best_share = np.full(n_pat, -1.0)
        pair_a, pair_b = first[0], None
        chosen = np.zeros(n_pat, np.int64)
        exp_pair = np.zeros(len(gx), bool)
        residuals = []
        for c, cand in enumerate(first[:pair_candidates]):
            exp_c = explained_by(cand)
            if joint:  # the residual's runner-up joins the pool too
                res_all = yield from residual_pass(exp_c, [cand], 1 + c, _PAIR_RESIDUALS)
                residuals += [tuple(x[:, j : j + 1] for x in res_all) for j in range(_PAIR_RESIDUALS)]
                res_c = residuals[-_PAIR_RESIDUALS]
            else:
                res_c = yield from residual_pass(exp_c, [cand], 1 + c)
                residuals.append(res_c)
            exp_r = explained_by(res_c)
            sh = share(exp_c | exp_r)
            # the first candidate keeps ties: another must explain 2 % more of the pattern
            better = (sh > best_share + (0.02 if c > 0 else 0.0)) & okm[:, c]
            if c == 0:
                better = np.ones(n_pat, bool)
            chosen[better] = c
            best_share[better] = sh[better]
            swap = better & res_c[2][:, 0] & (share(exp_r) > share(exp_c))
            a_new = tuple(np.where(_bcast(swap, x), y, x) for x, y in zip(cand, res_c, strict=True))
            b_new = tuple(np.where(_bcast(swap, x), x, y) for x, y in zip(cand, res_c, strict=True))
            if pair_b is None:
                pair_a, pair_b = a_new, b_new
            else:
                pair_a = tuple(np.where(_bcast(better, x), y, x) for x, y in zip(pair_a, a_new, strict=True))
                pair_b = tuple(np.where(_bcast(better, x), y, x) for x, y in zip(pair_b, b_new, strict=True))
            pb = np.repeat(better, np.diff(off_v))
            exp_pair = np.where(pb, exp_c | exp_r, exp_pair)
        if joint:
            # the pair that explains the peaks best together: every distinct pair of the first
            # pass's candidates and the residual grains, each grain with its own fitted scale
            pool = first + residuals
            Up, okp, php = (np.concatenate([q[j] for q in pool], axis=1) for j in (0, 2, 5))
            okp = okp & valid[:, None]
            seps = [_separation(p, separation_deg) for p in plans]
            # the scoring settings of the pair choice, the same for the pair and for the first match alone
            pair_kw = dict(
                intensity_power=intensity_power,
                k_max=k_max,
                tol_pos=tol_pos,
                n_threads=n_threads,
                chunk=chunk,
                progress=Progress(total - 1, total, "choosing the pair of overlapping grains"),
            )
            ja, jb, js, jca, jcb = yield from _joint_pairs_job(
                plans, Up, okp, php, off_v, gx, gy, amp, separation=seps, **pair_kw
            )
            # a second grain only where the pair explains the pattern clearly better than the first
            # pass's best candidate alone (under the same wide rocking curve): elsewhere the first
            # match stays the single-grain answer and the second is its residual's best grain
            alone = np.zeros(n_pat)
            for k, plan in enumerate(plans):
                sel_k = okm[:, 0] & valid & (phase[:, 0] == k)
                if sel_k.any():
                    alone_k = yield from _wide_scores_job(
                        plan, off_v, gx, gy, amp, U[:, :1], sel_k[:, None], width=_PAIR_WIDTH, **pair_kw
                    )
                    alone = np.where(sel_k, alone_k[:, 0], alone)
            gain_line = _PAIR_GAIN if pair_gain is None else float(pair_gain)
            if np.isnan(gain_line):
                raise ValueError("pair_gain must be a number (-1 or -inf: always), got nan")
            two = (ja >= 0) & (js**2 - alone**2 >= gain_line)
            one = ~two
            pair_a = tuple(np.where(_bcast(one, x), y, x) for x, y in zip(pair_a, first[0], strict=True))
            pair_b = tuple(np.where(_bcast(one, x), y, x) for x, y in zip(pair_b, residuals[0], strict=True))
            has = two
            lead = np.where(jca >= jcb, ja, jb)
            follow = np.where(jca >= jcb, jb, ja)
            lead, follow = np.where(has, lead, 0), np.where(has, follow, 0)
            rows_ = np.arange(n_pat)
            stacked = [np.concatenate([q[j] for q in pool], axis=1) for j in range(6)]
            ja_t = tuple(x[rows_, lead][:, None] for x in stacked)
            jb_t = tuple(x[rows_, follow][:, None] for x in stacked)
            pair_a = tuple(np.where(_bcast(has, x), y, x) for x, y in zip(pair_a, ja_t, strict=True))
            pair_b = tuple(np.where(_bcast(has, x), y, x) for x, y in zip(pair_b, jb_t, strict=True))
            # a second grain needs 3 peaks the first leaves unexplained, as a residual pass does
            exp_a, exp_b = explained_by(pair_a), explained_by(pair_b)
            left = np.bincount(pat_of_peak[~exp_a], minlength=n_pat) >= 3
            pair_b = list(pair_b)
            pair_b[2] = pair_b[2] & left[:, None]
            pair_b = tuple(pair_b)
            exp_pair = exp_a | (exp_b & np.repeat(left, np.diff(off_v)))
        parts = [pair_a, pair_b]
        explained = exp_pair
        for i_pass in range(2, n_matches):
            res_k = yield from residual_pass(explained, parts, n_first + i_pass - 1)
            parts.append(res_k)
            explained = explained | explained_by(res_k)
        U, corr, okm, nmatch, rms, phase = (np.concatenate([p[j] for p in parts], axis=1) for j in range(6))
    okm &= valid[:, None]
    auto_median, polished = float("nan"), 0.0
    if auto_power and refine:
        # intensity_power="auto" (docs/acom.md, "Intensity power"): when the median best
        # correlation reaches the line, the peaks follow the plan's own rocking curve, and the
        # first match is refined again on amplitudes (0.5: four times more precise on such data);
        # the ranking, correlation and reliability stay those of the robust 0.25
        # the first pass's best correlation (as with one match), whatever the pair choice did
        auto_median = float(np.median(np.where(ok_first, corr_first, 0.0)[valid])) if valid.any() else 0.0
        if auto_median >= _AUTO_LINE:
            U[:, 0], nmatch[:, 0], rms[:, 0] = yield from _polish_job(
                plans,
                U[:, 0],
                nmatch[:, 0],
                rms[:, 0],
                okm[:, 0],
                phase[:, 0],
                off_v,
                gx,
                gy,
                amp_raw,
                intensity_power=_AUTO_POWERS[1],
                k_max=k_max,
                tol_pos=tol_pos,
                n_iter=n_iter,
                n_threads=n_threads,
                chunk=chunk,
                progress=Progress(total - 1, total, "refining the first matches on amplitudes"),
            )
            polished = _AUTO_POWERS[1]
    if len(plans) == 1:
        phase_rel = np.where(valid, 1.0, 0.0)
    # the 180-deg turn of every match (docs/acom.md, "The turn about the beam"): its zone partner
    # and how much the partner's predicted pattern differs; below turn_line the peaks cannot
    # decide between the two (the zero-order Laue zone is the same reflection for reflection)
    turn_P = np.full(U.shape, np.nan)
    turn_D = np.full(okm.shape, np.inf)
    if turn_line > 0:
        for k, plan in enumerate(plans):
            sel = okm & (phase == k)
            if not sel.any():
                continue
            t_args, (P_k, D_k, _a) = turn_arguments(plan, U, sel, k_max_inv_A=k_max, tol_inv_A=tol_pos)
            for _ in _run_ranges(_turn_range, n_pat, t_args, n_threads, chunk):
                yield Progress(total - 1, total, "the turn of each match about its zone")
            turn_P = np.where(sel[..., None, None], P_k, turn_P)
            turn_D = np.where(sel, D_k, turn_D)
    turn_amb = okm & (turn_D < turn_line)
    sy, sx = peaks.scan_shape
    U = np.where(okm[..., None, None], U, np.nan)
    params = {
        "method": "sparse shell/in-plane correlation + Gauss-Newton refinement (positions and excitation errors)",
        "n_matches": n_matches,
        "min_peaks": min_peaks,
        "refine": refine,
        "n_iter": n_iter,
        "position_tolerance_inv_A": tol_pos,
        "intensity_power": "auto" if auto_power else intensity_power,
        "auto_median_correlation": auto_median,
        "polish_power": polished,
        "overlap": overlap if n_matches > 1 else "",
        "pair_candidates": pair_candidates if residual else 0,
        "pair_score": pair_score if residual else "",
        "pair_gain": (_PAIR_GAIN if pair_gain is None else float(pair_gain)) if joint else float("nan"),
        "rank_width": float(rank_width) if refine else 0.0,
        "rank_likelihood": bool(rank_likelihood) and bool(refine),
        "flip_candidates": flip_candidates,
        "turn_line": float(turn_line),
        "rocking_curve": ",".join(_plan_profile(p) for p in plans),
        "k_max_inv_A": k_max,
        "scoring_device": device or "numba",
        "plans_json": json.dumps([p.params for p in plans]),
        "orientation_convention": "U maps crystal Cartesian to lab (x = k_x, y = k_y, z = beam)",
        "euler_convention": "Bunge ZXZ (phi1, Phi, phi2) of g = U^T (lab -> crystal), degrees",
    }
    yield Progress(total, total, "done")
    # which orientation comes next for the first grain's peaks: a turn by 180 deg about the beam
    # (told apart only by the Ewald sphere's curvature) or another one
    has_alt = valid & np.all(np.isfinite(alt), axis=(1, 2)) & okm[:, 0]
    kind = np.zeros(n_pat, np.int8)
    for k, plan in enumerate(plans):
        sel = has_alt & (phase[:, 0] == k)
        if sel.any():
            sep = _separation(plan, separation_deg)
            flip = misorientation_deg(alt[sel], rotation_z(np.pi) @ U[sel, 0], plan.crystal.point_group)
            kind[sel] = np.where(flip <= sep, 1, 2)
    alt = np.where(has_alt[:, None, None], alt, np.nan)
    return ACOMResult(
        orientation=U.reshape(sy, sx, n_matches, 3, 3),
        correlation=np.where(okm, corr, 0.0).reshape(sy, sx, n_matches),
        phase=np.where(okm, phase, -1).reshape(sy, sx, n_matches),
        reliability=np.where(valid, rel, 0.0).reshape(sy, sx),
        phase_reliability=np.where(valid, phase_rel, 0.0).reshape(sy, sx),
        n_peaks=counts.reshape(sy, sx),
        n_matched=np.where(okm, nmatch, 0).reshape(sy, sx, n_matches),
        residual_inv_A=np.where(okm, rms, np.nan).reshape(sy, sx, n_matches),
        crystals=tuple(p.crystal for p in plans),
        calibration=cal,
        params=params,
        alternative=alt.reshape(sy, sx, 3, 3),
        alternative_kind=kind.reshape(sy, sx),
        turn_partner=np.where(okm[..., None, None], turn_P, np.nan).reshape(sy, sx, n_matches, 3, 3),
        turn_difference=np.where(okm, turn_D, np.inf).reshape(sy, sx, n_matches),
        turn_ambiguous=turn_amb.reshape(sy, sx, n_matches),
    )


def match_orientations(peaks: BraggPeaks, plans, *, progress=None, **kwargs: Any) -> ACOMResult:
    """Orientation of every pattern (runs :func:`iter_match_orientations` to the end).

    Parameters
    ----------
    peaks : BraggPeaks
        Peaks in raw detector pixels, calibrated.
    plans : OrientationPlan or sequence of OrientationPlan
        One plan per phase.
    progress : callable, optional
        Called with each :class:`~napari_4dstem.engine.jobs.Progress`.
    **kwargs
        The keyword arguments of :func:`iter_match_orientations`.

    Returns
    -------
    ACOMResult
        As :func:`iter_match_orientations`.

    Raises
    ------
    Napari4DSTEMError, CalibrationError, ValueError
        As :func:`iter_match_orientations`.

    Notes
    -----
    See :func:`iter_match_orientations`.

    References
    ----------
    .. [1] C. Ophus et al., "Automated crystal orientation mapping in py4DSTEM using sparse
       correlation matching", Microsc. Microanal. 28, 390-403 (2022).
    """
    return run_job(iter_match_orientations(peaks, plans, **kwargs), progress)


# ------------------------------------------------------------------------------------------
# synthetic peaks (tests, benchmarks, demos)
# ------------------------------------------------------------------------------------------
def kinematic_bragg_peaks(
    crystal,
    orientations: np.ndarray,
    *,
    scan_shape: tuple[int, int] | None = None,
    energy_kev: float = 300.0,
    k_max_inv_A: float = 1.5,
    thickness_A: float = 100.0,
    k_pixel_size: float = 0.02,
    origin_px: tuple[float, float] = (64.0, 64.0),
    position_noise_px: float = 0.0,
    min_relative_intensity: float = 1e-3,
    rng: np.random.Generator | None = None,
) -> BraggPeaks:
    """BraggPeaks of kinematic patterns of ``crystal`` at ``orientations (n, 3, 3)``.

    Spots ``|F|^2 exp(-(s t)^2)`` above ``min_relative_intensity`` of the strongest ``|F|^2``,
    at raw detector positions (``origin_px`` + g / pixel size), with optional Gaussian position
    noise. The calibration (1/A pixels, origin, energy) is attached.

    Parameters
    ----------
    crystal : Crystal
        The structure.
    orientations : ndarray ``(n, 3, 3)``
        Orientations (crystal -> lab).
    scan_shape : (int, int), optional
        Scan the ``n`` patterns fill in raster order (default ``(1, n)``).
    energy_kev : float
        Beam energy in keV (default 300).
    k_max_inv_A : float
        In-plane reach in 1/A (default 1.5).
    thickness_A : float
        Thickness for the Gaussian shape function, Angstrom (default 100).
    k_pixel_size : float
        Detector pixel size in 1/A (default 0.02).
    origin_px : (float, float)
        Direct-beam position ``(k_y, k_x)`` in pixels (default (64, 64)).
    position_noise_px : float
        Standard deviation of the position noise in pixels (default 0).
    min_relative_intensity : float
        Spots below this fraction of the strongest ``|F|^2`` are dropped (default 1e-3).
    rng : numpy.random.Generator, optional
        Random generator of the noise (default seeded with 0).

    Returns
    -------
    BraggPeaks
        Ragged peaks with intensities ``|F|^2 S(s)`` in Angstrom^2, calibrated.

    Raises
    ------
    DataShapeError
        When the orientations do not fill ``scan_shape``.
    """
    Us = np.asarray(orientations, float).reshape(-1, 3, 3)
    n = len(Us)
    scan_shape = tuple(scan_shape or (1, n))
    if scan_shape[0] * scan_shape[1] != n:
        raise DataShapeError(f"{n} orientations do not fill a scan of {scan_shape}")
    rng = rng or np.random.default_rng(0)
    recs = []
    for U in Us:
        pat = crystal.kinematic_pattern(
            U,
            energy_kev=energy_kev,
            k_max_inv_A=k_max_inv_A,
            thickness_A=thickness_A,
            min_relative_intensity=min_relative_intensity,
        )
        yx = pat.detector_px(origin_px=origin_px, k_pixel_size_inv_A=k_pixel_size)
        if position_noise_px > 0:
            yx = yx + rng.normal(scale=position_noise_px, size=yx.shape)
        recs.append({"qy": yx[:, 0], "qx": yx[:, 1], "intensity": pat.intensity})
    cal = Calibration(k_pixel_size=k_pixel_size, k_units="1/A", beam_energy_kev=energy_kev, origin_px=origin_px)
    return BraggPeaks.from_lists(
        recs,
        scan_shape,
        calibration=cal,
        params={
            "generator": "kinematic_bragg_peaks",
            "crystal": crystal.name,
            "thickness_A": thickness_A,
        },
    )
