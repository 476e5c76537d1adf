"""Every response of a detector, and how its image fills in block by block, against naive numpy."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem import Calibration
from napari_4dstem.analysis.virtual.detectors import AnnulusDetector, DiskDetector
from napari_4dstem.analysis.virtual.responses import (
    PARTIAL,
    RESPONSES,
    detector_response,
    exact_after_differences,
    iter_detector_response,
)

SCAN, DET, ROWS = (9, 8), (23, 19), 2  # blocks of 2 whole scan rows
ROT = 30.0


def _cube(rng):
    """A blob whose position varies smoothly over the scan (no outlier for the robust mean COM), plus noise."""
    iy, ix = np.mgrid[0 : SCAN[0], 0 : SCAN[1]]
    cy = 11.0 + 1.5 * np.sin(iy / 2.0) + 0.3 * ix
    cx = 9.0 + 1.2 * np.cos(ix / 2.5) - 0.2 * iy
    ky, kx = np.mgrid[0 : DET[0], 0 : DET[1]]
    blob = np.exp(-((ky - cy[..., None, None]) ** 2 + (kx - cx[..., None, None]) ** 2) / 18.0)
    return (1000 * blob + rng.uniform(0, 5, (*SCAN, *DET))).astype(np.float32)


def _reference(a, det, response, rotation_deg):
    """The final image, naively: numpy over the pixels of the mask, the COM by its definition."""
    m = det.render(DET).astype(np.float64)
    a = a.astype(np.float64)
    inside = m != 0
    if response == "sum":
        return (a * m).sum(axis=(2, 3))
    if response == "mean":
        return (a * m).sum(axis=(2, 3)) / m.sum()
    if response == "max":
        return a[:, :, inside].max(axis=-1)
    if response == "std":
        return a[:, :, inside].std(axis=-1)  # binary detector: the population std
    ky, kx = np.mgrid[0 : DET[0], 0 : DET[1]]
    tot = (a * m).sum(axis=(2, 3))
    cy, cx = (a * m * ky).sum(axis=(2, 3)) / tot, (a * m * kx).sum(axis=(2, 3)) / tot
    if response in ("com_y", "com_x"):
        return cy if response == "com_y" else cx
    vy, vx = cy - cy.mean(), cx - cx.mean()
    if response == "com_magnitude":
        return np.hypot(vy, vx)
    t = np.radians(rotation_deg)
    uy, ux = np.sin(t) * vx + np.cos(t) * vy, np.cos(t) * vx - np.sin(t) * vy
    duy_dy, duy_dx = np.gradient(uy)
    dux_dy, dux_dx = np.gradient(ux)
    return dux_dx + duy_dy if response == "divergence" else duy_dx - dux_dy


def _steps(job):
    steps = []
    try:
        while True:
            steps.append(next(job))
    except StopIteration as stop:
        return steps, stop.value


@pytest.mark.parametrize("response", RESPONSES)
def test_each_response_fills_in_row_block_by_row_block(rng, tmp_path, monkeypatch, response, counts_reached):
    """On a memory-mapped file every block's step carries the image so far: exact in the rows read (sum,
    mean, max, std, CoM y/x), exact where the four neighbours are read (divergence, curl: the
    last row read waits for the next block), from the mean CoM of the rows read (|CoM|), none for
    iCoM (the Fourier integration needs the whole field); the final image equals numpy's."""
    from napari_4dstem.analysis.virtual.dpc import dpc, idpc
    from napari_4dstem.engine import driver

    monkeypatch.setattr(driver, "PARTIAL_EVERY_S", 0.0)  # a map at every step
    a = _cube(rng)
    mm = np.lib.format.open_memmap(tmp_path / "cube.npy", mode="w+", dtype=a.dtype, shape=a.shape)
    mm[:] = a
    mm.flush()
    mm = np.load(tmp_path / "cube.npy", mmap_mode="r")
    cal = Calibration(rotation_deg=ROT)
    det = DiskDetector((11.0, 9.0), 6.5) if response not in ("max", "std") else AnnulusDetector((11.0, 9.0), 2.0, 7.0)
    steps, result = _steps(
        iter_detector_response(mm, det, response, calibration=cal, partial=True, scan_chunk=(ROWS, SCAN[1]))
    )
    blocks = list(range(1, -(-SCAN[0] // ROWS) + 1))
    assert counts_reached(steps) == blocks and result.params["response"] == response
    if response == "icom":
        # no image so far; the image at the end is the iDPC of the CoM shifts from their mean
        assert all(s.partial is None for s in steps)
        com = np.stack([_reference(a, det, "com_y", ROT), _reference(a, det, "com_x", ROT)], axis=-1)
        want = idpc(dpc(com, calibration=cal, descan="mean")).data
        np.testing.assert_allclose(result.data, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
        return
    want = _reference(a, det, response, ROT)
    tol = {"rtol": 1e-5, "atol": 1e-5 * float(np.nanmax(np.abs(want)))}
    np.testing.assert_allclose(result.data, want, **tol)
    kind = PARTIAL[response]
    mapped = [s for s in steps if s.partial is not None]  # not the waiting steps while a block runs
    assert [s.done for s in mapped] == blocks
    for s in mapped:
        rows = min(ROWS * s.done, SCAN[0])
        got = s.partial.data
        if kind == "exact":
            np.testing.assert_allclose(got[:rows], want[:rows], **tol)
            assert np.isnan(got[rows:]).all() and s.partial.fraction == pytest.approx(rows / SCAN[0])
        elif kind == "neighbours":
            ok = rows if rows == SCAN[0] else rows - 1  # the last row read needs the next one
            np.testing.assert_allclose(got[:ok], want[:ok], **tol)
            assert np.isnan(got[ok:]).all() and s.partial.fraction == pytest.approx(ok / SCAN[0])
        else:  # provisional: |CoM| from the mean CoM of the rows read so far
            cy, cx = _reference(a[:rows], det, "com_y", ROT), _reference(a[:rows], det, "com_x", ROT)
            np.testing.assert_allclose(got[:rows], np.hypot(cy - cy.mean(), cx - cx.mean()), rtol=1e-5, atol=1e-5)
            assert np.isnan(got[rows:]).all()
    # the last step's map is the final image (to float32)
    last = steps[-1].partial.data
    np.testing.assert_allclose(last, want.astype(np.float32), **tol)
    # the eager twin: the same image, and no map rides on the steps without partial
    np.testing.assert_array_equal(detector_response(mm, det, response, calibration=cal).data, result.data)
    assert all(s.partial is None for s in iter_detector_response(mm, det, response, calibration=cal, scan_chunk=(2, 8)))


def test_exact_after_differences_is_done_with_its_four_neighbours():
    done = np.zeros((5, 6), bool)
    done[:3] = True
    done[3, :2] = True  # a block of a split row
    want = np.zeros((5, 6), bool)
    want[:2] = True  # rows 0, 1: the neighbours above (outside the scan counts) and below are done
    want[2, :2] = True  # row 2: only where row 3 below is done
    np.testing.assert_array_equal(exact_after_differences(done), want)
    assert exact_after_differences(np.ones((3, 3), bool)).all()


def test_unknown_response_is_a_clear_error(rng):
    with pytest.raises(ValueError, match="unknown response 'median'"):
        detector_response(_cube(rng), DiskDetector((11.0, 9.0), 3.0), "median")
