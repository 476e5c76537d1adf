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
    assert f[0] == pytest.approx(1 / 64 / 0.5) and f[-1] == pytest.approx(0.5 / 0.5)  # first ring .. Nyquist
    # a low-passed image against itself plus white noise: correlated at low, not high frequency
    low = np.fft.ifft2(
        np.fft.fft2(a) * (np.hypot(*np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64), indexing="ij")) < 0.15)
    ).real
    f, frc = fourier_ring_correlation(low, low + 0.3 * rng.normal(size=a.shape), pixel_A=1.0)
    assert frc[:5].min() > 0.8 and np.abs(frc[-5:]).max() < 0.3
    res = frc_resolution_A(f, frc)
    assert 1 / 0.2 < res < 1 / 0.1  # the cut-off at 0.15 cycles/px, within a ring or two


def test_frc_of_a_lattice_skips_the_empty_rings_and_is_finite(rng):
    """A crystal: power only at its reflections. The zero frequency is in no ring (before, the
    lowest ring held only it and its FRC decided "inf"); rings where the reference has no power
    are NaN and skipped."""
    yy, xx = np.mgrid[0:48, 0:48]
    coarse = np.cos(2 * np.pi * 6 * yy / 48) + np.cos(2 * np.pi * 6 * xx / 48)  # rings 6: period 8 px = 2 A
    fine = 0.3 * np.cos(2 * np.pi * 12 * xx / 48)  # ring 12: period 4 px = 1 A
    truth = coarse + fine
    f, frc = fourier_ring_correlation(truth + 0.05 * rng.normal(size=truth.shape), truth, pixel_A=0.25)
    assert np.isnan(frc[0]) and np.isnan(frc[-1]) and frc[5] > 0.99  # frc[i]: ring i + 1
    # never below 0.5: the finest ring with power, the fine reflection (1 A) within the window's 2 rings
    assert 1 / (14 / 48 / 0.25) <= frc_resolution_A(f, frc) <= 1.0
    # noise that drowns the fine reflection, not the coarse one: the crossing is at the fine one
    f, frc = fourier_ring_correlation(truth + 1.5 * rng.normal(size=truth.shape), truth, pixel_A=0.25)
    assert frc[5] > 0.5
    assert 1.0 <= frc_resolution_A(f, frc) <= 1 / (10 / 48 / 0.25)


def test_frc_first_ring_holds_every_frequency_below_it(rng):
    """Frequencies under half a ring width belong to the first ring; only the zero frequency is in
    none. They exist on the longer axis of a non-square image (it samples finer than a ring) and
    whenever ``n_rings`` is smaller than the image: with 4 rings on 64 x 64 a cosine at 2/64
    cycles/px (its window leakage within 1..3/64) is below ring 1's centre minus half a width.
    Before, those frequencies were in no ring and ring 1 read only the independent noise (~0)."""
    xx = np.mgrid[0:64, 0:64][1]
    signal = 5.0 * np.cos(2 * np.pi * 2 * xx / 64)
    a = signal + rng.normal(size=xx.shape)
    b = signal + rng.normal(size=xx.shape)
    f, frc = fourier_ring_correlation(a, b, n_rings=4)
    assert len(f) == 4 and frc[0] > 0.9 and np.abs(frc[1:]).max() < 0.3
    # the non-square case: 32 x 96, rings 1/32 wide; the x axis's 1/96 is in ring 1
    xx = np.mgrid[0:32, 0:96][1]
    f, frc = fourier_ring_correlation(
        5.0 * np.cos(2 * np.pi * xx / 96) + rng.normal(size=xx.shape), xx * 0.0 + 5.0 * np.cos(2 * np.pi * xx / 96)
    )
    assert len(f) == 16 and frc[0] > 0.9
