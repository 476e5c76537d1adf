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
        mods = {getattr(k, "name", str(k)) for k in event.modifiers}
        if "Shift" in mods:  # Shift + click jumps there, whatever layer is being edited
            move_scan_to_world(main, event.position[-2:])
            return
        active = v.layers.selection.active
        if getattr(active, "mode", "pan_zoom") != "pan_zoom":
            return  # a layer in an editing mode (the scan region's shapes) gets the mouse
        cam = v.scene.camera if hasattr(v, "scene") else v.camera  # napari >= 0.9: scene.camera
        if "Control" in mods:  # Ctrl + drag pans the camera (vispy pans only without modifiers)
            yield from _pan(cam, event)
            return
        # a plain drag moves the scan, not the camera (napari resets the camera's mouse_pan
        # from the active layer on the next layer change; it is put back on release here)
        pan = cam.mouse_pan
        cam.mouse_pan = False
        try:
            move_scan_to_world(main, event.position[-2:])
            yield
            while event.type == "mouse_move":
                move_scan_to_world(main, event.position[-2:])
                yield
        finally:
            cam.mouse_pan = pan

    viewer.mouse_drag_callbacks.append(on_click)
    _follow_scan(main_viewer, viewer)


def _pan(cam, event):
    """Drag callback body: pan ``cam`` with the mouse (canvas pixels / zoom = world units)."""
    p0 = np.asarray(event.pos, float)
    c0 = np.asarray(cam.center, float)
    yield
    while event.type == "mouse_move":
        dx, dy = (np.asarray(event.pos, float) - p0) / cam.zoom
        c = c0.copy()
        c[-1] -= dx
        c[-2] -= dy
        cam.center = tuple(c)
        yield


def _follow_scan(main_viewer, viewer) -> None:
    """A crosshair on the real-space viewer at the main viewer's scan position, shown with the
    first map: on the embedded canvas a vispy cross moved in the same event-loop turn as the
    scan step (``_multiview.set_crosshair``: one transform, no layer refresh, so both canvases
    repaint in one frame); on a separate napari window a Points layer ``SCAN_POSITION`` kept on
    top of the maps, updated once per event-loop turn."""
    from ._multiview import hide_crosshair, is_embedded, set_crosshair

    main_ref, view_ref = weakref.ref(main_viewer), weakref.ref(viewer)
    embedded = is_embedded(viewer)

    pending = [False]

    def maps(v):
        return [lyr for lyr in v.layers if lyr.ndim == 2]

    def follow(event=None):
        main, v = main_ref(), view_ref()
        if main is None or v is None or main.dims.ndim < 4:
            return
        if not embedded:
            request()
            return
        shown = maps(v)
        if not shown:
            hide_crosshair(v)
            return
        pos = (float(main.dims.point[0]), float(main.dims.point[1]))
        set_crosshair(v, pos, 3 * float(min(shown[0].scale[-2:])))

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
        shown = maps(v)
        if not shown:
            return
        step = float(min(shown[0].scale[-2:]))
        v.add_points(
            pos,
            name=SCAN_POSITION,
            symbol="cross",
            size=3 * step,
            face_color="red",
            border_color="red",
            units=shown[0].units,
        )

    def on_top(event=None):
        v = view_ref()
        if v is None:
            return
        if embedded:
            follow()  # shown with the first map, hidden with the last
            return
        if SCAN_POSITION not in v.layers:
            request()  # next turn: not inside the layer list's own insert event
            return
        i = v.layers.index(v.layers[SCAN_POSITION])
        if i != len(v.layers) - 1:
            v.layers.move(i, len(v.layers) - 1)

    main_viewer.dims.events.current_step.connect(follow)
    viewer.layers.events.inserted.connect(on_top)
    viewer.layers.events.removed.connect(on_top)


def move_scan_to_world(main_viewer, yx_world) -> None:
    """Set the main viewer's scan position (its first two dims) to the scan pixel under world
    point ``(y, x)``: pixel ``i`` spans ``(i - 1/2, i + 1/2)`` scan steps, as napari draws it,
    and the position goes to the pixel's centre (one event for both axes)."""
    dims = main_viewer.dims
    if dims.ndim < 4:
        return
    steps = []
    for ax in (0, 1):
        rng = dims.range[ax]
        n = max(int(dims.nsteps[ax]), 1)
        i = int(np.floor((float(yx_world[ax]) - rng.start) / rng.step + 0.5))
        steps.append(min(max(i, 0), n - 1))
    if tuple(dims.current_step[:2]) != tuple(steps):
        dims.set_current_step((0, 1), steps)


def show_map(viewer, name: str, data: np.ndarray, cal: Calibration, *, part: str = "scan", **kwargs):
    """Add a 2D (or RGB) scan map to ``viewer``, or replace the data of the layer of that name
    (``part="k"``: a diffraction image, in ``cal``'s k units)."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data = data
        if "contrast_limits" in kwargs and not getattr(layer, "rgb", False):
            layer.contrast_limits = kwargs["contrast_limits"]
        return layer
    return viewer.add_image(data, name=name, **cal.napari_kwargs(part), **kwargs)


_PENDING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # viewer -> its queued steps


def show_maps(viewer, steps, *, owner, then=None) -> None:
    """Show a job's result layers on ``viewer`` without freezing the window: ``steps`` are
    ``(name, fn)`` pairs, ``fn()`` showing the layer ``name`` (a :func:`show_map` and its tags).

    napari builds a new layer's model, vispy visual and Qt controls on the GUI thread: 120-350 ms
    of GUI CPU each in a shown window under load, so the 5-6 maps of one result added in one slot
    held the window 1-1.4 s (UX audit session 15, S8). Here a step whose layer is new runs alone
    in its event-loop turn (the first at once, the next ones queued, as the Simulation preview
    does), and a step whose layer is already there (an update in place, 10 ms) runs with them;
    ``then()`` runs after the last. A name not in ``viewer`` counts as a new layer (a step that
    adds a layer to another viewer gets its turn too). A layer's name queued again by a newer result replaces the
    older step; the steps of an ``owner`` (the dock) closed meanwhile are dropped.
    :func:`maps_pending` says whether some are still queued."""
    viewer = getattr(viewer, "__wrapped__", viewer)
    queue = _PENDING.setdefault(viewer, [])
    idle = not queue
    for name, fn in steps:
        queued = next((s for s in queue if s[0] == name), None)
        if queued is not None:
            queued[1:] = [owner, fn]  # the newer result's step, in the older one's place
        else:
            queue.append([name, owner, fn])
    if then is not None:
        queue.append([None, owner, then])
    if idle:
        _next_map(weakref.ref(viewer))


def maps_pending(viewer=None) -> bool:
    """Whether :func:`show_maps` still has layers to show on ``viewer`` (any viewer: None)."""
    if viewer is None:
        return any(_PENDING.values())
    return bool(_PENDING.get(getattr(viewer, "__wrapped__", viewer)))


def _next_map(viewer_ref) -> None:
    """Run the queued steps up to the second new layer; that one and the rest in a later turn."""
    from ._common import is_deleted

    viewer = viewer_ref()
    queue = [] if viewer is None else _PENDING.get(viewer, [])
    added = False
    try:
        while queue:
            name, owner, fn = queue[0]
            new = name is not None and name not in viewer.layers
            if new and added:
                break
            queue.pop(0)
            if is_deleted(owner):
                continue
            added = added or new
            fn()
    finally:
        if queue:
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, lambda: _next_map(viewer_ref))


def show_vectors(
    viewer,
    name: str,
    v_y: np.ndarray,
    v_x: np.ndarray,
    cal: Calibration,
    *,
    max_arrows: int = 16,
    length: float | None = None,
):
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
    return viewer.add_vectors(vec, name=name, edge_color="yellow", edge_width=0.15 * step, **cal.napari_kwargs("scan"))


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
