"""The bundled models: offline, hash-checked; the default better than correlation on the
held-out kinematic thick-sample proxy and on held-out multislice scans (docs/nn.md); CLI and
demo step."""

import json

import numpy as np

from napari_4dstem.cli import main
from napari_4dstem.nn.evaluate import compare_paths
from napari_4dstem.nn.registry import (
    BUNDLED_DIR,
    DEFAULT_MODEL,
    list_models,
    load_model,
    sha256_file,
)


def test_bundled_models_are_small_hash_checked_and_documented():
    lm = load_model(None)
    assert lm.name == DEFAULT_MODEL == "fcunet-ms-128" and lm.config.size == 128
    bundled = {f"{e.name}@{e.version}": e for e, s in list_models() if s == "bundled"}
    assert set(bundled) >= {"fcunet-ms-128@0.3.0", "fcunet-ms-128@0.2.0", "fcunet-proxy-128@0.1.0"}
    cards = {}
    for key, entry in bundled.items():
        path = entry.local_path()
        assert path.stat().st_size < 3e6 and sha256_file(path) == entry.sha256
        cards[key] = json.loads(path.with_suffix(".json").read_text())
    # the default is the newest multislice model
    assert lm.version == "0.3.0" and lm.sha256 == bundled["fcunet-ms-128@0.3.0"].sha256
    # what each was trained on, and the commands that reproduce it (each from the one before)
    ms3, ms2 = cards["fcunet-ms-128@0.3.0"], cards["fcunet-ms-128@0.2.0"]
    proxy = cards["fcunet-proxy-128@0.1.0"]
    assert "MULTISLICE" in ms3["training_set"] and "MULTISLICE" in ms2["training_set"]
    assert "NOT multislice" in proxy["training_set"]
    assert ms3["training_command"].startswith(ms2["training_command"])
    assert "--init fcunet-ms-128@0.2.0" in ms3["training_command"] and "--seed 2028" in ms3["training_command"]
    assert "--init fcunet-proxy-128" in ms2["training_command"] and "--seed 2027" in ms2["training_command"]
    assert "napari-4dstem train" in proxy["training_command"]
    assert ms3["history"][-1]["epoch"] == 10 and ms3["seed"] == 3
    assert ms2["history"][-1]["epoch"] == 4 and ms2["seed"] == 1
    assert proxy["history"][-1]["epoch"] == 6 and proxy["seed"] == 0
    assert (BUNDLED_DIR / "index.json").is_file()


def _pooled(thickness_nm, seeds, scan=(16, 16)):
    runs = [compare_paths(thickness_nm=thickness_nm, scan_shape=scan, seed=s) for s in seeds]
    return {
        k: {m: float(np.mean([r[k][m] for r in runs])) for m in ("f1_0.5px", "strain_rmse")}
        for k in ("correlation", "nn")
    }


def test_nn_beats_correlation_on_the_thick_proxy():
    # 40 nm, planted strain, 60 counts/px central disk with Poisson noise; seeds never used in
    # training or validation. Measured (2 seeds x 16x16; fcunet-ms-128 0.3.0): strain ratio
    # 0.35, F1 ratio 2.2 (fcunet-proxy-128: 0.46, 2.8)
    r = _pooled(40.0, seeds=(11, 12))
    assert r["nn"]["strain_rmse"] <= 0.5 * r["correlation"]["strain_rmse"], r
    assert r["nn"]["f1_0.5px"] >= r["correlation"]["f1_0.5px"], r


def test_nn_is_not_worse_than_correlation_on_thin_samples():
    # 5 nm: measured strain ratio 0.43, F1 ratio 1.04 (fcunet-proxy-128: 0.46, 1.04)
    r = _pooled(5.0, seeds=(13,))
    assert r["nn"]["strain_rmse"] <= 1.1 * r["correlation"]["strain_rmse"], r
    assert r["nn"]["f1_0.5px"] >= 0.9 * r["correlation"]["f1_0.5px"], r


def test_cli_models_and_infer(tmp_path, capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert f"{DEFAULT_MODEL}@0.3.0" in out and "fcunet-proxy-128@0.1.0" in out
    assert main(["models", "verify"]) == 0
    assert "ok" in capsys.readouterr().out
    from napari_4dstem.io import emd
    from napari_4dstem.simulation.samples import make_strained_crystal

    s = make_strained_crystal(scan_shape=(4, 5))
    src = tmp_path / "in.h5"
    emd.write(src, *s.objects())
    out = tmp_path / "nn.h5"
    assert main(["-q", "infer", str(src), str(out), "--probe", f"{src}:probe"]) == 0
    objs = emd.read(out)
    bp = next(v for k, v in objs.items() if k.endswith("braggpeaks_nn"))
    assert bp.scan_shape == (4, 5) and bp.counts().min() >= 5
    # the sample's probe (1.575 mrad) is less convergent than any training pattern: said once
    err = capsys.readouterr().err
    assert err.count("WARNING: the data lie outside the domain") == 1, err
    assert "convergence semi-angle 1.575 mrad (trained 2.5-4 mrad)" in err
    # a forced scale also puts the disks outside the radii the model was trained on
    out2 = tmp_path / "nn2.h5"
    assert main(["-q", "infer", str(src), str(out2), "--probe", f"{src}:probe", "--scale", "0.4"]) == 0
    err = capsys.readouterr().err
    assert err.count("WARNING: the data lie outside the domain") == 1, err
    assert "as the network sees it" in err and "fine-tune" in err
    # nothing half-written on bad input: a probe far off-centre is a clear error, exit code 2
    np.save(tmp_path / "bad.npy", np.roll(np.asarray(s.probe.data), (40, 40), axis=(0, 1)))
    assert main(["-q", "infer", str(src), str(tmp_path / "x.h5"), "--probe", str(tmp_path / "bad.npy")]) == 2
    assert "not centred" in capsys.readouterr().err and not (tmp_path / "x.h5").exists()


def test_demo_step(tmp_path):
    from napari_4dstem.demo import DemoContext, step_nn
    from napari_4dstem.io import emd
    from napari_4dstem.simulation.samples import make_strained_crystal

    s = make_strained_crystal(scan_shape=(8, 8))
    # the demo's steps read the probe from the sample file (so their recipes can be replayed)
    src = tmp_path / "sample.h5"
    emd.write(src, *s.objects())
    ctx = DemoContext(s.datacube, {"probe": s.probe}, tmp_path, source=src)
    step_nn(ctx)
    bp = ctx.results[-1]
    assert bp.name == "braggpeaks_nn" and bp.scan_shape == (8, 8)
    assert (tmp_path / "nn_disks.png").is_file()
    # the central beam is found in every pattern, within 0.5 px of the planted origin
    origin = s.truth[1].data.reshape(-1, 2)
    d = [
        np.hypot(bp.at(i // 8, i % 8)["qy"] - origin[i, 0], bp.at(i // 8, i % 8)["qx"] - origin[i, 1]).min()
        for i in range(64)
    ]
    assert max(d) < 0.5


def test_peaks_are_disks_in_the_raw_pattern_weighted_by_their_counts():
    # the network marks candidates; a peak is kept only where the raw pattern holds a disk
    # (min_significance, default 5 sd above the local background) and its intensity is the
    # disk's counts there (so lattice fits weight peaks by dose, as for correlation)
    from napari_4dstem.analysis.bragg.peaks import disk_counts
    from napari_4dstem.nn.infer import find_bragg_disks_nn, measure_probe
    from napari_4dstem.nn.synthetic import make_thick_strained_scan

    s = make_thick_strained_scan(scan_shape=(4, 4), thickness_nm=30.0, seed=21, central_counts=20)
    data = np.asarray(s.datacube.data)
    bp = find_bragg_disks_nn(s.datacube, probe=s.probe)
    every = find_bragg_disks_nn(s.datacube, probe=s.probe, min_significance=None)
    assert bp.n_peaks >= 16 and every.n_peaks > bp.n_peaks  # some candidates were not disks
    radius = measure_probe(s.probe).radius_px
    assert 4 < radius < 12 and bp.params["probe_radius_px"] == radius
    for p in range(16):
        a, b = bp.offsets[p], bp.offsets[p + 1]
        yx = np.stack([bp.qy[a:b], bp.qx[a:b]], 1)[None]
        sz = disk_counts(
            data.reshape(16, *data.shape[2:])[p : p + 1],
            yx,
            np.array([b - a]),
            radius_px=radius,
            background="robust",  # the NN path's ring background (session 11)
        )[0]
        assert np.all(sz[:, 1] >= 5.0)
        np.testing.assert_allclose(bp.intensity[a:b], sz[:, 0], rtol=1e-6)
    # and every kept peak is one of the candidates
    assert set(np.round(bp.qy, 6)) <= set(np.round(every.qy, 6))
