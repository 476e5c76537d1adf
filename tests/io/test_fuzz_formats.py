"""Fuzz sample (#19): mutated files of every format, each in a worker process with a timeout
and a memory cap, must be refused with our error type or open with the right shape.

A fixed random sample of the inputs runs here (fast); ``benchmarks/bench_fuzz.py`` runs all of
them (>= 4,000). The seeds are synthetic files of every format written by ``fuzzing.py`` (the
real detector files join them in the benchmark)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fuzzing

pytestmark = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and hasattr(os, "mkfifo")),
    reason="the fuzz runner needs Linux (/proc, FIFOs)",
)

N_SAMPLE = 300


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    seeds = fuzzing.make_seeds(include_real=False)
    runner = fuzzing.Runner(timeout_s=20.0)
    try:
        for s in seeds:
            s.expected = fuzzing.expected_of(s, runner, root)
        yield seeds, runner, root
    finally:
        runner.kill()


def test_every_format_has_a_seed_that_opens_right(setup):
    seeds, _, _ = setup
    from napari_4dstem.io import FORMATS

    assert {s.fmt for s in seeds} == {f.name for f in FORMATS}
    # known answers: the synthetic seeds open with the shapes they were written with
    shapes = {s.name: tuple(s.expected["shape"]) for s in seeds}
    assert shapes["npy"] == shapes["emd"] == shapes["zarr"] == (3, 4, 8, 6)
    assert shapes["py4dstem-legacy"] == (3, 4, 8, 6)
    assert shapes["mib-u16"] == (3, 4, 12, 16)  # 12 frames, 4 frames per trigger
    assert shapes["mib-raw1"] == (2, 2, 256, 256)
    assert shapes["blockfile"] == (2, 3, 8, 8)
    assert shapes["mrc-raster"] == shapes["mrc-custom"] == (3, 4, 5, 6)
    assert shapes["empad"] == (2, 2, 128, 128)
    assert shapes["dm4"] == (3, 4, 5, 6)
    assert shapes["tia"] == shapes["tvips"] == (3, 4, 8, 6)
    assert shapes["arina"] == (4, 4, 8, 6)
    assert shapes["raw"] == (3, 4, 8, 6)


def test_fuzz_sample_no_foreign_errors_hangs_or_wrong_shapes(setup):
    seeds, runner, root = setup
    cases = fuzzing.all_cases(seeds, seed=0)
    assert len(cases) > 3000  # the full set the benchmark runs (plus real-file seeds there)
    rng = np.random.default_rng(19)
    # every mutation kind of every seed is drawn at least once
    by_kind: dict = {}
    for c in cases:
        by_kind.setdefault((c.seed.name, c.kind), []).append(c)
    picked = [v[int(rng.integers(0, len(v)))] for v in by_kind.values()]
    rest = [cases[int(i)] for i in rng.permutation(len(cases))[: max(0, N_SAMPLE - len(picked))]]
    results = [fuzzing.run_case(c, runner, root) for c in picked + rest]
    summary = fuzzing.summarize(results)
    # No exception: a damaged variable-length string reference, which once made libhdf5 allocate
    # GBs before it failed, is now refused before the read (io/_h5safe.py), so it is judged
    # like any other over-allocation.
    bad = summary["bad"]
    assert bad == [], [
        (r["verdict"], r.get("detected"), r.get("outcome"), r.get("label"), str(r.get("error"))[-60:]) for r in bad[:5]
    ]
    assert summary["verdicts"].get("refused", 0) > len(results) // 5  # garbage is refused


def test_runner_reports_hangs_and_crashes_and_the_judge(tmp_path):
    # the harness itself must be able to fail: a worker that stops answering is a "hang"
    # (and is replaced), a worker that dies is a "crash"; the judge flags dropped data
    import signal

    runner = fuzzing.Runner(timeout_s=2.0, warm_up=False)
    try:
        fifo = tmp_path / "f.npy"
        os.mkfifo(fifo)
        req = {"main": str(fifo), "fmt": "npy", "kwargs": {}}
        assert runner.run(req)["outcome"] == "refused"  # our reader refuses without blocking
        os.kill(runner.proc.pid, signal.SIGSTOP)
        assert runner.run(req)["outcome"] == "hang" and runner.proc is None
        assert runner.run(req)["outcome"] == "refused"  # a fresh worker
        os.kill(runner.proc.pid, signal.SIGKILL)
        runner.proc.wait()
        assert runner.run(req)["outcome"] == "refused"  # dead worker noticed, restarted
    finally:
        runner.kill()
    exp = {"nbytes": 100, "shape": [1, 1, 10, 10], "p0": "a", "pl": "b"}
    ok = {"outcome": "opened", "peak": 0, "input_bytes": 1000, "nbytes": 100,
          "shape": [1, 1, 10, 10], "p0": "a", "pl": "b"}  # fmt: skip
    assert fuzzing.judge_result(exp, ok) == "same"
    assert fuzzing.judge_result(exp, {**ok, "nbytes": 50, "shape": [1, 1, 5, 10]}) == "wrong_shape"
    assert fuzzing.judge_result(exp, {**ok, "shape": [1, 1, 5, 20]}) == "reinterpreted"
    assert fuzzing.judge_result(exp, {**ok, "p0": "c"}) == "data_differs"
    assert fuzzing.judge_result(exp, {**ok, "peak": 10**9}) == "overalloc"
    assert fuzzing.judge_result(exp, {**ok, "outcome": "foreign"}) == "foreign"
