"""npe2 sample data: the simulated datasets, from the repository's sample_data/ folder when
present, else generated once (deterministically) into the user cache."""

from __future__ import annotations

from pathlib import Path

from . import __version__
from ._layers import datacube_layer, result_layer


def sample_path(key: str) -> Path:
    """Path of the sample's EMD file, generating it into the user cache if needed."""
    shipped = Path(__file__).resolve().parents[2] / "sample_data" / f"{key}.h5"
    if shipped.is_file():
        return shipped
    import platformdirs

    from .io import emd
    from .simulation.samples import make_sample

    cache = Path(platformdirs.user_cache_dir("napari-4dstem")) / "samples"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{key}-{__version__}.h5"
    if not path.is_file():
        emd.write(path, *make_sample(key).objects(), compression="gzip", overwrite=True)
    return path


def _load(key: str):
    from .data.datacube import DataCube
    from .io import emd

    path = sample_path(key)
    contents = emd.read(path)
    layers = [datacube_layer(o) for o in contents.values() if isinstance(o, DataCube)]
    probe = contents.get("probe")
    if probe is not None:
        # first: napari selects the layer added last, and the hidden probe must not be it
        layers.insert(0, result_layer(probe, source=str(path), visible=False, colormap="gray"))
    return layers


def strained_crystal():
    return _load("strained_crystal")


def polycrystal_au():
    return _load("polycrystal_au")
