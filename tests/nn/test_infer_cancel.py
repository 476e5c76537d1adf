"""The network's whole-scan loop waits for each block in steps and stops a cancelled block at its
next layer (issue #15, UX 20: the process's first forward pass was one 4.3 s step)."""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_4dstem.nn import infer  # noqa: E402


class _SlowLayer(torch.nn.Module):
    def __init__(self, calls: list):
        super().__init__()
        self.calls = calls

    def forward(self, x):
        self.calls.append(time.perf_counter())
        time.sleep(0.05)
        return x + 1


def _kernel(block, *, row0, parallel, model, geo, probe_model, opts):
    """A stand-in of ``_nn_kernel``: the network on the block's sums, the result per pattern."""
    ny, nx = block.shape[:2]
    x = torch.as_tensor(block.reshape(ny * nx, -1).sum(1, dtype=np.float64))
    y = model(x).numpy()
    out = np.zeros((ny, nx, 2, infer._N_FIELDS))
    out[..., 0, 0] = y.reshape(ny, nx)
    return out


def _run(monkeypatch, calls, n_layers=20):
    monkeypatch.setattr(infer, "_nn_kernel", _kernel)
    net = torch.nn.Sequential(*[_SlowLayer(calls) for _ in range(n_layers)])  # 1 s a block
    data = np.arange(2 * 4 * 3 * 3, dtype=np.uint16).reshape(2, 4, 3, 3)
    job = infer._iter_nn_blocks(
        data,
        net,
        {"geo": None, "probe_model": None, "opts": {}},
        out_tail=(2, infer._N_FIELDS),
        scan_chunk=(1, 2),
        message="NN Bragg disks",
        partial=None,
    )
    return data, net, job


def test_blocks_are_waited_for_in_steps_and_assembled(monkeypatch):
    calls: list = []
    data, _, job = _run(monkeypatch, calls, n_layers=4)  # 0.2 s a block: waiting steps between
    steps = []
    try:
        while True:
            steps.append(next(job))
    except StopIteration as end:
        out = end.value
    want = data.reshape(2, 4, -1).sum(-1) + 4.0
    np.testing.assert_array_equal(out[..., 0, 0], want)
    written = [p.done for p in steps if p.message == "NN Bragg disks"]
    assert written[-1] == 4 and steps[-1].total == 4
    assert sorted(written) == written  # never backwards
    assert len(steps) > 4, "no waiting step while a 0.2 s block ran (Cancel points every 0.1 s)"
    assert len(calls) == 4 * 4


def test_a_closed_job_returns_at_once_and_its_block_stops_at_the_next_layer(monkeypatch):
    calls: list = []
    _, _, job = _run(monkeypatch, calls)
    p = next(job)  # a waiting step 0.1 s into the first block (1 s of layers)
    assert p.done == 0
    t = time.perf_counter()
    job.close()
    closed = time.perf_counter() - t
    infer._nn_pool().submit(lambda: None).result(timeout=5.0)
    free = time.perf_counter() - t
    assert closed < 0.05, f"close took {closed:.3f} s"
    assert free < 0.2, f"the abandoned block ran on {free:.2f} s"
    assert len(calls) < 6, f"{len(calls)} of 20 layers ran"


def _hooks(net) -> int:
    return sum(len(m._forward_pre_hooks) for m in net.modules())


def test_a_closed_job_leaves_no_hook_on_the_network(monkeypatch):
    calls: list = []
    _, net, job = _run(monkeypatch, calls)
    next(job)
    job.close()
    infer._nn_pool().submit(lambda: None).result(timeout=5.0)  # the abandoned block has stopped
    assert _hooks(net) == 0, "a cancelled job's stop hooks stayed on the network"
    x = torch.zeros(3)
    assert float(net(x)[0]) == 20.0  # the network runs again (a left hook would raise _Stopped)


def test_a_failed_job_leaves_no_hook_on_the_network(monkeypatch):
    def boom(block, **_):
        raise ValueError("broken block")

    calls: list = []
    _, net, job = _run(monkeypatch, calls, n_layers=2)
    monkeypatch.setattr(infer, "_nn_kernel", boom)
    with pytest.raises(ValueError, match="broken block"):
        list(job)
    assert _hooks(net) == 0


def _child_find_all(q):
    calls: list = []
    mp = pytest.MonkeyPatch()
    try:
        _, _, job = _run(mp, calls, n_layers=1)
        steps = 0
        try:
            while True:
                next(job)
                steps += 1
                if steps > 100:  # 10 s of waiting steps: the pool's thread is not there
                    q.put("stuck")
                    return
        except StopIteration as end:
            q.put(float(end.value[..., 0, 0].sum()))
    finally:
        mp.undo()


def test_find_all_in_a_forked_child_finishes(monkeypatch):
    import multiprocessing

    calls: list = []
    data, _, job = _run(monkeypatch, calls, n_layers=1)
    list(job)  # the parent's pool has its thread now
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_find_all, args=(q,))
    p.start()
    try:
        got = q.get(timeout=60)
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
    want = float(data.reshape(2, 4, -1).sum() + data.shape[0] * data.shape[1])
    assert got == want, f"the forked child's find-all: {got}"
