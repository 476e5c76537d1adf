"""napari dock widgets: they translate layers <-> core calls and run jobs in workers."""

from ._preload import preload_modules

# the first dock imports this package: from then on napari's Open finds dask.array, h5py and our
# readers imported (by a background thread), never importing them on its GUI thread (#15)
preload_modules()
