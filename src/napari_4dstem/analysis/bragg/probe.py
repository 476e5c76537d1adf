"""Probe templates for Bragg disk detection: the correlation kernel and the disk model.

A :class:`ProbeTemplate` holds two things made from one probe image:

- ``kernel``: the image the patterns are cross-correlated with (centred on pixel ``(0, 0)``,
  wrapped around, ready for FFT correlation). Kinds:

  * ``"plain"``: the background-subtracted probe, normalised to sum 1. The matched filter of
    a disk on a flat background; the default.
  * ``"gaussian"``: the plain kernel minus a Gaussian of the same sum (``sigma_px``, default
    1.5 disk radii). Sums to zero, so a slowly varying background does not shift or raise the
    correlation; useful on thick samples with strong diffuse scattering.
  * ``"ring"``: a synthetic sigmoid-edged disk of the measured radius minus a sigmoid ring just
    outside it (width ``ring_width_px``, default half the radius), zero sum. Sharpens the
    correlation peak of disks with structured interiors (dynamical contrast).

- ``profile``: the radial profile of the disk, ``T(r)`` (1 on the plateau, 0 outside), tabulated
  on a fine grid from the azimuthal average of the probe around its measured sub-pixel centre.
  The sub-pixel refinement ``"fit"`` (see :mod:`.peaks`) fits ``b + A T(|k - s|)`` to each disk.

The probe comes from a vacuum measurement (:func:`make_template`; array or
:class:`~napari_4dstem.data.results.DiffractionImage`), or from the bright-field disk of the
mean pattern (:func:`template_from_bf_disk`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ..._docstrings import cite
from ...data.results import DiffractionImage
from ...errors import DataShapeError
from ..virtual.origin import find_bf_disk, fit_soft_disk

__all__ = ["KERNEL_KINDS", "ProbeTemplate", "make_template", "template_from_bf_disk"]

KERNEL_KINDS = ("plain", "gaussian", "ring")
PROFILE_STEP_PX = 0.02


@dataclass(frozen=True, eq=False)
class ProbeTemplate:
    """A correlation kernel and a radial disk model made from one probe image.

    Attributes
    ----------
    kernel : ndarray ``(k_y, k_x)`` float64
        Correlation kernel centred on pixel ``(0, 0)`` (wrapped), same shape as the probe.
    probe : ndarray ``(k_y, k_x)`` float64
        The background-subtracted probe shifted to the centre ``(k_y // 2, k_x // 2)``,
        normalised to a plateau of 1 (for display).
    profile : ndarray float64
        Disk profile ``T(r)`` at ``r = i * profile_step_px``, 1 inside, 0 beyond
        ``support_px``.
    profile_step_px : float
    radius_px : float
        Radius of the disk (where the profile falls to one half).
    edge_px : float
        Width of its edge (10 %-90 % fall divided by 4.39, the logistic-edge scale).
    support_px : float
        Radius beyond which the kernel and the profile are zero.
    kind : str
        ``"plain"``, ``"gaussian"`` or ``"ring"``.
    params : dict
        How the template was made.
    """

    kernel: np.ndarray
    probe: np.ndarray
    profile: np.ndarray
    profile_step_px: float
    radius_px: float
    edge_px: float
    support_px: float
    kind: str
    params: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape ``(k_y, k_x)`` of the kernel."""
        return tuple(self.kernel.shape)

    def kernel_for(self, shape: tuple[int, int]) -> np.ndarray:
        """The kernel for patterns of ``shape``: cropped or zero-padded around ``(0, 0)``.

        Parameters
        ----------
        shape : (int, int)
            Detector shape ``(k_y, k_x)`` of the patterns, in pixels.

        Returns
        -------
        ndarray ``shape`` float64
            The kernel, still centred on pixel ``(0, 0)`` with wrap-around.

        Raises
        ------
        DataShapeError
            When the kernel's support does not fit the patterns.
        """
        shape = (int(shape[0]), int(shape[1]))
        if shape == self.shape:
            return self.kernel
        need = 2 * math.ceil(self.support_px) + 3
        if min(shape) < need:
            raise DataShapeError(
                f"the probe template (disk radius {self.radius_px:.1f} px, support "
                f"{self.support_px:.1f} px) is larger than the patterns {shape}: crop less, or "
                "use a smaller probe"
            )
        centred = np.fft.fftshift(self.kernel)
        cy, cx = self.kernel.shape[0] // 2, self.kernel.shape[1] // 2
        h = math.ceil(self.support_px) + 1
        out = np.zeros(shape)
        oy, ox = shape[0] // 2, shape[1] // 2
        out[oy - h : oy + h + 1, ox - h : ox + h + 1] = centred[cy - h : cy + h + 1, cx - h : cx + h + 1]
        return np.fft.ifftshift(out)

    def to_image(self, calibration=None) -> DiffractionImage:
        """The centred kernel as a DiffractionImage (for display).

        Parameters
        ----------
        calibration : Calibration, optional
            Calibration of the image; none by default.

        Returns
        -------
        DiffractionImage
            The kernel shifted to the image centre (``fftshift``).
        """
        kw = {} if calibration is None else {"calibration": calibration}
        return DiffractionImage(
            np.fft.fftshift(self.kernel),
            name=f"template_{self.kind}",
            units="",
            params=self.params,
            **kw,
        )


def _as_image(probe: Any) -> tuple[np.ndarray, Any]:
    cal = getattr(probe, "calibration", None)
    arr = probe.data if isinstance(probe, DiffractionImage) else probe
    p = np.asarray(arr, dtype=np.float64)
    if p.ndim != 2:
        raise DataShapeError(f"a probe must be one 2D image (k_y, k_x), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise DataShapeError("the probe image has NaN or inf values")
    return p, cal


def _refine_center(p: np.ndarray, center, radius: float) -> tuple[float, float]:
    """Background-subtracted centre of mass inside a circle a little larger than the disk."""
    yy, xx = np.indices(p.shape, dtype=np.float64)
    cy, cx = center
    rc = radius + max(2.0, radius / 4)
    for _ in range(20):
        d = np.hypot(yy - cy, xx - cx)
        ring = (d > rc) & (d <= rc + 3)
        bg = float(np.median(p[ring])) if ring.any() else 0.0
        w = np.where(d <= rc, p - bg, 0.0)
        s = w.sum()
        if s <= 0:
            break
        ny, nx = float((w * yy).sum() / s), float((w * xx).sum() / s)
        moved = math.hypot(ny - cy, nx - cx)
        cy, cx = ny, nx
        if moved < 1e-4:
            break
    return cy, cx


def _radial_profile(p: np.ndarray, center, radius: float) -> tuple[np.ndarray, float, float, float]:
    """Azimuthal average of ``p`` around ``center``: (profile on PROFILE_STEP_PX, R, edge, support)."""
    yy, xx = np.indices(p.shape, dtype=np.float64)
    r = np.hypot(yy - center[0], xx - center[1])
    rmax = min(radius * 2 + 6, r.max())
    bw = 0.1
    nb = int(rmax / bw) + 1
    idx = np.minimum((r / bw).astype(np.int64), nb)
    sums = np.bincount(idx.ravel(), p.ravel(), nb + 1)[:nb]
    cnt = np.bincount(idx.ravel(), None, nb + 1)[:nb]
    rc = (np.arange(nb) + 0.5) * bw
    ok = cnt > 0
    prof = np.interp(rc, rc[ok], sums[ok] / cnt[ok])
    prof = ndimage.gaussian_filter1d(prof, 1.5, mode="nearest")  # 0.15 px: tames noise only
    bg = float(np.median(prof[rc > radius + max(3.0, radius / 3)])) if np.any(rc > radius + 3) else 0.0
    top = float(np.mean(prof[rc < max(radius / 2, 1.0)]))
    if top - bg <= 0:
        raise DataShapeError("the probe has no bright disk above its background")
    prof = (prof - bg) / (top - bg)
    half = np.nonzero(prof < 0.5)[0]
    if half.size == 0:
        raise DataShapeError("the probe disk does not fall off inside the image")
    i = half[0]
    r_half = float(rc[i - 1] + (prof[i - 1] - 0.5) / (prof[i - 1] - prof[i]) * bw) if i > 0 else rc[0]
    r90 = float(rc[np.nonzero(prof < 0.9)[0][0]])
    r10 = float(rc[np.nonzero(prof < 0.1)[0][0]]) if np.any(prof < 0.1) else r_half + 2
    edge = max((r10 - r90) / 4.39, 0.05)
    # a logistic-edge disk fitted to the pixels (the bright-field disk's fit, centre kept), plus
    # the smoothed azimuthal mean of what it misses: exact for logistic edges, close to the
    # measured profile for any other shape
    fit = fit_soft_disk(p, center, r_half, fit_center=False, margin_px=max(4.0, 8 * edge))
    if fit is None or not (0 < fit[2] < r_half and abs(fit[1] - r_half) < 2):
        R, e, b0, a0 = r_half, edge, bg, top - bg
    else:
        _, R, e, b0, a0 = fit
    sel = r.ravel() < min(r_half + max(4.0, 8 * edge), r.max())
    rr, pp = r.ravel()[sel], p.ravel()[sel]
    e = abs(e)
    support = R + max(2.5, 7.0 * e)
    miss = np.bincount(idx.ravel()[sel], (pp - b0 - a0 * _soft(rr, R, e)) / a0, nb + 1)[:nb]
    cnt_sel = np.bincount(idx.ravel()[sel], None, nb + 1)[:nb]
    okm = cnt_sel > 0
    miss = np.interp(rc, rc[okm], miss[okm] / cnt_sel[okm]) if okm.any() else np.zeros_like(rc)
    miss = ndimage.gaussian_filter1d(miss, 3.0, mode="nearest")  # 0.3 px
    fine = np.arange(0.0, support + 1.0, PROFILE_STEP_PX)
    out = _soft(fine, R, e) + np.interp(fine, rc, miss)
    # taper smoothly to 0 over the last pixel so the model has no step
    taper = np.clip((support - fine) / 1.0, 0.0, 1.0)
    out = np.clip(out, 0.0, None) * taper
    return out, float(R), float(e), float(support)


def _soft(r, radius, edge):
    return 0.5 * (1.0 - np.tanh((r - radius) / (2.0 * edge)))


@cite
def make_template(
    probe: Any,
    *,
    kind: str = "plain",
    center_px: tuple[float, float] | None = None,
    sigma_px: float | None = None,
    ring_width_px: float | None = None,
) -> ProbeTemplate:
    """A :class:`ProbeTemplate` from a vacuum probe image.

    Parameters
    ----------
    probe : ndarray ``(k_y, k_x)`` or DiffractionImage
        A vacuum probe (e.g. ``Sample.probe``), the patterns' detector shape or larger.
    kind : {"plain", "gaussian", "ring"}
        Correlation kernel (see the module docstring).
    center_px : (float, float), optional
        Centre of the probe disk; by default measured (bright-field disk, then a
        background-subtracted centre of mass).
    sigma_px : float, optional
        Width of the subtracted Gaussian of ``kind="gaussian"`` (default 1.5 x radius).
    ring_width_px : float, optional
        Width of the negative ring of ``kind="ring"`` (default radius / 2).

    Returns
    -------
    ProbeTemplate
        Kernel (centred on pixel ``(0, 0)``), radial profile, radius, edge width and support,
        all in detector pixels.

    Raises
    ------
    DataShapeError
        When the probe is not one finite 2D image, has no bright disk above its background, or
        its disk does not fit in the image.
    ValueError
        When ``kind`` is unknown or ``sigma_px`` / ``ring_width_px`` is not positive.

    Notes
    -----
    The disk centre is the bright-field disk's (``find_bf_disk``), refined by a
    background-subtracted centre of mass. The radial profile is the azimuthal average around that
    centre (0.1 px bins), fitted by a logistic-edge disk ``b + A / 2 (1 - tanh((r - R) / 2e))``
    plus the smoothed residual, tabulated every 0.02 px. The kernel is the background-subtracted
    probe moved to pixel ``(0, 0)`` by a Fourier shift (sub-pixel), cut at the support radius
    and normalised to sum 1; ``"gaussian"`` and ``"ring"`` subtract a zero-sum counterpart. The
    patterns are cross-correlated with it by FFT, as in py4DSTEM's disk detection.

    References
    ----------
    %(ophus2019_1)s
    %(savitzky2021_2)s
    """
    p, _ = _as_image(probe)
    if kind not in KERNEL_KINDS:
        raise ValueError(f"kind must be one of {KERNEL_KINDS}, got {kind!r}")
    try:
        bf = find_bf_disk(p)
    except DataShapeError as e:
        raise DataShapeError(f"no probe disk found: {e}") from None
    center = tuple(center_px) if center_px is not None else _refine_center(p, bf.center_px, bf.radius_px)
    profile, radius, edge, support = _radial_profile(p, center, bf.radius_px)
    if 2 * support + 3 > min(p.shape):
        raise DataShapeError(f"the probe disk (radius {radius:.1f} px) does not fit in its image {p.shape}")
    yy, xx = np.indices(p.shape, dtype=np.float64)
    # background level, then shift the probe so its centre lands on pixel (0, 0)
    d = np.hypot(yy - center[0], xx - center[1])
    bg = float(np.median(p[d > support])) if np.any(d > support) else 0.0
    fy = np.fft.fftfreq(p.shape[0])[:, None]
    fx = np.fft.fftfreq(p.shape[1])[None, :]
    ramp = np.exp(2j * np.pi * (fy * center[0] + fx * center[1]))
    k0 = np.real(np.fft.ifft2(np.fft.fft2(p - bg) * ramp))
    ry = np.minimum(yy, p.shape[0] - yy)
    rx = np.minimum(xx, p.shape[1] - xx)
    r0 = np.hypot(ry, rx)  # distance from (0, 0) with wrap-around
    k0 = np.where(r0 <= support, k0, 0.0) * np.clip(support - r0 + 1.0, 0.0, 1.0)
    plain = k0 / k0.sum()
    if kind == "plain":
        kernel = plain
    elif kind == "gaussian":
        s = 1.5 * radius if sigma_px is None else float(sigma_px)
        if s <= 0:
            raise ValueError(f"sigma_px must be positive, got {sigma_px}")
        g = np.exp(-0.5 * (r0 / s) ** 2)
        kernel = plain - g / g.sum()
    else:
        w = 0.5 * radius if ring_width_px is None else float(ring_width_px)
        if w <= 0:
            raise ValueError(f"ring_width_px must be positive, got {ring_width_px}")
        disk = _soft(r0, radius, edge)
        ring = _soft(r0, radius + w, edge) - disk
        kernel = disk / disk.sum() - ring / ring.sum()
        support = radius + w + max(2.5, 7 * edge)
    shown = np.fft.fftshift(k0) / max(float(np.max(k0)), 1e-300)
    params = {
        "kind": kind,
        "center_px": [float(center[0]), float(center[1])],
        "radius_px": radius,
        "edge_px": edge,
        "support_px": support,
        "sigma_px": sigma_px,
        "ring_width_px": ring_width_px,
    }
    return ProbeTemplate(
        kernel=kernel,
        probe=shown,
        profile=profile,
        profile_step_px=PROFILE_STEP_PX,
        radius_px=radius,
        edge_px=edge,
        support_px=support,
        kind=kind,
        params=params,
    )


def template_from_bf_disk(
    mean_pattern: Any, *, kind: str = "plain", margin_px: float | None = None, **kwargs: Any
) -> ProbeTemplate:
    """A template from the bright-field disk of the mean pattern (no vacuum probe needed).

    The disk is cut out with a soft circular window ``margin_px`` (default ``max(3, R / 3)``)
    beyond its radius, so Bragg disks further out do not enter the template. The mean pattern
    includes the descan blur (under a pixel in well-aligned data); a vacuum probe is better.

    Parameters
    ----------
    mean_pattern : ndarray ``(k_y, k_x)`` or DiffractionImage
        The mean (or maximum) diffraction pattern of the scan.
    kind : {"plain", "gaussian", "ring"}
        Correlation kernel, as in :func:`make_template`.
    margin_px : float, optional
        Soft-window radius beyond the disk edge, in detector pixels (default ``max(3, R / 3)``).
    **kwargs
        Passed to :func:`make_template` (``sigma_px``, ``ring_width_px``).

    Returns
    -------
    ProbeTemplate
        As :func:`make_template`; ``params["source"]`` names the bright-field disk.

    Raises
    ------
    DataShapeError
        When the pattern is not one finite 2D image or has no bright-field disk.

    Notes
    -----
    The bright-field disk is found and its centre refined as in :func:`make_template`; the
    pattern minus the median of a 3 px ring outside the window is multiplied by a logistic
    window (edge 0.5 px) of radius ``R + margin_px`` and handed to :func:`make_template`.
    """
    p, _ = _as_image(mean_pattern)
    bf = find_bf_disk(p)
    center = _refine_center(p, bf.center_px, bf.radius_px)
    m = max(3.0, bf.radius_px / 3) if margin_px is None else float(margin_px)
    yy, xx = np.indices(p.shape, dtype=np.float64)
    d = np.hypot(yy - center[0], xx - center[1])
    ring = (d > bf.radius_px + m) & (d <= bf.radius_px + m + 3)
    bg = float(np.median(p[ring])) if ring.any() else 0.0
    window = _soft(d, bf.radius_px + m, 0.5)
    cut = (p - bg) * window
    t = make_template(cut, kind=kind, center_px=center, **kwargs)
    return ProbeTemplate(**{**t.__dict__, "params": {**t.params, "source": "bright-field disk of the mean pattern"}})
