"""The npe2 contributions in a real napari viewer under Xvfb: sample, reader, writer."""

import subprocess
import textwrap

import h5py
import numpy as np
import pytest

from napari_4dstem import Calibration, DataCube
from napari_4dstem._reader import get_reader
from napari_4dstem.io import emd

pytestmark = pytest.mark.gui


def _displayed(layer) -> np.ndarray:
    return np.asarray(layer._slice.image.raw)  # what the canvas shows (test-only private access)


def _scale_bar_text(viewer) -> str:
    # the text napari's scale bar draws on the canvas (test-only private access)
    (visual,) = viewer.window._qt_viewer.canvas._viewer_overlay_to_visual[viewer.canvas.overlays.scale_bar]
    return visual.node.text.text


def test_diffraction_scale_bar_reads_inverse_angstroms(make_napari_viewer, qtbot, stall_detector):
    """The scale bar on the pattern read "200 1/kÅ" (pint's compact prefix on 1 / angstrom):
    it reads Å⁻¹ with a value below 1, and world coordinates stay Å⁻¹ per pixel. The workspace
    turns it on with the dataset (the UX audit found it off: only this test turned it on), once:
    a user who turns it off keeps it off."""
    import pint

    viewer = make_napari_viewer(show=True)
    with stall_detector.excluded("first layer add"):
        layers = viewer.open_sample("napari-4dstem", "strained_crystal")
    cube = next(lyr for lyr in layers if lyr.ndim == 4)
    cal = cube.metadata["napari_4dstem"]["calibration"]
    assert tuple(cube.scale[2:]) == (cal.k_pixel_size, cal.k_pixel_size) == (0.01, 0.01)
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Virtual imaging")
    assert viewer.canvas.overlays.scale_bar.visible  # on with the dataset in the workspace
    viewer.reset_view()
    qtbot.waitUntil(lambda: "Å⁻¹" in _scale_bar_text(viewer), timeout=10000)
    text = _scale_bar_text(viewer)
    value = float(text.split()[0])
    # the bar spans a fraction of the 128-px (1.28 Å⁻¹) pattern: a plain value below 1 Å⁻¹
    assert text.endswith(" Å⁻¹") and "k" not in text and 0.01 <= value < 1.28, text
    # a length on the canvas in world units is that many Å⁻¹: 0.2 Å⁻¹ is 20 detector pixels
    q = 0.2 * pint.get_application_registry()(str(cube.units[2]))
    assert f"{q.to_compact():g~#P}" == "0.2 Å⁻¹"
    # the layer's units go back to the calibration's
    from napari_4dstem._layers import calibration_from_layer_meta

    back = calibration_from_layer_meta({"metadata": {}, "scale": cube.scale, "units": cube.units})
    assert back.k_units == "1/A" and back.k_pixel_size == 0.01
    # the user turns it off: another dock (another pick of the dataset) leaves it off
    qtbot.waitUntil(lambda: w.last_image is not None and w._worker is None, timeout=60000)
    viewer.canvas.overlays.scale_bar.visible = False
    viewer.window.add_plugin_dock_widget("napari-4dstem", "Calibration and DPC")
    assert not viewer.canvas.overlays.scale_bar.visible


def test_sample_opens_with_units_and_steps_the_scan(make_napari_viewer, stall_detector):
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        layers = viewer.open_sample("napari-4dstem", "strained_crystal")
    cube = next(lyr for lyr in layers if lyr.ndim == 4)
    assert cube.axis_labels == ("scan_y", "scan_x", "k_y", "k_x")
    assert tuple(cube.scale) == (1.0, 1.0, 0.01, 0.01)
    assert [str(u) for u in cube.units] == ["nanometer", "nanometer", "inverse_angstrom", "inverse_angstrom"]
    assert isinstance(cube.metadata["napari_4dstem"]["calibration"], Calibration)
    assert cube.metadata["napari_4dstem"]["calibration"].beam_energy_kev == 300.0
    assert cube.contrast_limits[1] > cube.contrast_limits[0]
    assert viewer.dims.displayed == (2, 3)  # the diffraction pattern is on the canvas
    data = cube.data
    for iy, ix in [(0, 0), (5, 17), (31, 31)]:
        viewer.dims.set_point(0, iy * cube.scale[0])
        viewer.dims.set_point(1, ix * cube.scale[1])
        np.testing.assert_array_equal(_displayed(cube), np.asarray(data[iy, ix]))
        stall_detector.step()
    probe = next(lyr for lyr in layers if lyr.name == "probe")
    assert probe.ndim == 2 and not probe.visible and tuple(probe.scale) == (0.01, 0.01)
    # the dataset, not the hidden probe, is the selected layer after Open Sample
    assert viewer.layers.selection.active is cube


def test_save_layer_to_emd_and_reopen(make_napari_viewer, tmp_path, stall_detector):
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        (cube,) = [lyr for lyr in viewer.open_sample("napari-4dstem", "polycrystal_au") if lyr.ndim == 4]
    out = tmp_path / "saved.h5"
    viewer.layers.selection = {cube}
    with stall_detector.excluded("napari calls writers on the GUI thread"):
        written = viewer.layers.save(str(out), selected=True, plugin="napari-4dstem")
    assert written == [str(out)]
    with stall_detector.excluded("reference"), emd.read_datacube(out) as dc:
        np.testing.assert_array_equal(dc.data[()], np.asarray(cube.data))
        assert dc.calibration == cube.metadata["napari_4dstem"]["calibration"]
    (reopened,) = viewer.open(str(out), plugin="napari-4dstem")
    assert tuple(reopened.scale) == tuple(cube.scale)
    assert reopened.axis_labels == cube.axis_labels


def test_saved_layer_reads_in_py4dstem(p4python, make_napari_viewer, tmp_path, stall_detector):
    # p4python first: it may skip, and must do so before a viewer exists
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        (cube,) = [lyr for lyr in viewer.open_sample("napari-4dstem", "strained_crystal") if lyr.ndim == 4]
    out = tmp_path / "for_p4.h5"
    viewer.layers.selection = {cube}
    # napari's File > Save calls the writer on the GUI thread (napari's, not a dock's, choice)
    with stall_detector.excluded("napari's File > Save on the GUI thread"):
        viewer.layers.save(str(out), selected=True, plugin="napari-4dstem")
    ref = tmp_path / "ref.npy"
    with stall_detector.excluded("reference"):
        np.save(ref, np.asarray(cube.data))
    script = textwrap.dedent(
        """
        import sys, numpy as np, py4DSTEM
        d = py4DSTEM.read(sys.argv[1], verbose=False)
        assert np.array_equal(d.data, np.load(sys.argv[2])), "arrays differ"
        assert d.calibration.get_Q_pixel_size() == 0.01 and d.calibration.get_R_pixel_units() == "nm"
        print("OK", d.data.shape)
        """
    )
    with stall_detector.excluded("reference"):  # py4DSTEM reads the file in another process
        res = subprocess.run([p4python, "-c", script, str(out), str(ref)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("OK (32, 32, 128, 128)")


def test_reader_ignores_files_that_are_not_ours(tmp_path):
    plain = tmp_path / "other.h5"
    with h5py.File(plain, "w") as f:
        f["image"] = np.zeros((4, 4))
    np.save(tmp_path / "img2d.npy", np.zeros((4, 5)))
    (tmp_path / "notes.xml").write_text("<a/>")
    (tmp_path / "x.h5").write_bytes(b"garbage")
    for p in ["other.h5", "img2d.npy", "notes.xml", "x.h5", "missing.h5"]:
        assert get_reader(str(tmp_path / p)) is None, p
    # a 3D .npy is a stack of patterns to us (one scan line, reshaped in the Scan shape dock):
    # claimed beside napari's own reader, which opens it as an image stack (napari lets the user
    # choose between the two)
    np.save(tmp_path / "stack3d.npy", np.zeros((3, 4, 5)))
    assert callable(get_reader(str(tmp_path / "stack3d.npy")))
    ok = emd.write(tmp_path / "ok.h5", DataCube(np.zeros((2, 2, 4, 4), np.uint8)))
    assert callable(get_reader(str(ok)))
    assert get_reader([str(ok), str(ok)]) is None


def test_a_truncated_file_under_an_open_layer_does_not_end_napari(make_napari_viewer, tmp_path, stall_detector):
    """napari slices a .npy layer's memmap itself; a page past the end of a file that another
    program truncated would SIGBUS the whole session. Each slice is checked instead (#19)."""
    import contextlib
    import os

    from napari_4dstem.data._blockread import CheckedMemmap
    from napari_4dstem.errors import FileFormatError

    rng = np.random.default_rng(2)
    cube = rng.integers(0, 1000, (8, 8, 16, 16), dtype=np.uint16)
    p = tmp_path / "c.npy"
    np.save(p, cube)
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        (layer,) = viewer.open(str(p), plugin="napari-4dstem")
    assert isinstance(layer.data, CheckedMemmap)
    viewer.dims.current_step = (2, 3, 0, 0)
    np.testing.assert_array_equal(_displayed(layer), cube[2, 3])
    os.truncate(p, p.stat().st_size // 2)  # another program shortens the file
    with pytest.raises(FileFormatError, match="truncated while open"):
        layer.data[7, 7]
    with contextlib.suppress(FileFormatError):  # napari may report it or pass it on
        viewer.dims.current_step = (7, 7, 0, 0)
    viewer.dims.current_step = (1, 1, 0, 0)  # still alive, still showing what is there
    np.testing.assert_array_equal(_displayed(layer), cube[1, 1])
