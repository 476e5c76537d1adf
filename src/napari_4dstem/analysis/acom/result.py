"""The result of orientation mapping: best orientations per pattern, with maps and exports.

Split from ``acom.py`` (matching) so each module keeps to one job; ``acom`` re-exports
:class:`ACOMResult`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np

from ...data.calibration import Calibration
from ...data.results import RealSpaceMap
from ..crystal.symmetry import misorientation_deg
from .plan import euler_bunge_deg

__all__ = ["ACOMResult"]


# TSL symmetry codes of the Laue groups (OIM .ang header "Symmetry")
_TSL_SYMMETRY = {
    "m-3m": 43,
    "m-3": 23,
    "6/mmm": 62,
    "6/m": 6,
    "-3m": 32,
    "-3": 3,
    "4/mmm": 42,
    "4/m": 4,
    "mmm": 22,
    "2/m": 2,
    "-1": 1,
}


def _reduced_formula(crystal) -> str:
    """Cell content divided by its common factor (Au4 -> Au).

    TSL's Formula field, which orix takes for the phase name.
    """
    import math
    import re

    parts = re.findall(r"([A-Z][a-z]?)(\d*)", crystal.formula)
    counts = [int(n or 1) for _, n in parts]
    f = math.gcd(*counts) if counts else 1
    return "".join(f"{el}{c // f if c // f > 1 else ''}" for (el, _), c in zip(parts, counts, strict=True))


@dataclass(frozen=True, eq=False)
class ACOMResult:
    """Orientation map: the best ``n_matches`` orientations of every pattern, best first.

    Attributes
    ----------
    orientation : ndarray ``(scan_y, scan_x, n_matches, 3, 3)``
        ``U`` (crystal -> lab); NaN where masked.
    correlation : ndarray ``(scan_y, scan_x, n_matches)``
        Match quality 0..1 (after refinement: cosine of measured and fitted amplitudes, or
        with ``rank_width > 0`` the rank score, with ``rank_likelihood`` the thin-film likelihood
        score ``1 / (1 + deviance / n_peaks)``, docs/acom.md; without: the plan correlation).
    phase : ndarray ``(scan_y, scan_x, n_matches)`` int
        Index into ``crystals``; -1 where masked.
    reliability : ndarray ``(scan_y, scan_x)``
        ``1 - c2 / c1`` (c2: best candidate more than the separation away from the best), 0
        where masked. Held out (docs/acom.md): ``>= 0.05`` is 99 % within 2 deg on data that
        follow the matcher's model; on thin-film (sinc^2) data no line certifies.
    phase_reliability : ndarray ``(scan_y, scan_x)``
        ``1 - c(second phase) / c(best phase)`` (1 with one phase).
    n_peaks : ndarray ``(scan_y, scan_x)`` int
        Peaks used (central beam and peaks beyond k_max excluded).
    n_matched : ndarray ``(scan_y, scan_x, n_matches)`` int
        Peaks paired with a reflection.
    residual_inv_A : ndarray ``(scan_y, scan_x, n_matches)``
        RMS position residual of the paired peaks (1/A).
    crystals : tuple of Crystal
        The crystal of every phase.
    calibration : Calibration
        The calibration of the peaks.
    params : dict
        The matcher's parameters and conventions.
    alternative : ndarray ``(scan_y, scan_x, 3, 3)`` or None
        The best refined orientation more than the separation from the first match, for the
        same peaks: the one that sets ``reliability`` (NaN if none).
    alternative_kind : ndarray ``(scan_y, scan_x)`` int8 or None
        What that alternative is: 0 none, 1 the first match turned by 180 deg about the beam
        (the two differ only through the Ewald sphere's curvature), 2 another orientation.
    turn_partner : ndarray ``(scan_y, scan_x, n_matches, 3, 3)`` or None
        Each match's zone partner: the match turned by 180 deg about the low-index zone axis it
        is near (the orientation the refinement reaches from the match turned about the beam;
        docs/acom.md, "The turn about the beam"); NaN where there is none.
    turn_difference : ndarray ``(scan_y, scan_x, n_matches)`` or None
        How much the partner's predicted pattern differs from the match's, 0..1 (``inf``: no
        partner).
    turn_ambiguous : ndarray ``(scan_y, scan_x, n_matches)`` bool or None
        True where that difference is below the matcher's ``turn_line``: the peaks cannot decide
        between the match and its partner; report both.
    """

    orientation: np.ndarray
    correlation: np.ndarray
    phase: np.ndarray
    reliability: np.ndarray
    phase_reliability: np.ndarray
    n_peaks: np.ndarray
    n_matched: np.ndarray
    residual_inv_A: np.ndarray
    crystals: tuple
    calibration: Calibration = field(default_factory=Calibration)
    params: dict = field(default_factory=dict)
    alternative: np.ndarray | None = None
    alternative_kind: np.ndarray | None = None
    turn_partner: np.ndarray | None = None
    turn_difference: np.ndarray | None = None
    turn_ambiguous: np.ndarray | None = None

    @property
    def scan_shape(self) -> tuple[int, int]:
        """``(scan_y, scan_x)``."""
        return self.orientation.shape[:2]

    @property
    def valid(self) -> np.ndarray:
        """(scan_y, scan_x) True where the best match exists."""
        return self.phase[..., 0] >= 0

    def euler_deg(self, match: int = 0) -> np.ndarray:
        """Bunge ZXZ Euler angles (degrees) of ``g = U^T``, shape (scan_y, scan_x, 3)."""
        return euler_bunge_deg(self.orientation[:, :, match])

    def misorientation_to_neighbours(self, match: int = 0) -> np.ndarray:
        """Symmetry-reduced misorientation (degrees) to the right and lower neighbour.

        ``[..., 0]`` to scan_x + 1, ``[..., 1]`` to scan_y + 1; NaN across phases, masks and the
        border.
        """
        U, ph = self.orientation[:, :, match], self.phase[:, :, match]
        out = np.full((*self.scan_shape, 2), np.nan)
        for k, c in enumerate(self.crystals):
            g = c.point_group
            same_x = (ph[:, :-1] == k) & (ph[:, 1:] == k)
            same_y = (ph[:-1] == k) & (ph[1:] == k)
            out[:, :-1, 0] = np.where(same_x, misorientation_deg(U[:, :-1], U[:, 1:], g), out[:, :-1, 0])
            out[:-1, :, 1] = np.where(same_y, misorientation_deg(U[:-1], U[1:], g), out[:-1, :, 1])
        return out

    def grain_map(self, *, threshold_deg: float = 5.0, match: int = 0) -> np.ndarray:
        """Grain labels (0, 1, ...; -1 masked).

        Connected regions of one phase whose neighbours are misoriented by less than
        ``threshold_deg``.
        """
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        sy, sx = self.scan_shape
        mis = self.misorientation_to_neighbours(match)
        idx = np.arange(sy * sx).reshape(sy, sx)
        ex = mis[:, :-1, 0] < threshold_deg
        ey = mis[:-1, :, 1] < threshold_deg
        i = np.concatenate([idx[:, :-1][ex], idx[:-1][ey]])
        j = np.concatenate([idx[:, 1:][ex], idx[1:][ey]])
        graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(sy * sx, sy * sx))
        _, lab = connected_components(graph, directed=False)
        valid = self.valid.ravel()
        _, lab = np.unique(np.where(valid, lab, -1), return_inverse=True)
        lab = lab - (0 if valid.all() else 1)
        return np.where(valid, lab, -1).reshape(sy, sx)

    def ipf_rgb(self, direction: str | Sequence[float] = "z", *, match: int = 0) -> np.ndarray:
        """Inverse-pole-figure colours (scan_y, scan_x, 3) in 0..1 of a lab direction.

        Black where masked; each phase is coloured with the key of its own Laue group.
        """
        from .ipf import ipf_colors

        out = np.zeros((*self.scan_shape, 3))
        for k, c in enumerate(self.crystals):
            sel = self.phase[:, :, match] == k
            if sel.any():
                out[sel] = ipf_colors(self.orientation[:, :, match][sel], c.point_group, direction=direction)
        return out

    def to_maps(self, *, match: int = 0) -> list[RealSpaceMap]:
        """The results as RealSpaceMaps (for EMD files and napari layers).

        The maps of match ``k > 0`` are named with a ``_match<k+1>`` suffix
        (``euler_bunge_match2``...). ``turn_ambiguous`` (1 where the match's 180-deg turn is
        undecided, docs/acom.md) comes with results that carry it.
        """
        cal, m = self.calibration, match
        params = {**self.params, "match": m, "phases": ",".join(c.name for c in self.crystals)}
        maps = [
            RealSpaceMap(
                self.euler_deg(m),
                name="euler_bunge",
                units="deg",
                channels=("phi1", "Phi", "phi2"),
                calibration=cal,
                params=params,
            ),
            RealSpaceMap(
                self.orientation[:, :, m].reshape(*self.scan_shape, 9),
                name="orientation_matrix",
                channels=tuple(f"U{i}{j}" for i in range(1, 4) for j in range(1, 4)),
                calibration=cal,
                params=params,
            ),
            RealSpaceMap(self.correlation[:, :, m], name="correlation", calibration=cal, params=params),
            RealSpaceMap(self.reliability, name="reliability", calibration=cal, params=params),
            RealSpaceMap(self.phase[:, :, m].astype(np.int32), name="phase", calibration=cal, params=params),
            RealSpaceMap(
                self.grain_map(match=m).astype(np.int32),
                name="grains",
                calibration=cal,
                params={**params, "grain_threshold_deg": 5.0},
            ),
            *[
                RealSpaceMap(
                    self.ipf_rgb(d, match=m),
                    name=f"ipf_{d}",
                    channels=("r", "g", "b"),
                    calibration=cal,
                    params=params,
                )
                for d in ("x", "y", "z")
            ],
        ]
        if self.turn_ambiguous is not None:  # 1 where the peaks cannot decide the match's turn
            maps.append(
                RealSpaceMap(
                    self.turn_ambiguous[:, :, m].astype(np.int32), name="turn_ambiguous", calibration=cal, params=params
                )
            )
        if m == 0:
            return maps
        import dataclasses

        return [dataclasses.replace(x, name=f"{x.name}_match{m + 1}") for x in maps]

    def write_ang(self, path: str | PathLike, *, match: int = 0, overwrite: bool = False) -> Path:
        """Write a TSL OIM ``.ang`` file (read by MTEX and orix).

        Columns (TSL's 10-column layout): phi1 Phi phi2 (radians, Bunge, of ``g = U^T``: lab /
        sample -> crystal), x, y (scan position in micrometres, x = scan_x, as TSL readers
        assume; scan steps in pixels are written as 1 um), image quality (= number of peaks),
        confidence index (= correlation; -1 where not indexed), phase id (1-based; 0 where not
        indexed), detector signal (= reliability), fit (RMS peak residual in 1/A). Euler angles
        are relative to the lab axes x = k_x, y = k_y, z = beam. Not-indexed points carry
        Euler angles 4*pi, CI -1 and phase 0 (TSL's marks: orix reads them as phase -1,
        "not_indexed"; MTEX as notIndexed). Phase names are the crystals' names
        (``MaterialName``). Checked by reading the file with orix in a side environment
        (tests/analysis/test_acom_orix.py).
        """
        from ...io._atomic import atomic_output

        sy, sx = self.scan_shape
        step_nm = self.calibration.scan_step_nm()
        step = (step_nm[0] / 1000.0, step_nm[1] / 1000.0) if step_nm else (1.0, 1.0)
        yy, xx = np.mgrid[0:sy, 0:sx]
        eul = np.radians(self.euler_deg(match))
        valid = self.phase[:, :, match] >= 0
        eul = np.where(valid[..., None], eul, 4 * np.pi)
        ci = np.where(valid, self.correlation[:, :, match], -1.0)
        fit = np.nan_to_num(self.residual_inv_A[:, :, match], nan=0.0)
        cols = np.column_stack(
            [
                eul.reshape(-1, 3),
                (xx * step[1]).ravel(),
                (yy * step[0]).ravel(),
                self.n_peaks.ravel(),
                ci.ravel(),
                np.where(valid, self.phase[:, :, match] + 1, 0).ravel(),
                self.reliability.ravel(),
                fit.ravel(),
            ]
        )
        head = [
            "# TEM_PIXperUM          1.000000",
            "# x-star                0.000000",
            "# y-star                0.000000",
            "# z-star                0.000000",
            "# WorkingDistance       0.000000",
            "#",
        ]
        for k, c in enumerate(self.crystals):
            a, b, cc, al, be, ga = c.cell_parameters
            head += [
                f"# Phase {k + 1}",
                f"# MaterialName    {c.name}",
                f"# Formula       {_reduced_formula(c)}",
                "# Info          napari-4dstem orientation map",
                f"# Symmetry              {_TSL_SYMMETRY.get(c.point_group.laue_name, 1)}",
                f"# LatticeConstants      {a:.4f} {b:.4f} {cc:.4f} {al:.3f} {be:.3f} {ga:.3f}",
                "# NumberFamilies        0",
                "#",
            ]
        head += [
            "# GRID: SqrGrid",
            f"# XSTEP: {step[1]:.6g}",
            f"# YSTEP: {step[0]:.6g}",
            f"# NCOLS_ODD: {sx}",
            f"# NCOLS_EVEN: {sx}",
            f"# NROWS: {sy}",
            "#",
            "# OPERATOR:     napari-4dstem",
            "#",
            "# SAMPLEID:",
            "#",
            "# SCANID:",
            "#",
            "# COLUMN_COUNT: 10",
            "# Euler angles: Bunge ZXZ of g = U^T relative to lab x = k_x, y = k_y, z = beam",
        ]
        path = Path(path)
        with atomic_output(path, overwrite=overwrite) as tmp:
            with open(tmp, "w") as f:
                f.write("\n".join(head) + "\n")
                np.savetxt(
                    f,
                    cols,
                    fmt=["%.5f"] * 3 + ["%.6g", "%.6g", "%.1f", "%.3f", "%d", "%.3f", "%.5f"],
                )
        return path
