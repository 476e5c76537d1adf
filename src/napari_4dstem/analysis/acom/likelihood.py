"""Thin-film likelihood ranking of refined ACOM candidates (issue #18, docs/acom.md "Likelihood ranking").

A final, opt-in re-ranking of the matcher's refined candidates. For a candidate orientation ``U`` every
reflection within ``k_max`` is predicted with the thin-film rocking curve ``|F|^2 sinc^2(t s)``
(``np.sinc`` convention, ``s`` the excitation error), averaged over ``+-h`` in ``t s`` with
``h = t |g| tilt`` (the refined orientation is known to about ``tilt``: at 0.25 deg and 1 1/A the
excitation errors move by 0.004 1/A, beyond a 30 nm film's first zero) plus half the thickness grid's
relative step times ``|t s|`` (0.115 on the default grid), at each film thickness ``t`` of a grid;
per candidate and thickness the scale is fitted. The score compares square-root intensities (Poisson
counts have a constant variance there):

* a detected peak against the summed prediction of the reflections within the position tolerance
  (none: the whole peak is unexplained -- a detected-but-unpredicted spot);
* a reflection with no peak within the tolerance is censored at the pattern's detection line (its
  weakest detected peak): only the part of its predicted amplitude above the line counts against
  it, with ``LIKELIHOOD_ABSENT_WEIGHT`` (a predicted-but-absent spot);

each residual over its expected spread: counting noise (a 5-sigma line: sigma = sqrt(line) / 10 in
square-root units) and a relative model error of the prediction (``LIKELIHOOD_MODEL_ERROR``; plus
``LIKELIHOOD_PHASE_ERROR`` where the average spans a sinc^2 period). The deviance ``D`` (sum of the
squared standardised residuals, each capped at ``LIKELIHOOD_CAP``) at the best thickness is turned into
``score = 1 / (1 + D / n_peaks)`` (1: a perfect fit; higher is better), so the reliability index
``1 - score_2 / score_1`` stays defined. The scale is fitted per candidate and thickness by least
squares on the square-root amplitudes (censored reflections pulling it down). Everything is relative
to the pattern's own line, so the units of the peak list do not matter. Tuned on draw 18 of Au at
1e5 e only (docs/acom.md, "Likelihood ranking").
"""

from __future__ import annotations

import math

import numba
import numpy as np

#: film thicknesses tried per candidate (A); the best one is kept
LIKELIHOOD_THICKNESSES_A = tuple(float(t) for t in np.geomspace(50.0, 600.0, 13))
#: orientation uncertainty of a refined candidate (deg) that smooths sinc^2 (tuned on draw 18)
LIKELIHOOD_TILT_DEG = 0.25
#: weight of a predicted-but-absent reflection's excess over the detection line (tuned on draw 18)
LIKELIHOOD_ABSENT_WEIGHT = 3.0
#: relative error of a predicted intensity (Debye-Waller, scattering factors, thickness grid)
LIKELIHOOD_MODEL_ERROR = 0.3
#: most a single spot can cost (squared standard deviations): a detected peak may be a false
#: detection, a reflection may be out of the model's reach
LIKELIHOOD_CAP = math.inf
#: relative error of a prediction averaged over a whole sinc^2 period (its unknown phase)
LIKELIHOOD_PHASE_ERROR = 0.7
#: the detection line: this times the pattern's weakest detected peak
LIKELIHOOD_LINE_FACTOR = 1.0
#: extra Debye-Waller B (A^2) tried per candidate (intensity x exp(-B |g|^2 / 2))
LIKELIHOOD_EXTRA_B = (0.0,)

# F(u) = int_0^u sinc^2(v) dv on [0, _U_MAX], for the box-averaged rocking curve
_U_MAX = 64.0
_U_STEP = 1.0 / 128.0


def _sinc2_integral_table() -> np.ndarray:
    u = np.arange(0.0, _U_MAX + 2 * _U_STEP, _U_STEP)
    f = np.sinc(u) ** 2
    # trapezoid cumulative integral (the step is 1/128 of sinc's period: error < 1e-6)
    out = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * _U_STEP)])
    return out


_TABLE = _sinc2_integral_table()


@numba.njit(nogil=True, cache=True)
def _sinc2_cum(u, table):  # pragma: no cover - numba
    # int_0^u sinc^2 (odd in u); beyond the table its asymptote 1/2 - 1/(2 pi^2 u)
    sgn = 1.0
    if u < 0:
        u, sgn = -u, -1.0
    if u >= _U_MAX:
        return sgn * (0.5 - 1.0 / (2.0 * math.pi * math.pi * u))
    x = u / _U_STEP
    j = int(x)
    f = x - j
    return sgn * (table[j] * (1.0 - f) + table[j + 1] * f)


@numba.njit(nogil=True, cache=True)
def smoothed_sinc2(x, h, table):  # pragma: no cover - numba
    """``sinc^2`` averaged over ``[x - h, x + h]`` (``h <= 1e-3``: ``sinc^2(x)`` itself)."""
    if h <= 1e-3:
        if x == 0.0:
            return 1.0
        y = math.pi * x
        return (math.sin(y) / y) ** 2
    return (_sinc2_cum(x + h, table) - _sinc2_cum(x - h, table)) / (2.0 * h)


@numba.njit(nogil=True, cache=True)
def _likelihood_range(
    i0,
    i1,
    p_off,
    p_x,
    p_y,
    p_I,
    U,
    ok,
    G,
    F2,
    g2,
    lam,
    k_max,
    tol_pos,
    thick,
    tilt_rad,
    w_abs,
    eps,
    cap,
    phase_err,
    line_factor,
    dbs,
    table,
    out_score,
    out_t,
):  # pragma: no cover - numba
    n_g = G.shape[0]
    n_c = U.shape[1]
    n_t = thick.shape[0]
    n_b = dbs.shape[0]
    # half the relative step of the (geometric) thickness grid: t s is known to within this share
    t_cell = 0.5 * (thick[1] / thick[0] - 1.0) if n_t > 1 else 0.0
    vx = np.empty(n_g)
    vy = np.empty(n_g)
    sg = np.empty(n_g)
    gg = np.empty(n_g)
    f2 = np.empty(n_g)
    b = np.empty(n_g)
    rel = np.empty(n_g)
    covered = np.zeros(n_g, np.bool_)
    n_pk = 1
    for i in range(i0, i1):
        n_pk = max(n_pk, p_off[i + 1] - p_off[i])
    max_near = 8
    near = np.empty((n_pk, max_near), np.int64)
    n_near = np.zeros(n_pk, np.int64)
    pb = np.empty(n_pk)
    for i in range(i0, i1):
        a0, a1 = p_off[i], p_off[i + 1]
        for c in range(n_c):
            out_score[i, c] = 0.0
            out_t[i, c] = np.nan
        if a1 <= a0:
            continue
        oo = 0.0
        line = np.inf
        for p in range(a0, a1):
            oo += p_I[p]
            line = min(line, p_I[p])
        line *= line_factor
        sa = math.sqrt(line)
        var0 = 0.01 * line
        for c in range(n_c):
            if not ok[i, c]:
                continue
            nr = 0
            for g in range(n_g):
                x = U[i, c, 0, 0] * G[g, 0] + U[i, c, 0, 1] * G[g, 1] + U[i, c, 0, 2] * G[g, 2]
                y = U[i, c, 1, 0] * G[g, 0] + U[i, c, 1, 1] * G[g, 1] + U[i, c, 1, 2] * G[g, 2]
                if x * x + y * y > k_max * k_max:
                    continue
                z = U[i, c, 2, 0] * G[g, 0] + U[i, c, 2, 1] * G[g, 1] + U[i, c, 2, 2] * G[g, 2]
                vx[nr], vy[nr] = x, y
                sg[nr] = -(z + 0.5 * lam * g2[g])
                gg[nr] = math.sqrt(g2[g])
                f2[nr] = F2[g]
                covered[nr] = False
                nr += 1
            # the reflections within the position tolerance of each peak (independent of the thickness)
            for p in range(a0, a1):
                k = 0
                for j in range(nr):
                    d2 = (p_x[p] - vx[j]) ** 2 + (p_y[p] - vy[j]) ** 2
                    if d2 < tol_pos * tol_pos and k < max_near:
                        near[p - a0, k] = j
                        covered[j] = True
                        k += 1
                n_near[p - a0] = k
            best, best_t = -np.inf, np.nan
            for it in range(n_t * n_b):
                t = thick[it // n_b]
                db = dbs[it % n_b]
                for j in range(nr):
                    h = t * gg[j] * tilt_rad + t_cell * abs(t * sg[j])
                    b[j] = math.sqrt(f2[j] * smoothed_sinc2(t * sg[j], h, table) * math.exp(-0.5 * db * gg[j] ** 2))
                    # relative error of the prediction: the model's, and where the average spans
                    # a good part of a sinc^2 period, the unknown phase within it
                    rel[j] = 0.25 * (eps * eps + phase_err * phase_err * min(1.0, 2.0 * h) ** 2)
                num, den = 0.0, 0.0
                for p in range(a0, a1):
                    q = 0.0
                    for k in range(n_near[p - a0]):
                        q += b[near[p - a0, k]] ** 2
                    pb[p - a0] = math.sqrt(q)
                    num += math.sqrt(p_I[p]) * pb[p - a0]
                    den += q
                sk = num / den if den > 0 else 0.0
                # censored reflections pull the scale down where they would rise above the line
                for _rep in range(4):
                    num2, den2 = num, den
                    for j in range(nr):
                        if covered[j]:
                            continue
                        num2 += min(sk * b[j], sa) * b[j] * w_abs
                        den2 += b[j] * b[j] * w_abs
                    sk = num2 / den2 if den2 > 0 else 0.0
                # each residual over its expected spread: counting noise (a 5-sigma line: sqrt-space
                # sigma line/10) and a relative model error eps of the predicted intensity
                dev = 0.0
                for p in range(a0, a1):
                    mu = sk * pb[p - a0]
                    vm = 0.0
                    for k in range(n_near[p - a0]):
                        j = near[p - a0, k]
                        vm += rel[j] * (sk * b[j]) ** 2
                    r2 = (math.sqrt(p_I[p]) - mu) ** 2 / (var0 + vm)
                    dev += min(r2, cap)
                for j in range(nr):
                    if not covered[j]:
                        mu = sk * b[j]
                        e = mu - sa
                        if e > 0:
                            r2 = e * e / (var0 + rel[j] * mu * mu)
                            dev += w_abs * min(r2, cap)
                sc = 1.0 / (1.0 + dev / (a1 - a0))
                if sc > best:
                    best, best_t = sc, t
            out_score[i, c] = max(best, 0.0)
            out_t[i, c] = best_t


def likelihood_arguments(
    off,
    gx,
    gy,
    intensity,
    U,
    ok,
    *,
    G,
    F2,
    g2,
    lam,
    k_max,
    tol_pos,
    thicknesses_A=None,
    tilt_deg=None,
    absent_weight=None,
    model_error=None,
    cap=None,
    line_factor=None,
    extra_b=None,
    phase_error=None,
):
    """The argument tuple of :func:`_likelihood_range` (after its pattern range) and its outputs.

    The tunables default to this module's ``LIKELIHOOD_*`` values as they are at call time.
    """
    n, k = ok.shape
    score = np.zeros((n, k))
    t_best = np.full((n, k), np.nan)
    args = (
        np.asarray(off, np.int64),
        np.asarray(gx, float),
        np.asarray(gy, float),
        np.asarray(intensity, float),
        np.where(np.asarray(ok)[..., None, None], U, 0.0).astype(float),
        np.asarray(ok, bool),
        np.asarray(G, float),
        np.asarray(F2, float),
        np.asarray(g2, float),
        float(lam),
        float(k_max),
        float(tol_pos),
        np.asarray(LIKELIHOOD_THICKNESSES_A if thicknesses_A is None else thicknesses_A, float),
        math.radians(LIKELIHOOD_TILT_DEG if tilt_deg is None else tilt_deg),
        float(LIKELIHOOD_ABSENT_WEIGHT if absent_weight is None else absent_weight),
        float(LIKELIHOOD_MODEL_ERROR if model_error is None else model_error),
        float(LIKELIHOOD_CAP if cap is None else cap),
        float(LIKELIHOOD_PHASE_ERROR if phase_error is None else phase_error),
        float(LIKELIHOOD_LINE_FACTOR if line_factor is None else line_factor),
        np.asarray(LIKELIHOOD_EXTRA_B if extra_b is None else extra_b, float),
        _TABLE,
        score,
        t_best,
    )
    return args, (score, t_best)


def likelihood_scores(off, gx, gy, intensity, U, ok, **model):
    """Thin-film likelihood score (and best thickness, A) of candidates ``U (n, k, 3, 3)`` where ``ok``.

    ``off, gx, gy`` as from :func:`~napari_4dstem.analysis.acom.matching.peaks_to_lab`, ``intensity``
    the peaks' intensities (not amplitudes); ``G (m, 3)`` the reflections in the crystal frame (1/A),
    ``F2`` their ``|F|^2``, ``g2`` their ``|g|^2``, ``lam`` the wavelength (A); ``model``: the
    keywords of :func:`likelihood_arguments` (``G, F2, g2, lam, k_max, tol_pos`` and the tunables).
    Returns ``(score (n, k), thickness_A (n, k))``; the thickness is a nuisance parameter, not a
    measurement (it comes out within a few grid steps of a planted film's).
    """
    args, outs = likelihood_arguments(off, gx, gy, intensity, U, ok, **model)
    _likelihood_range(0, ok.shape[0], *args)
    return outs
