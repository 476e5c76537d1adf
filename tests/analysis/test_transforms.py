"""Known answers for the Result pane's transforms: a planted frequency and a planted lattice."""

import numpy as np
import pytest

from napari_4dstem.analysis.virtual.transforms import ewpc, fft_image
from napari_4dstem.simulation.samples import render_disks


def test_fft_image_peaks_at_the_planted_frequency():
    yy, xx = np.mgrid[:64, :80]
    img = 5 + np.cos(2 * np.pi * (6 * yy / 64 + 10 * xx / 80))  # 6 cycles down, 10 across
    f = fft_image(img)
    assert f.shape == (64, 80) and f.dtype == np.float32
    peak = np.unravel_index(np.argmax(f), f.shape)
    assert {tuple(int(v) for v in peak)} <= {(32 + 6, 40 + 10), (32 - 6, 40 - 10)}
    assert np.isfinite(fft_image(np.where(img > 5.9, np.nan, img))).all()  # NaN pixels tolerated


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
