"""The held-out multislice strained scan used to compare the NN and correlation paths."""

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_4dstem.nn.evaluate import compare_on_scan, make_multislice_strained_scan


def test_multislice_strained_scan_has_its_truth():
    scans = make_multislice_strained_scan(
        scan_shape=(2, 3),
        thicknesses_A=(20.0, 40.0),
        size=64,
        pixel_size_inv_A=0.03,
        device="cpu",
        seed=1,
        central_counts=3000.0,
    )
    assert len(scans) == 2
    a, b = scans
    assert a.datacube.data.shape == (2, 3, 64, 64) and a.datacube.data.dtype == np.uint16
    assert not np.array_equal(a.datacube.data, b.datacube.data)  # other thickness
    assert a.centers.shape[0] == 6 and a.centers.shape[2] == 2
    # the planted strain: zero in the reference corner, e_xx grows along x
    st = a.strain.data
    assert st[0, 0, 0] == 0 and st[0, 2, 0] > 0.01
    # the truth disks of the first pattern: the direct beam at the centre, reflections inside
    c = a.centers[0]
    c = c[np.all(np.isfinite(c), axis=1)]
    assert np.allclose(c[0], 32) and len(c) >= 5
    # Poisson counts at the stated dose: a vacuum disk would hold 3000 counts/px
    assert 1000 < a.datacube.data[0, 0, 30:35, 30:35].mean() < 4500
    # at a 50x lower dose fewer disks are there to be found (a subset of the same reflections)
    low = make_multislice_strained_scan(
        scan_shape=(2, 3),
        thicknesses_A=(20.0,),
        size=64,
        pixel_size_inv_A=0.03,
        device="cpu",
        seed=1,
        central_counts=60.0,
    )[0]
    n_hi = np.isfinite(a.centers[..., 0]).sum()
    n_lo = np.isfinite(low.centers[..., 0]).sum()
    assert n_lo < n_hi
    assert np.all(np.isfinite(a.centers[..., 0])[np.isfinite(low.centers[..., 0])])
    r = compare_on_scan(a)
    for path in ("correlation", "nn"):
        assert 0 <= r[path]["f1_1px"] <= 1 and r[path]["patterns_per_s"] > 0
