"""The ``train``, ``finetune``, ``infer`` and ``models`` subcommands (registered in :mod:`napari_4dstem.cli`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import _cli_validate as v


def _bar(args):
    from ._cli_common import ProgressBar

    return ProgressBar(enabled=not args.quiet)


# -- train ----------------------------------------------------------------------------------------
def add_train(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train an FCU-Net disk detector on simulation shards")
    p.add_argument(
        "shards",
        type=Path,
        nargs="+",
        help="training-set folder(s) (shard-*.h5, from the simulation jobs); several are joined",
    )
    p.add_argument("out", type=Path, help="output folder: checkpoint.pt, history.json (resumed if present)")
    p.add_argument(
        "--make-proxy",
        type=v.positive_int,
        metavar="N",
        help="first simulate N kinematic thick-sample proxy patterns into SHARDS (when the folder has no shards)",
    )
    p.add_argument("--proxy-seed", type=int, default=1, help="seed of --make-proxy (default 1)")
    p.add_argument("--size", type=int, default=128, choices=[128, 256, 512], help="model input size")
    p.add_argument("--width", type=v.positive_int, default=6, help="complex channels of the first level (default 6)")
    p.add_argument("--dropout", type=v.fraction, default=0.1)
    p.add_argument(
        "--domain",
        choices=["fourier", "real"],
        default="real",
        help="where the complex U-Net works (default real: see docs/nn.md)",
    )
    p.add_argument("--epochs", type=v.positive_int, default=3)
    p.add_argument("--steps-per-epoch", type=v.positive_int, default=350)
    p.add_argument("--batch-size", type=v.positive_int, default=8)
    p.add_argument("--lr", type=v.positive_float, default=3e-3)
    p.add_argument("--warmup", type=v.nonnegative_int, default=50, help="warm-up steps (then 1/sqrt decay)")
    p.add_argument("--peak-weight", type=v.nonnegative_float, default=20.0, help="MSE weight 1 + w * label")
    p.add_argument("--l1", type=v.nonnegative_float, default=0.0, help="weight of an added L1 term")
    p.add_argument(
        "--max-shift",
        type=float,
        default=None,
        metavar="PX",
        help="largest augmentation shift of pattern, probe and label (default 4; 0 also turns "
        "off the elliptic distortion and rotation)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cuda or cpu (default: cuda when present)")
    p.add_argument("--threads", type=v.positive_int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")
    p.add_argument(
        "--init",
        metavar="MODEL",
        help="fine-tune: start from this model's weights (registry name or .pt file; its size, "
        "width, dropout and domain are used)",
    )
    p.add_argument(
        "--export",
        type=Path,
        metavar="MODEL.pt",
        help="write the final weights as a model file + JSON card",
    )
    return p


def train_config_from_args(args):
    from .nn.model import ModelConfig
    from .nn.train import TrainConfig

    init = getattr(args, "init", None)
    if init:
        from .nn.registry import load_model

        model = load_model(init).config
    else:
        model = ModelConfig(size=args.size, width=args.width, dropout=args.dropout, domain=args.domain)
    return TrainConfig(
        model=model,
        init=init,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup,
        peak_weight=args.peak_weight,
        l1_weight=args.l1,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        strain_scan=(8, 8),
        val_max=48,
    )


def run_train(args) -> int:
    from .engine.jobs import run_job
    from .nn.train import export_model, iter_train
    from .simulation.shards import ShardSet

    first = Path(args.shards[0])
    if args.make_proxy and not any(first.glob("shard-*.h5")):
        from .nn.synthetic import write_training_shards

        write_training_shards(first, n_patterns=args.make_proxy, size=args.size, seed=args.proxy_seed)
    shards = ShardSet(args.shards)  # several folders: their shards, in the order given
    cfg = train_config_from_args(args)
    augment = None
    if args.max_shift is not None:
        import dataclasses

        from .nn.train import default_augment

        augment = dataclasses.replace(default_augment(shards), max_shift_px=args.max_shift)
    res = run_job(
        iter_train(
            shards,
            out_dir=args.out,
            config=cfg,
            resume=not args.no_resume,
            augment=augment,
        ),
        _bar(args),
    )
    last = res.history[-1] if res.history else {}
    print(
        f"trained {res.steps_done} steps in {res.wall_s:.0f} s; checkpoint {res.checkpoint}; "
        + ", ".join(
            f"{k} {last[k]:.4g}" for k in ("f1_0.5px", "f1_1px", "position_rmse_px", "strain_rmse") if k in last
        )
    )
    if args.export:
        import shlex

        cmd = "napari-4dstem " + " ".join(shlex.quote(a) for a in args.argv)
        export_model(res.checkpoint, args.export, card={"training_command": cmd})
        print(f"wrote {args.export} and {args.export.with_suffix('.json')}")
    return 0


def _required_probe_arg(p: argparse.ArgumentParser) -> None:
    """The required ``--probe FILE[:NAME]`` of the network commands (infer, finetune)."""
    p.add_argument(
        "--probe",
        required=True,
        metavar="FILE[:NAME]",
        help="vacuum probe, centred: .npy image or an EMD file's DiffractionImage",
    )


# -- infer ----------------------------------------------------------------------------------------
def add_infer(sub) -> argparse.ArgumentParser:
    from ._cli_common import analysis_args

    p = sub.add_parser("infer", help="Bragg disks by the neural network (BraggPeaks, like `disks`)")
    p.add_argument("file", type=Path)
    p.add_argument("out", type=Path, help="output .h5 (EMD): braggpeaks_nn and bragg_vector_map")
    _required_probe_arg(p)
    p.add_argument("--model", help="registry name[@version] or a model .pt file (default: bundled)")
    p.add_argument("--mc-samples", type=v.nonnegative_int, default=0, help="Monte-Carlo dropout passes (0: off)")
    p.add_argument("--min-relative", type=v.fraction, default=0.1)
    p.add_argument(
        "--min-significance",
        type=float,
        default=5.0,
        help="keep a peak only where the raw pattern holds a disk this many noise sd above the "
        "local background (default 5; a negative value keeps every peak the network marks)",
    )
    p.add_argument(
        "--scale",
        default="auto",
        help="auto (resample so the probe disk has the radius the model was trained on; "
        "default), bin (the old fixed integer binning), or model px per detector px",
    )
    p.add_argument("--batch-size", type=v.positive_int, default=32)
    p.add_argument("--device", help="cuda or cpu (default: cuda when present)")
    precision_arg(p)
    analysis_args(p)
    return p


def precision_arg(p: argparse.ArgumentParser) -> None:
    """``--precision float32|bfloat16``: the network's CPU arithmetic (NNDiskParams.precision);
    left out, None (the NNDiskParams default)."""
    from .nn.precision import DEFAULT_PRECISION, PRECISIONS

    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="the network's arithmetic on the CPU: bfloat16 runs about 1.6-2.3x faster on CPUs "
        "with native bfloat16 and moves disks by hundredths of a pixel; float32 is exact "
        f"(default {DEFAULT_PRECISION}; CUDA and MC dropout always run float32)",
    )


def run_infer(args) -> int:
    from ._cli_common import need_emd, run_on_cube
    from .errors import Napari4DSTEMError
    from .pipelines import NNDiskParams, iter_disks

    need_emd(args, "infer")
    import warnings

    from .nn.infer import OutOfDomainWarning

    try:
        scale = args.scale if args.scale in ("auto", "bin") else float(args.scale)
    except ValueError:
        raise Napari4DSTEMError(f"--scale must be auto, bin or a number, got {args.scale!r}") from None
    params = NNDiskParams(
        model=args.model,
        mc_samples=args.mc_samples,
        min_relative=args.min_relative,
        min_significance=None if args.min_significance < 0 else args.min_significance,
        batch_size=args.batch_size,
        scale=scale,
        **({} if args.precision is None else {"precision": args.precision}),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OutOfDomainWarning)
        res = run_on_cube(args, iter_disks, detection=params)
    for w in caught:  # said once, plainly, on stderr (other warnings pass through)
        if issubclass(w.category, OutOfDomainWarning):
            print(f"WARNING: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    res.save(args.out, overwrite=args.overwrite)
    peaks = res.peaks
    counts = peaks.counts()
    print(
        f"wrote {args.out}: {peaks.n_peaks} peaks, {counts.mean():.1f} per pattern "
        f"(model {peaks.params['model']}@{peaks.params['model_version']}), bragg_vector_map"
    )
    return 0


# -- finetune -------------------------------------------------------------------------------------
def _scan_rect(text: str) -> tuple[int, int, int, int]:
    """``Y0:Y1,X0:X1`` (scan positions, end exclusive) -> ``(y0, y1, x0, x1)``."""
    try:
        ys, xs = text.split(",")
        y0, y1 = (int(t) for t in ys.split(":"))
        x0, x1 = (int(t) for t in xs.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Y0:Y1,X0:X1 (scan positions), got {text!r}") from None
    if not (0 <= y0 < y1 and 0 <= x0 < x1):
        raise argparse.ArgumentTypeError(f"empty or negative region {text!r} (need 0 <= Y0 < Y1, 0 <= X0 < X1)")
    return y0, y1, x0, x1


def add_finetune(sub) -> argparse.ArgumentParser:
    from ._cli_common import scan_shape_arg

    p = sub.add_parser(
        "finetune",
        help="fine-tune a disk-detection network on this data, labelled by correlation "
        "(saved as a user model: `models` lists it, `infer --model NAME@VERSION` uses it)",
    )
    p.add_argument("file", type=Path)
    _required_probe_arg(p)
    p.add_argument("--name", required=True, help="name of the new model (letters, digits, - _ .)")
    p.add_argument("--version", default="1", help="its version (default 1)")
    p.add_argument("--base", help="model to start from: registry name[@version] or .pt (default: bundled)")
    p.add_argument(
        "--region",
        type=_scan_rect,
        metavar="Y0:Y1,X0:X1",
        help="draw the patterns from these scan positions only (a thin area, where "
        "correlation is reliable); default the whole scan",
    )
    p.add_argument(
        "--labels",
        type=Path,
        metavar="JSON",
        help="disks corrected by hand (the napari NN dock's 'Save labels...'): those patterns are "
        "always trained on, with these positions instead of correlation's",
    )
    p.add_argument("--patterns", type=v.positive_int, default=256, help="patterns to label and train on")
    p.add_argument("--epochs", type=v.positive_int, default=4)
    p.add_argument("--batch-size", type=v.positive_int, default=8)
    p.add_argument("--lr", type=v.positive_float, default=5e-4)
    p.add_argument(
        "--min-peaks", type=v.positive_int, default=3, help="leave out patterns where correlation finds fewer disks"
    )
    p.add_argument(
        "--min-relative",
        type=v.fraction,
        default=0.03,
        help="correlation labels: drop disks below this fraction of the strongest",
    )
    p.add_argument("--seed", type=v.nonnegative_int, default=0)
    p.add_argument("--threads", type=v.positive_int, help="torch CPU threads")
    p.add_argument("--device", help="cuda or cpu (default: cuda when present)")
    scan_shape_arg(p)
    return p


def run_finetune(args) -> int:
    import numpy as np

    from ._cli_common import open_cube
    from .engine.jobs import run_job
    from .errors import DataShapeError
    from .nn.finetune import FineTuneConfig, iter_finetune
    from .nn.registry import user_model_path
    from .pipelines import DiskDetectionParams, ProbeSource

    if args.patterns < 4:
        raise argparse.ArgumentTypeError("--patterns must be at least 4")
    user_model_path(args.name, args.version)  # the name is checked before any work
    config = FineTuneConfig(
        base=args.base, n_patterns=args.patterns, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, min_peaks=args.min_peaks, seed=args.seed, threads=args.threads, device=args.device,
    )  # fmt: skip
    probe = ProbeSource.parse(args.probe).load()
    corrections = None
    if args.labels is not None:
        from .nn.finetune import read_corrections

        corrections = read_corrections(args.labels)  # checked before the data is opened
    dc = open_cube(args)
    try:
        region = None
        if args.region is not None:
            y0, y1, x0, x1 = args.region
            ny, nx = dc.scan_shape
            if y1 > ny or x1 > nx:
                raise DataShapeError(f"--region {y0}:{y1},{x0}:{x1} lies outside the {ny}x{nx} scan")
            region = np.zeros(dc.scan_shape, bool)
            region[y0:y1, x0:x1] = True
        job = iter_finetune(dc, probe, name=args.name, version=args.version, config=config,
                            detection=DiskDetectionParams(min_relative=args.min_relative), region=region,
                            corrections=corrections)  # fmt: skip
        res = run_job(job, _bar(args))
    finally:
        dc.close()
    last = res.history[-1] if res.history else {}
    ft = res.card["fine_tune"]
    print(
        f"wrote {res.path}: {res.name}@{res.version} from {res.card['fine_tuned_from']}, "
        f"{ft['patterns_kept']} of {ft['patterns_labelled']} patterns ({ft['disks_per_pattern']:.1f} disks each, "
        f"{ft.get('hand_corrected', 0)} corrected by hand), "
        f"train loss {last.get('train_loss', float('nan')):.4g}, held-out recall against the correlation "
        f"labels {last.get('recall_1px', float('nan')):.3f} (1 px); "
        f"use it with `infer --model {res.name}@{res.version}`"
    )
    return 0


# -- models ---------------------------------------------------------------------------------------
def add_models(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("models", help="list, download (hash-checked) and verify NN models")
    p.add_argument("action", choices=["list", "pull", "verify"])
    p.add_argument("name", nargs="?", help="model name[@version] (for pull)")
    p.add_argument("--index", help="URL or path of a model index (besides the bundled one)")
    p.add_argument("--force", action="store_true", help="pull again even if cached")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def run_models(args) -> int:
    from .errors import Napari4DSTEMError
    from .nn.registry import cache_dir, list_models, pull_model, verify_models

    if args.action == "list":
        rows = list_models(args.index)
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "name": e.name,
                            "version": e.version,
                            "input_size": e.input_size,
                            "status": s,
                            "url": e.url,
                            "sha256": e.sha256,
                            "licence": e.licence,
                            "training_set": e.training_set,
                        }
                        for e, s in rows
                    ],
                    indent=2,
                )
            )
        else:
            for e, s in rows:
                print(f"{e.name}@{e.version}  {e.input_size}px  {s:14s}  {e.licence}  {e.training_set}")
            print(f"cache: {cache_dir()}")
        return 0
    if args.action == "pull":
        if not args.name:
            raise Napari4DSTEMError("models pull needs a model name (see `napari-4dstem models list`)")
        path = pull_model(args.name, index=args.index, force=args.force)
        print(f"{args.name}: verified {path}")
        return 0
    bad = 0
    for e, status in verify_models(args.index):
        print(f"{e.name}@{e.version}: {status}")
        bad += status == "MISMATCH"
    if bad:
        raise Napari4DSTEMError(f"{bad} model file(s) do not match their SHA-256: pull them again")
    return 0
