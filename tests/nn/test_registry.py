"""Model files and the registry: hash-checked downloads from a local HTTP server, offline use,
corrupted and tampered files refused, wrong architectures refused with a clear message."""

import contextlib
import functools
import http.server
import json
import threading

import pytest
import torch

from napari_4dstem.cli import main
from napari_4dstem.errors import FileFormatError
from napari_4dstem.nn.model import ModelConfig, ModelError, build_model
from napari_4dstem.nn.registry import (
    IntegrityError,
    cache_dir,
    list_models,
    load_model,
    pull_model,
    save_model,
    sha256_file,
    user_model_path,
    user_models_dir,
    verify_models,
)


@contextlib.contextmanager
def serve(folder, timeout_s=30.0):
    """A bounded HTTP server on 127.0.0.1 serving ``folder``; stops by itself after the block
    (or after ``timeout_s`` at the latest)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.timeout = 1.0
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    stopper = threading.Timer(timeout_s, srv.shutdown)
    stopper.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        stopper.cancel()
        srv.shutdown()
        srv.server_close()
        t.join(5)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_4DSTEM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


@pytest.fixture
def remote(tmp_path):
    """A served folder with one model file and an index describing it."""
    site = tmp_path / "site"
    site.mkdir()
    torch.manual_seed(0)
    m = build_model(ModelConfig(size=128, width=1))
    f = save_model(site / "tiny-1.0.pt", m, card={"version": "1.0"})
    return site, f


def _index(site, url, sha):
    doc = {
        "format": "napari-4dstem-model-index",
        "version": 1,
        "models": [
            {
                "name": "tiny",
                "version": "1.0",
                "input_size": 128,
                "training_set": "none (test)",
                "url": f"{url}/tiny-1.0.pt",
                "sha256": sha,
                "licence": "BSD-3-Clause",
            }
        ],
    }
    (site / "index.json").write_text(json.dumps(doc))
    return f"{url}/index.json"


def test_pull_verifies_and_caches_then_loads_offline(remote, cache, capsys):
    site, f = remote
    with serve(site) as url:
        index = _index(site, url, sha256_file(f))
        assert dict((e.name, s) for e, s in list_models(index))["tiny"] == "not downloaded"
        path = pull_model("tiny", index=index)
        assert path.parent == cache and path.is_file()
        assert sha256_file(path) == sha256_file(f)
        assert main(["models", "list", "--index", index]) == 0
        assert "cached" in capsys.readouterr().out
    # server gone: the cached model loads offline, hash-checked
    lm = load_model("tiny", index=str(site / "index.json"))
    assert lm.config.width == 1 and lm.sha256 == sha256_file(f)
    assert not list(cache.glob(".part-*")), "no temporary file left behind"


def test_tampered_download_is_refused_and_nothing_is_cached(remote, cache):
    site, _ = remote
    with serve(site) as url:
        index = _index(site, url, "0" * 64)
        with pytest.raises(IntegrityError, match="does not match"):
            pull_model("tiny", index=index)
    assert not cache.exists() or not any(cache.iterdir())


def test_corrupted_cached_file_is_refused_and_reported(remote, cache, capsys):
    site, f = remote
    with serve(site) as url:
        index = _index(site, url, sha256_file(f))
        path = pull_model("tiny", index=index)
    local_index = str(site / "index.json")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="refusing"):
        load_model("tiny", index=local_index)
    status = dict((e.name, s) for e, s in verify_models(local_index))
    assert status["tiny"] == "MISMATCH"
    assert main(["models", "verify", "--index", local_index]) == 2
    assert "do not match" in capsys.readouterr().err


def test_missing_server_gives_a_clear_error(remote, cache):
    site, f = remote
    index = _index(site, "http://127.0.0.1:9", sha256_file(f))  # discard port: nothing listens
    with pytest.raises(FileFormatError, match="download failed"):
        pull_model("tiny", index=str(site / "index.json"))
    del index


def test_unknown_model_and_wrong_architecture(tmp_path, cache):
    with pytest.raises(ModelError, match="no model"):
        load_model("no-such-model")
    # a file whose weights are of another width than its config says
    m = build_model(ModelConfig(size=128, width=2))
    bad = {
        "format": "napari-4dstem-model",
        "version": 1,
        "config": ModelConfig(size=128, width=3).to_dict(),
        "state_dict": m.state_dict(),
    }
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ModelError, match="do not fit"):
        load_model(str(tmp_path / "bad.pt"))
    # wrong input size asked for
    f = save_model(tmp_path / "ok.pt", m)
    with pytest.raises(ModelError, match="takes 128 px"):
        load_model(str(f), size=256)
    # not a model file at all
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(FileFormatError, match="not a readable model file"):
        load_model(str(tmp_path / "junk.pt"))


def test_cache_dir_is_never_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("NAPARI_4DSTEM_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    d = cache_dir()
    assert d.is_absolute() and tmp_path not in d.parents and d != tmp_path


def test_user_trained_models_are_listed_and_loaded_by_name(tmp_path, monkeypatch, cache):
    monkeypatch.setenv("NAPARI_4DSTEM_USER_MODELS", str(tmp_path / "user"))
    assert user_models_dir() == tmp_path / "user"
    torch.manual_seed(0)
    m = build_model(ModelConfig(size=128, width=1))
    path = user_model_path("mine", "20240102-030405")
    save_model(path, m, card={"name": "mine", "version": "20240102-030405"})
    rows = {f"{e.name}@{e.version}": s for e, s in list_models()}
    assert rows["mine@20240102-030405"] == "user" and "fcunet-proxy-128@0.1.0" in rows
    lm = load_model("mine")
    assert lm.name == "mine" and lm.config.width == 1
    assert pull_model("mine") == path
    # a modified file is refused like a cached one
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(IntegrityError):
        load_model("mine@20240102-030405")
    with pytest.raises(ModelError, match="without"):
        user_model_path("a/b", "1")
