"""The Virtual imaging dock's first image never waits on numba (#15): while the plugin's kernel
warm-up runs and this process has not loaded the exact image's kernel for the file's dtype, the
first images are numpy's sums, equal to the kernel's; the kernel is not compiled in the job (a
fresh install's first int32 image came 47-110 s after the dock opened, at load 8-11)."""

import numpy as np
import pytest

from napari_4dstem.engine.kernels import runs_sum_block
from napari_4dstem.widgets import _warmup

pytestmark = pytest.mark.gui


def _loaded(name: str) -> bool:
    return any(
        str(getattr(sig[0], "dtype", "")) == name
        for disp in (runs_sum_block.parallel, runs_sum_block.serial)
        for sig in disp.signatures
    )


@pytest.fixture
def running_warmup(monkeypatch):
    """A warm-up state that reads as running (napari's Shapes step not done: the dock draws no
    detector outline meanwhile); no real warm-up starts (every dtype marked done)."""
    fresh = _warmup._State()
    fresh.done.update(np.dtype(t).str for t in ("int8", "int16", "uint32", "int64", "uint16", "float32"))
    fresh.running["planted"] = object()
    monkeypatch.setattr(_warmup, "_state", lambda: fresh)
    yield fresh
    # not announced: the dock's detector outline waits for napari's Shapes step of this planted
    # warm-up, and drawing it now would compile napari's Shapes on the GUI thread of the test
    fresh.running.clear()


def test_first_image_of_a_new_dtype_is_numpys_while_the_warm_up_runs(
    make_napari_viewer, qtbot, stall_detector, running_warmup, tmp_path
):
    # a dtype whose kernel this test process has not loaded (other tests may have used some)
    name = next((t for t in ("int16", "int8", "int64", "uint32") if not _loaded(t)), None)
    if name is None:
        pytest.skip("every candidate dtype's kernel is already loaded in this process")
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:48, :48]
    disk = 200.0 * (np.hypot(yy - 24, xx - 23) < 6)
    data = (disk + rng.integers(0, 30, (9, 11, 48, 48))).astype(name)
    path = tmp_path / f"cube_{name}.npy"
    np.save(path, data)
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        viewer.open(str(path), plugin="napari-4dstem")
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None, timeout=60000)
    det = w._last_detector
    want = np.tensordot(data.astype(np.float64), det.render((48, 48)).astype(np.float64), 2)
    np.testing.assert_array_equal(np.asarray(w.last_image.data).reshape(9, 11), want)
    # the image came without numba's kernel for this dtype: nothing compiled it in the job
    assert not _loaded(np.dtype(name).name), f"the {name} kernel was compiled for the first image"
    # once the warm-up is done, images go through the kernel again
    running_warmup.running.clear()
    assert _warmup.virtual_kernel(data.dtype) == "numba"
