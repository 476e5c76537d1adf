"""Docstring text shared by several functions, written once and filled in (scipy's docfiller).

A docstring line holding only ``%(name)s`` becomes the table's text for ``name``, each of its
lines at the placeholder's indent; the numpydoc sections then read as if written in place
(``help()``, Sphinx and ``tests/test_docstrings.py`` see the filled text).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TypeVar

__all__ = ["REFERENCES", "cite", "docfiller"]

F = TypeVar("F", bound=Callable)

_PLACEHOLDER = re.compile(r"^([ \t]*)%\((\w+)\)s$", re.MULTILINE)

#: the works several docstrings cite, written once
_WORKS = {
    "kirkland2010": "E. J. Kirkland, *Advanced Computing in Electron Microscopy*, 2nd ed., Springer\n(2010).",
    "ophus2019": 'C. Ophus, "Four-Dimensional Scanning Transmission Electron Microscopy (4D-STEM):\n'
    'From Scanning Nanodiffraction to Ptychography and Beyond", Microsc. Microanal. 25,\n563-582 (2019).',
    "pekin2017": 'T. C. Pekin et al., "Optimizing disk registration algorithms for nanobeam electron\n'
    'diffraction strain mapping", Ultramicroscopy 176, 170-176 (2017).',
    "peng1996": 'L.-M. Peng, G. Ren, S. L. Dudarev and M. J. Whelan, "Robust parameterization of\n'
    'elastic and absorptive electron atomic scattering factors", Acta Cryst. A52, 257-276\n(1996).',
    "savitzky2021": 'B. H. Savitzky et al., "py4DSTEM: A Software Package for Four-Dimensional Scanning\n'
    'Transmission Electron Microscopy Data Analysis", Microsc. Microanal. 27, 712-743 (2021).',
}

#: ``%(<work>_<n>)s`` on a line of a References section: the entry ``.. [n] <citation>`` (n = 1
#: to 4); every :func:`docfiller` table knows these names
REFERENCES = {
    f"{key}_{n}": f".. [{n}] " + text.replace("\n", "\n   ") for key, text in _WORKS.items() for n in range(1, 5)
}


def docfiller(table: Mapping[str, str]) -> Callable[[F], F]:
    """A decorator that fills the ``%(name)s`` lines of a docstring from ``table``.

    Parameters
    ----------
    table : mapping of str to str
        numpydoc text by name, unindented (continuation lines indented relative to the first);
        the citations of :data:`REFERENCES` are added.

    Returns
    -------
    callable
        ``decorate(fn) -> fn`` with ``fn.__doc__`` filled in; an unknown name raises KeyError
        at import, so a typo cannot ship.
    """

    table = {**REFERENCES, **table}

    def decorate(fn: F) -> F:
        if fn.__doc__:
            fn.__doc__ = _PLACEHOLDER.sub(
                lambda m: "\n".join(m.group(1) + line if line else "" for line in table[m.group(2)].splitlines()),
                fn.__doc__,
            )
        return fn

    return decorate


#: a decorator that fills in only the citations of :data:`REFERENCES`
cite = docfiller({})
