"""Results in napari: a results-only EMD file opens as layers (maps, RGB, diffraction images,
Bragg peaks as 4D points), and every such layer saved from napari reopens in the library with
its calibration, units and parameters."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem.data.calibration import Calibration
from napari_4dstem.data.results import BraggPeaks, DiffractionImage, RealSpaceMap
from napari_4dstem.io import emd

pytestmark = pytest.mark.gui

CAL = Calibration(
    scan_step=(1.5, 1.5),
    scan_units="nm",
    k_pixel_size=0.02,
    k_units="1/A",
    origin_px=(10.0, 11.0),
    beam_energy_kev=300.0,
)


@pytest.fixture
def results_file(tmp_path, rng):
    strain = RealSpaceMap(
        rng.normal(0, 1e-3, (5, 6, 4)),
        name="strain",
        units="",
        channels=("e_xx", "e_yy", "e_xy", "theta_rad"),
        calibration=CAL,
        params={"reference": [0, 2, 0, 2]},
    )
    bf = RealSpaceMap(
        rng.random((5, 6)),
        name="virtual_bf",
        units="counts",
        calibration=CAL,
        params={"detector": {"kind": "disk", "radius_px": 4.0}},
    )
    ipf = RealSpaceMap(
        rng.random((5, 6, 3)), name="ipf_z", channels=("r", "g", "b"), calibration=CAL, params={"direction": "z"}
    )
    pattern = DiffractionImage(
        rng.random((20, 24)), name="region_pattern", units="counts", calibration=CAL, params={"region": [0, 2, 0, 3]}
    )
    rows = [
        {"qy": rng.random(k) * 20, "qx": rng.random(k) * 24, "intensity": rng.random(k), "correlation": rng.random(k)}
        for k in rng.integers(1, 5, 30)
    ]
    peaks = BraggPeaks.from_lists(rows, (5, 6), calibration=CAL, params={"detector_shape": [20, 24]})
    many = RealSpaceMap(
        rng.random((5, 6, 12)),
        name="acom_matches_orientation",
        calibration=CAL,
        channels=tuple(f"m{m}_U{i}" for m in range(2) for i in range(6)),
        params={"n_matches": 2},
    )
    objs = {o.name: o for o in (strain, bf, ipf, pattern, peaks, many)}
    return emd.write(tmp_path / "results.h5", *objs.values()), objs


def _save(viewer, layer, path, stall_detector):
    viewer.layers.selection = {layer}
    # napari's File > Save calls the writer on the GUI thread (napari's, not a dock's, choice)
    with stall_detector.excluded("napari's File > Save on the GUI thread"):
        assert viewer.layers.save(str(path), selected=True, plugin="napari-4dstem") == [str(path)]
    with stall_detector.excluded("reference"):
        return emd.read(path)


def test_results_file_opens_and_every_layer_saves_back(make_napari_viewer, results_file, tmp_path, stall_detector):
    path, objs = results_file
    viewer = make_napari_viewer()
    with stall_detector.excluded("first layer add"):
        layers = viewer.open(str(path), plugin="napari-4dstem")
    names = [lyr.name for lyr in layers]
    assert sorted(names) == sorted(
        [
            "strain [e_xx]",
            "strain [e_yy]",
            "strain [e_xy]",
            "strain [theta_rad]",
            "virtual_bf",
            "ipf_z",
            "region_pattern",
            "braggpeaks",
            "acom_matches_orientation",
        ]
    )
    by = {lyr.name: lyr for lyr in layers}
    assert tuple(by["virtual_bf"].scale) == (1.5, 1.5) and by["virtual_bf"].axis_labels == ("scan_y", "scan_x")
    assert tuple(by["region_pattern"].scale) == (0.02, 0.02)
    assert by["ipf_z"].rgb
    np.testing.assert_array_equal(by["strain [e_xy]"].data, objs["strain"].channel("e_xy"))
    pts = by["braggpeaks"]
    assert pts.ndim == 4 and len(pts.data) == objs["braggpeaks"].n_peaks

    # each layer, saved from napari, reopens in the library with calibration, units, params
    bf = _save(viewer, by["virtual_bf"], tmp_path / "bf.h5", stall_detector)["virtual_bf"]
    np.testing.assert_array_equal(bf.data, objs["virtual_bf"].data)
    assert bf.units == "counts" and bf.calibration == CAL
    assert bf.params["detector"] == {"kind": "disk", "radius_px": 4.0}
    e = _save(viewer, by["strain [e_xx]"], tmp_path / "exx.h5", stall_detector)["strain [e_xx]"]
    np.testing.assert_array_equal(e.data, objs["strain"].channel("e_xx"))
    assert e.units == "" and e.params["channel"] == "e_xx" and e.params["of"] == "strain"
    ipf = _save(viewer, by["ipf_z"], tmp_path / "ipf.h5", stall_detector)["ipf_z"]
    assert ipf.channels == ("r", "g", "b")
    np.testing.assert_array_equal(ipf.data, objs["ipf_z"].data)
    pat = _save(viewer, by["region_pattern"], tmp_path / "pattern.h5", stall_detector)["region_pattern"]
    assert isinstance(pat, DiffractionImage) and pat.calibration == CAL
    np.testing.assert_array_equal(pat.data, objs["region_pattern"].data)
    peaks = _save(viewer, pts, tmp_path / "peaks.h5", stall_detector)["braggpeaks"]
    want = objs["braggpeaks"]
    assert isinstance(peaks, BraggPeaks) and peaks.scan_shape == want.scan_shape
    for f in ("offsets", "qy", "qx", "intensity", "correlation"):
        np.testing.assert_array_equal(getattr(peaks, f), getattr(want, f))
    assert peaks.calibration == CAL and peaks.params["detector_shape"] == [20, 24]
    # a stack of many channels is one hidden layer with a channel slider, and saves back whole
    st = by["acom_matches_orientation"]
    assert st.ndim == 3 and not st.visible and st.axis_labels == ("channel", "scan_y", "scan_x")
    back = _save(viewer, st, tmp_path / "stack.h5", stall_detector)["acom_matches_orientation"]
    np.testing.assert_array_equal(back.data, objs["acom_matches_orientation"].data)
    assert back.channels == objs["acom_matches_orientation"].channels and back.params["n_matches"] == 2
    # the saved files say where the results came from
    with stall_detector.excluded("reference"):
        prov = emd.read_provenance(tmp_path / "bf.h5")
    assert prov["virtual_bf"]["input_file"] == str(path.resolve())

    # several layers at once (images and points): one file
    viewer.layers.selection = {by["virtual_bf"], by["ipf_z"], pts}
    out = tmp_path / "several.h5"
    with stall_detector.excluded("napari's File > Save on the GUI thread"):
        assert viewer.layers.save(str(out), selected=True, plugin="napari-4dstem") == [str(out)]
    with stall_detector.excluded("reference"):
        assert {"virtual_bf", "ipf_z", "braggpeaks"} <= set(emd.read(out))

    # and the reopened files open again in napari (napari's reader on the GUI thread, as File > Open)
    with stall_detector.excluded("first layer add"):
        again = viewer.open(str(tmp_path / "peaks.h5"), plugin="napari-4dstem")
    assert again[0].ndim == 4 and len(again[0].data) == want.n_peaks


def test_points_of_one_pattern_save_as_peaks(make_napari_viewer, tmp_path, stall_detector):
    viewer = make_napari_viewer()
    lyr = viewer.add_points(np.array([[3.0, 4.5], [10.25, 7.0]]), name="disks")
    peaks = _save(viewer, lyr, tmp_path / "one.h5", stall_detector)["disks"]
    assert peaks.scan_shape == (1, 1)
    np.testing.assert_array_equal(peaks.qy, [3.0, 10.25])
    np.testing.assert_array_equal(peaks.qx, [4.5, 7.0])
