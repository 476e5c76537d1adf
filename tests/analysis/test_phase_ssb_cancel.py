"""SSB's Fourier transform over the scan comes in pieces with a step (a Cancel point) between
(issue #15, UX 20): at a 256 x 256 scan with 800 bright-field pixels the one ``fft2`` was a 36-42 s
step at load 9-10; in pieces of 8 pixels the longest step was 0.64 s, the median 0.13 s."""

from __future__ import annotations

import numpy as np

from napari_4dstem.analysis.phase import ssb


def _run(job):
    steps = []
    try:
        while True:
            steps.append(next(job))
    except StopIteration as end:
        return steps, end.value


def test_the_scan_fft_in_pieces_is_the_whole_fft(monkeypatch):
    monkeypatch.setattr(ssb, "_FFT_PIXELS_PER_STEP", 1)  # 16 pixels a step at this 64 x 64 scan
    stack = np.random.default_rng(5).random((64, 64, 37), dtype=np.float32)
    scale = np.float32(1.7)
    steps, g = _run(ssb._iter_scan_fft(stack, scale))
    want = np.fft.fft2(stack / scale, axes=(0, 1)).reshape(64 * 64, 37)
    assert g.dtype == want.dtype
    np.testing.assert_array_equal(g, want)
    assert [(p.done, p.total) for p in steps] == [(1, 3), (2, 3), (3, 3)]


def test_a_closed_scan_fft_stops_between_pieces(monkeypatch):
    monkeypatch.setattr(ssb, "_FFT_PIXELS_PER_STEP", 1)
    calls = []
    real = np.fft.fft2

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(ssb.np.fft, "fft2", counted)
    job = ssb._iter_scan_fft(np.ones((64, 64, 64), np.float32), np.float32(1.0))
    next(job)
    job.close()
    assert len(calls) == 1  # 1 of 4 pieces: the rest is never computed
