"""The "Series" dock: a tilt or time series of 4D datasets, a compare grid and a watched folder
(UX point 23).

- **Frame slider.** A series is several 4D datasets of one shape: several 4D files, one 5D
  ``.npy`` ``(frame, scan_y, scan_x, k_y, k_x)``, or the 4D layers already open. It is shown as
  one 4D layer, ``"series"``, whose data is replaced by the chosen frame's lazy array (a view: no
  copy, nothing read but the pattern napari draws). Every dock follows the layer as for any 4D
  dataset: the Virtual imaging dock recomputes its detector on the new frame in its worker.
- **Compare grid.** The current virtual detector (the Virtual imaging dock's) on several 4D
  datasets at once (the open 4D layers, or every frame of the series), one image per dataset
  computed in a worker, laid out as a grid on a "Compare" canvas of the window.
- **Watched folder.** A timer polls a folder in a worker; a new file counts as finished when its
  size stayed the same between two polls and it opens; it is then appended as the next frame.
  The badge says what is true now: *Watching*, *Waiting for file* (size still changing, or not
  readable yet) or *Error* (a file that stayed unreadable, with the reason).

Opening, polling and computing run in napari workers; the GUI thread only swaps the layer's
data and shows results.
"""

from __future__ import annotations

import fnmatch
import math
import time
from pathlib import Path
from typing import Any

import napari
import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..data.calibration import Calibration
from ..data.datacube import DataCube
from ..errors import FileFormatError, Napari4DSTEMError
from ._common import FileJobs, guarded, layer_array, layer_datacube, watch_dock
from ._forms import form, row
from ._state import DockState, register_dock

SERIES_LAYER = "series"
COMPARE_DOCK = "Compare"
COMPARE_SOURCES = ("open 4D layers", "series frames")
WATCH_PATTERNS = "*.npy *.h5 *.hdf5 *.emd *.mib *.dm4"
BADGE_COLORS = {
    "Watching": "#2e7d32",
    "Waiting for file": "#9a6700",
    "Error": "#c62828",
    "Not watching": "#555555",
}
# a file that stayed the same size but does not open yet is "waiting" this long, then an error
GIVE_UP_S = 10.0
POLL_MS = 1000


# -- the series (no Qt) ---------------------------------------------------------------------------
def series_from_array(data: Any, calibration: Calibration | None = None, *, name: str = "frame") -> list[DataCube]:
    """The frames of a 5D array ``(frame, scan_y, scan_x, k_y, k_x)`` as 4D DataCubes (views)."""
    if getattr(data, "ndim", 0) != 5:
        raise Napari4DSTEMError(
            f"a series array is 5D (frame, scan_y, scan_x, k_y, k_x), got shape {tuple(getattr(data, 'shape', ()))}"
        )
    return [DataCube(data[k], calibration, name=f"{name} {k}") for k in range(data.shape[0])]


def check_frame(series_shape: tuple[int, ...] | None, dc: DataCube) -> None:
    """A clear error when ``dc`` does not have the series' shape (all frames share one)."""
    if series_shape is not None and tuple(dc.shape) != tuple(series_shape):
        raise Napari4DSTEMError(
            f"{dc.name}: shape {tuple(dc.shape)} differs from the series' {tuple(series_shape)}; "
            "a series holds datasets of one scan and detector shape"
        )


def open_series(paths) -> list[DataCube]:
    """Open a series lazily: one 5D ``.npy``, or several 4D files of one shape (any format)."""
    from ..io import open_datacube
    from ..io.npy import read_header

    paths = [Path(p) for p in ([paths] if isinstance(paths, str | Path) else paths)]
    if not paths:
        raise Napari4DSTEMError("no files chosen for the series")
    if len(paths) == 1 and paths[0].suffix == ".npy":
        shape, dtype, fortran, offset = read_header(paths[0])
        if len(shape) == 5:
            if fortran:
                raise FileFormatError(paths[0], "is stored in Fortran order; save it C-ordered")
            mm = np.memmap(paths[0], dtype=dtype, mode="r", shape=shape, offset=offset)
            return series_from_array(mm, name=paths[0].stem)
    frames: list[DataCube] = []
    for p in paths:
        dc = open_datacube(p)
        check_frame(frames[0].shape if frames else None, dc)
        frames.append(dc)
    return frames


def frame_layers(frames: list[DataCube]) -> list[tuple]:
    """Worker: each frame's napari layer tuple (reads one pattern each, for contrast limits)."""
    from .._layers import datacube_layer

    return [datacube_layer(dc) for dc in frames]


def poll_folder(
    folder: str | Path,
    patterns: str,
    seen: dict[str, dict],
    done: set[str],
    give_up_s: float = GIVE_UP_S,
    now: float | None = None,
) -> tuple[list[tuple], dict[str, dict]]:
    """Worker: one look at a watched folder; returns ``(events, seen)``.

    ``seen`` maps each file not yet taken to ``{"size", "since", "error"}`` of the last poll;
    ``done`` holds the files already appended. A file is finished when its size is the same as
    at the last poll and it opens: event ``("frame", path, DataCube, layer tuple, size)``. Else
    ``("waiting", path, why)``: new, still growing, or not readable yet; a file that stays the
    same size and unreadable for ``give_up_s`` gives ``("error", path, message)`` (tried again
    when its size changes). A frame event also carries the file's size.
    """
    from .._layers import datacube_layer
    from ..io import open_datacube

    folder = Path(folder)
    if not folder.is_dir():
        raise Napari4DSTEMError(f"{folder}: the watched folder is gone (or is not a folder)")
    now = time.monotonic() if now is None else now
    pats = patterns.split() or ["*"]
    seen = {k: dict(v) for k, v in seen.items()}
    events: list[tuple] = []
    for p in sorted(folder.iterdir()):
        key = str(p)
        if key in done or p.name.startswith(".") or not any(fnmatch.fnmatch(p.name, pt) for pt in pats):
            continue
        try:
            size = p.stat().st_size
        except OSError:  # removed meanwhile
            seen.pop(key, None)
            continue
        rec = seen.get(key)
        if rec is None or rec["size"] != size:
            seen[key] = {"size": size, "since": now, "error": None}
            events.append(("waiting", key, "new file: size not stable yet" if rec is None else "still being written"))
            continue
        if rec["error"]:
            events.append(("error", key, rec["error"]))
            continue
        try:
            dc = open_datacube(p)
            layer = datacube_layer(dc)
        except (Napari4DSTEMError, OSError, ValueError) as e:
            if now - rec["since"] >= give_up_s:
                rec["error"] = str(e)
                events.append(("error", key, str(e)))
            else:
                events.append(("waiting", key, f"not readable yet ({e})"))
            continue
        seen.pop(key)
        events.append(("frame", key, dc, layer, size))
    return events, seen


def grid_cells(n: int) -> tuple[int, int]:
    """``(rows, cols)`` of a near-square grid for ``n`` images."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / cols)), cols


def compare_job(datasets: list[tuple[str, DataCube, Calibration]], detector):
    """Worker: the virtual image of ``detector`` on each dataset, yielded as ``(index, name,
    image)`` as each is done (a closing dock or Cancel stops it between datasets)."""
    from ..analysis.virtual.images import iter_virtual_image
    from ..engine.jobs import run_job

    out = {}
    for i, (name, dc, cal) in enumerate(datasets):
        img = run_job(iter_virtual_image(dc, detector, calibration=cal))
        out[name] = img.data
        yield (i, name, img.data)
    return out


# -- the dock ---------------------------------------------------------------------------------------
class SeriesWidget(DockState, QWidget):
    """Dock widget: frame slider of a series, compare grid, watched folder."""

    state_key = "series"
    state_exclude = ("frame_box", "folder")  # the frames and the watch are not restored

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        watch_dock(self)  # placed in napari's window with our other docks; cleaned up when napari closes it
        self.viewer = viewer
        self.frames: list[DataCube] = []
        self._layer_data: list = []  # each frame's layer data (what napari slices)
        self.frame = 0
        self.compare_images: dict[str, np.ndarray] = {}
        self._compare_worker = None
        self._compare_model = None
        self._compare_cells: tuple[int, int, int, int] = (1, 1, 1, 1)
        self._grid_source: str | None = None  # the datasets of the last grid, and its detector
        self._grid_detector = None
        self._grid_pending = None  # a newer detector, computed when the running grid ends
        self.watch_dir: Path | None = None
        self.give_up_s = GIVE_UP_S
        self._seen: dict[str, dict] = {}
        self._done: set[str] = set()
        self._poll_worker = None
        self.badge_state = "Not watching"
        self._build_ui()
        self.files = FileJobs(self.status, self._on_error)
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.poll)
        register_dock(viewer, self)  # the Virtual imaging dock's [ ] step its frames
        from ..plugin_api import events

        events(viewer).virtual_image_changed.connect(self._on_virtual_image)

    def _build_ui(self) -> None:
        self.open_btn = QPushButton("Open series...")
        self.open_btn.setToolTip("several 4D files of one shape (the frames in name order), or one 5D .npy")
        self.layers_btn = QPushButton("Series of the open 4D layers")
        self.layers_btn.setToolTip("the 4D layers now open, in the layer list's order, as the frames")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setEnabled(False)
        self.frame_box = QSpinBox()
        self.frame_box.setEnabled(False)
        self.frame_label = QLabel("no series")
        self.frame_label.setWordWrap(True)
        self.compare_source = QComboBox()
        self.compare_source.addItems(COMPARE_SOURCES)
        self.compare_btn = QPushButton("Compare grid")
        self.compare_btn.setToolTip(
            "the Virtual imaging dock's detector on each dataset: one image per dataset in the Compare dock"
        )
        self.compare_cancel = QPushButton("Cancel")
        self.compare_cancel.setEnabled(False)
        self.follow_detector = QCheckBox("grid follows the detector")
        self.follow_detector.setToolTip("compute the grid again whenever the Virtual imaging dock's detector changes")
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("folder to watch")
        self.patterns = QLineEdit(WATCH_PATTERNS)
        self.patterns.setToolTip("file name patterns, separated by spaces")
        self.watch_btn = QPushButton("Watch folder...")
        self.stop_btn = QPushButton("Stop watching")
        self.stop_btn.setEnabled(False)
        self.follow = QCheckBox("show each new frame")
        self.follow.setChecked(True)
        self.badge = QLabel("")
        self.badge.setWordWrap(True)
        self.badge.setMinimumHeight(2 * self.badge.fontMetrics().lineSpacing() + 8)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setMinimumHeight(2 * self.status.fontMetrics().lineSpacing() + 4)
        layout = QVBoxLayout(self)
        layout.addLayout(row(self.open_btn, self.layers_btn))
        frame_row = QHBoxLayout()
        frame_row.addWidget(QLabel("frame"))
        frame_row.addWidget(self.slider, 1)
        frame_row.addWidget(self.frame_box)
        layout.addLayout(frame_row)
        layout.addWidget(self.frame_label)
        layout.addLayout(row(self.compare_source, self.compare_btn, self.compare_cancel))
        layout.addWidget(self.follow_detector)
        layout.addLayout(form(("watch", self.folder), ("files", self.patterns)))
        layout.addLayout(row(self.watch_btn, self.stop_btn, self.follow))
        layout.addWidget(self.badge)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._set_badge("Not watching", "")
        self.open_btn.clicked.connect(lambda _=False: self.choose_files())
        self.layers_btn.clicked.connect(lambda _=False: self.series_from_layers())
        self.slider.valueChanged.connect(self.set_frame)
        self.frame_box.valueChanged.connect(self.set_frame)
        self.compare_btn.clicked.connect(lambda _=False: self.compare())
        self.compare_cancel.clicked.connect(lambda _=False: self.cancel_compare())
        self.watch_btn.clicked.connect(lambda _=False: self.choose_folder())
        self.stop_btn.clicked.connect(lambda _=False: self.stop_watching())

    # -- the series -----------------------------------------------------------------------------
    @property
    def layer(self):
        return self.viewer.layers[SERIES_LAYER] if SERIES_LAYER in self.viewer.layers else None

    def choose_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Frames of a series (or one 5D .npy)")
        if paths:
            self.open_files(sorted(paths))

    def open_files(self, paths) -> None:
        """Open ``paths`` as a series in a worker (one 5D .npy, or 4D files of one shape)."""

        def job(paths=paths):
            frames = open_series(paths)
            return frames, frame_layers(frames)

        self.files.run(job, desc="opening the series", on_done=lambda r: self.set_series(*r))

    def series_from_layers(self) -> None:
        """The open 4D layers (not the series layer itself) as the frames of a series."""
        try:
            frames = [layer_datacube(lyr)[0] for lyr in self._cube_layers()]
            if len(frames) < 2:
                raise Napari4DSTEMError("a series needs two or more 4D layers open")
            for dc in frames[1:]:
                check_frame(frames[0].shape, dc)
        except Napari4DSTEMError as e:
            self.status.setText(str(e))
            return
        self.files.run(frame_layers, frames, desc="reading the frames", on_done=lambda lt: self.set_series(frames, lt))

    def set_series(self, frames: list[DataCube], layers: list[tuple] | None = None) -> None:
        """Show ``frames`` as the series (frame 0 in the ``"series"`` layer)."""
        if not frames:
            self.status.setText("the series has no frames")
            return
        layers = layers if layers is not None else frame_layers(frames)
        self.frames = list(frames)
        self._layer_data = [lt[0] for lt in layers]
        data, kwargs, _ = layers[0]
        kwargs = {**kwargs, "name": SERIES_LAYER}
        if self.layer is not None:
            self.viewer.layers.remove(self.layer)
        self.viewer.add_image(data, **kwargs)
        self.frame = -1
        self._update_range()
        self.set_frame(0)
        (sy, sx), (ky, kx) = frames[0].scan_shape, frames[0].detector_shape
        self.status.setText(f"series of {len(frames)} frames: scan {sy} x {sx}, detector {ky} x {kx}")

    def append_frame(self, dc: DataCube, layer: tuple) -> None:
        """Add a frame at the end (a new acquisition of a watched folder)."""
        if not self.frames:
            self.set_series([dc], [layer])
            return
        check_frame(self.frames[0].shape, dc)
        self.frames.append(dc)
        self._layer_data.append(layer[0])
        self._update_range()
        if self.follow.isChecked():
            self.set_frame(len(self.frames) - 1)
        else:
            self._show_label()

    def _update_range(self) -> None:
        n = len(self.frames)
        for w in (self.slider, self.frame_box):
            w.blockSignals(True)
            w.setRange(0, max(n - 1, 0))
            w.setEnabled(n > 1)
            w.blockSignals(False)

    def set_frame(self, k: int) -> None:
        """Show frame ``k``: the series layer's data becomes that frame's (a view, no copy)."""
        if not self.frames or self.layer is None:
            return
        k = int(np.clip(k, 0, len(self.frames) - 1))
        for w in (self.slider, self.frame_box):
            if w.value() != k:
                w.blockSignals(True)
                w.setValue(k)
                w.blockSignals(False)
        if k == self.frame and layer_array(self.layer) is self._layer_data[k]:
            return
        self.frame = k
        dc = self.frames[k]
        meta = dict(self.layer.metadata.get("napari_4dstem", {}))
        meta["source"] = dc.source  # a frame of a 5D array has none: no script for its results
        meta["frame"] = k
        self.layer.metadata["napari_4dstem"] = meta
        self.layer.data = self._layer_data[k]  # the docks follow the layer's data event
        self._show_label()

    def _show_label(self) -> None:
        n = len(self.frames)
        dc = self.frames[self.frame]
        where = Path(dc.source).name if dc.source else dc.name
        self.frame_label.setText(f"frame {self.frame} of 0..{n - 1}: {where}")

    def step_frame(self, step: int) -> None:
        if self.frames:
            self.set_frame((self.frame + step) % len(self.frames))

    # -- compare grid ---------------------------------------------------------------------------
    def _cube_layers(self) -> list:
        return [
            lyr
            for lyr in self.viewer.layers
            if getattr(lyr, "ndim", 0) == 4 and not getattr(lyr, "rgb", False) and lyr.name != SERIES_LAYER
        ]

    def _compare_datasets(self, source: str) -> list[tuple[str, DataCube, Calibration]]:
        if source == "series frames":
            if not self.frames:
                raise Napari4DSTEMError("no series yet: open one first")
            cal = layer_datacube(self.layer)[1] if self.layer is not None else self.frames[0].calibration
            return [(f"frame {k}", dc, cal) for k, dc in enumerate(self.frames)]
        out = []
        for lyr in self._cube_layers():
            dc, cal = layer_datacube(lyr)
            out.append((lyr.name, dc, cal))
        if self.layer is not None:
            dc, cal = layer_datacube(self.layer)
            out.append((f"series frame {self.frame}", dc, cal))
        if not out:
            raise Napari4DSTEMError("open some 4D datasets first")
        return out

    def current_detector(self):
        """The Virtual imaging dock's detector (the one its image shows)."""
        from ._state import find_dock

        dock = find_dock(self.viewer, "virtual")
        det = dock.current_detector() if dock is not None else None
        if det is None:
            raise Napari4DSTEMError("open the Virtual imaging dock and set a detector: the grid uses it")
        return det

    def compare(self, source: str | None = None, detector=None) -> bool:
        """One virtual image of ``detector`` (default: the Virtual imaging dock's) per dataset,
        computed in a worker and laid out as a grid in the Compare dock as each comes in."""
        from ._common import create_worker

        if self._compare_worker is not None:
            self.status.setText("a compare grid is being computed: wait or cancel it")
            return False
        source = source or self.compare_source.currentText()
        try:
            det = detector if detector is not None else self.current_detector()
            datasets = self._compare_datasets(source)
            shape = datasets[0][1].detector_shape
            for name, dc, _ in datasets:
                if tuple(dc.detector_shape) != tuple(shape):
                    raise Napari4DSTEMError(
                        f"{name}: detector {tuple(dc.detector_shape)} differs from {tuple(shape)}: "
                        "one detector fits datasets of one detector shape"
                    )
        except Napari4DSTEMError as e:
            self.status.setText(str(e))
            return False
        self._grid_source, self._grid_detector = source, det
        rows, cols = grid_cells(len(datasets))
        ny = max(dc.scan_shape[0] for _, dc, _ in datasets)
        nx = max(dc.scan_shape[1] for _, dc, _ in datasets)
        self._compare_cells = (rows, cols, ny, nx)
        self._compare_cal = datasets[0][2]
        self.compare_images = {}
        self._compare_names = [name for name, _, _ in datasets]
        # busy at once, the job started; the Compare canvas (a second napari canvas, 1.5-1.9 s of
        # GUI at load 17 when first made, #15) is made or cleared on the next event-loop turn
        self.status.setText(f"compare grid: 0 of {len(datasets)} images")
        self.compare_cancel.setEnabled(True)
        self.compare_btn.setEnabled(False)
        self._compare_canvas_ready = False
        QTimer.singleShot(0, guarded(self, self._prepare_compare_canvas))
        self._compare_worker = create_worker(
            compare_job,
            datasets,
            det,
            _progress={"total": len(datasets), "desc": "compare grid"},
            _connect={
                "yielded": guarded(self, self._on_tile),
                "errored": guarded(self, self._on_error),
                "finished": guarded(self, self._compare_finished),
            },
        )
        return True

    def _compare_viewer(self):
        from ._multiview import embed_viewer, is_embedded_alive, show_embedded

        if self._compare_model is None or not is_embedded_alive(self._compare_model):
            self._compare_model = embed_viewer(getattr(self.viewer, "__wrapped__", self.viewer), COMPARE_DOCK)
        else:
            show_embedded(self._compare_model)
        return self._compare_model

    def _prepare_compare_canvas(self) -> None:
        """The Compare canvas shown and emptied for a new grid (once per grid)."""
        if getattr(self, "_compare_canvas_ready", True):
            return
        self._compare_canvas_ready = True
        model = self._compare_viewer()
        for lyr in list(model.layers):  # a new grid: the old tiles go
            model.layers.remove(lyr)

    def _on_tile(self, item) -> None:
        """One image of the grid is in: its own layer, placed at its cell, its own contrast."""
        self._prepare_compare_canvas()
        i, name, img = item
        _, cols, ny, nx = self._compare_cells
        r, c = divmod(i, cols)
        self.compare_images[name] = img
        cal = self._compare_cal
        kw = cal.napari_kwargs("scan")
        sy, sx = (float(v) for v in kw["scale"])
        gap = 0.1
        finite = img[np.isfinite(img)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        self._compare_model.add_image(
            img,
            name=name,
            colormap="gray",
            contrast_limits=(lo, hi if hi > lo else lo + 1.0),
            translate=(r * ny * (1 + gap) * sy, c * nx * (1 + gap) * sx),
            **kw,
        )
        self.status.setText(f"compare grid: {len(self.compare_images)} of {len(self._compare_names)} images")

    def _label_tiles(self) -> None:
        """The dataset's name at the top left of each tile (a Points layer with text)."""
        model = self._compare_model
        names = [lyr.name for lyr in model.layers if lyr.name in self.compare_images]
        pos = np.array([model.layers[n].translate[-2:] for n in names], dtype=float)
        model.add_points(
            pos,
            name="tile names",
            size=0.0,
            features={"name": names},
            text={"string": "{name}", "anchor": "upper_left", "color": "yellow", "size": 10},
            units=model.layers[names[0]].units,
        )

    def _on_virtual_image(self, name: str, info) -> None:
        """The Virtual imaging dock showed a new image: with *grid follows the detector*, a new
        detector computes the grid again (newest wins: a running grid stops first)."""
        from ._common import is_deleted

        if is_deleted(self) or name != "virtual image" or self._grid_source is None:
            return  # (a dock napari deleted without closing it: psygnal still holds the method)
        if not self.follow_detector.isChecked():
            return
        try:
            det = self.current_detector()
        except Napari4DSTEMError:
            return
        if det.to_params() == self._grid_detector.to_params():
            return  # the same detector (a new frame, another response): the grid stands
        self._grid_pending = det
        if self._compare_worker is not None:
            self._compare_worker.quit()
        else:
            self._start_pending_grid()

    def _start_pending_grid(self) -> None:
        det, self._grid_pending = self._grid_pending, None
        if det is not None and self._grid_source is not None:
            self.compare(self._grid_source, detector=det)

    def _compare_finished(self) -> None:
        self._compare_worker = None
        self.compare_cancel.setEnabled(False)
        self.compare_btn.setEnabled(True)
        if self._compare_model is not None and self.compare_images:
            self._label_tiles()
        if self._compare_model is not None and len(self.compare_images) == len(getattr(self, "_compare_names", [])):
            self._compare_model.reset_view()
            self.status.setText(f"compare grid: {len(self.compare_images)} images, one detector")
        if self._grid_pending is not None:
            self._start_pending_grid()

    def cancel_compare(self) -> None:
        if self._compare_worker is not None:
            self._compare_worker.quit()
            self.status.setText("compare grid cancelled")

    # -- watched folder -------------------------------------------------------------------------
    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of new acquisitions")
        if folder:
            self.watch(folder)

    def watch(self, folder, *, poll_ms: int | None = None) -> None:
        """Watch ``folder``: each finished file matching the patterns becomes the next frame
        (files already there too, in name order). Polls every ``poll_ms`` (default 1 s)."""
        p = Path(folder)
        if not p.is_dir():
            self._set_badge("Error", f"{p} is not a folder")
            return
        self.watch_dir = p
        self.folder.setText(str(p))
        self._seen, self._done = {}, set()
        self._timer.setInterval(int(poll_ms or POLL_MS))
        self._timer.start()
        self.stop_btn.setEnabled(True)
        self._set_badge("Watching", f"{p}: {len(self.frames)} frames")
        self.poll()

    def stop_watching(self) -> None:
        self._timer.stop()
        self.watch_dir = None
        self.stop_btn.setEnabled(False)
        self._set_badge("Not watching", "")

    def poll(self) -> None:
        """One look at the watched folder, in a worker (skipped while the last one runs)."""
        from ._common import create_worker

        if self.watch_dir is None or self._poll_worker is not None:
            return
        self._poll_worker = create_worker(
            poll_folder,
            self.watch_dir,
            self.patterns.text(),
            self._seen,
            set(self._done),
            self.give_up_s,
            _connect={
                "returned": guarded(self, self._on_poll),
                "errored": guarded(self, self._on_poll_error),
                "finished": guarded(self, self._poll_finished),
            },
        )

    def _poll_finished(self) -> None:
        self._poll_worker = None

    def _on_poll_error(self, exc) -> None:
        from .log import log_error

        log_error("Series (watched folder)", exc)
        self._set_badge("Error", str(exc) if isinstance(exc, Napari4DSTEMError) else f"{type(exc).__name__}: {exc}")

    def _on_poll(self, result) -> None:
        events, seen = result
        if self.watch_dir is None:
            return  # stopped meanwhile
        self._seen = seen
        errors, waiting = [], []
        for ev in events:
            kind, path = ev[0], ev[1]
            name = Path(path).name
            if kind == "frame":
                try:
                    self.append_frame(ev[2], ev[3])
                except Napari4DSTEMError as e:  # another shape: an error until the file changes
                    self._seen[path] = {"size": ev[4], "since": 0.0, "error": str(e)}
                    errors.append(f"{name}: {e}")
                    continue
                self._done.add(path)
            elif kind == "error":
                errors.append(f"{name}: {ev[2]}")
            else:
                waiting.append(f"{name} ({ev[2]})")
        if errors:
            self._set_badge("Error", "; ".join(errors))
        elif waiting:
            self._set_badge("Waiting for file", "; ".join(waiting))
        else:
            self._set_badge("Watching", f"{self.watch_dir}: {len(self.frames)} frames")

    def _set_badge(self, state: str, detail: str) -> None:
        self.badge_state = state
        color = BADGE_COLORS[state]
        self.badge.setStyleSheet(f"QLabel {{ background: {color}; color: white; padding: 3px; border-radius: 3px; }}")
        self.badge.setText(f"{state}: {detail}" if detail else state)

    # -- errors and closing ---------------------------------------------------------------------
    def _on_error(self, exc) -> None:
        from .log import log_error

        log_error("Series", exc)
        self.status.setText(str(exc) if isinstance(exc, Napari4DSTEMError) else f"{type(exc).__name__}: {exc}")

    def closeEvent(self, event) -> None:
        from ..plugin_api import events

        try:
            events(self.viewer).virtual_image_changed.disconnect(self._on_virtual_image)
        except (ValueError, RuntimeError):  # closed twice
            pass
        self._timer.stop()
        for w in (self._poll_worker, self._compare_worker):
            if w is not None:
                w.quit()
                w.await_workers(msecs=5000)
        self.files.wait(5000)
        super().closeEvent(event)
