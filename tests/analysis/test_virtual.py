"""Virtual detectors and virtual images against a naive numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_4dstem import Calibration, DataCube
from napari_4dstem.analysis.virtual.detectors import (
    AnnulusDetector,
    DiskDetector,
    MaskDetector,
    PointDetector,
    RectangleDetector,
    mask_runs,
    preset_detector,
)
from napari_4dstem.analysis.virtual.images import (
    NonFiniteDataError,
    iter_virtual_image,
    virtual_image,
    virtual_images,
)
from napari_4dstem.errors import CalibrationError, DataShapeError

DET = (23, 19)  # odd, non-square detector


def _detectors(rng):
    return [
        PointDetector((4.4, 17.6)),
        DiskDetector((11.3, 8.8), 5.2),
        DiskDetector((2.0, 3.0), 2.0),  # small, near a corner
        AnnulusDetector((11.0, 9.0), 3.5, 8.0),
        AnnulusDetector((20.0, 1.0), 2.0, 30.0),  # clipped by the edges
        RectangleDetector((3, 9), (-4, 7)),
        MaskDetector(rng.random(DET) > 0.7, name="random"),
    ]


def _data(rng, dtype, scan=(7, 11)):
    if np.dtype(dtype).kind == "f":
        return rng.normal(10, 3, (*scan, *DET)).astype(dtype)
    hi = min(np.iinfo(dtype).max, 100000)
    return rng.integers(0, hi, (*scan, *DET), endpoint=True).astype(dtype)


def _reference(a, mask):
    if mask.dtype == bool and a.dtype.kind in "ui":
        return a.astype(np.int64)[:, :, mask].sum(axis=-1).astype(np.float64)
    return np.tensordot(a.astype(np.float64), mask.astype(np.float64), axes=((2, 3), (0, 1)))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.float32])
@pytest.mark.parametrize("chunk", [None, (3, 4), (7, 1)])
def test_virtual_image_equals_numpy(rng, dtype, chunk):
    a = _data(rng, dtype)
    for det in _detectors(rng):
        got = virtual_image(a, det, scan_chunk=chunk)
        ref = _reference(a, det.render(DET))
        assert got.data.shape == (7, 11) and got.data.dtype == np.float64
        if a.dtype.kind in "ui":
            np.testing.assert_array_equal(got.data, ref, err_msg=repr(det))
        else:
            np.testing.assert_allclose(got.data, ref, rtol=2e-6, err_msg=repr(det))  # float32 rows summed in float32
        assert got.params["detector"]["kind"] == det.kind


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_weighted_mask(rng, dtype):
    a = _data(rng, dtype)
    w = np.zeros(DET)
    w[5:12, 2:15] = rng.normal(size=(7, 13))
    got = virtual_image(a, MaskDetector(w), scan_chunk=(4, 4))
    tol = 2e-6 if dtype == np.float32 else 1e-10  # float32: float32 weights and row sums
    np.testing.assert_allclose(got.data, _reference(a, w), rtol=tol, atol=tol * np.abs(w).sum() * 10)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
@pytest.mark.parametrize("backend", ["prange", "serial", None])
def test_small_detector_kernel_groups_and_prefetch(rng, dtype, backend):
    # 117 patterns: groups of four with a tail of one, and the prefetch of the group two on
    # switched off near the end of each block
    a = _data(rng, dtype, scan=(9, 13))
    det = DiskDetector((11.0, 9.5), 3.0)
    got = virtual_image(a, det, backend=backend)
    ref = _reference(a, det.render(DET))
    np.testing.assert_allclose(got.data, ref, rtol=2e-6 if dtype == np.float32 else 0)


@pytest.mark.parametrize("chunk", [None, (4, 5)])
def test_wide_float_detectors_blas_on_their_rows(rng, chunk):
    # float data and wide detectors go through BLAS on a strided view of the detector's own
    # rows: NaN in the rows outside must not reach the image (NaN * 0 would be NaN)
    a = _data(rng, np.float32, scan=(6, 7))
    w = np.zeros(DET)
    w[4:15, :] = rng.normal(size=(11, DET[1]))  # weights on rows 4..14 only
    dets = [AnnulusDetector((9.0, 9.0), 2.0, 7.0), MaskDetector(w)]  # rows 2..16, 4..14
    a[..., 0, :] = np.nan
    a[..., 20:, :] = np.nan
    got = virtual_images(a, dets, scan_chunk=chunk)
    for k, det in enumerate(dets):
        m = det.render(DET)
        assert np.count_nonzero(m) / m.size >= 0.25  # the BLAS path
        ref = _reference(np.nan_to_num(a), m)
        np.testing.assert_allclose(got.data[..., k], ref, rtol=1e-5, atol=1e-3)


def test_several_detectors_in_one_pass(rng):
    a = _data(rng, np.uint16)
    dets = _detectors(rng)
    stack = virtual_images(DataCube(a), dets, scan_chunk=(2, 5))
    assert stack.data.shape == (7, 11, len(dets))
    assert stack.channels[:3] == ("point", "disk", "disk_2")
    for k, det in enumerate(dets):
        np.testing.assert_array_equal(stack.data[..., k], _reference(a, det.render(DET)))


def test_mask_runs_reconstruct_mask(rng):
    m = rng.random((9, 14)) > 0.5
    r, c0, c1 = mask_runs(m)
    back = np.zeros_like(m)
    for rr, a, b in zip(r, c0, c1):
        back[rr, a:b] = True
    np.testing.assert_array_equal(back, m)


class RecordingArray:
    """A lazy 4D array that records which detector rows were read."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.rows = a, a.shape, a.dtype, []

    def __getitem__(self, key):
        self.rows.append(key[2] if len(key) > 2 else slice(None))
        return self.a[key]


def test_small_detector_reads_only_its_rows(rng):
    a = _data(rng, np.uint16)
    lazy = RecordingArray(a)
    det = DiskDetector((5.0, 9.0), 2.0)  # rows 3..7
    got = virtual_image(lazy, det)
    np.testing.assert_array_equal(got.data, _reference(a, det.render(DET)))
    assert lazy.rows and all(r == slice(3, 8) for r in lazy.rows)


def _shifted_reference(a, mask, shy, shx):
    out = np.empty(a.shape[:2])
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            m = ndimage.shift(mask.astype(float), (shy[i, j], shx[i, j]), order=1, mode="grid-constant")
            out[i, j] = np.sum(a[i, j].astype(np.float64) * m)
    return out


@pytest.mark.parametrize("integer_shifts", [True, False])
def test_descan_shifts_detector_with_origin(rng, integer_shifts):
    a = _data(rng, np.uint16, scan=(5, 6))
    shifts = rng.uniform(-2.5, 2.5, (5, 6, 2))
    if integer_shifts:
        shifts = np.round(shifts)
    ref_origin = (11.0, 9.0)
    cal = Calibration(origin_px=ref_origin, origin_map_px=shifts + np.asarray(ref_origin))
    for det in [
        DiskDetector(ref_origin, 4.0),
        AnnulusDetector(ref_origin, 3, 7.5),
        MaskDetector(rng.random(DET)),
    ]:
        got = virtual_image(DataCube(a, cal), det, descan=True, scan_chunk=(2, 4))
        ref = _shifted_reference(a, det.render(DET), shifts[..., 0], shifts[..., 1])
        np.testing.assert_allclose(got.data, ref, rtol=1e-10, err_msg=repr(det))
        assert got.params["descan"] is True


def test_descan_needs_origin_map(rng):
    a = _data(rng, np.uint8)
    with pytest.raises(CalibrationError, match="origin map"):
        virtual_image(a, DiskDetector((5, 5), 2), descan=True)


def test_bad_detectors(rng):
    a = _data(rng, np.uint16)
    with pytest.raises(DataShapeError, match="covers no pixel"):
        virtual_image(a, DiskDetector((100.0, 100.0), 3.0))
    with pytest.raises(DataShapeError, match="covers no pixel"):
        virtual_image(a, PointDetector((-3, 2)))
    with pytest.raises(DataShapeError, match="covers no pixel"):
        virtual_image(a, MaskDetector(np.zeros(DET, bool)))
    with pytest.raises(DataShapeError, match="has shape"):
        virtual_image(a, MaskDetector(np.ones((DET[1], DET[0]), bool)))
    with pytest.raises(DataShapeError, match="2D"):
        MaskDetector(np.ones((2, 3, 4), bool))
    with pytest.raises(ValueError, match="NaN"):
        MaskDetector(np.full(DET, np.nan))
    with pytest.raises(ValueError, match="inner_px < outer_px"):
        AnnulusDetector((5, 5), 6, 4)
    with pytest.raises(ValueError, match="radius_px"):
        DiskDetector((5, 5), -1)
    with pytest.raises(ValueError, match="stop > start"):
        RectangleDetector((4, 4), (0, 3))


def test_nan_policies(rng):
    a = _data(rng, np.float32, scan=(4, 5))
    a[1, 2, 11, 9] = np.nan
    a[3, 0, 0, 0] = np.inf  # outside the disk: harmless
    det = DiskDetector((11.0, 9.0), 4.0)
    with pytest.raises(NonFiniteDataError, match=r"1 pattern\(s\).*\(1, 2\)"):
        virtual_image(a, det)
    prop = virtual_image(a, det, nan_policy="propagate").data
    assert np.isnan(prop[1, 2]) and np.isfinite(np.delete(prop.ravel(), 1 * 5 + 2)).all()
    omit = virtual_image(a, det, nan_policy="omit").data
    m = det.render(DET)
    ref = np.nansum(np.where(m, a.astype(np.float64), 0), axis=(2, 3))
    np.testing.assert_allclose(omit, ref, rtol=2e-6)


def test_nan_outside_a_wide_detector_is_harmless(rng):
    # wide detectors on float data use a BLAS product, where NaN * 0 would be NaN
    a = _data(rng, np.float32, scan=(3, 4))
    a[2, 1, 0, 0] = np.nan
    det = AnnulusDetector((11.0, 9.0), 2.0, 9.0)
    assert det.fraction(DET) > 0.25
    got = virtual_image(a, det).data
    np.testing.assert_allclose(got, _reference(np.nan_to_num(a), det.render(DET)), rtol=2e-6)


def test_presets_from_calibration():
    cal = Calibration(k_pixel_size=0.5, k_units="mrad", convergence_semiangle_mrad=4.0, origin_px=(30.0, 31.0))
    bf = preset_detector("bf", detector_shape=(64, 64), calibration=cal)
    assert isinstance(bf, DiskDetector) and bf.radius_px == 8.0 and bf.center_px == (30.0, 31.0)
    abf = preset_detector("ABF", detector_shape=(64, 64), calibration=cal)
    assert (abf.inner_px, abf.outer_px) == (4.0, 8.0)
    adf = preset_detector("ADF", detector_shape=(64, 64), calibration=cal)
    assert (adf.inner_px, adf.outer_px) == (8.0, 24.0)
    haadf = preset_detector("HAADF", detector_shape=(64, 64), calibration=cal)
    assert haadf.inner_px == 24.0 and haadf.outer_px > np.hypot(33, 31)
    custom = preset_detector("ADF", detector_shape=(64, 64), calibration=cal, inner_mrad=5, outer_mrad=10)
    assert (custom.inner_px, custom.outer_px) == (10.0, 20.0)
    # 1/A calibration converts through the beam energy
    cal_inv_a = Calibration(k_pixel_size=0.01, k_units="1/A", beam_energy_kev=300.0, convergence_semiangle_mrad=2.0)
    px_mrad = cal_inv_a.k_pixel_size_in("mrad")
    bf2 = preset_detector("BF", detector_shape=(32, 32), calibration=cal_inv_a)
    assert bf2.radius_px == pytest.approx(2.0 / px_mrad)
    assert bf2.center_px == (15.5, 15.5)


def test_presets_without_angles():
    with pytest.raises(CalibrationError, match="pixel size in mrad"):
        preset_detector("BF", detector_shape=(32, 32), calibration=Calibration())
    cal = Calibration(k_pixel_size=0.5, k_units="mrad")
    with pytest.raises(CalibrationError, match="convergence semi-angle"):
        preset_detector("ADF", detector_shape=(32, 32), calibration=cal)
    adf = preset_detector("ADF", detector_shape=(32, 32), bf_radius_px=5.0, center_px=(16, 16))
    assert (adf.inner_px, adf.outer_px) == (5.0, 15.0)
    with pytest.raises(ValueError, match="unknown preset"):
        preset_detector("DF4", detector_shape=(32, 32), bf_radius_px=5.0)


def test_job_yields_progress(rng, counts_reached):
    a = _data(rng, np.uint16)
    job = iter_virtual_image(a, DiskDetector((11, 9), 3), scan_chunk=(3, 11))
    steps = []
    try:
        while True:
            steps.append(next(job))
    except StopIteration as stop:
        result = stop.value
    assert counts_reached(steps) == [1, 2, 3] and steps[-1].done == steps[-1].total == 3
    assert result.name == "virtual_disk"


def test_partial_image_fills_in_row_block_by_row_block(rng, tmp_path, monkeypatch, counts_reached):
    """``partial=True``: every block's step carries the image so far, exact in the rows computed and NaN
    below (a memory-mapped file, read block by block)."""
    from napari_4dstem.engine import driver

    monkeypatch.setattr(driver, "PARTIAL_EVERY_S", 0.0)  # a map at every step (else at most 5 a second)
    a = _data(rng, np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "cube.npy", mode="w+", dtype=a.dtype, shape=a.shape)
    mm[:] = a
    det = AnnulusDetector((11, 9), 2, 8)
    want = virtual_image(a, det).data
    job = iter_virtual_image(mm, det, scan_chunk=(3, a.shape[1]), partial=True)
    steps = []
    try:
        while True:
            steps.append(next(job))
    except StopIteration as stop:
        result = stop.value
    np.testing.assert_allclose(result.data, want, rtol=1e-6)  # float32 data: blocks sum in another order
    blocks = list(range(1, -(-a.shape[0] // 3) + 1))
    assert counts_reached(steps) == blocks and len(blocks) >= 3
    mapped = [s for s in steps if s.partial is not None]  # not the waiting steps while a block runs
    assert [s.done for s in mapped] == blocks
    for s in mapped:
        rows = min(3 * s.done, a.shape[0])
        np.testing.assert_allclose(s.partial.data[:rows], want[:rows].astype(np.float32), rtol=1e-6)
        assert np.isnan(s.partial.data[rows:]).all()
        assert s.partial.fraction == pytest.approx(rows / a.shape[0]) and s.partial.units == "counts"
    # without it, no map rides on the steps
    assert all(s.partial is None for s in iter_virtual_image(mm, det, scan_chunk=(3, a.shape[1])))


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def test_distributed_virtual_equals_local(rng, client):
    a = _data(rng, np.uint16, scan=(9, 8))
    shifts = rng.uniform(-1.5, 1.5, (9, 8, 2))
    cal = Calibration(origin_px=(11.0, 9.0), origin_map_px=shifts + np.array([11.0, 9.0]))
    cube = DataCube(a, cal)
    dets = _detectors(rng)
    local = virtual_images(cube, dets, descan=True, scan_chunk=(4, 3))
    dist = virtual_images(cube, dets, descan=True, scan_chunk=(4, 3), backend=client)
    np.testing.assert_array_equal(dist.data, local.data)
