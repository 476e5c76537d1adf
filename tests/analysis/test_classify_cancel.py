"""Cancel points inside the classification's decomposition and clustering trials (issue #15, UX 20).

The job (:func:`iter_classify_features`) runs every call that can take more than a tenth of a second
(a decomposition, each class-count trial with its k-means and silhouette, the factors, the final
clustering, the smoothing, the class means) in a thread it waits for in 0.1 s steps, so a Cancel (the
generator closed at a step) never waits for one. The slow calls are planted (a 0.8 s sleep each, the
real ones take 0.3-1.4 s on a 64 x 64 scan under load); on the old code the silhouette, the NMF and
the factors ran in the job's own thread: gaps of 0.8 s and more between steps.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref

import numpy as np
import pytest

from napari_4dstem.analysis.classify import ClassifyParams, FeatureParams, compute_features, model
from napari_4dstem.simulation.samples import render_disks

pytest.importorskip("sklearn")

SLOW_S = 0.8  # each planted call
GAP_S = 0.5  # the longest allowed time between two steps while one runs (issue #15: stop within 0.5 s)


@pytest.fixture(scope="module")
def data():
    """A 12 x 12 scan of three square lattices (one turned 5 deg, one 4 % larger), Poisson noise."""
    rng = np.random.default_rng(3)
    sy, sx = 12, 12
    truth = np.zeros((sy, sx), int)
    truth[:, 4:8] = 1
    truth[:, 8:] = 2
    ij = np.array([(i, j) for i in range(-3, 4) for j in range(-3, 4) if (i, j) != (0, 0)], float)
    rot = np.deg2rad(5)
    lats = [ij * 10.0, ij * 10.0 @ np.array([[np.cos(rot), np.sin(rot)], [-np.sin(rot), np.cos(rot)]]), ij * 10.4]
    cen = np.full((sy * sx, len(ij) + 1, 2), np.nan)
    for k, (i, j) in enumerate(np.ndindex(sy, sx)):
        g = lats[truth[i, j]]
        keep = np.hypot(*g.T) < 22
        cen[k, 0] = (23.6, 24.2)
        cen[k, 1 : keep.sum() + 1] = np.array([23.6, 24.2]) + g[keep][:, ::-1]
    pats = render_disks(cen, np.concatenate([[2.0], np.full(len(ij), 0.6)]), (48, 48), 2.5, 0.5) + 0.02
    return rng.poisson(pats / pats.sum((1, 2), keepdims=True) * 2e4).astype(np.uint16).reshape(sy, sx, 48, 48)


@pytest.fixture(scope="module")
def feats(data):
    return compute_features(data, FeatureParams(inner_px=5))


def _slowed(monkeypatch, name, ran):
    real = getattr(model, name)

    def slow(*args, **kwargs):
        ran.append((name, threading.current_thread().name))
        time.sleep(SLOW_S)
        return real(*args, **kwargs)

    monkeypatch.setattr(model, name, slow)


def _gaps(job):
    """Run ``job`` to its end: (result, the seconds between consecutive steps)."""
    gaps, last = [], time.perf_counter()
    while True:
        try:
            next(job)
        except StopIteration as end:
            gaps.append(time.perf_counter() - last)
            return end.value, gaps
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


@pytest.mark.parametrize(
    ("params", "planted"),
    [
        (ClassifyParams(max_classes=3, space="auto"), ("_silhouette", "maf_factors", "_icm")),
        (ClassifyParams(max_classes=3, decomposition="nmf"), ("_nmf",)),
        (ClassifyParams(n_classes=3, method="kmeans", space="components"), ("_final_clustering",)),
    ],
    ids=["trials-factors-smoothing", "nmf", "final-kmeans"],
)
def test_slow_decomposition_and_trials_leave_steps_every_tenth_of_a_second(monkeypatch, feats, params, planted):
    if "_final_clustering" in planted and not hasattr(model, "_final_clustering"):
        pytest.fail("no _final_clustering: the final clustering runs in the job's own thread (old code)")
    reference = model.classify_features(feats, params)
    ran: list = []
    for name in planted:
        _slowed(monkeypatch, name, ran)
    result, gaps = _gaps(model.iter_classify_features(feats, params))
    assert {n for n, _ in ran} == set(planted)
    print(f"{planted}: {len(ran)} slow calls, longest gap between steps {max(gaps):.3f} s")
    assert max(gaps) < GAP_S, f"a step waited {max(gaps):.2f} s for a planted {SLOW_S} s call"
    # the calls ran in threads of their own and gave the same classification
    assert all(t != threading.current_thread().name for _, t in ran)
    np.testing.assert_array_equal(result.labels, reference.labels)
    np.testing.assert_array_equal(result.probability, reference.probability)
    np.testing.assert_array_equal(result.components, reference.components)
    np.testing.assert_array_equal(result.mixing, reference.mixing)


def test_a_cancelled_decomposition_ends_at_once_and_its_thread_frees_its_memory(monkeypatch, feats):
    # the planted NMF holds its input (a weak reference tells when it is freed); the job is closed at the
    # first step after the call began: close() returns while the call still runs in its own thread, the call
    # then ends there, and nothing holds its input or its thread afterwards
    started, ended, refs, threads = threading.Event(), threading.Event(), [], []
    real = model._nmf

    def slow(x, p):
        refs.append(weakref.ref(x))
        threads.append(threading.current_thread())
        started.set()
        time.sleep(SLOW_S)
        out = real(x, p)
        ended.set()
        return out

    monkeypatch.setattr(model, "_nmf", slow)
    job = model.iter_classify_features(feats, ClassifyParams(max_classes=3, decomposition="nmf"))
    while not started.is_set():
        next(job)
    next(job)
    t = time.perf_counter()
    job.close()
    closed = time.perf_counter() - t
    assert closed < 0.1, f"close() took {closed:.2f} s"
    (th,) = threads
    assert th is not threading.current_thread() and not ended.is_set(), "the job waited for the call (old code)"
    th.join(5.0)
    assert not th.is_alive() and ended.is_set()
    threads.clear()
    del job, th
    gc.collect()
    assert refs[0]() is None, "the abandoned call's input is still held"


def test_a_split_waits_for_its_re_clustering_in_steps(monkeypatch, data):
    # Classify's "split class" re-clusters the class (mixtures of several sizes) in a thread: steps while it
    # runs (old code: one call in the job's thread), and the same result as the direct call
    from napari_4dstem.engine.jobs import run_job
    from napari_4dstem.pipelines import ClassificationParams, run_classification

    res = run_classification(data, classify=ClassificationParams(max_classes=3, space="components"))
    reference = res.classification.split(0, 2)
    real = model.Classification.split
    calls = []

    def slow(self, *args, **kwargs):
        calls.append(threading.current_thread())
        time.sleep(SLOW_S)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(model.Classification, "split", slow)
    split, gaps = _gaps(res.iter_split(0, 2, data))
    print(f"split: longest gap between steps {max(gaps):.3f} s")
    assert calls and calls[0] is not threading.current_thread()
    assert max(gaps) < GAP_S, f"a step waited {max(gaps):.2f} s for the planted {SLOW_S} s split"
    np.testing.assert_array_equal(split.classification.labels, reference.labels)
    assert run_job(res.iter_split(0, 2, data)).classification.n_classes == reference.n_classes
