"""UX point 12 (Display): percentile autorange presets are latchable. Unlatched, each new live
image is autoranged with the preset; latched, the contrast limits stay for every new image while
the detector moves, follow a handle drag, and unlatching autoranges the current image."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(virtual_dock):
    return virtual_dock


def _percentiles(img, lo=0.1, hi=99.9):
    return tuple(float(v) for v in np.percentile(np.asarray(img, dtype=np.float32), [lo, hi]))


def _new_image(w, qtbot, det, kind):
    w.set_detector(det)
    qtbot.waitUntil(
        lambda: w._worker is None and w._pending is None and w.last_image.params["detector"]["kind"] == kind,
        timeout=30000,
    )


def test_latched_contrast_limits_stay_across_new_images(widget, qtbot, stall_detector):
    from napari_4dstem.analysis.virtual.detectors import AnnulusDetector, DiskDetector
    from napari_4dstem.widgets._results import results_viewer

    viewer, w = widget
    li = w.realspace
    layer = results_viewer(viewer, create=False).layers["virtual image"]
    assert li.latch.isVisibleTo(w) and not li.latch.isChecked()
    bf = w.last_image.data
    assert tuple(layer.contrast_limits) == pytest.approx(_percentiles(bf), rel=1e-6)
    # unlatched: a new image (the detector moved to an annulus) is autoranged
    _new_image(w, qtbot, AnnulusDetector((64.0, 64.0), 20.0, 50.0), "annulus")
    adf = w.last_image.data
    assert tuple(layer.contrast_limits) == pytest.approx(_percentiles(adf), rel=1e-6)
    # the two images have very different ranges (else the latch would not show)
    assert _percentiles(adf)[1] < 0.5 * _percentiles(bf)[1] or _percentiles(bf)[1] < 0.5 * _percentiles(adf)[1]
    stall_detector.step()
    # latched: the limits of the image shown stay for the next images
    li.latch.setChecked(True)
    held = tuple(layer.contrast_limits)
    _new_image(w, qtbot, DiskDetector((64.0, 64.0), 8.0), "disk")
    assert tuple(layer.contrast_limits) == pytest.approx(held, rel=1e-9)
    assert li.displayed_clim == pytest.approx(held) and li.histogram.clim == pytest.approx(held)
    np.testing.assert_array_equal(layer.data, w.last_image.data.astype(np.float32))  # the new image, old limits
    stall_detector.step()
    # limits set by hand while latched (napari's own contrast control) are the latched ones now
    mine = (held[0] + 0.1 * (held[1] - held[0]), held[1] - 0.2 * (held[1] - held[0]))
    layer.contrast_limits = mine
    assert li.latched_clim == pytest.approx(mine)
    _new_image(w, qtbot, AnnulusDetector((64.0, 64.0), 20.0, 50.0), "annulus")
    assert tuple(layer.contrast_limits) == pytest.approx(mine, rel=1e-9)
    stall_detector.step()
    # a preset chosen while latched: from the current image, and latched
    li.range_combo.setCurrentText("min-max")
    now = w.last_image.data.astype(np.float32)
    want = (float(now.min()), float(now.max()))
    assert tuple(layer.contrast_limits) == pytest.approx(want, rel=1e-6)
    _new_image(w, qtbot, DiskDetector((64.0, 64.0), 8.0), "disk")
    assert tuple(layer.contrast_limits) == pytest.approx(want, rel=1e-9)
    stall_detector.step()
    # Log has its own latched limits; back on Lin the Lin ones hold again
    li.scale_combo.setCurrentText("Log")
    log = np.log10(w.last_image.data.astype(np.float32) - float(w.last_image.data.min()) + 1.0)
    assert tuple(layer.contrast_limits) == pytest.approx((float(log.min()), float(log.max())), rel=1e-5, abs=1e-7)
    li.scale_combo.setCurrentText("Lin")
    assert tuple(layer.contrast_limits) == pytest.approx(want, rel=1e-9)
    # unlatched: the current image is autoranged at once, and the next ones too
    li.latch.setChecked(False)
    img = w.last_image.data.astype(np.float32)
    assert tuple(layer.contrast_limits) == pytest.approx((float(img.min()), float(img.max())), rel=1e-6)
    _new_image(w, qtbot, AnnulusDetector((64.0, 64.0), 20.0, 50.0), "annulus")
    img = w.last_image.data.astype(np.float32)
    assert tuple(layer.contrast_limits) == pytest.approx((float(img.min()), float(img.max())), rel=1e-6)
    assert w._worker is None
    qtbot.waitUntil(lambda: w.presets_ready, timeout=60000)  # no preset worker left at teardown
