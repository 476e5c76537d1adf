"""Command line: `napari-4dstem disks` and `napari-4dstem strain` on the strained sample."""

import numpy as np
import pytest

from napari_4dstem.cli import main
from napari_4dstem.data.results import BraggPeaks, DiffractionImage, RealSpaceMap
from napari_4dstem.io import emd
from napari_4dstem.simulation.samples import make_strained_crystal


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory):
    s = make_strained_crystal(scan_shape=(8, 8))
    path = tmp_path_factory.mktemp("bragg") / "sample.h5"
    emd.write(path, *s.objects())
    return path, s


def test_disks_writes_peaks_and_the_bragg_vector_map(sample_file, tmp_path, capsys):
    path, _ = sample_file
    out = tmp_path / "disks.h5"
    assert main(["-q", "disks", str(path), str(out), "--probe", f"{path}:probe"]) == 0
    assert "25.0 per pattern" in capsys.readouterr().out
    objs = emd.read(out)
    peaks = next(v for v in objs.values() if isinstance(v, BraggPeaks))
    bvm = next(v for v in objs.values() if isinstance(v, DiffractionImage))
    assert peaks.scan_shape == (8, 8) and peaks.n_peaks == 64 * 25
    assert bvm.data.shape == (128, 128) and bvm.data.sum() > 0


def test_strain_matches_the_planted_field_and_bad_reference_exits_2(sample_file, tmp_path, capsys):
    path, s = sample_file
    out = tmp_path / "strain.h5"
    # no --probe: the template comes from the bright-field disk of the mean pattern
    assert main(["-q", "strain", str(path), str(out), "--reference", "0", "2", "0", "2"]) == 0
    assert "64/64 patterns fitted" in capsys.readouterr().out
    objs = emd.read(out)
    strain = next(v for v in objs.values() if isinstance(v, RealSpaceMap) and v.name == "strain")
    err = strain.data - s.truth[0].data
    assert np.sqrt(np.mean(err[..., :3] ** 2)) < 1.5e-3
    assert main(["-q", "strain", str(path), str(tmp_path / "x.h5"), "--reference", "50", "60", "0", "2"]) == 2
    assert "holds no scan position" in capsys.readouterr().err
    assert main(["-q", "strain", str(path), str(tmp_path / "y.h5"), "--g1", "1", "2"]) == 2
