"""The "Results" dock: every pipeline result of the session, with its parameters, source and time.

Translation only. The Bragg/strain, orientation and NN docks put each result they make into the
viewer's :class:`~napari_4dstem.pipelines.Session` (:func:`session_results`); this dock lists
them and offers Show (the result's layers again), Save..., Delete and Copy as Python, and saves
or loads the session as a small JSON file. A loaded session lists its results as recipes;
*Recompute* makes the selected one again from its input file in a worker.
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import Any

import napari
import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..errors import Napari4DSTEMError
from ._common import FileJobs, JobRunner, is_deleted, watch_dock
from ._pipeline import copy_to_clipboard, write_result
from ._state import dock_states, restore_dock_states

COLUMNS = ("name", "workflow", "input", "made (UTC)", "state")


class SessionResults(QObject):
    """The session of one viewer: recipes (:class:`~napari_4dstem.pipelines.Session`) and the
    result objects computed in this run of napari."""

    changed = Signal()

    def __init__(self, viewer=None):
        super().__init__()
        from ..pipelines import Session

        self.session = Session()
        self.results: dict[str, Any] = {}
        self._viewer = None if viewer is None else weakref.ref(viewer)

    def add(self, result: Any, name: str | None = None) -> str:
        entry = self.session.add(result, name)
        self.results[entry.name] = result
        self.changed.emit()
        viewer = self._viewer() if self._viewer is not None else None
        if viewer is not None:
            from ..plugin_api import events

            events(viewer).result_added.emit(entry.name)
        return entry.name

    def remove(self, name: str) -> None:
        self.session.remove(name)
        self.results.pop(name, None)
        self.changed.emit()

    def replace_session(self, session) -> None:
        self.session = session
        self.results = {}
        self.changed.emit()


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_results(viewer) -> SessionResults:
    """The results of ``viewer``'s session (made on first use; the same for every dock, which
    napari hands a proxy of the viewer)."""
    viewer = getattr(viewer, "__wrapped__", viewer)
    s = _SESSIONS.get(viewer)
    if s is None:
        s = _SESSIONS[viewer] = SessionResults(viewer)
    return s


def _layer_data(name: str, res) -> tuple[str, list]:
    """Worker: the layers of a result as ``(viewer, kind, data, kwargs)``, ``viewer`` "main"
    for diffraction images and peaks, "real" for maps over the scan."""
    from .._layers import peaks_layer, result_layers
    from ..data.results import BraggPeaks, DiffractionImage

    items = []
    for o in res.saved_objects():
        if isinstance(o, BraggPeaks):
            data, kw, _ = peaks_layer(o)
            kw["name"] = f"{name}: {kw['name']}"
            items.append(("main", "points", data, kw))
            continue
        where = "main" if isinstance(o, DiffractionImage) else "real"
        for data, kw, _ in result_layers(o):
            kw["name"] = f"{name}: {kw['name']}"
            # lazy data (a file-backed map) is read here, not on the GUI thread when drawn
            items.append((where, "image", np.asarray(data), kw))
    return name, items


def _read_datacube_files(sources: list[tuple[str, dict]]) -> list[tuple[dict, list]]:
    """Worker: the layer tuples of each session datacube file, read by this plugin's reader through
    napari's plugin manager (the datacube lazily), as ``(session entry, [(data, kwargs, kind), ...])``."""
    import npe2

    out = []
    for src, entry in sources:
        try:
            tuples = npe2.read([src], stack=False, plugin_name="napari-4dstem")
        except ValueError as e:  # npe2: no reader of this plugin takes the file
            raise Napari4DSTEMError(f"napari-4dstem cannot read the session's data file {src}: {e}") from None
        out.append((entry, [tuple(t) + ("image",) * (3 - len(t)) for t in tuples]))
    return out


def _session_layers(entry: dict, tuples: list) -> list[tuple[str, str, Any, dict]]:
    """Which of a file's layers a loaded session shows, and where: ``("main" | "real", kind, data,
    kwargs)``. The datacube always; the others only when the saved session had them open (its
    ``layers``; a session saved without that list: the datacube's diffraction-space layers),
    diffraction images on the main canvas, scan-space maps on the Real space one as the docks
    put them (a file's 10 maps landed on the diffraction canvas with napari unit warnings, #15)."""
    shown = entry.get("layers")
    out = []
    for data, kw, kind in tuples:
        kw = dict(kw)
        ours = (kw.get("metadata") or {}).get("napari_4dstem", {})
        is_cube = kind == "image" and np.ndim(data) == 4
        real = ours.get("kind") == "real_space"
        if not is_cube:
            if shown is None and (real or kind != "image"):
                continue
            if shown is not None and kw.get("name") not in shown:
                continue
        if is_cube and entry.get("name"):
            kw["name"] = entry["name"]
        out.append(("real" if real else "main", kind, data, kw))
    return out


def _with_calibration(items: list, cal) -> list:
    """A file's layers (:func:`_session_layers`) with the session's calibration ``cal`` (None: as
    the file has them): the datacube's scale and units are the session's, and a layer of the file
    that had the file's k scale (a pattern) or scan step (a map) gets the session's, as the
    Calibration and DPC dock did when it calibrated. A session of an uncalibrated file calibrated
    in the GUI reopened its datacube at 1 px per pixel, the calibration only in the metadata
    (UX audit, session 15, S1)."""
    if cal is None:
        return items
    cube = next((kw for _, kind, data, kw in items if kind == "image" and np.ndim(data) == 4), None)
    if cube is None:
        return items
    old = np.ones(4) if cube.get("scale") is None else np.asarray(cube["scale"], dtype=float)
    new, k, scan = cal.napari_kwargs("4d"), cal.napari_kwargs("k"), cal.napari_kwargs("scan")
    out = []
    for where, kind, data, kw in items:
        kw = dict(kw)
        scale = kw.get("scale")
        if kind == "image" and np.ndim(data) == 4:
            kw["scale"], kw["units"] = tuple(new["scale"]), tuple(new["units"])
        elif scale is not None and len(scale) >= 2:
            tail = np.asarray(scale, dtype=float)[-2:]
            if where == "main" and np.allclose(tail, old[2:]):
                part = k
            elif where == "real" and np.allclose(tail, old[:2]):
                part = scan
            else:
                part = None
            if part is not None:
                units = kw.get("units")
                kw["scale"] = (*tuple(scale)[:-2], *part["scale"])
                if units is not None and len(units) == len(scale):
                    kw["units"] = (*tuple(units)[:-2], *part["units"])
        out.append((where, kind, data, kw))
    return out


class ResultsListWidget(QWidget):
    """Dock: the session's results; show, save, delete, copy as Python; save/load the session."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        watch_dock(self)  # placed in napari's window with our other docks; cleaned up when napari closes it
        self.viewer = viewer
        self.store = session_results(viewer)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.params_label = QLabel("")
        self.params_label.setWordWrap(True)
        self.show_btn = QPushButton("Show")
        self.save_btn = QPushButton("Save...")
        self.delete_btn = QPushButton("Delete")
        self.copy_btn = QPushButton("Copy as Python")
        self.rerun_btn = QPushButton("Recompute")
        self.save_session_btn = QPushButton("Save session...")
        self.load_session_btn = QPushButton("Load session...")
        self.cancel_btn = QPushButton("Cancel")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        row1, row2 = QHBoxLayout(), QHBoxLayout()
        for b in (self.show_btn, self.save_btn, self.delete_btn, self.copy_btn):
            row1.addWidget(b)
        for b in (self.rerun_btn, self.save_session_btn, self.load_session_btn, self.cancel_btn):
            row2.addWidget(b)
        lay = QVBoxLayout(self)
        lay.addWidget(self.table)
        lay.addWidget(self.params_label)
        lay.addLayout(row1)
        lay.addLayout(row2)
        lay.addWidget(self.status)
        self.jobs = JobRunner(self.status, self.cancel_btn, buttons=(self.rerun_btn, self.load_session_btn))
        # Save... and Show read and write files in workers, apart from the Recompute job
        self.file_jobs = FileJobs(self.status, self.jobs.error)
        self.last_saved = None  # the file the last Save... wrote
        self.shown = []  # the layers the last Show added (one per event-loop turn)
        self.show_done = False  # all of them are in
        self.loaded = None  # the session of the last Load session..., once its layers and docks are back
        self._adding: dict[str, int] = {}  # the newest batch of layers being added, by purpose
        self.show_btn.clicked.connect(lambda: self.show_result())
        self.save_btn.clicked.connect(lambda: self.save_result())
        self.delete_btn.clicked.connect(lambda: self.delete_result())
        self.copy_btn.clicked.connect(lambda: self.copy_as_python())
        self.rerun_btn.clicked.connect(lambda: self.recompute())
        self.save_session_btn.clicked.connect(lambda: self.save_session())
        self.load_session_btn.clicked.connect(lambda: self.load_session())
        self.table.itemSelectionChanged.connect(self._on_select)
        self.store.changed.connect(self.refresh)
        self.refresh()

    # -- the list -----------------------------------------------------------------------------
    def refresh(self) -> None:
        entries = self.store.session.entries
        self.table.setRowCount(len(entries))
        for r, e in enumerate(entries):
            rec = e.recipe
            state = "computed" if e.name in self.store.results else "recipe only"
            values = (e.name, rec.workflow, Path(rec.input.path or "(memory)").name, rec.created_utc, state)
            for c, v in enumerate(values):
                self.table.setItem(r, c, QTableWidgetItem(str(v)))
        self.table.resizeColumnsToContents()

    def names(self) -> list[str]:
        return [e.name for e in self.store.session.entries]

    def select(self, name: str) -> None:
        self.table.selectRow(self.names().index(name))

    def selected(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self.names()[rows[0].row()] if rows else None

    def _entry(self):
        name = self.selected()
        if name is None:
            raise Napari4DSTEMError("select a result in the list first")
        return self.store.session[name]

    def _result(self):
        e = self._entry()
        res = self.store.results.get(e.name)
        if res is None:
            raise Napari4DSTEMError(f"{e.name} is a recipe only: Recompute it first")
        return e, res

    def _on_select(self) -> None:
        try:
            e = self._entry()
        except Napari4DSTEMError:
            self.params_label.setText("")
            return
        params = {k: v.changed() for k, v in e.recipe.params.items()}
        self.params_label.setText(
            f"{e.recipe.workflow} of {e.recipe.input.path}; parameters (changed from the defaults): "
            f"{json.dumps(params)}; napari-4dstem {e.recipe.software_version}"
        )

    # -- actions ------------------------------------------------------------------------------
    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except (OSError, Napari4DSTEMError) as e:
            self.jobs.error(e)
            return None

    def show_result(self) -> bool:
        """Add the selected result's maps to the real-space viewer, its diffraction images and
        peaks to the main viewer (as File > Open would). The layer data are made in a worker
        (the recipe in every object's parameters, the peaks' 4D points); the layers are added
        when they are ready. True when started."""
        try:
            e, res = self._result()
        except Napari4DSTEMError as err:
            self.jobs.error(err)
            return False
        self.file_jobs.run(_layer_data, e.name, res, desc=f"preparing the layers of {e.name}", on_done=self._add_layers)
        return True

    def _add_layers(self, prepared) -> None:
        name, items = prepared
        self.shown = []
        self.show_done = False

        def each(layer):
            self.shown.append(layer)
            self.status.setText(f"{name}: {len(self.shown)} of {len(items)} layers")

        def then(added):
            self.status.setText(f"{name}: {len(added)} layers")
            self.show_done = True

        self._add_in_turns("show", items, each, then)

    def _add_in_turns(self, purpose: str, items: list, each, then) -> None:
        """Add ``(where, kind, data, kwargs)`` layers one per event-loop turn (napari makes each
        layer's controls and visual on the GUI thread: 13 strain layers at once held it 8.2 s at
        load 18, #15), calling ``each(layer)`` after each and ``then(layers)`` after the last. A
        newer batch of the same purpose stops the older one."""
        from ._results import results_viewer

        gen = self._adding[purpose] = self._adding.get(purpose, 0) + 1
        items, added = list(items), []

        def step():
            if is_deleted(self) or self._adding.get(purpose) != gen:
                return
            if not items:
                then(added)
                return
            where, kind, data, kw = items.pop(0)
            target = self.viewer if where == "main" else results_viewer(self.viewer)
            added.append(getattr(target, f"add_{kind}")(data, **kw))
            each(added[-1])
            QTimer.singleShot(0, step)

        QTimer.singleShot(0, step)

    def save_result(self, path: str | Path | None = None) -> bool:
        """Write the selected result to EMD in a worker (asks for the path when none is
        given); True when started. ``last_saved`` is the file once written."""
        try:
            e, res = self._result()
        except Napari4DSTEMError as err:
            self.jobs.error(err)
            return False
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save result", f"{e.name}.h5", "EMD (*.h5 *.emd)")
            if not path:
                return False

        def done(out, e=e):
            e.saved_to = str(out)
            self.last_saved = out
            self.status.setText(f"wrote {out}")

        self.file_jobs.run(write_result, res, path, desc=f"writing {Path(path).name}", on_done=done)
        return True

    def delete_result(self) -> None:
        name = self.selected()
        if name is not None:
            self.store.remove(name)
            self.status.setText(f"deleted {name} from the session")

    def copy_as_python(self) -> str | None:
        def text():
            t = self._entry().recipe.to_script()
            copy_to_clipboard(t)
            self.status.setText("the script that reproduces this result is on the clipboard")
            return t

        return self._guard(text)

    def save_session(self, path: str | Path | None = None):
        def save(path):
            if path is None:
                path, _ = QFileDialog.getSaveFileName(self, "Save session", "session.json", "JSON (*.json)")
                if not path:
                    return None
            self.store.session.settings["datacubes"] = self._datacube_settings()
            self.store.session.settings["docks"] = dock_states(self.viewer)
            out = self.store.session.save(path, overwrite=True)
            self.status.setText(f"wrote {out} ({len(self.store.session.entries)} results)")
            return out

        return self._guard(save, path)

    def load_session(self, path: str | Path | None = None, *, data_folder: str | Path | None = None):
        """Load a session file: its results are listed as recipes (Recompute makes them);
        ``data_folder``: where the input files sit now, when they moved. The session's datacube
        files are read in a worker and their layers added one per event-loop turn; the docks'
        states are restored after (``loaded`` is the session then). Returns the session."""

        def load(path):
            from ..pipelines import Session

            if path is None:
                path, _ = QFileDialog.getOpenFileName(self, "Load session", "", "JSON (*.json)")
                if not path:
                    return None
            session = Session.load(path)
            if data_folder is not None:
                session = session.relocated(data_folder)
            self.store.replace_session(session)
            self.loaded = None
            todo = self._datacubes_to_open(session.settings.get("datacubes") or [], data_folder)

            def finish(opened=(), session=session, path=path):
                restore_dock_states(self.viewer, session.settings.get("docks") or {})
                self.status.setText(
                    f"loaded {len(session.entries)} results from {Path(path).name}: recipes only, "
                    "Recompute makes them" + (f"; opened {', '.join(opened)}" if opened else "")
                )
                self.loaded = session

            if not todo:
                finish()
                return session
            self.file_jobs.run(
                _read_datacube_files,
                todo,
                desc=f"opening {', '.join(Path(src).name for src, _ in todo)}",
                on_done=lambda read: self._add_datacubes(read, finish),
            )
            return session

        return self._guard(load, path)

    # -- the workspace: the open datacubes with their calibration ---------------------------------
    def _datacube_settings(self) -> list[dict[str, Any]]:
        from .._layers import calibration_from_layer_meta
        from ._results import results_viewer

        out = []
        for lyr in self.viewer.layers:
            ours = (lyr.metadata or {}).get("napari_4dstem", {})
            if getattr(lyr, "ndim", 0) == 4 and ours.get("source"):
                cal = calibration_from_layer_meta({"metadata": lyr.metadata, "scale": lyr.scale, "units": lyr.units})
                src = str(ours["source"])
                # the file's other layers open now (its maps, probe): a loaded session shows those only
                shown = [
                    other.name
                    for v in (self.viewer, results_viewer(self.viewer, create=False))
                    if v is not None
                    for other in v.layers
                    if other is not lyr and str((other.metadata or {}).get("napari_4dstem", {}).get("source")) == src
                ]
                out.append({"name": lyr.name, "source": src, "calibration": cal.to_dict(), "layers": shown})
        return out

    def _datacubes_to_open(self, entries, data_folder) -> list[tuple[str, dict]]:
        """The session's datacube files that are not open yet, as ``(path, entry)``."""
        open_sources = {str((lyr.metadata or {}).get("napari_4dstem", {}).get("source")) for lyr in self.viewer.layers}
        todo = []
        for d in entries:
            src = Path(d["source"])
            if data_folder is not None:
                src = Path(data_folder) / src.name
            if str(d["source"]) in open_sources or str(src) in open_sources:
                continue
            if not src.exists():
                raise Napari4DSTEMError(f"the session's data file {src} is not there (give the data folder)")
            todo.append((str(src), d))
        return todo

    def _add_datacubes(self, read, finish) -> None:
        """GUI thread: add the layers read in the worker, one per turn, with the session's
        calibration on each datacube (a per-pattern origin map is not in the session: calibrate
        again or load its JSON); then ``finish(opened names)``."""
        from ..data.calibration import Calibration
        from ..plugin_api import set_layer_calibration

        items, cals = [], []  # cals: the session's calibration of each datacube item, else None
        for entry, tuples in read:
            cal = Calibration.from_dict(entry["calibration"]) if entry.get("calibration") else None
            for item in _with_calibration(_session_layers(entry, tuples), cal):
                items.append(item)
                is_cube = item[1] == "image" and np.ndim(item[2]) == 4
                cals.append(cal if is_cube else None)
        opened = [Path(entry["source"]).name for entry, _ in read]
        cals.reverse()

        def each(layer):
            cal = cals.pop()
            if cal is not None:  # the layer was made with its scale: store it where the docks read it
                set_layer_calibration(self.viewer, layer, cal)

        def then(added):
            self.status.setText(f"opened {len(added)} layers")
            finish(opened)

        self._add_in_turns("load", items, each, then)

    def recompute(self) -> bool:
        """Make the selected result again from its input file, in a worker."""
        try:
            e = self._entry()
        except Napari4DSTEMError as err:
            self.jobs.error(err)
            return False

        def done(res):
            self.store.results[e.name] = res
            self.store.changed.emit()
            self.status.setText(f"{e.name} recomputed")

        return self.jobs.start(e.recipe.iter_run, desc=f"recomputing {e.name}", on_done=done)
