"""Training-set jobs: deterministic, resumable, clear errors, no partial shard left behind."""

import errno

import h5py
import numpy as np
import pytest

from napari_4dstem.analysis.crystal.structure import CrystalError
from napari_4dstem.engine.jobs import run_job
from napari_4dstem.errors import FileFormatError, Napari4DSTEMError
from napari_4dstem.simulation import training
from napari_4dstem.simulation.shards import ShardSet, read_manifest
from napari_4dstem.simulation.training import TrainingSetSpec, plan_pattern, simulate_training_set

SPEC = TrainingSetSpec(
    n_patterns=7,
    patterns_per_shard=3,
    shape=(48, 48),
    crystals=("Au", "Si"),
    pixel_size_inv_A=(0.03, 0.04),
    convergence_mrad=(1.0, 3.0),
    thickness_A=(20.0, 100.0),
    strain_max=0.01,
    seed=7,
)


def _arrays(folder):
    s = ShardSet(folder)
    return [(x.pattern, x.label, x.meta["seed"], x.bragg["qx"]) for x in s]


def test_deterministic_and_readable(tmp_path):
    r = run_job(simulate_training_set(SPEC, tmp_path / "a"))
    assert r.shards_written == ("shard-00000.h5", "shard-00001.h5", "shard-00002.h5")
    run_job(simulate_training_set(SPEC, tmp_path / "b", workers=2, executor="threads"))
    a, b = _arrays(tmp_path / "a"), _arrays(tmp_path / "b")
    assert len(a) == 7
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) and x[2] == y[2]
    m = read_manifest(tmp_path / "a")
    assert m["complete"] and m["spec"]["seed"] == 7 and len(m["shards"]) == 3
    s = ShardSet(tmp_path / "a")[4]
    p = plan_pattern(SPEC, 4)
    assert s.meta["thickness_A"] == p.thickness_A and np.allclose(s.meta["orientation"], p.orientation)
    assert np.allclose(s.meta["strain"], p.strain) and s.meta["crystal"] == p.crystal
    assert s.label.max() == pytest.approx(1.0, abs=1e-3)  # the 000 peak
    # pattern i does not depend on the size of the set
    bigger = TrainingSetSpec(**{**SPEC.__dict__, "n_patterns": 50})
    assert plan_pattern(bigger, 4).thickness_A == p.thickness_A


def test_resume_after_interruption(tmp_path):
    job = simulate_training_set(SPEC, tmp_path)
    for prog in job:
        if prog.done == 4:  # first shard written, second in progress
            break
    job.close()  # cancel
    assert (tmp_path / "shard-00000.h5").exists()
    assert not (tmp_path / "shard-00001.h5").exists()
    assert not list(tmp_path.glob(".*partial"))
    assert not read_manifest(tmp_path)["complete"]
    assert len(ShardSet(tmp_path)) == 3
    with h5py.File(tmp_path / "shard-00000.h5") as f:
        stamp = f["patterns"][0].copy()
    r = run_job(simulate_training_set(SPEC, tmp_path))
    assert r.shards_skipped == ("shard-00000.h5",)
    assert r.shards_written == ("shard-00001.h5", "shard-00002.h5")
    run_job(simulate_training_set(SPEC, tmp_path / "full"))
    for x, y in zip(_arrays(tmp_path), _arrays(tmp_path / "full"), strict=True):
        assert np.array_equal(x[0], y[0])
    with h5py.File(tmp_path / "shard-00000.h5") as f:
        assert np.array_equal(f["patterns"][0], stamp)


def test_other_spec_in_folder_is_refused(tmp_path):
    run_job(simulate_training_set(SPEC, tmp_path))
    other = TrainingSetSpec(**{**SPEC.__dict__, "seed": 8})
    with pytest.raises(FileFormatError, match="other parameters"):
        run_job(simulate_training_set(other, tmp_path))
    run_job(simulate_training_set(other, tmp_path, overwrite=True))
    assert read_manifest(tmp_path)["spec"]["seed"] == 8


def test_disk_full_keeps_written_shards(tmp_path, monkeypatch):
    real = training.write_shard
    calls = []

    def flaky(path, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, **kw)

    monkeypatch.setattr(training, "write_shard", flaky)
    with pytest.raises(FileFormatError, match="disk is full.*1 shards written before it are complete"):
        run_job(simulate_training_set(SPEC, tmp_path))
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == ["shard-00000.h5"]
    assert len(ShardSet(tmp_path)) == 3


def test_bad_inputs(tmp_path):
    cif = tmp_path / "empty.cif"
    cif.write_text(
        "data_x\n_cell_length_a 4\n_cell_length_b 4\n_cell_length_c 4\n"
        "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
    )
    spec = TrainingSetSpec(**{**SPEC.__dict__, "crystals": (str(cif),)})
    with pytest.raises((FileFormatError, CrystalError), match="atom"):
        run_job(simulate_training_set(spec, tmp_path / "out"))
    assert not list((tmp_path / "out").glob("shard-*"))
    with pytest.raises(Napari4DSTEMError, match="range"):
        TrainingSetSpec(thickness_A=(100.0, 10.0))
    with pytest.raises(Napari4DSTEMError, match="executor"):
        run_job(simulate_training_set(SPEC, tmp_path / "x", executor="gpu-magic"))


def test_uniform_label_heights_mark_every_listed_reflection(tmp_path):
    """``label_heights='uniform'``: every reflection above ``label_min_weight`` is a peak of
    height 1 at its position; the structure-factor label has the same peaks, weighted."""
    kw = {**SPEC.__dict__, "n_patterns": 1, "patterns_per_shard": 1, "label_min_weight": 0.01}
    sf = training.simulate_pattern(TrainingSetSpec(**kw), plan_pattern(SPEC, 0))
    un = training.simulate_pattern(TrainingSetSpec(**{**kw, "label_heights": "uniform"}), plan_pattern(SPEC, 0))
    np.testing.assert_array_equal(sf["pattern"], un["pattern"])
    qy, qx = un["bragg"]["qy"], un["bragg"]["qx"]
    assert len(qy) >= 3
    iy, ix = np.round(qy).astype(int), np.round(qx).astype(int)
    # a Gaussian of sigma 1 px sampled within half a pixel of its centre: 0.6 .. 1 (+ overlaps)
    assert np.all(un["label"][iy, ix] > 0.6) and np.all(un["label"][iy, ix] < 1.3)
    assert np.sum(sf["label"][iy, ix] < 0.5) >= 1  # weak reflections are weak there
    with pytest.raises(Napari4DSTEMError, match="label_heights"):
        TrainingSetSpec(label_heights="big")


def test_a_slow_pattern_leaves_cancel_points_and_the_newest_pattern_is_the_partial(tmp_path, monkeypatch):
    """While a pattern is simulated (seconds with a multislice engine) the job yields every
    ~0.1 s, so closing it (Cancel) does not wait for the pattern; the first finished pattern
    rides on its step as log10 of its intensity."""
    import time

    real = training._simulate_index

    def slow(spec, index):
        if index == 1:
            time.sleep(1.5)
        return real(spec, index)

    monkeypatch.setattr(training, "_simulate_index", slow)
    job = simulate_training_set(SPEC, tmp_path, workers=1, executor="threads")
    steps = []
    for p in job:
        steps.append((p, time.perf_counter()))
        if sum(q.done == 1 for q, _ in steps) >= 4:  # waiting on pattern 1
            break
    t0 = time.perf_counter()
    job.close()
    close_s = time.perf_counter() - t0
    waits = [t for q, t in steps if q.done == 1]
    assert close_s < 0.5 and max(np.diff(waits)) < 0.5, (close_s, np.diff(waits))
    first = next(q for q, _ in steps if q.done == 1)
    assert first.partial is not None and first.partial.name == training.NEWEST_PATTERN
    pat = training.simulate_pattern(SPEC, plan_pattern(SPEC, 0))["pattern"]
    expected = np.log10(np.maximum(pat, pat.max() * 1e-6))
    np.testing.assert_allclose(first.partial.data, expected, rtol=1e-6, atol=1e-6)
    assert first.partial.fraction == pytest.approx(1 / 7) and "A" in first.partial.units
    assert all(q.partial is None for q, _ in steps if q.done == 1 and q is not first)  # the waiting steps carry none
