import numpy as np
import pytest

from napari_4dstem import BraggPeaks, RealSpaceMap
from napari_4dstem.errors import DataShapeError


def test_bragg_peaks_csr_round_trip(rng):
    lists = []
    for k in rng.integers(0, 6, 12):
        lists.append({"qy": rng.uniform(0, 64, k), "qx": rng.uniform(0, 64, k), "intensity": rng.random(k)})
    p = BraggPeaks.from_lists(lists, (3, 4))
    assert p.n_peaks == sum(len(x["qy"]) for x in lists)
    np.testing.assert_array_equal(p.counts().ravel(), [len(x["qy"]) for x in lists])
    for i, x in enumerate(lists):
        got = p.at(i // 4, i % 4)
        np.testing.assert_array_equal(got["qy"], x["qy"])
        np.testing.assert_array_equal(got["intensity"], x["intensity"])
        assert np.all(np.isnan(got["correlation"]))  # not given -> NaN, never invented
    np.testing.assert_array_equal(p.position_index(), np.repeat(np.arange(12), p.counts().ravel()))


def test_bragg_peaks_validation():
    with pytest.raises(DataShapeError, match="offsets"):
        BraggPeaks((2, 2), [0, 1, 1], [0], [0], [0], [0])
    with pytest.raises(DataShapeError, match="qx must have 1 entries"):
        BraggPeaks((1, 1), [0, 1], [0.0], [], [1.0], [1.0])


def test_real_space_map_channels(rng):
    m = RealSpaceMap(rng.random((4, 5, 2)), name="s", channels=("a", "b"))
    np.testing.assert_array_equal(m.channel("b"), m.data[..., 1])
    with pytest.raises(KeyError, match="no channel 'c'"):
        m.channel("c")
    with pytest.raises(DataShapeError, match="2 channels need as many names"):
        RealSpaceMap(np.zeros((4, 5, 2)))
    with pytest.raises(DataShapeError):
        RealSpaceMap(np.zeros(5))
    assert not m.data.flags.writeable
