"""Shared phase-retrieval helpers: registration, offset/ramp removal, FRC."""

import numpy as np
import pytest

from napari_4dstem.analysis.phase._common import (
    fourier_ring_correlation,
    frc_resolution_A,
    phase_correlation_with_truth,
    register_translations,
)


def test_register_translations_recovers_subpixel_shifts(rng):
    ref = rng.normal(size=(40, 48))
    ref = np.fft.ifft2(
        np.fft.fft2(ref)
        * np.exp(-(np.hypot(*np.meshgrid(np.fft.fftfreq(40), np.fft.fftfreq(48), indexing="ij")) ** 2) / 0.02)
    ).real
    shifts = np.array([[1.3, -2.7], [0.05, 0.4], [-3.55, 2.25]])
    fy, fx = np.fft.fftfreq(40)[:, None], np.fft.fftfreq(48)[None, :]
    imgs = np.stack(
        [np.fft.ifft2(np.fft.fft2(ref) * np.exp(-2j * np.pi * (fy * s[0] + fx * s[1]))).real for s in shifts]
    )
    np.testing.assert_allclose(register_translations(imgs, ref), shifts, atol=0.06)


def test_correlation_ignores_offset_and_ramp(rng):
    t = rng.normal(size=(20, 30))
    yy, xx = np.mgrid[0:20, 0:30]
    r, rms = phase_correlation_with_truth(t + 3.0 + 0.1 * yy - 0.2 * xx, t)
    assert r == pytest.approx(1.0) and rms == pytest.approx(0.0, abs=1e-12)


def test_frc_of_identical_and_of_independent_noise(rng):
    a = rng.normal(size=(64, 64))
    f, frc = fourier_ring_correlation(a, a, pixel_A=0.5)
    np.testing.assert_allclose(frc, 1.0)
    assert f[-1] == pytest.approx(0.5 / 0.5 * (1 - 1 / 64), rel=1e-6)
    # a low-passed image against itself plus white noise: correlated at low, not high frequency
    low = np.fft.ifft2(
        np.fft.fft2(a) * (np.hypot(*np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64), indexing="ij")) < 0.15)
    ).real
    f, frc = fourier_ring_correlation(low, low + 0.3 * rng.normal(size=a.shape), pixel_A=1.0)
    assert frc[:5].min() > 0.8 and np.abs(frc[-5:]).max() < 0.3
    res = frc_resolution_A(f, frc)
    assert 1 / 0.2 < res < 1 / 0.1  # the cut-off at 0.15 cycles/px, within a ring or two
