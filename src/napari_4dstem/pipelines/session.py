"""Sessions: a workspace as a small human-readable JSON file.

A session holds the recipes of the results made so far (each names its input file, parameters,
calibration, version and time), where each was saved, and free-form settings of the docks
(detectors, regions, crystal and plan settings; plain JSON values). Loading it on another
machine with the same data (:meth:`Session.relocated` when the files sit elsewhere) and
:meth:`Session.rerun` gives the same results.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import FileFormatError, Napari4DSTEMError
from .recipe import Recipe

SESSION_FORMAT = "napari-4dstem session"
SESSION_VERSION = 1


@dataclass
class SessionEntry:
    """One result of a session: its name, its recipe, and the file it was saved to (if any)."""

    name: str
    recipe: Recipe
    saved_to: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "saved_to": self.saved_to, "recipe": self.recipe.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SessionEntry:
        return cls(str(d["name"]), Recipe.from_dict(d["recipe"]), d.get("saved_to"))


@dataclass
class Session:
    """The results of a working session (as recipes) and the settings of the docks."""

    entries: list[SessionEntry] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def add(self, result: Any, name: str | None = None, *, saved_to: str | os.PathLike | None = None) -> SessionEntry:
        """Add a pipeline result (anything with a ``recipe``); the name is made unique."""
        recipe = getattr(result, "recipe", result)
        if not isinstance(recipe, Recipe):
            raise TypeError(f"a session keeps pipeline results (with a recipe), got {type(result).__name__}")
        base = name or recipe.workflow
        names = {e.name for e in self.entries}
        unique, k = base, 2
        while unique in names:
            unique, k = f"{base} ({k})", k + 1
        entry = SessionEntry(unique, recipe, None if saved_to is None else str(saved_to))
        self.entries.append(entry)
        return entry

    def remove(self, name: str) -> None:
        self.entries = [e for e in self.entries if e.name != name]

    def __getitem__(self, name: str) -> SessionEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SESSION_FORMAT,
            "version": SESSION_VERSION,
            "software_version": __version__,
            "settings": self.settings,
            "results": [e.to_dict() for e in self.entries],
        }

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the session as indented JSON (atomically)."""
        from ..io._atomic import atomic_output

        text = json.dumps(self.to_dict(), indent=2, default=_json_default)
        with atomic_output(path, overwrite=overwrite) as tmp:
            Path(tmp).write_text(text + "\n", encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Session:
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise FileFormatError(path, f"not a readable session file ({e})") from None
        if not isinstance(d, dict) or d.get("format") != SESSION_FORMAT:
            raise FileFormatError(path, f"not a {SESSION_FORMAT} file")
        if int(d.get("version", 0)) > SESSION_VERSION:
            raise FileFormatError(path, f"session format {d['version']} is newer than this napari-4dstem reads")
        try:
            entries = [SessionEntry.from_dict(e) for e in d.get("results", [])]
        except (KeyError, TypeError, ValueError) as e:
            raise FileFormatError(path, f"a result of the session cannot be read ({e})") from None
        return cls(entries, dict(d.get("settings") or {}))

    def relocated(self, folder: str | os.PathLike) -> Session:
        """The session with every input (and probe) file looked up in ``folder``."""
        return Session(
            [SessionEntry(e.name, e.recipe.relocated(folder), e.saved_to) for e in self.entries], dict(self.settings)
        )

    def rerun(self, progress: Callable | None = None) -> dict[str, Any]:
        """Make every result again from its input file: ``{name: result}``."""
        out = {}
        for e in self.entries:
            try:
                out[e.name] = e.recipe.run(progress)
            except Napari4DSTEMError as err:
                raise Napari4DSTEMError(f"session result {e.name!r}: {err}") from None
        return out


def _json_default(v: Any) -> Any:
    import numpy as np

    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple | set):
        return list(v)
    return str(v)
