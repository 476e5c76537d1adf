"""The input recorded with a result made on a 4D layer: its file, read again once it is stale."""

import os
import types

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_layer_source_stats_the_file_once_a_second_not_at_every_request(tmp_path, monkeypatch):
    from napari_4dstem.pipelines import recipe
    from napari_4dstem.widgets import _pipeline

    path = tmp_path / "scan.npy"
    np.save(path, np.zeros((4, 6, 8, 8), np.uint16))
    layer = types.SimpleNamespace(
        metadata={_pipeline.META: {"source": str(path)}}, data=np.zeros((4, 6, 8, 8), np.uint16)
    )
    calls = []
    real_of = recipe.InputRef.of.__func__
    monkeypatch.setattr(
        recipe.InputRef, "of", classmethod(lambda cls, *a, **k: calls.append(a) or real_of(cls, *a, **k))
    )
    clock = [1000.0]
    monkeypatch.setattr(_pipeline.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(_pipeline, "_sources", {})

    first = _pipeline.layer_source(layer)
    assert first.path == str(path.resolve()) and first.reshape_to == (4, 6) and first.size_bytes == path.stat().st_size
    for _ in range(20):  # a drag: twenty requests within the second, one stat
        clock[0] += 0.04
        assert _pipeline.layer_source(layer) is first
    assert len(calls) == 1
    np.save(path, np.zeros((4, 6, 8, 16), np.uint16))  # the file changes on disk
    os.utime(path, (1.5e9, 1.5e9))
    clock[0] += 1.0
    again = _pipeline.layer_source(layer)
    assert len(calls) == 2 and again.size_bytes == path.stat().st_size != first.size_bytes
    assert again.mtime_utc.startswith("2017-07-14")  # 1.5e9 s
    layer.data = np.zeros((2, 12, 8, 8), np.uint16)  # reshaped in the Scan shape dock: a new entry at once
    assert _pipeline.layer_source(layer).reshape_to == (2, 12) and len(calls) == 3
