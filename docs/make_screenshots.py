"""Take the documentation screenshots from the real plugin in napari.

Run under a virtual screen:  xvfb-run -a python docs/make_screenshots.py
Writes docs/images/*.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "images"
ROOT = Path(__file__).resolve().parents[1]


def _grab(viewer, name: str) -> Path:
    """The whole window of a napari viewer; the canvas only of the Real space dock's viewer."""
    from qtpy.QtWidgets import QApplication

    for _ in range(20):
        QApplication.processEvents()
    path = OUT / name
    if hasattr(viewer, "screenshot"):
        viewer.screenshot(str(path), canvas_only=False, flash=False)
    else:  # the Real space dock (a ViewerModel drawn in the main window)
        import matplotlib.pyplot as plt

        from napari_4dstem.widgets._multiview import canvas_image

        plt.imsave(path, canvas_image(viewer))
    print(f"wrote {path}")
    return path


def sample_in_napari() -> None:
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1100, 760)
    layers = viewer.open_sample("napari-4dstem", "strained_crystal")
    cube = next(lyr for lyr in layers if lyr.ndim == 4)
    viewer.dims.set_point(0, 20 * cube.scale[0])
    viewer.dims.set_point(1, 26 * cube.scale[1])
    viewer.layers.selection.active = cube
    viewer.scale_bar.visible = True
    viewer.reset_view()
    _grab(viewer, "napari_sample_strained_crystal.png")
    viewer.close()


def virtual_imaging() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1800, 950)
    viewer.open_sample("napari-4dstem", "polycrystal_au")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    # the live image goes to the Real space canvas, a dock beside this one
    import time

    for _ in range(400):  # the bright-field disk first (its detector would replace ours)
        QApplication.processEvents()
        if not w._bf_pending and w._worker is None:
            break
        time.sleep(0.05)
    # an annular dark-field detector over the Bragg disks: the grains light up differently
    w.kind_combo.setCurrentText("Annulus")
    w.r_in.setValue(15.0)
    w.r_out.setValue(50.0)
    for _ in range(200):  # wait for the worker
        QApplication.processEvents()
        if w._worker is None and w._pending is None and w.last_image is not None:
            break
        import time

        time.sleep(0.05)
    w.set_scan_position(8, 20)
    viewer.layers.selection.active = viewer.layers["polycrystal_au"]
    viewer.reset_view()
    from napari_4dstem.widgets._results import results_viewer

    rs = results_viewer(viewer, create=False)
    qt_window = viewer.window._qt_window
    docks = [
        viewer.window.dock_widgets[n]
        for n in ("Virtual imaging (napari-4dstem)", "Real space")
        if n in viewer.window.dock_widgets
    ]
    if len(docks) == 2:  # room for the pattern on the main canvas
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QDockWidget

        def dock_of(widget):
            while widget is not None and not isinstance(widget, QDockWidget):
                widget = widget.parent()
            return widget

        qt_window.resizeDocks([dock_of(d) for d in docks], [440, 470], Qt.Orientation.Horizontal)
    for _ in range(20):
        QApplication.processEvents()
    viewer.reset_view()
    if rs is not None:
        rs.reset_view()
    _grab(viewer, "virtual_imaging_widget.png")
    viewer.close()


def series_and_raw() -> None:
    """The Series dock (a drifting time series of the gold sample, frame 2 shown), its compare grid
    of both samples under one ADF detector, a watched folder; and the raw-layout form."""
    import tempfile
    import time

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    def settle(cond, n=1200):
        for _ in range(n):
            QApplication.processEvents()
            if cond():
                return
            time.sleep(0.05)
        raise TimeoutError(f"screenshot: gave up waiting ({s.status.text()!r})")

    tmp = Path(tempfile.mkdtemp())
    viewer = napari.Viewer(show=True)
    viewer.window.resize(2000, 1000)
    gold = next(lyr for lyr in viewer.open_sample("napari-4dstem", "polycrystal_au") if lyr.ndim == 4)
    viewer.open_sample("napari-4dstem", "strained_crystal")
    from napari_4dstem.widgets._common import layer_datacube
    from napari_4dstem.widgets.series import series_from_array

    # a time series with drift: the gold scan rolled 3 columns a frame, with the sample's calibration
    data = np.asarray(gold.data)
    drift = np.stack([np.roll(data, 3 * k, axis=1) for k in range(4)])
    _, s = viewer.window.add_plugin_dock_widget("napari-4dstem", "Series, compare and watch")
    s.set_series(series_from_array(drift, layer_datacube(gold)[1], name="drift"))
    settle(lambda: len(s.frames) == 4)
    vdock, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    w.layer_combo.setCurrentText("series")
    settle(lambda: not w._bf_pending and w._worker is None and w.last_image is not None)
    w.kind_combo.setCurrentText("Annulus")  # dark field over the Bragg disks: the grains show
    w.r_in.setValue(15.0)
    w.r_out.setValue(50.0)
    settle(lambda: w._worker is None and w._pending is None)
    s.slider.setValue(2)
    settle(lambda: w._worker is None and w._pending is None and not w._timer.isActive())
    s.compare("open 4D layers")
    settle(lambda: s._compare_worker is None)
    (tmp / "acq").mkdir()
    s.watch(tmp / "acq")
    (tmp / "acq" / "scan_007.npy").write_bytes(b"\x93NUMPY" + b"x" * 50)
    s.poll()
    settle(lambda: s._poll_worker is None)
    viewer.layers.selection.active = viewer.layers["series"]
    vdock.hide()  # room for the Compare and Real space canvases (the dock's keys stay bound)
    for _ in range(20):
        QApplication.processEvents()
    s._compare_model.reset_view()
    from napari_4dstem.widgets._results import results_viewer

    results_viewer(viewer).reset_view()
    for lyr in viewer.layers:
        if lyr.ndim == 4 and lyr.name != "series":
            lyr.visible = False
    viewer.reset_view()
    _grab(viewer, "series_compare_watch.png")
    viewer.close()
    # the raw-layout form with a raw file of header and footers that fits (green)
    frames = (np.arange(12 * 64 * 64) % 4096).astype(">u2").reshape(12, 64, 64)
    with open(tmp / "scan.bin", "wb") as f:
        f.write(b"H" * 512)
        for fr in frames:
            f.write(b"\0" * 16 + fr.tobytes() + b"\0" * 8)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1000, 700)
    _, r = viewer.window.add_plugin_dock_widget("napari-4dstem", "Open raw binary file")
    r.set_path(tmp / "scan.bin")
    r.header.setValue(512)
    r.frame_header.setValue(16)
    r.frame_footer.setValue(8)
    r.endian.setCurrentText("big")
    r.k_rows.setValue(64)
    r.k_cols.setValue(64)
    r.scan_shape.setCurrentText("3 x 4")
    _grab(viewer, "raw_layout_form.png")
    viewer.close()


def _wait(w, attr):
    import time

    from qtpy.QtWidgets import QApplication

    for _ in range(2400):
        QApplication.processEvents()
        if getattr(w, attr) is not None and w._worker is None:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{attr}: {w.status.text()}")


def _wait_for(cond, why=lambda: "", timeout_s: float = 300.0) -> None:
    """Process Qt events until ``cond()`` (a worker's result shown), else TimeoutError."""
    import time

    from qtpy.QtWidgets import QApplication

    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError(why())
        QApplication.processEvents()
        time.sleep(0.05)


def calibration_dpc() -> None:
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1900, 1000)
    viewer.open_sample("napari-4dstem", "strained_crystal")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Calibration and DPC")
    w.measure_btn.click()
    _wait(w, "origin_fit")
    w.compute_com()
    _wait(w, "com")
    w.measure_disk()  # the bright-field disk: the sample's 1.575 mrad <-> its pixel size
    _wait(w, "disk")
    import time

    from qtpy.QtWidgets import QApplication

    for _ in range(1200):  # the DPC maps follow the COM in a worker: hide them once they are in
        QApplication.processEvents()
        if w.result is not None and not w._dpc_runner.busy:
            break
        time.sleep(0.05)
    results = w.results()
    for lyr in results.layers:
        lyr.visible = lyr.name == "origin k_x (measured)"
    results.layers.selection.active = results.layers["origin k_x (measured)"]
    results.reset_view()
    viewer.layers.selection.active = viewer.layers["strained_crystal"]
    viewer.reset_view()
    _grab(viewer, "calibration_dpc_widget.png")
    _grab(results, "realspace_viewer_origin.png")
    viewer.close()


def orientation_mapping() -> None:
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1900, 1000)
    viewer.open_sample("napari-4dstem", "polycrystal_au")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Orientation mapping")
    w.crystal_combo.setCurrentText("Au")
    cube = viewer.layers["polycrystal_au"]
    # a pattern in the grain near [011]
    viewer.dims.set_point(0, 12 * cube.scale[0])
    viewer.dims.set_point(1, 3 * cube.scale[1])
    w.run_scan()
    _wait(w, "result")
    w.check_pattern()
    _wait(w, "check")
    print(w.status.text())
    results = w.results()
    results.reset_view()
    viewer.layers.selection.active = cube
    viewer.reset_view()
    _grab(viewer, "orientation_widget.png")
    _grab(results, "orientation_ipf_map.png")
    viewer.close()


def bragg_strain() -> None:
    import time

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1900, 1050)
    viewer.open_sample("napari-4dstem", "strained_crystal")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Bragg disks and strain")
    w.template_btn.click()
    _wait(w, "template")  # a worker: one job at a time
    w.run_btn.click()
    for _ in range(1200):
        QApplication.processEvents()
        if w.peaks is not None and w._worker is None:
            break
        time.sleep(0.05)
    from napari_4dstem.widgets._results import results_viewer

    _wait(w, "lattice")  # found in a worker after the disks
    results = results_viewer(viewer)
    w.restore_extra({"reference": [0, 8, 0, 8]})  # the reference rectangle, as a session gives it
    w.strain_btn.click()
    _wait(w, "strain")
    viewer.dims.set_point(0, 20.0)
    viewer.dims.set_point(1, 26.0)
    viewer.layers.selection.active = viewer.layers["strained_crystal"]
    viewer.reset_view()
    for lyr in results.layers:
        lyr.visible = lyr.name in ("e_xx", "strain reference", "scan position")
    results.layers.selection.active = results.layers["e_xx"]
    results.reset_view()
    _grab(viewer, "bragg_strain_widget.png")
    _grab(results, "realspace_viewer_strain.png")
    viewer.close()


def bragg_network() -> None:
    """The Bragg dock with the *neural network* method: its live disks on the pattern."""
    import time

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1900, 1050)
    viewer.open_sample("napari-4dstem", "strained_crystal")
    viewer.dims.set_point(0, 20.0)
    viewer.dims.set_point(1, 26.0)
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Bragg disks and strain")
    for _ in range(1200):  # the model list arrives from a worker
        QApplication.processEvents()
        if w.model_combo.listed:
            break
        time.sleep(0.05)
    w.method.setCurrentText("neural network")
    for _ in range(2400):
        QApplication.processEvents()
        if "(network)" in w.live_label.text() and not w._live.busy:
            break
        time.sleep(0.05)
    print(w.live_label.text())
    viewer.layers.selection.active = viewer.layers["strained_crystal"]
    viewer.reset_view()
    _grab(viewer, "bragg_network_method.png")
    viewer.close()


def nn_detection() -> None:
    """The NN widget previewing a held-out multislice pattern (Au [001], 30 nm, strained)."""
    import napari
    import numpy as np

    from napari_4dstem.nn.evaluate import load_scans

    scans, _ = load_scans(ROOT / "tests" / "nn" / "fixtures" / "multislice_seed17.npz")
    s = next(sc for sc in scans if sc.datacube.name.startswith("multislice_Au_300"))
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 900)
    viewer.add_image(np.asarray(s.datacube.data), name=s.datacube.name, colormap="gray", gamma=0.4)
    viewer.add_image(np.asarray(s.probe.data), name="probe", visible=False)
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "NN disk detection")
    w.layer_combo.setCurrentText(s.datacube.name)
    w.probe_combo.setCurrentText("probe")
    viewer.dims.set_point(0, 3.0)
    viewer.dims.set_point(1, 4.0)
    _wait_for(lambda: w.model_combo.listed, lambda: "the model list never came")  # listed in a worker
    # the preview runs in a worker (newest request wins): the "NN prediction" layer comes when it
    # is done (taken at once, the layer was not there yet: KeyError)
    w.preview()
    _wait_for(lambda: not w._previewer.busy, lambda: w.status.text())
    if w.last_preview is None:
        raise RuntimeError(f"NN preview failed: {w.status.text()}")
    viewer.layers["NN prediction"].opacity = 0.6
    viewer.reset_view()
    _grab(viewer, "nn_widget.png")
    viewer.close()


def simulation_training() -> None:
    """The Simulate tab after a preview, and the Train tab with the live curves of a short run
    on proxy shards (models go to a temporary user folder, not the real one)."""
    import os
    import tempfile
    import time

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_4dstem.nn.synthetic import write_training_shards

    def wait(cond, timeout_s=600):
        t0 = time.perf_counter()
        while not cond():
            QApplication.processEvents()
            time.sleep(0.05)
            if time.perf_counter() - t0 > timeout_s:
                raise TimeoutError

    tmp = Path(tempfile.mkdtemp(prefix="napari4dstem-shots-"))
    os.environ["NAPARI_4DSTEM_USER_MODELS"] = str(tmp / "user-models")
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1700, 1050)
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Simulation and training data")
    w.size.setValue(128)
    w.pixel[0].setValue(0.012)
    w.pixel[1].setValue(0.016)
    w.thickness[1].setValue(150.0)
    w.sim_out.setText(str(tmp / "set"))
    w.preview_index.setValue(4)
    w.preview()
    wait(lambda: w.preview_result is not None and not w.sim_jobs.busy)
    viewer.reset_view()
    _grab(viewer, "simulation_widget.png")

    write_training_shards(tmp / "proxy", n_patterns=64, per_shard=32, seed=1)
    w.tabs.setCurrentIndex(1)
    w.shard_dir.setText(str(tmp / "proxy"))
    w.train_out.setText(str(tmp / "run"))
    w.epochs.setValue(3)
    w.steps.setValue(8)
    w.batch.setValue(4)
    w.width.setValue(2)
    w.strain_check.setChecked(False)
    w.train_btn.click()
    wait(lambda: w.exported is not None and not w.train_jobs.busy)
    print(w.train_status.text())
    _grab(viewer, "training_widget.png")
    viewer.close()


def classification() -> None:
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1900, 900)
    viewer.open_sample("napari-4dstem", "polycrystal_au")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Classification")
    w.run_btn.click()
    _wait(w, "result")
    cube = viewer.layers["polycrystal_au"]
    viewer.dims.set_point(0, 8 * cube.scale[0])
    viewer.dims.set_point(1, 20 * cube.scale[1])
    viewer.layers.selection.active = cube
    viewer.reset_view()
    from napari_4dstem.widgets._results import results_viewer

    results = results_viewer(viewer)
    results.reset_view()
    _grab(viewer, "classification_widget.png")
    _grab(results, "classification_labels.png")
    viewer.close()


def workspace_all_docks() -> None:
    """Every dock of the plugin open at once on a 1920 x 1080 screen: the docks that fit docked,
    the others floating, cascaded (no tabs). The whole screen is grabbed (floating docks are
    windows of their own). Run under ``xvfb-run -a -s "-screen 0 1920x1080x24"``."""
    import time

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_4dstem.widgets._results import REAL_SPACE_DOCK

    def settle(cond, timeout_s=120.0):
        t0 = time.time()
        while not cond() and time.time() - t0 < timeout_s:
            QApplication.processEvents()
            time.sleep(0.01)

    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-4dstem", "polycrystal_au")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    settle(lambda: w.last_image is not None and w._worker is None and REAL_SPACE_DOCK in viewer.window.dock_widgets)
    for name in (
        "Bragg disks and strain",
        "Calibration and DPC",
        "Orientation mapping",
        "Phase retrieval",
        "Classification",
        "NN disk detection",
        "Simulation and training data",
        "Result pane",
        "Log",
        "Series, compare and watch",
        "Keyboard shortcuts",
        "Results",
        "Scan shape",
        "Open raw binary file",
    ):
        viewer.window.add_plugin_dock_widget("napari-4dstem", name)
        settle(lambda: False, 0.3)
    qt_window = viewer.window._qt_window
    screen = QApplication.primaryScreen()
    room = screen.availableGeometry()
    qt_window.setGeometry(room)  # as a maximized window (no window manager under Xvfb)
    settle(lambda: False, 2.0)
    path = OUT / "workspace_all_docks.png"
    screen.grabWindow(0).save(str(path))
    print(f"wrote {path} ({room.width()} x {room.height()} screen)")
    viewer.close()


def demo_figures() -> None:
    import shutil
    import tempfile

    from napari_4dstem.demo import run_demo

    with tempfile.TemporaryDirectory() as d:
        ctx = run_demo(d)
        for f in ctx.figures:
            shutil.copy(f, OUT / f"demo_{f.name}")
            print(f"wrote {OUT / f'demo_{f.name}'}")


def main() -> int:
    OUT.mkdir(exist_ok=True)
    sample_in_napari()
    virtual_imaging()
    calibration_dpc()
    orientation_mapping()
    bragg_strain()
    bragg_network()
    nn_detection()
    simulation_training()
    classification()
    series_and_raw()
    demo_figures()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1:  # e.g. `make_screenshots.py orientation_mapping`: only those
        OUT.mkdir(exist_ok=True)
        for name in sys.argv[1:]:
            globals()[name]()
        sys.exit(0)
    sys.exit(main())
