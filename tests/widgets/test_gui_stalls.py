"""GUI-thread stalls and slow first use left open by the UX audit of session 12 (#15; the table
"UX audit, session 12" in docs/napari-widgets.md): each test drives a real napari viewer with the
stall detector on (the GUI thread must not compute more than 50 ms) and failed on the code before
its fix."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _large_scan(tmp_path, ny=1024, nx=1024, k=12):
    """A ``ny x nx`` scan of ``k x k`` uint16 patterns (a 1 Mpx scan: 288 MiB) in a .npy with a
    bright-field disk (radius ~2 px: every preset has pixels), and its sum image."""
    yy, xx = np.mgrid[0:k, 0:k]
    disk = ((yy - k / 2 + 0.5) ** 2 + (xx - k / 2 + 0.5) ** 2 < 4.6).astype(np.uint16)
    sy, sx = np.mgrid[0:ny, 0:nx]
    amp = (100 + 20 * np.sin(sy / 9.0) + 10 * np.cos(sx / 13.0)).astype(np.uint16)
    path = tmp_path / "big_scan.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(ny, nx, k, k))
    for r in range(0, ny, 128):  # row blocks: no 1 GiB temporary
        mm[r : r + 128] = amp[r : r + 128, :, None, None] * disk + 1
    mm.flush()
    total = np.zeros((ny, nx), np.float64)
    for r in range(0, ny, 128):
        total[r : r + 128] = mm[r : r + 128].sum(axis=(2, 3), dtype=np.float64)
    del mm
    return path, total


def test_the_sum_image_of_a_1024_by_1024_scan_fills_in_without_stalling_the_gui_thread(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """#15 (audit row 15, UX 1): on a 1024 x 1024 scan the sum image's steps (and the live image)
    were made ready to show on the GUI thread at every draw: display transform, contrast
    percentiles, histogram and statistics of 1 Mpx (``LiveImage.set_cover``: 60-130 ms of GUI CPU a
    step here in Log). Now the presets' worker prepares each step with the dock's display settings,
    and the GUI thread only sets the layer's data. Known answer: the exact sum image, its Log
    display, its 1-99 % limits, histogram and statistics."""
    with stall_detector.excluded("reference"):
        from napari_4dstem.engine import chunks, driver
        from napari_4dstem.widgets import virtual
        from napari_4dstem.widgets._realspace import display_transform

        path, total = _large_scan(tmp_path)
    monkeypatch.setattr(virtual, "LAZY_PROGRESS_BYTES", 2**20)  # fills in with progress
    monkeypatch.setattr(driver, "_TARGET_BLOCK_BYTES", 8 * 2**20)
    monkeypatch.setattr(chunks, "_TARGET_BLOCK_BYTES", 8 * 2**20)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    li = w.realspace
    li.scale_combo.setCurrentText("Log")  # the display the user chose before the file came
    li.range_combo.setCurrentText("1-99 %")
    drawn = []
    show_sum = w._show_sum

    def spy(img, limits, text, **kw):
        drawn.append(text)
        return show_sum(img, limits, text, **kw)

    w._show_sum = spy
    with stall_detector.excluded("first layer add"):
        viewer.open(str(path), plugin="napari-4dstem")
    qtbot.waitUntil(lambda: w.presets_ready and w._preset_worker is None and w._worker is None, timeout=180000)
    assert any("filling in" in t for t in drawn) and "exact" in drawn[-1], drawn
    with stall_detector.excluded("reference"):
        want = display_transform(total.astype(np.float32), "Log")
        lo, hi = np.percentile(want, (1.0, 99.0))
    layer = li.viewer(create=False).layers[virtual.SUM_LAYER]
    assert li.shown_name == virtual.SUM_LAYER
    np.testing.assert_allclose(layer.data, want, rtol=1e-5)
    np.testing.assert_allclose(layer.contrast_limits, (lo, hi), rtol=1e-5)
    np.testing.assert_allclose(li.histogram.clim, (lo, hi), rtol=1e-5)
    assert f"sum {total.sum():.4g}" in li.stats.text() and f"max {total.max():.4g}" in li.stats.text()
    # the live image under it (the BF image, 1 Mpx: made ready in the dock's worker) in Log too
    qtbot.waitUntil(lambda: not li.preparing, timeout=30000)
    live = li.viewer(create=False).layers[li.name]
    with stall_detector.excluded("reference"):
        want_bf = display_transform(w.last_image.data.astype(np.float32), "Log")
        bf_lim = np.percentile(want_bf, (1.0, 99.0))
    np.testing.assert_allclose(live.data, want_bf, rtol=1e-5)
    np.testing.assert_allclose(live.contrast_limits, bf_lim, rtol=1e-5)


def test_the_simulation_preview_adds_its_layers_one_per_turn_then_updates_them_in_place(
    make_napari_viewer, qtbot, stall_detector, tmp_path
):
    """#15 (audit row 11): the Simulation dock's Preview built its six layers in one slot (5.1 s
    wall / 1.0 s GUI CPU under load) and, for every later preview, set each layer's scale and
    translate again (napari recomputes the dims of all layers at each set: 0.4-0.5 s of GUI CPU).
    Now the panels are made in the worker, the first preview adds one layer per event-loop turn,
    and a later one updates the same layers in place, setting only what changed. Known answer:
    each panel is the log10 of the simulated (and augmented) pattern the preview returned."""
    from napari_4dstem.widgets import simulation as simw

    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Simulation and training data")
    w.size.setValue(64)
    w.pixel[0].setValue(0.02)
    w.pixel[1].setValue(0.03)
    w.engine_combo.setCurrentText("kinematic")
    added_in_one_call = []
    on_preview = w._on_preview

    def spy(out):
        n = len(viewer.layers)
        on_preview(out)
        added_in_one_call.append(len(viewer.layers) - n)

    w._on_preview = spy
    names = (*simw.PANELS, simw.BRAGG_LAYER, simw.AUG_BRAGG_LAYER)
    layers = None
    for index in (3, 4, 5):
        w.preview_index.setValue(index)
        assert w.preview()
        stall_detector.step()
        qtbot.waitUntil(lambda: w.preview_result is not None and not w.sim_jobs.busy, timeout=120000)
        params, sim, aug = w.preview_result
        assert params.index == index
        with stall_detector.excluded("reference"):
            pat = np.asarray(sim["pattern"], np.float32)
            want = np.log10(np.maximum(pat, max(float(pat.max()) * 1e-6, 1e-12)))
            want_aug = np.log10(1.0 + np.maximum(np.asarray(aug.pattern, np.float32), 0.0))
        np.testing.assert_allclose(viewer.layers[simw.PATTERN_LAYER].data, want, rtol=1e-6)
        np.testing.assert_allclose(viewer.layers[simw.AUG_LAYER].data, want_aug, rtol=1e-6)
        np.testing.assert_allclose(viewer.layers[simw.BRAGG_LAYER].data[:, 0], np.asarray(sim["bragg"]["qy"]))
        assert len(viewer.layers[simw.AUG_BRAGG_LAYER].data) == len(aug.bragg_qy)
        now = [viewer.layers[n] for n in names]
        if layers is not None:
            assert all(a is b for a, b in zip(now, layers, strict=True))  # the same layers, updated in place
        layers = now
    assert added_in_one_call == [1, 0, 0], added_in_one_call  # first preview: one layer a turn


def test_the_samples_layer_is_chunked_like_its_file_so_a_scan_step_reads_one_chunk(
    make_napari_viewer, qtbot, stall_detector
):
    """#15 (audit row 15, the scan drag on the bundled sample): the dataset layer's dask array was
    one 32 MiB chunk over the file's sixteen 8 x 8-pattern HDF5 chunks, so every scan step napari
    sliced copied the whole cube out of HDF5's cache (benchmarks/ux_audit/s9_gui_stalls.py: step to
    canvas 490 ms median against napari alone's 385 ms in RAM at load 12-14). The layer of an HDF5
    file chunked over several positions now has the file's chunks (373 ms). Known answer: the
    pattern napari slices at a scan step is the file's."""
    import h5py

    from napari_4dstem._sample_data import sample_path

    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        viewer.open_sample("napari-4dstem", "strained_crystal")
    cube = viewer.layers["strained_crystal"]
    with stall_detector.excluded("reference"), h5py.File(sample_path("strained_crystal"), "r") as f:
        ds = f["strained_crystal_root/strained_crystal/data"]
        storage = ds.chunks
        want = ds[21, 9]
    assert tuple(cube.data.chunksize) == storage  # (8, 8, 128, 128); the old code: (32, 32, 128, 128)
    viewer.dims.current_step = (21, 9, *viewer.dims.current_step[2:])
    qtbot.wait(50)
    np.testing.assert_array_equal(np.asarray(cube.data[21, 9]), want)
    # the docks still compute on it: the Virtual imaging dock's first image is the BF image
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None, timeout=60000)
    with stall_detector.excluded("reference"):
        from napari_4dstem.analysis.virtual.images import virtual_image

        data = np.asarray(cube.data)
        ref = virtual_image(data, w._last_detector).data
    np.testing.assert_allclose(w.last_image.data, ref, rtol=1e-5)
