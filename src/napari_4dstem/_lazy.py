"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package lists ``{public name: defining submodule}`` (:func:`lazy_exports`, for a chosen subset)
or just its submodules (:func:`lazy_modules`, which re-exports each one's ``__all__``) and gets
``__getattr__`` and ``__dir__`` that import the submodule on first use, so ``import
napari_4dstem.nn`` imports no torch and ``from napari_4dstem.analysis.bragg import
find_bragg_disks`` loads only ``bragg.disks``.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["exports_of_modules", "lazy_exports", "lazy_modules"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` re-exporting ``exports`` (name -> submodule)."""
    return _lazy(package, lambda: exports)


def lazy_modules(package: str, modules: Sequence[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` re-exporting the ``__all__`` of each of its ``modules``.

    The names are read from the modules' source (:func:`exports_of_modules`) at the first lookup,
    without importing them; ``package.__all__`` is served by ``__getattr__`` too.
    """
    exports = functools.cache(lambda: exports_of_modules(package, modules))
    return _lazy(package, exports)


def exports_of_modules(package: str, modules: Sequence[str]) -> dict[str, str]:
    """``{name: submodule}`` for the names in the ``__all__`` of ``package``'s ``modules``, read from source.

    A name listed by two modules belongs to the one that defines it (the other re-exports it);
    a listed name that is itself one of ``modules`` is left out (once imported, the submodule is
    the package's attribute of that name).
    """
    out: dict[str, str] = {}
    for module in modules:
        spec = importlib.util.find_spec(f"{package}.{module}")
        source = spec.loader.get_source(spec.name)  # type: ignore[union-attr]
        listed = _ALL.search(source)
        for n in ast.literal_eval(listed.group(1)) if listed else ():
            if n in modules or (n in out and not _defines(source, n)):
                continue
            out[n] = module
    return out


# a module's ``__all__ = [...]`` (or a tuple), and a top-level definition of a name
_ALL = re.compile(r"^__all__\s*=\s*([\[(].*?[\])])\s*$", re.MULTILINE | re.DOTALL)


def _defines(source: str, name: str) -> bool:
    return re.search(rf"^(?:(?:async\s+)?def|class)\s+{name}\b|^{name}\s*[:=]", source, re.MULTILINE) is not None


def _lazy(
    package: str, exports: Callable[[], Mapping[str, str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name == "__all__" and "__all__" not in namespace:
            namespace["__all__"] = sorted(exports())
            return namespace["__all__"]
        module = exports().get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports()))

    return __getattr__, __dir__
