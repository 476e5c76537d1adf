"""napari's Open runs our sample data and reader on its GUI thread: the heavy modules they import
(dask.array, distributed, h5py, ...) must be imported already, by the background preload that the
first dock starts (#15, UX point 1; audit session 13 defect 11: 11.9-14.0 s GUI gaps at load 12-19
with the GUI thread importing dask.array in ``DataCube.to_dask``)."""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.gui

# A fresh interpreter: this test process imported these modules long ago.
SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    import napari
    from qtpy.QtWidgets import QApplication

    HEAVY = ("dask.array", "distributed", "h5py", "hdf5plugin", "scipy.ndimage")
    viewer = napari.Viewer(show=False)
    app = QApplication.instance()
    assert not any(m in sys.modules for m in HEAVY[:2]), [m for m in HEAVY if m in sys.modules]
    viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    try:
        from napari_4dstem.widgets._preload import preload_done
    except ImportError:  # the code before the preload: nothing to wait for
        preload_done = lambda: True
    t0 = time.perf_counter()
    while not preload_done() and time.perf_counter() - t0 < 300:  # the user looks at the dock meanwhile
        app.processEvents()
        time.sleep(0.01)
    app.processEvents()

    main = threading.get_ident()
    on_gui = []

    class Recorder:  # a meta path finder that only records which modules the GUI thread imports
        def find_spec(self, name, path=None, target=None):
            if threading.get_ident() == main:
                on_gui.append(name)
            return None

    sys.meta_path.insert(0, Recorder())
    layers = viewer.open_sample("napari-4dstem", "strained_crystal")
    app.processEvents()
    assert any(lyr.ndim == 4 for lyr in layers)
    heavy = sorted({h for h in HEAVY for n in on_gui if n == h or n.startswith(h + ".")})
    print("HEAVY_ON_GUI", heavy)
    viewer.close()
    """
)


def test_open_sample_after_a_dock_imports_nothing_heavy_on_the_gui_thread(stall_detector):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p.endswith("src"))}
    with stall_detector.excluded("reference"):  # the viewer under test runs in another process
        res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("HEAVY_ON_GUI")]
    assert line == ["HEAVY_ON_GUI []"], res.stdout[-3000:] + res.stderr[-2000:]
