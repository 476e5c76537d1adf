"""Neural-network disk detection (PyTorch, imported lazily inside the functions that need it)."""
