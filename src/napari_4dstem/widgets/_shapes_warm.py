"""Compile napari's Shapes kernels for every shape a user can draw, without Qt (#15).

napari triangulates and outlines Shapes with ``numba.njit(cache=True)`` functions, compiled per
argument type (dtype, memory order) at first use. Drawing with the mouse reaches signatures that
building a layer from data does not (the outline of a polygon while it is drawn is a Fortran-order
``float32`` path, the selection box a C-order one): with a cold numba cache the first polygon a
user drew on the Real space canvas held the GUI thread 21-45 s in numba's compiler, after the
plugin's warm-up had finished. :func:`warm_drawn_shapes` draws each kind (polygon, ellipse,
rectangle, path, line) through napari's own mouse handlers on a layer that is never shown, then
selects, moves and restyles them: the plugin's warm-up worker runs it, and so does
``napari-4dstem warmup`` when napari is installed (``python -m napari_4dstem.widgets._shapes_warm``,
a separate process so that the command line never imports napari).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["warm_drawn_shapes"]


@dataclass
class _Mouse:
    """The fields of a vispy mouse event that napari's Shapes mouse handlers read."""

    type: str
    position: tuple
    pos: np.ndarray
    is_dragging: bool = False
    button: int = 1
    modifiers: list = field(default_factory=list)
    view_direction: list | None = None
    up_direction: list | None = None
    dims_displayed: list = field(default_factory=lambda: [0, 1])
    delta: tuple | None = None
    native: object = None
    handled: bool = False


def _event(kind: str, yx, dragging: bool = False) -> _Mouse:
    return _Mouse(type=kind, position=tuple(float(v) for v in yx), pos=np.asarray(yx, float), is_dragging=dragging)


# a user's strokes, in data coordinates: click-click-...-double-click for polygon and path,
# press-drag-release for the others
_STROKES = {
    "add_polygon": [(20.0, 4.0), (28.0, 6.0), (26.0, 14.0), (20.0, 12.0)],
    "add_path": [(2.0, 2.0), (6.0, 9.0), (3.0, 15.0)],
    "add_polyline": [(30.0, 2.0), (36.0, 9.0), (33.0, 15.0)],
    "add_ellipse": [(10.0, 20.0), (12.0, 23.0), (16.0, 28.0)],
    "add_rectangle": [(30.0, 30.0), (32.0, 33.0), (36.0, 38.0)],
    "add_line": [(40.0, 2.0), (42.0, 6.0), (44.0, 12.0)],
}


def _draw(layer, mode: str, pts) -> None:
    from napari.utils.interactions import (
        mouse_double_click_callbacks,
        mouse_move_callbacks,
        mouse_press_callbacks,
        mouse_release_callbacks,
    )

    layer.mode = mode
    if mode in ("add_polygon", "add_path", "add_polyline"):
        for yx in pts:
            mouse_move_callbacks(layer, _event("mouse_move", yx))
            mouse_press_callbacks(layer, _event("mouse_press", yx))
            mouse_release_callbacks(layer, _event("mouse_release", yx))
        mouse_double_click_callbacks(layer, _event("mouse_double_click", pts[-1]))
    else:
        mouse_move_callbacks(layer, _event("mouse_move", pts[0]))
        mouse_press_callbacks(layer, _event("mouse_press", pts[0]))
        for yx in pts[1:]:
            mouse_move_callbacks(layer, _event("mouse_move", yx, dragging=True))
        mouse_release_callbacks(layer, _event("mouse_release", pts[-1]))


def warm_drawn_shapes() -> None:
    """Draw, select, move and restyle one shape of each kind on a Shapes layer that is never shown.

    Each stroke runs on its own; one that napari rejects (its handlers change between releases)
    does not stop the others. Raises nothing but ImportError (no napari).
    """
    from napari.layers import Shapes

    for scale in ((1.0, 1.0), (0.5, 0.25)):  # the Real space canvas shows calibrated, unequal steps
        layer = Shapes(ndim=2, scale=scale, edge_width=0.5, face_color="transparent")
        for mode, pts in _STROKES.items():
            try:
                _draw(layer, mode, pts)
            except Exception:
                pass
        try:
            # and from data, as the docks add them: C- and Fortran-order float64
            for order in ("C", "F"):
                box = np.array([[1.0, 1.0], [1.0, 5.0], [5.0, 5.0], [5.0, 1.0]], order=order)
                tri = np.array([[1.0, 1.0], [7.0, 2.0], [3.0, 6.0], [4.0, 3.0]], order=order)
                layer.add_ellipses(box)
                layer.add_rectangles(box)
                layer.add_polygons([tri])
                layer.add_paths([tri])
                layer.add_lines([tri[:2]])
            layer.selected_data = set(range(len(layer.data)))
            layer._set_highlight(force=True)
            layer.edge_width = 1.0
            layer.face_color = "red"
            layer.mode = "select"
        except Exception:
            pass
        for mode in ("select", "direct"):  # a drag of a drawn shape and of its vertex
            try:
                layer.mode = mode
                layer.selected_data = set()
                from napari.utils.interactions import (
                    mouse_move_callbacks,
                    mouse_press_callbacks,
                    mouse_release_callbacks,
                )

                for c0, c1 in (((24.0, 8.0), (25.0, 9.0)), ((20.0, 4.0), (19.0, 3.0))):
                    mouse_move_callbacks(layer, _event("mouse_move", c0))
                    mouse_press_callbacks(layer, _event("mouse_press", c0))
                    mouse_move_callbacks(layer, _event("mouse_move", c1, dragging=True))
                    mouse_release_callbacks(layer, _event("mouse_release", c1))
            except Exception:
                pass


if __name__ == "__main__":  # `napari-4dstem warmup` runs this in its own process when napari is installed
    warm_drawn_shapes()
