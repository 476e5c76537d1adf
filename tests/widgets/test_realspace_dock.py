"""One window (UX point 3): maps over the scan go to a second napari canvas in a "Real space"
dock of the main window, with its own scale bar in the scan's units, a crosshair that follows
the scan position, and clicks that move it."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt

from napari_4dstem.widgets._multiview import (
    canvas_image,
    crosshair_position,
    is_embedded,
    is_embedded_alive,
    world_to_canvas,
)
from napari_4dstem.widgets._results import (
    REAL_SPACE_DOCK,
    maps_pending,
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
    # the maps come one new layer per event-loop turn (show_maps)
    qtbot.waitUntil(lambda: w.origin_fit is not None and not w.jobs.busy and not maps_pending(), timeout=30000)
    rs = results_viewer(main, create=False)
    assert rs is not None and is_embedded(rs) and is_embedded_alive(rs)
    assert results_viewer(b.viewer) is rs and results_viewer(w.viewer) is rs
    assert REAL_SPACE_DOCK in main.window.dock_widgets  # the same window, not a second one
    names = [lyr.name for lyr in rs.layers]
    assert "origin k_y (measured)" in names and "origin k_x (fitted)" in names
    # the crosshair is shown with the first map, at the scan position (a visual of the canvas,
    # over the maps, not a layer)
    qtbot.waitUntil(lambda: crosshair_position(rs) is not None, timeout=5000)
    np.testing.assert_allclose(crosshair_position(rs), main.dims.point[:2])
    # its own scale bar, in the scan's units (the main canvas shows the detector in 1/A)
    assert rs.canvas.overlays["scale_bar"].visible
    assert str(rs.layers["origin k_y (measured)"].units[0]) == str(cube.units[0])
    # a click on the real-space canvas moves the scan position; the crosshair follows
    world = (7 * cube.scale[0], 19 * cube.scale[1])
    move_scan_to_world(main, world)
    assert crosshair_position(rs) == pytest.approx(world)  # moved in the same event-loop turn
    np.testing.assert_array_equal(np.asarray(cube._slice.image.raw), np.asarray(cube.data[7, 19]))
    # the canvas draws the map (not a black frame) and the red cross centred on the scan pixel
    # (one in the view: the camera's centre)
    for name in names:
        rs.layers[name].colormap = "gray"  # no red in the maps
    cy, cx = rs.scene.camera.center[-2:]
    world = (round(cy / cube.scale[0]) * cube.scale[0], round(cx / cube.scale[1]) * cube.scale[1])
    move_scan_to_world(main, world)
    qtbot.wait(50)
    with stall_detector.excluded("screenshot"):
        img = canvas_image(rs)
    assert img.ndim == 3 and img[..., :3].std() > 1.0
    red = (img[..., 0] > 200) & (img[..., 1] < 80) & (img[..., 2] < 80)
    ys, xs = np.nonzero(red)
    cx, cy = world_to_canvas(rs, world)
    assert red.sum() > 8
    assert abs(xs.mean() - cx) < 1.5 and abs(ys.mean() - cy) < 1.5, (xs.mean(), ys.mean(), cx, cy)
    # a closed dock is made again on the next map
    main.window.remove_dock_widget(main.window.dock_widgets[REAL_SPACE_DOCK])
    qtbot.waitUntil(lambda: not is_embedded_alive(rs), timeout=5000)
    rs2 = results_viewer(main)
    assert rs2 is not rs and is_embedded_alive(rs2)


def test_a_drag_on_real_space_moves_the_scan_not_the_camera(make_napari_viewer, qtbot):
    """A plain drag on the Real space canvas moves the scan position at every move and leaves
    the camera where it is (napari's pan-zoom mode pans on any drag); a Shapes layer in an
    editing mode keeps plain clicks, Shift + click jumps anyway; Ctrl + drag pans the camera and
    leaves the scan alone."""
    from napari_4dstem.widgets._multiview import make_embedded, send_mouse
    from napari_4dstem.widgets._results import set_results_viewer

    main = make_napari_viewer(show=True)
    main.add_image(np.zeros((20, 20, 8, 8), np.float32))
    model, widget = make_embedded(main, "real space test")
    main.window.add_dock_widget(widget, name="real space test")
    model.add_image(np.arange(400, dtype=np.float32).reshape(20, 20))
    set_results_viewer(main, model)
    qtbot.wait(100)  # the canvas drawn at its size
    center = tuple(model.scene.camera.center)
    send_mouse(model, "press", (10, 10))
    for k in range(1, 4):
        send_mouse(model, "move", (10 + 2 * k, 10 - k))
        qtbot.waitUntil(lambda k=k: tuple(main.dims.current_step[:2]) == (10 + 2 * k, 10 - k), timeout=2000)
        qtbot.wait(20)
    send_mouse(model, "release", (16, 7))
    assert tuple(model.scene.camera.center) == pytest.approx(center)
    assert model.scene.camera.mouse_pan  # given back on release
    # a Shapes layer being edited keeps plain clicks; Shift + click still jumps
    shapes = model.add_shapes(name="region being drawn")
    shapes.mode = "add_rectangle"
    send_mouse(model, "press", (3, 4))
    send_mouse(model, "release", (3, 4))
    assert tuple(main.dims.current_step[:2]) == (16, 7)
    shift = ("Shift",)
    send_mouse(model, "press", (3.4, 4.4), modifiers=shift)
    send_mouse(model, "release", (3.4, 4.4), modifiers=shift)
    assert tuple(main.dims.current_step[:2]) == (3, 4)
    model.layers.remove(shapes)
    send_mouse(model, "press", (16, 7))
    send_mouse(model, "release", (16, 7))
    ctrl = ("Control",)
    send_mouse(model, "press", (10, 10), modifiers=ctrl)
    for k in range(1, 4):
        send_mouse(model, "move", (10 + 2 * k, 10 + 2 * k), modifiers=ctrl)
        qtbot.wait(20)
    send_mouse(model, "release", (16, 16), modifiers=ctrl)
    assert tuple(main.dims.current_step[:2]) == (16, 7)
    cy, cx = model.scene.camera.center[-2:]
    assert cy < center[-2] - 1 and cx < center[-1] - 1  # dragged down-right: the view follows the mouse


def test_the_scan_cross_is_drawn_by_qt_over_the_canvas_and_follows_pan_and_zoom(make_napari_viewer, qtbot):
    """UX point 4: the scan-position cross is a Qt overlay over the Real space canvas, so a scan
    step does not draw that canvas again; it lets every mouse event through to the canvas, and
    after a zoom (at once), a pan and a resize of the dock it is still centred on the scan pixel:
    the red pixels of the canvas as shown are centred, within a pixel, on the one bright pixel
    of the image (the scan pixel as napari draws it, not as the cross's own transform maps it)."""
    from napari_4dstem.widgets._multiview import _QT, draw_events, make_embedded
    from napari_4dstem.widgets._results import set_results_viewer

    main = make_napari_viewer(show=True)
    main.add_image(np.zeros((40, 40, 8, 8), np.float32))
    model, widget = make_embedded(main, "real space test")
    main.window.add_dock_widget(widget, name="real space test")
    bright = np.zeros((40, 40), np.float32)
    bright[21, 17] = 1.0  # the scan pixel the cross ends on: white, the rest black (no red)
    model.add_image(bright, colormap="gray", contrast_limits=(0.0, 1.0))
    set_results_viewer(main, model)
    qtbot.wait(100)
    native = widget.qt_viewer.canvas.native

    def red_centre_offset(world, painted=None):
        """How far the cross's red pixels are centred from the bright pixel's (the cross lies on
        it symmetrically: the white left uncovered keeps its centre). ``painted``: the cross's
        centre as it was painted before this grab (which draws the canvas again) instead."""
        assert tuple(world) == (21, 17)
        img = canvas_image(model)
        red = (img[..., 0] > 200) & (img[..., 1] < 80) & (img[..., 2] < 80)
        white = (img[..., :3] > 200).all(axis=-1)
        ys, xs = np.nonzero(red)
        box = np.zeros_like(white)
        box[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
        white &= box  # within the cross's reach (the scale bar is white too)
        assert red.sum() > 8 and white.sum() > 4, (red.sum(), white.sum())
        wy, wx = np.nonzero(white)
        cx, cy = (xs.mean(), ys.mean()) if painted is None else painted
        return abs(cx - wx.mean()), abs(cy - wy.mean())

    def painted_centre():
        (x0, _, x1, _), (_, y0, _, y1) = cross._ends
        return (x0 + x1) / 2, (y0 + y1) / 2

    main.dims.set_point((0, 1), (20, 20))  # the cross made and shown, the canvas settled
    qtbot.wait(300)
    draws = []
    draw_events(model).connect(lambda e: draws.append(1))
    for iy, ix in ((18, 23), (22, 19), (21, 17)):
        main.dims.set_point((0, 1), (iy, ix))
        qtbot.wait(30)
        assert crosshair_position(model) == pytest.approx((iy, ix))
    assert draws == []  # three scan steps, the canvas not drawn once
    cross = _QT[model]().crosshair
    assert cross.geometry() == native.geometry()  # exactly over the canvas
    # the mouse goes through it: Qt finds the canvas under the cross's centre
    cx, cy = world_to_canvas(model, (21, 17))
    at = native.parentWidget().childAt(native.geometry().topLeft() + QPoint(round(cx), round(cy)))
    assert at is native
    assert max(red_centre_offset((21, 17))) < 1.0
    # zoom and pan: the cross stays on the scan pixel (moved with the camera, no event-loop turn)
    model.scene.camera.zoom *= 2
    assert max(red_centre_offset((21, 17), painted_centre())) < 1.0
    model.scene.camera.center = (0, 22, 18)
    qtbot.wait(50)
    assert max(red_centre_offset((21, 17))) < 1.0
    # the canvas resized (the dock's splitter moved): the overlay follows the canvas, the cross
    # its pixel
    from qtpy.QtWidgets import QSplitter

    split = next(sp for sp in widget.findChildren(QSplitter) if sp.orientation() == Qt.Orientation.Vertical)
    top, bottom = split.sizes()
    height = native.height()
    split.setSizes([top - 60, bottom + 60])
    qtbot.waitUntil(lambda: native.height() < height and cross.geometry() == native.geometry(), timeout=2000)
    qtbot.wait(50)
    assert max(red_centre_offset((21, 17))) < 1.0


def test_replace_shapes_updates_the_dims_only_when_the_ranges_change(make_napari_viewer, monkeypatch):
    """The adapter's ``replace_shapes`` (a preset switch's outline) recomputes the viewer's dims
    only when the layers' ranges changed, and then to exactly what napari's own ``Shapes.data``
    setter gives."""
    from napari.components.viewer_model import ViewerModel

    from napari_4dstem.widgets._multiview import replace_shapes

    def disk(r, c=(64.0, 64.0)):
        return [
            (
                np.array([[c[0] - r, c[1] - r], [c[0] - r, c[1] + r], [c[0] + r, c[1] + r], [c[0] + r, c[1] - r]]),
                "ellipse",
            )
        ]

    viewers = [make_napari_viewer() for _ in range(2)]
    layers = []
    for v in viewers:
        v.add_image(np.zeros((4, 5, 128, 128), np.uint16), scale=(2.0, 2.0, 0.1, 0.1))
        layers.append(v.add_shapes(disk(10.0), scale=(0.1, 0.1)))
    ours, theirs = viewers
    calls = []
    on_change = ViewerModel._on_layers_change

    def counted(self):
        if self is ours:
            calls.append(1)
        return on_change(self)

    monkeypatch.setattr(ViewerModel, "_on_layers_change", counted)
    for data in (disk(20.0), disk(50.0), disk(90.0), disk(30.0, (150.0, -20.0)), disk(5.0)):
        before = tuple(ours.dims.range)
        n = len(calls)
        replace_shapes(ours, layers[0], data)
        layers[1].data = data  # napari's own setter
        assert tuple(ours.dims.range) == tuple(theirs.dims.range)
        assert len(calls) - n == (tuple(ours.dims.range) != before)
    assert len(calls) >= 2  # outlines beyond the pattern (and back) did change the ranges


def test_the_vispy_cross_fallback_marks_the_scan_pixel(make_napari_viewer, qtbot, monkeypatch):
    """Where napari's canvas is not laid out as the Qt cross expects, the cross is a vispy visual
    of the canvas (``CROSSHAIR = "gl"`` takes that path): it follows the scan, drawn red on the
    scan pixel's centre, the canvas drawn again for it."""
    from napari_4dstem.widgets import _multiview
    from napari_4dstem.widgets._multiview import draw_events, make_embedded
    from napari_4dstem.widgets._results import set_results_viewer

    monkeypatch.setattr(_multiview, "CROSSHAIR", "gl")
    main = make_napari_viewer(show=True)
    main.add_image(np.zeros((40, 40, 8, 8), np.float32))
    model, widget = make_embedded(main, "real space test")
    main.window.add_dock_widget(widget, name="real space test")
    model.add_image(np.tile(np.linspace(0, 1, 40, dtype=np.float32), (40, 1)), colormap="gray")
    set_results_viewer(main, model)
    main.dims.set_point((0, 1), (20, 20))
    qtbot.wait(300)
    assert not isinstance(widget.crosshair, _multiview._CrossOverlay)
    draws = []
    draw_events(model).connect(lambda e: draws.append(1))
    main.dims.set_point((0, 1), (19, 22))
    qtbot.waitUntil(lambda: len(draws) >= 1, timeout=2000)
    assert crosshair_position(model) == pytest.approx((19, 22))
    img = canvas_image(model)
    red = (img[..., 0] > 200) & (img[..., 1] < 80) & (img[..., 2] < 80)
    ys, xs = np.nonzero(red)
    cx, cy = world_to_canvas(model, (19, 22))
    assert red.sum() > 8 and abs(xs.mean() - cx) < 1.5 and abs(ys.mean() - cy) < 1.5


def test_a_canvas_laid_out_otherwise_leaves_no_half_built_qt_cross(make_napari_viewer, qtbot, monkeypatch):
    """Where napari's private canvas attributes are missing (AttributeError), the Qt cross is not
    made at all (nothing shown over the canvas, nothing connected) and the vispy cross marks the
    scan pixel instead."""
    from napari_4dstem.widgets import _multiview
    from napari_4dstem.widgets._multiview import make_embedded
    from napari_4dstem.widgets._results import set_results_viewer

    def missing(canvas):
        raise AttributeError("'VispyCanvas' object has no attribute '_scene_canvas'")

    monkeypatch.setattr(_multiview, "_draw_event", missing)
    main = make_napari_viewer(show=True)
    main.add_image(np.zeros((40, 40, 8, 8), np.float32))
    model, widget = make_embedded(main, "real space test")
    main.window.add_dock_widget(widget, name="real space test")
    model.add_image(np.tile(np.linspace(0, 1, 40, dtype=np.float32), (40, 1)), colormap="gray")
    set_results_viewer(main, model)
    main.dims.set_point((0, 1), (19, 22))
    qtbot.wait(300)
    assert widget.crosshair is not None and not isinstance(widget.crosshair, _multiview._CrossOverlay)
    native = widget.qt_viewer.canvas.native
    assert not [c for c in native.parentWidget().findChildren(_multiview._CrossOverlay)]
    assert crosshair_position(model) == pytest.approx((19, 22))
    img = canvas_image(model)
    red = (img[..., 0] > 200) & (img[..., 1] < 80) & (img[..., 2] < 80)
    ys, xs = np.nonzero(red)
    cx, cy = world_to_canvas(model, (19, 22))
    assert red.sum() > 8 and abs(xs.mean() - cx) < 1.5 and abs(ys.mean() - cy) < 1.5


def test_the_qt_cross_hides_with_its_canvas(make_napari_viewer, qtbot):
    """The Qt cross is a sibling of the canvas: hidden when the canvas is, shown again with it."""
    from napari_4dstem.widgets._multiview import _QT, _CrossOverlay, make_embedded
    from napari_4dstem.widgets._results import set_results_viewer

    main = make_napari_viewer(show=True)
    main.add_image(np.zeros((40, 40, 8, 8), np.float32))
    model, widget = make_embedded(main, "real space test")
    main.window.add_dock_widget(widget, name="real space test")
    model.add_image(np.zeros((40, 40), np.float32))
    set_results_viewer(main, model)
    main.dims.set_point((0, 1), (19, 22))
    qtbot.wait(100)
    cross = _QT[model]().crosshair
    assert isinstance(cross, _CrossOverlay) and cross.isVisible()
    native = widget.qt_viewer.canvas.native
    native.hide()
    assert not cross.isVisible()
    native.show()
    assert cross.isVisible() and cross.geometry() == native.geometry()


def test_the_layer_names_are_readable_at_the_real_space_docks_minimum_width(make_napari_viewer, qtbot, stall_detector):
    """#15: at the Real space dock's narrowest (420 px) its layer list shows whole rows and the
    dock's layer names whole: napari's rows are 200 px wide at least, and the 140 px list cut
    them ("virtual ima", behind a sideways scroll bar)."""
    from qtpy.QtWidgets import QStyle, QStyleOptionViewItem

    from napari_4dstem.data.calibration import Calibration
    from napari_4dstem.widgets._multiview import _QT, EMBEDDED_MIN_WIDTH_PX
    from napari_4dstem.widgets._results import show_map

    main = make_napari_viewer(show=True)
    rs = results_viewer(main)
    names = ("virtual image", "sum image", "virtual: detector 1")
    with stall_detector.excluded("first layer add"):
        for name in names:
            show_map(rs, name, np.zeros((8, 8), np.float32), Calibration())
    widget = _QT[rs]()
    dock = main.window.dock_widgets[REAL_SPACE_DOCK].parentWidget()
    qw = main.window._qt_window
    qw.resizeDocks([dock], [EMBEDDED_MIN_WIDTH_PX], Qt.Orientation.Horizontal)
    qtbot.waitUntil(lambda: widget.width() == EMBEDDED_MIN_WIDTH_PX, timeout=5000)
    qtbot.wait(50)
    view = widget.qt_viewer.layers
    assert view.horizontalScrollBar().maximum() == 0  # whole rows: nothing behind a scroll bar
    fm, model, delegate = view.fontMetrics(), view.model(), view.itemDelegate()
    shown = {}
    for r in range(model.rowCount()):
        idx = model.index(r, 0)
        opt = QStyleOptionViewItem()
        opt.rect = view.visualRect(idx)
        delegate.initStyleOption(opt, idx)
        delegate.get_layer_icon(opt, idx)  # the type icon on the right, as napari paints the row
        text = view.style().subElementRect(QStyle.SubElement.SE_ItemViewItemText, opt, view)
        seen = text.intersected(view.viewport().rect()).width()  # the name's room in view
        name = idx.data(Qt.ItemDataRole.DisplayRole)
        shown[name] = fm.elidedText(name, Qt.TextElideMode.ElideMiddle, seen)
    assert shown == {name: name for name in names}, shown


def _shown_extent(rs):
    """The world rectangle ``((y0, y1), (x0, x1))`` the Real space canvas shows."""
    h, w = rs.canvas.size
    cam = rs.scene.camera
    zoom, (cy, cx) = cam.zoom, cam.center[-2:]
    return (cy - h / 2 / zoom, cy + h / 2 / zoom), (cx - w / 2 / zoom, cx + w / 2 / zoom)


def _scan_extent(layer):
    """The world rectangle an image layer's pixels cover (pixel edges, not centres)."""
    n = layer.data.shape[-2:]
    s, t = np.asarray(layer.scale[-2:]), np.asarray(layer.translate[-2:])
    return [((-0.5) * s[i] + t[i], (n[i] - 0.5) * s[i] + t[i]) for i in range(2)]


def test_the_real_space_canvas_shows_the_whole_scan_once_the_dock_has_its_width(
    make_napari_viewer, qtbot, stall_detector
):
    """UX audit (#15): the Real space camera was fitted when its first layer came, before the dock
    got its final width (about 420 px), so a square 32 x 32 scan showed about 23.5 of its 32
    columns. The camera is fitted again while the canvas settles, until the user moves it; a
    user's zoom is never overridden."""
    main = make_napari_viewer(show=True)
    main.window._qt_window.resize(1920, 1080)
    with stall_detector.excluded("first layer add"):
        main.open_sample("napari-4dstem", "strained_crystal")
    _, v = main.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    qtbot.waitUntil(lambda: v.last_image is not None and v._worker is None, timeout=60000)
    rs = results_viewer(main, create=False)
    layer = rs.layers["virtual image"]
    assert layer.data.shape[-2:] == (32, 32)

    def whole_scan_shown():
        (y0, y1), (x0, x1) = _shown_extent(rs)
        (sy0, sy1), (sx0, sx1) = _scan_extent(layer)
        return y0 <= sy0 and y1 >= sy1 and x0 <= sx0 and x1 >= sx1

    qtbot.wait(300)  # the docks' layout settles
    assert whole_scan_shown(), (_shown_extent(rs), _scan_extent(layer), rs.canvas.size)
    # a user's zoom stays through a resize of the canvas
    stall_detector.step()
    rs.scene.camera.zoom *= 3
    zoom, center = rs.scene.camera.zoom, tuple(rs.scene.camera.center)
    qw, dock = main.window._qt_window, main.window.dock_widgets[REAL_SPACE_DOCK].parentWidget()
    size = rs.canvas.size
    qw.resizeDocks([dock], [dock.width() + 150], Qt.Orientation.Horizontal)
    qtbot.waitUntil(lambda: rs.canvas.size != size, timeout=5000)
    qtbot.wait(100)
    assert rs.scene.camera.zoom == zoom and tuple(rs.scene.camera.center) == center
    # napari's home (reset view) fits it again, and later resizes keep it fitted
    rs.reset_view()
    size = rs.canvas.size
    qw.resizeDocks([dock], [dock.width() - 150], Qt.Orientation.Horizontal)
    qtbot.waitUntil(lambda: rs.canvas.size != size, timeout=5000)
    qtbot.wait(100)
    assert whole_scan_shown(), (_shown_extent(rs), rs.canvas.size)
