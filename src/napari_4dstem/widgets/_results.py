"""The real-space viewer for results, linked to the main (diffraction) viewer.

The main viewer shows the 4D layer with the detector plane on its canvas; a 2D scan map added
there would be drawn over the pattern with the wrong scale. So maps over the scan (origin, COM,
DPC, strain...) go to a "real space" viewer with its own canvas, camera, scale bar and units: a
second napari canvas in a "Real space" dock of the same window (``_multiview``, the one adapter
over napari internals). A click or drag there moves the scan position of the main viewer, and a
crosshair there follows it.
"""

from __future__ import annotations

import weakref

import numpy as np

from ..data.calibration import Calibration

_VIEWERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
REAL_SPACE_DOCK = "Real space"
SCAN_POSITION = "scan position"


def results_viewer(main_viewer, *, create: bool = True):
    """The real-space viewer linked to ``main_viewer``: made on first use as a second napari
    canvas in a "Real space" dock of the main window (a separate napari window when the main
    viewer has none). One per main viewer, whichever dock asks (napari hands each plugin dock
    its own proxy of the viewer)."""
    main_viewer = getattr(main_viewer, "__wrapped__", main_viewer)
    v = _VIEWERS.get(main_viewer)
    if v is not None:
        from ._multiview import is_embedded, is_embedded_alive, show_embedded

        # napari keeps open viewers in the class registry `Viewer.close_all` uses; an embedded
        # one lives as long as its dock (hidden: shown again when a map comes)
        if is_embedded(v):
            if is_embedded_alive(v):
                if create:
                    show_embedded(v)
                return v
        elif v in getattr(type(v), "_instances", {v}):
            return v
        _VIEWERS.pop(main_viewer, None)
    if not create:
        return None
    window = getattr(main_viewer, "window", None)
    if window is not None and getattr(window, "_qt_window", None) is not None:
        from ._multiview import embed_viewer

        v = embed_viewer(main_viewer, REAL_SPACE_DOCK)
    else:
        import napari

        v = napari.Viewer(title="napari-4dstem: real space")
    set_results_viewer(main_viewer, v)
    return v


def set_results_viewer(main_viewer, viewer) -> None:
    """Use ``viewer`` as the real-space viewer of ``main_viewer`` and link scan positions."""
    main_viewer = getattr(main_viewer, "__wrapped__", main_viewer)
    _VIEWERS[main_viewer] = viewer
    main_ref = weakref.ref(main_viewer)

    def on_click(v, event):
        main = main_ref()
        if main is None or event.button != 1:
            return
        move_scan_to_world(main, event.position[-2:])
        yield
        while event.type == "mouse_move":
            move_scan_to_world(main, event.position[-2:])
            yield

    viewer.mouse_drag_callbacks.append(on_click)
    _follow_scan(main_viewer, viewer)


def _follow_scan(main_viewer, viewer) -> None:
    """A crosshair (Points layer ``SCAN_POSITION``) on the real-space viewer at the main viewer's
    scan position, kept on top of the maps; added with the first map."""
    main_ref, view_ref = weakref.ref(main_viewer), weakref.ref(viewer)

    pending = [False]

    def request(event=None):
        # one update per event-loop turn: a drag moves the scan many times between two redraws
        if not pending[0]:
            from qtpy.QtCore import QTimer

            pending[0] = True
            QTimer.singleShot(0, update)

    def update():
        pending[0] = False
        main, v = main_ref(), view_ref()
        if main is None or v is None or main.dims.ndim < 4:
            return
        pos = np.array([[float(main.dims.point[0]), float(main.dims.point[1])]])
        if SCAN_POSITION in v.layers:
            v.layers[SCAN_POSITION].data = pos
            return
        maps = [lyr for lyr in v.layers if lyr.ndim == 2]
        if not maps:
            return
        step = float(min(maps[0].scale[-2:]))
        v.add_points(pos, name=SCAN_POSITION, symbol="cross", size=3 * step, face_color="red",
                     border_color="red", units=maps[0].units)

    def on_top(event=None):
        v = view_ref()
        if v is None:
            return
        if SCAN_POSITION not in v.layers:
            request()  # next turn: not inside the layer list's own insert event
            return
        i = v.layers.index(v.layers[SCAN_POSITION])
        if i != len(v.layers) - 1:
            v.layers.move(i, len(v.layers) - 1)

    main_viewer.dims.events.current_step.connect(request)
    viewer.layers.events.inserted.connect(on_top)


def move_scan_to_world(main_viewer, yx_world) -> None:
    """Set the main viewer's scan position (its first two dims) to world point ``(y, x)``."""
    if main_viewer.dims.ndim < 4:
        return
    main_viewer.dims.set_point(0, float(yx_world[0]))
    main_viewer.dims.set_point(1, float(yx_world[1]))


def show_map(viewer, name: str, data: np.ndarray, cal: Calibration, **kwargs):
    """Add a 2D (or RGB) scan map to ``viewer``, or replace the data of the layer of that name."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data = data
        if "contrast_limits" in kwargs and not getattr(layer, "rgb", False):
            layer.contrast_limits = kwargs["contrast_limits"]
        return layer
    return viewer.add_image(data, name=name, **cal.napari_kwargs("scan"), **kwargs)


def show_vectors(viewer, name: str, v_y: np.ndarray, v_x: np.ndarray, cal: Calibration,
                 *, max_arrows: int = 16, length: float | None = None):
    """Arrows of a vector field over the scan, subsampled to at most ``max_arrows`` per side
    (16: napari rebuilds the arrows' mesh on the GUI thread at each update: 8.6 ms CPU for 16x16,
    23 ms for 32x32 offscreen here, and up to 60 ms in a shown viewer under load)."""
    ny, nx = v_y.shape
    step = max(1, int(np.ceil(max(ny, nx) / max_arrows)))
    yy, xx = np.mgrid[0:ny:step, 0:nx:step]
    vy, vx = v_y[::step, ::step], v_x[::step, ::step]
    mag = np.hypot(vy, vx)
    scale = length if length is not None else 0.8 * step / max(np.nanpercentile(mag, 99), 1e-12)
    vec = np.zeros((yy.size, 2, 2))
    vec[:, 0, 0], vec[:, 0, 1] = yy.ravel(), xx.ravel()
    vec[:, 1, 0], vec[:, 1, 1] = (vy * scale).ravel(), (vx * scale).ravel()
    vec = np.nan_to_num(vec)
    if name in viewer.layers:
        viewer.layers[name].data = vec
        return viewer.layers[name]
    return viewer.add_vectors(vec, name=name, edge_color="yellow", edge_width=0.15 * step,
                              **cal.napari_kwargs("scan"))


def color_wheel(v_y: np.ndarray, v_x: np.ndarray) -> np.ndarray:
    """RGB image of a vector field: hue = direction, value = magnitude (99th percentile = 1)."""
    from matplotlib.colors import hsv_to_rgb

    ang = np.arctan2(v_y, v_x)
    mag = np.hypot(v_y, v_x)
    top = np.nanpercentile(mag, 99) if np.any(np.isfinite(mag)) else 1.0
    hsv = np.stack(
        [(ang / (2 * np.pi)) % 1.0, np.ones_like(ang), np.clip(np.nan_to_num(mag / max(top, 1e-12)), 0, 1)],
        axis=-1,
    )
    return hsv_to_rgb(hsv).astype(np.float32)
