"""#15 (UX audit session 15, S8 a and c): a job's end added all its result maps on the GUI thread in
one event-loop turn (napari builds each layer's model, vispy visual and Qt controls there: 120-350 ms
of GUI CPU each in a shown window under load; a strain result's 6 maps froze the window 1-1.4 s),
and the DPC dock's first disk measurement built the "measured disk" Shapes layer on the GUI thread
(napari's TextManager deepcopy, the first mesh: 0.9 s GUI CPU). Now ``show_maps`` adds one new
layer per turn (updating existing ones in place) and the disk's layer is built in the worker."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
from napari.layers import Shapes
from qtpy.QtCore import QTimer

from napari_4dstem.data.calibration import Calibration
from napari_4dstem.widgets._results import maps_pending, results_viewer
from napari_4dstem.widgets.bragg import FIT_LAYER, REFERENCE_LAYER, STRAIN_CHANNELS
from napari_4dstem.widgets.dpc import DISK_LAYER

from .conftest import EventLoopTurns

pytestmark = pytest.mark.gui


def test_a_strain_result_adds_its_maps_one_per_turn_then_updates_them_in_place(
    make_napari_viewer, qtbot, strain_result, stall_detector
):
    main = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        main.open_sample("napari-4dstem", "strained_crystal")
    _, w = main.window.add_plugin_dock_widget("napari-4dstem", "Bragg disks and strain")
    rv = results_viewer(main)
    turns = EventLoopTurns(main, rv)
    maps = [*STRAIN_CHANNELS, "fit residual [px]"]
    added_in_the_call = []

    def on_done():  # what the dock does with the job's result, in an event-loop turn as a worker's signal
        n0 = len(rv.layers)
        w._on_strain(strain_result, None)
        added_in_the_call.append(len(rv.layers) - n0)

    with stall_detector.excluded("napari makes each layer's controls"):
        QTimer.singleShot(0, on_done)
        qtbot.waitUntil(lambda: bool(added_in_the_call) and not maps_pending(rv), timeout=60000)
    turns.timer.stop()
    # the old dock added the reference layer and the 5 maps inside this one call
    assert added_in_the_call == [1], added_in_the_call
    at = [k for v, lyr, k in turns.at if v is rv and lyr.name in (REFERENCE_LAYER, *maps)]
    assert len(at) == 6 and all(b > a for a, b in itertools.pairwise(at)), turns.at
    # the fitted lattice (main viewer) in a turn of its own, after the maps
    fit_at = [k for v, lyr, k in turns.at if v is main and lyr.name == FIT_LAYER]
    assert all(k > at[-1] for k in fit_at), turns.at
    # known answer: each map is its channel of the result, tagged, the reference layer on top
    strain = strain_result.strain
    for c in STRAIN_CHANNELS:
        np.testing.assert_array_equal(rv.layers[c].data, strain.channel(c))
        assert rv.layers[c].metadata["napari_4dstem"]["params"]["channel"] == c
    np.testing.assert_array_equal(rv.layers["fit residual [px]"].data, strain.confidence.channel("residual_px"))
    assert rv.layers[-1].name == REFERENCE_LAYER
    # a second result updates the same layers in place, all in the handler's turn
    before = {c: rv.layers[c] for c in maps}
    stall_detector.step()
    turns.at.clear()
    w._on_strain(strain_result, (0, 3, 0, 3))
    assert not maps_pending(rv) and not [lyr for v, lyr, k in turns.at if v is rv]
    assert all(rv.layers[c] is before[c] for c in maps)


def test_the_measured_disk_layer_is_built_in_the_worker(make_napari_viewer, qtbot, stall_detector):
    """napari's Shapes ``__init__`` for the measured disk runs in the job's worker; the GUI thread
    only adds the layer (known answer: the outline is the planted disk's circle)."""
    built_on = []
    orig = Shapes.__init__

    def spy(self, *a, **k):
        if k.get("name") == DISK_LAYER:
            built_on.append(threading.current_thread() is threading.main_thread())
        return orig(self, *a, **k)

    main = make_napari_viewer()
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:64, :64]
    disk = (np.hypot(yy - 31.0, xx - 33.0) <= 12.0) * 800.0 + 4.0
    cube = rng.poisson(np.broadcast_to(disk, (6, 8, 64, 64))).astype(np.float32)
    cal = Calibration()
    with stall_detector.excluded("first layer add"):
        main.add_image(cube, name="disks", metadata={"napari_4dstem": {"calibration": cal}}, **cal.napari_kwargs("4d"))
    _, w = main.window.add_plugin_dock_widget("napari-4dstem", "Calibration and DPC")
    Shapes.__init__ = spy
    try:
        w.measure_disk_btn.click()
        qtbot.waitUntil(lambda: w.disk is not None and w._worker is None and DISK_LAYER in main.layers, timeout=60000)
    finally:
        Shapes.__init__ = orig
    assert built_on == [False], built_on  # the old dock: [True] (add_shapes on the GUI thread)
    outline = main.layers[DISK_LAYER].data[0]
    cy, cx = w.disk.center_px
    np.testing.assert_allclose(np.hypot(outline[:, 0] - cy, outline[:, 1] - cx), w.disk.radius_px, atol=1e-4)
    assert w.disk.radius_px == pytest.approx(12.0, abs=0.6) and np.hypot(cy - 31.0, cx - 33.0) < 0.5
    assert tuple(main.layers[DISK_LAYER].scale) == tuple(cal.napari_kwargs("k")["scale"])
