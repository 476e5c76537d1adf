"""The "Simulation and training data" widget in a real viewer: preview layers, a tiny training
set (progress, shards, manifest), cancel and resume, a tiny training run with live curves, Stop,
and the trained model in the registry and the NN widget's list."""

import json
import threading

import h5py
import numpy as np
import pytest

from napari_4dstem.errors import Napari4DSTEMError
from napari_4dstem.nn.registry import list_models
from napari_4dstem.simulation import training
from napari_4dstem.simulation.engines import ENGINES, get_engine
from napari_4dstem.widgets import simulation as simw
from napari_4dstem.widgets._common import PartialMaps
from napari_4dstem.widgets.simulation import NEWEST_LAYER, SimulationTrainingWidget

from .test_job_cancel import click_cost, record_yields

pytestmark = pytest.mark.gui


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_4DSTEM_USER_MODELS", str(tmp_path / "user-models"))
    return tmp_path / "user-models"


def _widget(viewer) -> SimulationTrainingWidget:
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Simulation and training data")
    assert isinstance(w, SimulationTrainingWidget)
    return w


def _tiny(w, folder, n=4, per_shard=2):
    w.n_patterns.setValue(n)
    w.per_shard.setValue(per_shard)
    w.size.setValue(64)
    w.pixel[0].setValue(0.02)
    w.pixel[1].setValue(0.03)
    w.engine_combo.setCurrentText("kinematic")
    w.sim_out.setText(str(folder))


def test_engines_and_preview_layers(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w = _widget(viewer)
    # the engines are checked in a worker (importing torch/abTEM/Prismatic held the GUI thread)
    qtbot.waitUntil(lambda: w.engines_checked, timeout=60000)
    # every engine of the registry is listed; one that cannot run is disabled with the reason
    model = w.engine_combo.model()
    items = {w.engine_combo.itemText(i): model.item(i) for i in range(w.engine_combo.count())}
    assert tuple(items) == ENGINES and items["kinematic"].isEnabled()
    for name, item in items.items():
        try:
            get_engine(name)
        except Napari4DSTEMError as e:
            assert not item.isEnabled() and item.toolTip() == str(e)
        else:
            assert item.isEnabled()
    assert w.crystals() == ("Au",)
    assert not w.add_cif(tmp_path / "missing.cif") and "no such CIF" in w.sim_status.text()
    _tiny(w, tmp_path / "set")
    # a calibrated dataset in the viewer: the preview layers must carry units too
    from napari_4dstem import Calibration

    cal = Calibration(scan_step=(1.0, 1.0), scan_units="nm", k_pixel_size=0.02, k_units="1/A")
    viewer.add_image(np.zeros((2, 2, 8, 8), np.float32), name="cube", **cal.napari_kwargs("4d"))
    w.preview_index.setValue(3)
    assert w.preview()
    qtbot.waitUntil(lambda: w.preview_result is not None and not w.sim_jobs.busy, timeout=30000)
    for name in simw.PANELS:
        assert viewer.layers[name].data.shape == (64, 64)
    assert viewer.layers.extent.units is not None  # else napari warns "Inconsistent units"
    # panels side by side, left to right
    xs = [viewer.layers[name].translate[1] for name in simw.PANELS]
    assert xs == sorted(xs) and len(set(xs)) == 4
    params, sim, aug = w.preview_result
    assert params.index == 3
    pts = viewer.layers[simw.BRAGG_LAYER]
    np.testing.assert_allclose(pts.data, np.stack([sim["bragg"]["qy"], sim["bragg"]["qx"]], 1))
    np.testing.assert_allclose(pts.translate, viewer.layers[simw.PATTERN_LAYER].translate)
    assert len(pts.data) >= 5
    # the label's peaks sit at the Bragg positions: every listed reflection is a local maximum
    label = viewer.layers[simw.LABEL_LAYER].data
    inside = (pts.data >= 1).all(1) & (pts.data < 63).all(1)
    for qy, qx in np.round(pts.data[inside]).astype(int):
        assert label[qy, qx] > 0 and label[qy, qx] == label[qy - 1 : qy + 2, qx - 1 : qx + 2].max()
    assert label[32, 32] == pytest.approx(1.0)  # the 000 peak at the origin
    # the augmented positions are the warped ones (drawn over the augmented panel)
    aug_pts = viewer.layers[simw.AUG_BRAGG_LAYER]
    np.testing.assert_allclose(aug_pts.data[:, 0], aug.bragg_qy)
    # patterns are shown in log10; the linear values stay in the metadata
    lyr = viewer.layers[simw.PATTERN_LAYER]
    np.testing.assert_allclose(lyr.metadata["linear"], sim["pattern"])
    assert lyr.data.max() == pytest.approx(np.log10(sim["pattern"].max()), rel=1e-5)


def test_run_cancel_and_resume(make_napari_viewer, qtbot, tmp_path, stall_detector, monkeypatch):
    viewer = make_napari_viewer()
    w = _widget(viewer)
    folder = tmp_path / "set"
    # cancel once the first shard is complete: only complete shards are on disk
    _tiny(w, folder, n=40, per_shard=2)
    # the patterns after the first shard wait until the test has clicked Cancel, so the run is
    # still going at the click however fast the machine (the whole run took 3.3 s once)
    real, held = training._simulate_index, threading.Event()

    def after_the_first_shard_held(spec, index):
        if index >= 2:
            held.wait(30)
        return real(spec, index)

    monkeypatch.setattr(training, "_simulate_index", after_the_first_shard_held)
    seen = record_yields(monkeypatch, w.sim_jobs, [])  # before the start: no first step missed
    assert w.run_simulation()
    # the newest pattern shown while it runs, and a complete shard on disk. (Waiting for the file
    # alone raced: the worker writes it right after yielding its patterns' steps, and a Cancel
    # clicked before the GUI thread took those steps from its queue dropped them, the first
    # pattern's with them: no layer, once in a full run.)
    qtbot.waitUntil(lambda: NEWEST_LAYER in viewer.layers and (folder / "shard-00000.h5").exists(), timeout=30000)
    stall_detector.step()
    cpu, _wall = click_cost(w.sim_cancel_btn)
    assert cpu < 0.010 and w.sim_status.text() == "cancelling..." and not w.sim_cancel_btn.isEnabled()
    qtbot.waitUntil(lambda: not w.sim_jobs.busy, timeout=30000)
    print(f"Cancel click {cpu * 1e3:.2f} ms GUI CPU, stopped {w.sim_jobs.cancel_s[-1]:.3f} s after")
    assert w.sim_jobs.cancel_s[-1] < 0.5
    assert w.sim_result is None and w.sim_status.text() == "cancelled"
    assert NEWEST_LAYER in viewer.layers  # Cancel leaves the newest pattern shown
    written = sorted(p.name for p in folder.glob("shard-*.h5"))
    assert 1 <= len(written) < 20
    for name in written:
        with h5py.File(folder / name) as f:
            assert f.attrs["complete"] and int(f.attrs["n"]) == 2
    assert not list(folder.glob("*.tmp*")) and not list(folder.glob(".*"))
    # the same run resumes: complete shards are skipped, the progress bar counts to the total
    held.set()
    seen.clear()  # still recorded: record_yields stays for the runner's next job
    assert w.run_simulation()
    qtbot.waitUntil(lambda: w.sim_result is not None, timeout=60000)
    qtbot.waitUntil(lambda: not w.sim_jobs.busy, timeout=10000)
    r = w.sim_result
    assert set(r.shards_skipped) == set(written) and len(r.shards_written) == 20 - len(written)
    assert seen[-1].done == seen[-1].total == 40
    text = w.sim_progress.format()
    assert "40 / 40" in text and "ETA" in text
    man = json.loads((folder / "manifest.json").read_text())
    assert man["complete"] and len(man["shards"]) == 20
    assert w.shard_dir.text() == str(folder)  # offered to the Train tab
    # the live view held a simulated pattern of the set (log10 intensity), at most 5 updates a second
    shown = viewer.layers[NEWEST_LAYER].data
    with stall_detector.excluded("reference"):
        pats = np.concatenate([h5py.File(p)["patterns"][()] for p in sorted(folder.glob("shard-*.h5"))])
        logs = np.log10(np.maximum(pats, np.maximum(pats.max((1, 2), keepdims=True) * 1e-6, 1e-12)))
        assert min(np.abs(lg - shown).max() for lg in logs) < 1e-4
    times = [t for n, _, t in w.sim_partials.shown]
    assert len(times) >= 1 and np.all(np.diff(times) >= PartialMaps.MIN_S - 0.01)


@pytest.fixture(scope="module")
def proxy_shards(tmp_path_factory):
    from napari_4dstem.nn.synthetic import write_training_shards

    d = tmp_path_factory.mktemp("proxy")
    write_training_shards(d, n_patterns=8, per_shard=8, seed=3)
    return d


def _train_form(w, shards, run, *, epochs=1, steps=2):
    w.shard_dir.setText(str(shards))
    w.train_out.setText(str(run))
    w.epochs.setValue(epochs)
    w.steps.setValue(steps)
    w.batch.setValue(2)
    w.model_size.setCurrentText("128")
    w.width.setValue(1)
    w.strain_check.setChecked(False)
    w.model_name.setText("tiny-test")


def test_train_resume_stop_and_model_in_registry(make_napari_viewer, qtbot, tmp_path, proxy_shards, user_models):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    viewer = make_napari_viewer()
    w = _widget(viewer)
    _, nnw = viewer.window.add_plugin_dock_widget("napari-4dstem", "NN disk detection")
    run = tmp_path / "run"
    w.tabs.setCurrentIndex(1)
    assert w.device.itemText(0) == "cpu" and not w.resume_btn.isEnabled()
    # a short run to its end: live curve data, checkpoint, exported model, listed everywhere
    _train_form(w, proxy_shards, run, epochs=1, steps=2)
    w.train_btn.click()
    qtbot.waitUntil(lambda: w.exported is not None, timeout=60000)
    qtbot.waitUntil(lambda: not w.train_jobs.busy, timeout=10000)
    assert w.plot.steps == [1, 2] and np.isfinite(w.plot.losses).all()
    assert len(w.plot.history) == 1 and "f1_1px" in w.plot.history[0]
    assert (run / "checkpoint.pt").is_file() and w.resume_btn.isEnabled()
    rows = {f"{e.name}@{e.version}": s for e, s in list_models()}
    assert rows[w.exported] == "user"
    qtbot.waitUntil(
        lambda: w.exported in [nnw.model_combo.itemText(i) for i in range(nnw.model_combo.count())], timeout=30000
    )  # the NN dock lists the models in a worker
    assert simw.PLOT_DOCK in viewer.window.dock_widgets
    # Resume for a long second epoch, then Stop: the curves continue (the first epoch from
    # history.json), nothing more is exported, the checkpoint stays at epoch 1
    first, before = w.exported, (run / "checkpoint.pt").read_bytes()
    _train_form(w, proxy_shards, run, epochs=2, steps=10_000)
    w.resume_btn.click()
    qtbot.waitUntil(lambda: len(w.plot.losses) >= 2, timeout=60000)
    assert w.plot.steps[:2] == [3, 4] and [h["epoch"] for h in w.plot.history] == [1]
    w.stop_btn.click()
    qtbot.waitUntil(lambda: not w.train_jobs.busy, timeout=30000)
    assert w.train_result is None and w.exported == first and "Resume" in w.train_status.text()
    assert (run / "checkpoint.pt").read_bytes() == before and len(list(user_models.glob("*.pt"))) == 1
