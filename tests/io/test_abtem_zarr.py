"""abTEM 1.x ``to_zarr`` measurements open as calibrated DataCubes in our axis order.

Known answers: the data equal abTEM's array turned (x, y, k_x, k_y) -> (y, x, k_y, k_x) exactly;
scan steps, detector pixel size, energy, convergence angle and the k = 0 origin come from abTEM's
axis metadata. The first test uses abTEM itself (the main venv has it; skipped elsewhere); the
others build the same layout with zarr alone, so the core venv checks the reader too.
"""

import json

import numpy as np
import pytest

from napari_4dstem.errors import FileFormatError
from napari_4dstem.io import detect_format, open_datacube


def test_a_measurement_written_by_abtem_opens_calibrated_in_our_axis_order(tmp_path):
    abtem = pytest.importorskip("abtem")
    ase = pytest.importorskip("ase")
    atoms = ase.Atoms("Si", positions=[(2.0, 2.0, 1.0)], cell=(4.0, 4.0, 2.0))
    potential = abtem.Potential(atoms, sampling=0.1)
    probe = abtem.Probe(energy=100e3, semiangle_cutoff=20)
    scan = abtem.GridScan(start=(0, 0), end=(4, 4), gpts=(3, 2))  # 3 along x, 2 along y
    m = probe.multislice(potential, scan=scan, detectors=abtem.PixelatedDetector(max_angle=40)).compute()
    path = tmp_path / "abtem.zarr"
    m.to_zarr(str(path))

    assert detect_format(path).name == "zarr"
    dc = open_datacube(path)
    expected = np.asarray(m.array).transpose(1, 0, 3, 2)
    assert dc.shape == expected.shape == (2, 3, 12, 12)
    np.testing.assert_array_equal(np.asarray(dc.data), expected)
    cal = dc.calibration
    assert cal.scan_units == "A" and cal.k_units == "1/A"
    assert cal.scan_step == pytest.approx((4 / 2, 4 / 3))  # (y, x)
    assert cal.k_pixel_size == pytest.approx(m.sampling[0])
    assert cal.beam_energy_kev == pytest.approx(100.0)
    assert cal.convergence_semiangle_mrad == pytest.approx(20.0)
    # fftshifted patterns: k = 0 at index N // 2 on both axes
    assert cal.origin_px == pytest.approx((6.0, 6.0))


def _abtem_like(
    path,
    array,
    *,
    axes_types=("ScanAxis", "ScanAxis", "ReciprocalSpaceAxis", "ReciprocalSpaceAxis"),
    sampling=(0.5, 0.25, 0.1, 0.1),
    offset=(0.0, 0.0, -0.8, -0.6),
):
    import zarr

    units = ["Å", "Å", "1/Å", "1/Å"]
    axes = {
        f"axis_{i}": {"type": t, "sampling": s, "offset": o, "units": u}
        for i, (t, s, o, u) in enumerate(zip(axes_types, sampling, offset, units))
    }
    g = zarr.open_group(str(path), mode="w")
    g.attrs["metadata0"] = {
        "type": "DiffractionPatterns",
        "data_origin": "abTEM_v1.0.11",
        "energy": 200e3,
        "semiangle_cutoff": 3.5,
        "axes": axes,
    }
    g.create_array("array0", shape=array.shape, dtype=array.dtype, chunks=array.shape)[...] = array


def test_the_abtem_layout_without_abtem(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.random((4, 3, 16, 14)).astype(np.float32)  # (x, y, k_x, k_y)
    _abtem_like(tmp_path / "m.zarr", a)
    dc = open_datacube(tmp_path / "m.zarr")
    assert dc.shape == (3, 4, 14, 16)
    np.testing.assert_array_equal(np.asarray(dc.data), a.transpose(1, 0, 3, 2))
    np.testing.assert_array_equal(np.asarray(dc.data[1, 2]), a[2, 1].T)  # one pattern, read lazily
    cal = dc.calibration
    assert cal.scan_step == pytest.approx((0.25, 0.5))
    assert cal.origin_px == pytest.approx((6.0, 8.0))  # (k_y, k_x): -(-0.6)/0.1, -(-0.8)/0.1
    assert cal.beam_energy_kev == pytest.approx(200.0)
    assert json.loads(json.dumps(dc.metadata["abtem"]))["type"] == "DiffractionPatterns"


@pytest.mark.parametrize(
    "kwargs, shape, message",
    [
        ({}, (2, 4, 3, 8, 8), "5D"),  # frozen phonons kept as an ensemble axis
        (
            {"axes_types": ("ScanAxis", "ReciprocalSpaceAxis", "ScanAxis", "ReciprocalSpaceAxis")},
            (4, 3, 8, 8),
            "two ScanAxis",
        ),
        ({"sampling": (0.5, 0.25, 0.1, 0.2)}, (4, 3, 8, 8), "not square"),
        ({"sampling": (0.5, 0.0, 0.1, 0.1)}, (4, 3, 8, 8), "positive sampling"),
    ],
)
def test_abtem_layouts_we_cannot_take_are_refused_with_the_reason(tmp_path, kwargs, shape, message):
    _abtem_like(tmp_path / "bad.zarr", np.zeros(shape, np.float32), **kwargs)
    with pytest.raises(FileFormatError, match=message):
        open_datacube(tmp_path / "bad.zarr")
