"""NN path vs correlation path on the same simulated strained scan (benchmark and tests)."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["compare_paths"]


def compare_paths(
    *,
    thickness_nm: float,
    model: Any = None,
    scan_shape: tuple[int, int] = (16, 16),
    seed: int = 3,
    central_counts: float = 60.0,
) -> dict[str, dict[str, float]]:
    """Disk F1 (0.5 / 1 px), position RMSE and strain RMSE of both paths on one
    :func:`~napari_4dstem.nn.synthetic.make_thick_strained_scan` (Poisson noise at
    ``central_counts``/px). Correlation: the default :func:`~napari_4dstem.analysis.bragg.
    find_bragg_disks` (plain template from the vacuum probe, Poisson ML disk fit)."""
    from ..analysis.bragg import find_bragg_disks
    from ..analysis.probe import make_template
    from .infer import find_bragg_disks_nn
    from .metrics import score_detection, strain_rmse
    from .synthetic import make_thick_strained_scan

    s = make_thick_strained_scan(
        scan_shape=scan_shape, thickness_nm=thickness_nm, seed=seed, central_counts=central_counts
    )
    out = {}
    for name in ("correlation", "nn"):
        t0 = time.perf_counter()
        if name == "correlation":
            bp = find_bragg_disks(s.datacube, template=make_template(s.probe))
        else:
            bp = find_bragg_disks_nn(s.datacube, probe=s.probe, model=model)
        dt = time.perf_counter() - t0
        r = score_detection(bp, list(s.centers))
        r.update(strain_rmse(bp, s.strain.data, reference=s.reference))
        r["patterns_per_s"] = s.datacube.data.shape[0] * s.datacube.data.shape[1] / dt
        out[name] = r
    return out
