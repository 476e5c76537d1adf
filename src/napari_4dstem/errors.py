"""Error types raised by napari-4dstem.

Every error a user can trigger with bad input derives from :class:`Napari4DSTEMError`, so the
command line and the napari widgets can show its message as one line instead of a traceback.
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "CalibrationError",
    "DataShapeError",
    "FileFormatError",
    "Napari4DSTEMError",
    "NonFiniteDataError",
    "OutputExistsError",
]


class Napari4DSTEMError(Exception):
    """Base class of every error napari-4dstem raises on bad input."""


class FileFormatError(Napari4DSTEMError, ValueError):
    """A file is missing, truncated, corrupt or not in the format it claims to be.

    The message names the file, the problem and, where we know one, the fix.
    """

    def __init__(self, path: str | PathLike, problem: str, hint: str | None = None):
        self.path = str(path)
        self.problem = problem
        self.hint = hint
        msg = f"{self.path}: {problem}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class DataShapeError(Napari4DSTEMError, ValueError):
    """An array does not have the shape an operation needs (e.g. 3D where 4D is needed)."""


class CalibrationError(Napari4DSTEMError, ValueError):
    """A calibration value or unit is invalid or missing for the requested operation."""


class NonFiniteDataError(Napari4DSTEMError, ValueError):
    """Float data holds NaN or inf where an analysis reads it."""


class OutputExistsError(Napari4DSTEMError, FileExistsError):
    """An output path exists and overwriting was not requested."""

    def __init__(self, path: str | PathLike):
        self.path = str(path)
        super().__init__(
            f"{self.path}: output file exists; choose another name or pass overwrite=True "
            "(--overwrite on the command line)"
        )
