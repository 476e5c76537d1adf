"""Parameters of the workflows: frozen dataclasses, validated once, units in the field names."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.results import DiffractionImage, RealSpaceMap
from ..errors import FileFormatError, Napari4DSTEMError
from ..nn.precision import DEFAULT_PRECISION, PRECISIONS

SUBPIXEL_METHODS = ("fit", "parabolic", "gaussian", "upsample", "none")
KERNELS = ("plain", "gaussian", "ring")


class ParameterError(Napari4DSTEMError, ValueError):
    """A workflow parameter is out of range (the message names it, with its unit)."""


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ParameterError(msg)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_significance(v: Any) -> None:
    """The disk significance test's line of both detections: >= 0 noise SDs, or None (no test)."""
    _check(v is None or (_finite(v) and v >= 0), f"min significance must be >= 0 noise SDs (or None: no test), got {v}")


class _Params:
    """Shared by the parameter dataclasses: dicts of the fields, and their script form."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        _check(not unknown, f"{cls.__name__}: unknown parameters {sorted(unknown)}")
        return cls(**{k: _tuple(v) for k, v in d.items()})

    def changed(self) -> dict[str, Any]:
        """The fields that differ from the class defaults (what a script has to spell out)."""
        out = {}
        for f in dataclasses.fields(self):
            default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            value = _plain(getattr(self, f.name))
            if default is dataclasses.MISSING or value != _plain(default):
                out[f.name] = value
        return out

    def script(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.changed().items())
        return f"{type(self).__name__}({args})"


def _plain(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _tuple(v: Any) -> Any:
    return tuple(_tuple(x) for x in v) if isinstance(v, list) else v


# ------------------------------------------------------------------------------------------
# parameters
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiskDetectionParams(_Params):
    """How Bragg disks are found by template correlation (one set for CLI, widgets and demo).

    Attributes
    ----------
    kernel : {"plain", "gaussian", "ring"}
        Correlation kernel made from the probe.
    correlation_power : float, 0..1
        1 cross-correlation, 0 phase correlation, in between hybrid.
    subpixel : {"fit", "parabolic", "gaussian", "upsample", "none"}
        Sub-pixel refinement ("fit": Poisson maximum-likelihood disk fit).
    min_relative : float, 0..1
        Drop peaks below this fraction of the pattern's strongest correlation peak.
    min_significance : float or None, noise standard deviations
        Keep only peaks whose disk stands this many noise SDs above its surroundings;
        None: no test (0 is not "off": it keeps any disk brighter than its ring).
    min_spacing_px, edge_px : detector pixels, None: the disk radius
        Minimum peak spacing; margin to the detector border.
    max_peaks : int
        At most this many peaks per pattern (the strongest).
    min_absolute : float
        Drop peaks whose correlation is below this.
    upsample_factor : int
        Fine-grid factor of ``subpixel="upsample"``.
    poisson : bool
        Poisson weights in the "fit" (False: least squares).
    detect_bin : int or None
        Bin the patterns by this factor to find the disks (None: automatic).
    """

    kernel: str = "plain"
    correlation_power: float = 1.0
    subpixel: str = "fit"
    min_relative: float = 0.03
    min_significance: float | None = None
    min_spacing_px: float | None = None
    edge_px: int | None = None
    max_peaks: int = 100
    min_absolute: float = 0.0
    upsample_factor: int = 16
    poisson: bool = True
    detect_bin: int | None = None

    def __post_init__(self):
        _check(self.kernel in KERNELS, f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        _check(self.subpixel in SUBPIXEL_METHODS, f"subpixel must be one of {SUBPIXEL_METHODS}, got {self.subpixel!r}")
        _check(
            _finite(self.correlation_power) and 0.0 <= self.correlation_power <= 1.0,
            f"correlation power must be in 0..1, got {self.correlation_power}",
        )
        _check(
            _finite(self.min_relative) and 0.0 <= self.min_relative <= 1.0,
            f"min relative intensity must be a fraction in 0..1, got {self.min_relative}",
        )
        _check_significance(self.min_significance)
        _check(
            self.min_spacing_px is None or (_finite(self.min_spacing_px) and self.min_spacing_px > 0),
            f"min spacing must be > 0 px (or None: the disk radius), got {self.min_spacing_px}",
        )
        _check(
            self.edge_px is None or (isinstance(self.edge_px, int) and self.edge_px >= 0),
            f"edge margin must be a whole number of px >= 0 (or None: the disk radius), got {self.edge_px}",
        )
        _check(
            isinstance(self.max_peaks, int) and self.max_peaks >= 1,
            f"max peaks must be a whole number >= 1, got {self.max_peaks}",
        )
        _check(
            _finite(self.min_absolute) and self.min_absolute >= 0,
            f"min absolute correlation must be >= 0, got {self.min_absolute}",
        )
        _check(
            isinstance(self.upsample_factor, int) and self.upsample_factor >= 1,
            f"upsample factor must be a whole number >= 1, got {self.upsample_factor}",
        )
        _check(
            self.detect_bin is None or (isinstance(self.detect_bin, int) and self.detect_bin >= 1),
            f"detect bin must be a whole number >= 1 (or None), got {self.detect_bin}",
        )

    @classmethod
    def for_acom(cls, **changes: Any) -> DiskDetectionParams:
        """Defaults for orientation mapping: Bragg disks orders of magnitude weaker than the
        central beam (``min_relative`` 3e-4 with a significance test of 5 SDs; docs/acom.md)."""
        from ..analysis.acom.matching import ACOM_DISK_DEFAULTS

        return cls(**{**ACOM_DISK_DEFAULTS, **changes})

    def detect_kwargs(self) -> dict[str, Any]:
        """Keywords of :func:`~napari_4dstem.analysis.bragg.disks.iter_find_bragg_disks` and
        :func:`~napari_4dstem.analysis.bragg.disks.detect_in_stack` (all fields but the kernel)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "kernel"}


@dataclass(frozen=True)
class NNDiskParams(_Params):
    """How Bragg disks are found by the neural network (FCU-Net).

    Attributes
    ----------
    model : str or None
        Registry name[@version] or a model file; None: the bundled default.
    mc_samples : int
        Monte-Carlo dropout passes (0: off).
    min_relative : float, 0..1
        Drop predicted peaks below this fraction of the strongest.
    min_absolute : float
        Drop predicted peaks below this height.
    min_significance : float or None, noise standard deviations
        Keep a peak only where the raw pattern holds a disk this significant (None: every
        peak the network marks).
    min_spacing_px, edge_px : detector pixels, None: automatic
    max_peaks : int
    batch_size : int
        Patterns per network call.
    scale : "auto", "bin" or float
        "auto" resamples each pattern so the probe disk has the radius the model was trained on
        (the model card's domain); "bin" the old fixed integer binning; a number: model px per
        detector px.
    precision : "bfloat16" (default) or "float32"
        The network's arithmetic on the CPU: "bfloat16" runs its convolutions about 1.6-2.3x
        faster on CPUs with native bfloat16 (AVX512-BF16, AMX) and moves peaks by hundredths of
        a pixel, strain and recall within noise of float32 on held-out scans (docs/nn.md); on a
        CPU without native bfloat16, on CUDA and with MC dropout float32 runs. Recipes saved
        before this field replay with "float32", as they ran.
    """

    model: str | None = None
    mc_samples: int = 0
    min_relative: float = 0.1
    min_absolute: float = 0.05
    min_significance: float | None = 5.0
    min_spacing_px: float | None = None
    edge_px: float | None = None
    max_peaks: int = 100
    batch_size: int = 32
    scale: str | float = "auto"
    precision: str = DEFAULT_PRECISION

    def __post_init__(self):
        _check(
            isinstance(self.precision, str) and self.precision in PRECISIONS,
            f"precision must be one of {', '.join(repr(p) for p in PRECISIONS)}, got {self.precision!r}",
        )
        _check(self.model is None or isinstance(self.model, str), f"model must be a name or path, got {self.model!r}")
        _check(
            self.scale in ("auto", "bin")
            or (not isinstance(self.scale, (str, bool)) and _finite(self.scale) and self.scale > 0),
            f"scale must be 'auto', 'bin' or model px per detector px > 0, got {self.scale!r}",
        )
        _check(
            isinstance(self.mc_samples, int) and self.mc_samples >= 0,
            f"MC samples must be a whole number >= 0, got {self.mc_samples}",
        )
        _check(
            _finite(self.min_relative) and 0.0 <= self.min_relative <= 1.0,
            f"min relative must be a fraction in 0..1, got {self.min_relative}",
        )
        _check(
            _finite(self.min_absolute) and self.min_absolute >= 0, f"min absolute must be >= 0, got {self.min_absolute}"
        )
        _check_significance(self.min_significance)
        _check(
            self.min_spacing_px is None or (_finite(self.min_spacing_px) and self.min_spacing_px > 0),
            f"min spacing must be > 0 px, got {self.min_spacing_px}",
        )
        _check(
            self.edge_px is None or (_finite(self.edge_px) and self.edge_px >= 0),
            f"edge must be >= 0 px, got {self.edge_px}",
        )
        _check(isinstance(self.max_peaks, int) and self.max_peaks >= 1, f"max peaks must be >= 1, got {self.max_peaks}")
        _check(
            isinstance(self.batch_size, int) and self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        # a recipe saved before ``precision`` existed ran in float32: replay it so, whatever
        # the default is now
        return super().from_dict({"precision": "float32", **d})

    def nn_kwargs(self) -> dict[str, Any]:
        """Keywords of :func:`~napari_4dstem.nn.infer.iter_find_bragg_disks_nn` and
        :func:`~napari_4dstem.nn.infer.predict_pattern` (every field, by its own name)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class ProbeSource(_Params):
    """Where the probe comes from: a node of an EMD file, a ``.npy`` image, or (``path=None``)
    the bright-field disk of the mean pattern."""

    path: str | None = None
    node: str = "probe"

    def __post_init__(self):
        if self.path is not None:
            object.__setattr__(self, "path", str(self.path))

    @classmethod
    def parse(cls, spec: str | None) -> ProbeSource:
        """From the command line's ``FILE[:NAME]`` (None: the bright-field disk)."""
        if not spec:
            return cls()
        path, _, name = str(spec).partition(":")
        return cls(path, name or "probe")

    def load(self) -> np.ndarray | DiffractionImage | None:
        """The probe image (None for the bright-field disk)."""
        if self.path is None:
            return None
        if self.path.lower().endswith(".npy"):
            return np.load(self.path)
        from ..io import emd

        objs = emd.read(self.path)
        try:
            hits = [v for k, v in objs.items() if k == self.node or k.split("/")[-1] == self.node]
            if not hits or not isinstance(hits[0], DiffractionImage | RealSpaceMap):
                raise FileFormatError(self.path, f"no 2D node {self.node!r} in the file (have {sorted(objs)})")
            return hits[0]
        finally:
            for v in objs.values():
                if hasattr(v, "close"):
                    v.close()

    def script(self) -> str:
        return (
            "None"
            if self.path is None
            else f"ProbeSource({self.path!r}" + (")" if self.node == "probe" else f", node={self.node!r})")
        )


@dataclass(frozen=True)
class StrainParams(_Params):
    """Lattice and strain.

    Attributes
    ----------
    reference : (row0, row1, col0, col1) or None
        Unstrained reference rectangle of the scan (scan pixels, ends exclusive); None: the
        median of all valid fits.
    g1, g2 : (y, x) detector pixels, or None (found on the Bragg vector map)
        Your lattice vectors; refined on the map unless ``refine_lattice`` is False.
    refine_lattice : bool
    frame_deg : degrees
        Report the strain in axes turned by this angle from +x towards +y.
    max_residual_px : detector pixels or None
        Mask patterns whose lattice-fit residual is larger.
    fit_weights : {"auto", "intensity", "intensity*correlation", "uniform"}
        Lattice-fit weight per peak; "auto" follows what the disk finder recorded (the network's
        peaks: counts times its confidence; correlation's: counts).
    """

    reference: tuple[int, int, int, int] | None = None
    g1: tuple[float, float] | None = None
    g2: tuple[float, float] | None = None
    refine_lattice: bool = True
    frame_deg: float = 0.0
    max_residual_px: float | None = None
    fit_weights: str = "auto"

    def __post_init__(self):
        from ..analysis.bragg.fit_weights import FIT_WEIGHTS

        _check(
            self.fit_weights in FIT_WEIGHTS,
            f"fit weights must be one of {', '.join(FIT_WEIGHTS)}, got {self.fit_weights!r}",
        )
        if self.reference is not None:
            ref = tuple(int(v) for v in self.reference)
            _check(
                len(ref) == 4 and ref[0] < ref[1] and ref[2] < ref[3] and min(ref) >= 0,
                f"reference must be (row0, row1, col0, col1) with row0 < row1, col0 < col1, got {self.reference}",
            )
            object.__setattr__(self, "reference", ref)
        _check((self.g1 is None) == (self.g2 is None), "give both g1 and g2, or neither")
        for name in ("g1", "g2"):
            v = getattr(self, name)
            if v is not None:
                v = tuple(float(x) for x in v)
                _check(len(v) == 2 and all(math.isfinite(x) for x in v), f"{name} must be (y, x) px, got {v}")
                object.__setattr__(self, name, v)
        _check(_finite(self.frame_deg), f"frame angle must be finite degrees, got {self.frame_deg}")
        _check(
            self.max_residual_px is None or (_finite(self.max_residual_px) and self.max_residual_px > 0),
            f"max residual must be > 0 px, got {self.max_residual_px}",
        )


@dataclass(frozen=True)
class ACOMParams(_Params):
    """Orientation mapping.

    Attributes
    ----------
    crystals : bundled names (Au, Cu, Al, Si, Fe-bcc, Ti-hcp) or CIF paths; several: phase map
    step_deg, inplane_step_deg : zone-axis and in-plane steps of the plan, degrees
    k_max_inv_A : largest |g| used, 1/Angstrom (None: the detector's reach from the origin)
    thickness_nm : sample thickness for the excitation errors, nm
    energy_kev : beam energy, keV (None: the calibration's)
    n_matches : orientations kept per pattern (overlapping grains)
    min_peaks : patterns with fewer peaks are masked
    max_memory_mb : refuse plans larger than this, MiB
    rocking_curve : "lorentzian" (thin films, default), "gaussian" or "sinc2" excitation-error profile
    intensity_power : measured and template intensities to this power before matching; "auto"
        (default): 0.25, and the first match refined again at 0.5 when the patterns follow the
        plan's rocking curve (median best correlation >= 0.95; docs/acom.md, "Intensity power")
    overlap : "residual" (matches 2..N are further grains, from the peaks the earlier matches
        leave unexplained) or "candidates" (matches 2..N are alternatives for the same peaks)
    excitation_width_inv_A : excitation-error width of the plan, 1/A (None: from the thickness;
        0.04 for thick, dynamical patterns: docs/acom.md)
    pair_score : "joint" (default: the two grains of an overlap chosen by a joint fit of a pool of
        first-pass candidates and residual grains) or "share" (session 8's choice: the pair whose
        residual grain explains most); used with ``overlap="residual"`` and ``n_matches >= 2``
    pair_pool : first-pass candidates in the joint fit's pool (default 8)
    pair_gain : the joint pair replaces the single-grain answer only where the second grain adds at
        least this to the squared cosine (default 0.02; -1: always, about session 10; lower: the first
        match changed more often; matches 2.. are reported either way; docs/acom.md)
    rank_width : rank refined candidates also under a rocking curve this many times wider (0: off,
        the default; 12 helps held-out thin films, costs the shipped polycrystal: docs/acom.md)
    rank_likelihood : rank refined candidates last by a thin-film likelihood (sinc^2 rocking curves at a
        fitted thickness; predicted-but-absent and detected-but-unpredicted spots count against a
        candidate; default False: docs/acom.md, "Likelihood ranking")
    turn_line : a match whose zone partner (the match turned by 180 deg about the low-index zone it
        is near) predicts a pattern differing by less than this is flagged ``turn_ambiguous``
        (default 0.1, the matcher's; 0: the partners are not computed; docs/acom.md)
    """

    crystals: tuple[str, ...] = ("Au",)
    step_deg: float = 2.0
    inplane_step_deg: float | None = None
    k_max_inv_A: float | None = None
    thickness_nm: float = 10.0
    energy_kev: float | None = None
    n_matches: int = 1
    min_peaks: int = 5
    max_memory_mb: float = 2048.0
    rocking_curve: str = "lorentzian"
    intensity_power: float | str = "auto"
    overlap: str = "residual"
    excitation_width_inv_A: float | None = None
    pair_score: str = "joint"
    pair_pool: int = 8
    pair_gain: float = 0.02
    rank_width: float = 0.0
    rank_likelihood: bool = False
    turn_line: float = 0.1

    def __post_init__(self):
        crystals = (self.crystals,) if isinstance(self.crystals, str) else tuple(str(c) for c in self.crystals)
        _check(len(crystals) >= 1, "give at least one crystal")
        object.__setattr__(self, "crystals", crystals)
        _check(
            _finite(self.step_deg) and 0 < self.step_deg <= 30, f"plan step must be in (0, 30] deg, got {self.step_deg}"
        )
        _check(
            self.inplane_step_deg is None or (_finite(self.inplane_step_deg) and 0 < self.inplane_step_deg <= 30),
            f"in-plane step must be in (0, 30] deg, got {self.inplane_step_deg}",
        )
        _check(
            self.k_max_inv_A is None or (_finite(self.k_max_inv_A) and self.k_max_inv_A > 0),
            f"k_max must be > 0 1/A, got {self.k_max_inv_A}",
        )
        _check(
            _finite(self.thickness_nm) and self.thickness_nm > 0, f"thickness must be > 0 nm, got {self.thickness_nm}"
        )
        _check(
            self.energy_kev is None or (_finite(self.energy_kev) and self.energy_kev > 0),
            f"beam energy must be > 0 keV, got {self.energy_kev}",
        )
        _check(isinstance(self.n_matches, int) and self.n_matches >= 1, f"n_matches must be >= 1, got {self.n_matches}")
        _check(isinstance(self.min_peaks, int) and self.min_peaks >= 1, f"min peaks must be >= 1, got {self.min_peaks}")
        _check(
            _finite(self.max_memory_mb) and self.max_memory_mb > 0,
            f"max memory must be > 0 MiB, got {self.max_memory_mb}",
        )
        _check(
            self.rocking_curve in ("lorentzian", "gaussian", "sinc2"),
            f"rocking curve must be 'lorentzian', 'gaussian' or 'sinc2', got {self.rocking_curve!r}",
        )
        _check(
            self.intensity_power == "auto"
            or (
                not isinstance(self.intensity_power, str)
                and _finite(self.intensity_power)
                and 0 < self.intensity_power <= 1
            ),
            f"intensity power must be 'auto' or in (0, 1], got {self.intensity_power!r}",
        )
        _check(
            self.overlap in ("residual", "candidates"),
            f"overlap must be 'residual' or 'candidates', got {self.overlap!r}",
        )
        _check(
            self.excitation_width_inv_A is None
            or (_finite(self.excitation_width_inv_A) and self.excitation_width_inv_A > 0),
            f"excitation width must be > 0 1/A, got {self.excitation_width_inv_A}",
        )
        _check(
            self.pair_score in ("joint", "share"),
            f"pair score must be 'joint' or 'share', got {self.pair_score!r}",
        )
        _check(isinstance(self.pair_pool, int) and self.pair_pool >= 1, f"pair pool must be >= 1, got {self.pair_pool}")
        _check(_finite(self.rank_width) and self.rank_width >= 0, f"rank width must be >= 0, got {self.rank_width}")
        _check(
            isinstance(self.rank_likelihood, bool),
            f"rank likelihood must be True or False, got {self.rank_likelihood!r}",
        )
        _check(_finite(self.turn_line) and self.turn_line >= 0, f"turn line must be >= 0, got {self.turn_line}")
        _check(
            (_finite(self.pair_gain) or self.pair_gain == -math.inf) and self.pair_gain < 1,
            f"pair gain must be below 1 (-1 or -inf: always), got {self.pair_gain}",
        )

    def match_kwargs(self) -> dict[str, Any]:
        """Keywords of :func:`~napari_4dstem.analysis.acom.matching.iter_match_orientations` (besides the
        peaks, plans and calibration)."""
        return {
            "n_matches": self.n_matches,
            "min_peaks": self.min_peaks,
            "intensity_power": self.intensity_power,
            "overlap": self.overlap,
            "pair_score": self.pair_score,
            "pair_pool": self.pair_pool,
            "pair_gain": self.pair_gain,
            "rank_width": self.rank_width,
            "rank_likelihood": self.rank_likelihood,
            "turn_line": self.turn_line,
        }

    def changed(self) -> dict[str, Any]:
        # the crystals are always spelled out: a script that names no crystal would read as "any"
        return {"crystals": list(self.crystals), **super().changed()}

    def plan_kwargs(self, energy_kev: float, k_max_inv_A: float) -> dict[str, Any]:
        """Keywords of :func:`~napari_4dstem.analysis.acom.plan.build_orientation_plan`."""
        return {
            "energy_kev": float(energy_kev),
            "k_max_inv_A": float(k_max_inv_A),
            "step_deg": self.step_deg,
            "inplane_step_deg": self.inplane_step_deg,
            "thickness_A": 10.0 * self.thickness_nm,
            "excitation_width_inv_A": self.excitation_width_inv_A,
            "max_memory_bytes": self.max_memory_mb * 2**20,
            "rocking_curve": self.rocking_curve,
        }
