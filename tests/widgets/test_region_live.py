"""UX point 5: a real-space region's pattern follows a drag of its shape live when the region is
small, and only when the drag ends when it is large (napari's own select-mode drag, driven through
napari's mouse callbacks as napari's tests drive it)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _drag(layer, start, stop, n_moves=3):
    from napari.utils._test_utils import read_only_mouse_event
    from napari.utils.interactions import mouse_move_callbacks, mouse_press_callbacks, mouse_release_callbacks

    mouse_press_callbacks(layer, read_only_mouse_event(type="mouse_press", is_dragging=True, position=start))
    for t in np.linspace(0, 1, n_moves + 1):
        pos = tuple(np.asarray(start) + t * (np.asarray(stop) - np.asarray(start)))
        mouse_move_callbacks(layer, read_only_mouse_event(type="mouse_move", is_dragging=True, position=pos))
        yield pos
    mouse_release_callbacks(layer, read_only_mouse_event(type="mouse_release", is_dragging=True, position=stop))


@pytest.mark.parametrize("small", [True, False])
def test_region_pattern_follows_a_drag_when_small(make_napari_viewer, qtbot, stall_detector, monkeypatch, small):
    from napari_4dstem.widgets import _region
    from napari_4dstem.widgets._results import results_viewer

    if not small:
        monkeypatch.setattr(_region, "LIVE_MAX_BYTES", 1024)  # every region counts as large
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        viewer.open_sample("napari-4dstem", "strained_crystal")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None, timeout=30000)
    w.region_btn.click()
    qtbot.waitUntil(lambda: w.region._key is not None and not w.region.runner.busy, timeout=30000)
    layer = w.region.layer
    assert layer in results_viewer(viewer).layers
    layer.mode = "select"
    scale = np.asarray(layer.scale)
    centre = tuple(np.mean(layer.data[0], axis=0) * scale)  # world coordinates
    before = w.region.live_requests
    start_mask = w.region.mask()
    # a click selects the shape (as in napari's own drag test), then the drag moves it
    from napari.utils._test_utils import read_only_mouse_event
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    mouse_press_callbacks(layer, read_only_mouse_event(type="mouse_press", position=centre))
    mouse_release_callbacks(layer, read_only_mouse_event(type="mouse_release", position=centre))
    assert layer.selected_data == {0}
    moves = 0
    for _pos in _drag(layer, centre, tuple(np.asarray(centre) + np.array([3.0, 5.0]) * scale)):
        qtbot.wait(5)  # the coalescing timer fires in the event loop
        moves += 1
    if small:
        assert w.region.live_requests - before >= 2  # it followed the moves
    else:
        assert w.region.live_requests == before and "follows when the drag ends" in w.status.text()
    # after the release the pattern is the one of the moved region, exactly
    qtbot.waitUntil(lambda: not w.region.runner.busy, timeout=30000)
    mask = w.region.mask()
    qtbot.waitUntil(lambda: np.packbits(mask).tobytes() == w.region._key[0], timeout=30000)
    qtbot.waitUntil(lambda: not w.region.runner.busy, timeout=30000)
    with stall_detector.excluded("reference"):
        cube = np.asarray(viewer.layers["strained_crystal"].data)
        want = cube[mask].sum(axis=0)
    got = np.asarray(viewer.layers["region pattern"].data)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert f"over {int(mask.sum())} positions" in w.status.text()
    assert moves == 4 and not np.array_equal(mask, start_mask)  # the shape did move
