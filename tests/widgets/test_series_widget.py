"""The Series dock in a real viewer: frame slider over a 5D series, compare grid, watched folder."""

import numpy as np
import pytest

from napari_4dstem.widgets.series import SERIES_LAYER, SeriesWidget

pytestmark = pytest.mark.gui

DOCK = "Series, compare and watch"


def _series(n_frames=3, scan=(6, 7), det=(24, 24), seed=0):
    """Frames that differ: a bright disk whose radius and brightness change with the frame, on noise."""
    rng = np.random.default_rng(seed)
    ky, kx = np.mgrid[: det[0], : det[1]]
    r = np.hypot(ky - det[0] / 2, kx - det[1] / 2)
    out = np.empty((n_frames, *scan, *det), np.uint16)
    for k in range(n_frames):
        disk = (r < 4 + k).astype(np.float64) * (200 + 50 * k)
        out[k] = rng.poisson(disk + 3.0, size=(*scan, *det)).astype(np.uint16)
    return out


def _virtual(data, det):
    from napari_4dstem.analysis.virtual.images import virtual_image

    return virtual_image(np.asarray(data), det).data


def _settled(w):
    return w._worker is None and w._pending is None and not w._timer.isActive() and w.last_image is not None


def test_frame_slider_shows_exactly_each_frame(make_napari_viewer, qtbot, tmp_path, stall_detector):
    data = _series()
    np.save(tmp_path / "tilt.npy", data)
    viewer = make_napari_viewer()
    _, s = viewer.window.add_plugin_dock_widget("napari-4dstem", DOCK)
    assert isinstance(s, SeriesWidget)
    with stall_detector.excluded("first layer add"):
        s.open_files([str(tmp_path / "tilt.npy")])
        qtbot.waitUntil(lambda: SERIES_LAYER in viewer.layers, timeout=20000)
    layer = viewer.layers[SERIES_LAYER]
    assert len(s.frames) == 3 and s.slider.maximum() == 2 and s.slider.isEnabled()
    assert s.status.text() == "series of 3 frames: scan 6 x 7, detector 24 x 24"
    assert layer.data.shape == data.shape[1:]
    _, v = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    qtbot.waitUntil(lambda: _settled(v) and v.presets_ready, timeout=30000)
    det = v.current_detector()
    np.testing.assert_array_equal(v.last_image.data, _virtual(data[0], det))
    v.set_scan_position(4, 5)
    for k in (2, 1):
        s.slider.setValue(k)
        assert s.frame == k and s.frame_box.value() == k
        assert f"frame {k} of 0..2" in s.frame_label.text()
        # the pattern on the canvas is frame k's, at the scan position
        np.testing.assert_array_equal(np.asarray(layer._slice.image.raw), data[k, 4, 5])
        # the virtual image follows, same detector, computed in the dock's worker
        qtbot.waitUntil(lambda: _settled(v), timeout=30000)
        assert v.current_detector() == det
        np.testing.assert_array_equal(v.last_image.data, _virtual(data[k], det))
    # ] and [ of the Virtual imaging dock step the frames while it shows the series
    (nxt,) = [f for k, f in viewer.keymap.items() if str(k) == "]"]
    (prev,) = [f for k, f in viewer.keymap.items() if str(k) == "["]
    nxt(viewer)
    assert s.frame == 2 and s.slider.value() == 2
    stall_detector.step()
    prev(viewer)
    assert s.frame == 1
    np.testing.assert_array_equal(np.asarray(layer._slice.image.raw), data[1, 4, 5])
    # the presets were computed again for the new frame: a preset shows frame 1's image. The dock
    # takes the new frame in its own event-loop turn; until then presets_ready is still frame 2's
    # (a race seen once in session 12): wait for frame 1's live image first
    with stall_detector.excluded("reference"):
        want = _virtual(data[1], det)
    qtbot.waitUntil(lambda: _settled(v) and np.array_equal(v.last_image.data, want), timeout=30000)
    qtbot.waitUntil(lambda: v.presets_ready, timeout=30000)
    v.apply_preset("ADF")
    qtbot.waitUntil(lambda: _settled(v), timeout=30000)
    np.testing.assert_array_equal(v.last_image.data, _virtual(data[1], v.current_detector()))
    # a series from a 4D array of the wrong kind: a clear error
    from napari_4dstem.errors import Napari4DSTEMError
    from napari_4dstem.widgets.series import series_from_array

    with pytest.raises(Napari4DSTEMError, match="5D"):
        series_from_array(data[0])


def test_series_of_4d_files_and_the_compare_grid(make_napari_viewer, qtbot, tmp_path, stall_detector):
    data = _series(n_frames=3, seed=1)
    paths = []
    for k in range(3):
        paths.append(str(tmp_path / f"scan_{k}.npy"))
        np.save(paths[-1], data[k])
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        viewer.open(paths[0], plugin="napari-4dstem")
        viewer.open(paths[2], plugin="napari-4dstem")
    _, s = viewer.window.add_plugin_dock_widget("napari-4dstem", DOCK)
    # no detector yet: the grid says what it needs
    assert s.compare() is False
    assert "Virtual imaging" in s.status.text()
    _, v = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    qtbot.waitUntil(lambda: _settled(v), timeout=30000)
    det = v.current_detector()
    # the open 4D layers, one image each, computed in a worker
    assert s.compare("open 4D layers")
    qtbot.waitUntil(lambda: s._compare_worker is None, timeout=30000)
    assert sorted(s.compare_images) == ["scan_0", "scan_2"]
    np.testing.assert_array_equal(s.compare_images["scan_0"], _virtual(data[0], det))
    np.testing.assert_array_equal(s.compare_images["scan_2"], _virtual(data[2], det))
    model = s._compare_model
    assert [lyr.name for lyr in model.layers] == ["scan_0", "scan_2", "tile names"]
    assert list(model.layers["tile names"].features["name"]) == ["scan_0", "scan_2"]
    np.testing.assert_array_equal(model.layers["scan_2"].data, _virtual(data[2], det))
    # side by side: the second tile one cell (7 columns and a gap) to the right
    assert model.layers["scan_0"].translate[1] == 0.0
    assert model.layers["scan_2"].translate[1] > 7 * model.layers["scan_2"].scale[1]
    assert "2 images" in s.status.text()
    # the grid follows the detector: a new detector in the Virtual imaging dock, a new grid
    from napari_4dstem.analysis.virtual.detectors import AnnulusDetector

    s.follow_detector.setChecked(True)
    ring = AnnulusDetector(det.center_px, 5.0, 10.0)
    v.set_detector(ring)
    qtbot.waitUntil(lambda: _settled(v) and s._compare_worker is None and s._grid_detector == ring, timeout=30000)
    np.testing.assert_array_equal(s.compare_images["scan_0"], _virtual(data[0], ring))
    np.testing.assert_array_equal(s.compare_images["scan_2"], _virtual(data[2], ring))
    s.follow_detector.setChecked(False)
    v.set_detector(det)
    qtbot.waitUntil(lambda: _settled(v), timeout=30000)
    # a series of the three files, then the grid over its frames
    with stall_detector.excluded("first layer add"):
        s.open_files(paths)
        qtbot.waitUntil(lambda: SERIES_LAYER in viewer.layers and len(s.frames) == 3, timeout=20000)
    assert [f.source for f in s.frames] == paths
    assert s.compare("series frames", detector=det)
    qtbot.waitUntil(lambda: s._compare_worker is None, timeout=30000)
    assert sorted(s.compare_images) == ["frame 0", "frame 1", "frame 2"]
    for k in range(3):
        np.testing.assert_array_equal(s.compare_images[f"frame {k}"], _virtual(data[k], det))
    # a file of another shape is not a frame of this series
    np.save(tmp_path / "other.npy", data[0, :, :3])
    s.open_files([paths[0], str(tmp_path / "other.npy")])
    qtbot.waitUntil(lambda: not s.files.busy, timeout=20000)
    assert "differs from the series'" in s.status.text()
    assert len(s.frames) == 3


def test_a_watched_folder_appends_a_file_only_once_it_is_complete(make_napari_viewer, qtbot, tmp_path):
    data = _series(n_frames=2, seed=2)
    folder = tmp_path / "acq"
    folder.mkdir()
    viewer = make_napari_viewer()
    _, s = viewer.window.add_plugin_dock_widget("napari-4dstem", DOCK)

    def poll():
        s.poll()
        qtbot.waitUntil(lambda: s._poll_worker is None, timeout=20000)

    s.watch(folder, poll_ms=3_600_000)  # the test polls by hand
    qtbot.waitUntil(lambda: s._poll_worker is None, timeout=20000)
    assert s.badge_state == "Watching" and "0 frames" in s.badge.text()
    # the first acquisition, written in two steps (a detector writing a file)
    np.save(tmp_path / "full.npy", data[0])
    blob = (tmp_path / "full.npy").read_bytes()
    target = folder / "scan_000.npy"
    target.write_bytes(blob[: len(blob) // 2])
    poll()
    assert s.badge_state == "Waiting for file" and "scan_000.npy" in s.badge.text()
    poll()  # same size, but it does not open (truncated): still waiting, not yet an error
    assert s.badge_state == "Waiting for file" and "not readable yet" in s.badge.text()
    assert s.frames == [] and SERIES_LAYER not in viewer.layers
    with open(target, "ab") as f:
        f.write(blob[len(blob) // 2 :])
    poll()  # its size changed: still being written as far as anyone can tell
    assert s.badge_state == "Waiting for file" and s.frames == []
    poll()  # stable and it opens: the first frame
    assert s.badge_state == "Watching" and "1 frames" in s.badge.text()
    assert len(s.frames) == 1
    np.testing.assert_array_equal(np.asarray(viewer.layers[SERIES_LAYER].data), data[0])
    # the next acquisition appears as frame 1 and is shown (follow the newest)
    np.save(folder / "scan_001.npy", data[1])
    poll()
    assert len(s.frames) == 1
    poll()
    assert len(s.frames) == 2 and s.frame == 1
    np.testing.assert_array_equal(np.asarray(viewer.layers[SERIES_LAYER].data), data[1])
    s.stop_watching()
    assert s.badge_state == "Not watching"


def test_a_corrupt_file_in_the_watched_folder_gives_the_error_badge(make_napari_viewer, qtbot, tmp_path):
    folder = tmp_path / "acq"
    folder.mkdir()
    viewer = make_napari_viewer()
    _, s = viewer.window.add_plugin_dock_widget("napari-4dstem", DOCK)
    s.give_up_s = 0.0  # a file that stays unreadable is an error at once

    def poll():
        s.poll()
        qtbot.waitUntil(lambda: s._poll_worker is None, timeout=20000)

    s.watch(folder, poll_ms=3_600_000)
    qtbot.waitUntil(lambda: s._poll_worker is None, timeout=20000)
    (folder / "broken.npy").write_bytes(b"this is not an npy file at all" * 10)
    poll()
    assert s.badge_state == "Waiting for file"
    poll()
    assert s.badge_state == "Error"
    assert "broken.npy" in s.badge.text() and "not a 4D-STEM file" in s.badge.text()
    assert s.frames == []
    # a good file beside it is still taken; the broken one keeps the badge red
    np.save(folder / "good.npy", _series(n_frames=1)[0])
    poll()
    poll()
    assert len(s.frames) == 1 and s.badge_state == "Error"
    # the broken file replaced by a good one: taken, and the badge says Watching
    np.save(tmp_path / "fixed.npy", _series(n_frames=1, seed=5)[0])
    (folder / "broken.npy").write_bytes((tmp_path / "fixed.npy").read_bytes())
    poll()
    poll()
    assert len(s.frames) == 2 and s.badge_state == "Watching"
    # a file of another shape is an error, and stays one (not taken, not waiting) until it changes
    np.save(folder / "other.npy", _series(n_frames=1, scan=(3, 7))[0])
    poll()
    poll()
    assert s.badge_state == "Error" and "differs from the series'" in s.badge.text()
    poll()
    assert s.badge_state == "Error" and len(s.frames) == 2
    # a folder that is not there: an error badge, not a traceback
    s.watch(tmp_path / "nowhere")
    assert s.badge_state == "Error" and "is not a folder" in s.badge.text()


def test_the_virtual_image_follows_a_reshaped_scan(make_napari_viewer, qtbot, tmp_path, stall_detector):
    """The Virtual imaging dock follows any replacement of its layer's data: the Scan shape dock's
    reshape too (the image had stayed the one-line scan's). Also: a file opened with the reader
    gets its first image (the dock compared the proxied layer data with the array: it never did)."""
    data = _series(n_frames=1, scan=(1, 12), seed=7)[0]
    np.save(tmp_path / "line.npy", data)
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        viewer.open(str(tmp_path / "line.npy"), plugin="napari-4dstem")
    _, v = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    qtbot.waitUntil(lambda: _settled(v), timeout=30000)
    assert v.last_image.data.shape == (1, 12)
    _, shape_dock = viewer.window.add_plugin_dock_widget("napari-4dstem", "Scan shape")
    shape_dock.apply((3, 4))
    qtbot.waitUntil(lambda: _settled(v) and v.last_image.data.shape == (3, 4), timeout=30000)
    np.testing.assert_array_equal(
        v.last_image.data, _virtual(data.reshape(3, 4, *data.shape[2:]), v.current_detector())
    )


def test_stepping_frames_tells_other_plugins_the_datacube_changed(make_napari_viewer, qtbot, tmp_path, stall_detector):
    """UX audit session 13, defect 7: the plugin API's ``datacube_changed`` fired when the series
    layer came, not when the Series dock swapped another frame's data into it. Once per real
    change of data: a step to each other frame, none for the frame already shown."""
    from napari_4dstem.plugin_api import events

    data = _series(n_frames=3)
    np.save(tmp_path / "tilt.npy", data)
    viewer = make_napari_viewer()
    heard = []
    events(viewer).datacube_changed.connect(heard.append)
    _, s = viewer.window.add_plugin_dock_widget("napari-4dstem", DOCK)
    with stall_detector.excluded("first layer add"):
        s.open_files([str(tmp_path / "tilt.npy")])
        qtbot.waitUntil(lambda: SERIES_LAYER in viewer.layers, timeout=20000)
    assert heard == [SERIES_LAYER]  # the layer came (its first frame set again is no change)
    layer = viewer.layers[SERIES_LAYER]
    for n, k in enumerate((1, 2, 2, 0), start=1):
        s.slider.setValue(k)
        np.testing.assert_array_equal(np.asarray(layer.data[4, 5]), data[k, 4, 5])
        assert heard == [SERIES_LAYER] * (1 + min(n, 2) + (n == 4))
    s.step_frame(1)  # the ] key's step
    assert s.frame == 1 and heard == [SERIES_LAYER] * 5
