"""A small, stable API for other napari plugins that work next to napari-4dstem (UX point 24).

- :class:`DetectorInfo`: the virtual detector as a frozen record (kind and geometry in detector
  pixels, ``_px``), convertible to and from the analysis detectors.
- :func:`events`: per-viewer signals (psygnal) ``pattern_changed(iy, ix)``,
  ``datacube_changed(layer_name)``, ``calibration_changed(layer_name, Calibration)``,
  ``virtual_image_changed(name, DetectorInfo)`` and ``result_added(name)``. The first two follow
  napari's own events (``datacube_changed`` when a 4D layer comes or goes, and when its data is
  replaced, e.g. the Series dock stepping frames); the docks emit the others through :func:`set_layer_calibration`,
  :func:`publish_virtual_image` and the Results session.
- :func:`plugin_settings`: settings kept under each plugin's own key (a JSON file per plugin in
  the user config folder), so plugins do not overwrite each other's.
- :func:`register_result_renderer`: a view of the current pattern or of the virtual image that the
  *Result pane* dock offers next to its FFT and EWPC (computed in a worker, newest request wins).

Example (another plugin's dock)::

    from napari_4dstem.plugin_api import events, plugin_settings

    ev = events(viewer)
    ev.pattern_changed.connect(lambda iy, ix: print("pattern", iy, ix))
    ev.calibration_changed.connect(lambda layer, cal: print(layer, cal.k_pixel_size))
    settings = plugin_settings("my-plugin")
    settings["threshold"] = 0.5
    settings.save()

    # a Result-pane view of the pattern at the scan position (runs in a worker)
    register_result_renderer("log pattern", lambda p: np.log1p(np.maximum(p, 0)), source="pattern")
"""

from __future__ import annotations

import json
import math
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psygnal import Signal

from .data.calibration import Calibration

__all__ = [
    "DetectorInfo",
    "PluginEvents",
    "PluginSettings",
    "events",
    "last_virtual_image",
    "plugin_settings",
    "publish_virtual_image",
    "register_result_renderer",
    "result_renderers",
    "set_layer_calibration",
    "unregister_result_renderer",
]


@dataclass(frozen=True)
class DetectorInfo:
    """A virtual detector: ``kind`` in point, disk, annulus, rectangle, wedge, grid, combined,
    mask; geometry in detector pixels ``(k_y, k_x)`` (a wedge's angles and a grid's rotation in
    degrees from ``+k_x`` towards ``+k_y``); ``mask_sha1`` identifies a mask detector's pixels;
    a combined detector has its ``weights`` and its ``parts`` (DetectorInfo each)."""

    kind: str
    center_px: tuple[float, float] | None = None
    radius_px: float | None = None
    inner_px: float | None = None
    outer_px: float | None = None
    rows: tuple[int, int] | None = None
    cols: tuple[int, int] | None = None
    mask_sha1: str | None = None
    start_deg: float | None = None
    end_deg: float | None = None
    pitch_px: float | None = None
    shape: tuple[int, int] | None = None
    rotation_deg: float | None = None
    weights: tuple[float, ...] | None = None
    parts: tuple[DetectorInfo, ...] | None = None

    @classmethod
    def from_detector(cls, det: Any) -> DetectorInfo:
        d = det.to_params()
        kind = d.pop("kind")
        if kind == "mask":
            return cls("mask", mask_sha1=d.get("sha1"))
        if kind == "combined":
            parts = tuple(cls.from_detector(c) for c in det.detectors)
            return cls("combined", weights=tuple(d["weights"]), parts=parts)
        tup = {k: tuple(v) for k, v in d.items() if isinstance(v, list)}
        return cls(kind, **{**d, **tup})

    def to_detector(self) -> Any:
        """The analysis detector (not for masks: their pixels are not in the record)."""
        from .pipelines import detector_from_params

        if self.kind == "combined":
            from .analysis.virtual.detectors import CombinedDetector

            return CombinedDetector(tuple(p.to_detector() for p in self.parts or ()), tuple(self.weights or ()))
        fields = {k: v for k, v in self.__dict__.items() if v is not None and k != "mask_sha1"}
        return detector_from_params(fields)


class PluginEvents:
    """The signals of one viewer (see the module docstring)."""

    pattern_changed = Signal(int, int)
    datacube_changed = Signal(str)
    calibration_changed = Signal(str, object)
    virtual_image_changed = Signal(str, object)
    result_added = Signal(str)

    def __init__(self, viewer):
        self._viewer = weakref.ref(viewer)
        self._last_pos: tuple[int, int] | None = None
        self._images: dict[str, Any] = {}  # the last published virtual image of each name
        # id of each 4D layer's data when last announced: napari's data event comes again when the
        # same array is set (the Series dock's first frame), which is no change
        self._data_ids: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        viewer.dims.events.current_step.connect(self._on_step)
        viewer.layers.events.inserted.connect(self._on_layers)
        viewer.layers.events.removed.connect(self._on_layers)
        for lyr in viewer.layers:
            self._watch(lyr, True)

    def _cube_layer(self):
        v = self._viewer()
        if v is None:
            return None
        return next(
            (
                lyr
                for lyr in v.layers
                if getattr(lyr, "ndim", 0) == 4 and not getattr(lyr, "rgb", False) and hasattr(lyr, "contrast_limits")
            ),
            None,
        )

    def _on_step(self, event=None) -> None:
        v, lyr = self._viewer(), self._cube_layer()
        if v is None or lyr is None:
            return
        world = v.dims.point[-4:-2] if v.dims.ndim >= 4 else None
        if world is None:
            return
        data = lyr.world_to_data([*world, 0.0, 0.0])
        sy, sx = lyr.data.shape[:2]
        iy, ix = (math.floor(float(v) + 0.5) for v in data[:2])
        pos = (min(max(iy, 0), sy - 1), min(max(ix, 0), sx - 1))
        if pos != self._last_pos:
            self._last_pos = pos
            self.pattern_changed.emit(*pos)

    def _on_layers(self, event=None) -> None:
        value = getattr(event, "value", None)
        if value is not None and getattr(value, "ndim", 0) == 4:
            self._watch(value, getattr(event, "type", "inserted") == "inserted")
            self._last_pos = None
            self.datacube_changed.emit(str(value.name))

    def _watch(self, layer, on: bool) -> None:
        """Follow (or stop following) the data of a 4D layer: the Series dock swaps a frame's
        data into its layer, which napari's layer-list events do not tell (UX audit s13, defect 7)."""
        if getattr(layer, "ndim", 0) != 4 or not hasattr(layer, "events") or not hasattr(layer.events, "data"):
            return
        if on:
            self._data_ids[layer] = id(layer.data)
            layer.events.data.connect(self._on_data)
        else:
            self._data_ids.pop(layer, None)
            layer.events.data.disconnect(self._on_data)

    def _on_data(self, event=None) -> None:
        layer = getattr(event, "source", None)
        if layer is None or getattr(layer, "ndim", 0) != 4:
            return
        key = id(layer.data)  # the new array was made while the layer held the old one: another id
        if self._data_ids.get(layer) == key:
            return
        self._data_ids[layer] = key
        self.datacube_changed.emit(str(layer.name))


_EVENTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def events(viewer) -> PluginEvents:
    """The :class:`PluginEvents` of ``viewer`` (made on first use; one per viewer)."""
    viewer = getattr(viewer, "__wrapped__", viewer)  # docks get a proxy of the viewer
    ev = _EVENTS.get(viewer)
    if ev is None:
        ev = _EVENTS[viewer] = PluginEvents(viewer)
    return ev


def set_layer_calibration(viewer, layer, calibration: Calibration) -> None:
    """Store ``calibration`` in a 4D layer (what the docks read) and emit calibration_changed."""
    meta = dict(layer.metadata.get("napari_4dstem", {}))
    meta["calibration"] = calibration
    layer.metadata["napari_4dstem"] = meta
    events(viewer).calibration_changed.emit(str(layer.name), calibration)


def publish_virtual_image(viewer, name: str, detector: Any, image: Any = None) -> None:
    """Say that the virtual image ``name`` was (re)computed with ``detector`` (a Detector or a
    DetectorInfo); ``image`` (a RealSpaceMap) is kept for :func:`last_virtual_image`."""
    info = detector if isinstance(detector, DetectorInfo) else DetectorInfo.from_detector(detector)
    ev = events(viewer)
    if image is not None:
        ev._images[str(name)] = image
    ev.virtual_image_changed.emit(str(name), info)


def last_virtual_image(viewer, name: str = "virtual image") -> Any:
    """The RealSpaceMap last published as ``name`` in ``viewer`` (None before the first)."""
    return events(viewer)._images.get(str(name))


class PluginSettings(dict):
    """A plugin's own settings: a dict saved as JSON under the plugin's key."""

    def __init__(self, path: Path, data: dict[str, Any]):
        super().__init__(data)
        self.path = path

    def save(self) -> Path:
        from .io._atomic import atomic_output

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.path, overwrite=True) as tmp:
            Path(tmp).write_text(json.dumps(dict(self), indent=2) + "\n", encoding="utf-8")
        return self.path


def plugin_settings(plugin: str, *, folder: str | os.PathLike | None = None) -> PluginSettings:
    """The settings of ``plugin`` (its own JSON file, ``<config>/plugins/<plugin>.json``)."""
    key = "".join(c if c.isalnum() or c in "-_." else "_" for c in plugin)
    if not key:
        raise ValueError("give the plugin's name")
    if folder is None:
        import platformdirs

        folder = Path(platformdirs.user_config_dir("napari-4dstem")) / "plugins"
    path = Path(folder) / f"{key}.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return PluginSettings(path, data)


RENDERER_SOURCES = ("pattern", "virtual image")
BUILTIN_RESULT_VIEWS = ("FFT of the virtual image", "EWPC of the current pattern")


@dataclass(frozen=True)
class ResultRenderer:
    """A Result-pane view registered by a plugin (see :func:`register_result_renderer`)."""

    name: str
    func: Any
    source: str


class _RendererRegistry:
    changed = Signal()

    def __init__(self):
        self.items: dict[str, ResultRenderer] = {}


_RENDERERS = _RendererRegistry()


def register_result_renderer(name: str, func, *, source: str = "pattern") -> ResultRenderer:
    """Offer ``func`` as a view in the *Result pane* dock (UX points 15 and 24).

    Parameters
    ----------
    name : str
        The name in the pane's list; must not be one of the built-in views. Registering a name
        again replaces its renderer.
    func : callable
        ``func(array)`` gets the input as a float or integer ndarray: the diffraction pattern at
        the scan position ``(k_y, k_x)`` for ``source="pattern"``, the latest virtual image
        ``(scan_y, scan_x)`` for ``source="virtual image"``. It returns a 2D real array, or a
        tuple ``(array, (scale_y, scale_x), unit)`` to give the result's pixel size and unit. It
        runs in a worker thread (never on napari's GUI thread), so it may take seconds; a newer
        request replaces the result of an older one. Complex results are shown as ``|z|``.
    source : {"pattern", "virtual image"}
        What the view follows: every scan step, or every new virtual image.

    Returns
    -------
    ResultRenderer
        The registered record (its ``name`` is what :func:`unregister_result_renderer` takes).

    Raises
    ------
    ValueError
        On an empty or built-in name, an unknown source, or a ``func`` that is not callable.
    """
    name = str(name).strip()
    if not name or name in BUILTIN_RESULT_VIEWS:
        raise ValueError(f"a Result-pane renderer needs a name of its own, not {name!r}")
    if source not in RENDERER_SOURCES:
        raise ValueError(f"source must be one of {RENDERER_SOURCES}, not {source!r}")
    if not callable(func):
        raise ValueError(f"the renderer {name!r} is not callable: {func!r}")
    r = _RENDERERS.items[name] = ResultRenderer(name, func, source)
    _RENDERERS.changed.emit()
    return r


def unregister_result_renderer(name: str) -> None:
    """Withdraw the Result-pane view ``name`` (open panes drop it from their list)."""
    if _RENDERERS.items.pop(str(name), None) is not None:
        _RENDERERS.changed.emit()


def result_renderers() -> dict[str, ResultRenderer]:
    """The registered Result-pane views, by name, in registration order."""
    return dict(_RENDERERS.items)
