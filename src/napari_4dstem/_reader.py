"""npe2 reader: open any 4D-STEM file napari-4dstem knows as a lazy 4D image layer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .io import detect_format


def get_reader(path: str | list[str]) -> Callable | None:
    """Return a reader when ``path`` is a file we can read (looked inside cheaply), else None.

    Never raises: napari asks every plugin about every file.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        fmt = detect_format(Path(path))
    except Exception:
        return None
    if fmt is None:
        return None

    def read(p: str | list[str]):
        from ._layers import datacube_layer
        from .io import open_datacube

        p = p[0] if isinstance(p, list) else p
        dc = open_datacube(p, format=fmt.name)
        return [datacube_layer(dc)]

    return read
