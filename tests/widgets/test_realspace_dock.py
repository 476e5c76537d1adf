"""One window (UX point 3): maps over the scan go to a second napari canvas in a "Real space"
dock of the main window, with its own scale bar in the scan's units, a crosshair that follows
the scan position, and clicks that move it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem.widgets._multiview import canvas_image, is_embedded, is_embedded_alive
from napari_4dstem.widgets._results import (
    REAL_SPACE_DOCK,
    SCAN_POSITION,
    move_scan_to_world,
    results_viewer,
)
from napari_4dstem.widgets.dpc import CalibrationDPCWidget

pytestmark = pytest.mark.gui


def test_maps_land_in_a_real_space_dock_of_the_same_window(make_napari_viewer, qtbot, stall_detector):
    main = make_napari_viewer(show=True)
    with stall_detector.excluded("first layer add"):
        main.open_sample("napari-4dstem", "strained_crystal")
    cube = main.layers["strained_crystal"]
    assert results_viewer(main, create=False) is None
    # through napari's plugin menu: each dock gets its own proxy of the viewer, one Real space dock
    _, w = main.window.add_plugin_dock_widget("napari-4dstem", "Calibration and DPC")
    _, b = main.window.add_plugin_dock_widget("napari-4dstem", "Bragg disks and strain")
    assert isinstance(w, CalibrationDPCWidget) and w.viewer is not main
    w.measure_btn.click()
    qtbot.waitUntil(lambda: w.origin_fit is not None and not w.jobs.busy, timeout=30000)
    rs = results_viewer(main, create=False)
    assert rs is not None and is_embedded(rs) and is_embedded_alive(rs)
    assert results_viewer(b.viewer) is rs and results_viewer(w.viewer) is rs
    assert REAL_SPACE_DOCK in main.window.dock_widgets  # the same window, not a second one
    names = [lyr.name for lyr in rs.layers]
    assert "origin k_y (measured)" in names and "origin k_x (fitted)" in names
    # the crosshair is added after the first map (next event-loop turn), on top, at the scan position
    qtbot.waitUntil(lambda: SCAN_POSITION in rs.layers, timeout=5000)
    assert rs.layers[-1].name == SCAN_POSITION
    np.testing.assert_allclose(rs.layers[SCAN_POSITION].data[0], main.dims.point[:2])
    # its own scale bar, in the scan's units (the main canvas shows the detector in 1/A)
    assert rs.canvas.overlays["scale_bar"].visible
    assert str(rs.layers["origin k_y (measured)"].units[0]) == str(cube.units[0])
    # a click on the real-space canvas moves the scan position; the crosshair follows
    world = (7 * cube.scale[0], 19 * cube.scale[1])
    move_scan_to_world(main, world)
    qtbot.waitUntil(lambda: np.allclose(rs.layers[SCAN_POSITION].data[0], world), timeout=5000)
    np.testing.assert_array_equal(np.asarray(cube._slice.image.raw), np.asarray(cube.data[7, 19]))
    # the canvas draws the map (not a black frame)
    with stall_detector.excluded("screenshot"):
        img = canvas_image(rs)
    assert img.ndim == 3 and img[..., :3].std() > 1.0
    # a closed dock is made again on the next map
    main.window.remove_dock_widget(main.window.dock_widgets[REAL_SPACE_DOCK])
    qtbot.waitUntil(lambda: not is_embedded_alive(rs), timeout=5000)
    rs2 = results_viewer(main)
    assert rs2 is not rs and is_embedded_alive(rs2)
