"""Which torch device a GPU-capable step may use: one check, one warning text.

Used by the correlation (``analysis.bragg.disks``) and ACOM scoring (``analysis.acom.matching``) paths: a
device that cannot be used (torch missing, or CUDA asked for without a GPU) gives a
``RuntimeWarning`` naming what runs instead, never an error, so scripts written on a GPU
machine run anywhere.
"""

from __future__ import annotations

import warnings

__all__ = ["torch_device_usable"]


def torch_device_usable(device: str, *, instead: str, stacklevel: int = 3) -> bool:
    """True if torch is importable and ``device`` is not a CUDA device without a GPU.

    Parameters
    ----------
    device : str
        A torch device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
    instead : str
        What the caller will use instead, named in the warning.
    stacklevel : int
        Where the warning points, counted from the caller (default 3: the caller's caller).

    Returns
    -------
    bool
        Whether ``device`` can be used.

    Warns
    -----
    RuntimeWarning
        "device ... asked for but ...; using <instead>" when it cannot.
    """
    try:
        import torch
    except ImportError:
        why = "torch is not installed"
    else:
        if not str(device).startswith("cuda") or torch.cuda.is_available():
            return True
        why = "CUDA is not available"
    warnings.warn(
        f"device {device!r} asked for but {why}; using {instead}",
        RuntimeWarning,
        stacklevel=stacklevel + 1,
    )
    return False
