"""PartialMaps: a job's maps so far shown at an adaptive 2-5 Hz, the newest one winning."""

import numpy as np
import pytest

from napari_4dstem import Calibration
from napari_4dstem.engine.jobs import PartialMap
from napari_4dstem.widgets._common import PartialMaps

pytestmark = pytest.mark.gui


def _map(k: int) -> PartialMap:
    done = np.zeros((4, 4), bool)
    done[:k] = True
    return PartialMap.of("counts", np.full((4, 4), float(k)), done)


def test_newest_map_wins_and_waits_for_the_interval(make_napari_viewer, qtbot, stall_detector):
    viewer = make_napari_viewer()
    cal = Calibration(scan_step=(2.0, 2.0), scan_units="nm")
    maps = PartialMaps(lambda: viewer).for_scan(cal)
    maps.begin()
    with stall_detector.excluded("first layer add"):
        maps.show(_map(1))  # the first is shown at once (napari builds the layer)
    lyr = viewer.layers["counts"]
    assert np.isfinite(lyr.data).sum() == 4 and lyr.contrast_limits == [1.0, 2.0]
    assert tuple(lyr.scale) == (2.0, 2.0) and MAPS_MIN <= maps.interval <= MAPS_MAX
    maps.show(_map(2))  # sooner than the interval: held
    maps.show(_map(3))  # replaces the held one
    assert [n for n, _, _ in maps.shown] == ["counts"]
    qtbot.waitUntil(lambda: len(maps.shown) == 2, timeout=5000)
    assert maps.shown[1][2] - maps.shown[0][2] >= MAPS_MIN - 0.01  # not before the interval
    assert [f for _, f, _ in maps.shown] == [0.25, 0.75]  # map 2 was never shown
    assert np.isfinite(lyr.data).sum() == 12 and np.nanmax(lyr.data) == 3.0
    # a cancelled job: the held map is shown when it stops
    maps.show(_map(4))
    maps.stop(show_pending=True)
    assert maps.shown[-1][1] == 1.0 and np.isfinite(lyr.data).all()
    # the final result reuses or hides the job's layers
    maps.hide()
    assert not lyr.visible


MAPS_MIN, MAPS_MAX = PartialMaps.MIN_S, PartialMaps.MAX_S
