"""Inference: FCU-Net "structure factor" images and Bragg peaks (:class:`BraggPeaks`).

Patterns of any detector shape are binned by an integer factor when larger than the model
(``bin = ceil(max(k_y, k_x) / size)``), then padded or cropped to ``size x size`` so that the
probe's disk centre lands on pixel ``(size // 2, size // 2)``; the predicted peaks are mapped
back to raw detector pixels. Peaks are found and refined on the predicted image with
:func:`~napari_4dstem.analysis.peaks.find_peaks` / :func:`~napari_4dstem.analysis.peaks.
refine_peaks` (``"gaussian"``: exact on the Gaussian label peaks the model is trained to emit),
the same machinery as the correlation path, so lattice fits, strain and ACOM run unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.results import BraggPeaks, DiffractionImage
from ..engine.jobs import Job, Progress, run_job
from ..errors import DataShapeError, Napari4DSTEMError

__all__ = [
    "Geometry",
    "ProbeError",
    "detect_in_stack_nn",
    "find_bragg_disks_nn",
    "iter_find_bragg_disks_nn",
    "pick_device",
    "predict_images",
    "probe_geometry",
]

_N_FIELDS = 4


class ProbeError(Napari4DSTEMError, ValueError):
    """The vacuum probe is unusable for the network (no disk found, or far from centred)."""


def pick_device(device: str | None = None):
    """A torch device: ``device`` if usable, else CUDA when present, else the CPU."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from ..engine.devices import torch_device_usable

    if not torch_device_usable(device, instead="the CPU", stacklevel=2):
        return torch.device("cpu")
    return torch.device(device)


@dataclass(frozen=True)
class Geometry:
    """How detector pixels map onto model pixels: ``model = (det - (bin - 1) / 2) / bin - offset``.

    ``offset`` (integer, binned px) puts the probe centre within half a pixel of model pixel
    ``size // 2``; ``residual`` is that sub-pixel remainder, which is removed by shifting the
    *probe* (Fourier shift), so the network always sees an exactly centred probe, as in
    training, and its peaks are absolute positions in the model frame.
    """

    size: int
    bin: int
    offset: tuple[int, int]
    residual: tuple[float, float]
    detector_shape: tuple[int, int]
    #: the probe disk's radius (half maximum) in raw detector pixels; NaN when not known
    probe_radius_px: float = math.nan

    def to_detector(self, yx: np.ndarray) -> np.ndarray:
        b = self.bin
        out = np.empty_like(yx)
        for a in (0, 1):
            out[..., a] = (yx[..., a] + self.offset[a]) * b + (b - 1) / 2
        return out


def _bin(p: np.ndarray, b: int) -> np.ndarray:
    if b == 1:
        return p.astype(np.float32, copy=False)
    n, ny, nx = p.shape
    h, w = ny // b, nx // b
    q = p[:, : h * b, : w * b].astype(np.float32, copy=False)
    return q.reshape(n, h, b, w, b).sum(axis=(2, 4), dtype=np.float32)


def probe_geometry(
    probe: Any, detector_shape: tuple[int, int], size: int, *, max_offset_fraction: float = 0.1
) -> tuple[Geometry, np.ndarray]:
    """Geometry for patterns of ``detector_shape`` and the probe placed in the model frame.

    Raises :class:`ProbeError` when the probe has no disk or its centre is further than
    ``max_offset_fraction`` of the detector from the detector centre.
    """
    p = np.asarray(getattr(probe, "data", probe), dtype=np.float64)
    if p.ndim != 2:
        raise ProbeError(f"the probe must be one 2D image (k_y, k_x), got shape {p.shape}")
    if tuple(p.shape) != tuple(detector_shape):
        raise ProbeError(
            f"the probe {p.shape} and the patterns {tuple(detector_shape)} differ in shape"
        )
    if not np.all(np.isfinite(p)):
        raise ProbeError("the probe image has NaN or infinite pixels")
    lo, hi = np.percentile(p, 10), p.max()
    if not hi > lo:
        raise ProbeError("the probe image is flat: no probe disk")
    # centre of mass of the whole disk including its soft edge (a half-maximum mask alone is
    # off by up to ~0.1 px from pixelation), within 1.5 half-maximum radii of the rough centre
    half = p > lo + 0.5 * (hi - lo)
    yy0, xx0 = np.indices(p.shape)
    r0 = np.sqrt(half.sum() / np.pi)
    c0 = (yy0[half].mean(), xx0[half].mean())
    near = np.hypot(yy0 - c0[0], xx0 - c0[1]) <= 1.5 * r0 + 2
    w = np.where(near, np.clip(p - lo, 0, None), 0.0)
    yy, xx = np.indices(p.shape)
    cy, cx = float((w * yy).sum() / w.sum()), float((w * xx).sum() / w.sum())
    centre = ((p.shape[0]) // 2, (p.shape[1]) // 2)
    off = math.hypot(cy - centre[0], cx - centre[1])
    if off > max_offset_fraction * max(p.shape):
        raise ProbeError(
            f"the probe is not centred: its disk is at ({cy:.1f}, {cx:.1f}) px, {off:.1f} px from "
            f"the detector centre {centre}; the network needs a vacuum probe recorded with the beam "
            "near the centre (shift it there, e.g. with numpy.roll, or record a new one)"
        )
    b = max(1, math.ceil(max(detector_shape) / size))
    bc = ((cy - (b - 1) / 2) / b, (cx - (b - 1) / 2) / b)  # probe centre in binned px
    offset = tuple(math.floor(c - size // 2 + 0.5) for c in bc)
    residual = tuple(float(c - size // 2 - o) for c, o in zip(bc, offset, strict=True))
    geo = Geometry(size, b, offset, residual, tuple(int(s) for s in detector_shape), float(r0))
    pm = _shift_subpixel(to_model_frame(p[None], geo)[0], -residual[0], -residual[1])
    pm = np.clip(pm - np.percentile(pm, 10), 0, None)
    return geo, (pm / max(pm.max(), 1e-12)).astype(np.float32)


def _shift_subpixel(img: np.ndarray, dy: float, dx: float) -> np.ndarray:
    if abs(dy) < 1e-9 and abs(dx) < 1e-9:
        return img
    fy = np.fft.fftfreq(img.shape[0])[:, None]
    fx = np.fft.fftfreq(img.shape[1])[None, :]
    ph = np.exp(-2j * np.pi * (fy * dy + fx * dx))
    return np.real(np.fft.ifft2(np.fft.fft2(img) * ph)).astype(np.float32)


def to_model_frame(patterns: np.ndarray, geo: Geometry) -> np.ndarray:
    """Bin and pad/crop ``(n, k_y, k_x)`` patterns into the model frame ``(n, size, size)``."""
    q = _bin(np.asarray(patterns), geo.bin)
    n, h, w = q.shape
    s = geo.size
    out = np.zeros((n, s, s), np.float32)
    oy, ox = geo.offset
    ys, xs = max(0, oy), max(0, ox)
    ye, xe = min(h, oy + s), min(w, ox + s)
    if ye > ys and xe > xs:
        out[:, ys - oy : ye - oy, xs - ox : xe - ox] = q[:, ys:ye, xs:xe]
    return out


def predict_images(
    model,
    patterns: np.ndarray,
    probe: np.ndarray,
    *,
    batch_size: int = 32,
    device=None,
    mc_samples: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Model output ``(n, size, size)`` for model-frame patterns (and the MC-dropout standard
    deviation per pixel when ``mc_samples > 1``, else None)."""
    import torch

    dev = pick_device(device) if not isinstance(device, torch.device) else device
    model = model.to(dev)
    model.eval()
    pr = torch.as_tensor(probe, device=dev)[None]
    n = patterns.shape[0]
    out = np.empty(patterns.shape, np.float32)
    std = np.empty(patterns.shape, np.float32) if mc_samples > 1 else None
    with torch.inference_mode():
        for a in range(0, n, batch_size):
            x = torch.as_tensor(np.ascontiguousarray(patterns[a : a + batch_size]), device=dev)
            if mc_samples > 1:
                model.set_mc_dropout(True)
                try:
                    ys = torch.stack([model(x, pr) for _ in range(mc_samples)])
                finally:
                    model.set_mc_dropout(False)
                out[a : a + len(x)] = ys.mean(0).cpu().numpy()
                std[a : a + len(x)] = ys.std(0).cpu().numpy()
            else:
                out[a : a + len(x)] = model(x, pr).float().cpu().numpy()
    return out, std


def detect_in_stack_nn(
    patterns: np.ndarray,
    model,
    geo: Geometry,
    probe_model: np.ndarray,
    *,
    min_relative: float = 0.1,
    min_absolute: float = 0.05,
    min_spacing_px: float | None = None,
    min_significance: float | None = 5.0,
    edge_px: float | None = None,
    max_peaks: int = 100,
    batch_size: int = 32,
    device=None,
    mc_samples: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Peaks of a stack ``(n, k_y, k_x)``: ``(peaks (n, max_peaks, 4), count, images, std)``.

    ``peaks`` fields: qy, qx (raw detector px), intensity (counts of the disk at that position
    in the raw pattern above the local background, :func:`~napari_4dstem.analysis.peaks.
    disk_counts`; 0 at least), correlation (the predicted peak height: the network's
    confidence); NaN in unused slots. ``min_spacing_px`` (default 1.5 probe radii) is in model
    pixels. ``edge_px`` (detector pixels; default the probe radius, as for correlation): peaks
    closer to the detector border are dropped, so every disk kept lies wholly on the detector
    (a cut disk's centre is biased, and the outermost disks weigh most in a lattice fit).
    ``min_significance``: peaks whose disk is not this many noise standard deviations above
    the local background in the raw pattern are dropped (None keeps them all).
    """
    from ..analysis.peaks import (
        compact_rows,
        disk_counts,
        find_peaks,
        keep_significant,
        refine_peaks,
    )

    x = to_model_frame(patterns, geo)
    img, std = predict_images(
        model, x, probe_model, batch_size=batch_size, device=device, mc_samples=mc_samples
    )
    table = find_peaks(
        img,
        edge_px=2,
        min_spacing_px=_spacing(min_spacing_px, geo),
        min_relative=float(min_relative),
        min_absolute=float(min_absolute),
        max_peaks=int(max_peaks),
    )
    pos = np.clip(img, 1e-6, None)
    ref = refine_peaks(pos, table, method="gaussian")
    yx = ref.yx
    # a Gaussian fit can only move within the 3x3 neighbourhood
    bad = ~(np.abs(yx - table.yx) <= 1.0)
    yx = np.where(bad, table.yx, yx)
    out = np.full((x.shape[0], int(max_peaks), _N_FIELDS), np.nan)
    det = geo.to_detector(yx)
    out[..., 0:2] = det
    out[..., 3] = table.value
    # drop peaks whose disk is not wholly on the real detector (padding, border)
    sh = geo.detector_shape
    e = _edge(edge_px, geo)
    inside = (
        (det[..., 0] >= e)
        & (det[..., 0] <= sh[0] - 1 - e)
        & (det[..., 1] >= e)
        & (det[..., 1] <= sh[1] - 1 - e)
    )
    valid = inside & (np.arange(int(max_peaks))[None] < table.count[:, None])
    out, count = compact_rows(valid, out)
    if math.isfinite(geo.probe_radius_px):
        sz = disk_counts(patterns, out[..., 0:2], count, radius_px=geo.probe_radius_px)
        out[..., 2] = np.clip(sz[..., 0], 0.0, None)
        out, count = keep_significant(out, count, sz[..., 1], min_significance)
    else:  # no probe radius (a hand-made Geometry): the network's height stands in
        out[..., 2] = out[..., 3]
    return out, count, img, std


def _spacing(min_spacing_px: float | None, geo: Geometry) -> float:
    """Peak spacing in model pixels: as given, else 1.5 probe radii (disks whose centres are
    closer overlap by more than half; the NN otherwise marks bright disk edges of thick
    samples as extra peaks right next to the disk), else 4."""
    if min_spacing_px is not None:
        return float(min_spacing_px)
    if math.isfinite(geo.probe_radius_px):
        return max(2.0, 1.5 * geo.probe_radius_px / geo.bin)
    return 4.0


def _edge(edge_px: float | None, geo: Geometry) -> float:
    """Border margin in detector pixels: as given, else the probe radius (else 0)."""
    if edge_px is not None:
        return float(edge_px)
    return geo.probe_radius_px if math.isfinite(geo.probe_radius_px) else 0.0


def _nn_kernel(block, *, row0, parallel, model, geo, probe_model, opts):
    ny, nx = block.shape[:2]
    stack = block.reshape(ny * nx, *block.shape[2:])
    peaks, count, _, std = detect_in_stack_nn(stack, model, geo, probe_model, **opts)
    out = np.full((ny * nx, peaks.shape[1] + 1, _N_FIELDS), np.nan)
    out[:, 0, 0] = count
    out[:, 0, 1] = np.nan if std is None else std.mean(axis=(1, 2))
    out[:, 1:] = peaks
    return out.reshape(ny, nx, *out.shape[1:])


def iter_find_bragg_disks_nn(
    data: Any,
    *,
    probe: Any,
    model: Any = None,
    min_relative: float = 0.1,
    min_absolute: float = 0.05,
    min_spacing_px: float | None = None,
    min_significance: float | None = 5.0,
    edge_px: float | None = None,
    max_peaks: int = 100,
    batch_size: int = 32,
    mc_samples: int = 0,
    device: str | None = None,
    scan_chunk: tuple[int, int] | None = None,
) -> Job[BraggPeaks]:
    """Job: Bragg disks of every pattern found by the network, as :class:`BraggPeaks`.

    Parameters
    ----------
    data : DataCube or 4D array ``(scan_y, scan_x, k_y, k_x)`` (read lazily, block by block)
    probe : ndarray ``(k_y, k_x)`` or DiffractionImage
        Vacuum probe, disk near the detector centre (else :class:`ProbeError`).
    model : LoadedModel, name of a registry model, path of a model file, or None (bundled default)
    min_relative, min_absolute : float
        Peaks of the predicted image below this fraction of the strongest / this height are
        dropped (the model is trained to emit heights 0.25-1).
    min_spacing_px : float, optional
        Minimum peak spacing in model pixels (default 1.5 probe disk radii).
    min_significance : float or None
        Keep a peak only if the raw pattern holds a disk there: its counts above the local
        background at least this many noise standard deviations (see
        :func:`~napari_4dstem.analysis.peaks.disk_counts`; default 5). None keeps every peak
        the network marks.
    edge_px : float, optional
        Peaks closer than this to the detector border (detector pixels) are dropped; default
        the probe disk's radius, so every disk kept lies wholly on the detector.
    mc_samples : int
        With 2 or more, Monte-Carlo dropout: the mean of that many stochastic passes is used
        and ``params["mc_std_mean"]`` gets the mean per-pixel standard deviation per pattern.
    device : None, "cpu", "cuda[:n]"
        Default: CUDA when present, else the CPU.

    Returns
    -------
    BraggPeaks with ``intensity`` = counts of the disk above the local background in the raw
    pattern (so lattice and strain fits weight peaks by dose, as for the correlation path's
    ``"fit"``), ``correlation`` = predicted peak height (the network's confidence).
    """
    from ..analysis.virtual import as_datacube
    from ..engine.driver import map_scan
    from .registry import load_model

    cube, cal = as_datacube(data, None)
    lm = load_model(model)
    shape = tuple(cube.shape[2:])
    geo, pm = probe_geometry(probe, shape, lm.config.size)
    opts = {
        "min_relative": float(min_relative),
        "min_absolute": float(min_absolute),
        "min_spacing_px": _spacing(min_spacing_px, geo),
        "min_significance": None if min_significance is None else float(min_significance),
        "edge_px": _edge(edge_px, geo),
        "max_peaks": int(max_peaks),
        "batch_size": int(batch_size),
        "device": pick_device(device),
        "mc_samples": int(mc_samples),
    }
    out = yield from map_scan(
        cube.data,
        _nn_kernel,
        out_tail=(int(max_peaks) + 1, _N_FIELDS),
        kwargs={"model": lm.module, "geo": geo, "probe_model": pm, "opts": opts},
        split_blocks=False,
        scan_chunk=scan_chunk,
        message="NN Bragg disks",
    )
    sy, sx = cube.scan_shape
    flat = out.reshape(sy * sx, *out.shape[2:])
    count = flat[:, 0, 0].astype(np.int64)
    keep = np.arange(int(max_peaks))[None, :] < count[:, None]
    rows = flat[:, 1:][keep]
    offsets = np.concatenate([[0], np.cumsum(count)]).astype(np.int64)
    params = {
        "method": "neural network (FCU-Net)",
        "model": lm.name,
        "model_version": lm.version,
        "model_sha256": lm.sha256,
        "bin": geo.bin,
        "offset_px": list(geo.offset),
        **{k: v for k, v in opts.items() if k != "device"},
        "detector_shape": list(shape),
        "intensity": "disk counts above the local background in the raw pattern",
        "correlation": "predicted peak height (the network's confidence)",
        "positions": "raw detector pixels (k_y, k_x), not origin-corrected",
    }
    if mc_samples > 1:
        params["mc_std_mean"] = flat[:, 0, 1].reshape(sy, sx).tolist()
    return BraggPeaks(
        (sy, sx),
        offsets,
        rows[:, 0],
        rows[:, 1],
        rows[:, 2],
        rows[:, 3],
        name="braggpeaks_nn",
        calibration=cal,
        params=params,
    )


def find_bragg_disks_nn(
    data: Any, *, progress: Callable[[Progress], Any] | None = None, **kwargs: Any
) -> BraggPeaks:
    """Bragg disks by the network (runs :func:`iter_find_bragg_disks_nn` to the end)."""
    return run_job(iter_find_bragg_disks_nn(data, **kwargs), progress)


def predict_pattern(
    pattern: np.ndarray,
    *,
    probe: Any,
    model: Any = None,
    mc_samples: int = 0,
    min_significance: float | None = 5.0,
) -> tuple[DiffractionImage, dict[str, np.ndarray]]:
    """One pattern: the predicted image (in the model frame) and its peaks (detector px).

    For previews (the napari widget): returns the image and ``{"qy", "qx", "intensity"}``
    (peaks as :func:`iter_find_bragg_disks_nn` keeps them).
    """
    from .registry import load_model

    p = np.asarray(pattern)
    if p.ndim != 2:
        raise DataShapeError(f"a pattern must be 2D (k_y, k_x), got shape {p.shape}")
    lm = load_model(model)
    geo, pm = probe_geometry(probe, p.shape, lm.config.size)
    peaks, count, img, std = detect_in_stack_nn(
        p[None], lm.module, geo, pm, mc_samples=mc_samples, min_significance=min_significance
    )
    k = int(count[0])
    im = DiffractionImage(
        img[0],
        name="nn_prediction",
        units="",
        params={"model": lm.name, "bin": geo.bin, "offset_px": list(geo.offset)},
    )
    res = {"qy": peaks[0, :k, 0], "qx": peaks[0, :k, 1], "intensity": peaks[0, :k, 2]}
    if std is not None:
        res["std"] = std[0]
    return im, res
