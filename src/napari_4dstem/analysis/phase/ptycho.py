"""Iterative ptychography in PyTorch: single slice, mixed-state probe, position correction.

Also multislice; one code path on the CPU and on CUDA.

The forward model is the one of :mod:`.forward` (conventions in :mod:`.probe`), generalised:

    psi_m,j = S(p_j) psi_m                       probe mode m shifted to position j (Fourier ramp)
    exit    = O_S ... P_dz(O_2 P_dz(O_1 psi))    slices O_s, Fresnel propagator P_dz between them
    |Psi_j| = sqrt(sum_m |F[exit_m,j]|^2)        modelled amplitude (orthonormal FFT)

and the loss is the amplitude misfit ``L = sum_j sum_k (|Psi_j(k)| - sqrt(I_j(k)))^2`` (robust
to Poisson noise; Thibault & Guizar-Sicairos, New J. Phys. 14, 063004 (2012),
doi:10.1088/1367-2630/14/6/063004). Its gradients come from torch autograd; the updates are
ePIE-like steps (Maiden & Rodenburg, Ultramicroscopy 109, 1256 (2009),
doi:10.1016/j.ultramic.2009.05.012) made over mini-batches of positions and normalised by the
batch's illumination (object) or the object's intensity (probe), regularised as in rPIE
(Maiden, Johnson & Li, Optica 4, 736 (2017), doi:10.1364/OPTICA.4.000736):

    O_s <- O_s - a/2 grad_O_s / ((1 - d) illum_s + d max illum_s) / sqrt(S)
    psi <- psi - b/2 grad_psi / (B max |O|^2)           (B positions in the batch)

where ``illum_s`` is the batch's intensity of the wave arriving at slice ``s`` (the probe for
the first) and ``S`` the number of slices (all slices step at once from one gradient). With
``loss="poisson"`` the misfit is the Poisson negative log-likelihood ``|Psi|^2 - I log |Psi|^2``
(Thibault & Guizar-Sicairos 2012), and ``step_decay`` divides both steps of iteration ``i`` by
``1 + step_decay i`` (a Robbins-Monro schedule: the last iterations average the noise of many
batches instead of following the last one); together they are the low-dose settings.

Positions are corrected by gradient steps on their sub-pixel ramps (mean translation removed);
mixed-state probe modes are kept orthogonal (Thibault & Menzel, Nature 494, 68 (2013),
doi:10.1038/nature11806); multislice follows Maiden, Humphry & Rodenburg, JOSA A 29, 1606
(2012), doi:10.1364/JOSAA.29.001606.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...data.calibration import Calibration
from ...data.results import DiffractionImage, RealSpaceMap
from ...engine.chunks import iter_scan_blocks, n_blocks
from ...engine.jobs import Job, Progress, eager
from ...errors import CalibrationError, Napari4DSTEMError
from ._common import Geometry
from .probe import ProbeModel, probe_real, scan_to_detector

__all__ = ["PtychoParams", "PtychoProgress", "PtychoResult", "iter_ptychography", "ptychography"]


@dataclass(frozen=True)
class PtychoParams:
    """Settings of an iterative reconstruction (saved with the result).

    Parameters
    ----------
    iterations : int
        Passes over all probe positions.
    batch_size : int
        Positions per update (a mini-batch; random order each pass).
    object_step, probe_step : float
        Step sizes ``a``, ``b`` of the object and probe updates (1 = a full ePIE step).
    probe_update_start : int
        First iteration that updates the probe (the object settles first).
    regularization : float
        rPIE's ``d``: weight of the largest illumination in the object normalisation.
    probe_modes : int
        Mixed-state probe modes (1 = a pure probe).
    position_correction : bool
        Refine the probe positions from iteration ``position_start`` on.
    position_start : int
        First iteration that refines the positions.
    position_step_px : float
        Largest position change per update, object pixels.
    slices : int
        Object slices (1 = single slice, more = multislice).
    slice_thickness_A : float
        Distance between slices, Angstrom (multislice).
    device : str
        torch device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    seed : int
        Seed of the position order and of the extra probe modes.
    snapshot_every : int
        Yield the current object and probe every this many iterations (for live display).
    threads : int or None
        torch CPU threads while the job runs (restored afterwards); None leaves torch's setting.
        On a machine shared with other busy processes 1 thread can be many times faster than
        several (OpenMP threads waiting on each other), see ``docs/phase.md``.
    loss : {"amplitude", "poisson"}
        Noise model: the amplitude misfit ``(|Psi| - sqrt(I))^2`` (default), or the Poisson
        negative log-likelihood ``|Psi|^2 - I log |Psi|^2`` (intensities in electrons).
    step_decay : float
        Object and probe steps of iteration ``i`` (from 0) are divided by ``1 + step_decay i``
        (0 = constant steps).
    full_batch : bool
        One object and probe step per iteration from the gradient of all positions (computed
        in mini-batches of ``batch_size``, so memory stays that of a batch); default False: a
        step per mini-batch. Fewer, averaged steps: a low-dose setting (``docs/phase.md``).
    pure_phase : bool
        A pure phase object: ``|O| = 1`` after every step (each slice), for thin, weakly
        absorbing specimens; the amplitude cannot take up noise (a low-dose setting, 1e3 e/A^2:
        ``docs/phase.md``). Default False: ``|O|`` free (single slice) or ``<= 1`` (multislice).
    coarse_to_fine : bool
        Low-pass the object steps of the first half of the iterations at the aperture frequency
        ``alpha / lambda`` (Butterworth, order 4): the low frequencies, which every bright-field
        pixel informs, settle first, and the early steps do not write shot noise into the high
        ones. A low-dose setting: one SrTiO3 cell at 1e3 e/A^2, +0.015 to +0.036 in correlation
        on four noise draws, within 0.004 at 1e4 and above (``docs/phase.md``). Default False.

    Raises
    ------
    ValueError
        On negative iterations, an empty batch, no probe mode or slice, or multislice without a
        positive slice thickness.
    """

    iterations: int = 20
    batch_size: int = 64
    object_step: float = 1.0
    probe_step: float = 1.0
    probe_update_start: int = 2
    regularization: float = 0.2
    probe_modes: int = 1
    position_correction: bool = False
    position_start: int = 4
    position_step_px: float = 0.1
    slices: int = 1
    slice_thickness_A: float = 0.0
    device: str = "cpu"
    seed: int = 0
    snapshot_every: int = 1
    threads: int | None = None
    loss: str = "amplitude"
    step_decay: float = 0.0
    full_batch: bool = False
    pure_phase: bool = False
    coarse_to_fine: bool = False

    def __post_init__(self):
        """Refuse settings that cannot run."""
        if self.iterations < 0 or self.batch_size < 1 or self.probe_modes < 1 or self.slices < 1:
            raise ValueError(f"invalid ptychography settings: {self}")
        if self.loss not in ("amplitude", "poisson") or not self.step_decay >= 0:
            raise ValueError(f"loss must be 'amplitude' or 'poisson' and step_decay >= 0: {self}")
        if self.slices > 1 and not self.slice_thickness_A > 0:
            raise ValueError("multislice ptychography needs slice_thickness_A > 0")


@dataclass(frozen=True)
class PtychoProgress(Progress):
    """A progress step that may carry a snapshot of the reconstruction.

    Attributes
    ----------
    done, total, message, partial
        As :class:`~napari_4dstem.engine.jobs.Progress`.
    object_phase : ndarray ``(H, W)`` or None
        The object phase in rad, summed over slices, cropped to the scanned region.
    probe_intensity : ndarray ``(N_y, N_x)`` or None
        The probe intensity, summed over modes.
    errors : tuple of float
        The normalised amplitude misfit of every finished iteration.
    """

    object_phase: np.ndarray | None = None
    probe_intensity: np.ndarray | None = None
    errors: tuple[float, ...] = ()


@dataclass(frozen=True, eq=False)
class PtychoResult:
    """An iterative reconstruction.

    Attributes
    ----------
    object : ndarray complex64 (slices, H, W)
        Transmission function of each slice, detector axes, pixel ``pixel_A`` (y, x).
    probe : ndarray complex64 (modes, N_y, N_x)
        Probe modes in real space, centred at ``N // 2``.
    positions_px : ndarray (n_positions, 2)
        Probe centres (y, x) in object pixels, raster order over the scan (refined if asked).
    errors : ndarray (iterations,)
        Normalised amplitude misfit ``sum (|Psi| - sqrt(I))^2 / sum I`` of each iteration.
    pixel_A : (float, float)
        Object pixel size ``(y, x)`` in Angstrom.
    region : (y0, y1, x0, x1)
        The scanned part of the object (the positions' bounding box).
    params : dict
        The settings of the run.
    """

    object: np.ndarray
    probe: np.ndarray
    positions_px: np.ndarray
    errors: np.ndarray
    pixel_A: tuple[float, float]
    region: tuple[int, int, int, int]
    params: dict = field(default_factory=dict)

    def object_phase(self, *, crop: bool = True) -> np.ndarray:
        """Phase (rad) of the object, summed over slices, cropped to the scanned region.

        Parameters
        ----------
        crop : bool
            Crop to the scanned region (default True).

        Returns
        -------
        ndarray float
            ``angle(prod_s O_s)`` in radians.
        """
        ph = np.angle(np.prod(self.object, axis=0)) if len(self.object) > 1 else np.angle(self.object[0])
        if crop:
            y0, y1, x0, x1 = self.region
            ph = ph[y0:y1, x0:x1]
        return ph

    def to_results(self) -> list:
        """The object phase as a map and the probe intensity as a detector image (to save)."""
        cal = Calibration(scan_step=self.pixel_A, scan_units="A")
        return [
            RealSpaceMap(self.object_phase(), name="ptycho_phase", units="rad", calibration=cal, params=self.params),
            DiffractionImage(
                np.sum(np.abs(self.probe) ** 2, axis=0),
                name="ptycho_probe",
                units="",
                calibration=cal,
                params=self.params,
            ),
        ]


# settings that may change between a checkpoint and its resumption
_RUN_ONLY = ("iterations", "device", "snapshot_every", "threads")


def _patch_function():
    """A torch autograd function: object patches ``flat[index]``.

    Its backward accumulates with ``index_add_`` (about 10x faster on the CPU than the backward
    of advanced indexing).
    """
    import torch

    class Patches(torch.autograd.Function):
        @staticmethod
        def forward(ctx, flat, index):
            ctx.save_for_backward(index)
            ctx.n = flat.shape[0]
            return flat[index]

        @staticmethod
        def backward(ctx, grad):
            (index,) = ctx.saved_tensors
            out = torch.zeros(ctx.n, dtype=grad.dtype, device=grad.device)
            out.index_add_(0, index.reshape(-1), grad.reshape(-1))
            return out, None

    return Patches.apply


def _read_amplitudes(datacube, geo: Geometry, scan_chunk) -> Job[np.ndarray]:
    """Job: sqrt of every pattern, float32, with the origin rolled to ``N // 2`` (whole pixels)."""
    data = getattr(datacube, "data", datacube)
    ny, nx = geo.detector_shape
    roll = (round(ny // 2 - geo.origin_px[0]), round(nx // 2 - geo.origin_px[1]))
    shape = tuple(int(s) for s in data.shape)
    out = np.empty((shape[0] * shape[1], ny, nx), np.float32)
    if scan_chunk is None:
        row = shape[1] * ny * nx * np.dtype(data.dtype).itemsize
        scan_chunk = (max(1, (32 * 2**20) // max(row, 1)), shape[1])
    total = n_blocks(shape, scan_chunk)
    flat = np.arange(shape[0] * shape[1]).reshape(shape[:2])
    for i, (sy, sx, block) in enumerate(iter_scan_blocks(data, scan_chunk)):
        b = np.sqrt(np.maximum(block.astype(np.float32), 0))
        if roll != (0, 0):
            b = np.roll(b, roll, axis=(2, 3))
        out[flat[sy, sx].ravel()] = b.reshape(-1, ny, nx)
        yield Progress(i + 1, total, "reading patterns")
    return out


def _layout(geo: Geometry, pixel_A: tuple[float, float], pad_px: int):
    """Probe centres in object pixels (detector axes) and the object shape."""
    sy, sx = geo.scan_shape
    iy, ix = np.meshgrid(np.arange(sy), np.arange(sx), indexing="ij")
    vy, vx = scan_to_detector(
        iy.ravel() * geo.step_A[0], ix.ravel() * geo.step_A[1], rotation_deg=geo.rotation_deg, flip=geo.flip
    )
    pos = np.stack([vy / pixel_A[0], vx / pixel_A[1]], axis=1)
    n = np.array(geo.detector_shape)
    pos = pos - pos.min(axis=0) + n // 2 + pad_px
    shape = tuple(int(v) for v in np.ceil(pos.max(axis=0)) + n - n // 2 + pad_px + 1)
    return pos, shape


def _save_checkpoint(path: Path, state: dict) -> None:
    from ...io._atomic import atomic_output

    with atomic_output(path, overwrite=True) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: v for k, v in state.items() if k != "meta"}, meta=np.array(json.dumps(state["meta"])))


def _load_checkpoint(path: Path) -> dict:
    with np.load(path) as z:
        out = {k: z[k] for k in z.files}
    out["meta"] = json.loads(str(out["meta"]))
    return out


def iter_ptychography(
    datacube,
    *,
    params: PtychoParams | None = None,
    probe: ProbeModel | None = None,
    calibration: Calibration | None = None,
    initial_probe: np.ndarray | None = None,
    pad_px: int = 4,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 5,
    resume: bool = True,
    scan_chunk: tuple[int, int] | None = None,
) -> Job[PtychoResult]:
    """Job: iterative ptychographic reconstruction (module docstring).

    Parameters
    ----------
    datacube : DataCube ``(scan_y, scan_x, k_y, k_x)``
        Calibrated (scan step, detector pixel size, beam energy, convergence angle; origin,
        rotation and flip are used). The object pixel is ``1 / (N * k_pixel)`` Angstrom.
        All patterns are held in memory as float32 amplitudes (on the device).
    params : PtychoParams
        Iterations, steps, batch, modes, position correction, slices, device.
    probe : ProbeModel, optional
        Starting probe (aberrations, e.g. the defocus from :func:`.parallax`); default from the
        calibration, in focus.
    initial_probe : ndarray (N_y, N_x) or (modes, N_y, N_x), optional
        A starting probe in real space instead of the model.
    calibration : Calibration, optional
        Overrides the datacube's calibration.
    pad_px : int
        Object pixels added around the scanned region (default 4).
    checkpoint : path, optional
        An ``.npz`` file written every ``checkpoint_every`` iterations (atomically) and at the
        end; with ``resume`` an existing one is continued if it was made with the same data
        shape and settings.
    checkpoint_every : int
        Iterations between checkpoints (default 5).
    resume : bool
        Continue from an existing checkpoint (default True).
    scan_chunk : (int, int), optional
        Scan block read at a time while the patterns are loaded.

    Yields
    ------
    PtychoProgress
        Reading, then every batch; a snapshot every ``params.snapshot_every`` iterations.

    Returns
    -------
    PtychoResult
        The generator's return value: object slices, probe modes, refined positions, errors.

    Raises
    ------
    Napari4DSTEMError
        When torch is missing, CUDA is asked for but absent, the patterns are empty, or a
        checkpoint was made with other data or settings.
    CalibrationError
        When the calibration is incomplete, or ``initial_probe`` has the wrong shape, or the
        model probe is asked for on a non-square detector.

    Notes
    -----
    Amplitude-misfit gradient descent by torch autograd (see the module docstring): per
    mini-batch, probe modes shifted to the positions by Fourier ramps, multiplied through the
    slices with Fresnel propagation between them, FFT, loss ``sum (|Psi| - sqrt(I))^2``; ePIE
    updates normalised as in rPIE, orthogonalised probe modes, optional position gradients.
    Each iteration costs ``O(N_R modes slices N log N)`` for ``N`` detector pixels.

    References
    ----------
    .. [1] A. M. Maiden and J. M. Rodenburg, "An improved ptychographical phase retrieval
       algorithm for diffractive imaging", Ultramicroscopy 109, 1256-1262 (2009).
    .. [2] A. Maiden, D. Johnson and P. Li, "Further improvements to the ptychographical
       iterative engine", Optica 4, 736-745 (2017).
    .. [3] P. Thibault and M. Guizar-Sicairos, "Maximum-likelihood refinement for coherent
       diffractive imaging", New J. Phys. 14, 063004 (2012).
    .. [4] P. Thibault and A. Menzel, "Reconstructing state mixtures from diffraction
       measurements", Nature 494, 68-71 (2013).
    .. [5] A. M. Maiden, M. J. Humphry and J. M. Rodenburg, "Ptychographic transmission
       microscopy in three dimensions using a multi-slice approach", J. Opt. Soc. Am. A 29,
       1606-1614 (2012).
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is the nn extra
        raise Napari4DSTEMError("iterative ptychography needs PyTorch: pip install napari-4dstem[nn]") from None
    params = params or PtychoParams()
    old_threads = torch.get_num_threads()
    if params.threads:
        torch.set_num_threads(int(params.threads))
    try:
        return (
            yield from _reconstruct(
                torch,
                datacube,
                params,
                probe,
                calibration,
                initial_probe,
                pad_px,
                checkpoint,
                checkpoint_every,
                resume,
                scan_chunk,
            )
        )
    finally:
        torch.set_num_threads(old_threads)


def _abs2(torch, z):
    """``|z|^2`` of a complex tensor (on the CPU about 4x faster than ``z.abs()`` squared)."""
    return torch.addcmul(z.real * z.real, z.imag, z.imag)


# single slice, one probe mode, fixed positions: gradients written out instead of autograd (the
# same values; 1.1-2.3x, median 1.7x, less time per iteration on the CPU, docs/phase.md). False: autograd for every case
_SINGLE_SLICE_BY_HAND = True


def _reconstruct(
    torch, datacube, params, probe, calibration, initial_probe, pad_px, checkpoint, checkpoint_every, resume, scan_chunk
):
    dev = torch.device(params.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise Napari4DSTEMError(f"device {params.device!r} asked for but torch sees no CUDA GPU")
    cal = calibration or datacube.calibration
    geo = Geometry.of(datacube, cal)
    probe_model = probe or ProbeModel.from_calibration(cal)
    n_y, n_x = geo.detector_shape
    pixel_A = (1.0 / (n_y * geo.k_pixel_inv_A), 1.0 / (n_x * geo.k_pixel_inv_A))
    amps_np = yield from _read_amplitudes(datacube, geo, scan_chunk)
    n_pos = len(amps_np)
    pos0, obj_shape = _layout(geo, pixel_A, pad_px)
    mean_int = float(np.mean(np.sum(amps_np.astype(np.float64) ** 2, axis=(1, 2))))
    if not mean_int > 0:
        raise Napari4DSTEMError("the patterns are empty (no counts)")

    # -- starting state ----------------------------------------------------------------------
    rng = np.random.default_rng(params.seed)
    if initial_probe is not None:
        p0 = np.asarray(initial_probe, np.complex128)
        p0 = p0[None] if p0.ndim == 2 else p0
        if p0.shape[-2:] != (n_y, n_x):
            raise CalibrationError(f"initial_probe must be {(n_y, n_x)}, got {p0.shape[-2:]}")
    else:
        if n_y != n_x:
            raise CalibrationError("the model probe needs a square detector; pass initial_probe")
        p0 = probe_real((n_y, n_x), geo.k_pixel_inv_A, probe_model)[None]
    modes = [p0[i] for i in range(min(len(p0), params.probe_modes))]
    yy, xx = np.mgrid[0:n_y, 0:n_x]
    while len(modes) < params.probe_modes:
        m = len(modes)
        # low-order Hermite-like start for an extra mode: the main mode times a ramp
        ramp = ((yy - n_y // 2) if m % 2 else (xx - n_x // 2)) / (n_x / 4)
        modes.append(p0[0] * ramp * (1 + 0.1 * rng.standard_normal()))
    probe_np = np.stack(modes)
    power = np.sum(np.abs(probe_np) ** 2, axis=(1, 2))
    weights = np.array([1.0] + [0.05] * (len(modes) - 1))
    probe_np = probe_np * np.sqrt(weights / weights.sum() * mean_int / power)[:, None, None]
    obj_np = np.ones((params.slices, *obj_shape), np.complex64)
    pos_np = pos0.copy()
    errors: list[float] = []
    start = 0
    meta = dict(
        params=asdict(params),
        probe=probe_model.to_dict(),
        data_shape=list(datacube.shape),
        pad_px=pad_px,
        pixel_A=list(pixel_A),
    )
    ck = Path(checkpoint) if checkpoint is not None else None
    if ck is not None and resume and ck.exists():
        state = _load_checkpoint(ck)
        old = state["meta"]
        # settings added since the checkpoint was written count with their defaults
        old_params = {**asdict(PtychoParams()), **old["params"]}
        same = old.get("data_shape") == meta["data_shape"] and {
            k: v for k, v in old_params.items() if k not in _RUN_ONLY
        } == {k: v for k, v in meta["params"].items() if k not in _RUN_ONLY}
        if not same:
            raise Napari4DSTEMError(
                f"{ck}: the checkpoint was made with other data or settings; remove it or pass resume=False"
            )
        obj_np, probe_np, pos_np = state["object"], state["probe"], state["positions_px"]
        errors = [float(e) for e in state["errors"]]
        start = len(errors)

    # -- tensors -------------------------------------------------------------------------------
    cdt = torch.complex64
    amps = torch.as_tensor(np.fft.ifftshift(amps_np, axes=(-2, -1)), device=dev)
    del amps_np
    obj = torch.as_tensor(obj_np, dtype=cdt, device=dev).requires_grad_(True)
    prb = torch.as_tensor(probe_np, dtype=cdt, device=dev).requires_grad_(True)
    pos = torch.as_tensor(pos_np, dtype=torch.float64, device=dev)
    fy = torch.as_tensor(np.fft.fftfreq(n_y), dtype=torch.float32, device=dev)
    fx = torch.as_tensor(np.fft.fftfreq(n_x), dtype=torch.float32, device=dev)
    ay = torch.arange(n_y, device=dev)
    ax = torch.arange(n_x, device=dev)
    prop = None
    if params.slices > 1:
        lam = probe_model.wavelength_A
        ky = np.fft.fftfreq(n_y, pixel_A[0])[:, None]
        kx = np.fft.fftfreq(n_x, pixel_A[1])[None, :]
        prop = torch.as_tensor(
            np.exp(-1j * math.pi * lam * params.slice_thickness_A * (ky**2 + kx**2)), dtype=cdt, device=dev
        )
    total_int = float(torch.sum(amps.double() ** 2))
    region = (
        int(np.floor(pos0[:, 0].min())),
        int(np.ceil(pos0[:, 0].max())) + 1,
        int(np.floor(pos0[:, 1].min())),
        int(np.ceil(pos0[:, 1].max())) + 1,
    )
    gen = torch.Generator().manual_seed(params.seed + start)
    # every slice steps at once (from one gradient): a full step each would move the exit wave
    # about `slices` times too far; 1 / sqrt(slices) kept the misfit falling (10 nm SrTiO3, 5 slices)
    slice_step = params.object_step / math.sqrt(params.slices)

    patches = _patch_function()

    def shifts(p_b):
        """Sub-pixel Fourier ramps (separable: ``(B, Ny)``, ``(B, Nx)``), window indices ``(B, Ny, Nx)``."""
        base = torch.floor(p_b)
        frac = (p_b - base).float()
        y0 = base[:, 0].long() - n_y // 2
        x0 = base[:, 1].long() - n_x // 2
        # separable sub-pixel ramp exp(-2 pi i (f_y dy + f_x dx))
        ry = torch.polar(torch.ones_like(fy[None] * frac[:, :1]), -2 * math.pi * fy[None] * frac[:, :1])
        rx = torch.polar(torch.ones_like(fx[None] * frac[:, 1:]), -2 * math.pi * fx[None] * frac[:, 1:])
        iy_ = (y0[:, None] + ay[None]).clamp(0, obj_shape[0] - 1)[:, :, None]
        ix_ = (x0[:, None] + ax[None]).clamp(0, obj_shape[1] - 1)[:, None, :]
        return ry, rx, iy_ * obj_shape[1] + ix_  # (B, Ny, Nx) flat object index

    def forward(idx, p_b):
        """Modelled amplitudes, exit waves' illumination and patch indices of a batch."""
        ry, rx, lin = shifts(p_b)
        ramp = ry[:, :, None] * rx[:, None, :]
        psi = torch.fft.ifft2(torch.fft.fft2(prb)[:, None] * ramp[None])  # (M, B, Ny, Nx)
        flat = obj.reshape(params.slices, -1)
        incident = [psi]  # the wave arriving at each slice (its illumination normalises its update)
        wave = psi * patches(flat[0], lin)[None]
        for s in range(1, params.slices):
            wave = torch.fft.ifft2(torch.fft.fft2(wave) * prop)
            incident.append(wave)
            wave = wave * patches(flat[s], lin)[None]
        far = torch.fft.fft2(wave, norm="ortho")
        if far.shape[0] == 1:  # a pure probe: |F| directly (a sum over one mode is a copy)
            return far[0].abs(), incident, lin
        model = torch.sqrt(torch.sum(torch.view_as_real(far).square().sum(-1), dim=0) + 1e-12)
        return model, incident, lin

    def single_slice_grads(p_b, amp):
        """One slice, one probe mode, fixed positions: ``data_loss``'s gradients written out.

        No autograd graph; the same values (``test_single_slice_gradients_equal_autograd``).
        ``exit = psi O``, ``F = fft(exit)`` (ortho), ``psi = ifft(fft(P) ramp)``: ``dL/dF* =
        c F`` with ``c = 2 (|F| - a) / |F|`` (amplitude) or ``1 - a^2 / (|F|^2 + eps)``
        (Poisson); ``g_exit = ifft(c F)``; ``g_O = sum conj(psi) g_exit`` over the windows;
        ``g_P = ifft(sum_b conj(ramp_b) fft(conj(O_b) g_exit))``. Returns the object and probe
        gradients, the incident waves ``(1, B, Ny, Nx)``, the window indices and the amplitude misfit.
        """
        ry, rx, lin = shifts(p_b)
        psi = torch.fft.ifft2(torch.fft.fft2(prb.detach()[0]) * (ry[:, :, None] * rx[:, None, :]))  # (B, Ny, Nx)
        op = obj.detach().reshape(-1)[lin]
        far = torch.fft.fft2(psi * op, norm="ortho")
        m2 = _abs2(torch, far)
        m = m2.sqrt()
        r = m - amp
        misfit = float(torch.sum(r * r))
        if params.loss == "poisson":
            coef = 1 - amp.square() / m2.add_(1e-6 * m2.mean())
        else:
            coef = r.mul_(2).div_(m.clamp_min_(1e-30))
        g_exit = torch.fft.ifft2(far.mul_(coef), norm="ortho")
        g_obj = torch.zeros(obj_shape[0] * obj_shape[1], dtype=cdt, device=dev)
        g_obj.index_add_(0, lin.reshape(-1), (psi.conj() * g_exit).reshape(-1))
        ramp_c = ry.conj_physical()[:, :, None] * rx.conj_physical()[:, None, :]
        g_p = torch.fft.fft2(g_exit.mul_(op.conj_physical())).mul_(ramp_c).sum(dim=0)
        return g_obj.reshape(1, *obj_shape), torch.fft.ifft2(g_p)[None], psi[None], lin, misfit

    def data_loss(model, amp):
        if params.loss == "poisson":
            m2 = model.square()
            # half the negative log-likelihood: its gradient 2 (m^2 - I) / 2m ~ the amplitude loss's near a fit
            return 0.5 * torch.sum(m2 - amp.square() * torch.log(m2 + 1e-6 * m2.detach().mean()))
        return torch.sum((model - amp) ** 2)

    lowpass, lowpass_until = None, params.iterations // 2
    if params.coarse_to_fine:
        f_r = np.hypot(np.fft.fftfreq(obj_shape[0], pixel_A[0])[:, None], np.fft.fftfreq(obj_shape[1], pixel_A[1]))
        bw = 1 / (1 + (f_r / probe_model.k_aperture_inv_A) ** 8)
        lowpass = torch.as_tensor(bw, dtype=torch.float32, device=dev)

    def step(it, g_obj, g_prb, illums, n_b, a_it):
        """Object and probe steps from the gradients of ``n_b`` positions (no_grad)."""
        d = params.regularization
        for s_, illum in enumerate(illums):
            norm = ((1 - d) * illum + d * illum.max()).reshape(obj_shape)
            upd = (0.5 * slice_step * a_it) * g_obj[s_] / norm
            if lowpass is not None and it < lowpass_until:
                upd = torch.fft.ifft2(torch.fft.fft2(upd) * lowpass)
            obj[s_] -= upd
        if params.pure_phase:
            obj.div_(obj.abs().clamp_min_(1e-30))
        elif params.slices > 1:
            # no slice gives the wave amplitude (|O| <= 1): without it a strong object's
            # slices trade amplitude back and forth and the product overflows (10 nm of
            # SrTiO3 in 5 slices went to NaN in the second iteration)
            mag = obj.abs()
            obj.mul_(torch.where(mag > 1, 1 / mag.clamp_min(1e-30), torch.ones_like(mag)))
        if it >= params.probe_update_start:
            # max over probe pixels of sum_j |prod_s O_s|^2, bounded by B prod_s max |O_s|^2 (cheap)
            o2 = torch.view_as_real(obj).square().sum(-1).reshape(params.slices, -1).amax(dim=1)
            prb.sub_((0.5 * params.probe_step * a_it) * g_prb / (n_b * torch.prod(o2)))

    # -- iterations ------------------------------------------------------------------------------
    bs = int(params.batch_size)
    n_batches = math.ceil(n_pos / bs)
    total_steps = max(1, params.iterations * n_batches)
    for it in range(start, params.iterations):
        order = torch.randperm(n_pos, generator=gen).to(dev)
        a_it = 1 / (1 + params.step_decay * it)  # Robbins-Monro: later steps average the noise
        err = 0.0
        acc = None
        for bi in range(n_batches):
            idx = order[bi * bs : (bi + 1) * bs]
            correct_pos = params.position_correction and it >= params.position_start
            p_b = pos[idx].clone().requires_grad_(correct_pos)
            if _SINGLE_SLICE_BY_HAND and params.slices == 1 and params.probe_modes == 1 and not correct_pos:
                with torch.no_grad():
                    *grads, incident, lin, misfit = single_slice_grads(p_b, amps[idx])
                    incident = [incident]
                    err += misfit
            else:
                model, incident, lin = forward(idx, p_b)
                loss = data_loss(model, amps[idx])
                grads = torch.autograd.grad(loss, [obj, prb] + ([p_b] if correct_pos else []))
                with torch.no_grad():
                    err += float(torch.sum((model - amps[idx]) ** 2))
            with torch.no_grad():
                illums = []
                for wave_in in incident:
                    inten = _abs2(torch, wave_in)  # (M, B, Ny, Nx)
                    inten = inten[0] if len(inten) == 1 else inten.sum(dim=0)
                    illum = torch.zeros(obj_shape[0] * obj_shape[1], dtype=torch.float32, device=dev)
                    illum.index_add_(0, lin.reshape(-1), inten.reshape(-1))
                    illums.append(illum)
                if params.full_batch:  # sum over the iteration, one step at its end
                    acc = (
                        [grads[0], grads[1], illums, len(idx)]
                        if acc is None
                        else [
                            acc[0] + grads[0],
                            acc[1] + grads[1],
                            [a + b for a, b in zip(acc[2], illums)],
                            acc[3] + len(idx),
                        ]
                    )
                else:
                    step(it, grads[0], grads[1], illums, len(idx), a_it)
                if correct_pos:
                    g = grads[2]
                    scale = g.abs().max()
                    if scale > 0:
                        dp = -params.position_step_px * g / scale
                        pos[idx] += dp - dp.mean(dim=0, keepdim=True)
            yield PtychoProgress(it * n_batches + bi + 1, total_steps, f"iteration {it + 1}/{params.iterations}")
        with torch.no_grad():
            if acc is not None:
                step(it, *acc, a_it)
            if params.probe_modes > 1:
                # orthogonalise the modes (SVD), strongest first
                flat = prb.reshape(params.probe_modes, -1)
                _, s_, vh = torch.linalg.svd(flat, full_matrices=False)
                prb.copy_((s_[:, None] * vh).reshape(prb.shape))
        errors.append(err / total_int)
        if not math.isfinite(errors[-1]):
            raise Napari4DSTEMError(
                f"the reconstruction diverged in iteration {it + 1} (the misfit is {errors[-1]}): lower "
                "object_step / probe_step, start the probe later (probe_update_start), or use fewer slices"
            )
        done = (it + 1) * n_batches
        if ck is not None and ((it + 1) % checkpoint_every == 0 or it + 1 == params.iterations):
            _save_checkpoint(
                ck,
                dict(
                    object=obj.detach().cpu().numpy(),
                    probe=prb.detach().cpu().numpy(),
                    positions_px=pos.cpu().numpy(),
                    errors=np.array(errors),
                    meta=meta,
                ),
            )
        if (it + 1) % max(1, params.snapshot_every) == 0 or it + 1 == params.iterations:
            o = obj.detach()
            ph = torch.angle(torch.prod(o, dim=0) if params.slices > 1 else o[0]).cpu().numpy()
            y0, y1, x0, x1 = region
            pr = torch.sum(torch.abs(prb.detach()) ** 2, dim=0).cpu().numpy()
            yield PtychoProgress(
                done,
                total_steps,
                f"iteration {it + 1}/{params.iterations}",
                object_phase=ph[y0:y1, x0:x1],
                probe_intensity=pr,
                errors=tuple(errors),
            )
    result_params = dict(method="ptycho" if params.slices == 1 else "multislice-ptycho", **meta)
    return PtychoResult(
        object=obj.detach().cpu().numpy(),
        probe=prb.detach().cpu().numpy(),
        positions_px=pos.cpu().numpy(),
        errors=np.asarray(errors),
        pixel_A=pixel_A,
        region=region,
        params=result_params,
    )


ptychography = eager(iter_ptychography, "An iterative ptychographic reconstruction.")
