"""npe2 reader: open any 4D-STEM file napari-4dstem knows as a lazy 4D image layer, and the
results of an EMD file (maps, diffraction images, Bragg peaks) as layers with their calibration,
units and parameters (what :mod:`._writer` and the pipelines save)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .io import detect_format

# Bragg peaks above this count open as no Points layer (napari draws a few million points slowly);
# the library reads them all (napari_4dstem.pipelines.read_peaks)
MAX_POINTS = 2_000_000


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

        p = p[0] if isinstance(p, list) else p
        if fmt.name == "emd":
            return emd_layers(p)
        from .io import open_datacube

        return [datacube_layer(open_datacube(p, format=fmt.name))]

    return read


def emd_layers(path: str | Path) -> list[tuple]:
    """Every object of an EMD file as a layer tuple: the datacube (lazy) first, then each result.

    A file with results but no 4D datacube (a strain map, a Bragg vector map, an orientation
    map, peaks...) opens too; a map with channels opens as one layer per channel (an RGB stack
    as one RGB layer), Bragg peaks as a 4D Points layer ``(scan_y, scan_x, k_y, k_x)`` (up to
    :data:`MAX_POINTS` peaks).
    """
    from ._layers import datacube_layer, peaks_layer, result_layers
    from .data.datacube import DataCube
    from .data.results import BraggPeaks
    from .io import emd

    objs = emd.read(path)
    cubes = [o for o in objs.values() if isinstance(o, DataCube)]
    for extra in cubes[1:]:
        extra.close()  # one 4D layer per file (the first datacube, as before)
    layers = [datacube_layer(cubes[0])] if cubes else []
    for o in objs.values():
        if isinstance(o, DataCube):
            continue
        if isinstance(o, BraggPeaks):
            if o.n_peaks <= MAX_POINTS:
                layers.append(peaks_layer(o, source=str(path)))
        else:
            layers += result_layers(o, source=str(path))
    if not layers:
        from .errors import FileFormatError

        raise FileFormatError(path, "no datacube and no results in this EMD file")
    return layers
