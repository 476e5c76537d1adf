"""The classification workflow: features -> decomposition -> clustering -> class means, then any
merges the user asked for, with a recipe like every other workflow (the CLI's ``classify`` and the
Classification dock call it)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.calibration import Calibration
from ..engine.jobs import Job, eager
from ..errors import DataShapeError
from .bragg import _cube, _recipe
from .params import ParameterError, _check, _Params
from .recipe import Recipe, _Result

# the fewest patterns a classification runs on: the automatic origin is a plane fitted to the
# measured origins (analysis.virtual.origin.fit_origin_plane: 3 coefficients per axis, so 3
# finite measurements), and two classes need at least 3 patterns (the class sweep stops at
# patterns - 1). Session 14, audit3 #8: 2 patterns gave the origin fit's message instead.
MIN_PATTERNS = 3


def too_few_patterns(n: int) -> str | None:
    """The message refusing a classification of ``n`` patterns, or None when there are enough."""
    if n < MIN_PATTERNS:
        return f"too few patterns to classify ({n}): need at least {MIN_PATTERNS}"
    return None


@dataclass(frozen=True)
class ClassificationParams(_Params):
    """Classification of every pattern (lengths in detector px).

    Attributes
    ----------
    features : {"pattern", "radial", "polar", "angular", "pattern+angular", "pattern+radial", "bragg"}
        Feature kind (:class:`~napari_4dstem.analysis.classify.FeatureParams`); ``pattern+radial``
        (library and recipes, not the CLI or the dock) adds a fine radial profile; ``bragg`` needs
        ``peaks_path``, an EMD file of Bragg peaks (from ``disks``).
    radius_px, bin_px, inner_px : feature geometry (None: the defaults of FeatureParams)
    keep_bf : keep the bright-field disk in the features
    method, decomposition, n_classes, max_classes, n_components, transform, spatial, space, maf, remerge_jump,
    remerge_separation, seed :
        :class:`~napari_4dstem.analysis.classify.ClassifyParams` (``space``: what the clustering sees,
        the leading components, ``maf`` maximum-autocorrelation factors of them, or ``auto``: both, the
        one chosen per scan; ``remerge_jump``: the step test on the smoothed label map, 0 off;
        ``remerge_separation``: its guard, 0 off; a recipe saved before either existed replays with 0, as
        it ran)
    origin : {"auto", "calibration", "fixed"}
    merge : the edits made after the clustering, in order: a group of two or more class numbers
        is a merge (``(1, 3)``), a class and a negative count a split (``(2, -3)``: class 2
        split into 3, the parts numbered 2, n_classes, n_classes + 1, ...)
    """

    features: str = "pattern"
    radius_px: float | None = None
    bin_px: float | None = None
    inner_px: float = 0.0
    keep_bf: bool = False
    peaks_path: str | None = None
    method: str = "gmm"
    decomposition: str = "pca"
    n_classes: int | None = None
    max_classes: int = 8
    n_components: int | None = None
    transform: str = "sqrt"
    spatial: float = 1.0
    space: str = "auto"
    maf: int = 8
    remerge_jump: float = 20.0
    remerge_separation: float = 0.0
    seed: int = 0
    origin: str = "auto"
    merge: tuple = ()

    def __post_init__(self):
        try:
            self.feature_params()
            self.classify_params()
        except ValueError as e:
            raise ParameterError(str(e)) from None
        _check(
            self.origin in ("auto", "calibration", "fixed"),
            f"origin must be auto, calibration or fixed, got {self.origin!r}",
        )
        _check(
            self.features != "bragg" or self.peaks_path is not None,
            "Bragg-vector features need the Bragg peaks file (peaks_path, from `disks`)",
        )
        groups = tuple(tuple(int(c) for c in g) for g in self.merge)
        _check(
            all(len(set(g)) >= 2 and (min(g) >= 0 or (len(g) == 2 and g[0] >= 0 and g[1] <= -2)) for g in groups),
            f"each merge is two or more class numbers >= 0 (a split: class, -parts), got {self.merge}",
        )
        object.__setattr__(self, "merge", groups)

    def feature_params(self):
        from ..analysis.classify import FeatureParams

        return FeatureParams(self.features, self.radius_px, self.bin_px, self.inner_px)

    def classify_params(self):
        from ..analysis.classify import ClassifyParams

        return ClassifyParams(
            method=self.method,
            n_classes=self.n_classes,
            max_classes=self.max_classes,
            decomposition=self.decomposition,
            n_components=self.n_components,
            transform=self.transform,
            spatial=self.spatial,
            space=self.space,
            maf=self.maf,
            remerge_jump=self.remerge_jump,
            remerge_separation=self.remerge_separation,
            seed=self.seed,
        )

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        # EMD metadata holds flat values: merges as "1,3;0,2"
        d["merge"] = ";".join(",".join(str(c) for c in g) for g in self.merge)
        return d

    @classmethod
    def from_dict(cls, d):
        # a recipe saved before ``remerge_jump`` (``remerge_separation``) existed ran without that step (guard):
        # replay it so
        d = {"remerge_jump": 0.0, "remerge_separation": 0.0, **d}
        m = d.get("merge") or ()
        if isinstance(m, str):
            m = tuple(tuple(int(c) for c in g.split(",")) for g in m.split(";") if g)
        d["merge"] = m
        return super().from_dict(d)


@dataclass(frozen=True, eq=False)
class ClassificationResult(_Result):
    """The :class:`~napari_4dstem.analysis.classify.Classification` and the calibration its maps
    carry; saved as label map, probabilities, mixing, loadings, class means and components."""

    classification: Any
    calibration: Calibration
    recipe: Recipe

    def objects(self) -> list:
        from ..analysis.classify import to_emd_objects

        return to_emd_objects(self.classification, self.calibration)

    def merged(self, classes) -> ClassificationResult:
        """The result with ``classes`` merged (no pass over the data); the recipe records it."""
        classes = tuple(sorted({int(c) for c in classes}))
        n = self.classification.n_classes
        _check(
            len(classes) >= 2 and all(0 <= c < n for c in classes),
            f"give two or more classes between 0 and {n - 1} to merge, got {list(classes)}",
        )
        p = self.recipe.params["classify"]
        params = dataclasses.replace(p, merge=(*p.merge, classes))
        recipe = dataclasses.replace(self.recipe, params={**self.recipe.params, "classify": params})
        return dataclasses.replace(self, classification=self.classification.merged(classes), recipe=recipe)

    def iter_split(self, cls: int, k: int, data: Any) -> Job[ClassificationResult]:
        """Job: the result with class ``cls`` split into ``k`` (re-clustered on its component
        scores, :meth:`~napari_4dstem.analysis.classify.Classification.split`), then the class
        mean patterns again from ``data`` (one pass); the recipe records the split."""
        from ..analysis.classify import iter_class_means
        from ..engine.jobs import iter_in_thread

        n = self.classification.n_classes
        _check(0 <= int(cls) < n, f"class {cls} does not exist: the scan has classes 0 to {n - 1}")
        _check(int(k) >= 2, f"split a class into 2 or more parts, got {k}")
        try:
            # the re-clustering (a mixture a number of components, seconds on a large class) in a thread,
            # a Cancel point every 0.1 s while it runs (issue #15)
            res = yield from iter_in_thread(
                self.classification.split, int(cls), int(k), message=f"splitting class {int(cls)}"
            )
        except ValueError as e:
            raise ParameterError(str(e)) from None
        means = yield from iter_class_means(_cube(data, self.calibration)[0], res.labels, n_classes=res.n_classes)
        p = self.recipe.params["classify"]
        params = dataclasses.replace(p, merge=(*p.merge, (int(cls), -int(k))))
        recipe = dataclasses.replace(self.recipe, params={**self.recipe.params, "classify": params})
        return dataclasses.replace(self, classification=dataclasses.replace(res, class_patterns=means), recipe=recipe)


def iter_classification(
    dc: Any,
    *,
    classify: ClassificationParams | None = None,
    calibration: Calibration | None = None,
    source: Any = None,
    backend: Any = None,
    scan_chunk: tuple[int, int] | None = None,
) -> Job[ClassificationResult]:
    """Job: classify every pattern of ``dc`` (then the merges of ``classify.merge``); the passes
    over the data read ``scan_chunk`` positions a block (progress and Cancel between blocks;
    not part of the recipe)."""
    from ..analysis.classify import iter_classify

    classify = classify or ClassificationParams()  # (not a default argument: its check imports the core)
    cube, cal, _ = _cube(dc, calibration)
    few = too_few_patterns(int(np.prod(cube.scan_shape)))
    if few is not None:
        raise DataShapeError(few)
    peaks = None
    if classify.features == "bragg":
        from .bragg import read_peaks

        peaks = read_peaks(classify.peaks_path)
    res = yield from iter_classify(
        cube,
        features=classify.feature_params(),
        params=classify.classify_params(),
        origin=classify.origin,
        peaks=peaks,
        calibration=cal,
        exclude_bf=not classify.keep_bf,
        backend=backend,
        scan_chunk=scan_chunk,
    )
    split = False
    for group in classify.merge:
        if len(group) == 2 and group[1] < 0:  # a split
            _check(group[0] < res.n_classes, f"cannot split class {group[0]}: the scan has {res.n_classes} classes")
            try:
                res = res.split(group[0], -group[1])
            except ValueError as e:
                raise ParameterError(str(e)) from None
            split = True
            continue
        _check(
            all(0 <= c < res.n_classes for c in group),
            f"cannot merge classes {list(group)}: the scan has {res.n_classes} classes",
        )
        res = res.merged(group)
    if split:  # the parts' mean patterns: one more pass
        from ..analysis.classify import iter_class_means

        means = yield from iter_class_means(cube, res.labels, n_classes=res.n_classes, scan_chunk=scan_chunk)
        res = dataclasses.replace(res, class_patterns=means)
    recipe = _recipe("classify", dc, {"classify": classify}, calibration, source)
    return ClassificationResult(res, cal, recipe)


run_classification = eager(iter_classification, "Classification of a dataset.", name="run_classification")
