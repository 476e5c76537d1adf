import h5py
import numpy as np
import pytest

from napari_4dstem.errors import DataShapeError, FileFormatError
from napari_4dstem.simulation.shards import ShardSet, read_manifest, write_manifest, write_shard


def _shard(tmp_path, name, n, rng, **kw):
    pats = rng.random((n, 16, 16)).astype(np.float32)
    bragg = [
        {
            "qy": rng.uniform(0, 16, k),
            "qx": rng.uniform(0, 16, k),
            "intensity": rng.random(k),
            "hkl": rng.integers(-3, 4, (k, 3)),
        }
        for k in rng.integers(0, 6, n)
    ]
    meta = {
        "thickness_A": rng.uniform(10, 300, n),
        "crystal": ["Au"] * n,
        "orientation": np.broadcast_to(np.eye(3), (n, 3, 3)),
    }
    write_shard(
        tmp_path / name,
        patterns=pats,
        probes=pats * 0 + 1,
        labels=pats * 2,
        bragg=bragg,
        meta=meta,
        engine="test",
        **kw,
    )
    return pats, bragg, meta


def test_write_read_round_trip_across_shards(tmp_path, rng):
    p0 = _shard(tmp_path, "shard-00000.h5", 3, rng)[0]
    p1, b1, m1 = _shard(tmp_path, "shard-00001.h5", 4, rng)
    s = ShardSet(tmp_path)
    assert len(s) == 7 and s.counts == [3, 4]
    np.testing.assert_array_equal(s[2].pattern, p0[2])
    x = s[4]  # second shard, pattern 1
    np.testing.assert_array_equal(x.pattern, p1[1])
    np.testing.assert_array_equal(x.label, 2 * p1[1])
    np.testing.assert_array_equal(x.bragg["qx"], b1[1]["qx"])
    np.testing.assert_array_equal(x.bragg["hkl"], b1[1]["hkl"])
    assert x.meta["crystal"] == "Au" and x.meta["thickness_A"] == pytest.approx(m1["thickness_A"][1])
    assert np.isnan(x.meta["energy_kev"])  # not given: NaN, never invented
    np.testing.assert_array_equal(s[-1].pattern, p1[-1])
    with pytest.raises(IndexError):
        s[7]


def test_incomplete_and_foreign_files_are_skipped(tmp_path, rng):
    _shard(tmp_path, "shard-00000.h5", 2, rng)
    with h5py.File(tmp_path / "shard-00001.h5", "w") as f:  # a shard killed mid-write
        f.attrs.update(format="napari-4dstem-shard", complete=False, n=5)
    (tmp_path / "shard-00002.h5").write_bytes(b"junk")
    s = ShardSet(tmp_path)
    assert len(s) == 2 and len(s.skipped) == 2
    with pytest.raises(FileFormatError, match="no complete training shards"):
        ShardSet([tmp_path / "shard-00001.h5"])


def test_bad_shapes_and_fields(tmp_path, rng):
    with pytest.raises(DataShapeError, match="must match"):
        write_shard(
            tmp_path / "x.h5",
            patterns=np.zeros((2, 4, 4)),
            probes=np.zeros((2, 4, 5)),
            labels=np.zeros((2, 4, 4)),
            bragg=[{}, {}],
            meta={},
            engine="t",
        )
    empty = {"qy": [], "qx": [], "intensity": [], "hkl": np.zeros((0, 3))}
    with pytest.raises(DataShapeError, match="unknown shard metadata"):
        write_shard(
            tmp_path / "y.h5",
            patterns=np.zeros((1, 4, 4)),
            probes=np.zeros((1, 4, 4)),
            labels=np.zeros((1, 4, 4)),
            bragg=[empty],
            meta={"colour": ["red"]},
            engine="t",
        )
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "y.h5").exists()


def test_manifest(tmp_path):
    write_manifest(tmp_path, {"seed": 3, "engines": ["kinematic"], "arr": np.arange(2)})
    assert read_manifest(tmp_path) == {"seed": 3, "engines": ["kinematic"], "arr": [0, 1]}
    with pytest.raises(FileFormatError, match="no manifest"):
        read_manifest(tmp_path / "nope")
