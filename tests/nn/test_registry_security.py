"""Registry security (#19 item 7): names cannot escape the cache, plain http is refused, the
hash is computed on the very bytes loaded, and training checkpoints are hash-checked."""

from __future__ import annotations

import json

import pytest
import torch

from napari_4dstem.errors import FileFormatError, Napari4DSTEMError
from napari_4dstem.nn import registry
from napari_4dstem.nn.model import ModelConfig, ModelError, build_model
from napari_4dstem.nn.registry import (
    IntegrityError,
    load_hashed,
    load_model,
    pull_model,
    read_index,
    save_hashed,
    save_model,
    sha256_file,
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_4DSTEM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def _write_index(path, **entry):
    base = {"name": "tiny", "version": "1.0", "input_size": 128, "training_set": "t",
            "url": "https://example.org/tiny-1.0.pt", "sha256": "0" * 64, "licence": "BSD"}  # fmt: skip
    base.update(entry)
    doc = {"format": "napari-4dstem-model-index", "version": 1, "models": [base]}
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("name", "../../../escaped", "not allowed"),
        ("version", "1/../../x", "not allowed"),
        ("version", "..", "not allowed"),
        ("url", "http://example.org/tiny.pt", "refused"),
        ("url", "ftp://example.org/tiny.pt", "refused"),
        ("url", "bundled:../../x.pt", "bundled"),
        ("url", "user:../x.pt", "user"),
        ("sha256", "abc", "64 hex"),
    ],
)
def test_index_entries_are_validated(tmp_path, field, value, match):
    idx = _write_index(tmp_path / "index.json", **{field: value})
    with pytest.raises(FileFormatError, match=match):
        read_index(idx)


def test_index_itself_must_be_https_or_local(tmp_path):
    with pytest.raises(ModelError, match="refused"):
        read_index("http://example.org/index.json")
    idx = _write_index(tmp_path / "index.json")
    assert read_index(idx.as_uri())[0].name == "tiny"  # file:// is local: accepted
    assert isinstance(ModelError("x"), Napari4DSTEMError)


def test_file_url_pull_and_loopback_http_only(tmp_path, cache):
    torch.manual_seed(0)
    f = save_model(tmp_path / "site-tiny.pt", build_model(ModelConfig(size=128, width=1)))
    idx = _write_index(tmp_path / "index.json", url=f.as_uri(), sha256=sha256_file(f))
    got = pull_model("tiny", index=str(idx))
    assert got == cache / "tiny-1.0.pt" and sha256_file(got) == sha256_file(f)
    assert registry.check_url("http://127.0.0.1:8000/x.pt")  # this machine: no one in between
    with pytest.raises(ModelError):
        registry.check_url("http://10.0.0.1/x.pt")


def test_hash_is_of_the_bytes_loaded(tmp_path, cache, monkeypatch):
    torch.manual_seed(0)
    good = save_model(tmp_path / "good.pt", build_model(ModelConfig(size=128, width=1)))
    evil = save_model(tmp_path / "evil.pt", build_model(ModelConfig(size=128, width=2)))
    dest = cache / "tiny-1.0.pt"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(good.read_bytes())
    idx = _write_index(tmp_path / "index.json", url=good.as_uri(), sha256=sha256_file(good))
    # the file is swapped right after it was read and hashed: torch must get the hashed bytes
    real = registry.read_verified

    def read_then_swap(path, sha=None):
        out = real(path, sha)
        dest.write_bytes(evil.read_bytes())
        return out

    monkeypatch.setattr(registry, "read_verified", read_then_swap)
    lm = load_model("tiny", index=str(idx))
    assert lm.config.width == 1 and lm.sha256 == sha256_file(good)
    monkeypatch.setattr(registry, "read_verified", real)
    with pytest.raises(IntegrityError):  # and the next load sees the swapped file and refuses
        load_model("tiny", index=str(idx))


def test_checkpoints_are_hashed(tmp_path):
    ck = tmp_path / "checkpoint.pt"
    save_hashed({"step": 3, "w": torch.ones(2)}, ck)
    assert load_hashed(ck)["step"] == 3
    torch.save({"step": 99}, ck)  # replaced by something else (e.g. an index pointing here)
    with pytest.raises(IntegrityError, match="does not match"):
        load_hashed(ck)
    (tmp_path / "checkpoint.pt.sha256").unlink()
    with pytest.raises(IntegrityError, match="no hash file"):
        load_hashed(ck)
