"""Training job: checkpoints, resume, the NaN stop that keeps the last good checkpoint, metrics."""

import json

import numpy as np
import pytest

from napari_4dstem.engine.jobs import run_job
from napari_4dstem.errors import FileFormatError, Napari4DSTEMError
from napari_4dstem.nn.augment import Augment
from napari_4dstem.nn.metrics import match_disks, score_detection
from napari_4dstem.nn.model import ModelConfig
from napari_4dstem.nn.registry import load_model
from napari_4dstem.nn.synthetic import write_training_shards
from napari_4dstem.nn.train import (
    TrainConfig,
    TrainingDiverged,
    TrainProgress,
    export_model,
    iter_train,
    lr_factor,
)
from napari_4dstem.simulation.shards import ShardSet, write_shard


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("set")
    write_training_shards(d, n_patterns=12, per_shard=6, seed=3)
    return d


def _cfg(**kw):
    base = dict(
        model=ModelConfig(size=128, width=1),
        epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        strain_scan=None,
        val_max=2,
        warmup_steps=2,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_lr_schedule_warms_up_then_decays_as_inverse_sqrt():
    assert lr_factor(1, 10) == pytest.approx(0.1)
    assert lr_factor(10, 10) == pytest.approx(1.0)
    assert lr_factor(40, 10) == pytest.approx(0.5)


def test_checkpoint_resume_and_export(shards, tmp_path):
    out = tmp_path / "run"
    seen = []
    res = run_job(iter_train(shards, out_dir=out, config=_cfg()), seen.append)
    assert res.steps_done == 2 and res.checkpoint.is_file()
    # every step carries its loss; the end of the epoch carries the history (for live plots)
    assert [p.step for p in seen] == [1, 2, 2] and all(isinstance(p, TrainProgress) for p in seen)
    assert np.isfinite([p.loss for p in seen[:2]]).all() and seen[2].loss is None
    assert len(seen[2].history) == 1 and seen[2].history[0]["epoch"] == 1
    h = json.loads((out / "history.json").read_text())
    assert len(h) == 1
    for key in ("f1_0.5px", "f1_1px", "position_rmse_px", "train_loss", "lr"):
        assert key in h[0]
    # resume: the second epoch starts from step 2
    res2 = run_job(iter_train(shards, out_dir=out, config=_cfg(epochs=2)))
    assert res2.steps_done == 4 and len(res2.history) == 2
    # a checkpoint of another architecture is not silently resumed
    with pytest.raises(Napari4DSTEMError, match="another model configuration"):
        run_job(iter_train(shards, out_dir=out, config=_cfg(model=ModelConfig(size=128, width=2))))
    f = export_model(res2.checkpoint, tmp_path / "m.pt")
    lm = load_model(str(f))
    assert lm.config.width == 1 and json.loads(f.with_suffix(".json").read_text())["steps"] == 4


class _PoisonAfter:
    """Augmentation that turns the data into NaN after ``n`` calls (a run that diverges)."""

    def __init__(self, n):
        self.n = n
        self.calls = 0
        self.inner = Augment()

    def __call__(self, pattern, label, rng):
        self.calls += 1
        p, lab = self.inner(pattern, label, rng)
        return (p * np.nan if self.calls > self.n else p), lab


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(shards, tmp_path):
    out = tmp_path / "run"
    run_job(iter_train(shards, out_dir=out, config=_cfg()))
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(TrainingDiverged, match="Last good checkpoint") as e:
        run_job(iter_train(shards, out_dir=out, config=_cfg(epochs=2), augment=_PoisonAfter(2)))
    assert str(out / "checkpoint.pt") in str(e.value) and "end of epoch 1" in str(e.value)
    assert (out / "checkpoint.pt").read_bytes() == before


def test_nan_in_the_data_is_caught(tmp_path):
    d = tmp_path / "nan"
    d.mkdir()
    p = np.full((2, 128, 128), np.nan, np.float32)
    b = [{"qy": [64.0], "qx": [64.0], "intensity": [1.0], "hkl": np.zeros((1, 3))}] * 2
    yy, xx = np.indices((128, 128))
    disk = (np.hypot(yy - 64, xx - 64) < 8).astype(np.float32)
    write_shard(
        d / "shard-00000.h5",
        patterns=p,
        probes=np.stack([disk, disk]),
        labels=np.zeros_like(p),
        bragg=b,
        meta={},
        engine="test",
    )
    with pytest.raises(TrainingDiverged, match="none yet"):
        run_job(iter_train(d, out_dir=tmp_path / "o", config=_cfg()))
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


def test_empty_shard_set_and_wrong_size_are_clear_errors(tmp_path, shards):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileFormatError, match="no complete training shards"):
        run_job(iter_train(tmp_path / "empty", out_dir=tmp_path / "o", config=_cfg()))
    with pytest.raises(Napari4DSTEMError, match="simulate at the model size"):
        run_job(
            iter_train(
                ShardSet(shards),
                out_dir=tmp_path / "o",
                config=_cfg(model=ModelConfig(size=256, width=1)),
            )
        )


def test_detection_scores_count_matches_within_tolerance():
    true = [np.array([[10.0, 10.0], [20.0, 20.0], [np.nan, np.nan]])]
    pred = [np.array([[10.3, 10.0], [20.0, 20.8], [50.0, 50.0]])]
    s = score_detection(pred, true)
    # 0.5 px: one match (10.3 vs 10), one FP at 20.8 and one at 50, one FN -> F1 = 2/(2+2+1)
    assert s["f1_0.5px"] == pytest.approx(2 / 5)
    assert s["f1_1px"] == pytest.approx(4 / 5)
    assert s["position_rmse_px"] == pytest.approx(np.sqrt((0.3**2 + 0.8**2) / 2))
    assert len(match_disks(np.zeros((0, 2)), true[0][:2], 1.0)) == 0


def test_augmentation_doses_relative_to_the_brightest_pixel_when_asked():
    rng = np.random.default_rng(0)
    pat = np.zeros((32, 32))
    pat[10:20, 10:20] = 1e-3  # a pattern normalised to sum 0.1, as the simulation engines write
    lab = np.zeros_like(pat)
    # dose and Poisson noise only: no warp, background, blur, read noise or bad pixels
    quiet = dict(
        background=(0.0, 0.0),
        max_shift_px=0,
        plasmon_weight=(0.0, 0.0),
        blur_sigma_px=(0.0, 0.0),
        read_noise=(0.0, 0.0),
        hot_dead_fraction=0.0,
        salt_pepper_fraction=0.0,
    )
    aug = Augment(dose=(100.0, 100.0), scale_to_max=True, **quiet)
    p, lab2 = aug(pat, lab, rng)
    assert p[10:20, 10:20].mean() == pytest.approx(100, rel=0.05) and p[:10].sum() == 0
    p_raw, _ = Augment(dose=(100.0, 100.0), **quiet)(pat, lab, rng)
    assert p_raw.sum() < 30  # without it such a pattern would be nearly empty
    np.testing.assert_array_equal(lab2, lab)  # no warp: the label is unchanged


def test_training_can_start_from_a_model(shards, tmp_path):
    """``init``: the first step starts from that model's weights; another architecture is
    refused with a message that names both."""
    base = load_model(None)
    cfg = _cfg(model=base.config, init=base.name, lr=1e-12, warmup_steps=1)
    res = run_job(iter_train(shards, out_dir=tmp_path / "ft", config=cfg))
    import torch

    ck = torch.load(res.checkpoint, map_location="cpu", weights_only=True)
    ref = base.module.state_dict()
    diffs = [float((ck["model"][k].float() - ref[k].float()).abs().max()) for k in ref]
    assert max(diffs) < 1e-4  # a learning rate of 1e-12 leaves the weights where they began
    with pytest.raises(Napari4DSTEMError, match="cannot start from"):
        run_job(iter_train(shards, out_dir=tmp_path / "bad", config=_cfg(init=base.name)))


def test_cli_fine_tunes_a_model_on_several_shard_folders(shards, tmp_path, capsys):
    import torch

    from napari_4dstem.cli import main

    other = tmp_path / "set2"
    write_training_shards(other, n_patterns=6, per_shard=6, seed=4)
    out, model = tmp_path / "run", tmp_path / "tuned.pt"
    args = ["train", str(shards), str(other), str(out), "--init", "fcunet-proxy-128"]
    args += ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--threads", "1"]
    assert main([*args, "--export", str(model)]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["training_command"].startswith("napari-4dstem train ")
    assert "--init fcunet-proxy-128" in card["training_command"]
    base, tuned = load_model("fcunet-proxy-128"), load_model(str(model))
    assert tuned.config == base.config  # the architecture comes from --init
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["config"]["init"] == "fcunet-proxy-128"
    # the weights started from the base model and moved (2 Adam steps)
    a = dict(base.module.named_parameters())
    d = [float((p.detach() - a[k].detach()).abs().max()) for k, p in tuned.module.named_parameters()]
    assert 0 < max(d) < 0.05
