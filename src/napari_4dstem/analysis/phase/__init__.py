"""Phase retrieval from 4D-STEM: parallax, direct (SSB) and iterative ptychography.

Parallax is tilt-corrected bright-field imaging; iterative ptychography runs in torch on the CPU
or CUDA. Conventions in :mod:`.probe`.

Submodules are imported on use; this package imports nothing heavy.
"""

from .probe import ProbeModel

__all__ = ["ProbeModel"]
