"""napari dock widgets: they translate layers <-> core calls and run jobs in workers."""
