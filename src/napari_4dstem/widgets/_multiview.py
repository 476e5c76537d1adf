"""The one adapter over napari's internals: a second napari canvas inside the main window.

napari has one canvas per viewer and the main one shows the diffraction pattern (UX point 3 wants
real space beside it, with its own camera, scale bar and units). napari's "multiple viewer
widget" pattern does that: a ``ViewerModel`` drawn by a ``QtViewer`` placed in a dock of the main
window. ``napari.qt.QtViewer`` is public, but building one outside a ``Window`` is not a stable
API (checked on napari 0.9.x, the version range ``constraints.txt`` tests): everything that
touches it lives here, so a napari change is fixed in one place. The rest of the plugin sees a
``ViewerModel`` (``layers``, ``add_image``, ``mouse_drag_callbacks``, ``canvas.overlays``...).
"""

from __future__ import annotations

import weakref

import numpy as np
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import QDockWidget, QFrame, QScrollArea, QSplitter, QVBoxLayout, QWidget

_AREAS = {
    "left": Qt.DockWidgetArea.LeftDockWidgetArea,
    "right": Qt.DockWidgetArea.RightDockWidgetArea,
    "top": Qt.DockWidgetArea.TopDockWidgetArea,
    "bottom": Qt.DockWidgetArea.BottomDockWidgetArea,
}

# the narrowest layer list of an embedded canvas (napari's theme says 242 px: its main window's):
# napari's layer rows are 200 px wide at least (their size hint), eye and thumbnail first, so a
# narrower list cut the names behind a scroll bar ("virtual ima" at 140 px); 204 px shows a whole
# row and a name of about 14 characters ("virtual image", "sum image") beside the type icon.
# The narrowest embedded viewer (canvas, controls and list: the controls scroll below it) stays
# 420 px: napari's controls get the rest, 210 px at first, and scroll sideways
LAYER_LIST_MIN_PX = 204
EMBEDDED_MIN_WIDTH_PX = 420
CONTROLS_MIN_HEIGHT_PX = 150
CANVAS_MIN_HEIGHT_PX = 200  # with its dims sliders
LAYER_LIST_PX = 210  # its width at first

# model -> weak reference to its EmbeddedViewer: the dock's Qt parent keeps the widget alive, and
# nothing of ours may (the widget holds the model: a strong value here would never be freed)
_QT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _CloseWatcher(QObject):
    """Closes the embedded QtViewers when their main window closes (napari's Window.close closes
    its own QtViewer only; an unclosed one keeps its vispy canvas)."""

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Close:
            for ref in list(_QT.values()):
                w = ref()
                if w is not None and w.main_window() is obj and w.qt_viewer is not None:
                    # close it (vispy canvas) and drop our reference: a dock napari keeps
                    # (a plugin widget) must not keep the QtViewer alive after its window
                    qv, w.qt_viewer = w.qt_viewer, None
                    qv.close()
                    qv.deleteLater()
        return False


def _embedded_qt_viewer_class():
    """napari's ``QtViewer`` that does not bind napari's shortcuts again when it is made.

    napari's ``QtViewer.__init__`` ends with ``_bind_shortcuts``: it unbinds and binds again every
    action's shortcuts from napari's settings, in the global ``action_manager``, and each of those
    ~180 calls emits ``shortcut_changed``, to which every welcome widget of every canvas (ours have
    one too, never shown) answers by rebuilding its shortcut table: 528 refreshes, 0.24 s of GUI
    CPU of the ~0.4 s that opening the Result pane cost beside Real space (#15). The main window's
    QtViewer has bound exactly those shortcuts already, and binding them again leaves the same
    bindings (an action's ``injected`` command is cached at its first binding), so the second
    canvas skips it; its keys still go through the global bindings (``test_workspace_keys``)."""
    global _EMBEDDED_QT_VIEWER
    if _EMBEDDED_QT_VIEWER is None:
        from napari.qt import QtViewer

        class _EmbeddedQtViewer(QtViewer):
            def _bind_shortcuts(self) -> None:  # the main window's QtViewer bound them
                pass

        _EMBEDDED_QT_VIEWER = _EmbeddedQtViewer
    return _EMBEDDED_QT_VIEWER


_EMBEDDED_QT_VIEWER = None


class EmbeddedViewer(QWidget):
    """A napari canvas (with its dims sliders) and, under it, the model's layer controls and
    layer list, as one widget for a dock."""

    def __init__(self, model, main_window=None, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        # weakly: a widget napari keeps (a plugin dock) must not keep the closed window alive
        self._main_window = None if main_window is None else weakref.ref(main_window)
        self.qt_viewer = _embedded_qt_viewer_class()(model, show_welcome_screen=False)
        from ._embedded_controls import own_layer_buttons

        own_layer_buttons(self.qt_viewer)  # its mode buttons act on its layers, not the main viewer's
        # the canvas on top (a dock is narrow), the layer controls and list side by side under it;
        # the controls scroll and the list may be narrower than napari's 242 px: the dock was
        # 568 px wide at least (napari's controls 320 + its list), which with the Virtual
        # imaging dock beside it made the window wider than a 1920 px screen
        controls = QScrollArea()
        controls.setWidgetResizable(True)
        controls.setFrameShape(QFrame.Shape.NoFrame)
        controls.setWidget(self.qt_viewer.controls)
        self.qt_viewer.layers.setStyleSheet(f"min-width: {LAYER_LIST_MIN_PX}px;")  # over napari's theme
        below = QSplitter(Qt.Orientation.Horizontal)
        below.setChildrenCollapsible(False)  # the list never dragged or squeezed below its minimum
        below.addWidget(controls)
        below.addWidget(self.qt_viewer.layers)
        controls.setMinimumHeight(CONTROLS_MIN_HEIGHT_PX)  # never squeezed to a sliver by the canvas
        below.setStretchFactor(0, 1)  # the controls take the dock's extra width, not the list
        below.setStretchFactor(1, 0)
        below.setSizes([EMBEDDED_MIN_WIDTH_PX - LAYER_LIST_PX, LAYER_LIST_PX])
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.qt_viewer)
        split.addWidget(below)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setCollapsible(0, False)
        # the canvas is what the dock is for: a dock stacked under it (napari puts the next one
        # there) must not squeeze it to nothing now that the controls scroll
        self.qt_viewer.setMinimumHeight(CANVAS_MIN_HEIGHT_PX)
        # the drawn canvas itself too (it was 196 px of the 200 at the window's minimum: #15)
        native = getattr(getattr(self.qt_viewer, "canvas", None), "native", None)
        if native is not None:
            native.setMinimumHeight(CANVAS_MIN_HEIGHT_PX)
        self.setMinimumWidth(EMBEDDED_MIN_WIDTH_PX)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)
        # the scan-position cross, made on first use: a Qt overlay over the canvas
        # (_CrossOverlay), else a vispy visual of the canvas (_crosshair_visual)
        self.crosshair = None

    def main_window(self):
        return None if self._main_window is None else self._main_window()


class _KeepFitted:
    """Fits an embedded camera to its layers again when its canvas is resized, as long as the
    camera is where the last fit left it (napari fits the first layer, and its home button).

    napari fits the camera when the first layer comes, at the canvas's size then: the Real space
    dock got its final width (about 420 px) after that, and a square 32 x 32 scan showed about
    23.5 of its columns (UX audit, #15). A camera the user has zoomed or panned is left alone,
    until napari's reset view fits it again."""

    def __init__(self, model):
        self._model = weakref.ref(model)
        self._fit: tuple | None = None  # the camera's (center, zoom) after the last fit
        # napari holds bound methods weakly: the widget keeps this object alive
        model.events.reset_view.connect(self._on_fit)
        model.canvas.events.size.connect(self._on_size)

    @staticmethod
    def _state(model) -> tuple:
        cam = _camera(model)
        return tuple(float(c) for c in cam.center), float(cam.zoom)

    def _on_fit(self, event=None) -> None:
        model = self._model()
        if model is not None:
            self._fit = self._state(model)

    def _on_size(self, event=None) -> None:
        model = self._model()
        if model is None or self._fit is None or not len(model.layers) or min(model.canvas.size) < 2:
            return
        center, zoom = self._state(model)
        if np.allclose(center, self._fit[0]) and np.isclose(zoom, self._fit[1]):
            model.reset_view()


def embed_viewer(main_viewer, title: str, *, area: str = "right"):
    """A new ``ViewerModel`` shown in a dock ``title`` of ``main_viewer``'s window, with the scale
    bar on (units from its layers)."""
    model, widget = make_embedded(main_viewer, title)
    qt_window = main_viewer.window._qt_window
    others = [
        d for d in qt_window.findChildren(QDockWidget) if d.isVisible() and qt_window.dockWidgetArea(d) == _AREAS[area]
    ]
    dock = main_viewer.window.add_dock_widget(widget, name=title, area=area)
    _keep_window_of(dock)  # a GL canvas: never reparented to another window (audit S4)
    if others:  # beside the analysis docks of that side, not squeezed under them
        qt_window.splitDockWidget(others[0], dock, Qt.Orientation.Horizontal)
        width = max(others[0].width(), 300)
        qt_window.resizeDocks([others[0], dock], [width, width], Qt.Orientation.Horizontal)
    return model


# the dock widgets of ours placed so far, by kind ("form" or "canvas"), oldest first: a new one
# goes with them (``place_dock``); a closed dock leaves (weak references)
_PLACED: dict[str, list] = {"form": [], "canvas": []}

# a form docked under another one keeps at least this height (title bar and scrolled form): a
# column of slivers would fit the screen and show nothing; the dock that cannot have it floats
DOCKED_FORM_MIN_HEIGHT_PX = 300
# a floating dock: at most this share of the screen's room, the next one this far down and right
FLOAT_MAX_SHARE = 0.75
FLOAT_STEP_PX = 36
FLOAT_MARGIN_PX = 48
FLOAT_MIN_PX = (480, 560)  # a floating form this large at least where the room allows


def _live_docks(kind: str, qt_window, area) -> list[QDockWidget]:
    """The docks of ``kind`` placed earlier that are still docked in ``qt_window``'s ``area`` and
    not hidden by the user, oldest first."""
    out = []
    for d in _placed(kind, qt_window):
        if qt_window.dockWidgetArea(d) == area and not d.isFloating() and d.toggleViewAction().isChecked():
            out.append(d)
    return out


def _placed(kind: str, qt_window) -> list[QDockWidget]:
    """The docks of ``kind`` placed earlier that are still in ``qt_window`` (docked or floating)."""
    out = []
    for ref in list(_PLACED[kind]):
        d = ref()
        try:
            alive = d is not None and d.parent() is qt_window
        except RuntimeError:  # deleted by Qt
            alive = False
        if not alive:
            _PLACED[kind].remove(ref)
        else:
            out.append(d)
    return out


def _screen_room(qt_window):
    """The room for windows on the screen of ``qt_window`` (its available geometry, a QRect)."""
    from qtpy.QtGui import QGuiApplication

    screen = qt_window.screen() or QGuiApplication.primaryScreen()
    return screen.availableGeometry()


def _minimum_size(qt_window):
    """The smallest size the docks let ``qt_window`` have now, its window frame included."""
    from qtpy.QtCore import QSize

    qt_window.layout().invalidate()  # Qt caches the minimum until its next layout pass
    hint = qt_window.minimumSizeHint()
    frame = qt_window.frameGeometry().size() - qt_window.geometry().size()
    return QSize(hint.width() + max(frame.width(), 0), hint.height() + max(frame.height(), 0))


def _fits(size, before, room) -> bool:
    """Whether a window of minimum ``size`` (that was ``before``) still fits ``room``: a window
    that outgrew the screen before (a small screen) may keep its size, not grow."""
    return size.width() <= max(room.width(), before.width()) and size.height() <= max(room.height(), before.height())


def place_dock(dock: QDockWidget, kind: str = "form") -> None:
    """Place a dock of ours that napari has just put in its main window, so that opening more
    docks keeps the window within the screen (UX point 3, audit defect 10), with no tabs (UX
    point 3: analysis tools open "as dock widgets or separate windows, not tabs").

    napari stacks each new dock of an area under the ones there (``tabify=False`` from its
    Plugins menu): with 14 docks the window grew to 2450-2630 px tall, each dock a strip and the
    Real space canvas about 90 px. Here a ``"form"`` dock (an analysis dock) goes under the last
    form dock of ours docked in its area (their column, each form scrolling, each at least
    ``DOCKED_FORM_MIN_HEIGHT_PX`` tall); a ``"canvas"`` dock (the Result pane) goes under the Real
    space dock when that is in its area (the two canvases share its column), else it is placed
    as a form. The first form of an area stays where napari put it; that one and the canvases
    stay docked. A form under another that would make the main window's minimum size outgrow
    the screen's room floats instead, as a window of its own
    within the screen, cascaded from the other floating docks (:func:`_float_dock`); Qt keeps its
    place in the column, where napari's "dock this panel" title-bar button (or a double click on
    the title bar) docks it back. The only napari
    internal used is its main window (a ``QMainWindow``): the splits and floats are Qt's.

    Parameters
    ----------
    dock : QDockWidget
        napari's dock holding our widget, already added to the main window.
    kind : str
        ``"form"`` or ``"canvas"``.
    """
    qt_window = dock.parent()
    if not hasattr(qt_window, "splitDockWidget") or dock.isFloating():
        return
    if any(r() is dock for refs in _PLACED.values() for r in refs):
        return
    if kind != "canvas":
        _place_docked(dock, kind)
        return
    _keep_window_of(dock)  # a GL canvas: docked or floating for good, never moved between the two
    # placed with its GL canvas not shown yet (the dock's minimum height is its QtViewer's): a
    # canvas first drawn in the main window could not float any more (audit S4)
    gl = _gl_canvas(dock)
    if gl is not None:
        gl.hide()
    try:
        _place_docked(dock, kind)
        # napari floats or docks from Python too (its title-bar button; its window's close docks
        # every floating dock back, a paint in the main window then): none of it for a canvas
        dock.setFloating = _stay
    finally:
        if gl is not None:  # shown (its GL context made) in the window it stays in, after napari's add
            from qtpy.QtCore import QTimer

            ref = weakref.ref(gl)
            QTimer.singleShot(0, lambda: _show_alive(ref()))


def _stay(floating: bool) -> None:
    """A canvas dock's ``setFloating`` (an instance attribute over Qt's): does nothing."""


def _show_alive(widget) -> None:
    try:
        if widget is not None:
            widget.show()
    except RuntimeError:  # deleted by Qt (the dock closed at once)
        pass


def _place_docked(dock: QDockWidget, kind: str) -> None:
    qt_window = dock.parent()
    area = qt_window.dockWidgetArea(dock)
    before = _minimum_size(qt_window)  # the new dock is hidden still: without it
    size_before = qt_window.size()
    if kind == "canvas":
        real = [
            d
            for d in qt_window.findChildren(QDockWidget)
            if d.windowTitle() == _REAL_SPACE_TITLE
            and qt_window.dockWidgetArea(d) == area
            and d.isVisible()
            and not d.isFloating()
        ]
        if real:
            _PLACED["canvas"].append(weakref.ref(dock))
            qt_window.splitDockWidget(real[0], dock, Qt.Orientation.Vertical)
            h = max(real[0].height(), 2 * CANVAS_MIN_HEIGHT_PX)
            qt_window.resizeDocks([real[0], dock], [h // 2, h - h // 2], Qt.Orientation.Vertical)
            dock.show()  # Qt's layout skips a hidden dock
            if not _fits(_minimum_size(qt_window), before, _screen_room(qt_window)):
                # under Real space it would make the window outgrow the screen (audit S2: 1920 x
                # 1523 px, the docked forms below the screen): a window of its own instead
                _float_out(dock, size_before)
            return
    others = _live_docks("form", qt_window, area)
    _PLACED["form"].append(weakref.ref(dock))
    _watch_dock_back(dock)
    if not others:
        return  # the first form of its area (Virtual imaging, as a rule) stays where napari put it
    qt_window.splitDockWidget(others[-1], dock, Qt.Orientation.Vertical)
    for d in (*others, dock):  # none of the column squeezed to a sliver by the next one
        d.setMinimumHeight(max(d.minimumHeight(), DOCKED_FORM_MIN_HEIGHT_PX))
    dock.show()  # as napari does at the end of its add: Qt's layout skips a hidden dock
    if _fits(_minimum_size(qt_window), before, _screen_room(qt_window)):
        return
    _float_out(dock, size_before)


def _float_out(dock: QDockWidget, size_before) -> None:
    """Float ``dock``, just added by napari, as a window of its own, and give the main window its
    size from before again."""
    qt_window = dock.parent()
    # floated here, inside napari's add: the window is not laid out at the docked size first, and
    # the cost is the dock opening's
    _float_dock(dock)
    _keep_floating_through_add(dock)
    _restore_size(qt_window, size_before)


def _restore_size(qt_window, size_before) -> None:
    """Qt grew the window to the docked minimum meanwhile: back to its size from before (or its
    minimum without the dock, where that is larger)."""
    if not qt_window.isMaximized() and not qt_window.isFullScreen():
        qt_window.layout().activate()  # the window's minimum without the dock (Qt sets it)
        low = qt_window.minimumSizeHint()
        qt_window.resize(max(size_before.width(), low.width()), max(size_before.height(), low.height()))


def _gl_canvas(dock: QDockWidget):
    """The vispy canvas widget (napari's, a QOpenGLWidget) of the embedded viewer in ``dock``, or
    None."""
    for ev in dock.findChildren(EmbeddedViewer):
        native = getattr(getattr(ev.qt_viewer, "canvas", None), "native", None)
        if native is not None:
            return native
    return None


def _keep_window_of(dock: QDockWidget) -> None:
    """A dock holding an embedded napari canvas stays in the window it is first shown in: no
    float button in napari's title bar, no floating by Qt's double click or drag.

    A QOpenGLWidget moved to another top-level window (a dock floated, or docked back) gets a new
    OpenGL context that shares nothing with the old one (napari's QApplication is made without
    ``AA_ShareOpenGLContexts``, and a plugin comes after it), while vispy's programs, buffers and
    textures belong to the old one: every paint of the floated Real space or Result pane raised
    ``GL_INVALID_VALUE`` tracebacks and drew nothing (audit S4). Rebuilding napari's visuals for
    the new context is not a public API of napari or vispy; keeping the canvas where it is is
    reliable."""
    dock.setFeatures(dock.features() & ~QDockWidget.DockWidgetFeature.DockWidgetFloatable)
    _hide_float_button(dock)
    ref = weakref.ref(dock)
    # napari makes its title bar again when the dock floats or moves (after these connections are
    # called: napari connected first)
    dock.topLevelChanged.connect(lambda *_: _hide_float_button(ref()))
    dock.dockLocationChanged.connect(lambda *_: _hide_float_button(ref()))


def _hide_float_button(dock) -> None:
    from qtpy.QtWidgets import QPushButton

    try:
        bar = None if dock is None else dock.titleBarWidget()
        button = None if bar is None else bar.findChild(QPushButton, "QTitleBarFloatButton")
        if button is not None:
            button.setEnabled(False)
            button.hide()
    except RuntimeError:  # deleted by Qt
        pass


def _watch_dock_back(dock: QDockWidget) -> None:
    """A form dock docked back by the user (napari's title-bar "dock this panel" button, a double
    click on the title bar) that makes the main window outgrow the screen floats again where it
    was, and says why in its status line and the window's status bar (audit S2: docking the
    floating docks back grew the window to 1920 x 4350 px on a 1920 x 1080 screen, 11 docks off
    screen). The user asked for the dock in the window; room for it is made by the user (a dock
    closed or floated), not by moving other docks behind the user's back."""
    from qtpy.QtCore import QTimer

    ref = weakref.ref(dock)
    seen: dict = {}

    def changed(floating: bool) -> None:
        d = ref()
        if d is not None and hasattr(d.parent(), "splitDockWidget"):
            QTimer.singleShot(0, remember if floating else check)

    def alive():
        d = ref()
        try:
            return None if d is None or not d.isVisible() else d
        except RuntimeError:  # deleted by Qt
            return None

    def remember() -> None:
        # the window without the dock, once laid out: its size and minimum size
        d = alive()
        if d is not None and d.isFloating():
            seen["size"], seen["min"] = d.parent().size(), _minimum_size(d.parent())

    def check() -> None:
        d = alive()
        if d is None or d.isFloating():
            return
        qt_window = d.parent()
        room = _screen_room(qt_window)
        if _fits(_minimum_size(qt_window), seen.get("min", room.size()), room):
            return
        d.setFloating(True)  # Qt gives it its floating geometry from before
        if not room.contains(d.geometry()):
            _float_dock(d)
        _restore_size(qt_window, seen.get("size", qt_window.size()))
        _say(d, f"no room to dock {_title(d)!r} on this screen: close or float another dock first")

    dock.topLevelChanged.connect(changed)


def _title(dock) -> str:
    return dock.windowTitle().split(" (napari-4dstem)")[0]


def _say(dock, msg: str) -> None:
    """``msg`` in the dock's own status line (our forms have one) and napari's status bar."""
    from qtpy.QtWidgets import QLabel

    for w in (dock.widget(), *(dock.widget().findChildren(QWidget) if dock.widget() is not None else ())):
        status = getattr(w, "status", None)
        if isinstance(status, QLabel):
            status.setText(msg)
            break
    try:
        dock.parent().statusBar().showMessage(msg, 10000)
    except (AttributeError, RuntimeError):
        pass


def _keep_floating_through_add(dock: QDockWidget) -> None:
    """napari (0.9) ends its add of a dock with ``setFloating(False)`` (napari #3663): for the
    dock just floated, that one call is dropped, until the event loop's next pass (a later
    ``setFloating`` call, the user's, is Qt's again)."""
    from qtpy.QtCore import QTimer

    ref = weakref.ref(dock)

    def set_floating(floating: bool) -> None:
        d = ref()
        if d is None:
            return
        _restore_set_floating(d)
        if floating:
            d.setFloating(True)

    set_floating.once = True
    dock.setFloating = set_floating  # napari calls it from Python: the instance's attribute wins
    QTimer.singleShot(0, lambda: _restore_set_floating(ref()))


def _restore_set_floating(dock) -> None:
    try:
        if dock is not None and getattr(vars(dock).get("setFloating"), "once", False):
            del dock.setFloating
    except RuntimeError:  # deleted by Qt
        pass


def _float_dock(dock: QDockWidget) -> None:
    """Float ``dock`` as a window of its own: its size hint within ``FLOAT_MAX_SHARE`` of the
    screen's room (never below its minimum), inside the room, a step down and right of the
    floating docks of ours there already (a cascade, none exactly on another)."""
    qt_window = dock.parent()
    room = _screen_room(qt_window)
    QDockWidget.setFloating(dock, True)  # Qt's (a canvas dock's own attribute does nothing)
    low, hint = dock.minimumSizeHint().expandedTo(dock.minimumSize()), dock.sizeHint()
    w = max(low.width(), min(max(hint.width(), FLOAT_MIN_PX[0]), int(room.width() * FLOAT_MAX_SHARE)))
    h = max(low.height(), min(max(hint.height(), FLOAT_MIN_PX[1]), int(room.height() * FLOAT_MAX_SHARE)))
    taken = {
        (d.geometry().left(), d.geometry().top())
        for kind in _PLACED
        for d in _placed(kind, qt_window)
        if d is not dock and d.isFloating()
    }
    # from the top left of the room (over napari's layer controls in a maximized window, not the
    # Real space canvas and the docked forms on the right), each next one a step down and right,
    # back to the top once the steps leave the room
    left0 = min(room.left() + FLOAT_MARGIN_PX, max(room.right() + 1 - w, room.left()))
    top0 = min(room.top() + FLOAT_MARGIN_PX, max(room.bottom() + 1 - h, room.top()))
    steps = max(min(room.right() + 1 - w - left0, room.bottom() + 1 - h - top0) // FLOAT_STEP_PX + 1, 1)
    pos = (left0, top0)
    for k in range(steps):
        at = (left0 + k * FLOAT_STEP_PX, top0 + k * FLOAT_STEP_PX)
        if at not in taken:
            pos = at
            break
    dock.setGeometry(pos[0], pos[1], w, h)
    dock.show()
    dock.raise_()


_REAL_SPACE_TITLE = "Real space"  # _results.REAL_SPACE_DOCK (not imported: _results imports this module)


def make_embedded(main_viewer, title: str):
    """``(ViewerModel, EmbeddedViewer)``: a second napari canvas for a widget of ``main_viewer``'s
    window (scale bar on), closed with that window; the caller places the widget."""
    from napari.components.viewer_model import ViewerModel

    main_viewer = getattr(main_viewer, "__wrapped__", main_viewer)  # a plugin dock's proxy
    model = ViewerModel(title=title)
    model.canvas.overlays["scale_bar"].visible = True  # napari 0.9 (viewer.scale_bar is deprecated)
    qt_window = main_viewer.window._qt_window
    widget = EmbeddedViewer(model, qt_window)
    widget.keep_fitted = _KeepFitted(model)  # the whole scan in view once the dock has its size
    _QT[model] = weakref.ref(widget)
    if not any(isinstance(c, _CloseWatcher) for c in qt_window.children()):
        qt_window.installEventFilter(_CloseWatcher(qt_window))
    return model, widget


def is_embedded(model) -> bool:
    """Whether ``model`` was made by :func:`embed_viewer`."""
    return model in _QT


def is_embedded_alive(model) -> bool:
    """Whether ``model`` is an embedded viewer whose widget is still there (a closed dock
    deletes it); False for anything else."""
    ref = _QT.get(model)
    widget = None if ref is None else ref()
    if widget is None:
        return False
    try:
        # napari's remove_dock_widget unparents the widget; Qt may delete it (then this raises)
        return widget.parent() is not None
    except RuntimeError:
        return False


def show_embedded(model) -> None:
    """Show the dock of an embedded viewer again when the user has hidden it."""
    from qtpy.QtWidgets import QDockWidget

    w = _QT[model]()
    while w is not None and not isinstance(w, QDockWidget):
        w = w.parent()
    if w is not None and not w.isVisible():
        w.show()


def _camera(model):
    """A viewer model's camera (``scene.camera`` since napari 0.9, ``camera`` before)."""
    scene = getattr(model, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else model.camera


def canvas_key_events(main_viewer):
    """The key-press events of ``main_viewer``'s canvas (vispy's, which napari's key handler
    reads, also for keys a dock passes on), or None without a Qt window. A key napari cannot bind
    (a typed "+") is read here; handlers set ``event.handled``."""
    base = getattr(main_viewer, "__wrapped__", main_viewer)
    try:
        return base.window._qt_viewer.canvas._scene_canvas.events.key_press
    except AttributeError:
        return None


def _draw_event(canvas):
    """The draw event of napari's canvas (its private vispy ``SceneCanvas``): AttributeError
    where napari lays it out otherwise."""
    return canvas._scene_canvas.events.draw


class _CrossOverlay(QWidget):
    """The scan-position cross drawn by Qt over an embedded canvas, not by OpenGL in it.

    A transparent widget laid exactly over the vispy canvas (a sibling above it, not a child:
    a child of the ``QOpenGLWidget`` made Qt repaint the canvas when it moved), passing every
    mouse event through to the canvas. A scan step repaints two small rectangles of the window
    (where the cross was and where it is), and the canvas is not drawn again: its last frame is
    composed with the cross by Qt. The cross's ends are mapped from world to canvas pixels by the
    canvas's own vispy transforms, again whenever the camera moves or the canvas is resized or
    redrawn, so it stays on the point it marks through pan, zoom and resize."""

    PEN_PX = 2

    def __init__(self, model, canvas):
        # napari's private attributes first: where they are missing (AttributeError) nothing is
        # made, shown or connected, and the caller falls back to the vispy cross
        native, view, draw = canvas.native, canvas.view, _draw_event(canvas)
        camera_events = _camera(model).events
        super().__init__(native.parentWidget())
        self._model = weakref.ref(model)
        self._canvas = canvas  # napari's VispyCanvas: .native (the QOpenGLWidget), .view
        self._view, self._draw = view, draw
        for attr in (
            Qt.WidgetAttribute.WA_TransparentForMouseEvents,
            Qt.WidgetAttribute.WA_TranslucentBackground,
            Qt.WidgetAttribute.WA_NoSystemBackground,
        ):
            self.setAttribute(attr)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.world: tuple[float, float] | None = None  # (y, x) of the point marked, None: hidden
        self.size_world = 1.0  # arm end to arm end, world units
        self._ends = None  # the two arms in overlay pixels: ((x0, y0, x1, y1), (x0, y0, x1, y1))
        self._dirty = None  # the overlay pixels the cross covers now (QRect)
        native.installEventFilter(self)
        self.setGeometry(native.geometry())
        self.raise_()
        self.show()
        camera_events.connect(self._place)  # after napari's own camera link: vispy is updated
        draw.connect(self._place)  # resizes and anything else that redraws

    def eventFilter(self, obj, event):
        kind = event.type()
        if kind == QEvent.Type.Hide:  # the canvas hidden: the cross over it too
            self.hide()
        elif kind in (QEvent.Type.Resize, QEvent.Type.Move, QEvent.Type.Show):
            self.setGeometry(obj.geometry())
            self.raise_()
            if kind == QEvent.Type.Show:
                self.show()
        return False

    def set(self, yx_world, size_world: float | None) -> None:
        self.world = None if yx_world is None else (float(yx_world[0]), float(yx_world[1]))
        if size_world is not None:
            self.size_world = float(size_world)
        self._place()

    def remove(self) -> None:
        """Take the cross off its canvas for good (its links to the camera and the canvas too)."""
        model = self._model()
        if model is not None:
            _camera(model).events.disconnect(self._place)
        self._draw.disconnect(self._place)
        self.world = None
        try:
            self._canvas.native.removeEventFilter(self)
            self.hide()
            self.deleteLater()
        except RuntimeError:  # deleted with its canvas
            pass

    def _place(self, event=None) -> None:
        try:
            self._move()
        except RuntimeError:  # the canvas and this overlay were deleted (the dock closed)
            self.world = None

    def _move(self) -> None:
        from qtpy.QtCore import QRect

        ends = None
        if self.world is not None:
            tr = self._view.transform * self._view.scene.transform
            y, x = self.world
            h = self.size_world / 2
            pts = tr.map(np.array([[x - h, y], [x + h, y], [x, y - h], [x, y + h]], float))[:, :2]
            ends = tuple(tuple(float(v) for v in arm.ravel()) for arm in (pts[:2], pts[2:]))
        if ends == self._ends:
            return
        old = self._dirty
        self._ends = ends
        if ends is None:
            self._dirty = None
        else:
            xs = [ends[0][0], ends[0][2], ends[1][0], ends[1][2]]
            ys = [ends[0][1], ends[0][3], ends[1][1], ends[1][3]]
            pad = self.PEN_PX + 1
            x0, y0 = int(np.floor(min(xs))) - pad, int(np.floor(min(ys))) - pad
            x1, y1 = int(np.ceil(max(xs))) + pad, int(np.ceil(max(ys))) + pad
            self._dirty = QRect(x0, y0, x1 - x0 + 1, y1 - y0 + 1)
        for rect in (old, self._dirty):
            if rect is not None:
                self.update(rect)

    def paintEvent(self, event):
        from qtpy.QtCore import QPointF
        from qtpy.QtGui import QColor, QPainter, QPen

        if self._ends is None:
            return
        p = QPainter(self)
        pen = QPen(QColor(255, 0, 0), self.PEN_PX)
        pen.setCapStyle(Qt.PenCapStyle.FlatCap)
        p.setPen(pen)
        for x0, y0, x1, y1 in self._ends:
            p.drawLine(QPointF(x0, y0), QPointF(x1, y1))
        p.end()


def _crosshair_overlay(widget, model):
    """The Qt cross of an embedded canvas (made on first use), None where napari's widgets are
    not laid out as expected (the vispy cross is used then)."""
    if widget.crosshair is None:
        canvas = widget.qt_viewer.canvas
        cross = None
        if CROSSHAIR == "qt":
            try:
                if canvas.native.parentWidget() is not None:
                    cross = _CrossOverlay(model, canvas)
            except (AttributeError, RuntimeError, TypeError):  # napari's canvas is laid out otherwise
                cross = None
        widget.crosshair = cross if cross is not None else _crosshair_visual(widget)
    return widget.crosshair if isinstance(widget.crosshair, _CrossOverlay) else None


# how the scan-position cross is drawn: "qt" (a Qt overlay over the canvas: a scan step does
# not repaint the canvas) or "gl" (a vispy visual of the canvas); read when the cross is made
CROSSHAIR = "qt"


def _crosshair_visual(widget):
    """The scan-position cross as a vispy visual of an embedded canvas: two line segments centred
    on the origin of their own translation (moving it changes a transform, no buffer), drawn
    over the layers. A scan step repaints the canvas (the fallback of the Qt overlay)."""
    from vispy.scene.visuals import Line
    from vispy.visuals.transforms import STTransform

    pos = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]], np.float32)
    line = Line(pos=pos, color="red", connect="segments", width=2, parent=widget.qt_viewer.canvas.view.scene)
    line.order = 10**6  # after napari's layers (their order is their index)
    line.set_gl_state("translucent", depth_test=False)
    line.transform = STTransform()
    line.visible = False
    return line


def set_crosshair(model, yx_world, size: float | None = None) -> bool:
    """Show the scan-position cross at world point ``(y, x)`` of an embedded canvas, ``size``
    world units from arm end to arm end (kept when None). Drawn by Qt over the canvas
    (:class:`_CrossOverlay`): a scan step repaints the two small rectangles of the window the
    cross leaves and enters, not the canvas (in software OpenGL the canvas's repaint was most of
    what a step cost above napari's own). Where napari's widgets are laid out otherwise, a vispy
    visual of the canvas, moved by one transform (a napari Points layer's ``data`` setter
    refreshed the layer, its thumbnail and the layer list: 16 ms of GUI CPU a step). Returns
    False (nothing done) for a model that is not a live embedded viewer."""
    if not is_embedded_alive(model) or _QT[model]().qt_viewer is None:
        return False
    widget = _QT[model]()
    overlay = _crosshair_overlay(widget, model)
    if overlay is not None:
        overlay.set(yx_world, size)
        return True
    line = widget.crosshair
    tr = line.transform
    if size is not None and float(tr.scale[0]) != size / 2:
        tr.scale = (size / 2, size / 2)
    tr.translate = (float(yx_world[1]), float(yx_world[0]))
    if not line.visible:
        line.visible = True
    return True


def hide_crosshair(model) -> None:
    """Hide the scan-position cross of an embedded canvas (no map to point at)."""
    if not is_embedded_alive(model) or _QT[model]().crosshair is None:
        return
    cross = _QT[model]().crosshair
    if isinstance(cross, _CrossOverlay):
        cross.set(None, None)
    else:
        cross.visible = False


def crosshair_position(model) -> tuple[float, float] | None:
    """World ``(y, x)`` of the scan-position cross of an embedded canvas, None when hidden."""
    ref = _QT.get(model)
    widget = None if ref is None else ref()
    cross = None if widget is None else widget.crosshair
    if isinstance(cross, _CrossOverlay):
        return cross.world
    if cross is None or not cross.visible:
        return None
    x, y = cross.transform.translate[:2]
    return float(y), float(x)


def canvas_image(model):
    """The embedded canvas as shown, an RGBA array (screenshots and tests): napari's rendering of
    the canvas with the Qt cross painted over it where it is shown."""
    widget = _QT[model]()
    img = np.ascontiguousarray(widget.qt_viewer.screenshot(flash=False))
    cross = widget.crosshair
    if isinstance(cross, _CrossOverlay) and cross.world is not None and img.ndim == 3 and img.shape[2] == 4:
        from qtpy.QtCore import QPoint
        from qtpy.QtGui import QImage, QPainter, QRegion

        h, w = img.shape[:2]
        qimg = QImage(img.tobytes(), w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
        p = QPainter(qimg)
        ratio = w / max(cross.width(), 1)  # the screenshot is in device pixels
        p.scale(ratio, ratio)
        cross.render(p, QPoint(0, 0), QRegion(), QWidget.RenderFlag.DrawChildren)
        p.end()
        bits = qimg.constBits()
        bits.setsize(qimg.sizeInBytes())
        img = np.frombuffer(bits, np.uint8).reshape(h, qimg.bytesPerLine())[:, : 4 * w].reshape(h, w, 4).copy()
    return img


def world_to_canvas(model, yx_world) -> tuple[float, float]:
    """Canvas position (x, y in canvas pixels) of world point ``(y, x)`` on an embedded canvas."""
    canvas = _QT[model]().qt_viewer.canvas
    view = canvas.view
    tr = view.transform * view.scene.transform
    x, y = tr.map([float(yx_world[1]), float(yx_world[0])])[:2]
    return float(x), float(y)


def send_mouse(model, kind: str, yx_world, *, modifiers=()):
    """Deliver a mouse event to an embedded canvas through vispy's backend, as a real mouse
    does (tests and benchmarks): ``kind`` is ``press``, ``move`` or ``release`` (left button)
    at world point ``(y, x)``; a move between a press and its release is a drag, else a hover.
    Returns vispy's event (None for a move vispy dropped)."""
    be = _QT[model]().qt_viewer.canvas._scene_canvas._backend
    pos = world_to_canvas(model, yx_world)
    mods = tuple(modifiers)
    if kind == "press":
        return be._vispy_mouse_press(pos=pos, button=1, buttons=[1], modifiers=mods)
    if kind == "move":
        be._last_time = float("-inf")  # vispy drops moves within 10 ms of the last one
        held = be._vispy_mouse_data["press_event"] is not None
        return be._vispy_mouse_move(pos=pos, buttons=[1] if held else [], modifiers=mods)
    if kind == "release":
        return be._vispy_mouse_release(pos=pos, button=1, buttons=[], modifiers=mods)
    raise ValueError(f"unknown mouse event kind {kind!r}")


def draw_events(model):
    """The vispy ``draw`` event emitter of an embedded canvas (benchmarks time redraws on it)."""
    return _QT[model]().qt_viewer.canvas._scene_canvas.events.draw


# the object name of a toolbar placed on napari's main canvas (one per window and name)
_TOOLBAR_PREFIX = "napari_4dstem_toolbar_"


def attach_canvas_toolbar(main_viewer, toolbar: QWidget, name: str) -> bool:
    """Place ``toolbar`` right above the main viewer's canvas (the diffraction pattern), under
    napari's own layer controls, replacing a toolbar of the same ``name`` already there.

    napari has no public place for a plugin's widgets on its canvas; its ``QtViewer`` lays out the
    canvas and the dims sliders in one vertical layout (napari 0.9.x), and the toolbar goes first
    in it. Returns False, placing nothing, when the window or that layout is not what this
    expects (a napari change, or a viewer without a window): the dock keeps its own controls.
    """
    from qtpy.QtWidgets import QBoxLayout

    main_viewer = getattr(main_viewer, "__wrapped__", main_viewer)  # a plugin dock's proxy
    window = getattr(main_viewer, "window", None)
    qt_viewer = getattr(window, "_qt_viewer", None)
    canvas = getattr(getattr(qt_viewer, "canvas", None), "native", None)
    holder = None if canvas is None else canvas.parentWidget()
    layout = None if holder is None else holder.layout()
    if not isinstance(layout, QBoxLayout) or layout.indexOf(canvas) < 0:
        return False
    old = holder.findChild(QWidget, _TOOLBAR_PREFIX + name)
    if old is not None and old is not toolbar:
        detach_canvas_toolbar(old)
    toolbar.setObjectName(_TOOLBAR_PREFIX + name)
    layout.insertWidget(layout.indexOf(canvas), toolbar)
    return True


def detach_canvas_toolbar(toolbar: QWidget) -> None:
    """Take a toolbar placed by :func:`attach_canvas_toolbar` off the canvas and delete it."""
    try:
        parent = toolbar.parentWidget()
        if parent is not None and parent.layout() is not None:
            parent.layout().removeWidget(toolbar)
        toolbar.setParent(None)
        toolbar.deleteLater()
    except RuntimeError:  # already deleted with its window
        pass


def replace_shapes(viewer, layer, data) -> None:
    """``layer.data = data`` for a Shapes layer of ``viewer``, with one refresh of the layer and
    at most one dims update of the viewer. napari's ``Shapes.data`` setter refreshes the layer
    three times (each one its thumbnail, extent, highlight and the layer list's row) and emits
    ``data`` before and after the change, on both of which the viewer recomputes its dims: 18 ms
    of GUI CPU a preset switch here, 7 ms this way. The dims are recomputed only when the layers'
    world ranges changed (an outline inside the pattern leaves them as they were: 3 ms of GUI
    CPU a switch saved; the units and axis labels do not depend on the shapes). The layer's
    ``set_data`` event still fires (the canvas redraws the shapes on it)."""
    from contextlib import nullcontext

    viewer = getattr(viewer, "__wrapped__", viewer)  # a plugin dock's proxies
    layer = getattr(layer, "__wrapped__", layer)
    on_change = getattr(viewer, "_on_layers_change", None)
    blocked = layer.events.data.blocker(on_change) if on_change is not None else nullcontext()
    refresh_blocked = layer._block_refresh() if hasattr(layer, "_block_refresh") else nullcontext()
    with refresh_blocked, blocked:
        layer.data = data
    layer.refresh()
    if on_change is not None and not _same_ranges(viewer):
        on_change()


def _same_ranges(viewer) -> bool:
    """Whether the viewer's dims already have the ranges of its layers (False when napari's
    layer list does not say: the dims are then recomputed)."""
    try:
        ranges = tuple(viewer.layers._ranges)
        current = tuple(viewer.dims.range)
    except (AttributeError, TypeError):
        return False
    return len(ranges) == len(current) and all(
        tuple(map(float, a)) == tuple(map(float, b)) for a, b in zip(ranges, current, strict=True)
    )


def steady_mesh_shaders(viewer, layer) -> bool:
    """Keep the shader programs of a Shapes layer's face and highlight meshes across changes of
    its shapes. vispy's ``MeshVisual`` makes a new colour-transform shader function at every data
    update (``_build_color_transform``), so each change of the shapes compiles and links both
    programs again at the next draw: 15-17 ms of GUI CPU in software OpenGL at each preset switch.
    For colours given per vertex or as one colour (a Shapes layer's meshes) that function is the
    same pass-through code every time: the first one is kept. Colours given as values through a
    colormap (their function holds the limits) are left to vispy. Returns False (nothing done)
    when the layer has no visual on ``viewer``'s canvas."""
    viewer = getattr(viewer, "__wrapped__", viewer)
    layer = getattr(layer, "__wrapped__", layer)
    try:
        node = viewer.window._qt_viewer.canvas.layer_to_visual[layer].node
        meshes = (node.shape_faces, node.shape_highlights)
    except (AttributeError, KeyError, RuntimeError):
        return False
    for mesh in meshes:
        build = getattr(mesh, "_build_color_transform", None)
        if build is None or getattr(build, "steady", False):
            continue
        kept: list = []

        def steady(colors, build=build, kept=kept):
            if colors.ndim == 2 and colors.shape[1] == 1:  # values through a colormap
                return build(colors)
            if not kept:
                kept.append(build(colors))
            return kept[0]

        steady.steady = True
        mesh._build_color_transform = steady  # an existing attribute: vispy's frozen visuals allow it
    return True
