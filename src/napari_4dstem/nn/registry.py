"""Model files and the model registry: bundled, cached and downloadable networks.

A model is a file ``<name>-<version>.pt`` (a dict saved with ``torch.save`` and always read
with ``torch.load(weights_only=True)``, so a model file cannot run code) plus a JSON *card*
(architecture, training set, command and seed, metrics, SHA-256 of the file).

The *index* is a JSON document listing models::

    {"format": "napari-4dstem-model-index", "version": 1,
     "models": [{"name", "version", "input_size", "training_set", "url", "sha256",
                 "licence", "card": {...}}, ...]}

The package ships one (``nn/models/index.json``) whose entries have ``url`` ``"bundled:FILE"``;
another index can be given by URL or path (``napari-4dstem models list --index URL``).
Downloads go to the user cache (``platformdirs.user_cache_dir("napari-4dstem")/models``),
into a temporary file that is renamed only after its SHA-256 matches the index; a cached or
bundled file whose hash does not match is refused, never loaded.

Models the user trains (:func:`user_model_path`) go to the user model folder
(``platformdirs.user_data_dir("napari-4dstem")/models``, not a cache: nothing may delete them)
as ``<name>-<version>.pt`` plus card; :func:`list_models` lists them (status ``"user"``) after
the index entries, and :func:`load_model` finds them by ``name[@version]``, hash-checked against
their card.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import os
import re
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FileFormatError, Napari4DSTEMError
from .model import ModelConfig, ModelError

__all__ = [
    "BUNDLED_DIR",
    "DEFAULT_MODEL",
    "IntegrityError",
    "LoadedModel",
    "ModelEntry",
    "cache_dir",
    "check_name",
    "check_url",
    "list_models",
    "load_hashed",
    "load_model",
    "model_path",
    "pull_model",
    "read_index",
    "read_verified",
    "save_hashed",
    "save_model",
    "sha256_file",
    "user_model_path",
    "user_models_dir",
    "verify_models",
]

BUNDLED_DIR = Path(__file__).parent / "models"
#: the bundled default: fine-tuned on multislice patterns (``fcunet-proxy-128``, trained on the
#: kinematic proxy only, is bundled too; docs/nn.md compares them)
DEFAULT_MODEL = "fcunet-ms-128"
MODEL_FORMAT = "napari-4dstem-model"
INDEX_FORMAT = "napari-4dstem-model-index"


class IntegrityError(Napari4DSTEMError, ValueError):
    """A model file does not match the SHA-256 its index promises (corrupt or tampered)."""


# -- what an index may say ------------------------------------------------------------------
#: model names and versions: a letter or digit, then letters, digits, ``. _ + -``; no ``..``
#: (so ``<name>-<version>.pt`` is always one plain file name inside the cache)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
#: largest model or checkpoint file read (it is read into memory once, hashed, then loaded)
MAX_MODEL_BYTES = 4 * 2**30


def check_name(value: str, what: str = "model name") -> str:
    """``value`` if it is a safe model name or version, else :class:`ModelError`."""
    v = str(value)
    if not _NAME_RE.fullmatch(v) or ".." in v:
        raise ModelError(f"{what} {v!r} is not allowed: use letters, digits and '. _ + -' (at most 64, no '..')")
    return v


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, what: str = "URL") -> str:
    """``url`` if it may be fetched: ``https://``, ``file://`` (local) or a local path; plain
    ``http://`` only to this machine (loopback). Anything else raises :class:`ModelError`: an
    index fetched over plain HTTP could be replaced in transit, and with it URL and hash."""
    u = urllib.parse.urlsplit(str(url))
    if u.scheme == "https" or u.scheme == "file":
        return str(url)
    if u.scheme == "http" and _is_loopback(u.hostname):
        return str(url)
    if u.scheme == "" or (len(u.scheme) == 1 and os.name == "nt"):  # a path (or C:\...)
        return str(url)
    raise ModelError(
        f"{what} {url!r} is refused: only https:// (or file:// and paths for local files) is "
        "allowed, so that what is downloaded is what the index's publisher meant"
    )


def _local_path_of(url: str) -> Path | None:
    u = urllib.parse.urlsplit(url)
    if u.scheme == "file":
        from urllib.request import url2pathname

        return Path(url2pathname(u.path))
    if u.scheme == "" or (len(u.scheme) == 1 and os.name == "nt"):
        return Path(url)
    return None


def read_verified(path: str | os.PathLike, sha256: str | None = None) -> tuple[bytes, str]:
    """The bytes of ``path`` and their SHA-256, read once; :class:`IntegrityError` when
    ``sha256`` is given and differs. Loading from these very bytes (not by reopening the file)
    means the file cannot be swapped between the check and the load."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_MODEL_BYTES:
                raise FileFormatError(p, f"too large for a model file ({size} bytes)")
            data = f.read(MAX_MODEL_BYTES + 1)
    except OSError as e:
        raise FileFormatError(p, f"cannot read the model file ({e.strerror or e})") from None
    got = hashlib.sha256(data).hexdigest()
    if sha256 is not None and got != sha256:
        raise IntegrityError(
            f"{p}: SHA-256 {got} does not match the index ({sha256}); the file "
            "is corrupt or was modified: refusing to load it (pull it again)"
        )
    return data, got


def save_hashed(obj, path: str | os.PathLike) -> str:
    """``torch.save`` ``obj`` to ``path`` atomically with its SHA-256 in ``<path>.sha256``
    (training checkpoints); returns the hash. :func:`load_hashed` checks it."""
    import torch

    from ..io._atomic import atomic_output

    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    path = Path(path)
    side = path.with_name(path.name + ".sha256")
    # the hash first: a crash between the two leaves a mismatch (refused), never an unchecked file
    with atomic_output(side, overwrite=True) as tmp:
        Path(tmp).write_text(f"{digest}  {path.name}\n")
    with atomic_output(path, overwrite=True) as tmp:
        Path(tmp).write_bytes(data)
    return digest


def load_hashed(path: str | os.PathLike, *, map_location="cpu"):
    """Load a file written by :func:`save_hashed` after checking the very bytes loaded against
    ``<path>.sha256`` (:class:`IntegrityError` if missing or different)."""
    import torch

    path = Path(path)
    side = path.with_name(path.name + ".sha256")
    try:
        want = side.read_text().split()[0].lower()
    except (OSError, IndexError):
        raise IntegrityError(
            f"{path}: no hash file {side.name} next to it; refusing to load an unverified "
            "checkpoint (it may have been replaced)"
        ) from None
    data, _ = read_verified(path, want)
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for bytes it cannot parse
        raise FileFormatError(path, f"not a readable checkpoint ({type(e).__name__}: {e})") from None


def cache_dir() -> Path:
    """Where downloaded models live (``NAPARI_4DSTEM_CACHE`` overrides, for tests)."""
    env = os.environ.get("NAPARI_4DSTEM_CACHE")
    if env:
        return Path(env) / "models"
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-4dstem")) / "models"


def user_models_dir() -> Path:
    """Where user-trained models live (``NAPARI_4DSTEM_USER_MODELS`` overrides, for tests)."""
    env = os.environ.get("NAPARI_4DSTEM_USER_MODELS")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-4dstem")) / "models"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelEntry:
    """One model of an index."""

    name: str
    version: str
    input_size: int
    training_set: str
    url: str
    sha256: str
    licence: str
    card: dict

    @property
    def filename(self) -> str:
        return f"{check_name(self.name)}-{check_name(self.version, 'model version')}.pt"

    def local_path(self) -> Path | None:
        """The verified-or-not local file: bundled, else cached, else None."""
        if self.url.startswith("bundled:"):
            return BUNDLED_DIR / _plain_file(self.url.split(":", 1)[1])
        if self.url.startswith("user:"):
            return user_models_dir() / _plain_file(self.url.split(":", 1)[1])
        p = cache_dir() / self.filename
        return p if p.is_file() else None


def _plain_file(name: str) -> str:
    """``name`` if it is one plain ``.pt`` file name (no folder, no ``..``)."""
    if Path(name).name != name or not name.endswith(".pt") or name.startswith("."):
        raise ModelError(f"model file name {name!r} is not a plain .pt file name")
    check_name(name[:-3], "model file name")
    return name


def _fetch_text(source: str) -> str:
    check_url(source, what="model index")
    local = _local_path_of(source)
    if local is not None:
        return local.read_bytes()[: 16 * 2**20].decode()
    import urllib.request

    with urllib.request.urlopen(source, timeout=30) as r:
        return r.read(16 * 2**20).decode()


def read_index(source: str | os.PathLike | None = None) -> list[ModelEntry]:
    """Entries of an index (a URL, a path, or None for the bundled index)."""
    bundled = source is None
    src = str(source) if source is not None else str(BUNDLED_DIR / "index.json")
    try:
        doc = json.loads(_fetch_text(src))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FileFormatError(src, f"cannot read the model index ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("models", []), list):
        raise FileFormatError(src, "not a model index (not a JSON object with a model list)")
    if doc.get("format") != INDEX_FORMAT:
        raise FileFormatError(src, f"not a model index (format {doc.get('format')!r})")
    out = []
    for m in doc.get("models", []):
        try:
            out.append(
                ModelEntry(
                    str(m["name"]),
                    str(m["version"]),
                    int(m["input_size"]),
                    str(m["training_set"]),
                    str(m["url"]),
                    str(m["sha256"]).lower(),
                    str(m["licence"]),
                    dict(m.get("card", {})),
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise FileFormatError(src, f"bad model entry {m!r} ({e})") from None
        e = out[-1]
        try:  # names become file names, URLs are fetched: both checked here, once
            check_name(e.name)
            check_name(e.version, "model version")
            if not _SHA_RE.fullmatch(e.sha256):
                raise ModelError(f"sha256 {e.sha256!r} is not 64 hex digits")
            if e.url.startswith("bundled:"):
                if not bundled:
                    raise ModelError("only the bundled index may name bundled: files")
                _plain_file(e.url.split(":", 1)[1])
            elif e.url.startswith("user:"):
                raise ModelError("an index may not name user: files")
            else:
                check_url(e.url, what="model URL")
        except ModelError as err:
            raise FileFormatError(src, f"bad model entry {e.name!r}: {err}") from None
    return out


def read_user_models() -> list[ModelEntry]:
    """Entries for the models in :func:`user_models_dir` (a ``.pt`` with its JSON card; files
    without a readable card are skipped)."""
    out = []
    folder = user_models_dir()
    for p in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
        try:
            card = json.loads(p.with_suffix(".json").read_text())
            out.append(
                ModelEntry(
                    str(card.get("name", p.stem)),
                    str(card.get("version", "local")),
                    int(card["config"]["size"]),
                    str(card.get("training_set", "")),
                    f"user:{p.name}",
                    str(card["sha256"]).lower(),
                    str(card.get("licence", "user")),
                    card,
                )
            )
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return out


def _entries(index: str | None) -> list[ModelEntry]:
    return read_index(None) + (read_index(index) if index else []) + read_user_models()


def list_models(index: str | None = None) -> list[tuple[ModelEntry, str]]:
    """Every model of the bundled index (and of ``index`` if given), then the user-trained ones,
    with their local status: ``"bundled"``, ``"cached"``, ``"not downloaded"`` or ``"user"``."""
    out = []
    for e in _entries(index):
        p = e.local_path()
        if e.url.startswith(("bundled:", "user:")):
            status = e.url.split(":", 1)[0]
        else:
            status = "cached" if p else "not downloaded"
        out.append((e, status))
    return out


def user_model_path(name: str, version: str) -> Path:
    """The file ``<name>-<version>.pt`` in the user model folder (created if needed); write a
    model there with :func:`save_model` or :func:`~.train.export_model` and a card holding
    ``name`` and ``version``, and :func:`list_models` and :func:`load_model` find it."""
    bad = set("/\\@: ")
    if not name or not version or bad & set(name) or bad & set(version):
        raise ModelError(
            f"model name and version must be non-empty, without '/', '\\', '@', ':' or spaces: "
            f"got {name!r} and {version!r}"
        )
    check_name(name)
    check_name(version, "model version")
    folder = user_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}-{version}.pt"


def _find(name: str, index: str | None) -> ModelEntry:
    entries = _entries(index)
    base, _, ver = name.partition("@")
    hits = [e for e in entries if e.name == base and (not ver or e.version == ver)]
    if not hits:
        known = sorted({f"{e.name}@{e.version}" for e in entries})
        raise ModelError(f"no model {name!r} in the index; known: {known}")
    return max(hits, key=lambda e: tuple(int(v) if v.isdigit() else 0 for v in e.version.split(".")))


def pull_model(name: str, *, index: str | None = None, force: bool = False) -> Path:
    """Download a model into the cache (verified against its SHA-256); returns the path.

    Bundled models need no download; a cached file that verifies is kept unless ``force``.
    """
    e = _find(name, index)
    if e.url.startswith(("bundled:", "user:")):
        return _verified(e)
    dest = cache_dir() / e.filename
    if dest.is_file() and not force:
        return _verified(e)
    dest.parent.mkdir(parents=True, exist_ok=True)
    import urllib.request

    check_url(e.url, what="model URL")
    local = _local_path_of(e.url)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-", suffix=".pt")
    try:
        h = hashlib.sha256()
        src_cm = open(local, "rb") if local is not None else urllib.request.urlopen(e.url, timeout=60)
        with os.fdopen(fd, "wb") as f, src_cm as r:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                h.update(chunk)
                f.write(chunk)
        if h.hexdigest() != e.sha256:
            raise IntegrityError(
                f"{e.url}: SHA-256 {h.hexdigest()} does not match the index ({e.sha256}); "
                "the download is corrupt or was tampered with and was discarded"
            )
        os.replace(tmp, dest)
    except OSError as err:
        raise FileFormatError(e.url, f"download failed ({err})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _verified(e: ModelEntry) -> Path:
    p = e.local_path()
    if p is None or not p.is_file():
        raise ModelError(
            f"model {e.name}@{e.version} is not available offline; run `napari-4dstem models pull {e.name}`"
        )
    read_verified(p, e.sha256)
    return p


def verify_models(index: str | None = None) -> list[tuple[ModelEntry, str]]:
    """Re-hash every local model: ``(entry, "ok" | "missing" | "MISMATCH")``."""
    out = []
    for e, _ in list_models(index):
        p = e.local_path()
        if p is None or not p.is_file():
            out.append((e, "missing"))
        else:
            out.append((e, "ok" if sha256_file(p) == e.sha256 else "MISMATCH"))
    return out


def model_path(name: str, *, index: str | None = None) -> Path:
    """The verified local file of a registry model (offline: bundled or cached)."""
    return _verified(_find(name, index))


# ---- model files -------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready for inference: the torch module (eval mode) and what it is."""

    module: Any
    config: ModelConfig
    name: str
    version: str
    sha256: str
    card: dict


def save_model(path: str | os.PathLike, model, *, card: dict | None = None) -> Path:
    """Write a model file (weights + config) atomically and its card ``<path>.json`` next to it."""
    import torch

    from ..io._atomic import atomic_output

    path = Path(path)
    blob = {
        "format": MODEL_FORMAT,
        "version": 1,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
    }
    with atomic_output(path, overwrite=True) as tmp:
        torch.save(blob, tmp)
    card = dict(card or {})
    card.update(config=model.config.to_dict(), sha256=sha256_file(path), file=path.name)
    with atomic_output(path.with_suffix(".json"), overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2))
    return path


def _load_file(path: Path, *, sha256: str | None = None):
    """``(module, config, sha256 of the bytes loaded)``; the file is read once, hashed (and
    checked against ``sha256`` when given), and loaded from those same bytes."""
    import torch

    from ._fcunet import FCUNet

    data, digest = read_verified(path, sha256)
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a file it cannot parse
        raise FileFormatError(path, f"not a readable model file ({type(e).__name__}: {e})") from None
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise FileFormatError(path, "not a napari-4dstem model file")
    cfg = ModelConfig.from_dict(dict(blob["config"]))
    module = FCUNet(cfg)
    missing, unexpected = [], []
    state = blob["state_dict"]
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise ModelError(
            f"{path}: the weights do not fit the {cfg.architecture} architecture of size "
            f"{cfg.size}, width {cfg.width} (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shape {wrong[:3]})"
        )
    module.load_state_dict(state)
    module.eval()
    return module, cfg, digest


def load_model(model: Any = None, *, index: str | None = None, size: int | None = None) -> LoadedModel:
    """A :class:`LoadedModel` from None (the bundled default), a registry name (``name`` or
    ``name@version``), a path to a model file, or a LoadedModel (returned as is).

    Registry models are hash-checked before loading. ``size``, if given, must match the model's
    input size (:class:`ModelError` otherwise).
    """
    if isinstance(model, LoadedModel):
        lm = model
    else:
        name = DEFAULT_MODEL if model is None else str(model)
        p = Path(name)
        if p.suffix == ".pt" and p.is_file():
            module, cfg, digest = _load_file(p)
            card_p = p.with_suffix(".json")
            try:
                card = json.loads(card_p.read_text()) if card_p.is_file() else {}
            except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
                raise FileFormatError(card_p, f"unreadable model card ({err})") from None
            lm = LoadedModel(module, cfg, p.stem, str(card.get("version", "local")), digest, card)
        elif p.suffix == ".pt":
            raise FileFormatError(p, "no such model file")
        else:
            e = _find(name, index)
            path = e.local_path()
            if path is None or not path.is_file():
                _verified(e)  # raises the "not available offline" error
            module, cfg, _ = _load_file(path, sha256=e.sha256)
            if cfg.size != e.input_size:
                raise ModelError(f"{path}: the index says input size {e.input_size}, the file {cfg.size}")
            lm = LoadedModel(module, cfg, e.name, e.version, e.sha256, e.card)
    if size is not None and lm.config.size != int(size):
        raise ModelError(f"model {lm.name} takes {lm.config.size} px inputs, {size} were asked for")
    return lm
