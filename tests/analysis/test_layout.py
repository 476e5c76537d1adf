"""The analysis sub-packages (virtual, bragg, crystal, acom) re-export their modules' public names lazily.

Known answer: each package's names (``__all__``, and its hand-written name map where it has one) equal
the union of its modules' ``__all__`` (a name listed by two modules belongs to the one that defines it),
every exported name resolves to the object its module defines, and importing the package imports none
of its modules until a name is used.
"""

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGES = ["virtual", "bragg", "crystal", "acom"]


def _declared(module_path: Path) -> tuple[list[str], set[str]]:
    tree = ast.parse(module_path.read_text())
    names: list[str] = []
    defined: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    defined.add(t.id)
                    if t.id == "__all__":
                        names = list(ast.literal_eval(node.value))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined.add(node.target.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
    return names, defined


@pytest.mark.parametrize("name", PACKAGES)
def test_package_exports_match_module_all(name):
    pkg = importlib.import_module(f"napari_4dstem.analysis.{name}")
    folder = Path(pkg.__file__).parent
    expected: dict[str, str] = {}
    modules = [info.name for info in pkgutil.iter_modules([str(folder)]) if not info.name.startswith("_")]
    for module in modules:
        names, defined = _declared(folder / f"{module}.py")
        for n in names:
            if n in modules:  # virtual.dpc.dpc: once imported, the submodule is the package's `dpc`
                continue
            if n not in expected or n in defined:
                expected[n] = module
    if hasattr(pkg, "_EXPORTS"):  # a hand-written name map (acom)
        assert pkg._EXPORTS == expected
    assert sorted(pkg.__all__) == sorted(expected)
    assert set(dir(pkg)) >= set(expected)
    for n, module in expected.items():
        mod = importlib.import_module(f"napari_4dstem.analysis.{name}.{module}")
        assert getattr(pkg, n) is getattr(mod, n)
    with pytest.raises(AttributeError):
        pkg.no_such_name  # noqa: B018


def test_packages_import_lazily():
    code = (
        "import sys, napari_4dstem.analysis.acom as a, napari_4dstem.analysis.bragg as b;"
        "assert 'find_bragg_disks' in b.__all__ and 'find_bragg_disks' in dir(b);"
        "loaded = sorted(m for m in sys.modules if m.startswith('napari_4dstem.analysis.'));"
        "print(','.join(loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().split(",") == ["napari_4dstem.analysis.acom", "napari_4dstem.analysis.bragg"]
