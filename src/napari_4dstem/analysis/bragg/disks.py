"""Bragg disk detection: template correlation of every pattern, peaks, sub-pixel refinement.

:func:`find_bragg_disks` streams the scan in blocks through
:func:`~napari_4dstem.engine.driver.map_scan` (native dtype in, one float32 copy of a block at
a time). Per block:

1. correlation of every pattern with the template kernel, batched FFTs (``scipy.fft`` with
   worker threads, or ``torch.fft`` on a CUDA device): ``C = F^-1[ |P T*|^p exp(i arg P T*) ]``
   with the *correlation power* ``p``: 1 cross-correlation, 0 phase correlation, between
   hybrid;
2. peaks of the correlation (:func:`~napari_4dstem.analysis.bragg.peaks.find_peaks`);
3. sub-pixel refinement; the default ``"fit"`` fits the probe's disk model to the pattern by
   Poisson maximum likelihood (see :mod:`.peaks` and ``docs/bragg-strain.md``).

The result is a ragged :class:`~napari_4dstem.data.results.BraggPeaks` (raw detector pixels,
not origin-corrected). :func:`bragg_vector_map` histograms all peaks relative to the origin
of their pattern (optionally corrected for elliptic distortion) into a DiffractionImage;
:func:`origin_from_peaks` takes that origin from the central beam when none is calibrated.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from ..._docstrings import cite
from ...data.calibration import Calibration
from ...data.results import BraggPeaks, DiffractionImage, RealSpaceMap
from ...engine.driver import map_scan
from ...engine.jobs import Job, PartialMap, eager
from ...engine.kernels import Kernel
from ...errors import DataShapeError
from .peaks import (
    PeakTable,
    compact_rows,
    disk_counts,
    find_peaks,
    fit_disks,
    keep_significant,
    refine_peaks,
)
from .probe import ProbeTemplate, make_template

__all__ = [
    "bragg_vector_map",
    "correlate",
    "detect_in_stack",
    "find_bragg_disks",
    "iter_find_bragg_disks",
    "origin_from_peaks",
]

_N_FIELDS = 4  # qy, qx, intensity, correlation


def _use_torch(device: str | None) -> bool:
    if device is None or device == "cpu":
        return False
    from ...engine.devices import torch_device_usable

    return torch_device_usable(device, instead="the CPU")


def _power(m, power: float, xp):
    if power == 1.0:
        return m
    mag = xp.abs(m)
    if power == 0.0:
        return m / xp.where(mag > 0, mag, 1)
    return m * xp.where(mag > 0, mag, 1) ** (power - 1.0)


@cite
def correlate(
    patterns: np.ndarray,
    kernel: np.ndarray,
    *,
    power: float = 1.0,
    device: str | None = None,
    workers: int | None = None,
    return_spectra: bool = False,
):
    """Correlate every pattern ``(n, k_y, k_x)`` with ``kernel`` (centred on ``(0, 0)``).

    ``device`` ``"cuda"`` runs the FFTs in torch on the GPU; without CUDA or torch it warns and
    uses ``scipy.fft``.

    Parameters
    ----------
    patterns : ndarray ``(n, k_y, k_x)`` or ``(k_y, k_x)``
        Diffraction patterns, any real dtype (correlated in float32).
    kernel : ndarray ``(k_y, k_x)``
        Template kernel centred on pixel ``(0, 0)`` (``ProbeTemplate.kernel_for``).
    power : float
        Correlation power ``p``: 1 cross-correlation, 0 phase correlation, between hybrid
        (default 1).
    device : None, "cpu" or "cuda[:n]"
        Where the FFTs run (default the CPU).
    workers : int, optional
        ``scipy.fft`` worker threads (default all CPUs).
    return_spectra : bool
        Also return the full complex spectra of the correlations (for DFT upsampling).

    Returns
    -------
    corr : ndarray ``(n, k_y, k_x)`` float32
        The correlations; a disk centred at ``s`` gives a peak at pixel ``s``.
    spectra : ndarray ``(n, k_y, k_x)`` complex
        ``fft2(corr)``; only with ``return_spectra``.

    Raises
    ------
    DataShapeError
        When the kernel's shape differs from the patterns'.

    Notes
    -----
    ``C = F^-1[ |P T*|^p exp(i arg P T*) ]`` with ``P`` and ``T`` the real FFTs of pattern and
    kernel; one batched ``rfft2`` / ``irfft2`` pair, ``O(n k_y k_x log(k_y k_x))``. Hybrid
    correlation (``0 < p < 1``) follows py4DSTEM and Pekin et al. [3]_.

    References
    ----------
    %(ophus2019_1)s
    %(savitzky2021_2)s
    %(pekin2017_3)s
    """
    p = np.asarray(patterns)
    if p.ndim == 2:
        p = p[None]
    shape = p.shape[1:]
    if tuple(kernel.shape) != shape:
        raise DataShapeError(f"kernel shape {kernel.shape} differs from the patterns {shape}")
    if _use_torch(device):
        return _correlate_torch(p, kernel, power=power, device=device, return_spectra=return_spectra)
    import scipy.fft as sfft

    w = workers if workers is not None else (os.cpu_count() or 1)
    tf = np.conj(sfft.rfft2(kernel.astype(np.float32)))
    f = sfft.rfft2(p.astype(np.float32, copy=False), workers=w)
    f *= tf
    f = _power(f, float(power), np)
    c = sfft.irfft2(f, s=shape, workers=w)
    if not return_spectra:
        return c
    return c, sfft.fft2(c, workers=w)


def _correlate_torch(p, kernel, *, power, device, return_spectra):
    import torch

    dev = torch.device(device)
    tf = torch.conj(torch.fft.rfft2(torch.as_tensor(kernel, dtype=torch.float32, device=dev)))
    x = torch.as_tensor(np.ascontiguousarray(p), device=dev).to(torch.float32)
    f = torch.fft.rfft2(x) * tf
    f = _power(f, float(power), torch)
    c = torch.fft.irfft2(f, s=tuple(p.shape[1:]))
    out = c.cpu().numpy()
    if not return_spectra:
        return out
    return out, torch.fft.fft2(c).cpu().numpy()


def detect_in_stack(
    patterns: np.ndarray,
    template: ProbeTemplate,
    *,
    correlation_power: float = 1.0,
    edge_px: int | None = None,
    min_spacing_px: float | None = None,
    min_relative: float = 0.03,
    min_absolute: float = 0.0,
    max_peaks: int = 100,
    subpixel: str = "fit",
    upsample_factor: int = 16,
    poisson: bool = True,
    detect_bin: int | None = None,
    device: str | None = None,
    workers: int | None = None,
    parallel: bool = True,
    min_significance: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bragg disks in a stack of patterns ``(n, k_y, k_x)``: ``(peaks, count)``.

    Parameters
    ----------
    patterns : ndarray ``(n, k_y, k_x)``
        Diffraction patterns, any real dtype.
    template : ProbeTemplate
        The probe template.
    correlation_power, edge_px, min_spacing_px, min_relative, min_absolute, max_peaks : optional
        As :func:`iter_find_bragg_disks`.
    subpixel, upsample_factor, poisson, detect_bin, device, min_significance : optional
        As :func:`iter_find_bragg_disks`.
    workers : int, optional
        ``scipy.fft`` worker threads (default all CPUs when ``parallel``, else 1).
    parallel : bool
        Run the numba kernels on threads (default True).

    Returns
    -------
    peaks : ndarray ``(n, max_peaks, 4)`` float64
        Fields ``qy, qx`` (raw detector pixels), intensity, correlation; NaN in unused slots,
        ordered by correlation.
    count : ndarray ``(n,)`` int64
        Peaks found per pattern.

    Raises
    ------
    DataShapeError
        When ``patterns`` is not 3D or the template does not fit them.
    ValueError
        When ``detect_bin`` is invalid or ``subpixel`` is unknown.
    """
    p = np.asarray(patterns)
    if p.ndim != 3:
        raise DataShapeError(f"patterns must be (n, k_y, k_x), got shape {p.shape}")
    b = _detect_bin(template, subpixel, detect_bin)
    kernel = _binned_kernel(template, p.shape[1:], b)
    edge = math.ceil(template.radius_px) if edge_px is None else int(edge_px)
    spacing = template.radius_px if min_spacing_px is None else float(min_spacing_px)
    need_spec = subpixel == "upsample"
    if workers is None:
        workers = (os.cpu_count() or 1) if parallel else 1
    src = p if b == 1 else _bin_stack(p, b, parallel)
    res = correlate(
        src,
        kernel,
        power=correlation_power,
        device=device,
        workers=workers,
        return_spectra=need_spec,
    )
    corr, spec = res if need_spec else (res, None)
    # a looser margin here; the exact one applies to the sub-pixel positions below
    table = find_peaks(
        corr,
        edge_px=max(1, edge // b - 1),
        min_spacing_px=spacing / b,
        min_relative=min_relative,
        min_absolute=min_absolute,
        max_peaks=2 * max_peaks,
        parallel=parallel,
    )
    out = np.full((p.shape[0], int(max_peaks), _N_FIELDS), np.nan)
    if subpixel != "fit":
        ref = refine_peaks(
            corr,
            table,
            method=subpixel,
            spectra=spec,
            upsample_factor=upsample_factor,
            parallel=parallel,
        )
        ref = _compact(ref, _inside(ref.yx, p.shape[1:], edge), int(max_peaks))
        out[..., 0:2] = ref.yx
        out[..., 2] = ref.value
        out[..., 3] = ref.value
        return _significant(p, out, ref.count, template.radius_px, min_significance, parallel, poisson)
    par = refine_peaks(corr, table, method="parabolic", parallel=parallel)
    if b > 1:  # binned -> full-detector pixels
        par.yx[:] = par.yx * b + (b - 1) / 2
    par = _compact(par, _inside(par.yx, p.shape[1:], edge), int(max_peaks))
    table = PeakTable(par.yx, par.value, par.count)
    fit = fit_disks(
        p,
        par.yx,
        table.count,
        profile=template.profile,
        profile_step_px=template.profile_step_px,
        radius_px=template.radius_px,
        edge_px=template.edge_px,
        poisson=poisson,
        n_iter=1 if b == 1 else 2,
        parallel=parallel,
    )
    moved = np.hypot(fit[..., 0] - par.yx[..., 0], fit[..., 1] - par.yx[..., 1])
    good = (fit[..., 4] == 1.0) & (moved < 1.5 * b)
    out[..., 0] = np.where(good, fit[..., 0], par.yx[..., 0])
    out[..., 1] = np.where(good, fit[..., 1], par.yx[..., 1])
    out[..., 2] = np.where(good, fit[..., 2] * _profile_area(template), np.nan)
    out[..., 3] = par.value
    _fill_failed_fits(p, out, table.count, good, template.radius_px, parallel)
    return _significant(p, out, table.count, template.radius_px, min_significance, parallel, poisson)


def _fill_failed_fits(p, out, count, good, radius_px, parallel) -> None:
    """Give the peaks whose disk fit failed a finite intensity, in place (session 14, audit3 #2).

    The fit fails (``A <= 0``, a singular system, too few pixels, or a fit that ran more than
    1.5 px away) mostly on correlation maxima that hold no disk: noise maxima of a pattern with
    a small template (the FEI TIA preview file,
    int32 with negative counts, gave 55-60 of its 100 candidates so; the same file shifted to
    non-negative counts gives the same), where the linear start already finds the disk
    no brighter than its surroundings. Their intensity used to stay NaN: napari then drew NaN
    point sizes and raised, and every consumer had to know the convention. Now such a peak
    gets the model-free aperture estimate (:func:`~.peaks.disk_counts`: the disk sum above the
    mean of the ring around it), floored at 0 (no excess over the background), so a kept
    peak's intensity is always finite and in the same units as the fitted ones.
    """
    used = np.arange(out.shape[1])[None, :] < np.asarray(count)[:, None]
    bad = used & ~good
    if not bad.any():
        return
    s = disk_counts(p, out[..., 0:2], count, radius_px=radius_px, parallel=parallel)[..., 0]
    s = np.clip(np.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)
    out[..., 2] = np.where(bad, s, out[..., 2])


def _significant(p, out, count, radius_px, min_significance, parallel, poisson=True):
    """Keep the peaks whose raw pattern holds a significant disk (None keeps all).

    The disk must be ``min_significance`` noise standard deviations above the ring around it
    (:func:`~.peaks.disk_counts`; with ``poisson``, counting data get at least Poisson's
    variance: at 1e4 electrons a pattern the sample variance of empty rings kept ~10 noise
    peaks per pattern, docs/acom.md).
    """
    if min_significance is None:
        return out, count
    z = disk_counts(p, out[..., 0:2], count, radius_px=radius_px, parallel=parallel, poisson_floor=poisson)[..., 1]
    return keep_significant(out, count, z, min_significance)


def _inside(yx: np.ndarray, shape, edge: int) -> np.ndarray:
    y, x = yx[..., 0], yx[..., 1]
    return (y >= edge) & (y <= shape[0] - 1 - edge) & (x >= edge) & (x <= shape[1] - 1 - edge)


def _compact(t: PeakTable, keep: np.ndarray, max_peaks: int) -> PeakTable:
    """Keep the peaks where ``keep`` (in order, at most ``max_peaks`` per image)."""
    keep = keep & (np.arange(t.yx.shape[1])[None, :] < t.count[:, None])
    yx, v, count = compact_rows(keep, t.yx, t.value, width=max_peaks)
    return PeakTable(yx, v, count)


def _profile_area(t: ProbeTemplate) -> float:
    """Integral of the disk profile over the plane (px^2): amplitude -> integrated counts."""
    r = np.arange(len(t.profile)) * t.profile_step_px
    return float(2 * np.pi * np.sum(t.profile * r) * t.profile_step_px)


def _detect_bin(template: ProbeTemplate, subpixel: str, detect_bin: int | None) -> int:
    if detect_bin is None:  # auto: coarse detection only when the fit refines on full pixels
        return 2 if subpixel == "fit" and template.radius_px >= 6 else 1
    b = int(detect_bin)
    if b < 1:
        raise ValueError(f"detect_bin must be a positive integer, got {detect_bin}")
    if b > 1 and subpixel != "fit":
        raise ValueError("detect_bin > 1 needs subpixel='fit' (other methods refine the binned correlation)")
    return b


@Kernel
def _bin_batch(p, b, out):
    for i in numba.prange(out.shape[0]):
        for y in range(out.shape[1]):
            for j in range(b):
                row = p[i, y * b + j]
                for x in range(out.shape[2]):
                    acc = 0.0
                    for k in range(b):
                        acc += row[x * b + k]
                    out[i, y, x] += acc


def _bin_stack(p: np.ndarray, b: int, parallel: bool = True) -> np.ndarray:
    """``b x b`` sums of a stack ``(n, k_y, k_x)`` in float32 (trailing rows/columns dropped)."""
    n, ny, nx = p.shape
    out = np.zeros((n, ny // b, nx // b), np.float32)
    q = p if p.dtype.kind in "uif" and p.dtype.isnative and p.dtype != np.float16 else p.astype(np.float32)
    _bin_batch(np.ascontiguousarray(q), int(b), out, parallel=parallel)
    return out


def _binned_kernel(template: ProbeTemplate, shape: tuple[int, int], b: int) -> np.ndarray:
    """The kernel for ``b x b``-binned patterns: shifted by ``(b - 1) / 2`` px, then binned.

    A binned peak at ``Y`` then means a disk centred at ``b Y + (b - 1) / 2`` on the full
    detector.
    """
    k = template.kernel_for(shape)
    if b == 1:
        return k
    h, w = shape[0] // b, shape[1] // b
    k = template.kernel_for((h * b, w * b))
    fy = np.fft.fftfreq(h * b)[:, None]
    fx = np.fft.fftfreq(w * b)[None, :]
    sh = (b - 1) / 2
    k = np.real(np.fft.ifft2(np.fft.fft2(k) * np.exp(-2j * np.pi * (fy + fx) * sh)))
    # / b^2: binned correlations keep the scale of full-resolution ones (min_absolute, values)
    return k.reshape(h, b, w, b).sum(axis=(1, 3)) / (b * b)


def _bragg_kernel(block, *, row0, parallel, template, opts):
    ny, nx = block.shape[:2]
    stack = block.reshape(ny * nx, *block.shape[2:])  # a view when the block is contiguous
    peaks, count = detect_in_stack(stack, template, parallel=parallel, **opts)
    out = np.full((ny * nx, peaks.shape[1] + 1, _N_FIELDS), np.nan)
    out[:, 0, 0] = count  # row 0 carries the count
    out[:, 1:] = peaks
    return out.reshape(ny, nx, *out.shape[1:])


def _as_template(template: Any) -> ProbeTemplate:
    if isinstance(template, ProbeTemplate):
        return template
    return make_template(template)


def disk_count_partial(name: str = "disks per pattern") -> Callable[[np.ndarray, np.ndarray], PartialMap]:
    """The ``partial`` of :func:`~napari_4dstem.engine.driver.map_scan` for a Bragg-disk kernel.

    It maps the count in ``out[..., 0, 0]``: the disks found per pattern so far.
    """
    return functools.partial(_disk_counts_so_far, name)


def _disk_counts_so_far(name: str, out: np.ndarray, done: np.ndarray) -> PartialMap:
    return PartialMap.of(name, out[:, :, 0, 0], done, units="disks")


@cite
def iter_find_bragg_disks(
    data: Any,
    *,
    template: ProbeTemplate | np.ndarray | DiffractionImage,
    correlation_power: float = 1.0,
    edge_px: int | None = None,
    min_spacing_px: float | None = None,
    min_relative: float = 0.03,
    min_absolute: float = 0.0,
    max_peaks: int = 100,
    subpixel: str = "fit",
    upsample_factor: int = 16,
    poisson: bool = True,
    detect_bin: int | None = None,
    device: str | None = None,
    min_significance: float | None = None,
    calibration: Calibration | None = None,
    scan_chunk: tuple[int, int] | None = None,
    backend: Any = None,
) -> Job[BraggPeaks]:
    """Job: Bragg disks of every pattern as a :class:`BraggPeaks` (raw detector pixels).

    Parameters
    ----------
    data : DataCube or 4D array ``(scan_y, scan_x, k_y, k_x)``
    template : ProbeTemplate, or a probe image (made into a plain template)
    correlation_power : float
        1 cross-correlation, 0 phase correlation, in between hybrid (e.g. 0.5).
    edge_px : int, optional
        Peaks closer than this to the detector border are dropped (default: disk radius).
    min_spacing_px : float, optional
        Weaker peaks closer than this to a stronger one are dropped (default: disk radius).
    min_relative : float
        Peaks below this fraction of the pattern's strongest correlation peak are dropped.
    min_absolute : float
        Peaks with a correlation below this are dropped.
    max_peaks : int
        At most this many peaks per pattern (the strongest).
    subpixel : {"fit", "parabolic", "gaussian", "upsample", "none"}
        Sub-pixel refinement (see :mod:`.peaks`); ``"fit"`` (default) is both the most precise
        and about as fast as ``"parabolic"``.
    upsample_factor : int
        For ``"upsample"``: the fine grid step is ``1 / upsample_factor`` px.
    poisson : bool
        Weight the ``"fit"`` for Poisson counts (False: least squares).
    detect_bin : int, optional
        Correlate ``detect_bin x detect_bin``-binned patterns to *find* the disks (4x fewer
        FFT operations for 2); the ``"fit"`` then refines on the full-resolution pattern, so
        the precision is unchanged. Default: 2 with ``"fit"`` and a disk radius of 6 px or
        more, else 1. Only with ``subpixel="fit"``.
    device : None, "cpu" or "cuda[:n]"
        Where the FFTs run; "cuda" needs torch with CUDA and falls back to the CPU (with a
        RuntimeWarning) without it.
    min_significance : float, optional
        Keep only peaks whose raw pattern holds a disk this many noise standard deviations
        above the ring around it (:func:`~napari_4dstem.analysis.bragg.peaks.disk_counts`, the test
        of the NN path). Scale-free, so it pairs with a low ``min_relative`` on patterns whose
        Bragg disks are orders of magnitude weaker than the central beam (ACOM of thin
        crystals at random orientations: docs/acom.md). Default None: no test.
    calibration : Calibration, optional
        Calibration of a plain array (a DataCube carries its own).
    scan_chunk, backend
        As :func:`~napari_4dstem.engine.driver.map_scan`.

    Yields
    ------
    Progress
        Progress of the scan (with a partial map of the disks per pattern so far).

    Returns
    -------
    BraggPeaks
        The generator's return value (what :func:`~napari_4dstem.engine.jobs.run_job` hands
        back): ragged peaks in raw detector pixels ``(k_y, k_x)``, not origin-corrected, with
        ``intensity`` = integrated disk counts above background (``"fit"``; where the disk fit
        fails, the aperture sum above the surrounding ring, floored at 0: always finite) or the
        correlation peak value (other methods), ``correlation`` = correlation peak value.

    Raises
    ------
    DataShapeError
        When the data are not 4D or the template does not fit the patterns.
    ValueError
        When ``subpixel`` is unknown, ``max_peaks < 1`` or ``detect_bin`` is invalid.

    Notes
    -----
    The scan streams in blocks through :func:`~napari_4dstem.engine.driver.map_scan`, so memory
    holds one float32 block at a time. Per pattern: FFT correlation with the template
    (:func:`correlate`, optionally on ``detect_bin``-binned patterns), integer peaks
    (:func:`~.peaks.find_peaks`, local 3 x 3 maxima, greedy spacing), and sub-pixel refinement:
    for ``"fit"`` a parabolic estimate then a Poisson maximum-likelihood fit of the template's
    disk model ``b + A T(|k - s|)`` to the raw pattern (:func:`~.peaks.fit_disks`), keeping the
    parabolic position where the fit fails or moves by more than 1.5 (binned) pixels. Cost per
    pattern: about one FFT correlation plus the disk fits.

    References
    ----------
    %(ophus2019_1)s
    %(savitzky2021_2)s
    %(pekin2017_3)s
    """
    from ..virtual.images import as_datacube

    cube, cal = as_datacube(data, calibration)
    tmpl = _as_template(template)
    shape = tuple(cube.shape[2:])
    tmpl.kernel_for(shape)  # fails early, with a clear message, when it does not fit
    if subpixel not in ("fit", "parabolic", "gaussian", "upsample", "none"):
        raise ValueError(f"subpixel must be fit, parabolic, gaussian, upsample or none, got {subpixel!r}")
    if int(max_peaks) < 1:
        raise ValueError(f"max_peaks must be at least 1, got {max_peaks}")
    if device is not None:
        _use_torch(device)  # warn once here, not per block
        if device.startswith("cuda"):
            try:
                import torch

                device = device if torch.cuda.is_available() else None
            except ImportError:
                device = None
    opts = {
        "correlation_power": float(correlation_power),
        "edge_px": edge_px,
        "min_spacing_px": min_spacing_px,
        "min_relative": float(min_relative),
        "min_absolute": float(min_absolute),
        "max_peaks": int(max_peaks),
        "subpixel": subpixel,
        "upsample_factor": int(upsample_factor),
        "poisson": bool(poisson),
        "device": device,
        "min_significance": None if min_significance is None else float(min_significance),
    }
    out = yield from map_scan(
        cube.data,
        _bragg_kernel,
        out_tail=(int(max_peaks) + 1, _N_FIELDS),
        kwargs={"template": tmpl, "opts": opts},
        scan_chunk=scan_chunk,
        backend=backend,
        message="Bragg disks",
        partial=disk_count_partial(),
    )
    params = {
        **{k: v for k, v in opts.items() if k != "device"},
        "edge_px": math.ceil(tmpl.radius_px) if edge_px is None else int(edge_px),
        "min_spacing_px": tmpl.radius_px if min_spacing_px is None else float(min_spacing_px),
        "template": tmpl.params,
        "detector_shape": list(shape),
        "intensity": "integrated disk counts above background (fit)" if subpixel == "fit" else "correlation peak value",
        "positions": "raw detector pixels (k_y, k_x), not origin-corrected",
    }
    return BraggPeaks.from_padded(out, name="braggpeaks", calibration=cal, params=params)


find_bragg_disks = eager(iter_find_bragg_disks, "Bragg disks of every pattern.")


# ---- origin and Bragg vector map -------------------------------------------------------------
def origin_from_peaks(
    peaks: BraggPeaks,
    *,
    guess_px: tuple[float, float] | None = None,
    max_distance_px: float | None = None,
) -> RealSpaceMap:
    """The origin of every pattern from its peaks: the strongest peak near ``guess_px``.

    Patterns with no such peak get NaN.

    Parameters
    ----------
    peaks : BraggPeaks
        Peaks in raw detector pixels (e.g. from :func:`find_bragg_disks`).
    guess_px : (float, float), optional
        Where the central beam is expected, ``(k_y, k_x)`` pixels (default the calibration's
        origin, else the detector centre).
    max_distance_px : float, optional
        Search radius around the guess in pixels (default a quarter of the smaller detector
        side, 32 px when the detector shape is not recorded).

    Returns
    -------
    RealSpaceMap ``(scan_y, scan_x, 2)``
        The origin ``(origin_y, origin_x)`` in detector pixels.

    Raises
    ------
    DataShapeError
        When no guess is given and the peaks do not record their detector shape.

    Notes
    -----
    Per pattern, the peak of largest intensity (the correlation where the intensity is NaN)
    within ``max_distance_px`` of the guess; one ``lexsort`` over all peaks.
    """
    shape = peaks.params.get("detector_shape")
    if guess_px is None:
        guess_px = peaks.calibration.origin_px
    if guess_px is None:
        if shape is None:
            raise DataShapeError("give guess_px: the peaks do not record their detector shape")
        guess_px = ((shape[0] - 1) / 2, (shape[1] - 1) / 2)
    if max_distance_px is None:
        max_distance_px = 0.25 * min(shape) if shape is not None else 32.0
    n_pos = len(peaks.offsets) - 1
    pos = peaks.position_index()
    d = np.hypot(peaks.qy - guess_px[0], peaks.qx - guess_px[1])
    w = np.where(np.isfinite(peaks.intensity), peaks.intensity, peaks.correlation)
    ok = (d <= max_distance_px) & np.isfinite(w)
    idx = np.nonzero(ok)[0]
    order = idx[np.lexsort((-w[idx], pos[idx]))]
    first = np.ones(len(order), bool)
    first[1:] = pos[order][1:] != pos[order][:-1]
    best = order[first]
    out = np.full((n_pos, 2), np.nan)
    out[pos[best], 0] = peaks.qy[best]
    out[pos[best], 1] = peaks.qx[best]
    return RealSpaceMap(
        out.reshape(*peaks.scan_shape, 2),
        name="origin",
        units="px",
        channels=("origin_y", "origin_x"),
        calibration=peaks.calibration,
        params={
            "method": "strongest Bragg peak near the guess",
            "guess_px": list(guess_px),
            "max_distance_px": float(max_distance_px),
        },
    )


def _origin_per_peak(peaks: BraggPeaks, origin: Any) -> np.ndarray:
    """Origin ``(n_peaks, 2)`` of the pattern of each peak."""
    if origin is None:
        cal = peaks.calibration
        if cal.origin_map_px is not None:
            origin = cal.origin_map_px
        elif cal.origin_px is not None:
            origin = cal.origin_px
        else:
            raise DataShapeError(
                "no origin: calibrate it (napari-4dstem calibrate), pass origin=, or use origin_from_peaks"
            )
    if isinstance(origin, RealSpaceMap):
        origin = origin.data[..., :2]
    o = np.asarray(origin, dtype=np.float64)
    if o.shape == (2,):
        return np.broadcast_to(o, (peaks.n_peaks, 2))
    if o.shape != (*peaks.scan_shape, 2):
        raise DataShapeError(f"origin must be (2,) or {(*peaks.scan_shape, 2)}, got {o.shape}")
    return o.reshape(-1, 2)[peaks.position_index()]


def correct_ellipse(qy: np.ndarray, qx: np.ndarray, ellipse) -> tuple[np.ndarray, np.ndarray]:
    """Undo an elliptic distortion ``(a, b, theta_deg)`` (Calibration.ellipse) of vectors.

    The vectors are relative to the origin: components along the ``a`` axis are divided by
    ``a``, across by ``b``.
    """
    a, b, th = ellipse
    t = math.radians(th)
    c, s = math.cos(t), math.sin(t)
    u = qx * c + qy * s
    v = -qx * s + qy * c
    u, v = u / a, v / b
    return u * s + v * c, u * c - v * s


@cite
def bragg_vector_map(
    peaks: BraggPeaks,
    *,
    origin: Any = None,
    shape: tuple[int, int] | None = None,
    sampling: int = 1,
    ellipse: tuple[float, float, float] | bool | None = None,
    weights: str = "intensity",
) -> DiffractionImage:
    """The Bragg vector map: a histogram of every peak relative to its pattern's origin.

    Parameters
    ----------
    peaks : BraggPeaks
        Peaks in raw detector pixels.
    origin : None, (2,), (scan_y, scan_x, 2) array or RealSpaceMap
        Origin per pattern in pixels; default the calibration's (map or mean).
    shape : (int, int), optional
        Detector shape (default recorded in ``peaks.params``).
    sampling : int
        Bins per detector pixel (2: half-pixel bins). Peaks are spread bilinearly.
    ellipse : (a, b, theta_deg), True or None
        Correct an elliptic distortion first (True: the calibration's ellipse).
    weights : {"intensity", "count"}
        Add each peak's intensity (default; NaN counts as 0) or 1.

    Returns
    -------
    DiffractionImage ``(k_y * sampling, k_x * sampling)``
        The origin sits at pixel ``(k_y // 2, k_x // 2)`` of the detector grid, i.e. bin
        ``(k_y // 2 * sampling, k_x // 2 * sampling)``; units counts (or peaks).

    Raises
    ------
    DataShapeError
        When the detector shape is unknown, or no origin is given or calibrated, or the origin
        has the wrong shape.
    ValueError
        When ``weights`` is unknown.

    Notes
    -----
    Every peak vector ``q - origin`` (ellipse-corrected when asked) is spread bilinearly over
    the four nearest bins with ``np.bincount``: ``O(n_peaks)``. The Bragg vector map of
    Savitzky et al. [1]_.

    References
    ----------
    %(savitzky2021_1)s
    """
    shape = tuple(shape or peaks.params.get("detector_shape") or ())
    if len(shape) != 2:
        raise DataShapeError("give shape=: the peaks do not record their detector shape")
    o = _origin_per_peak(peaks, origin)
    qy, qx = peaks.qy - o[:, 0], peaks.qx - o[:, 1]
    if ellipse is True:
        ellipse = peaks.calibration.ellipse
    if ellipse:
        qy, qx = correct_ellipse(qy, qx, ellipse)
    if weights == "intensity":
        w = np.where(np.isfinite(peaks.intensity), peaks.intensity, 0.0)
    elif weights == "count":
        w = np.ones(peaks.n_peaks)
    else:
        raise ValueError(f"weights must be 'intensity' or 'count', got {weights!r}")
    s = int(sampling)
    ny, nx = shape[0] * s, shape[1] * s
    y = (qy + shape[0] // 2) * s
    x = (qx + shape[1] // 2) * s
    ok = np.isfinite(y) & np.isfinite(x) & (y >= 0) & (x >= 0) & (y < ny - 1) & (x < nx - 1)
    y, x, w = y[ok], x[ok], w[ok]
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    fy, fx = y - y0, x - x0
    img = np.zeros(ny * nx)
    for dy, dx, ww in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        img += np.bincount((y0 + dy) * nx + x0 + dx, w * ww, ny * nx)
    cal = peaks.calibration
    if s != 1 and cal.k_pixel_size is not None:
        cal = cal.replace(k_pixel_size=cal.k_pixel_size / s)
    return DiffractionImage(
        img.reshape(ny, nx),
        name="bragg_vector_map",
        units="counts" if weights == "intensity" else "peaks",
        calibration=cal,
        params={
            "sampling": s,
            "origin_at_px": [shape[0] // 2, shape[1] // 2],
            "weights": weights,
            "ellipse": list(ellipse) if ellipse else None,
        },
    )
