"""The layer-control buttons of an embedded canvas act on that canvas's layer.

napari binds the mode buttons of its layer controls (select, ellipse, polygon, rectangle, pan...)
and a few push buttons (move to front/back, delete points) to its action manager, whose actions
act on the *main* viewer's active layer. Under an embedded canvas (the Real space dock) each
click therefore also ran the action on the main viewer's layer: a ``ValueError`` traceback per
click when that layer was of another kind ("<enum 'Mode'> may only be called with a str..."), or
the wrong layer's shapes moved or deleted (UX audit session 13, defect 4). The radio buttons set
their own layer's mode through ``toggled`` already; their ``clicked`` connection is dropped, and
the push buttons are connected to their own layer's method instead.
"""

from __future__ import annotations

import weakref

# a push button's napari name -> the method of its own layer that the bound action would have run
_PUSH_METHODS = {"move_front": "move_to_front", "move_back": "move_to_back", "delete_shape": "remove_selected"}
_DONE = "_napari_4dstem_own_layer"


def _disconnect(btn) -> None:
    try:
        btn.clicked.disconnect()
    except (TypeError, RuntimeError):  # nothing connected
        pass


def _own_buttons(controls, layer) -> None:
    from napari._qt.widgets.qt_mode_buttons import QtModePushButton, QtModeRadioButton

    if getattr(controls, _DONE, False):
        return
    setattr(controls, _DONE, True)
    ref = weakref.ref(layer)
    for btn in controls.findChildren(QtModeRadioButton):
        if btn.mode is None:
            continue
        _disconnect(btn)  # the action manager's trigger; toggled sets this layer's mode
    for btn in controls.findChildren(QtModePushButton):
        method = _PUSH_METHODS.get(btn.property("mode"))
        if method is None or not hasattr(layer, method):
            continue
        _disconnect(btn)

        def run(_=False, method=method):
            lyr = ref()
            if lyr is not None:
                getattr(lyr, method)()

        btn.clicked.connect(run)


def own_layer_buttons(qt_viewer) -> None:
    """Make the layer-control buttons of ``qt_viewer`` (an embedded canvas) act on its layers,
    for the layers there now and those added later."""
    container = qt_viewer.controls
    cref = weakref.ref(container)

    def fix(event=None) -> None:
        c = cref()
        if c is None:
            return
        for layer, controls in list(c.widgets.items()):
            _own_buttons(controls, layer)

    fix()
    # after napari's container made the new layer's controls (napari calls the first-connected last)
    qt_viewer.viewer.layers.events.inserted.connect(fix, position="last")
