"""Write ``constraints.txt`` from a tested venv's ``pip freeze``.

Usage: ``python .ci/write_constraints.py FREEZE_FILE > constraints.txt`` (``.ci/refresh-constraints``
does the whole refresh: fresh venv, unconstrained install, CI, then this).

Direct dependencies of the project (``[project.dependencies]`` and every extra) are written as
``name>=LOWER,<=TESTED``: LOWER is the bound declared in pyproject.toml (``.ci/run`` tests the
core at those bounds), TESTED the version that passed CI. pip takes the newest allowed, i.e. the
tested one. Everything else is pinned exactly (``==``): a new release of any package, direct or
not, cannot change a fresh install until this file is refreshed by a commit.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def direct_requirements() -> dict[str, str | None]:
    """{normalised name: declared lower bound or None} over the dependencies and all extras."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta.get("optional-dependencies", {}).values():
        reqs += extra
    out: dict[str, str | None] = {}
    for req in reqs:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$", req)
        name, spec = _norm(m.group(1)), m.group(3)
        if name == "napari-4dstem":
            continue
        low = re.search(r">=\s*([0-9][^,;\s]*)", spec)
        if low or name not in out:
            out[name] = low.group(1) if low else out.get(name)
    return out


def main(freeze_file: str) -> None:
    direct = direct_requirements()
    pinned: dict[str, tuple[str, str]] = {}
    for line in Path(freeze_file).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-e")) or "==" not in line:
            continue
        name, version = line.split("==", 1)
        version = version.split("+", 1)[0]  # torch==2.13.0+cpu -> 2.13.0 (matches the local wheel)
        if _norm(name) != "napari-4dstem":
            pinned[_norm(name)] = (name, version)
    missing = sorted(set(direct) - set(pinned))
    if missing:
        sys.exit(f"direct dependencies missing from {freeze_file}: {', '.join(missing)}")
    print("# Tested versions for every venv that .ci/run and the README build (pip -c constraints.txt).")
    print("# Written by .ci/write_constraints.py from the pip freeze of a venv that passed CI;")
    print("# refresh with .ci/refresh-constraints (a normal commit). Do not edit by hand.")
    print("#")
    print("# Direct dependencies: the lower bound declared in pyproject.toml .. the tested version.")
    for key in sorted(direct):
        name, version = pinned[key]
        low = direct[key]
        if key == "torch":  # the CPU wheel on this project's machines; never a CUDA build by accident
            print(f"{name}=={version}")
        else:
            print(f"{name}>={low},<={version}" if low else f"{name}<={version}")
    print("#")
    print("# Everything else, exactly as tested.")
    for key in sorted(set(pinned) - set(direct)):
        name, version = pinned[key]
        print(f"{name}=={version}")


if __name__ == "__main__":
    main(sys.argv[1])
