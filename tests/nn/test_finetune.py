"""Fine-tuning on the user's data with correlation labels (issue #17 item 4), end to end.

Known answers: on a planted scan (disks of 5 px, which inference enlarges to the model's 8.5 px,
so the frame is resampled 1.7x and cropped) the shard labels sit where the planted disks land in
the model frame (within 0.25 model px, i.e. correlation's error times the scale); the job writes
a model that the registry lists as a user model, loads, and detects the planted disks with; its
card names the base model and the data and widens the domain to the data's detector.
"""

import json

import numpy as np
import pytest

from napari_4dstem.engine.jobs import Progress, run_job
from napari_4dstem.errors import Napari4DSTEMError
from napari_4dstem.nn.finetune import FineTuneConfig, correlation_training_set, iter_finetune
from napari_4dstem.nn.registry import DEFAULT_MODEL, list_models, load_model
from napari_4dstem.nn.synthetic import make_thick_strained_scan
from napari_4dstem.simulation.shards import ShardSet


@pytest.fixture(scope="module")
def scan():
    return make_thick_strained_scan(scan_shape=(6, 6), size=128, radius_px=5.0, thickness_nm=10.0, seed=5)


def _planted(n=12, size=128, radius=5.0, seed=0):
    """Noise-free patterns: the probe disk shifted (Fourier) to lattice points, exact truth."""
    from scipy.ndimage import fourier_shift

    yy, xx = np.mgrid[0:size, 0:size]
    c = size // 2
    probe = np.clip(radius + 0.5 - np.hypot(yy - c, xx - c), 0.0, 1.0)
    P = np.fft.fft2(probe)
    rng = np.random.default_rng(seed)
    pats, truths = [], []
    for _ in range(n):
        g1 = np.array([0.4, 15.0]) * rng.uniform(0.97, 1.03)
        g2 = np.array([14.0, 5.5]) * rng.uniform(0.97, 1.03)
        o = c + rng.uniform(-1.5, 1.5, 2)
        pts = np.array([o + i * g1 + j * g2 for i in range(-5, 6) for j in range(-5, 6)])
        pts = pts[np.all((pts > radius + 8) & (pts < size - radius - 9), axis=1)]
        img = np.zeros((size, size))
        for py, px in pts:
            amp = 1.0 if np.allclose((py, px), o) else 0.3
            img += amp * np.real(np.fft.ifft2(fourier_shift(P, (py - c, px - c))))
        pats.append(img * 1000.0)
        truths.append(pts)
    return np.array(pats, np.float32), probe.astype(np.float32) * 1000.0, truths


def test_labels_land_where_the_planted_disks_land_in_the_model_frame(tmp_path):
    from napari_4dstem.nn.infer import _geometry_for

    base = load_model(DEFAULT_MODEL)
    pats, probe, truths = _planted()
    summary = correlation_training_set(pats, probe, tmp_path / "shards", base=base)
    geo, _ = _geometry_for(probe, pats.shape[1:], base, "auto", None, 1024)
    assert summary["scale"] == pytest.approx(geo.scale) and geo.scale > 1.5  # 5 px disks enlarged
    assert summary["patterns_kept"] == len(pats)
    H, W = geo.frame
    y0, x0 = H // 2 - 64, W // 2 - 64
    shards = ShardSet(tmp_path / "shards")
    errors, peak_heights = [], []
    for i, truth in enumerate(truths):
        s = shards[i]
        assert s.pattern.shape == s.label.shape == s.probe.shape == (128, 128)
        ty = (truth[:, 0] - geo.centre_px[0]) * geo.scale + H // 2 - y0
        tx = (truth[:, 1] - geo.centre_px[1]) * geo.scale + W // 2 - x0
        inside = (ty >= 0) & (ty <= 127) & (tx >= 0) & (tx <= 127)
        for qy, qx in zip(s.bragg["qy"], s.bragg["qx"], strict=True):
            errors.append(np.hypot(ty - qy, tx - qx).min())
            peak_heights.append(s.label[round(qy), round(qx)])
        assert len(s.bragg["qy"]) >= 0.9 * inside.sum()  # nearly every planted disk in the frame
        # the resampled pattern's brightest pixel is the central disk, where its label is
        iy, ix = np.unravel_index(np.argmax(s.pattern), s.pattern.shape)
        j = np.argmin(np.hypot(ty - iy, tx - ix))
        assert np.hypot(ty[j] - iy, tx[j] - ix) < 5 * geo.scale  # inside the central disk (flat top)
    errors = np.array(errors)
    # correlation finds noise-free disks within ~0.05 detector px; the frame multiplies by the scale
    assert np.median(errors) < 0.1 * geo.scale
    assert errors.max() < 0.5 * geo.scale
    assert min(peak_heights) > 0.6  # unit Gaussian labels at every labelled disk


def test_finetune_job_writes_a_user_model_that_loads_and_detects(scan, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_4DSTEM_USER_MODELS", str(tmp_path / "models"))
    cfg = FineTuneConfig(n_patterns=24, epochs=1, batch_size=4, seed=1)
    steps = []
    result = run_job(iter_finetune(scan.datacube, scan.probe, name="tuned", version="1", config=cfg),
                     lambda p: steps.append(p))  # fmt: skip
    assert all(isinstance(p, Progress) for p in steps) and len(steps) >= 3
    assert result.path == tmp_path / "models" / "tuned-1.pt" and result.path.is_file()
    assert result.n_train + result.n_val <= 24 and result.n_train >= 16
    assert result.history and all(np.isfinite(h["train_loss"]) for h in result.history)
    # held out, scored against their correlation labels: the tuned network agrees with them
    assert result.history[-1]["recall_1px"] > 0.8
    card = json.loads(result.path.with_suffix(".json").read_text())
    assert card["fine_tuned_from"].startswith(DEFAULT_MODEL)
    assert card["fine_tune"]["patterns_kept"] == result.n_train + result.n_val
    assert card["domain"]["detector_radius_px"][0] <= 5.5  # widened to the data's 5 px disks
    listed = {(e.name, e.version): status for e, status in list_models()}
    assert listed[("tuned", "1")] == "user"
    # the tuned model runs through the documented API and finds the planted disks
    from napari_4dstem.nn import find_bragg_disks_nn

    pattern = np.asarray(scan.datacube.data[2, 3], np.float32)
    peaks = find_bragg_disks_nn(pattern[None, None], probe=scan.probe, model="tuned@1")
    found = peaks.at(0, 0)
    assert len(found["qy"]) >= 3
    truth = scan.centers.reshape(-1, *scan.centers.shape[-2:])[2 * 6 + 3]
    truth = truth[np.isfinite(truth[:, 0])]
    d = np.hypot(truth[:, None, 0] - found["qy"][None], truth[:, None, 1] - found["qx"][None]).min(0)
    assert np.mean(d < 1.0) > 0.8


def test_a_taken_name_and_an_empty_region_are_refused_before_any_work(scan, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_4DSTEM_USER_MODELS", str(tmp_path))
    (tmp_path / "taken-1.pt").write_bytes(b"x")
    with pytest.raises(Napari4DSTEMError, match="exists"):
        run_job(iter_finetune(scan.datacube, scan.probe, name="taken", version="1"))
    region = np.zeros(scan.datacube.scan_shape, bool)
    region[0, :2] = True
    with pytest.raises(Napari4DSTEMError, match="at least 4"):
        run_job(iter_finetune(scan.datacube, scan.probe, name="new", version="1", region=region))
    with pytest.raises(ValueError, match="epochs"):
        FineTuneConfig(epochs=0)


def test_cli_finetune_on_a_region_then_infer_with_the_new_model(scan, tmp_path, monkeypatch, capsys):
    from napari_4dstem.cli import main
    from napari_4dstem.io import save_datacube

    monkeypatch.setenv("NAPARI_4DSTEM_USER_MODELS", str(tmp_path / "models"))
    data = tmp_path / "scan.npy"
    save_datacube(data, scan.datacube)
    np.save(tmp_path / "probe.npy", np.asarray(scan.probe.data))
    # disks corrected by hand at one position outside the region: always trained on
    from napari_4dstem.nn.finetune import read_corrections, write_corrections

    disks = np.array([[64.0, 64.0], [64.0, 80.5], [48.25, 64.0]])
    write_corrections(tmp_path / "labels.json", {(5, 5): disks})
    np.testing.assert_array_equal(read_corrections(tmp_path / "labels.json")[(5, 5)], disks)
    args = ["-q", "finetune", str(data), "--probe", str(tmp_path / "probe.npy"), "--name", "mine",
            "--region", "0:4,0:6", "--patterns", "20", "--epochs", "1", "--batch-size", "4",
            "--labels", str(tmp_path / "labels.json")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mine@1" in out and "held-out recall" in out and "1 corrected by hand" in out
    card = json.loads((tmp_path / "models" / "mine-1.json").read_text())
    # 24 positions in the region; 19 drawn from it and the corrected one
    assert card["fine_tune"]["patterns_labelled"] == 20 and card["fine_tune"]["hand_corrected"] == 1
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    bad_labels = [*args[:-1], str(tmp_path / "bad.json")]
    bad_labels[bad_labels.index("mine")] = "mine3"
    assert main(bad_labels) != 0
    assert "disk labels" in capsys.readouterr().err
    assert main(["-q", "infer", str(data), str(tmp_path / "p.h5"), "--probe", str(tmp_path / "probe.npy"),
                 "--model", "mine@1"]) == 0  # fmt: skip
    assert "model mine@1" in capsys.readouterr().out
    # a region outside the scan, and a name taken, end at once with one line
    bad = ["-q", "finetune", str(data), "--probe", str(tmp_path / "probe.npy"), "--name", "mine2",
           "--region", "0:9,0:2"]  # fmt: skip
    assert main(bad) != 0
    assert "outside the 6x6 scan" in capsys.readouterr().err


def test_hand_corrected_labels_replace_correlations_and_are_always_used(tmp_path):
    """A pattern whose disks the user corrected is labelled with the corrected positions (mapped
    into the model frame exactly as correlation's), even below min_peaks; the others keep
    correlation's labels."""
    from napari_4dstem.nn.infer import _geometry_for

    base = load_model(DEFAULT_MODEL)
    pats, probe, truths = _planted(n=6)
    # pattern 2: the user keeps two of the planted disks and adds one where there is none
    near = truths[2][np.argsort(np.hypot(*(truths[2] - 64.0).T))[:2]]  # inside the model's field of view
    extra = near[0] + np.array([3.0, -4.0])
    hand = np.vstack([near, extra])
    labels = [None] * len(pats)
    labels[2] = hand
    summary = correlation_training_set(pats, probe, tmp_path / "s", base=base, labels=labels, min_peaks=4)
    assert summary["hand_corrected"] == 1 and summary["patterns_kept"] == len(pats)
    geo, _ = _geometry_for(probe, pats.shape[1:], base, "auto", None, 1024)
    H, W = geo.frame
    y0, x0 = H // 2 - 64, W // 2 - 64
    want_y = (hand[:, 0] - geo.centre_px[0]) * geo.scale + H // 2 - y0
    want_x = (hand[:, 1] - geo.centre_px[1]) * geo.scale + W // 2 - x0
    shards = ShardSet(tmp_path / "s")
    s = shards[2]
    np.testing.assert_allclose(np.sort(s.bragg["qy"]), np.sort(want_y), atol=1e-9)
    np.testing.assert_allclose(np.sort(s.bragg["qx"]), np.sort(want_x), atol=1e-9)
    assert s.label[round(want_y[2]), round(want_x[2])] > 0.9  # the added disk is a label peak
    assert len(shards[1].bragg["qy"]) > 3  # an uncorrected pattern: correlation's many disks
    with pytest.raises(Exception, match="2 entries for 6 patterns"):
        correlation_training_set(pats, probe, tmp_path / "t", base=base, labels=[None, None])
