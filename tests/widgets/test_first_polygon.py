"""#15: after the plugin's warm-up, a shape a user draws on a canvas compiles nothing on the GUI thread.

With a cold numba cache the first polygon drawn on the Real space canvas held the GUI thread 21-45 s
in numba's compiler (UX audit session 13, s15): the warm-up built Shapes of the docks' detectors
only, while the mouse-drawn outline reaches other signatures of napari's kernels. numba compiles per
signature: a signature already in a dispatcher's list (compiled or loaded from the cache in this
process) is never compiled again, so the check below is exact whatever the cache holds.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _signatures() -> dict[str, set[str]]:
    import numba
    from napari.layers.shapes import _accelerated_triangulate_numba as tri

    return {
        name: {str(s) for s in f.signatures}
        for name, f in vars(tri).items()
        if isinstance(f, numba.core.registry.CPUDispatcher)
    }


def _user_draws(layer, qtbot) -> None:
    """Polygon and path by clicks and a double click, the others by a drag, as napari's mouse sees them."""
    from napari.utils._test_utils import read_only_mouse_event as ev
    from napari.utils.interactions import (
        mouse_double_click_callbacks,
        mouse_move_callbacks,
        mouse_press_callbacks,
        mouse_release_callbacks,
    )

    def at(kind, yx, **k):
        return ev(type=kind, position=yx, pos=np.array(yx, float), **k)

    for mode, pts in (
        ("add_polygon", [(20, 4), (28, 6), (26, 14), (20, 12)]),
        ("add_path", [(2, 2), (6, 9), (3, 15)]),
    ):
        layer.mode = mode
        for yx in pts:
            mouse_move_callbacks(layer, at("mouse_move", yx))
            mouse_press_callbacks(layer, at("mouse_press", yx))
            mouse_release_callbacks(layer, at("mouse_release", yx))
            qtbot.wait(5)
        mouse_double_click_callbacks(layer, at("mouse_double_click", pts[-1]))
        qtbot.wait(20)
    for mode, (a, b) in (
        ("add_ellipse", ((10, 20), (16, 28))),
        ("add_rectangle", ((30, 30), (36, 38))),
        ("add_line", ((40, 2), (44, 12))),
    ):
        layer.mode = mode
        mouse_move_callbacks(layer, at("mouse_move", a))
        mouse_press_callbacks(layer, at("mouse_press", a))
        mouse_move_callbacks(layer, at("mouse_move", b, is_dragging=True))
        mouse_release_callbacks(layer, at("mouse_release", b))
        qtbot.wait(20)
    layer.mode = "select"


def test_a_user_drawn_shape_compiles_nothing_after_the_warm_up(make_napari_viewer, qtbot, stall_detector):
    from napari_4dstem.widgets import _warmup

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((48, 48), np.float32), scale=(0.5, 0.25), name="scan")
    # the warm-up's napari Shapes step, in a thread as the plugin runs it
    done = threading.Event()
    t = threading.Thread(target=lambda: (_warmup._napari_shapes(None), done.set()), daemon=True)
    t.start()
    qtbot.waitUntil(done.is_set, timeout=600_000)
    before = _signatures()
    with stall_detector.excluded("napari makes the layer's controls"):
        layer = viewer.add_shapes(ndim=2, scale=(0.5, 0.25), name="region", edge_width=0.5, face_color="transparent")
    _user_draws(layer, qtbot)
    assert list(layer.shape_type) == ["polygon", "path", "ellipse", "rectangle", "line"]
    after = _signatures()
    new = {k: sorted(v - before.get(k, set())) for k, v in after.items() if v - before.get(k, set())}
    assert not new, f"drawing compiled on the GUI thread: {new}"
