"""The plugin API: DetectorInfo, per-viewer signals and per-plugin settings."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem.analysis.virtual.detectors import (
    AnnulusDetector,
    DiskDetector,
    MaskDetector,
    RectangleDetector,
)
from napari_4dstem.plugin_api import (
    DetectorInfo,
    events,
    plugin_settings,
    publish_virtual_image,
    set_layer_calibration,
)

pytestmark = pytest.mark.gui


@pytest.mark.parametrize(
    "det",
    [DiskDetector((10.5, 12.0), 4.0), AnnulusDetector((10.0, 11.0), 3.0, 8.5), RectangleDetector((2, 9), (3, 7))],
)
def test_detector_info_round_trip(det):
    info = DetectorInfo.from_detector(det)
    assert info.kind == det.kind
    back = info.to_detector()
    np.testing.assert_array_equal(back.render((24, 24)), det.render((24, 24)))
    m = DetectorInfo.from_detector(MaskDetector(np.eye(5, dtype=bool)))
    assert m.kind == "mask" and len(m.mask_sha1) == 40


def test_signals_follow_the_viewer_and_the_docks(make_napari_viewer, qtbot, stall_detector):
    viewer = make_napari_viewer()
    ev = events(viewer)
    assert events(viewer) is ev
    seen = {"pattern": [], "cube": [], "cal": [], "vi": [], "result": []}
    ev.pattern_changed.connect(lambda iy, ix: seen["pattern"].append((iy, ix)))
    ev.datacube_changed.connect(lambda name: seen["cube"].append(name))
    ev.calibration_changed.connect(lambda name, cal: seen["cal"].append((name, cal)))
    ev.virtual_image_changed.connect(lambda name, info: seen["vi"].append((name, info)))
    ev.result_added.connect(lambda name: seen["result"].append(name))
    with stall_detector.excluded("first layer add"):
        (cube,) = [lyr for lyr in viewer.open_sample("napari-4dstem", "strained_crystal") if lyr.ndim == 4]
    assert seen["cube"] == ["strained_crystal"]
    viewer.dims.set_point(0, 3 * cube.scale[0])
    viewer.dims.set_point(1, 7 * cube.scale[1])
    assert seen["pattern"][-1] == (3, 7)
    cal = cube.metadata["napari_4dstem"]["calibration"].replace(origin_px=(63.0, 64.0))
    set_layer_calibration(viewer, cube, cal)
    assert seen["cal"] == [("strained_crystal", cal)] and cube.metadata["napari_4dstem"]["calibration"] == cal
    publish_virtual_image(viewer, "BF", DiskDetector((64.0, 64.0), 8.0))
    assert seen["vi"][0][1] == DetectorInfo("disk", center_px=(64.0, 64.0), radius_px=8.0)

    from napari_4dstem.pipelines import Recipe
    from napari_4dstem.pipelines.recipe import InputRef
    from napari_4dstem.widgets.results_list import session_results

    class _Result:
        recipe = Recipe("disks", InputRef(None), {})

    session_results(viewer).add(_Result(), "mine")
    assert seen["result"] == ["mine"]


def test_plugin_settings_are_kept_per_plugin(tmp_path):
    a = plugin_settings("plugin-a", folder=tmp_path)
    a["threshold"] = 0.5
    a.save()
    b = plugin_settings("plugin-b", folder=tmp_path)
    b["threshold"] = 2
    b.save()
    assert plugin_settings("plugin-a", folder=tmp_path)["threshold"] == 0.5
    assert plugin_settings("plugin-b", folder=tmp_path)["threshold"] == 2
