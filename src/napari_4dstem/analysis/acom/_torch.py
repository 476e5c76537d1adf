"""The ACOM scoring step (plan x pattern sparse correlation) in PyTorch, for a GPU.

Same arithmetic as the numba kernel ``acom._score_range``: every (peak, template spot) pair on a
common radial shell votes for the in-plane angle ``angle_peak - angle_spot`` with the same radial
and angular kernels; here all pairs of a batch of patterns are expanded at once and summed into a
``(batch, zones, in-plane angles)`` score with ``index_add_``. Used when ``device`` is a torch
device (``"cuda"``; ``"cpu"`` for tests). torch is imported by the caller only.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["auto_device", "score_batches_torch"]


def auto_device() -> str | None:
    """``"cuda"`` when torch sees a GPU, else None (the numba path).

    torch is imported only when an NVIDIA driver is present (or torch is already loaded), so a
    CPU-only run does not pay for the import.
    """
    import os
    import shutil
    import sys

    if "torch" not in sys.modules and not (os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi")):
        return None
    try:
        import torch
    except ImportError:
        return None
    return "cuda" if torch.cuda.is_available() else None


def _plan_tensors(plan, device):
    """Spots re-ordered by shell (then zone), as tensors on ``device``."""
    import torch

    n_sh = len(plan.shell_radii)
    counts = np.diff(plan.template_offsets)
    zf = np.repeat(np.arange(len(counts)), counts)
    shell, zone = zf % n_sh, zf // n_sh
    order = np.argsort(shell, kind="stable")  # spots are stored by zone then shell
    shell_count = np.bincount(shell, minlength=n_sh)
    shell_start = np.concatenate([[0], np.cumsum(shell_count)[:-1]])
    t = {
        "zone": torch.as_tensor(zone[order], device=device),
        "th": torch.as_tensor(plan.spot_angle[order].astype(np.float64), device=device),
        "w": torch.as_tensor(plan.spot_weight[order].astype(np.float32), device=device),
        "t_norm": torch.as_tensor(plan.template_norm.astype(np.float32), device=device),
    }
    return t, shell_count, shell_start


def _peak_shells(r, shell_r, tol_r):
    """Per peak: the shell window ``[f0, f1)`` of the numba kernel."""
    hr = tol_r + 0.01 * r
    return hr, np.searchsorted(shell_r, r - hr), np.searchsorted(shell_r, r + hr)


def score_batches_torch(
    off,
    r,
    th,
    w,
    plan,
    out_z,
    out_phi,
    out_s,
    *,
    tol_r: float,
    tol_pos: float,
    device,
    max_elements: int | None = None,
):
    """Score patterns against ``plan`` on a torch ``device``; yields ``i1`` after each batch.

    Fills ``out_z, out_phi, out_s (n_patterns, top_k)`` for patterns ``< i1`` as
    ``acom._score_range`` does (zone index or -1, in-plane angle in radians, score, best first).
    """
    import torch

    device = torch.device(device)
    n_pat = len(off) - 1
    n_z, n_phi = plan.n_zones, plan.n_inplane
    dphi = 2.0 * math.pi / n_phi
    shell_r = plan.shell_radii
    pt, shell_count, shell_start = _plan_tensors(plan, device)
    if max_elements is None:
        max_elements = 2**25 if device.type == "cuda" else 2**22
    # votes per pattern (pairs x angular bins), to cut the scan into batches of bounded memory
    hr, f0, f1 = _peak_shells(r, shell_r, tol_r)
    cum = np.concatenate([[0], np.cumsum(shell_count)])
    pairs = cum[f1] - cum[f0]
    hb = np.maximum(1.5, tol_pos / np.maximum(r, 1e-6) / dphi + 1.0)
    n_bins = 2 * int(np.ceil(hb.max())) + 2 if len(hb) else 2
    pat_of_peak = np.repeat(np.arange(n_pat), np.diff(off))
    per_pat = np.bincount(pat_of_peak, pairs * n_bins, minlength=n_pat)
    per_pat += n_z * n_phi  # the score array itself
    k = min(out_z.shape[1], n_z)
    shell_r_t = torch.as_tensor(shell_r, device=device)
    sc_t = torch.as_tensor(shell_count, device=device)
    ss_t = torch.as_tensor(shell_start, device=device)
    offs_t = torch.arange(n_bins, device=device) - (n_bins // 2 - 1)
    i0 = 0
    while i0 < n_pat:
        csum = np.cumsum(per_pat[i0:])
        i1 = i0 + max(1, int(np.searchsorted(csum, max_elements, side="right")))
        a, b = off[i0], off[i1]
        B = i1 - i0
        pat = torch.as_tensor(pat_of_peak[a:b] - i0, device=device)
        pr = torch.as_tensor(r[a:b], device=device)
        pth = torch.as_tensor(th[a:b], device=device)
        pw = torch.as_tensor(w[a:b], device=device)
        norm_p = torch.zeros(B, dtype=torch.float64, device=device).index_add_(0, pat, pw * pw)
        norm_p = norm_p.sqrt()
        # (peak, shell) pairs within the radial window, with the radial kernel
        pf0 = torch.as_tensor(f0[a:b], device=device)
        nf = torch.as_tensor(f1[a:b] - f0[a:b], device=device)
        pk = torch.repeat_interleave(torch.arange(b - a, device=device), nf)
        first = torch.cumsum(nf, 0) - nf
        f = pf0[pk] + torch.arange(len(pk), device=device) - first[pk]
        phr = torch.as_tensor(hr[a:b], device=device)[pk]
        d = (shell_r_t[f] - pr[pk]) / phr
        sel = d * d < 1.0
        pk, f, d = pk[sel], f[sel], d[sel]
        kr = (1.0 - d * d) ** 2 * pw[pk]
        # expand to every spot of the shell
        ns = sc_t[f]
        q = torch.repeat_interleave(torch.arange(len(pk), device=device), ns)
        firstq = torch.cumsum(ns, 0) - ns
        spot = ss_t[f][q] + torch.arange(len(q), device=device) - firstq[q]
        qk = pk[q]
        x = (pth[qk] - pt["th"][spot]) / dphi
        x = x - n_phi * torch.floor(x / n_phi)
        wgt = (kr[q] * pt["w"][spot]).to(torch.float32)
        phb = torch.as_tensor(hb[a:b], device=device)[qk]
        bb = torch.floor(x)[:, None] + offs_t[None, :]
        u = (bb - x[:, None]) / phb[:, None]
        kern = torch.clamp(1.0 - u * u, min=0.0) ** 2
        base = (pat[qk] * n_z + pt["zone"][spot]) * n_phi
        idx = base[:, None] + torch.remainder(bb.long(), n_phi)
        score = torch.zeros(B * n_z * n_phi, dtype=torch.float32, device=device)
        score.index_add_(0, idx.reshape(-1), (wgt[:, None] * kern.to(torch.float32)).reshape(-1))
        score = score.view(B, n_z, n_phi)
        m, bi = score.max(dim=2)
        denom = pt["t_norm"][None, :].double() * norm_p[:, None]
        val = torch.where(denom > 0, m.double() / denom, torch.zeros_like(denom))
        val = torch.nan_to_num(val, nan=0.0)
        vals, zs = torch.topk(val, k, dim=1)
        bz = bi.gather(1, zs)
        sz = score.gather(1, zs[..., None].expand(-1, -1, n_phi))
        y0 = sz.gather(2, bz[..., None])[..., 0].double()
        ym = sz.gather(2, torch.remainder(bz - 1, n_phi)[..., None])[..., 0].double()
        yp = sz.gather(2, torch.remainder(bz + 1, n_phi)[..., None])[..., 0].double()
        den = ym - 2.0 * y0 + yp
        offp = torch.where(den < 0, 0.5 * (ym - yp) / torch.where(den < 0, den, -1.0), 0.0)
        good = vals > 0
        out_s[i0:i1, :k] = torch.where(good, vals, 0.0).cpu().numpy()
        out_z[i0:i1, :k] = torch.where(good, zs, -1).cpu().numpy()
        out_phi[i0:i1, :k] = torch.where(good, (bz + offp) * dphi, 0.0).cpu().numpy()
        del score, sz
        i0 = i1
        yield i1
