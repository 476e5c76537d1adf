"""A calibration put on a 4D layer in the GUI: the layer's scale and units, the layers drawn over
it, the views, and the calibration stored where the docks read it.

Translation only (GUI thread, arithmetic on a few numbers). The Calibration and DPC dock's
*Apply to the layer* (ring, disk) and *Set the real-space scale* go through
:func:`apply_layer_calibration` (the Results dock's *Load session...* makes the layer with the
session's scale instead: ``results_list._with_calibration``), so that:

- the 4D layer gets the calibration's scale and units, the 2D layers on the pattern that had the
  old k scale (detectors, disks, rings drawn there) the new one, the maps on the Real space canvas
  that had the old scan step the new one (the scale bars follow at once);
- the views stay on what the user looked at: a changed scale moves napari's world coordinates
  under the cameras and the dims sliders (napari keeps both in world units: a pattern 100 x
  smaller in 1/A than in px became a dot in the corner of a kept camera, and the scan position
  (5, 3) became (1, 1) with a 4 A step: UX audit, session 15, S6). Here the scan position is kept
  by index (put back at the next event-loop turn), and each affected canvas's camera is mapped to
  the same pixels: its zoom and pan, fitted or chosen by the user, show the same part of the
  pattern (or map) as before. A canvas whose two axes change by different factors (a non-square
  scan step) cannot keep its zoom (napari's zoom is the same on both axes): it is fitted instead;
- the calibration is stored in the layer's metadata (the DataCube the docks see) and
  ``calibration_changed`` is emitted (the Virtual imaging dock shows its mrad fields at once).
"""

from __future__ import annotations

import numpy as np

from ..data.calibration import Calibration


def _camera(model):
    """A viewer model's camera (``scene.camera`` since napari 0.9, ``camera`` before)."""
    scene = getattr(model, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else model.camera


def _camera_keeper(model, axes, old_scale, new_scale, old_translate):
    """Before a scale change of the layer axes ``axes`` of ``model`` (a viewer), a function that
    puts its 2D camera back on the same pixels after it (None when no displayed axis changes)."""
    dims = model.dims
    if dims.ndisplay != 2:
        return None
    shown = list(dims.displayed)[-2:]
    if not all(a in axes for a in shown):
        return None
    idx = [axes.index(a) for a in shown]
    ratio = np.array([new_scale[i] / old_scale[i] for i in idx], dtype=float)
    if np.allclose(ratio, 1.0):
        return None
    cam = _camera(model)
    center, zoom = tuple(float(c) for c in cam.center), float(cam.zoom)
    t = np.array([old_translate[i] for i in idx], dtype=float)

    def restore():
        if not np.isclose(ratio[0], ratio[1], rtol=1e-6):
            model.reset_view()  # napari's zoom is one number: a non-square change cannot keep it
            return
        c = np.array(center[-2:], dtype=float)
        cam.center = (*center[:-2], *((c - t) * ratio + t))
        cam.zoom = zoom / float(ratio[0])

    return restore


def _restore_step_later(model, axes, values, now) -> None:
    """Put the scan sliders back on ``values`` at the next event-loop turn: one more slice of the
    pattern (18 -> 40 ms of GUI CPU for *Set the real-space scale* at load 12-15 when done in the
    same turn as napari's own rescale), not added to that turn's. Skipped when the sliders moved
    meanwhile (the user's new position wins)."""
    from qtpy.QtCore import QTimer

    def restore():
        if tuple(model.dims.current_step) == now:
            model.dims.set_current_step(axes, values)  # one dims event: one slice

    QTimer.singleShot(0, restore)


def apply_layer_calibration(viewer, layer, new: Calibration) -> None:
    """Put ``new`` on the 4D ``layer`` of ``viewer`` (see the module's docstring). GUI thread."""
    from ..plugin_api import set_layer_calibration
    from ._results import results_viewer

    base = getattr(viewer, "__wrapped__", viewer)
    kw = new.napari_kwargs("4d")
    old_scale = np.array(layer.scale, dtype=float)
    new_scale = np.array(kw["scale"], dtype=float)
    k_changed = not np.allclose(old_scale[2:], new_scale[2:])
    scan_changed = not np.allclose(old_scale[:2], new_scale[:2])
    keep = []
    step = None
    if base.dims.ndim == layer.ndim == 4:
        step = tuple(base.dims.current_step)
        keep.append(_camera_keeper(base, (0, 1, 2, 3), old_scale, new_scale, np.asarray(layer.translate)))
    rv = results_viewer(base, create=False) if scan_changed else None
    maps = []
    if rv is not None:
        maps = [m for m in rv.layers if m.ndim >= 2 and np.allclose(m.scale[-2:], old_scale[:2])]
        if maps:
            nd = rv.dims.ndim
            keep.append(_camera_keeper(rv, (nd - 2, nd - 1), old_scale[:2], new_scale[:2], maps[0].translate[-2:]))
    layer.scale = kw["scale"]
    layer.units = kw["units"]
    if k_changed:  # the layers drawn on the pattern
        k = new.napari_kwargs("k")
        for other in list(base.layers):
            if other is not layer and other.ndim == 2 and np.allclose(other.scale, old_scale[2:]):
                other.scale = k["scale"]
                other.units = k["units"]
    if maps:  # the maps over the scan
        s = new.napari_kwargs("scan")
        for m in maps:
            m.scale = (*m.scale[:-2], *s["scale"])
            m.units = (*m.units[:-2], *s["units"])
    if step is not None:  # the same scan position by index, not by world point (a slider moved only)
        shown, now = set(base.dims.displayed), tuple(base.dims.current_step)
        moved = [a for a, (was, is_) in enumerate(zip(step, now, strict=True)) if a not in shown and was != is_]
        if moved:
            _restore_step_later(base, tuple(moved), tuple(step[a] for a in moved), now)
    for restore in keep:
        if restore is not None:
            restore()
    set_layer_calibration(viewer, layer, new)
