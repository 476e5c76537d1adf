"""The public science API carries numpydoc docstrings (issue #22 item 8), so they cannot regress.

Known answer: for every module of the folders below (and the public methods of DataCube), each
public function in its ``__all__`` has a ``Parameters`` section naming every argument of its
signature (``Returns`` alone where it takes none) and a ``Returns`` section (``Yields`` for
generators); each public class has a ``Parameters`` or ``Attributes`` section. Exception and
warning classes only need their one-line summary.
``ruff`` (the ``D`` rules with ``convention = "numpy"`` in ``pyproject.toml``) checks the layout.
"""

import importlib
import inspect
import pkgutil
import re

import pytest

import napari_4dstem

# packages whose every public module is covered, and single modules
PACKAGES = [
    "napari_4dstem.analysis.virtual",
    "napari_4dstem.analysis.classify",
    "napari_4dstem.analysis.bragg",
    "napari_4dstem.analysis.crystal",
    "napari_4dstem.analysis.phase",
    "napari_4dstem.analysis.acom",
    "napari_4dstem.simulation",
    "napari_4dstem.engine",
    "napari_4dstem.data",
    "napari_4dstem.io",
]
MODULES = ["napari_4dstem.nn.infer", "napari_4dstem.nn.train"]

_HEADER = re.compile(r"^(\w[\w ]*)\n-{3,}\s*$", re.MULTILINE)
# a numpydoc section header (title over dashes) and the line before it
_HEADER_AFTER = re.compile(r"^(.*)\n(\w[\w ]*)\n-{3,}[ \t]*$", re.MULTILINE)


def _modules() -> list[str]:
    names = list(MODULES)
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                names.append(f"{pkg_name}.{info.name}")
    return sorted(names)


def _sections(doc: str) -> dict[str, str]:
    """Split a cleaned numpydoc docstring into ``{section title: body}``."""
    heads = list(_HEADER.finditer(doc))
    out = {}
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(doc)
        out[m.group(1)] = doc[m.end() : end]
    return out


def _headers_glued(doc: str) -> list[str]:
    """Section titles not preceded by a blank line (numpydoc would read them as a parameter)."""
    return [m.group(2) for m in _HEADER_AFTER.finditer(doc) if m.group(1).strip()]


def _documented_params(body: str) -> set[str]:
    """Names in a Parameters section: unindented lines ``name : type`` or ``a, b : type``."""
    names = set()
    for line in body.splitlines():
        if line and not line[0].isspace():
            head = line.split(" : ")[0]
            names.update(n.strip().lstrip("*") for n in head.split(","))
    return names


def _public(module_name: str) -> list[tuple[str, object]]:
    module = importlib.import_module(module_name)
    out = []
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue  # constants
        if getattr(obj, "__module__", module_name) != module_name:
            continue  # a re-export: checked where it is defined
        out.append((name, obj))
    return out


CASES = [(m, n) for m in _modules() for n, _ in _public(m)]

# classes whose public methods are checked too (the data model users call directly)
METHOD_CLASSES = [("napari_4dstem.data.datacube", "DataCube")]
METHOD_CASES = [
    (m, c, name)
    for m, c in METHOD_CLASSES
    for name, member in vars(getattr(importlib.import_module(m), c)).items()
    if inspect.isfunction(member) and not name.startswith("_")
]


def test_the_folders_have_public_names():
    assert len(CASES) > 100
    assert {m for m, _ in CASES} >= {"napari_4dstem.analysis.bragg.disks", "napari_4dstem.nn.infer"}


@pytest.mark.parametrize(("module_name", "name"), CASES, ids=[f"{m}.{n}" for m, n in CASES])
def test_public_name_has_numpydoc_sections(module_name, name):
    obj = getattr(importlib.import_module(module_name), name)
    doc = inspect.getdoc(obj)
    assert doc, f"{module_name}.{name} has no docstring"
    summary = doc.splitlines()[0]
    assert summary.strip() and summary.rstrip().endswith("."), f"{name}: one-line summary"
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            return
        sections = _sections(doc)
        assert {"Parameters", "Attributes"} & set(sections), f"{name}: Parameters or Attributes"
        return
    _check_function(name, obj)


def _check_function(name, obj):
    doc = inspect.getdoc(obj)
    assert doc and doc.splitlines()[0].rstrip().endswith("."), f"{name}: one-line summary"
    glued = _headers_glued(doc)
    assert not glued, f"{name}: no blank line before section(s) {glued}"
    sections = _sections(doc)
    params = [p.name for p in inspect.signature(obj).parameters.values() if p.name not in ("self", "cls")]
    returns = "Yields" if inspect.isgeneratorfunction(obj) else "Returns"
    assert returns in sections, f"{name}: no {returns} section"
    if params:
        assert "Parameters" in sections, f"{name}: no Parameters section"
        missing = set(params) - _documented_params(sections["Parameters"])
        assert not missing, f"{name}: parameters not documented: {sorted(missing)}"


def test_the_method_classes_have_public_methods():
    assert {n for _, _, n in METHOD_CASES} >= {"crop", "bin", "iter_reduce_patterns", "mean_pattern"}


@pytest.mark.parametrize(("module_name", "cls", "name"), METHOD_CASES, ids=[f"{c}.{n}" for _, c, n in METHOD_CASES])
def test_public_method_has_numpydoc_sections(module_name, cls, name):
    method = getattr(getattr(importlib.import_module(module_name), cls), name)
    _check_function(f"{cls}.{name}", method)


def test_section_parser_reads_a_known_docstring():
    doc = inspect.cleandoc(
        """Do a thing.

        Parameters
        ----------
        a, b : int
            Two numbers.
        *rest : float
            More.

        Returns
        -------
        int
            The sum.
        """
    )
    sections = _sections(doc)
    assert list(sections) == ["Parameters", "Returns"]
    assert _documented_params(sections["Parameters"]) == {"a", "b", "rest"}
    assert napari_4dstem.__name__ == "napari_4dstem"


def test_glued_header_check_reads_a_known_docstring():
    good = "Do a thing.\n\nParameters\n----------\na : int\n    A number.\n\nReturns\n-------\nint\n    It."
    bad = "Do a thing.\n\nParameters\n----------\na : int\n    A number.\nReturns\n-------\nint\n    It."
    assert _headers_glued(good) == []
    assert _headers_glued(bad) == ["Returns"]


def test_docfiller_renders_the_unit_sections_after_a_blank_line():
    from napari_4dstem.data.calibration import normalize_k_units, normalize_scan_units

    for fn in (normalize_scan_units, normalize_k_units):
        doc = inspect.getdoc(fn)
        assert "%(" not in doc
        assert "A unit as users write it" in doc
        assert ").\n\nReturns\n-------\nstr\n    The canonical unit." in doc
        assert list(_sections(doc)) == ["Parameters", "Returns", "Raises"]
        assert _documented_params(_sections(doc)["Parameters"]) == {"value"}


def test_cite_renders_the_reference_text():
    from napari_4dstem.analysis.bragg.disks import bragg_vector_map

    doc = inspect.getdoc(bragg_vector_map)
    assert "%(" not in doc
    refs = _sections(doc)["References"]
    assert refs.strip().startswith('.. [1] B. H. Savitzky et al., "py4DSTEM: A Software Package for Four-Dimensional')
    assert "Microsc. Microanal. 27, 712-743 (2021)." in refs
    assert not _headers_glued(doc)
