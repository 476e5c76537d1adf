"""``napari-4dstem classify`` end to end on a small two-phase scan."""

from __future__ import annotations

import numpy as np
import pytest

from napari_4dstem.cli import main
from napari_4dstem.io import emd
from napari_4dstem.simulation.samples import render_disks

pytest.importorskip("sklearn")


def two_phase(tmp_path):
    rng = np.random.default_rng(3)
    sy, sx, det = 12, 14, (48, 48)
    truth = np.zeros((sy, sx), int)
    truth[:, 7:] = 1
    ij = np.array([(i, j) for i in range(-3, 4) for j in range(-3, 4) if (i, j) != (0, 0)], float)
    lats = [ij * 10.0, ij * 10.0 @ np.array([[0.996, -0.087], [0.087, 0.996]])]  # turned 5 deg
    cen = np.full((sy * sx, len(ij) + 1, 2), np.nan)
    for k, (i, j) in enumerate(np.ndindex(sy, sx)):
        o = np.array([23.6, 24.2])
        g = lats[truth[i, j]]
        keep = np.hypot(*g.T) < 22
        cen[k, 0] = o
        cen[k, 1 : keep.sum() + 1] = o + g[keep][:, ::-1]
    amp = np.concatenate([[2.0], np.full(len(ij), 0.6)])
    pats = render_disks(cen, amp, det, 2.5, 0.5) + 0.02
    data = rng.poisson(pats / pats.sum((1, 2), keepdims=True) * 2e4).astype(np.uint16)
    path = tmp_path / "two.npy"
    np.save(path, data.reshape(sy, sx, *det))
    return path, truth


def test_classify_cli_writes_labels_and_means(tmp_path, capsys):
    path, truth = two_phase(tmp_path)
    out = tmp_path / "cls.h5"
    assert main(["-q", "classify", str(path), str(out), "--max-classes", "4"]) == 0
    msg = capsys.readouterr().out
    assert "2 classes (suggested 2" in msg
    res = emd.read(out)
    lab = res["class_labels"].data
    # the two halves, in either numbering
    agree = max(np.mean(lab == truth), np.mean(lab == 1 - truth))
    assert agree >= 0.97
    assert res["class_0_mean"].data.shape == (48, 48)
    assert res["class_labels"].params["classify.max_classes"] == 4
    # no overwrite without asking
    assert main(["-q", "classify", str(path), str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_classify_cli_bad_options(tmp_path, capsys):
    path, _ = two_phase(tmp_path)
    assert main(["-q", "classify", str(path), str(tmp_path / "x.npy")]) == 2
    assert main(["-q", "classify", str(path), str(tmp_path / "x.h5"), "--features", "bragg"]) == 2
    assert "--peaks" in capsys.readouterr().err
    assert main(["-q", "classify", str(path), str(tmp_path / "y.h5"), "--n-classes", "0"]) == 2


def test_classify_is_a_pipeline_whose_script_reproduces_it(tmp_path, run_copied_script):
    """The CLI's result carries its recipe; the script of the file makes the same label map,
    also after a merge recorded in the recipe (no pass over the data for the merge)."""
    from napari_4dstem import open_datacube
    from napari_4dstem.pipelines import (
        ClassificationParams,
        ParameterError,
        run_classification,
        script_from_file,
    )

    path, _ = two_phase(tmp_path)
    out = tmp_path / "cls.h5"
    assert main(["-q", "classify", str(path), str(out), "--max-classes", "4", "--n-classes", "3"]) == 0
    text = script_from_file(out, tmp_path / "again.h5")
    assert "run_classification(" in text and "ClassificationParams(" in text and "n_classes=3" in text
    run_copied_script(text, tmp_path)
    np.testing.assert_array_equal(
        emd.read(tmp_path / "again.h5")["class_labels"].data, emd.read(out)["class_labels"].data
    )
    dc = open_datacube(path)
    try:
        res = run_classification(dc, classify=ClassificationParams(n_classes=3, max_classes=4), source=path)
    finally:
        dc.close()
    np.testing.assert_array_equal(res.classification.labels, emd.read(out)["class_labels"].data)
    merged = res.merged([0, 2])
    assert merged.classification.n_classes == 2 and merged.recipe.params["classify"].merge == ((0, 2),)
    run_copied_script(merged.to_script("merged.h5"), tmp_path)
    np.testing.assert_array_equal(emd.read(tmp_path / "merged.h5")["class_labels"].data, merged.classification.labels)
    with pytest.raises(ParameterError, match="two or more classes"):
        res.merged([1])
    with pytest.raises(ParameterError, match="peaks file"):
        ClassificationParams(features="bragg")


def test_classify_cli_space_auto_reaches_the_result_and_the_recipe(tmp_path, capsys):
    from napari_4dstem.pipelines import script_from_file

    path, truth = two_phase(tmp_path)
    out = tmp_path / "auto.h5"
    args = ["-q", "classify", str(path), str(out), "--max-classes", "4", "--space", "auto", "--maf", "6"]
    assert main([*args, "--remerge-jump", "7", "--remerge-separation", "9"]) == 0
    # two phases 5 deg apart in two halves: the components find them, so their classes are kept
    assert "2 classes (suggested 2" in capsys.readouterr().out
    res = emd.read(out)
    params = res["class_labels"].params
    assert params["classify.space"] == "auto" and params["classify.maf"] == 6
    assert params["classify.remerge_jump"] == 7.0 and params["classify.remerge_separation"] == 9.0
    assert params["space_chosen"] == "components"
    assert params["space_scores.components"] >= params["space_scores.maf"] / 2
    lab = res["class_labels"].data
    assert max(np.mean(lab == truth), np.mean(lab == 1 - truth)) >= 0.97
    text = script_from_file(out, tmp_path / "again.h5")
    assert "maf=6" in text  # space="auto" is the default: the recipe leaves it out
    assert main(["-q", "classify", str(path), str(tmp_path / "x.h5"), "--space", "auto", "--maf", "0"]) == 2
