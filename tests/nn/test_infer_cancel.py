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
