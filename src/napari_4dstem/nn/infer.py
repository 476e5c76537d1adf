"""Inference: FCU-Net "structure factor" images and Bragg peaks (:class:`BraggPeaks`).

Patterns of any detector shape are binned by an integer factor when larger than the model
(``bin = ceil(max(k_y, k_x) / size)``), then padded or cropped to ``size x size`` so that the
probe's disk centre lands on pixel ``(size // 2, size // 2)``; the predicted peaks are mapped
back to raw detector pixels. Peaks are found and refined on the predicted image with
:func:`~napari_4dstem.analysis.bragg.peaks.find_peaks` / :func:`~napari_4dstem.analysis.bragg.peaks.
refine_peaks` (``"gaussian"``: exact on the Gaussian label peaks the model is trained to emit),
the same machinery as the correlation path, so lattice fits, strain and ACOM run unchanged.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.results import BraggPeaks, DiffractionImage
from ..engine.jobs import Job, Progress, eager, iter_in_thread
from ..errors import DataShapeError, Napari4DSTEMError
from .precision import DEFAULT_PRECISION

__all__ = [
    "DEFAULT_TARGET_RADIUS_PX",
    "Geometry",
    "OutOfDomainWarning",
    "ProbeDisk",
    "ProbeError",
    "detect_in_stack_nn",
    "domain_problems",
    "estimate_dose_per_disk",
    "find_bragg_disks_nn",
    "iter_find_bragg_disks_nn",
    "measure_probe",
    "model_domain",
    "normalised_geometry",
    "normalised_radius",
    "peak_confidence",
    "pick_device",
    "predict_images",
    "probe_from_patterns",
    "probe_geometry",
    "warn_out_of_domain",
]

_N_FIELDS = 4


class ProbeError(Napari4DSTEMError, ValueError):
    """The vacuum probe is unusable for the network (no disk found, or far from centred)."""


def pick_device(device: str | None = None):
    """A torch device: ``device`` if usable, else CUDA when present, else the CPU.

    Parameters
    ----------
    device : str, optional
        ``None`` or ``"auto"`` (CUDA when torch sees it), ``"cpu"``, ``"cuda[:n]"``...; an
        unusable device warns and falls back to the CPU.

    Returns
    -------
    torch.device
        The device to run on.
    """
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

    Attributes
    ----------
    size : int
        The model's input side in pixels.
    bin : int
        Integer binning of the detector (1 in the scale-normalised frame).
    offset : (int, int)
        Crop offset in binned pixels.
    residual : (float, float)
        Sub-pixel remainder of the probe centre, removed by shifting the probe.
    detector_shape : (int, int)
        ``(k_y, k_x)`` of the patterns.
    probe_radius_px : float
        The probe disk's radius in raw detector pixels; NaN when not known.
    scale : float or None
        Model px per detector px of the scale-normalised frame; None for the binned frame.
    centre_px : (float, float) or None
        Detector position of frame pixel ``(H // 2, W // 2)`` (scale-normalised frame only).
    canvas : (int, int) or None
        The model frame ``(H, W)`` (scale-normalised frame only).
    """

    size: int
    bin: int
    offset: tuple[int, int]
    residual: tuple[float, float]
    detector_shape: tuple[int, int]
    #: the probe disk's radius (half maximum) in raw detector pixels; NaN when not known
    probe_radius_px: float = math.nan
    #: scale-normalised frame (:func:`normalised_geometry`): model px per detector px; None for
    #: the binned frame above
    scale: float | None = None
    #: the detector position (px) of frame pixel ``(H // 2, W // 2)`` (scale-normalised frame
    #: only): the probe centre, or at scale 1 its nearest whole pixel (the remainder is then in
    #: ``residual`` and was removed by shifting the probe)
    centre_px: tuple[float, float] | None = None
    #: the model frame ``(H, W)`` (scale-normalised frame only; else ``(size, size)``)
    canvas: tuple[int, int] | None = None

    @property
    def frame(self) -> tuple[int, int]:
        """The model frame's shape ``(H, W)``."""
        return self.canvas if self.canvas is not None else (self.size, self.size)

    @property
    def model_px_per_detector_px(self) -> float:
        """Model pixels per detector pixel (``scale``, or ``1 / bin``)."""
        return self.scale if self.scale is not None else 1.0 / self.bin

    @property
    def model_radius_px(self) -> float:
        """The probe disk's radius in model pixels (NaN when not known)."""
        return self.probe_radius_px * self.model_px_per_detector_px

    def to_detector(self, yx: np.ndarray) -> np.ndarray:
        """Model-frame positions ``(..., 2)`` ``(y, x)`` in raw detector pixels."""
        out = np.empty_like(yx)
        if self.scale is not None:
            for a in (0, 1):
                out[..., a] = self.centre_px[a] + (yx[..., a] - self.frame[a] // 2) / self.scale
            return out
        b = self.bin
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


def _probe_disk(probe: Any, detector_shape: tuple[int, int] | None) -> tuple[np.ndarray, float, float, float, tuple]:
    """A checked vacuum probe image, its background and maximum, half-maximum radius and centre.

    The centre is the centre of mass of the whole disk including its soft edge (a half-maximum
    mask alone is off by up to ~0.1 px from pixelation), within 1.5 half-maximum radii of the
    rough centre.
    """
    p = np.asarray(getattr(probe, "data", probe), dtype=np.float64)
    if p.ndim != 2:
        raise ProbeError(f"the probe must be one 2D image (k_y, k_x), got shape {p.shape}")
    if detector_shape is not None and tuple(p.shape) != tuple(detector_shape):
        raise ProbeError(f"the probe {p.shape} and the patterns {tuple(detector_shape)} differ in shape")
    if not np.all(np.isfinite(p)):
        raise ProbeError("the probe image has NaN or infinite pixels")
    lo, hi = float(np.percentile(p, 10)), float(p.max())
    if not hi > lo:
        raise ProbeError("the probe image is flat: no probe disk")
    half = p > lo + 0.5 * (hi - lo)
    yy, xx = np.indices(p.shape)
    r0 = math.sqrt(half.sum() / math.pi)
    c0 = (yy[half].mean(), xx[half].mean())
    near = np.hypot(yy - c0[0], xx - c0[1]) <= 1.5 * r0 + 2
    w = np.where(near, np.clip(p - lo, 0, None), 0.0)
    return p, lo, hi, r0, (float((w * yy).sum() / w.sum()), float((w * xx).sum() / w.sum()))


def probe_geometry(
    probe: Any, detector_shape: tuple[int, int], size: int, *, max_offset_fraction: float = 0.1
) -> tuple[Geometry, np.ndarray]:
    """Geometry for patterns of ``detector_shape`` and the probe placed in the model frame.

    The binned frame (``scale="bin"``): ``bin = ceil(max(k_y, k_x) / size)``.

    Parameters
    ----------
    probe : ndarray ``(k_y, k_x)`` or DiffractionImage
        Vacuum probe.
    detector_shape : (int, int)
        ``(k_y, k_x)`` of the patterns.
    size : int
        The model's input side in pixels.
    max_offset_fraction : float
        Largest distance of the probe centre from the detector centre, as a fraction of the
        detector (default 0.1).

    Returns
    -------
    geo : Geometry
        The binned geometry.
    probe_model : ndarray ``(size, size)`` float32
        The probe in the model frame, exactly centred, normalised to a maximum of 1.

    Raises
    ------
    ProbeError
        When the probe is not one finite 2D image, has no disk, or is not centred.
    """
    p, _, _, r0, (cy, cx) = _probe_disk(probe, detector_shape)
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


# ---- scale-normalised frame (issue #17) ---------------------------------------------------------
#: the disk radius (model px) a model without a stated one is run at: the middle of the radii
#: the bundled models were trained on
DEFAULT_TARGET_RADIUS_PX = 8.0


class OutOfDomainWarning(UserWarning):
    """The data lie outside what the model was trained and validated on (its card's ``domain``).

    Its peaks may be wrong. Use correlation (``analysis.bragg.disks.find_bragg_disks``) or
    fine-tune the model on such data.
    """


@dataclass(frozen=True)
class ProbeDisk:
    """A vacuum probe's disk: centre and radius in detector px, background level.

    Attributes
    ----------
    centre_px : (float, float)
        Centre ``(k_y, k_x)`` in detector pixels.
    radius_px : float
        Flux radius in detector pixels.
    background : float
        Background level (10th percentile of the image).
    """

    centre_px: tuple[float, float]
    radius_px: float
    background: float


def measure_probe(probe: Any, detector_shape: tuple[int, int] | None = None) -> ProbeDisk:
    """Centre (centre of mass of the disk and its soft edge) and radius of a vacuum probe.

    The radius is the *flux* radius ``sqrt(sum(p - bg) / (pi (plateau - bg)))`` over the disk
    and a margin (``plateau`` the median inside half the half-maximum radius): exact for a
    uniform disk whatever its edge width or pixelation (a half-maximum pixel count is off by up
    to ~0.3 px for a 2 px disk).

    Parameters
    ----------
    probe : ndarray ``(k_y, k_x)`` or DiffractionImage
        Vacuum probe.
    detector_shape : (int, int), optional
        The patterns' shape, which the probe must have.

    Returns
    -------
    ProbeDisk
        Centre, radius and background.

    Raises
    ------
    ProbeError
        For a probe that is not one 2D image of the patterns' shape, has NaNs, or is flat.
    """
    p, lo, hi, r0, (cy, cx) = _probe_disk(probe, detector_shape)
    yy, xx = np.indices(p.shape)
    d = np.hypot(yy - cy, xx - cx)
    inner = d <= max(0.5 * r0, 0.75)
    plateau = float(np.median(p[inner])) if inner.any() else hi
    if not plateau > lo:
        plateau = hi
    flux = float(np.clip(p - lo, 0, None)[d <= 1.5 * r0 + 2].sum())
    r = math.sqrt(flux / (math.pi * (plateau - lo)))
    return ProbeDisk((cy, cx), r, lo)


def _canvas_side(n: int, c: float, s: float, multiple: int, min_side: int) -> int:
    # every detector pixel lands inside the frame: side // 2 >= c s, side // 2 - 1 >= (n-1-c) s
    half = max(c * s, (n - 1 - c) * s + 1.0)
    side = multiple * math.ceil(2 * half / multiple - 1e-9)
    return max(int(side), int(min_side))


def normalised_geometry(
    probe: Any,
    detector_shape: tuple[int, int],
    size: int,
    *,
    target_radius_px: float = DEFAULT_TARGET_RADIUS_PX,
    scale: float | None = None,
    multiple: int = 8,
    max_frame_px: int = 2048,
    max_offset_fraction: float = 0.1,
) -> tuple[Geometry, np.ndarray]:
    """Scale-normalised geometry and the probe in its model frame (issue #17).

    The patterns are resampled by ``scale = target_radius_px / probe radius`` (model px per
    detector px; or ``scale`` as given) about the probe centre, so the probe disk has the
    radius the model was trained on whatever the detector and camera length; the frame
    ``(H, W)`` holds the whole detector (sides multiples of ``multiple``, the model's
    2**depth), the probe centre on pixel ``(H // 2, W // 2)`` exactly. Frames longer than
    ``max_frame_px`` (tiny disks on a big detector) get a smaller scale (the caller warns: the
    disks are then smaller than trained). Resampling is linear interpolation when enlarging
    and a triangle (antialiasing) filter of half-width ``1 / scale`` when shrinking, both
    symmetric, so positions map back without bias (:meth:`Geometry.to_detector`).

    Parameters
    ----------
    probe : ndarray ``(k_y, k_x)`` or DiffractionImage
        Vacuum probe, disk near the detector centre.
    detector_shape : (int, int)
        ``(k_y, k_x)`` of the patterns.
    size : int
        The model's trained input side in pixels.
    target_radius_px : float
        Disk radius in model pixels (default :data:`DEFAULT_TARGET_RADIUS_PX`).
    scale : float, optional
        Model px per detector px instead of ``target_radius_px / radius``.
    multiple : int
        Frame sides are multiples of this (default 8).
    max_frame_px : int
        Longest frame side (default 2048).
    max_offset_fraction : float
        Largest probe offset from the detector centre, fraction of the detector (default 0.1).

    Returns
    -------
    geo : Geometry
        The scale-normalised geometry.
    probe_model : ndarray ``(H, W)`` float32
        The probe in the model frame, centred on ``(H // 2, W // 2)``, maximum 1.

    Raises
    ------
    ProbeError
        When the probe is unusable or not centred, or the scale is not finite and positive.
    """
    disk = measure_probe(probe, detector_shape)
    cy, cx = disk.centre_px
    sh = tuple(int(v) for v in detector_shape)
    centre = (sh[0] // 2, sh[1] // 2)
    off = math.hypot(cy - centre[0], cx - centre[1])
    if off > max_offset_fraction * max(sh):
        raise ProbeError(
            f"the probe is not centred: its disk is at ({cy:.1f}, {cx:.1f}) px, {off:.1f} px from "
            f"the detector centre {centre}; the network needs a vacuum probe recorded with the beam "
            "near the centre (shift it there, e.g. with numpy.roll, or record a new one)"
        )
    s = float(scale) if scale is not None else float(target_radius_px) / disk.radius_px
    if not (math.isfinite(s) and s > 0):
        raise ProbeError(f"cannot scale by {s} (probe radius {disk.radius_px:.3g} px)")
    min_side = 4 * multiple
    for _ in range(3):  # shrink the scale until the frame fits
        hw = (
            _canvas_side(sh[0], cy, s, multiple, min_side),
            _canvas_side(sh[1], cx, s, multiple, min_side),
        )
        if max(hw) <= max_frame_px:
            break
        s *= (max_frame_px - 2 * multiple) / max(hw)
    # at scale 1 (the disk already in the model's radius window) the patterns are not
    # interpolated at all: the frame is aligned on whole detector pixels and only the probe is
    # shifted (Fourier) by the sub-pixel remainder onto the frame centre, as in training
    # (interpolating by a fractional centre blurred the patterns: on the seed-17 multislice
    # fixture strain 0.15x / 0.39x correlation's against 0.11x / 0.34x unblurred)
    snap = abs(s - 1.0) < 1e-9
    at = (float(round(cy)), float(round(cx))) if snap else (cy, cx)
    if snap:
        s = 1.0
        hw = tuple(_canvas_side(sh[a], at[a], s, multiple, min_side) for a in (0, 1))
    geo = Geometry(
        int(size),
        1,
        (0, 0),
        (cy - at[0], cx - at[1]),
        sh,
        float(disk.radius_px),
        scale=s,
        centre_px=at,
        canvas=hw,
    )
    p = np.clip(np.asarray(getattr(probe, "data", probe), np.float32) - disk.background, 0, None)
    pm = to_model_frame(p[None], geo)[0]
    if snap:
        pm = _shift_subpixel(pm, -(cy - at[0]), -(cx - at[1]))
    pm = np.clip(pm - np.percentile(pm, 10), 0, None)
    return geo, (pm / max(pm.max(), 1e-12)).astype(np.float32)


def _axis_matrix(n: int, side: int, c: float, s: float) -> np.ndarray:
    """``(side, n)`` resampling weights of one axis.

    Frame pixel ``u`` samples detector coordinate ``c + (u - side // 2) / s`` with a triangle
    kernel of half-width ``max(1, 1 / s)`` (linear interpolation when enlarging), normalised
    over all integer positions (so pixels beyond the detector read as zero: padding), times
    ``1 / s`` (the counts per disk are kept).
    """
    a = max(1.0, 1.0 / s)
    x = c + (np.arange(side) - side // 2) / s
    k = math.ceil(a) + 1
    j = np.arange(-k, n + k)
    w = np.clip(1.0 - np.abs(j[None, :] - x[:, None]) / a, 0.0, None)
    tot = w.sum(axis=1, keepdims=True)
    # frame pixels far beyond the detector have no support at all
    w = np.divide(w, tot, out=np.zeros_like(w), where=tot > 0)
    return (w[:, k : k + n] / s).astype(np.float32)


_MATRICES: dict = {}


def _resample_matrices(geo: Geometry) -> tuple[np.ndarray, np.ndarray]:
    key = (geo.detector_shape, geo.canvas, geo.centre_px, geo.scale)
    m = _MATRICES.get(key)
    if m is None:
        m = tuple(_axis_matrix(geo.detector_shape[a], geo.canvas[a], geo.centre_px[a], geo.scale) for a in (0, 1))
        if len(_MATRICES) > 16:
            _MATRICES.clear()
        _MATRICES[key] = m
    return m


def model_domain(card: dict | None) -> dict:
    """The ``domain`` section of a model card (``{}`` when the card has none).

    Parameters
    ----------
    card : dict or None
        A model card.

    Returns
    -------
    dict
        Ranges such as ``detector_radius_px``, ``disk_radius_px``, ``energy_kev``.
    """
    d = (card or {}).get("domain", {})
    return dict(d) if isinstance(d, dict) else {}


def _outside(value: float, rng: Any) -> bool:
    try:
        lo, hi = float(rng[0]), float(rng[1])
    except (TypeError, ValueError, IndexError):
        return False
    return not (lo <= value <= hi)


def domain_problems(
    domain: dict,
    geo: Geometry,
    *,
    calibration: Any = None,
    dose_per_disk: float | None = None,
) -> list[str]:
    """What about the data lies outside a model's ``domain`` (empty: nothing known to).

    Checked: the probe radius on the detector (inference was validated for
    ``domain["detector_radius_px"]``), the radius the network sees after normalisation against
    the trained ``disk_radius_px``, the detector size, the beam energy and convergence
    semi-angle when the calibration has them, and the dose (too few counts per pattern only)
    when the data are in counts. Thickness and crystal system cannot be read off the
    data: they are on the card only.

    Parameters
    ----------
    domain : dict
        The card's ``domain`` (:func:`model_domain`).
    geo : Geometry
        The model frame of the data.
    calibration : Calibration, optional
        Beam energy and convergence angle, where known.
    dose_per_disk : float, optional
        Counts per vacuum disk (:func:`estimate_dose_per_disk`).

    Returns
    -------
    list of str
        One line per problem; empty when nothing known lies outside.
    """
    out = []
    r_det, r_mod = geo.probe_radius_px, geo.model_radius_px
    if math.isfinite(r_det) and _outside(r_det, domain.get("detector_radius_px", ())):
        lo, hi = domain["detector_radius_px"]
        out.append(f"probe disk radius {r_det:.1f} detector px (validated {lo:g}-{hi:g} px)")
    if math.isfinite(r_mod) and _outside(r_mod, domain.get("disk_radius_px", ())):
        lo, hi = domain["disk_radius_px"]
        out.append(
            f"disk radius {r_mod:.1f} px as the network sees it (trained {lo:g}-{hi:g} px"
            f"{'; the frame was capped, bin the data first' if geo.scale is not None else ''})"
        )
    n = max(geo.detector_shape)
    if _outside(n, domain.get("detector_px", ())):
        lo, hi = domain["detector_px"]
        out.append(f"detector of {n} px (validated {lo:g}-{hi:g} px)")
    cal = calibration
    e = getattr(cal, "beam_energy_kev", None)
    if e is not None and _outside(float(e), domain.get("energy_kev", ())):
        lo, hi = domain["energy_kev"]
        out.append(f"beam energy {e:g} keV (trained {lo:g}-{hi:g} keV)")
    a = getattr(cal, "convergence_semiangle_mrad", None)
    if a is not None and _outside(float(a), domain.get("convergence_mrad", ())):
        lo, hi = domain["convergence_mrad"]
        out.append(f"convergence semi-angle {a:g} mrad (trained {lo:g}-{hi:g} mrad)")
    # only too few counts is a risk: more than trained is less noise (noise-free planted
    # lattices are found within 0.2 px, tests/nn/test_normalise.py)
    lo_dose = domain.get("dose_per_disk", (None,))[0]
    if dose_per_disk is not None and lo_dose is not None and dose_per_disk < float(lo_dose):
        lo, hi = domain["dose_per_disk"]
        out.append(
            f"about {dose_per_disk:.3g} counts per pattern, fewer than trained ({lo:.3g}-{hi:.3g}): noisier disks"
        )
    return out


def estimate_dose_per_disk(patterns: np.ndarray, geo: Geometry | None = None) -> float | None:
    """The electrons a vacuum probe disk would hold, estimated from a few patterns.

    The median over the patterns of their counts above the median pixel (the background of a
    sparse diffraction pattern). An estimate (electrons scattered off the detector are missed, a
    diffuse background is partly counted), good to the factor of two a domain check needs.

    Parameters
    ----------
    patterns : ndarray ``(n, k_y, k_x)``
        A few patterns.
    geo : Geometry, optional
        Not used by the estimate (kept for callers that pass it).

    Returns
    -------
    float or None
        Electrons per pattern; None when the data are not counts (non-integer or non-finite).
    """
    q = np.asarray(patterns, dtype=np.float64)
    if q.size == 0 or not np.all(np.isfinite(q)) or np.any(q != np.round(q)):
        return None
    flat = q.reshape(q.shape[0], -1)
    total = flat.sum(axis=1) - np.median(flat, axis=1) * flat.shape[1]
    return float(np.median(total))


def warn_out_of_domain(problems: list[str], model_name: str, *, stacklevel: int = 3) -> None:
    """One :class:`OutOfDomainWarning` listing every problem and what to do.

    Parameters
    ----------
    problems : list of str
        From :func:`domain_problems`; nothing is warned when empty.
    model_name : str
        The model named in the message.
    stacklevel : int
        Passed to :func:`warnings.warn`.

    Returns
    -------
    None
        Warns only.
    """
    if not problems:
        return
    import warnings

    warnings.warn(
        OutOfDomainWarning(
            f"the data lie outside the domain of model {model_name!r}: "
            + "; ".join(problems)
            + ". Its disk positions may be wrong there: check them against correlation "
            "(analysis.bragg.disks.find_bragg_disks / `napari-4dstem disks`), or fine-tune the model "
            "on such data (`napari-4dstem train ... --init MODEL`)."
        ),
        stacklevel=stacklevel,
    )


def probe_from_patterns(patterns: np.ndarray, *, edge_px: float = 0.5) -> np.ndarray:
    """A vacuum-probe stand-in from patterns ``(n, k_y, k_x)`` when none was recorded.

    A uniform disk (logistic edge ``edge_px``) at the centre and flux radius of the central
    beam of their mean, the bright region above half its maximum that holds the brightest
    pixel within the central half of the detector (:func:`measure_probe` on it alone).
    Thick samples whose central disk is not uniform give a rougher radius; a recorded
    vacuum probe is better.

    Parameters
    ----------
    patterns : ndarray ``(n, k_y, k_x)``
        Some patterns of the scan.
    edge_px : float
        Logistic edge width of the disk, detector pixels (default 0.5).

    Returns
    -------
    ndarray ``(k_y, k_x)`` float64
        The stand-in probe, plateau 1.

    Raises
    ------
    ProbeError
        When the patterns are not finite 3D data or the mean has no central beam.
    """
    from scipy import ndimage

    from ..simulation.samples import soft_disk

    m = np.asarray(patterns, dtype=np.float64).mean(axis=0)
    if m.ndim != 2 or not np.all(np.isfinite(m)):
        raise ProbeError("patterns for a probe stand-in must be (n, k_y, k_x), finite")
    ny, nx = m.shape
    bg = float(np.median(m))
    sm = ndimage.uniform_filter(m, 3)
    win = np.zeros(m.shape, bool)
    win[ny // 4 : ny - ny // 4, nx // 4 : nx - nx // 4] = True
    iy, ix = np.unravel_index(np.argmax(np.where(win, sm, -np.inf)), m.shape)
    top = float(sm[iy, ix])
    if not top > bg:
        raise ProbeError("no central beam in the mean pattern: record a vacuum probe")
    lab, _ = ndimage.label(sm > bg + 0.5 * (top - bg))
    region = ndimage.binary_dilation(lab == lab[iy, ix], iterations=3)
    d = measure_probe(np.where(region, m, bg))
    yy, xx = np.indices(m.shape)
    return soft_disk(np.hypot(yy - d.centre_px[0], xx - d.centre_px[1]), d.radius_px, edge_px)


def _shift_subpixel(img: np.ndarray, dy: float, dx: float) -> np.ndarray:
    if abs(dy) < 1e-9 and abs(dx) < 1e-9:
        return img
    fy = np.fft.fftfreq(img.shape[0])[:, None]
    fx = np.fft.fftfreq(img.shape[1])[None, :]
    ph = np.exp(-2j * np.pi * (fy * dy + fx * dx))
    return np.real(np.fft.ifft2(np.fft.fft2(img) * ph)).astype(np.float32)


def to_model_frame(patterns: np.ndarray, geo: Geometry) -> np.ndarray:
    """``(n, k_y, k_x)`` patterns in the model frame ``(n, H, W)``.

    Resampled (a scale-normalised geometry), or binned and padded/cropped to
    ``(n, size, size)``.
    """
    if geo.scale is not None:
        q = np.asarray(patterns, dtype=np.float32)
        c = geo.centre_px
        if geo.scale == 1.0 and float(c[0]).is_integer() and float(c[1]).is_integer():
            # pixel-aligned frame: a plain copy (the resampling matrices are shifted identities)
            h, w = geo.frame
            oy, ox = h // 2 - int(c[0]), w // 2 - int(c[1])
            out = np.zeros((q.shape[0], h, w), np.float32)
            ny, nx = q.shape[1:]
            ys, xs = max(0, -oy), max(0, -ox)
            ye, xe = min(ny, h - oy), min(nx, w - ox)
            out[:, ys + oy : ye + oy, xs + ox : xe + ox] = q[:, ys:ye, xs:xe]
            return out
        ay, ax = _resample_matrices(geo)
        return np.matmul(np.matmul(ay, q), ax.T)
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
    """Model output ``(n, size, size)`` for model-frame patterns.

    Parameters
    ----------
    model : torch.nn.Module
        The network (called as ``model(x, probe)``).
    patterns : ndarray ``(n, H, W)`` float32
        Patterns in the model frame (:func:`to_model_frame`).
    probe : ndarray ``(H, W)`` float32
        The probe in the model frame.
    batch_size : int
        Patterns per forward pass (default 32).
    device : str or torch.device, optional
        Where it runs (:func:`pick_device`).
    mc_samples : int
        With 2 or more: that many Monte-Carlo dropout passes, averaged.

    Returns
    -------
    images : ndarray ``(n, H, W)`` float32
        The predicted "structure factor" images (Gaussian peaks at the disks).
    std : ndarray ``(n, H, W)`` float32 or None
        The MC-dropout standard deviation per pixel when ``mc_samples > 1``, else None.
    """
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


#: background of the disk significance test (:func:`~napari_4dstem.analysis.bragg.peaks.disk_counts`):
#: "robust" leaves out ring sectors lit by a brighter neighbour's edge (small disks next to the
#: central beam; session 11), "mean" is the whole ring (before session 11)
RING_BACKGROUND = "robust"


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
    in the raw pattern above the local background, :func:`~napari_4dstem.analysis.bragg.peaks.
    disk_counts`; 0 at least; without a probe radius in ``geo``, the network's height at the
    peak), correlation (the network's confidence: height x sharpness of
    its predicted peak, :func:`peak_confidence`); NaN in unused slots. ``min_spacing_px``
    (default 1.5 probe radii) is in model pixels. ``edge_px`` (detector pixels; default the
    probe radius, as for correlation): peaks closer to the detector border are dropped, so
    every disk kept lies wholly on the detector (a cut disk's centre is biased, and the
    outermost disks weigh most in a lattice fit).
    ``min_significance``: peaks whose disk is not this many noise standard deviations above
    the local background in the raw pattern are dropped (None keeps them all).

    Parameters
    ----------
    patterns : ndarray ``(n, k_y, k_x)``
        Raw patterns.
    model : torch.nn.Module
        The network.
    geo : Geometry
        The model frame (:func:`normalised_geometry` or :func:`probe_geometry`).
    probe_model : ndarray
        The probe in the model frame.
    min_relative, min_absolute, min_spacing_px, min_significance, edge_px, max_peaks : optional
        As :func:`iter_find_bragg_disks_nn`.
    batch_size, device, mc_samples : optional
        As :func:`predict_images`.

    Returns
    -------
    peaks : ndarray ``(n, max_peaks, 4)`` float64
        Fields qy, qx, intensity, correlation (see above).
    count : ndarray ``(n,)`` int64
        Peaks per pattern.
    images : ndarray ``(n, H, W)`` float32
        The predicted images.
    std : ndarray or None
        Their MC-dropout standard deviation.

    Notes
    -----
    Peaks of the predicted image (:func:`~napari_4dstem.analysis.bragg.peaks.find_peaks`),
    refined by a 3-point Gaussian fit (``refine_peaks(method="gaussian")``), mapped back by
    :meth:`Geometry.to_detector`, then counted and tested on the raw pattern.
    """
    from ..analysis.bragg.peaks import (
        compact_rows,
        disk_counts,
        find_peaks,
        keep_significant,
        refine_peaks,
    )

    x = to_model_frame(patterns, geo)
    img, std = predict_images(
        model, x, probe_model, batch_size=_frame_batch(batch_size, geo), device=device, mc_samples=mc_samples
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
    if PEAK_REFINE == "gaussian2d":
        yx = refine_gaussian_2d(pos, table, yx)
    out = np.full((x.shape[0], int(max_peaks), _N_FIELDS), np.nan)
    det = geo.to_detector(yx)
    out[..., 0:2] = det
    out[..., 3] = peak_confidence(pos, table, getattr(getattr(model, "config", None), "label_sigma_px", 1.0))
    # the network's height at the peak: replaced by the disk counts below where the probe radius
    # is known; without one it stands in (not the confidence: weights "intensity*correlation"
    # would square it)
    out[..., 2] = table.value
    # drop peaks whose disk is not wholly on the real detector (padding, border)
    sh = geo.detector_shape
    e = _edge(edge_px, geo)
    inside = (det[..., 0] >= e) & (det[..., 0] <= sh[0] - 1 - e) & (det[..., 1] >= e) & (det[..., 1] <= sh[1] - 1 - e)
    valid = inside & (np.arange(int(max_peaks))[None] < table.count[:, None])
    out, count = compact_rows(valid, out)
    if math.isfinite(geo.probe_radius_px):
        sz = disk_counts(patterns, out[..., 0:2], count, radius_px=geo.probe_radius_px, background=RING_BACKGROUND)
        out[..., 2] = np.clip(sz[..., 0], 0.0, None)
        out, count = keep_significant(out, count, sz[..., 1], min_significance)
    return out, count, img, std


# "gaussian": the 3-point fit per axis (default); "gaussian2d": refine_gaussian_2d, tried in
# session 12 for the thick target and measured no better (worse on Si 30 nm, GaN 40 nm; docs/nn.md)
PEAK_REFINE = "gaussian"

# least-squares quadratic in (dy, dx) through the 3x3 neighbourhood: coefficients of
# (1, dy, dx, dy^2, dx^2, dy dx) from the 9 log values (row-major), one pseudo-inverse for all
_D = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], float)
_QUAD_PINV = np.linalg.pinv(
    np.stack([np.ones(9), _D[:, 0], _D[:, 1], _D[:, 0] ** 2, _D[:, 1] ** 2, _D[:, 0] * _D[:, 1]], 1)
)


def _log_around_peaks(images: np.ndarray, table) -> tuple[np.ndarray, ...]:
    """What the fits through a peak's 3x3 neighbourhood index: ``(ok, b, iy, ix, log_images)``.

    ``ok (n, m)``: the used slots of ``table``; ``b, iy, ix (n, m)``: each peak's image and pixel
    (unused slots at pixel (1, 1); kept one pixel off the border, so all eight neighbours exist);
    ``log_images``: ``log`` of ``images`` clipped to 1e-6.
    """
    n, m = table.value.shape
    ok = np.isfinite(table.yx[..., 0]) & np.isfinite(table.yx[..., 1])
    h_, w_ = images.shape[1:]
    iy = np.clip(np.where(ok, table.yx[..., 0], 1), 1, h_ - 2).astype(np.intp)
    ix = np.clip(np.where(ok, table.yx[..., 1], 1), 1, w_ - 2).astype(np.intp)
    b = np.broadcast_to(np.arange(n)[:, None], (n, m))
    return ok, b, iy, ix, np.log(np.clip(images, 1e-6, None))


def refine_gaussian_2d(images: np.ndarray, table, fallback: np.ndarray) -> np.ndarray:
    """Sub-pixel peak centres from a 2D Gaussian through the 3x3 neighbourhood, cross term included.

    A quadratic in ``log`` of the image, fitted by least squares to the nine pixels.

    The 3-point Gaussian per axis takes each axis' maximum along the row and column through the
    peak pixel: for a peak elongated off the axes (an ellipse turned by an angle) that is not
    the centre, by ``a_xy / (2 a_yy)`` times the column offset of the pixel. The full quadratic
    uses the nine pixels and its cross term.

    Parameters
    ----------
    images : ndarray ``(n, H, W)``
        The predicted images (positive).
    table : PeakTable
        Their integer peaks.
    fallback : ndarray ``(n, m, 2)``
        Where the fit fails (not a maximum, or a shift beyond one pixel): these positions.

    Returns
    -------
    ndarray ``(n, m, 2)``
        The refined positions (model pixels).
    """
    ok, b, iy, ix, lg = _log_around_peaks(images, table)
    vals = np.stack([lg[b, iy + int(dy), ix + int(dx)] for dy, dx in _D], -1)  # (n, m, 9)
    c = vals @ _QUAD_PINV.T  # (n, m, 6)
    by, bx, ayy, axx, axy = c[..., 1], c[..., 2], c[..., 3], c[..., 4], c[..., 5]
    # gradient 0: [[2 ayy, axy], [axy, 2 axx]] d = -[by, bx]
    det = 4 * ayy * axx - axy**2
    with np.errstate(divide="ignore", invalid="ignore"):
        dy = (-2 * axx * by + axy * bx) / det
        dx = (-2 * ayy * bx + axy * by) / det
    good = ok & (ayy < 0) & (axx < 0) & (det > 0) & (np.abs(dy) <= 1.0) & (np.abs(dx) <= 1.0)
    out = np.array(fallback, float, copy=True)
    out[..., 0] = np.where(good, iy + dy, out[..., 0])
    out[..., 1] = np.where(good, ix + dx, out[..., 1])
    return out


def peak_confidence(images: np.ndarray, table, label_sigma_px: float = 1.0) -> np.ndarray:
    """The network's confidence in each peak of its predicted images: height x sharpness.

    ``h * label_sigma_px**2 / s**2``, with ``h`` the predicted image at the peak and ``s**2``
    the variance of the Gaussian through the peak and its four neighbours (the mean of the two
    axes' ``log`` curvatures): the curvature of the predicted map at the peak, 1 for the label
    peak the network is trained to emit (height 1, width ``label_sigma_px``), lower for a low
    or broad peak, i.e. one the network places less surely. As lattice-fit weights, times the
    disk counts (``weights="intensity*correlation"`` of
    :func:`~napari_4dstem.analysis.bragg.lattice.fit_lattice`), it was at least as good as the
    counts alone on every tuning scan (a tie on Si; docs/nn.md, "Lattice-fit weights").

    Parameters
    ----------
    images : ndarray ``(n, H, W)``
        The predicted images (positive: clip them first).
    table : PeakTable
        Their integer peaks (:func:`~napari_4dstem.analysis.bragg.peaks.find_peaks`).
    label_sigma_px : float
        The width of the trained label peaks, model pixels.

    Returns
    -------
    ndarray ``(n, max_peaks)`` float64
        The confidence per peak (between 1e-3 and 4 times the height: the sharpness is capped
        at 4x the label peak's); NaN in unused slots.
    """
    ok, b, iy, ix, lg = _log_around_peaks(images, table)
    f0 = lg[b, iy, ix]
    cy = 2 * f0 - lg[b, iy - 1, ix] - lg[b, iy + 1, ix]  # 1 / s_y^2
    cx = 2 * f0 - lg[b, iy, ix - 1] - lg[b, iy, ix + 1]
    # capped at 4x the label peak's sharpness: a one-pixel spike (s -> 0) cannot outweigh a real
    # peak without bound (no peak of the tuning or held-out multislice scans exceeds 1.8x)
    ls2 = float(label_sigma_px) ** 2
    inv_s2 = np.clip(0.5 * (cy + cx), 1e-3, 4.0 / ls2)
    return np.where(ok, np.exp(f0) * inv_s2 * ls2, np.nan)


def _frame_batch(batch_size: int, geo: Geometry) -> int:
    """Patterns per forward pass.

    ``batch_size`` for frames up to twice the trained side (a 256 px frame of the 128 px model:
    8 per pass ran 1.4-1.7x slower than 32 on the 2-core CPU, docs/performance.md), fewer for
    larger frames (memory grows with the area).
    """
    h, w = geo.frame
    cap = 4 * geo.size * geo.size
    if h * w <= cap:
        return int(batch_size)
    return max(1, int(batch_size) * cap // (h * w))


def _spacing(min_spacing_px: float | None, geo: Geometry) -> float:
    """Peak spacing in model pixels: as given, else 1.5 probe radii, else 4.

    Disks whose centres are closer than 1.5 radii overlap by more than half; the NN otherwise
    marks bright disk edges of thick samples as extra peaks right next to the disk.
    """
    if min_spacing_px is not None:
        return float(min_spacing_px)
    if math.isfinite(geo.probe_radius_px):
        return max(2.0, 1.5 * geo.model_radius_px)
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


class _Stopped(Exception):
    """A block of the network abandoned by a cancelled job (raised in its thread, dropped there)."""


_NN_POOL: Any = None


def _nn_pool():
    """The thread that runs the network's blocks of the whole-scan jobs.

    One, kept: torch keeps its intra-op threads per calling thread, so a new thread per block
    would make a new team.
    """
    global _NN_POOL
    if _NN_POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _NN_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="4dstem-nn")
    return _NN_POOL


def _forget_nn_pool() -> None:
    """After ``os.fork()``: the child has the parent's pool but not its thread; make a new one."""
    global _NN_POOL
    _NN_POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_nn_pool)


def _stop_hooks(net, stop) -> list:
    """Forward hooks on every module of ``net`` that raise :class:`_Stopped` once ``stop`` is set.

    ``stop`` is a ``threading.Event``: a forward pass abandoned by a cancelled job ends at its
    next layer instead of running on (the first pass in a process took 4.3 s at load 8, one block).
    """

    def check(*_):
        if stop.is_set():
            raise _Stopped

    return [m.register_forward_pre_hook(check) for m in net.modules()]


def _iter_nn_blocks(data, net, kwargs, *, out_tail, scan_chunk, message, partial) -> Job[np.ndarray]:
    """Job: :func:`_nn_kernel` on every scan block, assembled over the scan.

    As :func:`~napari_4dstem.engine.driver.map_scan` with a self-parallel kernel (the network).

    Each block runs in the network's own thread (:func:`_nn_pool`) while this job waits for it in
    steps of :data:`~napari_4dstem.engine.jobs.WAIT_STEP_S` (``Progress(blocks done, ...)``, a
    Cancel point each): a block's time depends on the load and on one-time costs (the process's
    first forward pass, numba loading its caches), so no block size keeps a step short. A
    cancelled job returns at its next step; the block in flight stops at its network's next layer
    (:func:`_stop_hooks`) and its result is dropped. Steps: one per block written (with the map so
    far from ``partial`` at most every ``PARTIAL_EVERY_S`` and at the last block), and the waiting
    steps between.
    """
    import threading
    from concurrent.futures import TimeoutError as FutureTimeout

    from ..engine.chunks import block_slices, default_scan_chunk, iter_scan_blocks, native_chunks
    from ..engine.jobs import PARTIAL_EVERY_S, WAIT_STEP_S

    shape = tuple(int(v) for v in data.shape)
    if scan_chunk is None:
        scan_chunk = default_scan_chunk(shape, np.dtype(data.dtype).itemsize, native_chunks(data))
    total = len(block_slices(shape[:2], scan_chunk))
    out = np.empty(shape[:2] + tuple(out_tail), dtype=np.float64)
    done = np.zeros(shape[:2], bool)
    stop = threading.Event()
    hooks = _stop_hooks(net, stop)
    last = -math.inf
    fut = None
    try:
        for k, (sy, sx, block) in enumerate(iter_scan_blocks(data, scan_chunk)):
            fut = _nn_pool().submit(_nn_kernel, np.asarray(block), row0=0, parallel=True, model=net, **kwargs)
            while True:
                try:
                    res = fut.result(timeout=WAIT_STEP_S)
                    break
                except FutureTimeout:
                    yield Progress(k, total, message)
            out[sy, sx] = res
            done[sy, sx] = True
            p = Progress(k + 1, total, message)
            if partial is not None and (time.perf_counter() - last >= PARTIAL_EVERY_S or k + 1 == total):
                p = Progress(k + 1, total, message, partial=partial(out, done))
                last = time.perf_counter()
            yield p
    finally:
        stop.set()  # a cancelled job: the block in flight ends at its next layer, in its thread

        def unhook(_=None):
            for h in hooks:
                h.remove()

        # Never left on the network, but only once the block in flight has stopped (it needs them
        # to stop); a done future calls back at once, in the pool's thread before its next block.
        if fut is None:
            unhook()
        else:
            fut.add_done_callback(unhook)
    return out


def iter_find_bragg_disks_nn(
    data: Any,
    *,
    probe: Any = None,
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
    scale: str | float = "auto",
    target_radius_px: float | None = None,
    max_frame_px: int = 2048,
    check_domain: bool = True,
    precision: str = DEFAULT_PRECISION,
) -> Job[BraggPeaks]:
    """Job: Bragg disks of every pattern found by the network, as :class:`BraggPeaks`.

    Parameters
    ----------
    data : DataCube or array-like ``(scan_y, scan_x, k_y, k_x)``
        The 4D-STEM data, read lazily, block by block.
    probe : ndarray ``(k_y, k_x)`` or DiffractionImage, optional
        Vacuum probe, disk near the detector centre (else :class:`ProbeError`). None: a
        stand-in is made from the central beam of the mean of 64 patterns spread over the
        scan (:func:`probe_from_patterns`; a uniform disk of its measured centre and radius),
        and ``params["probe"]`` says so.
    model : LoadedModel, str, path or None
        A loaded model, the name of a registry model, the path of a model file, or None (the
        bundled default).
    min_relative, min_absolute : float
        Peaks of the predicted image below this fraction of the strongest / this height are
        dropped (the model is trained to emit heights 0.25-1).
    min_spacing_px : float, optional
        Minimum peak spacing in model pixels (default 1.5 probe disk radii).
    min_significance : float or None
        Keep a peak only if the raw pattern holds a disk there: its counts above the local
        background at least this many noise standard deviations (see
        :func:`~napari_4dstem.analysis.bragg.peaks.disk_counts`; default 5). None keeps every peak
        the network marks.
    edge_px : float, optional
        Peaks closer than this to the detector border (detector pixels) are dropped; default
        the probe disk's radius, so every disk kept lies wholly on the detector.
    max_peaks : int
        At most this many peaks per pattern (default 100).
    batch_size : int
        Patterns per forward pass (default 32; fewer for frames larger than trained).
    mc_samples : int
        With 2 or more, Monte-Carlo dropout: the mean of that many stochastic passes is used
        and ``params["mc_std_mean"]`` gets the mean per-pixel standard deviation per pattern.
    device : None, "cpu", "cuda[:n]"
        Default: CUDA when present, else the CPU.
    scan_chunk : (int, int), optional
        Scan block read at a time.
    scale : "auto", "bin" or float
        ``"auto"`` (default): resample every pattern and the probe so the probe disk has a
        radius the model was trained on (``target_radius_px``, default from the card's
        domain: :func:`normalised_radius`), whatever the detector size and camera length
        (:func:`normalised_geometry`); ``"bin"``: the earlier fixed integer binning into the
        model size (``ceil(max(k_y, k_x) / size)``); a float: that many model px per detector
        px.
    target_radius_px : float, optional
        Disk radius in model pixels for ``scale="auto"`` (default :func:`normalised_radius`).
    max_frame_px : int
        Longest side of the resampled frame (tiny disks on a big detector): beyond it the
        scale is lowered and the domain warning says the disks are smaller than trained.
    check_domain : bool
        Warn (one :class:`OutOfDomainWarning` naming every problem and what to do) when the
        data lie outside the model card's ``domain``; ``params["out_of_domain"]`` lists them.
    precision : "bfloat16", "float32" or "auto"
        The network's convolutions in bfloat16 (default since session 12: 1.6-2.3x faster on
        CPUs with native bfloat16 dot products, e.g. AVX512-BF16; peaks within a few hundredths
        of a pixel of float32's, strain and recall within noise on held-out scans, docs/nn.md)
        or float32 (the model's own arithmetic). On a CPU without native bfloat16, "bfloat16"
        and "auto" run float32. Only the CPU's real-domain inference twin runs in bfloat16
        (with ``mc_samples`` or on CUDA the network runs in float32); ``params["precision"]``
        says which ran.

    Yields
    ------
    Progress
        Progress of the scan, with a partial map of the disks per pattern.

    Returns
    -------
    BraggPeaks
        The generator's return value: ragged peaks in raw detector pixels with ``intensity`` =
        counts of the disk above the local background in the raw pattern, ``correlation`` = the
        network's confidence (height x sharpness of its predicted peak, 1 for the trained label
        peak: :func:`peak_confidence`); ``params["fit_weights"]`` =
        ``"intensity*correlation"``, so lattice and strain fits weight each peak by its dose
        times the network's confidence (:func:`~napari_4dstem.analysis.bragg.lattice.fit_lattice`
        with ``weights="auto"``).

    Raises
    ------
    ProbeError
        When the probe is unusable or not centred (or no stand-in can be made).
    ValueError
        When ``scale`` is not ``"auto"``, ``"bin"`` or a number, or ``precision`` is not one of
        its three values.

    Notes
    -----
    A fully convolutional U-Net (FCU-Net) conditioned on the probe maps each pattern, moved
    into the model frame (scale-normalised so the probe disk has the trained radius), to an
    image with a Gaussian peak at every Bragg disk (the "structure factor" image of Munshi et
    al. [1]_); peaks are found, refined and mapped back to detector pixels, then weighed by
    the disk counts of the raw pattern (:func:`detect_in_stack_nn`). Streams the scan in
    blocks through :func:`~napari_4dstem.engine.driver.map_scan`.

    References
    ----------
    .. [1] J. Munshi et al., "Disentangling multiple scattering with deep learning: application
       to strain mapping from electron diffraction patterns", arXiv:2202.00204 (2022).
    """
    from ..analysis.bragg.disks import disk_count_partial
    from ..analysis.virtual.images import as_datacube
    from .registry import load_model

    # the first import of torch takes seconds (15 s at load 9): in a thread, a Cancel point
    # every 0.1 s while it runs (the set-up below stays within a few tenths of a second)
    dev = yield from iter_in_thread(pick_device, device, message="loading torch...")
    prec = _precision(precision, dev)
    cube, cal = as_datacube(data, None)
    lm = load_model(model)
    yield Progress(1, 1, "loading the model")
    shape = tuple(cube.shape[2:])
    probe_note = "given"
    if probe is None:
        probe = probe_from_patterns((yield from _iter_sample_patterns(cube, 64)))
        probe_note = "stand-in from the central beam of the mean of up to 64 patterns"
    geo, pm = _geometry_for(probe, shape, lm, scale, target_radius_px, max_frame_px)
    problems = []
    if check_domain:
        problems = _domain_check(lm, geo, cal, (yield from _iter_sample_patterns(cube)))
        warn_out_of_domain(problems, f"{lm.name}@{lm.version}", stacklevel=3)
    yield Progress(1, 1, "preparing the network")
    opts = {
        "min_relative": float(min_relative),
        "min_absolute": float(min_absolute),
        "min_spacing_px": _spacing(min_spacing_px, geo),
        "min_significance": None if min_significance is None else float(min_significance),
        "edge_px": _edge(edge_px, geo),
        "max_peaks": int(max_peaks),
        "batch_size": int(batch_size),
        "device": dev,
        "mc_samples": int(mc_samples),
    }
    net = _inference_copy(lm.module, mc_dropout=int(mc_samples) > 1, precision=prec)
    yield Progress(1, 1, "preparing the network")  # a Cancel point before the first block
    out = yield from _iter_nn_blocks(
        cube.data,
        net,
        {"geo": geo, "probe_model": pm, "opts": opts},
        out_tail=(int(max_peaks) + 1, _N_FIELDS),
        scan_chunk=scan_chunk,
        message="NN Bragg disks",
        partial=disk_count_partial("NN disks per pattern"),
    )
    has_radius = math.isfinite(geo.probe_radius_px)
    params = {
        "method": "neural network (FCU-Net)",
        "model": lm.name,
        "model_version": lm.version,
        "model_sha256": lm.sha256,
        "bin": geo.bin,
        "offset_px": list(geo.offset),
        "scale": "bin" if geo.scale is None else float(geo.scale),
        "model_frame": list(geo.frame),
        "probe_radius_px": float(geo.probe_radius_px),
        "model_radius_px": float(geo.model_radius_px),
        "out_of_domain": problems,
        "probe": probe_note,
        **{k: v for k, v in opts.items() if k != "device"},
        "detector_shape": list(shape),
        "intensity": "disk counts above the local background in the raw pattern"
        if has_radius
        else "the network's height at the peak (no probe radius)",
        "correlation": "the network's confidence: height x sharpness of its predicted peak (1: the label peak)",
        # the lattice fit's default weights for these peaks (fit_lattice(weights="auto")); the
        # height alone without a probe radius (height x confidence was never measured)
        "fit_weights": "intensity*correlation" if has_radius else "intensity",
        "positions": "raw detector pixels (k_y, k_x), not origin-corrected",
        "precision": prec if int(mc_samples) <= 1 else "float32",
    }
    if mc_samples > 1:
        params["mc_std_mean"] = out[:, :, 0, 1].tolist()
    return BraggPeaks.from_padded(out, name="braggpeaks_nn", calibration=cal, params=params)


find_bragg_disks_nn = eager(iter_find_bragg_disks_nn, "Bragg disks of every pattern by the network.")


def predict_pattern(
    pattern: np.ndarray,
    *,
    probe: Any = None,
    model: Any = None,
    mc_samples: int = 0,
    min_significance: float | None = 5.0,
    scale: str | float = "auto",
    target_radius_px: float | None = None,
    max_frame_px: int = 2048,
    precision: str = DEFAULT_PRECISION,
    **detect: Any,
) -> tuple[DiffractionImage, dict[str, np.ndarray]]:
    """One pattern: the predicted image (in the model frame) and its peaks (detector px).

    For previews (the napari widgets): returns the image and ``{"qy", "qx", "intensity",
    "correlation"}`` (peaks as :func:`iter_find_bragg_disks_nn` keeps them; ``detect``: its
    peak keywords ``min_relative``, ``min_absolute``, ``min_spacing_px``, ``edge_px``,
    ``max_peaks``, so a preview with the run's keywords finds the run's disks; ``precision``
    as there, so a bfloat16 run's preview is bfloat16 too). No domain warning here (the
    preview is called on every pattern shown); ``params["out_of_domain"]`` of the image lists
    the problems.
    """
    from .registry import load_model

    p = np.asarray(pattern)
    if p.ndim != 2:
        raise DataShapeError(f"a pattern must be 2D (k_y, k_x), got shape {p.shape}")
    lm = load_model(model)
    if probe is None:
        probe = probe_from_patterns(p[None])
    geo, pm = _geometry_for(probe, p.shape, lm, scale, target_radius_px, max_frame_px)
    problems = _domain_check(lm, geo, None, p[None])
    prec = _precision(precision, pick_device(detect.get("device")))
    net = lm.module
    if prec == "bfloat16" and int(mc_samples) <= 1:
        net = _inference_copy(lm.module, precision=prec)
    peaks, count, img, std = detect_in_stack_nn(
        p[None], net, geo, pm, mc_samples=mc_samples, min_significance=min_significance, **detect
    )
    k = int(count[0])
    im = DiffractionImage(
        img[0],
        name="nn_prediction",
        units="",
        params={
            "model": lm.name,
            "bin": geo.bin,
            "offset_px": list(geo.offset),
            "scale": "bin" if geo.scale is None else float(geo.scale),
            "out_of_domain": problems,
            # frame pixel (i, j) lies at detector px origin + (i, j) * step
            "frame_origin_px": [float(v) for v in geo.to_detector(np.zeros(2))],
            "frame_step_px": 1.0 / geo.model_px_per_detector_px,
            "precision": prec if int(mc_samples) <= 1 else "float32",
        },
    )
    res = {"qy": peaks[0, :k, 0], "qx": peaks[0, :k, 1], "intensity": peaks[0, :k, 2], "correlation": peaks[0, :k, 3]}
    if std is not None:
        res["std"] = std[0]
    return im, res


def _geometry_for(probe, shape, lm, scale, target_radius_px, max_frame_px):
    """The model frame for ``scale`` ``"auto"`` / ``"bin"`` / a float.

    See :func:`iter_find_bragg_disks_nn`.
    """
    if isinstance(scale, str):
        if scale == "bin":
            return probe_geometry(probe, shape, lm.config.size)
        if scale != "auto":
            raise ValueError(f"scale must be 'auto', 'bin' or a number, got {scale!r}")
        factor = None
    else:
        factor = float(scale)
    if target_radius_px is None and factor is None:
        target_radius_px = normalised_radius(lm.card, measure_probe(probe, shape).radius_px)
    return normalised_geometry(
        probe,
        shape,
        lm.config.size,
        target_radius_px=float(target_radius_px or DEFAULT_TARGET_RADIUS_PX),
        scale=factor,
        multiple=2**lm.config.depth,
        max_frame_px=int(max_frame_px),
    )


def normalised_radius(card: dict | None, probe_radius_px: float) -> float:
    """The disk radius (model px) a model runs a probe of ``probe_radius_px`` at.

    The card's ``domain["normalised_radius_px"]`` (default :data:`DEFAULT_TARGET_RADIUS_PX`)
    for smaller disks; disks from ``unscaled_from_px`` (default the same) to
    ``normalised_radius_max_px`` as they are (not resampled at all); larger ones shrunk only to
    ``normalised_radius_max_px`` (which keeps the network's ~0.1-0.15 model-px error from
    growing by the shrink factor on the detector).

    Parameters
    ----------
    card : dict or None
        The model card.
    probe_radius_px : float
        The probe disk's radius on the detector, pixels.

    Returns
    -------
    float
        The radius in model pixels.
    """
    dom = model_domain(card)
    lo = float(dom.get("normalised_radius_px", DEFAULT_TARGET_RADIUS_PX))
    hi = max(lo, float(dom.get("normalised_radius_max_px", lo)))
    keep = min(lo, float(dom.get("unscaled_from_px", lo)))
    r = float(probe_radius_px)
    if keep <= r <= hi:
        return r
    return lo if r < keep else hi


def _sample_patterns(cube, n: int = 16) -> np.ndarray:
    """Up to ``n`` patterns spread over the scan (for the dose estimate)."""
    sy, sx = cube.scan_shape
    idx = np.unique(np.linspace(0, sy * sx - 1, min(n, sy * sx)).astype(int))
    return np.stack([np.asarray(cube.data[i // sx, i % sx]) for i in idx])


def _iter_sample_patterns(cube, n: int = 16) -> Job[np.ndarray]:
    """:func:`_sample_patterns` as a job.

    A step (a Cancel point) every ~0.1 s of reading: a lazy file can take a while per pattern.
    """
    sy, sx = cube.scan_shape
    idx = np.unique(np.linspace(0, sy * sx - 1, min(n, sy * sx)).astype(int))
    out, t = [], time.perf_counter()
    for k, i in enumerate(idx):
        out.append(np.asarray(cube.data[i // sx, i % sx]))
        if time.perf_counter() - t > 0.1:
            yield Progress(k + 1, len(idx), "sampling patterns")
            t = time.perf_counter()
    return np.stack(out)


def _domain_check(lm, geo: Geometry, cal, sample: np.ndarray | None) -> list[str]:
    dom = model_domain(lm.card)
    if not dom:
        return []
    dose = None if sample is None else estimate_dose_per_disk(sample, geo)
    return domain_problems(dom, geo, calibration=cal, dose_per_disk=dose)


def _precision(precision: str, device) -> str:
    """``"float32"`` or ``"bfloat16"`` for the ``precision`` keyword on ``device``."""
    if precision not in ("float32", "bfloat16", "auto"):
        raise ValueError(f"precision must be 'float32', 'bfloat16' or 'auto', got {precision!r}")
    if getattr(device, "type", str(device)) != "cpu" or precision == "float32":
        return "float32"
    # bfloat16 (the default) only where oneDNN runs it natively: emulated it is slower than
    # float32, and float32 is the model's own arithmetic
    return "bfloat16" if native_bfloat16() else "float32"


def native_bfloat16() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (oneDNN: AVX512-BF16 or AMX).

    Returns
    -------
    bool
        True where ``precision="bfloat16"`` runs in bfloat16 (else float32 runs).
    """
    import torch

    try:
        onednn = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the query
        return False
    # oneDNN's query is True on any AVX512-core CPU, which only emulates bfloat16 (1.3x SLOWER than
    # float32 there, review of session 12): where the CPU's flags can be read, ask for the real thing
    flags = _cpu_flags()
    if flags is not None and onednn:
        import platform

        machine = platform.machine().lower()
        if machine in ("x86_64", "amd64"):
            return bool({"avx512_bf16", "amx_bf16"} & flags)
        if machine in ("aarch64", "arm64"):
            return "bf16" in flags
    return onednn


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (Linux), or None where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        return None
    return None


def _inference_copy(module, *, mc_dropout: bool = False, precision: str = "float32"):
    """A copy of the network for inference.

    Its :class:`~napari_4dstem.nn._fastnet.FastFCUNet` twin (real-domain FCU-Nets without
    Monte-Carlo dropout), else a copy with channels-last weights.

    Both give the same outputs as the module (to float rounding: 1e-6 of the peak height
    measured); a copy, so a model being trained is left as it is. Channels-last was 1.43x
    faster than the plain module on this 2-core CPU at a 272 px frame (session 9); the twin
    1.2x faster again at 256 px frames, batch for batch (docs/performance.md).
    """
    import copy

    import torch

    if not mc_dropout:
        from ._fastnet import fast_inference_net

        fast = fast_inference_net(module, torch.bfloat16 if precision == "bfloat16" else torch.float32)
        if fast is not None:
            return fast
    return copy.deepcopy(module).to(memory_format=torch.channels_last)
