"""Known answers for the Result pane's transforms: a planted frequency and a planted lattice."""

import numpy as np
import pytest

from napari_4dstem.analysis.virtual.transforms import FFT_PARTS, ewpc, fft_image
from napari_4dstem.simulation.samples import render_disks


def test_fft_image_peaks_at_the_planted_frequency():
    yy, xx = np.mgrid[:64, :80]
    img = 5 + np.cos(2 * np.pi * (6 * yy / 64 + 10 * xx / 80))  # 6 cycles down, 10 across
    f = fft_image(img)
    assert f.shape == (64, 80) and f.dtype == np.float32
    peak = np.unravel_index(np.argmax(f), f.shape)
    assert {tuple(int(v) for v in peak)} <= {(32 + 6, 40 + 10), (32 - 6, 40 - 10)}
    assert np.isfinite(fft_image(np.where(img > 5.9, np.nan, img))).all()  # NaN pixels tolerated


@pytest.mark.parametrize("window", [False, True])
def test_fft_parts_of_a_planted_sinusoid(window):
    """A cos(2 pi (6 y / 64 + 10 x / 80) + phi) on an offset: at (+6, +10) from the centre the
    transform is A/2 W e^{i phi} (W = n_y n_x, or the sum of the Hann window: the window's
    spectrum at the conjugate's distance, 12 and 20 bins, is below float32 precision), at
    (-6, -10) its conjugate; the phase is phi and -phi, the real and imaginary parts
    A/2 W cos(phi) and A/2 W sin(phi); nothing else (the offset is removed)."""
    yy, xx = np.mgrid[:64, :80]
    a, phi = 3.0, 0.7
    img = 5 + a * np.cos(2 * np.pi * (6 * yy / 64 + 10 * xx / 80) + phi)
    w = np.outer(np.hanning(64), np.hanning(80)).sum() if window else 64 * 80
    half = a * w / 2
    parts = {p: fft_image(img, window=window, part=p) for p in FFT_PARTS}
    assert all(v.shape == (64, 80) and v.dtype == np.float32 for v in parts.values())
    up, down = (32 + 6, 40 + 10), (32 - 6, 40 - 10)
    assert parts["phase"][up] == pytest.approx(phi, abs=1e-5)
    assert parts["phase"][down] == pytest.approx(-phi, abs=1e-5)
    assert parts["real"][up] == pytest.approx(half * np.cos(phi), rel=1e-5)
    assert parts["imaginary"][up] == pytest.approx(half * np.sin(phi), rel=1e-5)
    assert parts["real"][down] == pytest.approx(half * np.cos(phi), rel=1e-5)
    assert parts["imaginary"][down] == pytest.approx(-half * np.sin(phi), rel=1e-5)
    assert parts["|F|"][up] == pytest.approx(half, rel=1e-5)
    assert parts["log|F|"][up] == pytest.approx(np.log10(1 + half), rel=1e-6)
    np.testing.assert_array_equal(parts["log|F|"], fft_image(img, window=window))  # the default
    if not window:  # two bins only
        rest = parts["|F|"].copy()
        rest[up] = rest[down] = 0
        assert rest.max() < 1e-9 * half
    with pytest.raises(ValueError, match="unknown FFT part"):
        fft_image(img, part="angle")


def test_ewpc_peaks_at_the_lattice_spacing_in_quefrency():
    """Disks spaced 16 px on a 128 px detector: the cepstrum peaks 128/16 = 8 px from the centre
    along both lattice directions, for small and for large (3/4 of the spacing) disks."""
    n, g = 128, 16.0
    for radius in (3.0, 6.0):
        centres = [(64 + i * g, 64 + j * g) for i in range(-3, 4) for j in range(-3, 4)]
        cen = np.array(centres, float)[None]
        amp = np.where(np.all(cen[0] == 64, axis=1), 5.0, 1.0)[None]
        p = render_disks(cen, amp, (n, n), radius, 0.5)[0] + 0.01
        c = ewpc(p)
        assert c.shape == (n, n) and c[64, 64] == 0
        ring = c.copy()
        ring[64 - 3 : 64 + 4, 64 - 3 : 64 + 4] = 0  # the smooth disk-shape part near the centre
        top = np.argsort(ring.ravel())[-4:]
        offsets = {(int(y) - 64, int(x) - 64) for y, x in zip(*np.unravel_index(top, c.shape))}
        assert offsets == {(8, 0), (-8, 0), (0, 8), (0, -8)}, (radius, offsets)


def test_transforms_refuse_non_2d():
    with pytest.raises(ValueError, match="2D"):
        ewpc(np.zeros((2, 3, 4)))
