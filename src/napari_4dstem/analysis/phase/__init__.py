"""Phase retrieval from 4D-STEM: parallax (tilt-corrected BF), direct ptychography (SSB) and
iterative ptychography (torch, CPU or CUDA). Conventions in :mod:`.probe`.

Submodules are imported on use; this package imports nothing heavy.
"""

from .probe import ProbeModel

__all__ = ["ProbeModel"]
