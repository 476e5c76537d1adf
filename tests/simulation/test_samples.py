"""The shipped samples are what the generator makes, and their ground truth is self-consistent."""

from pathlib import Path

import numpy as np
import pytest

from napari_4dstem.io import emd
from napari_4dstem.simulation.samples import (
    AU_LATTICE_A,
    kinematic_au_spots,
    make_polycrystal_au,
    make_strained_crystal,
    planted_strain,
    render_disks,
)

SHIPPED = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.mark.parametrize("key", ["strained_crystal", "polycrystal_au"])
def test_shipped_file_is_reproduced_by_the_generator(key):
    path = SHIPPED / f"{key}.h5"
    if not path.is_file():
        pytest.skip("sample_data/ not present")
    from napari_4dstem.simulation.samples import make_sample

    fresh = make_sample(key)
    got = emd.read(path)
    stale = "sample_data/ is stale: run `napari-4dstem samples --out sample_data --overwrite`"
    # The counts are integers drawn from a seeded generator: they must match exactly.
    assert got[key].data.dtype == fresh.datacube.data.dtype
    np.testing.assert_array_equal(got[key].data[()], fresh.datacube.data, err_msg=stale)
    assert got[key].calibration == fresh.datacube.calibration
    for t in fresh.truth:
        if np.issubdtype(t.data.dtype, np.floating):
            # Float truth (rotation matrices, strain, origins: entries of order 1e-3..1e2) comes
            # from trig and small matrix products whose last bits depend on the libm/BLAS build
            # (a fresh machine differed by 2e-19). 1e-12 is ~1e3 times float64 rounding of these
            # few operations and ~1e6 below anything physical (1e-4 deg is 2e-6 in a matrix).
            np.testing.assert_allclose(got[t.name].data, t.data, rtol=0, atol=1e-12, err_msg=stale)
        else:
            np.testing.assert_array_equal(got[t.name].data, t.data, err_msg=stale)
    got[key].close()


def test_render_disk_centroid_is_where_planted():
    centers = np.array([[[20.3, 17.8]], [[40.55, 33.1]]])
    img = render_disks(centers, np.array([5.0]), (64, 64), 8.0, 0.5)
    yy, xx = np.mgrid[0:64, 0:64]
    for i in range(2):
        w = img[i] / img[i].sum()
        assert (w * yy).sum() == pytest.approx(centers[i, 0, 0], abs=5e-4)  # pixel sampling of the edge
        assert (w * xx).sum() == pytest.approx(centers[i, 0, 1], abs=5e-4)
        # area of a disk with a logistic edge of width w: pi (R^2 + pi^2 w^2 / 3)
        assert img[i].sum() == pytest.approx(5.0 * np.pi * (64 + np.pi**2 * 0.25 / 3), rel=1e-3)


def test_strained_crystal_truth_matches_noise_free_patterns():
    s = make_strained_crystal(scan_shape=(8, 8), noise=False)
    strain = s.truth[0]
    assert strain.channels == ("e_xx", "e_yy", "e_xy", "theta_rad")
    assert np.all(strain.data[:2, :2] == 0)  # unstrained reference corner
    assert strain.channel("e_xx").max() == pytest.approx(0.02)
    assert strain.channel("e_yy").min() == pytest.approx(-0.01)
    # descan under 1 px
    origin = s.truth[1].data
    assert np.ptp(origin[..., 0]) < 1 and np.ptp(origin[..., 1]) < 1
    # the central disk's centroid in a noise-free pattern is the planted origin
    data = np.asarray(s.datacube.data, dtype=float) - 0.5
    yy, xx = np.mgrid[0:128, 0:128]
    for iy, ix in [(0, 0), (7, 7), (3, 6)]:
        o = origin[iy, ix]
        win = (yy - o[0]) ** 2 + (xx - o[1]) ** 2 < 10.5**2
        p = data[iy, ix] * win
        # Bragg disks start 24 - 8 px away: the window holds only the central disk
        assert (p * yy).sum() / p.sum() == pytest.approx(o[0], abs=0.02)
        assert (p * xx).sum() / p.sum() == pytest.approx(o[1], abs=0.02)
    # lattice vectors follow g' = F^-T g
    g = s.truth[2].data
    ref = np.array(s.truth[2].params["g1_ref_px_yx"])
    np.testing.assert_allclose(g[0, 0, :2], ref)
    e = planted_strain((8, 8))
    F = np.array([[1 + e["e_xx"][7, 7], e["e_xy"][7, 7]], [e["e_xy"][7, 7], 1 + e["e_yy"][7, 7]]])
    c, sn = np.cos(e["theta"][7, 7]), np.sin(e["theta"][7, 7])
    F = np.array([[c, -sn], [sn, c]]) @ F
    g1_xy = np.linalg.inv(F).T @ ref[::-1]
    np.testing.assert_allclose(g[7, 7, :2], g1_xy[::-1])


def test_polycrystal_grains_and_orientations():
    s = make_polycrystal_au(scan_shape=(12, 12), noise=False)
    grain = s.truth[0].data
    U = s.truth[1].data.reshape(12, 12, 3, 3)
    assert len(np.unique(grain)) >= 3
    # proper rotations everywhere
    np.testing.assert_allclose(U @ U.swapaxes(-1, -2), np.broadcast_to(np.eye(3), U.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(U), 1.0)
    # one orientation per grain, and patterns of the same grain are identical (noise-free)
    data = np.asarray(s.datacube.data)
    for gid in np.unique(grain):
        ys, xs = np.nonzero(grain == gid)
        assert np.allclose(U[ys, xs], U[ys[0], xs[0]])
        assert np.array_equal(data[ys[-1], xs[-1]], data[ys[0], xs[0]])
    # grain 0 sits within 1 deg of [001]: the four {200} at 2/a are excited, the strongest is one
    g, inten = kinematic_au_spots(U[grain == 0][0], energy_kev=300, kmax_inv_A=1.2, thickness_A=100)
    gm = np.hypot(*g.T)
    assert np.sum(np.abs(gm - 2 / AU_LATTICE_A) < 0.01) == 4
    assert gm[np.argmax(inten)] == pytest.approx(2 / AU_LATTICE_A, rel=0.01)


@pytest.mark.parametrize("spacing, angle", [(30, 33), (30, 20), (30, 40), (29, 30)])
def test_lattices_with_disks_at_the_detector_edge(spacing, angle):
    # disks centred just outside the detector used to write past the padded buffer
    s = make_strained_crystal(scan_shape=(2, 2), spacing_px=spacing, lattice_angle_deg=angle, noise=False)
    assert np.isfinite(np.asarray(s.datacube.data)).all()
    centers = np.array([[[-8.7, 50.0], [131.2, 127.9], [64.0, -9.9]]])
    img = render_disks(centers, np.array([1.0, 1.0, 1.0]), (128, 128), 8.0, 0.5)
    assert img.shape == (1, 128, 128) and img[0, 0, 50] > 0.0 and img[0, 127, 127] > 0.0
