"""Known answers for the bright-field disk radius (``find_bf_disk``), the number the disk calibration
divides the convergence angle by (session-15 audit, finding S3).

The radius was ``sqrt(area / pi)`` of a thresholded region: 0.4-0.7 % small noise-free at 3-6 px,
1.3-2 % small with Poisson noise, so the detector pixel size came out 1-3.5 % large. It is now a fit
of the package's logistic-edge disk (``vacuum_probe`` / ``simulate_cbed``: ``R`` is where the edge
is half way from background to plateau). Tolerances: noise-free 0.1 % (the fit recovers the
planted disk to 1e-8); Poisson noise: the mean error over 12 patterns within 0.5 % (1 % at
3 px, where one 2e4-count pattern scatters by 1 %), i.e. no bias; the single-pattern scatter is
the noise's, not ours.
"""

import numpy as np
import pytest
from scipy import ndimage

from napari_4dstem.analysis.bragg.probe import make_template
from napari_4dstem.analysis.virtual.origin import find_bf_disk
from napari_4dstem.simulation.kinematic import vacuum_probe
from napari_4dstem.simulation.samples import soft_disk


def _probe(radius, edge=0.5, center=None, size=None):
    size = size or (64 if radius <= 10 else 96)
    center = center or (size / 2 - 1.7, size / 2 + 2.35)  # off the pixel grid and the detector centre
    return vacuum_probe((size, size), radius_px=radius, origin_px=center, edge_px=edge), center


@pytest.mark.parametrize("edge", [0.5, 1.0])
@pytest.mark.parametrize("radius", [3.0, 6.1, 10.0, 20.0])
def test_noise_free_vacuum_probe_radius_and_centre(radius, edge):
    p, c = _probe(radius, edge)
    bf = find_bf_disk(p)
    assert bf.radius_px == pytest.approx(radius, rel=1e-3)
    assert bf.center_px == pytest.approx(c, abs=0.01)
    assert bf.edge_px == pytest.approx(edge, rel=0.02)


@pytest.mark.parametrize(
    ("radius", "counts", "tol"),
    [(3.0, 2e4, 0.01), (6.1, 2e4, 0.005), (10.0, 2e4, 0.005), (20.0, 2e4, 0.005), (6.1, 1e3, 0.02), (10.0, 1e3, 0.025)],
)
def test_poisson_noise_does_not_bias_the_radius(radius, counts, tol):
    """The old thresholded count read -1.8 % (6.1 px), -1.8 % (10 px), -2 % (20 px) at 2e4 counts and
    -5.6 % / -10 % at 1e3: biased low, never high. The fit's mean over 12 patterns is within ``tol``."""
    p, _ = _probe(radius)
    rng = np.random.default_rng(int(radius * 10) + int(counts))
    errs = [find_bf_disk(rng.poisson(p * counts).astype(float)).radius_px / radius - 1 for _ in range(12)]
    assert abs(np.mean(errs)) < tol, errs


@pytest.mark.parametrize(("clip", "tol"), [(0.9, 0.005), (0.6, 0.015)])
def test_a_saturated_disk_keeps_its_radius(clip, tol):
    """A flat-topped (clipped) disk: the saturated pixels are fitted by ``min(model, clip)``; the
    plateau is extrapolated from the edge below the clip, so with noise the deeper the clip the
    larger the scatter (the mean of 8 patterns of 400 counts per plateau pixel within ``tol``)."""
    p, _ = _probe(10.0, 0.7)
    p = p / p.max()
    assert find_bf_disk(np.minimum(p, clip)).radius_px == pytest.approx(10.0, rel=1e-3)
    rng = np.random.default_rng(3)
    errs = [
        find_bf_disk(np.minimum(rng.poisson(p * 400), 400 * clip).astype(float)).radius_px / 10 - 1 for _ in range(8)
    ]
    assert abs(np.mean(errs)) < tol, errs


def test_slightly_elliptical_disk_gives_the_mean_radius():
    yy, xx = np.indices((64, 64))
    a, b = 10.3, 9.7  # 3 % ellipticity
    img = soft_disk(np.hypot((yy - 30.4) * 10 / a, (xx - 33.2) * 10 / b), 10.0, 0.6)
    assert find_bf_disk(img).radius_px == pytest.approx(np.sqrt(a * b), rel=2e-3)


@pytest.mark.parametrize("kind", ["flat", "halo", "slope"])
def test_background_under_the_disk(kind):
    p, c = _probe(8.0, 0.6)
    p = p / p.max()
    yy, xx = np.indices(p.shape)
    bg = {
        "flat": np.full(p.shape, 0.3),
        "halo": 0.15 * np.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / (2 * 20.0**2)),
        "slope": 0.05 + 0.003 * (xx - 32),
    }[kind]
    assert find_bf_disk(p + bg).radius_px == pytest.approx(8.0, rel=2e-3)


def test_hard_disk_blurred_reads_the_half_way_contour():
    """Not the package's disk model: a hard disk, each pixel its covered area (8 x 8 subsamples),
    blurred by a Gaussian of 1 px (a detector PSF, or the descan spread of a mean pattern). Its
    half-way contour lies about ``sigma**2 / (2 R)`` inside its radius (the documented convention)."""
    s, r, c = 8, 12.0, (30.6, 33.3)
    y = (np.arange(64 * s) + 0.5) / s - 0.5
    inside = np.hypot(y[:, None] - c[0], y[None, :] - c[1]) <= r
    img = ndimage.gaussian_filter(inside.reshape(64, s, 64, s).mean(axis=(1, 3)), 1.0)
    bf = find_bf_disk(img)
    assert bf.radius_px == pytest.approx(r - 1.0 / (2 * r), abs=0.02)
    assert bf.center_px == pytest.approx(c, abs=0.01)


def test_simulated_crystal_pattern_known_convergence_angle():
    """Data not drawn like the tuning: a kinematic CBED pattern of SrTiO3 [001] (Bragg disks 13 px
    apart at the edge) with Poisson noise; the radius is alpha / lambda / pixel."""
    from napari_4dstem.analysis.crystal.structure import Crystal
    from napari_4dstem.data.calibration import electron_wavelength_A
    from napari_4dstem.simulation.engines import simulate_cbed

    sto = Crystal.from_parameters(
        3.905,
        3.905,
        3.905,
        atoms=[("Sr", (0, 0, 0), 1, 0.5), ("Ti", (0.5, 0.5, 0.5), 1, 0.5), ("O", (0.5, 0.5, 0), 1, 0.5)],
        spacegroup="P m -3 m",
    )
    r = simulate_cbed(
        sto, shape=(128, 128), pixel_size_inv_A=0.01, energy_kev=300.0, convergence_mrad=1.2, thicknesses_A=(40.0,)
    )
    truth = 1.2e-3 / electron_wavelength_A(300.0) / 0.01
    pat = r.patterns[0, 0] / r.patterns[0, 0].sum()
    assert find_bf_disk(pat).radius_px == pytest.approx(truth, rel=1e-3)
    rng = np.random.default_rng(11)
    errs = [find_bf_disk(rng.poisson(pat * 2e4).astype(float)).radius_px / truth - 1 for _ in range(12)]
    assert abs(np.mean(errs)) < 0.005, errs


def test_bragg_template_radius_is_the_same_fit():
    """The Bragg probe template fits the same logistic disk (its centre kept): same radius."""
    p, _ = _probe(6.1, 0.5)
    assert make_template(p).radius_px == pytest.approx(find_bf_disk(p).radius_px, rel=1e-3)
    assert make_template(p).radius_px == pytest.approx(6.1, rel=1e-3)
