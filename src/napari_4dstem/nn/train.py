"""Training: shards (read lazily through ShardSet) -> augmented batches -> FCU-Net checkpoints.

:func:`iter_train` is a job (a generator yielding :class:`Progress`, cancellable between
steps): Adam with a linear warm-up then inverse-square-root decay, MSE on the label image
(weighted towards the peaks, optionally + L1), mixed precision and CUDA when present, a
checkpoint per epoch (``checkpoint.pt``: weights, optimiser, step, history; written atomically
and read with ``weights_only=True``), resumable, and validation metrics per epoch (disk-match
F1 at 0.5 and 1 px, position RMSE, and the strain RMSE of a held-out strained thick-proxy scan).

A non-finite loss stops the run at once: the last checkpoint (the end of the last good epoch)
is left untouched and :class:`TrainingDiverged` says where it is.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.jobs import Job, Progress
from ..errors import Napari4DSTEMError
from .augment import Augment
from .model import ModelConfig
from .registry import load_hashed, save_hashed

__all__ = [
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "TrainingDiverged",
    "export_model",
    "iter_train",
    "lr_factor",
]


class TrainingDiverged(Napari4DSTEMError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class TrainConfig:
    """Training parameters (saved in every checkpoint and in the model card).

    Attributes
    ----------
    model : ModelConfig
        The network's configuration (input size, depth, widths...).
    epochs : int
        Epochs to train (default 4).
    steps_per_epoch : int or None
        Optimiser steps per epoch (default: one pass over the training patterns).
    batch_size : int
        Patterns per step (default 8).
    lr : float
        Peak learning rate of Adam (default 2e-3).
    warmup_steps : int
        Steps of linear warm-up (:func:`lr_factor`; default 100).
    peak_weight : float
        MSE weight ``1 + peak_weight * label`` (default 10).
    l1_weight : float
        Weight of an added L1 term (default 0).
    val_fraction, val_max : float, int
        Share of the patterns held out for validation, and at most this many (0.05, 64).
    strain_scan : (int, int) or None
        Scan of the held-out strained thick-proxy dataset whose strain RMSE is reported per
        epoch (default 8 x 8; None skips it).
    strain_thickness_nm : float
        Thickness of that dataset (default 40 nm).
    seed : int
        Seed of the split, the batches and the weights.
    device : str or None
        torch device (default CUDA when present, else the CPU).
    amp : bool
        Mixed precision (CUDA only; default True).
    threads : int or None
        torch CPU threads (None: torch's setting).
    init : str or None
        Start from this model's weights (registry name or file).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 4
    steps_per_epoch: int | None = None  # default: one pass over the training patterns
    batch_size: int = 8
    lr: float = 2e-3
    warmup_steps: int = 100
    peak_weight: float = 10.0  # MSE weight 1 + peak_weight * label
    l1_weight: float = 0.0
    val_fraction: float = 0.05
    val_max: int = 64
    strain_scan: tuple[int, int] | None = (8, 8)
    strain_thickness_nm: float = 40.0
    seed: int = 0
    device: str | None = None
    amp: bool = True  # mixed precision (CUDA only)
    threads: int | None = None
    init: str | None = None  # start from this model's weights (registry name or file)

    def to_dict(self) -> dict:
        """The configuration as plain data (JSON-friendly)."""
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d


@dataclass(frozen=True)
class TrainProgress(Progress):
    """A :class:`Progress` of :func:`iter_train` that also carries the numbers to plot.

    After a step: ``loss`` is that step's training loss. At the end of an epoch: ``loss`` is
    None and ``history`` holds every finished epoch's metrics so far (train_loss, F1, RMSE...;
    on a resumed run the earlier epochs too).

    Attributes
    ----------
    done, total, message, partial
        As :class:`~napari_4dstem.engine.jobs.Progress` (steps of the whole run).
    epoch : int
        The epoch (1-based).
    step : int
        Optimiser steps done, resumed runs included.
    loss : float or None
        The step's training loss; None at the end of an epoch.
    history : tuple of dict
        Every finished epoch's metrics (end of an epoch only).
    """

    epoch: int = 0
    step: int = 0
    loss: float | None = None
    history: tuple = ()


@dataclass(frozen=True)
class TrainResult:
    """What a training run leaves.

    Attributes
    ----------
    checkpoint : Path
        ``out_dir/checkpoint.pt`` with the final weights (:func:`export_model` ships them).
    epochs_done : int
        Epochs finished (the configured number).
    steps_done : int
        Optimiser steps done.
    history : list of dict
        Per-epoch metrics (train_loss, lr, F1 at 0.5 and 1 px, position RMSE, strain RMSE...).
    wall_s : float
        Wall time of this run, seconds.
    """

    checkpoint: Path
    epochs_done: int
    steps_done: int
    history: list
    wall_s: float


def lr_factor(step: int, warmup: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then ``sqrt(warmup / step)``.

    Parameters
    ----------
    step : int
        The step (1-based; values below 1 count as 1).
    warmup : int
        Warm-up steps; 0 or less gives ``1 / sqrt(step)`` throughout.

    Returns
    -------
    float
        The factor on the peak learning rate.
    """
    if warmup <= 0:
        return 1.0 / math.sqrt(max(step, 1))
    s = max(step, 1)
    return s / warmup if s < warmup else math.sqrt(warmup / s)


def _batch(shards, idx, aug, rng):
    """Patterns, labels and model-frame probes of the samples ``idx``, augmented by ``aug``.

    An :class:`Augment` warps each probe with its pattern; any other callable
    ``(pattern, label, rng) -> (pattern, label)`` leaves the shard's probe as it is. Either
    way the probe is then centred exactly on ``(S // 2, S // 2)``, as inference gives it to
    the model (:func:`~napari_4dstem.nn.infer.probe_geometry`).
    """
    from .infer import probe_geometry

    pats, labels, probes = [], [], []
    for i in idx:
        s = shards[int(i)]
        if isinstance(aug, Augment):
            a = aug.sample(s, rng)
            p, lab, probe = a.pattern, a.label, a.probe
        elif aug is not None:
            (p, lab), probe = aug(s.pattern, s.label, rng), s.probe
        else:
            p, lab, probe = s.pattern, s.label, s.probe
        pats.append(p)
        labels.append(lab)
        probes.append(probe_geometry(probe, probe.shape, probe.shape[0])[1])
    return np.stack(pats), np.stack(labels), np.stack(probes)


def default_augment(shards) -> Augment:
    """The training augmentation for a shard set.

    Doses are per pixel of the central disk for the proxy shards (central disk 1), of the
    brightest pixel for the engines' (sum 1).

    Proxy shards of size ``S`` other than 128 are the 128 geometry sampled ``f = S / 128``
    times as finely (:func:`~napari_4dstem.nn.synthetic.simulate_training_patterns`), so the
    augmentation is scaled to the same physical ranges: dose and flat background per pixel
    divided by ``f**2`` (the same electrons per unit area), shift and blur multiplied by ``f``,
    the pixel size (which sets the plasmon width in px) divided by ``f``. Read noise and the
    bad-pixel fractions are per pixel and stay.
    """
    import h5py

    with h5py.File(shards.files[0], "r") as f:
        engine = str(f.attrs.get("engine", ""))
        size = int(f["patterns"].shape[-1])
    if engine != "kinematic-thick-proxy":
        return Augment(scale_to_max=True)
    aug = Augment()
    f = size / 128
    if f == 1:
        return aug
    return dataclasses.replace(
        aug,
        dose=tuple(d / f**2 for d in aug.dose),
        background=tuple(b / f**2 for b in aug.background),
        max_shift_px=aug.max_shift_px * f,
        blur_sigma_px=tuple(b * f for b in aug.blur_sigma_px),
        pixel_size_inv_A=aug.pixel_size_inv_A / f,
    )


def _save(path: Path, obj) -> None:
    save_hashed(obj, path)  # atomic, with <path>.sha256 that resume and export check


def _validate(model, shards, val_idx, strain_set, dev, cfg, aug) -> dict:
    """Detection scores on held-out shard patterns (fixed seed) and the strain RMSE.

    The held-out patterns get the training augmentation's noise with the geometry fixed, so
    the shards' Bragg positions stay the truth (any other augmentation: the default's; one
    with ``validate_as_is = True`` is applied as it is, as fine-tuning on real data does).
    """
    import torch

    from .infer import detect_in_stack_nn, probe_geometry
    from .metrics import score_detection, strain_rmse
    from .registry import LoadedModel

    model.eval()
    rng = np.random.default_rng(12345)
    if not getattr(aug, "validate_as_is", False):  # real data (fine-tuning) is scored as it is
        aug = (aug if isinstance(aug, Augment) else default_augment(shards)).without_geometry()
    preds, trues = [], []
    s = cfg.model.size
    with torch.inference_mode():
        for a in range(0, len(val_idx), 16):
            idx = val_idx[a : a + 16]
            x, _, pr = _batch(shards, idx, aug, rng)
            for k, i in enumerate(idx):
                geo, pm = probe_geometry(pr[k], (s, s), s)
                pk, cnt, _, _ = detect_in_stack_nn(x[k : k + 1], model, geo, pm, device=dev)
                preds.append(pk[0, : cnt[0], :2])
                b = shards[int(i)].bragg
                trues.append(np.stack([b["qy"], b["qx"]], 1))
    out = score_detection(preds, trues)
    if strain_set is not None:
        from .infer import find_bragg_disks_nn

        lm = LoadedModel(model, cfg.model, "training", "0", "", {})
        bp = find_bragg_disks_nn(
            strain_set.datacube, probe=strain_set.probe, model=lm, device=str(dev), precision="float32"
        )  # the model's own arithmetic: comparable across the history
        out.update(strain_rmse(bp, strain_set.strain.data, reference=strain_set.reference))
    model.train()
    return out


def iter_train(
    shards: Any,
    *,
    out_dir: str | os.PathLike,
    config: TrainConfig = TrainConfig(),
    resume: bool = True,
    augment: Any = None,
) -> Job[TrainResult]:
    """Job: train an FCU-Net on a ShardSet (or a shard folder), checkpointing to ``out_dir``.

    With ``resume`` and an existing ``out_dir/checkpoint.pt``, training continues from it
    (same configuration required). Returns a :class:`TrainResult`; the final weights are in
    the checkpoint (turn them into a shippable model file with :func:`export_model`).

    ``augment`` defaults to :func:`default_augment` (the full crystal4D-style augmentation of
    :class:`~napari_4dstem.nn.augment.Augment`, probe warped with its pattern); any callable
    ``(pattern, label, rng) -> (pattern, label)`` is accepted too (the probe then stays as in
    the shard). Validation uses the same noise with the geometry fixed.

    Parameters
    ----------
    shards : ShardSet or path
        Training patterns, labels and probes (:class:`~napari_4dstem.simulation.shards.ShardSet`
        or its folder); patterns of the model's input size, at least 2.
    out_dir : str or PathLike
        Folder of ``checkpoint.pt`` and ``history.json`` (created).
    config : TrainConfig
        The training parameters.
    resume : bool
        Continue from an existing checkpoint in ``out_dir`` (default True).
    augment : Augment or callable, optional
        The augmentation (default :func:`default_augment`).

    Yields
    ------
    TrainProgress
        After every step (its loss) and at the end of every epoch (the metrics so far).

    Returns
    -------
    TrainResult
        The generator's return value: checkpoint path, epochs, steps, history, wall time.

    Raises
    ------
    Napari4DSTEMError
        When there are fewer than 2 patterns, they do not have the model's size, the
        checkpoint is of another model configuration, or ``config.init`` does not match it.
    TrainingDiverged
        When the loss becomes NaN or infinite (the last good checkpoint is kept).

    Notes
    -----
    Loss ``mean((1 + peak_weight y) (f(x, probe) - y)^2)`` (+ ``l1_weight mean|f - y|``) on the
    Gaussian-peak label image ``y``; Adam with gradient clipping at norm 1, the learning rate
    ``lr * lr_factor(step)``; float16 autocast on CUDA. The task (pattern and probe in,
    "structure factor" image out) follows Munshi et al. [1]_.

    References
    ----------
    .. [1] J. Munshi et al., "Disentangling multiple scattering with deep learning: application
       to strain mapping from electron diffraction patterns", arXiv:2202.00204 (2022).
    """
    import torch

    from ..simulation.shards import ShardSet
    from ._fcunet import FCUNet
    from .infer import pick_device
    from .synthetic import make_thick_strained_scan

    t0 = time.perf_counter()
    if not isinstance(shards, ShardSet):
        shards = ShardSet(shards)
    if len(shards) < 2:
        raise Napari4DSTEMError(f"the training set has {len(shards)} pattern(s); need at least 2")
    s0 = shards[0]
    if s0.pattern.shape != (config.model.size, config.model.size):
        raise Napari4DSTEMError(
            f"the shards hold {s0.pattern.shape} patterns, the model takes "
            f"{config.model.size}x{config.model.size}: simulate at the model size"
        )
    if config.threads:
        torch.set_num_threads(int(config.threads))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint.pt"
    dev = pick_device(config.device)
    torch.manual_seed(config.seed)
    model = FCUNet(config.model).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s + 1, config.warmup_steps))
    use_amp = bool(config.amp) and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    step, epoch0, history = 0, 0, []
    if resume and ckpt_path.is_file():
        ck = load_hashed(ckpt_path, map_location=dev)
        if ck.get("config", {}).get("model") != config.model.to_dict():
            raise Napari4DSTEMError(
                f"{ckpt_path}: the checkpoint is of another model configuration; use another "
                "output folder or resume=False"
            )
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        step, epoch0, history = int(ck["step"]), int(ck["epoch"]), list(ck["history"])
    elif config.init:
        from .registry import load_model

        base = load_model(config.init)
        if base.config.to_dict() != config.model.to_dict():
            raise Napari4DSTEMError(
                f"cannot start from {config.init!r}: it is a {base.config.to_dict()} model, the "
                f"training asks for {config.model.to_dict()}"
            )
        model.load_state_dict(base.module.state_dict())
    rng_split = np.random.default_rng(config.seed)
    order = rng_split.permutation(len(shards))
    n_val = min(config.val_max, max(1, math.floor(config.val_fraction * len(shards) + 0.5)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    strain_set = (
        make_thick_strained_scan(
            scan_shape=config.strain_scan,
            size=config.model.size,
            sampling=config.model.size / 128,
            thickness_nm=config.strain_thickness_nm,
            seed=99,
        )
        if config.strain_scan
        else None
    )
    aug = default_augment(shards) if augment is None else augment
    spe = config.steps_per_epoch or max(1, len(train_idx) // config.batch_size)
    total = config.epochs * spe
    model.train()
    for epoch in range(epoch0, config.epochs):
        rng = np.random.default_rng([config.seed, epoch])
        perm = rng.permutation(train_idx)
        losses = []
        for k in range(spe):
            idx = np.take(perm, range(k * config.batch_size, (k + 1) * config.batch_size), mode="wrap")
            x, y, pr = _batch(shards, idx, aug, rng)
            x, y, pr = (torch.as_tensor(a, device=dev) for a in (x, y, pr))
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
                out = model(x, pr)
            out = out.float()
            w = 1.0 + config.peak_weight * y
            loss = torch.mean(w * (out - y) ** 2)
            if config.l1_weight:
                loss = loss + config.l1_weight * torch.mean(torch.abs(out - y))
            if not torch.isfinite(loss):
                where = f"{ckpt_path} (end of epoch {epoch})" if ckpt_path.is_file() else "none yet"
                raise TrainingDiverged(
                    f"the loss became {loss.item()} at step {step + 1} (epoch {epoch + 1}); "
                    f"training stopped. Last good checkpoint: {where}. Lower the learning rate "
                    "(--lr) or check the training data for NaN"
                )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            losses.append(float(loss.item()))
            yield TrainProgress(
                epoch * spe + k + 1,
                total,
                f"epoch {epoch + 1} loss {np.mean(losses[-20:]):.4g}",
                epoch=epoch + 1,
                step=step,
                loss=losses[-1],
            )
        metrics = _validate(model, shards, val_idx, strain_set, dev, config, aug)
        metrics.update(
            epoch=epoch + 1,
            step=step,
            train_loss=float(np.mean(losses)),
            lr=float(sched.get_last_lr()[0]),
            wall_s=time.perf_counter() - t0,
        )
        history.append(metrics)
        _save(
            ckpt_path,
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "step": step,
                "epoch": epoch + 1,
                "history": history,
                "config": config.to_dict(),
            },
        )
        (out_dir / "history.json").write_text(json.dumps(history, indent=2))
        yield TrainProgress(
            (epoch + 1) * spe,
            total,
            f"epoch {epoch + 1}: "
            + ", ".join(
                f"{k} {v:.4g}"
                for k, v in metrics.items()
                if k in ("f1_0.5px", "f1_1px", "position_rmse_px", "strain_rmse")
            ),
            epoch=epoch + 1,
            step=step,
            history=tuple(history),
        )
    return TrainResult(ckpt_path, config.epochs, step, history, time.perf_counter() - t0)


def export_model(checkpoint: str | os.PathLike, path: str | os.PathLike, *, card: dict | None = None) -> Path:
    """Write the weights of a training checkpoint as a model file + card (see :mod:`.registry`).

    Parameters
    ----------
    checkpoint : str or PathLike
        A ``checkpoint.pt`` of :func:`iter_train` (its hash is checked).
    path : str or PathLike
        The model file to write.
    card : dict, optional
        Entries added to the card (name, domain...); the training configuration, history and
        steps are always there.

    Returns
    -------
    Path
        The written model file.
    """
    from ._fcunet import FCUNet
    from .registry import save_model

    ck = load_hashed(checkpoint)
    cfg = ModelConfig.from_dict(dict(ck["config"]["model"]))
    m = FCUNet(cfg)
    m.load_state_dict(ck["model"])
    c = {"training": ck["config"], "history": ck["history"], "steps": ck["step"]}
    c.update(card or {})
    return save_model(path, m, card=c)
