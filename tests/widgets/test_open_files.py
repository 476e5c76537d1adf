"""Files opened from disk (memory-mapped or HDF5, the data napari holds through its proxies) drive
the docks as in-memory samples do (a dock's ``layer.data`` is a napari proxy of the file's array)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("suffix", [".npy", ".h5"])
@pytest.mark.parametrize("dock_first", [True, False])
def test_an_opened_file_gets_its_bf_detector_image_and_presets(
    make_napari_viewer, qtbot, stall_detector, tmp_path, suffix, dock_first
):
    with stall_detector.excluded("reference"):
        from napari_4dstem.analysis.virtual.detectors import DiskDetector
        from napari_4dstem.analysis.virtual.images import virtual_image
        from napari_4dstem.io import save_datacube
        from napari_4dstem.simulation.samples import make_strained_crystal
        from napari_4dstem.widgets.virtual import VirtualImagingWidget

        s = make_strained_crystal(scan_shape=(12, 10))
        path = tmp_path / f"scan{suffix}"
        save_datacube(path, s.datacube)
        data = np.asarray(s.datacube.data)
    viewer = make_napari_viewer()

    def open_file():
        with stall_detector.excluded("first layer add"):
            viewer.open(str(path), plugin="napari-4dstem")

    if not dock_first:
        open_file()
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    assert isinstance(w, VirtualImagingWidget)
    if dock_first:
        open_file()
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None, timeout=30000)
    det = w._last_detector
    assert isinstance(det, DiskDetector)
    assert det.radius_px == pytest.approx(8.0, abs=0.7)  # the sample's bright-field disk
    with stall_detector.excluded("reference"):
        want = virtual_image(data, det).data
    np.testing.assert_array_equal(w.last_image.data, want)
    qtbot.waitUntil(lambda: w.presets_ready, timeout=30000)


def test_the_binned_preview_is_built_after_the_first_exact_image(
    make_napari_viewer, qtbot, stall_detector, monkeypatch
):
    """Large in-memory data: the first exact image is not queued behind the 4x-binned preview copy
    (which reads the whole dataset); the copy is built after it, and later detector edits show a
    preview first, then the exact image."""
    with stall_detector.excluded("reference"):
        from napari_4dstem.analysis.virtual.detectors import AnnulusDetector
        from napari_4dstem.analysis.virtual.images import virtual_image
        from napari_4dstem.simulation.samples import make_strained_crystal
        from napari_4dstem.widgets import virtual

        s = make_strained_crystal(scan_shape=(16, 16))
        data = np.tile(np.asarray(s.datacube.data, np.float32), (5, 5, 1, 1))[:68, :68]  # 289 MiB
        assert data.nbytes > 256 * 2**20
    monkeypatch.setattr(virtual, "PREVIEW_ABOVE_S", 0.0)  # every exact image counts as slow here
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        viewer.add_image(data, name="big")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    qtbot.waitUntil(lambda: w.last_image is not None, timeout=60000)
    assert w.last_preview is None  # the first image was the exact one
    qtbot.waitUntil(lambda: w._preview is not None, timeout=120000)
    assert w._preview.shape == (68, 68, 32, 32)
    det = AnnulusDetector((64.0, 64.0), 20.0, 50.0)
    w.set_detector(det)
    qtbot.waitUntil(lambda: w.last_preview is not None, timeout=60000)
    qtbot.waitUntil(lambda: w._worker is None and w.last_image.params["detector"]["kind"] == "annulus", timeout=60000)
    with stall_detector.excluded("reference"):
        want = virtual_image(data, det).data
    np.testing.assert_array_equal(w.last_image.data, want)


def test_on_an_opened_memmap_the_sum_image_fills_in_with_the_presets_one_pass(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """UX point 1 on a memory-mapped .npy opened from disk: beside the first image (the BF
    detector's), the presets' images are made in one pass over the file (not one pass each); the
    sum image (the Full preset, the navigator) clicked while that pass runs fills in row block by
    row block from it, exact where shown, with the dock's progress bar, and ends as the total
    intensity of each pattern; no other pass is started for it."""
    import threading
    import time

    with stall_detector.excluded("reference"):
        from napari_4dstem.analysis.virtual import images
        from napari_4dstem.engine import chunks, driver
        from napari_4dstem.widgets.virtual import VirtualImagingWidget

        yy, xx = np.mgrid[0:64, 0:64]
        disk = (((yy - 32) ** 2 + (xx - 32) ** 2) < 100).astype(np.float32)
        amp = 100 + 20 * np.sin(yy / 5.0) + 10 * np.cos(xx / 7.0)
        path = tmp_path / "scan.npy"
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(64, 64, 64, 64))
        mm[:] = amp[:, :, None, None] * disk + 1.0 + (yy[:, :, None, None] % 3)
        mm.flush()
        total = np.asarray(mm).sum(axis=(2, 3), dtype=np.float64)
        del mm
    monkeypatch.setattr(driver, "PARTIAL_EVERY_S", 0.0)
    monkeypatch.setattr(driver, "_TARGET_BLOCK_BYTES", 2 * 2**20)
    monkeypatch.setattr(chunks, "_TARGET_BLOCK_BYTES", 2 * 2**20)
    passes, lock = [], threading.Lock()
    real_pass, real_kernel = images.iter_virtual_images, images._multi_kernel

    def spy_pass(data, detectors, **kwargs):
        if tuple(getattr(data, "shape", ())) == (64, 64, 64, 64):  # not the warm-up worker's small cube
            with lock:
                passes.append(len(detectors))
        return real_pass(data, detectors, **kwargs)

    def slow_presets(*args, **kwargs):
        if len(kwargs["specs"]) == 6:
            time.sleep(0.03)  # the presets' pass long enough to click a preset while it runs
        return real_kernel(*args, **kwargs)

    monkeypatch.setattr(images, "iter_virtual_images", spy_pass)
    monkeypatch.setattr(images, "_multi_kernel", slow_presets)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    assert isinstance(w, VirtualImagingWidget)
    with stall_detector.excluded("first layer add"):
        viewer.open(str(path), plugin="napari-4dstem")
    shown = []
    set_image = w.realspace.set_image

    def spy(img, cal, **kw):
        if "Full filling in" in (kw.get("title") or ""):
            shown.append((np.array(img), w.progress.format(), w.progress.isVisibleTo(w)))
        return set_image(img, cal, **kw)

    w.realspace.set_image = spy
    qtbot.waitUntil(
        lambda: w._preset_worker is not None and w.last_image is not None and w._worker is None, timeout=60000
    )
    assert sorted(passes) == [1, 6]  # the BF image and the presets' one pass
    w.presets["Full"].click()
    assert w._worker is None and w._preset_follow == ["Full"]
    qtbot.waitUntil(lambda: w.presets_ready and w._preset_worker is None, timeout=60000)
    assert sorted(passes) == [1, 6]  # no pass of its own for the Full preset
    np.testing.assert_allclose(w.last_image.data, total, rtol=1e-6)  # the total intensity
    assert w.result is w._preset_cache["Full"][1] and not w.progress.isVisibleTo(w)
    assert len(shown) >= 2
    for img, fmt, visible in shown:
        rows = int((~np.isnan(img).all(axis=1)).sum())
        assert 0 < rows < 64 and np.isnan(img[rows:]).all()
        np.testing.assert_allclose(img[:rows], total[:rows], rtol=1e-6)
        assert visible and fmt.startswith("preset images: ") and fmt.endswith(" blocks")
    # the other presets came from the same pass: a click shows them with no job
    w.presets["HAADF"].click()
    assert w._worker is None and w.result is w._preset_cache["HAADF"][1]


def test_a_large_memmap_shows_a_strided_preview_first_and_the_exact_image_fills_in_over_it(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """UX point 1 (#15): on a large lazy file the dock's first image is the BF detector's image at
    every k-th scan position (read with the BF disk, before the exact job starts), exact at those
    positions and spread over their k x k blocks, said as a preview in the dock's status; the exact
    image then fills in over it row block by row block (the preview below the rows not read yet)
    and replaces it. A later detector on the same file gets its own strided preview first; the
    newest detector wins and Cancel still stops the fill-in."""
    import time

    with stall_detector.excluded("reference"):
        from napari_4dstem.analysis.virtual import images
        from napari_4dstem.analysis.virtual.detectors import DiskDetector
        from napari_4dstem.analysis.virtual.images import virtual_image
        from napari_4dstem.analysis.virtual.preview import strided_positions
        from napari_4dstem.engine import chunks, driver
        from napari_4dstem.widgets import virtual

        yy, xx = np.mgrid[0:64, 0:64]
        disk = (((yy - 32) ** 2 + (xx - 32) ** 2) < 100).astype(np.uint16)
        amp = (100 + 20 * np.sin(yy / 5.0) + 10 * np.cos(xx / 7.0)).astype(np.uint16)
        path = tmp_path / "scan.npy"
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(64, 64, 64, 64))
        mm[:] = amp[:, :, None, None] * disk + 1 + (yy[:, :, None, None] % 3).astype(np.uint16)
        mm.flush()
        data = np.array(mm)
        del mm
    monkeypatch.setattr(virtual, "LAZY_PROGRESS_BYTES", 2**20)  # 32 MiB counts as large here
    monkeypatch.setattr(driver, "PARTIAL_EVERY_S", 0.0)  # an image at every block
    monkeypatch.setattr(driver, "_TARGET_BLOCK_BYTES", 2**20)
    monkeypatch.setattr(chunks, "_TARGET_BLOCK_BYTES", 2**20)
    real = images._multi_kernel

    def slow_disk(block, **kwargs):
        if len(kwargs["specs"]) == 1 and block.strides[1] == 64 * 64 * 2:
            time.sleep(0.03)  # the exact image's blocks (not the preview's strided ones) slow enough to watch
        return real(block, **kwargs)

    monkeypatch.setattr(images, "_multi_kernel", slow_disk)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    shown, statuses = [], []
    set_image, set_text = w.realspace.set_image, w.status.setText

    def spy(img, cal, **kw):
        on_screen = np.array(img)  # the rows still to come show the image ``under`` them (the preview)
        if kw.get("under") is not None:
            on_screen = np.where(np.isnan(on_screen), kw["under"], on_screen)
        shown.append((on_screen, kw.get("title") or "", w._worker is not None))
        return set_image(img, cal, **kw)

    def spy_text(text):
        statuses.append(text)
        return set_text(text)

    w.realspace.set_image, w.status.setText = spy, spy_text
    with stall_detector.excluded("first layer add"):
        viewer.open(str(path), plugin="napari-4dstem")
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None, timeout=60000)
    det = w._last_detector
    assert isinstance(det, DiskDetector) and det.radius_px == pytest.approx(10.0, abs=0.7)
    with stall_detector.excluded("reference"):
        want = virtual_image(data, det).data
    np.testing.assert_array_equal(w.last_image.data, want)  # the exact image replaced the preview
    # the first image shown: the strided preview, before the exact job started (it waits for it, #15)
    first, title, running = shown[0]
    assert "preview: 1 scan position in 4 x 4" in title and not running
    assert any(s.startswith("preview: 1 scan position in 4 x 4") for s in statuses)
    step = w.last_preview.params["preview"]["step"]
    assert step == 4  # 1/16 of the 64 x 64 patterns
    sy, sx = strided_positions(64, step), strided_positions(64, step)
    np.testing.assert_array_equal(first[sy, sx], want[sy, sx])  # exact at the sampled positions
    ys, xs = np.arange(64)[sy][np.arange(64) // step], np.arange(64)[sx][np.arange(64) // step]
    np.testing.assert_array_equal(first, want[ys[:, None], xs[None, :]])  # spread over its blocks
    # then the exact rows fill in over it, the preview below the rows not read yet
    filling = [(img, t) for img, t, _ in shown if "filling in" in t]
    assert len(filling) >= 2 and all("the preview below" in t for _, t in filling)
    for img, _ in filling:
        rows = next(r for r in range(64) if not np.array_equal(img[r], want[r]))
        assert 0 < rows < 64
        np.testing.assert_array_equal(img[rows:], first[rows:])
    np.testing.assert_array_equal(shown[-1][0], want)
    assert shown[-1][1].startswith("virtual image: disk")
    # a new detector on the same file: its own strided preview first; the newest one wins
    shown.clear()
    stall_detector.step()
    w.set_detector(DiskDetector((32.0, 32.0), 4.0))
    newest = DiskDetector((31.0, 33.0), 6.0)
    w.set_detector(newest)
    qtbot.waitUntil(lambda: w._worker is None and w._pending is None and w.last_image is not None, timeout=60000)
    qtbot.waitUntil(lambda: w.last_image.params["detector"] == newest.to_params(), timeout=60000)
    with stall_detector.excluded("reference"):
        want_new = virtual_image(data, newest).data
    np.testing.assert_array_equal(w.last_image.data, want_new)
    previews = [img for img, t, _ in shown if "preview: 1 scan position in" in t]
    assert previews and any(np.array_equal(p[sy, sx], want_new[sy, sx]) for p in previews)
    # Cancel during the fill-in keeps the image as far as it got
    before = len(w.filled_in)
    w.set_detector(DiskDetector((32.0, 32.0), 12.0))
    qtbot.waitUntil(lambda: len(w.filled_in) > before, timeout=60000)
    w.cancel_btn.click()
    qtbot.waitUntil(lambda: w._worker is None, timeout=30000)
    assert w.status.text() == "cancelled" and w.filled_in[-1] < 1.0, statuses[-6:]


@pytest.mark.parametrize("fmt", ["npy", "emd"])
def test_the_exact_job_and_the_presets_pass_start_only_after_the_first_view_is_shown(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch, fmt
):
    """UX point 1 (#15): on a large lazy file the BF disk's strided first view reads a few % of the
    file; the exact BF job and the presets' pass (which fills the sum image), which read all of
    it, start only once that first view is on the canvas, so its reads have the disk to
    themselves (started beside it they made it 2-3x later on a file outside the page cache); the
    presets' pass only once the exact BF image is in (the two share the engine's threads: the BF
    image advanced at the pace of the pass's six detectors). The exact image and the sum image
    still come, exact; the sum image fills in by itself."""
    with stall_detector.excluded("reference"):
        import napari.qt.threading as nqt

        from napari_4dstem import DataCube
        from napari_4dstem.analysis.virtual.images import virtual_image
        from napari_4dstem.widgets import virtual

        path, data = _large_memmap(tmp_path)
        if fmt == "emd":
            from napari_4dstem.io import emd

            path = tmp_path / "scan.emd"  # HDF5 chunks of 4 x 4 positions: the first view reads whole chunks
            emd.write(path, DataCube(data), chunks=(4, 4, 64, 64))
    monkeypatch.setattr(virtual, "LAZY_PROGRESS_BYTES", 2**20)  # 32 MiB counts as large here
    events: list[str] = []
    real_create = nqt.create_worker

    def spy_create(func, *args, **kwargs):
        events.append(getattr(func, "__name__", repr(func)))
        return real_create(func, *args, **kwargs)

    monkeypatch.setattr(nqt, "create_worker", spy_create)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    set_image = w.realspace.set_image

    def spy(img, cal, **kw):
        if "preview:" in (kw.get("title") or ""):
            events.append("first view shown")
        elif (kw.get("title") or "").startswith("virtual image: disk"):
            events.append("exact image shown")
        return set_image(img, cal, **kw)

    w.realspace.set_image = spy
    with stall_detector.excluded("first layer add"):
        viewer.open(str(path), plugin="napari-4dstem")
    qtbot.waitUntil(
        lambda: w.last_image is not None and w._worker is None and w.presets_ready and w._preset_worker is None,
        timeout=90000,
    )
    assert "first view shown" in events, events
    shown = events.index("first view shown")
    assert events.index("_find_bf_and_first_view") < shown
    assert "_live_job" in events[shown:] and "_live_job" not in events[:shown], events
    assert "_presets_and_sum" in events[shown:] and "_presets_and_sum" not in events[:shown], events
    exact = events.index("exact image shown")
    assert "_presets_and_sum" in events[exact:] and "_presets_and_sum" not in events[:exact], events
    with stall_detector.excluded("reference"):
        want = virtual_image(data, w._last_detector).data
        total = data.sum(axis=(2, 3), dtype=np.float64)
    np.testing.assert_array_equal(w.last_image.data, want)  # the exact image, after the first view
    qtbot.waitUntil(lambda: w._sum_layer() is not None, timeout=30000)
    np.testing.assert_allclose(w._sum_layer().data, total, rtol=1e-6)  # the sum image filled in by itself


def _large_memmap(tmp_path):
    """A 64 x 64 scan of 64 x 64 uint16 patterns (32 MiB) in a .npy, and its values in memory."""
    yy, xx = np.mgrid[0:64, 0:64]
    disk = (((yy - 32) ** 2 + (xx - 32) ** 2) < 100).astype(np.uint16)
    amp = (100 + 20 * np.sin(yy / 5.0) + 10 * np.cos(xx / 7.0)).astype(np.uint16)
    path = tmp_path / "scan.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(64, 64, 64, 64))
    mm[:] = amp[:, :, None, None] * disk + 1 + (yy[:, :, None, None] % 3).astype(np.uint16)
    mm[:, :, 32, 33] += (xx % 5).astype(np.uint16) * 7  # a Max differing from the Sum's pattern
    mm.flush()
    data = np.array(mm)
    del mm
    return path, data


def test_a_response_chosen_before_the_bf_disk_is_found_gets_no_sum_strided_first_view(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """The BF worker's strided first view is a plain Sum: when Max is chosen while the BF disk is
    being found, the first job computes Max and no Sum preview is shown or filled in under its rows
    (mixed quantities); the image is that job's exact Max."""
    import threading

    with stall_detector.excluded("reference"):
        from napari_4dstem.analysis.virtual.responses import detector_response
        from napari_4dstem.engine import chunks, driver
        from napari_4dstem.widgets import virtual

        path, data = _large_memmap(tmp_path)
    monkeypatch.setattr(virtual, "LAZY_PROGRESS_BYTES", 2**20)  # 32 MiB counts as large here
    monkeypatch.setattr(driver, "PARTIAL_EVERY_S", 0.0)
    monkeypatch.setattr(driver, "_TARGET_BLOCK_BYTES", 2**20)
    monkeypatch.setattr(chunks, "_TARGET_BLOCK_BYTES", 2**20)
    release, real_find = threading.Event(), virtual._find_bf

    def held_find(dc):  # the BF worker holds on until the setting is changed
        release.wait(30)
        return real_find(dc)

    monkeypatch.setattr(virtual, "_find_bf", held_find)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    titles = []
    set_image = w.realspace.set_image

    def spy(img, cal, **kw):
        titles.append(kw.get("title") or "")
        return set_image(img, cal, **kw)

    w.realspace.set_image = spy
    with stall_detector.excluded("first layer add"):
        viewer.open(str(path), plugin="napari-4dstem")
    assert w._bf_pending  # the worker started with the Sum and no descan
    w.response_combo.setCurrentText("Max")
    release.set()
    qtbot.waitUntil(
        lambda: w._worker is None and w._pending is None and w.last_image is not None and w._bf is not None,
        timeout=60000,
    )
    det = w._last_detector
    with stall_detector.excluded("reference"):
        want = detector_response(data, det, "max").data
    np.testing.assert_array_equal(w.last_image.data, want)
    assert titles and not any("preview:" in t or "preview below" in t for t in titles), titles


def test_chunks_of_several_scan_positions_get_a_first_view_of_whole_chunks_and_its_job_yields_between_blocks(
    tmp_path, monkeypatch, stall_detector, counts_reached
):
    """Every large lazy file gets a first view reading a bounded fraction of it: every k-th pattern
    where a position is read alone, whole storage chunks at a chunk-aligned stride where a chunk
    holds several (a strided read would touch nearly every chunk); the job making it yields
    between the preview's blocks, so quit() (a newer detector, Cancel) stops it there, and
    napari's activity bar counts those steps (its total)."""
    with stall_detector.excluded("reference"):  # no GUI: the job driven here, on this thread
        import dask.array as da

        from napari_4dstem import DataCube
        from napari_4dstem.analysis.virtual.detectors import DiskDetector
        from napari_4dstem.analysis.virtual.preview import iter_strided_image, strided_image, strided_steps
        from napari_4dstem.engine import chunks, driver
        from napari_4dstem.engine.jobs import Progress
        from napari_4dstem.widgets import virtual

        path, data = _large_memmap(tmp_path)
        monkeypatch.setattr(virtual, "LAZY_PROGRESS_BYTES", 2**20)
        monkeypatch.setattr(driver, "_TARGET_BLOCK_BYTES", 2**16)  # the preview's 16 x 16 patterns in several blocks
        monkeypatch.setattr(chunks, "_TARGET_BLOCK_BYTES", 2**16)
        mm = DataCube(np.load(path, mmap_mode="r"))
        assert virtual._takes_first_view(mm)
        det = DiskDetector((32.0, 32.0), 10.0)
        chunked = DataCube(da.from_array(data, chunks=(8, 8, 64, 64)))
        assert virtual._takes_first_view(chunked)
        pv = strided_image(chunked, det).params["preview"]
        assert pv["chunks"] == (8, 8) and pv["read"] * 16 <= pv["of"]  # whole chunks, <= 1/16 of them
        assert virtual._takes_first_view(DataCube(da.from_array(data, chunks=(1, 1, 64, 64))))
        assert not virtual._takes_first_view(DataCube(data))  # in memory: the exact image is quick
        steps = list(iter_strided_image(mm, det))
        assert all(isinstance(p, Progress) for p in steps)
        # every block's count once (waiting steps repeat a count while a block's reads run)
        n = strided_steps(mm, det)
        assert n >= 2 and counts_reached(steps) == list(range(1, n + 1))
        job = virtual._live_job(mm, det, mm.calibration, False, None, [], None, "Sum", None, True, True)
        out = []
        for item in job:
            out.append(item)
            if isinstance(item, tuple):
                break  # the preview: the exact image's steps follow
        # a quit() takes effect after each of the preview's blocks (and at each waiting step)
        assert len(out) - 1 >= n and all(x is None for x in out[:-1])
        assert out[-1][0] == "preview"
        np.testing.assert_array_equal(out[-1][1].data, strided_image(mm, det).data)
        job.close()


@pytest.mark.parametrize("late", ["after the first fill-in", "after a newer detector"])
def test_a_late_strided_first_view_is_dropped(make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch, late):
    """The BF worker's strided first view arriving once the exact image has begun to fill in, or
    after a newer detector was set, is not shown: it would cover the rows read (or show the old
    detector's image under the new one's outline)."""
    import threading
    import time

    with stall_detector.excluded("reference"):
        from napari_4dstem.analysis.virtual import images, preview
        from napari_4dstem.analysis.virtual.detectors import DiskDetector
        from napari_4dstem.analysis.virtual.images import virtual_image
        from napari_4dstem.engine import chunks, driver
        from napari_4dstem.widgets import virtual

        path, data = _large_memmap(tmp_path)
    monkeypatch.setattr(virtual, "LAZY_PROGRESS_BYTES", 2**20)
    monkeypatch.setattr(driver, "PARTIAL_EVERY_S", 0.0)
    monkeypatch.setattr(driver, "_TARGET_BLOCK_BYTES", 2**20)
    monkeypatch.setattr(chunks, "_TARGET_BLOCK_BYTES", 2**20)
    release, real_strided, real_kernel = threading.Event(), preview.strided_image, images._multi_kernel

    def late_strided(*args, **kwargs):  # the BF worker's first view, held back
        release.wait(30)
        return real_strided(*args, **kwargs)

    def slow_disk(block, **kwargs):
        if len(kwargs["specs"]) == 1 and block.strides[1] == 64 * 64 * 2:
            time.sleep(0.03)  # the exact image's blocks slow enough to fill in over several steps
        return real_kernel(block, **kwargs)

    monkeypatch.setattr(preview, "strided_image", late_strided)
    monkeypatch.setattr(images, "_multi_kernel", slow_disk)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    titles, views = [], []
    set_image, on_first_view = w.realspace.set_image, w._on_first_view

    def spy(img, cal, **kw):
        titles.append((kw.get("title") or "", np.array(img)))
        if late == "after the first fill-in" and "filling in" in titles[-1][0]:
            release.set()
        return set_image(img, cal, **kw)

    def spy_view(dc, got):
        views.append(got)
        return on_first_view(dc, got)

    w.realspace.set_image, w._on_first_view = spy, spy_view
    with stall_detector.excluded("first layer add"):
        viewer.open(str(path), plugin="napari-4dstem")
    want_det = None
    if late == "after a newer detector":
        # the BF disk found, its first view held back: the exact job waits for it (#15)
        qtbot.waitUntil(lambda: w._bf is not None and w._held is not None, timeout=30000)
        want_det = DiskDetector((31.0, 33.0), 6.0)
        w.set_detector(want_det)
        release.set()
    qtbot.waitUntil(
        lambda: bool(views) and w._worker is None and w._pending is None and w.last_image is not None, timeout=60000
    )
    assert views[0] is not None  # the late first view did come
    det = want_det or w._last_detector
    with stall_detector.excluded("reference"):
        want = virtual_image(data, det).data
        strided_new = real_strided(data, det).data
    np.testing.assert_array_equal(w.last_image.data, want)
    if late == "after the first fill-in":
        first_fill = next(i for i, (t, _) in enumerate(titles) if "filling in" in t)
        assert not any("preview:" in t for t, _ in titles[first_fill:]), [t for t, _ in titles]
    else:  # the only preview shown: the newer detector's own (its job's), not the BF disk's
        previews = [img for t, img in titles if "preview:" in t]
        assert all(np.array_equal(img, strided_new) for img in previews), len(previews)


def test_a_preset_clicked_before_the_presets_pass_began_starts_it_and_fills_in_with_it(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """On a large lazy file the presets' pass waits for the exact BF image (#15); a preset clicked
    before it began starts it at once, and that preset's image fills in with it (no pass of its
    own), ending exact."""
    import time

    def slow_bf(w):
        from napari_4dstem.analysis.virtual import images

        real = images._multi_kernel

        def slow(block, **kwargs):
            if len(kwargs["specs"]) == 1 and block.strides[1] == 64 * 64 * 2:
                time.sleep(0.05)  # the exact BF image's blocks slow enough to click during them
            return real(block, **kwargs)

        monkeypatch.setattr(images, "_multi_kernel", slow)

    w, data, passes, _ = _open_large_memmap_watching_the_sum(
        make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch, before=slow_bf
    )
    qtbot.waitUntil(lambda: w.last_preview is not None and w._worker is not None, timeout=60000)
    assert w._preset_worker is None and w._presets_after is not None  # the pass waits for the BF image
    w.presets["Full"].click()
    assert w._preset_worker is not None and w._preset_follow == ["Full"] and w._presets_after is None
    qtbot.waitUntil(lambda: w.presets_ready and w._preset_worker is None and w._worker is None, timeout=90000)
    with stall_detector.excluded("reference"):
        total = data.sum(axis=(2, 3), dtype=np.float64)
    assert sorted(passes) == [1, 6]  # the BF job (stopped by the click) and the presets' one pass
    np.testing.assert_allclose(w.last_image.data, total, rtol=1e-6)
    assert w.result is w._preset_cache["Full"][1]


def _open_large_memmap_watching_the_sum(make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch, before=None):
    """Open the 32 MiB memmap as a large lazy file, the presets' pass slow enough to watch; returns
    the dock, the data, the passes started (their detector counts) and the sum images shown
    (``before(dock)`` runs before the file opens)."""
    import threading
    import time

    with stall_detector.excluded("reference"):
        from napari_4dstem.analysis.virtual import images
        from napari_4dstem.engine import chunks, driver
        from napari_4dstem.widgets import virtual

        path, data = _large_memmap(tmp_path)
    monkeypatch.setattr(virtual, "LAZY_PROGRESS_BYTES", 2**20)  # 32 MiB counts as large here
    monkeypatch.setattr(driver, "PARTIAL_EVERY_S", 0.0)  # an image at every block
    monkeypatch.setattr(driver, "_TARGET_BLOCK_BYTES", 2**20)
    monkeypatch.setattr(chunks, "_TARGET_BLOCK_BYTES", 2**20)
    passes, lock = [], threading.Lock()
    real_pass, real_kernel = images.iter_virtual_images, images._multi_kernel

    def spy_pass(data, detectors, **kwargs):
        if tuple(getattr(data, "shape", ())) == (64, 64, 64, 64):  # the whole file (not the preview)
            with lock:
                passes.append(len(detectors))
        return real_pass(data, detectors, **kwargs)

    def slow_presets(*args, **kwargs):
        if len(kwargs["specs"]) == 6:
            time.sleep(0.05)  # the presets' pass slow enough to watch it fill in
        return real_kernel(*args, **kwargs)

    monkeypatch.setattr(images, "iter_virtual_images", spy_pass)
    monkeypatch.setattr(images, "_multi_kernel", slow_presets)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    sums = []
    show_sum = w._show_sum

    def spy(img, limits, text, **kw):
        sums.append((np.array(img), text, w.progress.format(), w.progress.isVisibleTo(w), w.last_image is not None))
        return show_sum(img, limits, text, **kw)

    w._show_sum = spy
    if before is not None:
        before(w)
    with stall_detector.excluded("first layer add"):
        viewer.open(str(path), plugin="napari-4dstem")
    return w, data, passes, sums


def test_on_a_large_lazy_file_the_sum_image_fills_in_by_itself_from_the_presets_one_pass(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """UX point 1 (#15): after a large lazy file opens, with no click, the sum image (total
    intensity of each pattern) fills in on the Real space canvas from the presets' one pass (no
    pass of its own): once the BF image is in, as the layer "sum image" directly over it, exact
    rows and the rest empty, with the dock's progress bar; it ends exact. The BF first view comes
    first, as before; a detector the user sets hides the sum image (its layer stays in the list)."""
    from napari_4dstem.analysis.virtual.detectors import DiskDetector
    from napari_4dstem.widgets.virtual import SUM_LAYER

    w, data, passes, sums = _open_large_memmap_watching_the_sum(
        make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
    )
    qtbot.waitUntil(lambda: w.presets_ready and w._preset_worker is None, timeout=90000)
    with stall_detector.excluded("reference"):
        total = data.sum(axis=(2, 3), dtype=np.float64)
    assert w.last_preview is not None and w.last_preview.params["preview"]["step"] == 4  # BF first view kept
    assert sorted(passes) == [1, 6]  # the BF image and the presets' one pass: none for the sum image
    assert len(sums) >= 3
    for img, text, fmt, visible, bf_in in sums[:-1]:
        assert bf_in  # never before the BF image
        rows = int((~np.isnan(img).all(axis=1)).sum())
        assert 0 < rows < 64 and np.isnan(img[rows:]).all(), text
        np.testing.assert_allclose(img[:rows], total[:rows], rtol=1e-6)  # exact rows
        assert "sum image: filling in" in text and visible and fmt.startswith("sum image: ")
    np.testing.assert_allclose(sums[-1][0], total, rtol=1e-6)
    rv = w.realspace.viewer(create=False)
    names = [lyr.name for lyr in rv.layers]
    assert names.index(SUM_LAYER) == names.index(w.realspace.name) + 1 and rv.layers[SUM_LAYER].visible
    np.testing.assert_allclose(rv.layers[SUM_LAYER].data, total, rtol=1e-6)
    assert not w.progress.isVisibleTo(w)
    w.set_detector(DiskDetector((32.0, 32.0), 6.0))  # the user's detector: its image is the one shown
    assert not rv.layers[SUM_LAYER].visible
    qtbot.waitUntil(lambda: w._worker is None, timeout=60000)


def test_cancel_stops_the_sum_image_filling_in_by_itself(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """Cancel while the sum image fills in by itself stops the presets' pass at its next block;
    the rows so far stay, nothing more is drawn, and a preset click later computes on demand."""
    w, _, _, sums = _open_large_memmap_watching_the_sum(
        make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
    )
    qtbot.waitUntil(lambda: len(sums) >= 1, timeout=90000)
    assert w.cancel_btn.isEnabled()
    w.cancel_btn.click()
    qtbot.waitUntil(lambda: w._preset_worker is None, timeout=60000)
    n = len(sums)
    qtbot.wait(300)
    assert len(sums) == n and not w.presets_ready and w.status.text() == "sum image: cancelled"
    assert np.isnan(sums[-1][0]).any()  # stopped before its end


def test_closing_the_dataset_while_the_sum_image_fills_in_stops_it(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """The dataset's layer removed while the sum image fills in from the presets' pass: the pass
    stops, nothing more is drawn, the sum layer (the closed file's) goes, the progress bar too."""
    w, _, _, sums = _open_large_memmap_watching_the_sum(
        make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
    )
    from napari_4dstem.widgets.virtual import SUM_LAYER  # imported by the dock

    qtbot.waitUntil(lambda: len(sums) >= 1, timeout=90000)
    assert w._preset_worker is not None  # still running: the pass has 32 blocks
    with stall_detector.excluded("layer removal"):
        w.viewer.layers.remove(w.layer)
    n = len(sums)
    assert w._preset_worker is None and not w._sum_follow
    qtbot.wait(600)  # > 10 of the pass's slowed blocks
    assert len(sums) == n
    rv = w.realspace.viewer(create=False)
    assert SUM_LAYER not in rv.layers and not w.progress.isVisibleTo(w)


def test_closing_the_dataset_while_the_live_image_fills_in_stops_its_job(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """UX audit (#15): the dataset's layer removed while a detector's exact image fills in on a
    large lazy file: the live job quits, its steps still queued are dropped (they read the closed
    layer: ``open a 4D-STEM dataset first`` from ``_on_progress``, once per step), nothing more is
    drawn and the progress bar goes."""
    import time

    with stall_detector.excluded("reference"):
        from napari_4dstem.analysis.virtual import images
        from napari_4dstem.analysis.virtual.detectors import DiskDetector
        from napari_4dstem.engine import chunks, driver
        from napari_4dstem.widgets import virtual

        path, _ = _large_memmap(tmp_path)
    monkeypatch.setattr(virtual, "LAZY_PROGRESS_BYTES", 2**20)  # 32 MiB counts as large here
    monkeypatch.setattr(driver, "PARTIAL_EVERY_S", 0.0)  # an image at every block
    monkeypatch.setattr(driver, "_TARGET_BLOCK_BYTES", 2**20)
    monkeypatch.setattr(chunks, "_TARGET_BLOCK_BYTES", 2**20)
    real = images._multi_kernel

    def slow_disk(block, **kwargs):
        if len(kwargs["specs"]) == 1 and block.strides[1] == 64 * 64 * 2:
            time.sleep(0.1)  # the exact image's 32 blocks: 3 s, time to close the dataset mid-way
        return real(block, **kwargs)

    monkeypatch.setattr(images, "_multi_kernel", slow_disk)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    with stall_detector.excluded("first layer add"):
        viewer.open(str(path), plugin="napari-4dstem")
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None and w._pending is None, timeout=90000)
    shown = []
    set_image = w.realspace.set_image

    def spy(img, cal, **kw):
        shown.append(kw.get("title") or "")
        return set_image(img, cal, **kw)

    w.realspace.set_image = spy
    stall_detector.step()
    before = len(w.filled_in)
    w.set_detector(DiskDetector((32.0, 32.0), 12.0))  # the user's new radius: a lazy exact job
    qtbot.waitUntil(lambda: len(w.filled_in) > before and w.progress.isVisibleTo(w), timeout=60000)
    job = w._worker
    assert job is not None
    with stall_detector.excluded("layer removal"):
        viewer.layers.remove(w.layer)
    assert job.abort_requested  # the job quits at its next block
    assert not w.progress.isVisibleTo(w) and not w.cancel_btn.isEnabled()
    n = len(shown)
    qtbot.waitUntil(lambda: w._worker is None, timeout=30000)
    qtbot.wait(300)  # any step still queued has been delivered (and dropped)
    assert len(shown) == n, shown[n:]
    assert not w.progress.isVisibleTo(w)  # (pytest-qt fails the test on a traceback in a slot)


def test_a_second_file_opened_while_the_sum_image_fills_in_gets_its_own_sum_image(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """A second file (same scan shape, other values, another scan scale) chosen while the first
    one's sum image fills in: no step of the first file's pass is drawn after the switch, the
    "BF image is in" gate waits for the new file's, and the sum layer is a new one with the new
    file's scale, ending at the new file's exact sum."""
    w, data, _, sums = _open_large_memmap_watching_the_sum(
        make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
    )
    from napari_4dstem.widgets.virtual import SUM_LAYER  # imported by the dock

    qtbot.waitUntil(lambda: len(sums) >= 1, timeout=90000)
    rv = w.realspace.viewer(create=False)
    old = rv.layers[SUM_LAYER]
    with stall_detector.excluded("second file"):
        path2 = tmp_path / "other.npy"
        mm = np.lib.format.open_memmap(path2, mode="w+", dtype=np.uint16, shape=data.shape)
        mm[:] = data[::-1]  # the scan's rows reversed: other sums per row
        mm.flush()
        del mm
        total2 = data[::-1].sum(axis=(2, 3), dtype=np.float64)
        w.viewer.open(str(path2), plugin="napari-4dstem")
        new = w.viewer.layers[-1]
        new.metadata.get("napari_4dstem", {}).pop("calibration", None)  # the layer's scale is its calibration
        new.scale = (2.0, 2.0, *new.scale[2:])
        w.layer_combo.setCurrentText(new.name)
    assert w.layer.name == new.name and w.last_image is None
    n = len(sums)
    assert old not in rv.layers
    qtbot.waitUntil(lambda: w.presets_ready and w._preset_worker is None and w._worker is None, timeout=90000)
    assert len(sums) > n
    for img, text, _, _, bf_in in sums[n:]:
        assert bf_in
        rows = ~np.isnan(img).all(axis=1)
        np.testing.assert_allclose(img[rows], total2[rows], rtol=1e-6, err_msg=text)  # the new file's rows
    np.testing.assert_allclose(rv.layers[SUM_LAYER].data, total2, rtol=1e-6)
    assert tuple(rv.layers[SUM_LAYER].scale) == (2.0, 2.0) and rv.layers[SUM_LAYER] is not old


def test_the_sum_image_fills_in_by_itself_only_under_the_sum_response(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """The canvas shows what the user asked for last: with Max chosen before the file opens, the
    presets' pass draws no sum image over the Max image (nor at its end)."""
    w, _, _, sums = _open_large_memmap_watching_the_sum(
        make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch,
        before=lambda w: w.response_combo.setCurrentText("Max"),
    )  # fmt: skip
    from napari_4dstem.widgets.virtual import SUM_LAYER  # imported by the dock

    assert not w._sum_follow
    qtbot.waitUntil(lambda: w.presets_ready and w._preset_worker is None and w._worker is None, timeout=90000)
    assert w.last_image is not None and sums == []
    assert SUM_LAYER not in w.realspace.viewer(create=False).layers


@pytest.mark.parametrize(
    ("chunks", "takes"), [((64, 64, 16, 16), False), ((32, 32, 16, 16), False), ((8, 8, 16, 16), True)]
)
def test_a_first_view_only_where_its_read_is_a_small_part_of_the_file(tmp_path, monkeypatch, chunks, takes):
    """A single-chunk HDF5 (or 2 x 2 chunks) gets no strided first view: it would read the whole
    file (a quarter of it) before the exact pass; 8 x 8 chunks read 4 of 64 (1/16)."""
    import h5py

    from napari_4dstem import DataCube
    from napari_4dstem.widgets import virtual

    monkeypatch.setattr(virtual, "LAZY_PROGRESS_BYTES", 2**20)
    a = np.ones((64, 64, 16, 16), dtype=np.uint16)  # 2 MiB
    with h5py.File(tmp_path / "c.h5", "w") as f:
        dc = DataCube(f.create_dataset("a", data=a, chunks=chunks))
        assert virtual._takes_first_view(dc) is takes


def test_the_display_controls_exports_and_copy_as_python_act_on_the_sum_image_while_it_is_shown(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """#15: the exact sum image reaches the GUI thread with its 0.1-99.9 percentile limits
    (computed in the presets' worker). While it covers the live image, the display controls,
    Export raw/PNG, Save result and Copy as Python act on it, the image the canvas shows (they
    hid it, or acted on the BF image under it); once the user sets a detector they act on that
    detector's image."""
    w, data, _, _ = _open_large_memmap_watching_the_sum(
        make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
    )
    from napari_4dstem.analysis.virtual.detectors import DiskDetector
    from napari_4dstem.widgets._realspace import display_transform
    from napari_4dstem.widgets.virtual import SUM_LAYER  # imported by the dock

    limits, inner = [], w._show_sum

    def spy(img, lim, text, **kw):
        limits.append(lim)
        return inner(img, lim, text, **kw)

    w._show_sum = spy
    qtbot.waitUntil(lambda: w.presets_ready and w._preset_worker is None and w._worker is None, timeout=90000)
    with stall_detector.excluded("reference"):
        total = data.sum(axis=(2, 3), dtype=np.float64).astype(np.float32)
        want = np.percentile(total, (0.1, 99.9))
        want_1_99 = np.percentile(display_transform(total, "Log"), (1.0, 99.0))
    assert limits and limits[-1] is not None
    np.testing.assert_allclose(limits[-1], want, rtol=1e-6)
    rv = w.realspace.viewer(create=False)
    sum_layer, live = rv.layers[SUM_LAYER], rv.layers[w.realspace.name]
    assert sum_layer.visible and w.realspace.shown_name == SUM_LAYER
    bf = np.array(live.data)
    # display controls: on the sum image, which stays shown; Log and the 1-99 % preset are its own
    w.realspace.scale_combo.setCurrentText("Log")
    w.realspace.range_combo.setCurrentText("1-99 %")
    stall_detector.step()
    assert sum_layer.visible and w._sum_follow and w.realspace.shown_name == SUM_LAYER
    np.testing.assert_allclose(sum_layer.data, display_transform(total, "Log"), rtol=1e-6)
    np.testing.assert_allclose(sum_layer.contrast_limits, want_1_99, rtol=1e-5)
    np.testing.assert_allclose(w.realspace.displayed_clim, want_1_99, rtol=1e-5)
    np.testing.assert_allclose(w.realspace.histogram.clim, want_1_99, rtol=1e-5)
    np.testing.assert_allclose(live.data, display_transform(w.last_image.data, "Log"), rtol=1e-6)  # same scale
    assert w.realspace.stats.text().startswith("real space: ") and f"sum {total.sum():.4g}" in w.realspace.stats.text()
    w.realspace.histogram.clim_changed.emit(1.0, 2.0)  # a handle dragged: the sum image's limits
    assert tuple(sum_layer.contrast_limits) == (1.0, 2.0) and tuple(live.contrast_limits) != (1.0, 2.0)
    w.realspace.scale_combo.setCurrentText("Power")
    w.realspace.gamma.setValue(0.7)
    assert sum_layer.gamma == pytest.approx(0.7) and live.gamma == pytest.approx(0.7)
    w.realspace.scale_combo.setCurrentText("Lin")
    stall_detector.step()
    np.testing.assert_array_equal(live.data, bf)  # the live layer in Lin again
    # Export raw: the sum image's values; Copy as Python and Save result: the Full preset's result
    ex = w.export
    assert ex.export_raw(tmp_path / "shown.npy")
    qtbot.waitUntil(lambda: ex.last_written is not None and not ex.files.busy, timeout=20000)
    np.testing.assert_allclose(np.load(tmp_path / "shown.npy"), total, rtol=1e-6)
    full = w._preset_cache["Full"][1]
    script = w.copy_as_python()
    assert script is not None and script == full.to_script() and script != w.result.to_script()
    assert w.save_result(tmp_path / "sum.h5")
    qtbot.waitUntil(lambda: (tmp_path / "sum.h5").exists() and not w.jobs.busy, timeout=20000)
    with stall_detector.excluded("reference"):
        from napari_4dstem.io import emd

        (img,) = emd.read(tmp_path / "sum.h5").values()
    np.testing.assert_allclose(img.data, total, rtol=1e-6)
    assert sum_layer.visible  # none of them hid it
    # the user's detector: its image is the one shown, the controls and exports act on it
    det = DiskDetector((32.0, 32.0), 6.0)
    w.set_detector(det)
    qtbot.waitUntil(lambda: w._worker is None and w._last_detector is det and w.last_image is not None, timeout=60000)
    assert not sum_layer.visible and w.realspace.shown_name == w.realspace.name
    w.realspace.range_combo.setCurrentText("min-max")
    np.testing.assert_allclose(live.contrast_limits, (np.nanmin(w.last_image.data), np.nanmax(w.last_image.data)))
    np.testing.assert_allclose(w.realspace.histogram.clim, live.contrast_limits)
    assert not sum_layer.visible  # redrawn with the dock's settings, still hidden
    np.testing.assert_allclose(sum_layer.contrast_limits, (total.min(), total.max()), rtol=1e-6)
    ex.last_written = None
    assert ex.export_raw(tmp_path / "det.npy")
    qtbot.waitUntil(lambda: ex.last_written is not None and not ex.files.busy, timeout=20000)
    np.testing.assert_array_equal(np.load(tmp_path / "det.npy"), w.last_image.data.astype(np.float32))
    assert w.copy_as_python() == w.result.to_script()


def test_the_sum_image_is_drawn_with_the_limits_its_worker_sent_never_percentiles_on_the_gui_thread(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """#15: every sum image drawn (its steps: the worker's min/max of the rows so far; the exact
    one: the worker's 0.1-99.9 percentiles) comes with its limits; the GUI thread computes no
    percentiles for it, and a sum image without limits is refused (the old fallback computed
    them on the GUI thread)."""
    import threading

    from napari_4dstem.widgets import virtual

    calls, real = [], virtual._sum_limits

    def spy_limits(img):
        calls.append(threading.current_thread() is threading.main_thread())
        return real(img)

    monkeypatch.setattr(virtual, "_sum_limits", spy_limits)
    w, _, _, sums = _open_large_memmap_watching_the_sum(
        make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
    )
    given, inner = [], w._show_sum

    def spy(img, lim, text, **kw):
        given.append(lim)
        return inner(img, lim, text, **kw)

    w._show_sum = spy
    qtbot.waitUntil(lambda: w.presets_ready and w._preset_worker is None and w._worker is None, timeout=90000)
    assert len(given) >= 2 and all(lim is not None for lim in given)
    assert calls == [False]  # once, in the presets' worker
    img = np.array(sums[-1][0])
    with pytest.raises(ValueError, match="contrast limits"):
        w._show_sum(img, None, "sum image")
    assert calls == [False]


def test_the_sum_image_fills_in_at_2_to_5_hz_and_its_last_image_is_always_drawn(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """#15: the presets' pass yields a step every ~50 ms here (a map at every block); the sum
    image is redrawn at most every 0.2 s (the newest step held back; it was redrawn at every
    step), and the exact image at the end is always drawn. Cancel draws the step held back:
    the canvas shows the rows as far as the pass got."""
    import time

    from napari_4dstem.widgets import virtual

    w, data, _, sums = _open_large_memmap_watching_the_sum(
        make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
    )
    steps, drawn, on_step, show = [], [], w._on_sum_progress, w._show_sum

    def spy_step(p):
        if p.partial is not None and p.partial.fraction < 1.0:
            steps.append(time.perf_counter())
        return on_step(p)

    def spy_show(img, lim, text, **kw):
        drawn.append((time.perf_counter(), text))
        return show(img, lim, text, **kw)

    w._on_sum_progress, w._show_sum = spy_step, spy_show
    qtbot.waitUntil(lambda: w.presets_ready and w._preset_worker is None and w._worker is None, timeout=90000)
    with stall_detector.excluded("reference"):
        total = data.sum(axis=(2, 3), dtype=np.float64)
    filling = [t for t, text in drawn if "filling in" in text]
    assert len(steps) >= 10 and 1 <= len(filling) < len(steps), (len(steps), len(filling))
    gaps = np.diff(filling)
    assert (gaps >= virtual.SUM_DRAW_MIN_S - 0.02).all(), gaps  # at most 5 Hz
    assert "exact" in drawn[-1][1]  # the last image: the exact one
    np.testing.assert_allclose(sums[-1][0], total, rtol=1e-6)


def test_cancel_draws_the_sum_step_held_back_and_copy_as_python_says_it_is_not_exact(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """#15: Cancel while a step of the sum image is held back (2-5 Hz) draws it: the canvas shows
    the rows as far as the pass got. The partial sum image stays the one shown: Copy as Python
    and Save result say it is not exact (they hid it, and acted on the BF image under it);
    Export raw writes what is shown (the rows so far, NaN elsewhere)."""
    from napari_4dstem.widgets.virtual import SUM_LAYER

    w, _, _, sums = _open_large_memmap_watching_the_sum(
        make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
    )
    qtbot.waitUntil(lambda: len(sums) >= 1 and w._sum_step is not None, timeout=90000)
    held = w._sum_step
    n = len(sums)
    w.cancel_btn.click()
    assert len(sums) == n + 1 and np.array_equal(sums[-1][0], held.data, equal_nan=True)
    qtbot.waitUntil(lambda: w._preset_worker is None, timeout=60000)
    rv = w.realspace.viewer(create=False)
    assert rv.layers[SUM_LAYER].visible and w.realspace.shown_name == SUM_LAYER
    assert w.copy_as_python() is None and "still filling in" in w.status.text()
    assert w.save_result(tmp_path / "x.h5") is None and not (tmp_path / "x.h5").exists()
    assert rv.layers[SUM_LAYER].visible
    ex = w.export
    assert ex.export_raw(tmp_path / "partial.npy")
    qtbot.waitUntil(lambda: ex.last_written is not None and not ex.files.busy, timeout=20000)
    np.testing.assert_array_equal(np.load(tmp_path / "partial.npy"), held.data)


def test_our_workers_start_back_to_back_without_naparis_activity_bar_and_its_nested_event_loops(
    make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
):
    """#15 crash watch: opening a large lazy file starts the BF worker, the presets' pass and the
    BF image's job back to back. napari's activity-dock bar (``create_worker(_progress=...)``)
    ran ``QApplication.processEvents()`` inside the dispatch of our signals, when a worker started
    (``add_progress_bar``) and at every step (the bar's ``setValue``): the re-entry where a
    software-GL segfault was traced once. Our workers go through ``_common.create_worker``: no
    such bar of ours (none added, no step of it), while the dock's own progress bar shows the
    steps."""
    from napari._qt.dialogs.qt_activity_dialog import QtActivityDialog
    from napari._qt.widgets.qt_progress_bar import QtLabeledProgressBar

    added, set_values = [], []
    real_add, real_set = QtActivityDialog.add_progress_bar, QtLabeledProgressBar.setValue

    def desc(pbar):
        return getattr(getattr(pbar, "progress", None), "desc", None)

    def spy_add(self, pbar, nest_under=None):
        added.append(desc(pbar))
        return real_add(self, pbar, nest_under)

    def spy_set(self, value):
        set_values.append(desc(self))
        return real_set(self, value)

    monkeypatch.setattr(QtActivityDialog, "add_progress_bar", spy_add)
    monkeypatch.setattr(QtLabeledProgressBar, "setValue", spy_set)
    w, data, passes, sums = _open_large_memmap_watching_the_sum(
        make_napari_viewer, qtbot, stall_detector, tmp_path, monkeypatch
    )
    qtbot.waitUntil(lambda: w.presets_ready and w._preset_worker is None and w._worker is None, timeout=90000)
    assert sorted(passes) == [1, 6]  # the BF image's job and the presets' pass ran side by side
    assert sums and all(visible and fmt.startswith("sum image: ") for _, _, fmt, visible, _ in sums[:-1])
    # napari's own bar of viewer.open ("Opening Files") is napari's; none is ours
    assert [d for d in added if d != "Opening Files"] == [] and [d for d in set_values if d != "Opening Files"] == []
    with stall_detector.excluded("reference"):
        total = data.sum(axis=(2, 3), dtype=np.float64)
    np.testing.assert_allclose(sums[-1][0], total, rtol=1e-6)
