"""Docstring text shared by several functions, written once and filled in (scipy's docfiller).

A docstring line holding only ``%(name)s`` becomes the table's text for ``name``, each of its
lines at the placeholder's indent; the numpydoc sections then read as if written in place
(``help()``, Sphinx and ``tests/test_docstrings.py`` see the filled text).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TypeVar

__all__ = ["docfiller"]

F = TypeVar("F", bound=Callable)

_PLACEHOLDER = re.compile(r"^([ \t]*)%\((\w+)\)s$", re.MULTILINE)


def docfiller(table: Mapping[str, str]) -> Callable[[F], F]:
    """A decorator that fills the ``%(name)s`` lines of a docstring from ``table``.

    Parameters
    ----------
    table : mapping of str to str
        numpydoc text by name, unindented (continuation lines indented relative to the first).

    Returns
    -------
    callable
        ``decorate(fn) -> fn`` with ``fn.__doc__`` filled in; an unknown name raises KeyError
        at import, so a typo cannot ship.
    """

    def decorate(fn: F) -> F:
        if fn.__doc__:
            fn.__doc__ = _PLACEHOLDER.sub(
                lambda m: "\n".join(m.group(1) + line if line else "" for line in table[m.group(2)].splitlines()),
                fn.__doc__,
            )
        return fn

    return decorate
