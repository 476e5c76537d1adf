"""Preset detectors on small detectors and without a bright-field disk (UX audit 3, session 14,
defects 1, 3 and 6): a preset that covers no pixel says so in plain words, Full never needs an
angle. Shapes of the real files: Direct Electron MRC 4 x 8 px and 16 x 16 px, Gatan DM 2 x 2 px."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem import Calibration
from napari_4dstem.analysis.virtual.detectors import AnnulusDetector, DiskDetector, preset_detector
from napari_4dstem.errors import CalibrationError, DataShapeError


def test_full_preset_needs_no_angle_and_covers_every_pixel():
    """Defect 6: Full refused on an uncalibrated detector with no BF disk ("pass bf_radius_px")."""
    for shape, centre in (((32, 32), None), ((4, 8), None), ((2, 2), (0.5, 0.5)), ((16, 16), (11.9, 7.5))):
        det = preset_detector("FULL", detector_shape=shape, calibration=Calibration(), center_px=centre)
        assert det.render(shape).all()
    # the other presets still need an angle
    with pytest.raises(CalibrationError, match="pixel size in mrad"):
        preset_detector("BF", detector_shape=(32, 32), calibration=Calibration())


def test_haadf_beyond_the_farthest_pixel_says_where_the_detector_ends():
    """Defect 3: the values the dock used on ROI_Random_Scan_movie.mrc (16 x 16 px, BF radius
    5.97 px): HAADF starts at 3 alpha = 17.9 px, the farthest pixel is 14.07 px away (2.36 alpha).
    The old code raised a bare ValueError from AnnulusDetector (radii 17.91, 15.07)."""
    centre, alpha = (11.90249525017598, 7.490925039189125), 5.970821321441846
    with pytest.raises(DataShapeError, match=r"HAADF preset starts at 3 alpha .* the detector ends at 2.4 alpha"):
        preset_detector("HAADF", detector_shape=(16, 16), center_px=centre, bf_radius_px=alpha)
    # the presets within the detector are unaffected, and equal their definition
    adf = preset_detector("ADF", detector_shape=(16, 16), center_px=centre, bf_radius_px=alpha)
    assert isinstance(adf, AnnulusDetector) and (adf.inner_px, adf.outer_px) == pytest.approx((alpha, 3 * alpha))
    # just inside the detector: HAADF is the (small) ring out to the farthest corner pixel
    haadf = preset_detector("HAADF", detector_shape=(16, 16), center_px=centre, bf_radius_px=4.6)
    m = haadf.render((16, 16))
    # the two top corners, 14.06 and 14.07 px from the centre, are the only pixels beyond 13.8 px
    assert m[0, 0] and m[0, 15] and m.sum() == 2
    # calibrated angles: the same refusal, in the preset's own alpha
    cal = Calibration(k_pixel_size=1.0, k_units="mrad", convergence_semiangle_mrad=4.0)
    with pytest.raises(DataShapeError, match=r"detector ends at 2.7 alpha"):
        preset_detector("HAADF", detector_shape=(16, 16), calibration=cal)


def test_presets_that_cover_no_pixel_of_a_tiny_detector_say_so():
    """Defect 1 (the 2 x 2 px DM file): BF with alpha 0.5 px and ABF fall between the pixel
    centres (each 0.71 px from the centre); the old code returned detectors that covered no pixel
    and the dock showed 'AnnulusDetector(...) covers no pixel of the 2x2 detector' (a repr)."""
    kw = dict(detector_shape=(2, 2), center_px=(0.5, 0.5), bf_radius_px=0.5)
    for name in ("BF", "ABF"):
        with pytest.raises(DataShapeError, match=rf"the {name} preset .* covers none of them") as e:
            preset_detector(name, **kw)
        assert "Detector(" not in str(e.value)  # plain words, no repr
    with pytest.raises(DataShapeError, match="detector ends at 1.4 alpha"):
        preset_detector("HAADF", **kw)
    for name in ("LAADF", "ADF", "FULL"):  # 0.5 < 0.71 <= 1 px: all four pixels
        assert preset_detector(name, **kw).render((2, 2)).all()


def test_ring_covers_pixel_agrees_with_the_rendered_mask():
    """Known answer: the O(rows) check against the drawn mask on 20,000 random disks and annuli
    (centres inside and outside, radii below and around one pixel, whole-number radii on the
    pixel centres' distances)."""
    from napari_4dstem.analysis.virtual.detectors import farthest_pixel_px, ring_covers_pixel

    rng = np.random.default_rng(14)
    seen = {True: 0, False: 0}
    for _ in range(20000):
        shape = tuple(int(v) for v in rng.integers(1, 12, 2))
        centre = (rng.uniform(-3, shape[0] + 2), rng.uniform(-3, shape[1] + 2))
        if rng.random() < 0.3:
            centre = tuple(float(round(c * 2) / 2) for c in centre)
        outer = rng.uniform(0, 8)
        inner = rng.uniform(0, outer) if rng.random() < 0.6 else None
        if rng.random() < 0.2:
            outer = float(round(outer))
            inner = None if inner is None else float(round(inner))
        if inner is not None and inner >= outer:
            continue
        det = DiskDetector(centre, outer) if inner is None else AnnulusDetector(centre, inner, outer)
        want = bool(det._render(shape).any())
        assert ring_covers_pixel(shape, centre, inner, outer) == want, (shape, centre, inner, outer)
        seen[want] += 1
    assert min(seen.values()) > 2000  # both answers well represented
    d = np.hypot(*np.meshgrid(np.arange(5) - 1.2, np.arange(7) - 6.5, indexing="ij"))
    assert farthest_pixel_px((5, 7), (1.2, 6.5)) == pytest.approx(d.max())
