"""Ring (ellipse) calibration against planted rings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_4dstem import Calibration
from napari_4dstem.analysis.virtual.calibration import fit_ellipse_points, fit_ring
from napari_4dstem.errors import CalibrationError, DataShapeError


def _ring_pattern(shape, center, a, b, theta_deg, *, width=1.2, amp=40.0, rng=None):
    """An elliptical ring (Gaussian cross-section) on a decaying background, Poisson noise."""
    yy, xx = np.indices(shape, dtype=np.float64)
    t = math.radians(theta_deg)
    dy, dx = yy - center[0], xx - center[1]
    u = dx * math.cos(t) + dy * math.sin(t)
    v = -dx * math.sin(t) + dy * math.cos(t)
    rho = np.hypot(u / a, v / b) * math.sqrt(a * b)  # elliptical radius, px
    d = np.hypot(dy, dx)
    img = amp * np.exp(-0.5 * ((rho - math.sqrt(a * b)) / width) ** 2) + 200 / (1 + d) + 2
    return rng.poisson(img).astype(np.float64) if rng is not None else img


@pytest.mark.parametrize("theta", [25.0, -70.0])
@pytest.mark.parametrize("noisy", [False, True])
def test_fit_ring_recovers_ellipse(theta, noisy):
    rng = np.random.default_rng(2) if noisy else None
    center, a, b = (62.3, 65.8), 41.0, 39.4  # 4 % ellipticity
    p = _ring_pattern((128, 132), center, a, b, theta, rng=rng)
    fit = fit_ring(p, radius_range_px=(30, 50), center_px=(64, 64))
    # noise-free: exact up to sampling; Poisson noise (40 counts at the ring): statistical
    tol_px, tol_deg = (0.06, 2.0) if noisy else (0.01, 0.05)
    assert np.allclose(fit.center_px, center, atol=tol_px), fit
    assert abs(fit.a_px - a) < tol_px and abs(fit.b_px - b) < tol_px, fit
    assert abs(((fit.theta_deg - theta + 90) % 180) - 90) < tol_deg, fit
    ea, eb, et = fit.ellipse
    assert et == fit.theta_deg
    assert ea * eb == pytest.approx(1.0) and ea > eb
    cal = fit.to_calibration(Calibration(), d_spacing_A=2.0, set_origin=True)
    assert cal.k_units == "1/A"
    assert cal.k_pixel_size == pytest.approx(1 / (2.0 * math.sqrt(a * b)), rel=2e-3)
    assert cal.ellipse == fit.ellipse and cal.origin_px == fit.center_px


def test_fit_ring_circle_default_center():
    p = _ring_pattern((96, 96), (47.5, 48.2), 30.0, 30.0, 0.0)
    fit = fit_ring(p, radius_range_px=(22, 38))
    assert abs(fit.a_px - 30) < 0.03 and abs(fit.b_px - 30) < 0.03
    assert np.allclose(fit.center_px, (47.5, 48.2), atol=0.03)


def test_fit_ellipse_points_exact():
    t = np.linspace(0, 2 * np.pi, 50, endpoint=False)
    a, b, th = 10.0, 6.0, math.radians(30)
    x = 5 + a * np.cos(t) * math.cos(th) - b * np.sin(t) * math.sin(th)
    y = -3 + a * np.cos(t) * math.sin(th) + b * np.sin(t) * math.cos(th)
    c, fa, fb, fth = fit_ellipse_points(y, x)
    assert np.allclose(c, (-3, 5)) and np.isclose(fa, 10) and np.isclose(fb, 6)
    assert np.isclose(fth, 30)


def test_fit_ring_bad_input():
    with pytest.raises(DataShapeError):
        fit_ring(np.zeros((3, 4, 5)), radius_range_px=(1, 2))
    with pytest.raises(ValueError, match="r_min < r_max"):
        fit_ring(np.zeros((30, 30)), radius_range_px=(10, 5))
    with pytest.raises(CalibrationError):
        fit_ring(np.zeros((30, 30)), radius_range_px=(40, 60), center_px=(15, 15))
    with pytest.raises(CalibrationError, match="6 points"):
        fit_ellipse_points([1, 2, 3], [1, 2, 3])
    fit = fit_ring(_ring_pattern((64, 64), (32, 32), 20, 20, 0), radius_range_px=(15, 25))
    with pytest.raises(CalibrationError, match="positive"):
        fit.to_calibration(d_spacing_A=-1)
