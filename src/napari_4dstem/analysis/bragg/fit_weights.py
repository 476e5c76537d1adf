"""The lattice fit's per-peak weights, by name.

A module without imports, so that the parameter checks of the pipelines, the command line and the
docks name the choices without loading numba (``analysis.bragg.lattice`` takes ~0.9 s to import;
the Bragg dock builds its strain parameters on the GUI thread).
"""

from __future__ import annotations

__all__ = ["FIT_WEIGHTS"]

#: ``fit_lattice(weights=...)``: ``"auto"`` follows what the disk finder recorded in
#: ``peaks.params["fit_weights"]`` (the network's peaks: counts times its confidence; correlation's:
#: counts); ``"intensity"`` the disk counts; ``"intensity*correlation"`` counts times the peak's
#: correlation field; ``"uniform"`` 1 for every peak.
FIT_WEIGHTS = ("auto", "intensity", "intensity*correlation", "uniform")
