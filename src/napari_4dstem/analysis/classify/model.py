"""Decomposition and clustering of pattern features: the classification itself.

The pipeline (:func:`iter_classify_features`):

1. **Normalise and transform** each feature vector: divided by its sum (a thicker or brighter
   region scales every bin alike), then square-rooted (Poisson counts get a variance that
   does not depend on their mean; ``transform="log"`` or ``"none"`` also possible).
2. **Decompose**: PCA (exact, from the feature covariance accumulated in batches; beyond
   20000 patterns a randomized PCA fitted on 20000 drawn at random, then every pattern
   projected) keeping the components above the noise floor, or mini-batch NMF
   (``MiniBatchNMF``: non-negative component patterns and loading maps). The noise floor is
   measured from the data: half the median squared difference between scan neighbours is
   the noise variance (neighbours mostly share their class), and a component is kept while
   its variance exceeds the Marchenko-Pastur edge ``sigma^2 (1 + sqrt(d / n))^2`` by 50 %.
3. **Cluster** the component scores: Gaussian mixture (default), k-means, or hierarchical
   (Ward linkage on a sample of at most 4000 patterns, the rest to the nearest class centroid).
   With ``space="auto"`` (default) steps 3-5 run twice, on the leading components and on their
   maximum-autocorrelation factors (large regions before nuisances that change every few scan
   pixels), and the factors' classes are kept only when they explain at least twice the share of
   the factors' variance that the components' classes explain (:func:`choose_space`).
4. **Number of classes** (unless given): a Gaussian mixture with the number of components of
   least BIC; the components that are the mixed band of a boundary (thin, their mean a mix of two
   others') are shared between those two by each pattern's mixing fraction, and components narrower
   than ``min_width`` join the nearest one they border (a thickness terrace); then mixture
   components are merged while they are not distinct. BIC alone
   splits a class whose patterns drift continuously (a thickness or strain gradient, descan),
   so: two components that border each other in the scan are distinct when the step across
   their border, along the difference of their means, is more than ``jump`` (10) times the steps
   next to it in the same direction (medians of squares; about 1-4 for a split along a smooth
   drift, hundreds for a real boundary) and a density valley separates them; two that do not
   border each other, when a density
   valley (below ``valley`` of the lower peak, smoothed at the noise width) separates them
   along that difference. BIC and the k-means silhouette for every k are kept.
5. **Spatial regularisation** (``spatial > 0``): a few iterated-conditional-modes sweeps of a
   Potts model on the scan, ``label = argmax_c log p(c | x) + spatial * (# of the 8
   neighbours in c)``: isolated noise-driven labels flip, boundaries stay sharp.
   With the number of classes suggested, the step test once more on the smoothed label map
   (``remerge_jump``, :func:`_remerge_smoothed`): bordering classes whose common border is no step
   (a cut along a thickness staircase) are merged, unless (``remerge_separation``, off by default) their
   interiors differ by more than that many times their own spread.
6. **Mixing fractions**: each pattern's normalised (untransformed) features written as
   ``f m_a + (1 - f) m_b`` of its two most likely class means, ``f`` clipped to [0, 1].
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ...engine.jobs import Job, Progress, eager
from .features import Features

__all__ = [
    "CLUSTER_METHODS",
    "Classification",
    "ClassifyParams",
    "classify_features",
    "iter_classify_features",
]

CLUSTER_METHODS = ("gmm", "kmeans", "hierarchical")
DECOMPOSITIONS = ("pca", "nmf")
TRANSFORMS = ("sqrt", "log", "none")
SPACES = ("components", "maf", "auto")
# space="auto" keeps the maximum-autocorrelation factors' classes when they explain at least SPACE_RATIO times
# the share of the factors' variance that the components' classes explain, and SPACE_GAIN more (choose_space);
# set on 30 tuning draws (seeds 101-9002) and frozen before the held-out draws (docs/classification.md)
SPACE_RATIO = 2.0
SPACE_GAIN = 0.1
# the re-merge's guard (_interior_separation) leaves out this many scan pixels on each side of a border
REMERGE_MARGIN = 3.0
# its threshold (ClassifyParams.remerge_separation): the middle of the range 14-15.3 that scored best on the
# tuning draws 9001, 9002, 9101, 9102 and 5001 (session 13, docs/classification.md), committed before any
# held-out draw was scored
REMERGE_SEPARATION = 14.5


@dataclass(frozen=True)
class ClassifyParams:
    """How features are classified.

    Parameters
    ----------
    method : {"gmm", "kmeans", "hierarchical"}
        Clustering of the component scores.
    n_classes : int or None
        Number of classes; None: suggested from the data (see the module docstring).
    max_classes : int
        Largest number of classes tried when suggesting.
    decomposition : {"pca", "nmf"}
        PCA (components above the noise floor) or non-negative matrix factorisation.
    n_components : int or None
        Components kept; None: PCA components above the noise floor (at most
        ``max_components``); for NMF ``max_classes + 2``.
    max_components : int
        Most PCA components kept.
    transform : {"sqrt", "log", "none"}
        Applied after the per-pattern normalisation.
    normalize : bool
        Divide each feature vector by its sum first.
    spatial : float
        Weight of each agreeing neighbour in the label smoothing (0: none).
    cluster_dims : int
        Leading components the clustering sees.
    jump : float
        Two mixture components that border each other in the scan are merged when the
        step across their border (along the difference of their means) is less than ``jump`` times
        the steps inside them (squared, medians).
    valley : float
        Two mixture components that do not border each other are merged when the density between them is above this
        fraction of the lower of their two peaks.
    bands : bool
        Join mixture components that are the mixed band of a boundary (thin, and their mean a mix of two
        other components' means) to the nearer side before the merging.
    min_width : int
        Mixture components narrower than this (scan pixels) everywhere join the component they share the
        longest border with (0 or 1: none).
    space : {"auto", "components", "maf"}
        What the clustering sees (PCA only; NMF always clusters its weights). ``"components"``: the leading
        ``cluster_dims`` components. ``"maf"``: ``maf`` maximum-autocorrelation factors of the components
        (:func:`maf_factors`): the directions whose variance over the scan is largest against their variance
        between scan neighbours, so large regions (classes) come before nuisances that change within a few
        scan pixels (a thickness staircase); it finds two lattices 2.5 % apart where the components do not,
        but merges rotated grains and distinct phases (docs/classification.md, session 9). ``"auto"``
        (default): both clusterings, the factors' classes kept only when the components' classes miss
        structure that fills large regions (:func:`choose_space`; docs/classification.md, session 10).
    maf : int
        Number of maximum-autocorrelation factors (``space`` ``"maf"`` or ``"auto"``).
    remerge_jump : float
        With the number of classes suggested: after the spatial smoothing, two classes that border each other
        are merged while the step across their border is less than this many times the steps beside it
        (:func:`_remerge_smoothed`: the step test once more on the smoothed, spatially coherent label map; a cut
        along a thickness staircase is no step). 0: off. Default 20, set on the tuning draws 9001-9102 and
        kept after the held-out draws 9401/9402 (session 12, docs/classification.md).
    remerge_separation : float
        Guard of that re-merge: two bordering classes are not merged, whatever their border, when their
        interiors (farther than ``REMERGE_MARGIN`` scan pixels from the other class) differ by more than this
        many times their own spread (:func:`_interior_separation`): two structures joined by a wide linear
        mixing band read as no step. 0 (default): no guard, session 12's behaviour. ``REMERGE_SEPARATION``
        (14.5) is the threshold set on the tuning draws; on the held-out draws it changed no case, so it is not
        the default, and on planted patterns two lattices 2.5 % apart read no farther apart than a thickness
        cut (session 13, docs/classification.md).
    seed : int
        Seed of the random sampling, mixtures and k-means.
    """

    method: str = "gmm"
    n_classes: int | None = None
    max_classes: int = 8
    decomposition: str = "pca"
    n_components: int | None = None
    max_components: int = 24
    transform: str = "sqrt"
    normalize: bool = True
    spatial: float = 1.0
    cluster_dims: int = 12
    valley: float = 0.5
    jump: float = 10.0
    bands: bool = True
    min_width: int = 4
    space: str = "auto"
    maf: int = 8
    remerge_jump: float = 20.0
    remerge_separation: float = 0.0
    seed: int = 0

    def __post_init__(self):
        """Refuse unknown methods, decompositions and transforms, and counts below 1."""
        if self.method not in CLUSTER_METHODS:
            raise ValueError(f"method must be one of {CLUSTER_METHODS}, got {self.method!r}")
        if self.decomposition not in DECOMPOSITIONS:
            raise ValueError(f"decomposition must be one of {DECOMPOSITIONS}, got {self.decomposition!r}")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {self.transform!r}")
        if self.n_classes is not None and self.n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {self.n_classes}")
        if self.max_classes < 1:
            raise ValueError(f"max_classes must be >= 1, got {self.max_classes}")
        if self.n_components is not None and self.n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {self.n_components}")
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if self.maf < 1:
            raise ValueError(f"maf must be >= 1, got {self.maf}")
        if self.spatial < 0:
            raise ValueError(f"spatial must be >= 0, got {self.spatial}")
        if self.remerge_separation < 0:
            raise ValueError(f"remerge_separation must be >= 0, got {self.remerge_separation}")


@dataclass(frozen=True, eq=False)
class Classification:
    """The result of a classification.

    Attributes
    ----------
    labels : int32 ``(scan_y, scan_x)``
        Class of each pattern, 0..n_classes-1, ordered by decreasing class size.
    probability : float32 ``(scan_y, scan_x, n_classes)``
        Posterior class probabilities (before the spatial smoothing).
    mixing : float32 ``(scan_y, scan_x, n_classes)``
        Mixing fractions of the two most likely classes per pattern (others 0; sum 1).
    loadings : float32 ``(scan_y, scan_x, n_components)``
        Component scores (PCA) or weights (NMF) of each pattern.
    components : float32 ``(n_components, *feature_shape)``
        Component patterns in feature space (transformed features).
    class_features : float32 ``(n_classes, *feature_shape)``
        Mean normalised (untransformed) features of each class.
    explained_variance_ratio : float array ``(n_components,)`` (PCA; NaN for NMF)
    suggested_n_classes : int
        The number the data suggests (what was used unless ``n_classes`` was given).
    bic, silhouette : dict int -> float
        Gaussian-mixture BIC and k-means silhouette for each number of classes tried.
    noise_variance : float
        Per-feature noise variance of the transformed features (from scan neighbours).
    params : dict
        Feature and classification parameters, timings.
    """

    labels: np.ndarray
    probability: np.ndarray
    mixing: np.ndarray
    loadings: np.ndarray
    components: np.ndarray
    class_features: np.ndarray
    explained_variance_ratio: np.ndarray
    suggested_n_classes: int
    bic: dict
    silhouette: dict
    noise_variance: float
    params: dict = field(default_factory=dict)
    class_patterns: np.ndarray | None = None

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return int(self.probability.shape[-1])

    @property
    def scan_shape(self) -> tuple[int, int]:
        """``(scan_y, scan_x)``."""
        return self.labels.shape

    def class_sizes(self) -> np.ndarray:
        """Patterns per class, ``(n_classes,)`` int."""
        return np.bincount(self.labels.ravel(), minlength=self.n_classes)

    def merged(self, classes) -> Classification:
        """A copy with ``classes`` merged into the lowest of them (labels renumbered)."""
        classes = sorted({int(c) for c in classes})
        if len(classes) < 2:
            return self
        keep = [c for c in range(self.n_classes) if c not in classes[1:]]
        remap = np.empty(self.n_classes, np.int32)
        for new, c in enumerate(keep):
            remap[c] = new
        for c in classes[1:]:
            remap[c] = remap[classes[0]]
        return self._relabelled(remap, len(keep))

    def split(self, cls: int, k: int, *, seed: int | None = None) -> Classification:
        """A copy with class ``cls`` split into ``k`` classes.

        A copy with class ``cls`` split into ``k``, re-clustered as the classification itself clusters (on its
        patterns' leading component scores: the Gaussian mixture of least BIC with ``k`` or more components,
        the least distinct merged down to ``k``), then the same spatial smoothing inside the class. The
        largest part keeps the number ``cls``, the others are appended (``n_classes``, ``n_classes + 1``,
        ...). The parts' probability and mixing fractions are the class's, shared by their responsibilities;
        ``class_features`` of the parts are the class's (not recomputed) and ``class_patterns`` is None (one
        pass over the data recomputes them: :func:`.pipeline.iter_class_means`).
        """
        cls, k = int(cls), int(k)
        if not 0 <= cls < self.n_classes:
            raise ValueError(f"class {cls} does not exist (0..{self.n_classes - 1})")
        if k < 2:
            raise ValueError(f"split a class into 2 or more, got {k}")
        cp = self.params.get("classify", {})
        seed = int(cp.get("seed", 0) if seed is None else seed)
        inside = (self.labels == cls).ravel()
        if inside.sum() < 2 * k:
            raise ValueError(f"class {cls} has {int(inside.sum())} patterns: too few to split into {k}")
        z = self.loadings.reshape(-1, self.loadings.shape[-1])[:, : int(cp.get("cluster_dims", 12))].astype(np.float64)
        # as the classification itself: the mixture of least BIC (k or more components), whose
        # least distinct components (a drift inside a part is smooth, a boundary a step) are
        # merged down to k
        zin = z[inside]
        fits = [_gmm(zin, m, seed) for m in range(k, min(max(k, int(cp.get("max_classes", 8))), len(zin) // 2) + 1)]
        g = min(fits, key=lambda f: f.bic(zin))
        hard = np.full(len(z), g.n_components)
        hard[inside] = g.predict(zin)
        groups = _merge_components(
            z,
            hard,
            self.scan_shape,
            jump=float(cp.get("jump", 10.0)),
            valley=float(cp.get("valley", 0.5)),
            noise_var=self.noise_variance,
            target=k,
            exclude=None if inside.all() else g.n_components,  # the rest of the scan (none: one class)
        )
        parts = groups[: g.n_components]
        _, parts = np.unique(parts, return_inverse=True)
        if parts.max() + 1 < k:
            raise ValueError(f"class {cls} could not be split into {k}")
        resp = np.zeros((len(z), k))
        rc = g.predict_proba(zin)
        for c in range(g.n_components):
            resp[inside, parts[c]] += rc[:, c]
        beta = float(cp.get("spatial", 0.0))
        if beta > 0:  # the Potts smoothing inside the class (outside: no part to choose)
            lab = _icm(np.log(np.clip(resp, 1e-300, None)), self.scan_shape, beta, inside=inside)
        else:
            lab = resp.argmax(1)
        lab = np.where(inside, lab, -1)
        sizes = np.bincount(lab[inside], minlength=k)
        order = np.argsort(-sizes, kind="stable")  # part order[0] keeps the number cls
        new_of_part = np.empty(k, np.int64)
        new_of_part[order[0]] = cls
        new_of_part[order[1:]] = self.n_classes + np.arange(k - 1)
        n_new = self.n_classes + k - 1
        labels = self.labels.ravel().copy()
        labels[inside] = new_of_part[lab[inside]]

        # how the class's probability (and mixing fraction) is shared between its parts: by the
        # responsibilities (probability) or all to the pixel's part (mixing) inside the class,
        # all to the largest part outside it
        keep = np.eye(k)[np.full(len(z), order[0])]
        own = np.eye(k)[np.where(inside, lab, order[0])]
        prob_share = np.where(inside[:, None], resp, keep)

        def spread(a, share):
            flat = a.reshape(-1, a.shape[-1])
            out = np.zeros((len(flat), n_new), a.dtype)
            out[:, : self.n_classes] = flat
            out[:, cls] = 0
            for part in range(k):
                out[:, new_of_part[part]] += flat[:, cls] * share[:, part]
            return out.reshape(*a.shape[:-1], n_new)

        cf = np.concatenate([self.class_features, np.repeat(self.class_features[cls : cls + 1], k - 1, axis=0)])
        return self._edited(
            labels=labels.reshape(self.scan_shape).astype(np.int32),
            probability=spread(self.probability, prob_share),
            mixing=spread(self.mixing, own),
            class_features=cf,
            class_patterns=None,
        )

    def _relabelled(self, remap: np.ndarray, k: int) -> Classification:
        def fold(a):
            out = np.zeros((*a.shape[:-1], k), a.dtype)
            for c in range(a.shape[-1]):
                out[..., remap[c]] += a[..., c]
            return out

        sizes = np.bincount(remap[self.labels].ravel(), minlength=k).astype(float)
        cf = np.zeros((k, *self.class_features.shape[1:]), np.float64)
        old = self.class_sizes().astype(float)
        for c in range(self.n_classes):
            cf[remap[c]] += self.class_features[c] * old[c]
        cf /= np.maximum(sizes, 1).reshape(-1, *([1] * (cf.ndim - 1)))
        return self._edited(
            labels=remap[self.labels].astype(np.int32),
            probability=fold(self.probability),
            mixing=fold(self.mixing),
            class_features=cf.astype(np.float32),
            class_patterns=None if self.class_patterns is None else _fold_means(self.class_patterns, old, remap, k),
        )

    def _edited(self, **changes: Any) -> Classification:
        """A copy with the per-class fields in ``changes`` replaced (the rest kept), marked edited."""
        return replace(self, params={**self.params, "edited": True}, **changes)


def _fold_means(means: np.ndarray, sizes: np.ndarray, remap: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((k, *means.shape[1:]))
    w = np.zeros(k)
    for c in range(len(means)):
        out[remap[c]] += means[c] * sizes[c]
        w[remap[c]] += sizes[c]
    return (out / np.maximum(w, 1).reshape(-1, *([1] * (out.ndim - 1)))).astype(np.float32)


# -- helpers --------------------------------------------------------------------------------------
def _transform(x: np.ndarray, p: ClassifyParams) -> np.ndarray:
    """Normalised, transformed copy (float32) of features ``(n, d)``."""
    x = np.array(x, dtype=np.float32, copy=True)
    np.maximum(x, 0, out=x)
    if p.normalize:
        s = x.sum(axis=1, keepdims=True)
        scale = float(np.median(s[s > 0])) if np.any(s > 0) else 1.0
        # keep the counts' scale (mean total) so the square root still stabilises Poisson noise
        x *= scale / np.where(s > 0, s, 1.0)
    if p.transform == "sqrt":
        np.sqrt(x, out=x)
    elif p.transform == "log":
        np.log1p(x, out=x)
    return x


def _normalised(x: np.ndarray, blocks=None) -> np.ndarray:
    x = np.maximum(np.asarray(x, np.float32), 0)
    if blocks:
        out = np.array(x, copy=True)
        for _name, a, b, counts in blocks:
            if counts:
                out[:, a:b] = _normalised(x[:, a:b])
        return out
    s = x.sum(axis=1, keepdims=True)
    return x / np.where(s > 0, s, 1.0)


def _transform_blocks(raw: np.ndarray, blocks, p: ClassifyParams, scan_shape) -> np.ndarray:
    """Transform features made of several blocks, each against its own noise.

    Features made of several blocks (e.g. pattern + angular profile): each block transformed on its own
    (counts normalised and transformed as ``p`` says, others kept), then divided by its own noise level (from
    scan neighbours), so each block's signal is measured against its own noise and the decomposition keeps
    whichever rises above it.
    """
    parts = []
    for _name, a, b, counts in blocks:
        xb = _transform(raw[:, a:b], p) if counts else np.array(raw[:, a:b], np.float32)
        nv = neighbour_noise_variance(xb, scan_shape)
        if np.isfinite(nv) and nv > 0:
            xb /= np.float32(math.sqrt(nv))
        parts.append(xb)
    return np.concatenate(parts, axis=1)


def neighbour_noise_variance(z: np.ndarray, scan_shape: tuple[int, int]) -> float:
    """Per-feature noise variance from scan-neighbour differences.

    Per-feature noise variance from scan-neighbour differences of ``z`` ``(n, d)``: ``median(|z_i - z_j|^2) /
    (2 d)`` over horizontal and vertical neighbours.
    """
    sy, sx = scan_shape
    zz = z.reshape(sy, sx, -1)
    parts = []
    if sx > 1:
        parts.append(np.sum((zz[:, 1:] - zz[:, :-1]) ** 2, axis=-1, dtype=np.float64).ravel())
    if sy > 1:
        parts.append(np.sum((zz[1:] - zz[:-1]) ** 2, axis=-1, dtype=np.float64).ravel())
    if not parts:
        return float("nan")
    return float(np.median(np.concatenate(parts)) / (2 * z.shape[1]))


def maf_factors(z: np.ndarray, scan_shape: tuple[int, int], m: int) -> np.ndarray:
    """Maximum-autocorrelation factors: the ``m`` projections of ``z`` most coherent over the scan.

    Maximum-autocorrelation factors of scores ``z`` ``(n, d)``: the directions ``v`` of largest ``v' C v / v'
    D v``, ``C`` the covariance of ``z`` over the scan and ``D`` that of the differences between horizontal and
    vertical scan neighbours (Switzer and Green 1984), each scaled to ``v' D v = 1``. Returns the centred
    projections ``(n, min(m, d))`` float64, most coherent first. A class filling large regions changes
    between few neighbours; a nuisance that steps every few pixels (a thickness staircase) or noise between
    many, so it comes after even when its variance is larger.
    """
    from scipy.linalg import eigh

    z = np.asarray(z, np.float64)
    sy, sx = scan_shape
    zz = z.reshape(sy, sx, -1)
    d = np.concatenate([(zz[:, 1:] - zz[:, :-1]).reshape(-1, z.shape[1]), (zz[1:] - zz[:-1]).reshape(-1, z.shape[1])])
    dcov = d.T @ d / max(len(d), 1)
    zc = z - z.mean(0)
    cov = zc.T @ zc / max(len(z) - 1, 1)
    if not np.trace(dcov) > 0:
        # session 14, audit3 #8: identical patterns (a constant test file) made eigh raise
        # scipy's "leading minor ... not positive definite"
        from ...errors import DataShapeError

        raise DataShapeError(
            f"the {len(z)} patterns do not differ (their features are the same at every scan position): "
            "nothing to classify"
        )
    dcov += 1e-9 * np.trace(dcov) / len(dcov) * np.eye(len(dcov))
    _, vec = eigh(cov, dcov)
    vec = vec[:, ::-1][:, : min(m, z.shape[1])]
    return np.ascontiguousarray(zc @ vec)


def _iter_pca(x: np.ndarray, p: ClassifyParams, noise_var: float, tick=None, n_fit: int = 20000):
    """PCA of the transformed features, exact or randomized beyond ``n_fit`` patterns.

    PCA: exact, from the covariance accumulated over batches of rows, for up to ``n_fit`` patterns; beyond, a
    randomized PCA fitted on ``n_fit`` patterns drawn at random (the components of a few classes are well
    defined by that many), then every pattern projected. A generator: yields ``tick()`` between batches (where
    a job can be cancelled), returns ``(scores, components, explained variance ratio)``.
    """
    tick = tick or (lambda: None)
    n, d = x.shape
    kmax = min(p.n_components or p.max_components, d, n)
    step = max(256, int(2**25 // max(d, 1)))
    if n <= n_fit:
        mean = np.zeros(d)
        for i in range(0, n, step):
            mean += x[i : i + step].sum(0, dtype=np.float64)
        mean /= n
        mean32 = mean.astype(np.float32)
        if n < d:
            ev, vec = yield from _iter_gram_pca(x, mean32, tick)
        else:
            cov = np.zeros((d, d))
            for i in range(0, n, step):
                # one batch's product is the whole scan up to 2**25 values (0.4 s at 4096 x 1024): in a thread
                cov += yield from _in_thread(_batch_covariance, tick, x[i : i + step], mean32)
                yield tick()
            cov /= max(n - 1, 1)
            ev, vec = yield from _in_thread(np.linalg.eigh, tick, cov)
            order = np.argsort(ev)[::-1]
            ev, vec = np.clip(ev[order], 0, None), vec[:, order]
        total = float(ev.sum()) or 1.0
        vec = vec[:, :kmax]
    else:
        from sklearn.decomposition import PCA

        rows = np.sort(np.random.default_rng(p.seed).choice(n, n_fit, replace=False))
        sample = x[rows]
        pca = yield from _in_thread(
            PCA(n_components=kmax, svd_solver="randomized", random_state=p.seed).fit, tick, sample
        )
        ev = pca.explained_variance_
        total = float(sample.var(axis=0, ddof=1, dtype=np.float64).sum()) or 1.0
        vec = pca.components_.T
        mean32 = pca.mean_.astype(np.float32)
        del sample
        yield tick()
    if p.n_components is None:
        edge = noise_var * (1 + math.sqrt(d / min(n, n_fit))) ** 2
        k = int(np.sum(ev[:kmax] > 1.5 * edge)) if np.isfinite(edge) else kmax
        k = max(1, min(k, kmax))
    else:
        k = kmax
    comps = np.ascontiguousarray(vec[:, :k].T, dtype=np.float32)
    scores = np.empty((n, k), np.float32)
    for i in range(0, n, step):
        scores[i : i + step] = (x[i : i + step] - mean32) @ comps.T
        yield tick()
    return scores, comps, ev[:k] / total


def _batch_covariance(xs: np.ndarray, mean32: np.ndarray) -> np.ndarray:
    """``xc.T @ xc`` (float64) of the rows ``xs`` centred on ``mean32``: one batch of the PCA's covariance."""
    xc = xs - mean32
    return (xc.T @ xc).astype(np.float64)


def _iter_gram_pca(x: np.ndarray, mean32: np.ndarray, tick):
    """Eigenvalues and unit eigenvectors ``(d, n)`` of the covariance of ``n < d`` rows, from their Gram matrix.

    The eigenvalues are descending and >= 0. The covariance's non-zero eigenvalues are the ``n x n`` Gram
    matrix's (of the centred rows of ``x``), its eigenvectors ``xc.T @ u / sqrt((n - 1) ev)``; those of
    eigenvalue ~0 (the null space the centring adds) are left zero (they project every pattern to 0, as the
    covariance's own do).

    A small scan of large patterns (6 patterns of 1296 features on a 3 x 2 blockfile) otherwise paid the
    ``d x d`` eigendecomposition: 20-27 s on 2 loaded cores, most of *Classify* (UX audit session 14, defect 4);
    the ``n x n`` one is milliseconds. A generator (the eigendecomposition in a thread, ``tick()`` meanwhile).
    """
    n = len(x)

    def gram_of():
        xc = x.astype(np.float64) - mean32.astype(np.float64)
        return xc, xc @ xc.T / max(n - 1, 1)

    xc, gram = yield from _in_thread(gram_of, tick)
    ev, u = yield from _in_thread(np.linalg.eigh, tick, gram)
    order = np.argsort(ev)[::-1]
    ev, u = np.clip(ev[order], 0, None), u[:, order]
    keep = ev > max(float(ev[0]) if len(ev) else 0.0, 0.0) * 1e-10

    def vectors():
        vec = np.zeros((x.shape[1], n))
        vec[:, keep] = (xc.T @ u[:, keep]) / np.sqrt(max(n - 1, 1) * ev[keep])
        return vec

    return ev, (yield from _in_thread(vectors, tick))


def _nmf(x: np.ndarray, p: ClassifyParams):
    """Mini-batch NMF of ``x``: ``(weights, components, converged)``.

    Runs in a thread of its own (:func:`_in_thread`), so the warning of a fit that reached ``max_iter`` is not
    caught here with ``warnings.catch_warnings`` (process-wide and not thread-safe: a cancelled job's call that
    ended after the next job's began would restore the filters out of order); ``converged`` is read from the fit
    (the condition under which scikit-learn warns), and that one warning is silenced by a filter of its own.
    """
    from sklearn.decomposition import MiniBatchNMF

    k = p.n_components or (p.max_classes + 2)
    k = min(k, x.shape[1], x.shape[0])
    nmf = MiniBatchNMF(
        n_components=k,
        init="nndsvda",
        batch_size=min(4096, x.shape[0]),
        random_state=p.seed,
        max_iter=300,
    )
    w = nmf.fit_transform(x).astype(np.float32)
    converged = not (nmf.n_iter_ >= nmf.max_iter and nmf.tol > 0)
    return w, nmf.components_.astype(np.float32), converged


def _quiet_nmf_iterations() -> None:
    """Silence MiniBatchNMF's "Maximum number of iterations ... reached" (the result says ``nmf_converged``)."""
    warnings.filterwarnings(
        "ignore", message=r"Maximum number of iterations \d+ reached", module=r"sklearn\.decomposition\._nmf"
    )


def _gmm_trial(z, k, seed):
    """One trial of the class-count search: the mixture of ``k`` components and its BIC on ``z``."""
    g = _gmm(z, k, seed)
    return g, float(g.bic(z))


def _kmeans_trial(z, k, seed):
    """The k-means of a trial (one start) and its silhouette on ``z`` (NaN for one class)."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(z)
    return _silhouette(z, km.labels_, seed)


def _gmm(z, k, seed):
    from sklearn.mixture import GaussianMixture

    g = GaussianMixture(
        n_components=k,
        covariance_type="full",
        reg_covar=1e-6 * float(np.var(z)) + 1e-12,
        random_state=seed,
        n_init=1,
        max_iter=200,
    )
    g.fit(z)
    return g


def _in_thread(fn, tick, *args, poll_s: float = 0.1):
    """Run ``fn(*args)`` in a thread of its own, yielding ``tick()`` every ``poll_s`` until it returns.

    A job can then be cancelled within ``poll_s`` while a single library call (a mixture fit, a k-means, a
    randomized PCA) runs: closing the generator leaves the call to finish in its thread, its result unused.
    The result is the call's own (the same as calling it here).
    """
    from concurrent.futures import ThreadPoolExecutor

    ex = ThreadPoolExecutor(1, thread_name_prefix="classify")
    try:
        fut = ex.submit(fn, *args)
        while True:
            try:
                return fut.result(timeout=poll_s)
            except TimeoutError:
                yield tick()
    finally:
        ex.shutdown(wait=False)


def _fit_sample(z: np.ndarray, seed: int, n_max: int = 20000) -> np.ndarray:
    if len(z) <= n_max:
        return z
    rng = np.random.default_rng(seed)
    return z[np.sort(rng.choice(len(z), n_max, replace=False))]


def _border_steps(scan_shape):
    """Neighbour pairs across which a step is compared with reference steps beside it.

    Neighbour pairs ``(p, q)`` (q right of or below p) with reference steps in the same direction two pixels
    away on either side: flat indices ``(p, q, p-3, p-2, q+2, q+3)`` (pairs whose reference steps would leave
    the scan are left out). Two pixels away, the reference steps lie outside a boundary's mixed band (the
    probe's width), but still see the local drift.
    """
    sy, sx = scan_shape
    idx = np.arange(sy * sx).reshape(sy, sx)
    out = []
    if sx >= 8:
        out.append(tuple(idx[:, 3 + o : sx - 4 + o] for o in (0, 1, -3, -2, 3, 4)))
    if sy >= 8:
        out.append(tuple(idx[3 + o : sy - 4 + o] for o in (0, 1, -3, -2, 3, 4)))
    if not out:
        e = np.zeros(0, np.int64)
        return (e,) * 6
    return tuple(np.concatenate([o[i].ravel() for o in out]) for i in range(6))


def _jump_ratio(z, groups_of, a, b, steps) -> float:
    """How much larger the step across the a|b border is than the steps beside it.

    How much larger the step across the a|b border is than the steps two pixels away in the same direction,
    along the difference of the two group means (medians of squares): about 1 for a class split along a smooth
    drift, large for a real boundary. NaN when the two groups share fewer than 8 neighbour pairs.
    """
    p, q, a0, a1, b0, b1 = steps
    gp, gq = groups_of[p], groups_of[q]
    border = ((gp == a) & (gq == b)) | ((gp == b) & (gq == a))
    if border.sum() < 8:
        return float("nan")
    # along the difference of the group means (the noise is isotropic in component space); a
    # Fisher direction would also use the curvature of a drifting class's curve and make
    # every split of it look like a step
    w = z[groups_of == b].mean(0) - z[groups_of == a].mean(0)
    t = z @ w
    sel = [i[border] for i in steps]
    p, q, a0, a1, b0, b1 = sel
    jb = np.median((t[q] - t[p]) ** 2)
    ji = np.median(np.concatenate([(t[a1] - t[a0]) ** 2, (t[b1] - t[b0]) ** 2]))
    return float(jb / max(ji, 1e-30))


def _pair_score(z, g_of, gi, gj, pairs, jump, valley, noise_var) -> float:
    """How distinct two groups are (below 1: merge).

    How distinct two groups are (below 1: merge): the jump ratio over ``jump`` when they border each other,
    else ``valley`` over their density valley ratio. A bordering pair is also merged when no density valley
    separates them (a step without a valley: a thickness terrace inside a drifting class). Patterns of group
    -1 take no part.
    """
    na, nb = int((g_of == gi).sum()), int((g_of == gj).sum())
    if min(na, nb) < 3:
        return 0.0
    r = _jump_ratio(z, g_of, gi, gj, pairs)
    v = _valley_ratio(z[g_of == gi], z[g_of == gj], noise_var)
    if np.isfinite(r):
        return min(r / jump, valley / max(v, 1e-9))
    return valley / max(v, 1e-9)


def _merge_components(
    z,
    hard,
    scan_shape,
    *,
    jump: float,
    valley: float,
    noise_var: float,
    target: int | None = None,
    exclude: int | None = None,
    premerge: list[tuple[int, int]] | None = None,
    aside: tuple[int, ...] = (),
) -> np.ndarray:
    """Map of mixture components to classes, merging the least distinct pairs.

    Map of mixture components to classes. Repeatedly merge the pair of groups that is least distinct: by the
    jump ratio when they share a border in the scan (merged below ``jump``: a class split along a continuous
    drift has steps across the split no larger than inside), else by the density valley between them (merged
    above ``valley``). With ``target``, merge the least distinct pair until ``target`` groups are left
    instead. ``premerge``: pairs ``(c, into)`` of components joined first (boundary bands,
    :func:`_boundary_bands`; narrow components, :func:`_thin_components`); the patterns of the components in
    ``aside`` take no part in the tests.
    """
    k = int(hard.max()) + 1
    group = np.arange(k)
    for c, into in premerge or ():
        group[group == group[c]] = group[into]
    # the joined components' patterns take no part in the tests: a band joined to one side would hide the
    # step to the other (steps across the band beside the border) and fill the valley
    aside = np.isin(hard, list(aside))
    pairs = _border_steps(scan_shape)
    while True:
        ids = np.unique(group[np.unique(hard)])
        if exclude is not None:  # a group that takes no part (e.g. the rest of the scan)
            ids = ids[ids != group[exclude]]
        if len(ids) < 2 or (target is not None and len(ids) <= target):
            break
        g_of = np.where(aside, -1, group[hard])
        best, pair = (np.inf if target is not None else 1.0), None  # score below 1: merge; lower merges first
        for i, gi in enumerate(ids):
            for gj in ids[i + 1 :]:
                score = _pair_score(z, g_of, gi, gj, pairs, jump, valley, noise_var)
                if score < best:
                    best, pair = score, (gi, gj)
        if pair is None:
            break
        group[group == pair[1]] = pair[0]
    _, group = np.unique(group, return_inverse=True)
    return group


def _component_means(raw: np.ndarray, blocks, hard: np.ndarray, k: int) -> np.ndarray:
    """Mean normalised (linear) features of each mixture component, ``(k, d)`` float64, in row batches."""
    sums = np.zeros((k, raw.shape[1]))
    step = max(256, int(2**24 // max(raw.shape[1], 1)))
    for i in range(0, len(raw), step):
        xn = _normalised(raw[i : i + step], blocks)
        h = hard[i : i + step]
        for c in np.unique(h):
            sums[c] += xn[h == c].sum(0, dtype=np.float64)
    counts = np.bincount(hard, minlength=k)[:k]
    return sums / np.maximum(counts, 1)[:, None]


def _boundary_bands(
    means: np.ndarray, hard: np.ndarray, scan_shape, *, edge_min: float = 0.9, residual_max: float = 0.1
) -> list[tuple[int, int, tuple[int, int]]]:
    """Mixture components that are the mixed band of a boundary, the component each joins, and the two sides.

    Mixture components that are the mixed band of a boundary between two others, and the one each joins. A
    probe on a boundary sees ``f P_a + (1 - f) P_b``: the mixture gives those pixels a component of their own,
    which a step test keeps (a real step on both sides). A component is such a band when (1) it is thin: at
    least ``edge_min`` of its pixels have one of their 8 neighbours in another component, and (2) its mean
    (normalised, linear features) is a mix ``f m_a + (1 - f) m_b`` of two other components' means, ``0.1 <= f
    <= 0.9``, with a squared residual below ``residual_max`` of its squared distance to the nearer of the two.
    Bands go (best fit first) to the component with the larger share ``f``; a band is not used to explain
    another. Returns ``(band, joins, (side_a, side_b))`` triples.
    """
    from scipy import ndimage

    k = len(means)
    lab = hard.reshape(scan_shape)
    counts = np.bincount(hard, minlength=k)
    cand = []
    for c in range(k):
        m = lab == c
        if counts[c] < 3:
            continue
        inner = ndimage.binary_erosion(m, np.ones((3, 3), bool), border_value=1)
        if 1.0 - inner.sum() / counts[c] < edge_min:
            continue
        best = (np.inf, -1)
        for a in range(k):
            for b in range(a + 1, k):
                if c in (a, b) or counts[a] < 3 or counts[b] < 3:
                    continue
                d = means[a] - means[b]
                dd = float(d @ d)
                if dd <= 0:
                    continue
                f = float((means[c] - means[b]) @ d / dd)
                if not 0.1 <= f <= 0.9:
                    continue
                res = means[c] - (f * means[a] + (1 - f) * means[b])
                near = min(float(((means[c] - means[o]) ** 2).sum()) for o in (a, b))
                r = float(res @ res) / max(near, 1e-30)
                if r < best[0]:
                    best = (r, a if f >= 0.5 else b, (a, b))
        if best[0] < residual_max:
            cand.append((best[0], c, best[1], best[2]))
    out: list[tuple[int, int, tuple[int, int]]] = []
    bands: set[int] = set()
    used: set[int] = set()  # components that explain a band: not bands themselves
    for _r, c, into, ab in sorted(cand):
        if c in used or bands.intersection(ab):
            continue
        bands.add(c)
        used.update(ab)
        out.append((c, into, ab))
    return out


def _share_bands(prob, resp, groups, bands, raw, blocks, means) -> None:
    """Give each boundary band's responsibility to its two sides, by each pattern's mixing fraction.

    Give each boundary band's responsibility (``resp[:, band]``, summed into ``prob`` as its group's) to the
    groups of its two sides instead, in the proportions ``f : 1 - f`` of the pattern's own mix of the two
    side means (normalised features, ``f`` clipped to [0, 1]): a band pixel goes to the side it holds more
    of. In place.
    """
    for c, _into, (a, b) in bands:
        ga, gb, gc = int(groups[a]), int(groups[b]), int(groups[c])
        if ga == gb:
            continue
        rows = np.flatnonzero(resp[:, c] > 1e-3)
        if rows.size == 0:
            continue
        xn = _normalised(raw[rows], blocks).astype(np.float64)
        d = means[a] - means[b]
        f = np.clip((xn - means[b]) @ d / max(float(d @ d), 1e-30), 0.0, 1.0)
        r = resp[rows, c]
        prob[rows, gc] -= r
        prob[rows, ga] += r * f
        prob[rows, gb] += r * (1 - f)
    np.clip(prob, 0.0, None, out=prob)


def _mode3(lab: np.ndarray, k: int) -> np.ndarray:
    """Each label replaced by the most frequent one of its 3 x 3 neighbourhood (itself on ties)."""
    sy, sx = lab.shape
    onehot = np.eye(k, dtype=np.int16)[lab]
    pad = np.pad(onehot, ((1, 1), (1, 1), (0, 0)))
    cnt = sum(pad[1 + dy : 1 + dy + sy, 1 + dx : 1 + dx + sx] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    cnt = cnt * 2 + onehot  # ties go to the pixel's own label
    return cnt.argmax(-1)


def _thin_components(hard: np.ndarray, z: np.ndarray, scan_shape, k: int, width: int, skip=()) -> list[tuple[int, int]]:
    """Mixture components narrower than ``width`` scan pixels everywhere, and the component each joins.

    Mixture components narrower than ``width`` scan pixels everywhere (after a 3 x 3 mode filter of the labels,
    a ``width`` x ``width`` opening keeps less than a tenth of them), each with the component of nearest mean
    ``z`` among those it borders (8-neighbours): the mixed band of a boundary (a few probe widths) or a narrow
    terrace of thickness where a reflection is extinguished are no class of their own. ``skip``: components
    already joined elsewhere.
    """
    from scipy import ndimage

    if width < 2:
        return []
    smooth = _mode3(hard.reshape(scan_shape), k)
    counts = np.bincount(hard, minlength=k)
    thin = []
    for c in range(k):
        if c in skip or counts[c] == 0:
            continue
        m = smooth == c
        kept = ndimage.binary_opening(m, np.ones((width, width), bool)).sum() if m.any() else 0
        if kept < 0.1 * max(int(m.sum()), 1):
            thin.append(c)
    # border pairs (8-neighbourhood, each unordered pair once) between components
    sy, sx = scan_shape
    lab = hard.reshape(scan_shape)
    border = np.zeros((k, k), np.int64)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = lab[: sy - dy, max(0, -dx) : sx - max(0, dx)]
        b = lab[dy:, max(0, dx) : sx - max(0, -dx) if dx < 0 else sx]
        b = b[:, : a.shape[1]]
        np.add.at(border, (a.ravel(), b.ravel()), 1)
    border = border + border.T
    np.fill_diagonal(border, 0)
    means = np.stack([z[hard == c].mean(0) if counts[c] else np.full(z.shape[1], np.inf) for c in range(k)])
    out = []
    for c in thin:  # joins chain: a thin component between two others may join one that joins further
        near = [o for o in range(k) if o != c and border[c, o] >= max(2, 0.1 * border[c].sum())]
        if near:
            out.append((c, min(near, key=lambda o: float(((means[c] - means[o]) ** 2).sum()))))
    return out


def _merge_smallest(z, hard, group, target: int) -> np.ndarray:
    """Merge the smallest group into the nearest until ``target`` are left.

    Merge the smallest group into the group with the nearest mean until ``target`` are left (of groups within
    10 % of the smallest size, the one nearest to another goes first). Merging the closest pair of means
    instead joined two large real classes 2.5 % apart and kept a group of 18 boundary pixels.
    """
    group = group.copy()
    while len(np.unique(group[np.unique(hard)])) > target:
        g_of = group[hard]
        ids, sizes = np.unique(g_of, return_counts=True)
        means = np.stack([z[g_of == g].mean(0) for g in ids])
        d = ((means[:, None] - means[None]) ** 2).sum(-1)
        d[np.diag_indices_from(d)] = np.inf
        cand = np.flatnonzero(sizes <= 1.1 * sizes.min())
        i = int(cand[np.argmin(d[cand].min(1))])
        group[group == ids[i]] = ids[int(np.argmin(d[i]))]
    _, group = np.unique(group, return_inverse=True)
    return group


def _interior_separation(z, lab, a, b, scan_shape, margin: float = REMERGE_MARGIN) -> float:
    """How far apart the interiors of two bordering classes are, in units of their own spread.

    The interior of class ``a`` is its pixels farther than ``margin`` scan pixels from every pixel of ``b``
    (and the other way round): the mixed band along their border is left out, however wide. Along the
    difference ``w`` of the two interiors' mean scores: the distance of the two interior means over the pooled
    robust spread of each interior (1.4826 x the median absolute deviation of ``z @ w`` about its median, so a
    few band pixels left in an interior do not count). A linear mixing band between two flat structures reads
    as no step (:func:`_jump_ratio`), but the structures on either side differ by many times their spread
    (noise only); a class cut along a thickness gradient has interiors that differ by a few times their own
    spread (a linear drift cut in two, interiors 3 px off the cut: about 4-6). A Mahalanobis distance under
    the interiors' pooled covariance did no better on the tuning draws and needs a covariance from as few as 8
    pixels in up to 12 dimensions (docs/classification.md, session 13). NaN when either interior holds fewer
    than 8 pixels.
    """
    from scipy import ndimage

    lab = np.asarray(lab).reshape(scan_shape)
    ma, mb = lab == a, lab == b
    # distance of every pixel to the nearest pixel of the other class (Euclidean, scan pixels)
    ia = ma & (ndimage.distance_transform_edt(~mb) > margin)
    ib = mb & (ndimage.distance_transform_edt(~ma) > margin)
    if ia.sum() < 8 or ib.sum() < 8:
        return float("nan")
    za, zb = z[ia.ravel()], z[ib.ravel()]
    w = zb.mean(0) - za.mean(0)
    ta, tb = za @ w, zb @ w

    def spread(t):
        return 1.4826 * float(np.median(np.abs(t - np.median(t))))

    s = math.sqrt(0.5 * (spread(ta) ** 2 + spread(tb) ** 2))
    gap = float(tb.mean() - ta.mean())
    return gap / s if s > 0 else float("inf")


def _remerge_smoothed(zc, labels, prob, scan_shape, jump: float, separation: float = 0.0):
    """Merge classes of the smoothed label map whose common border is no step.

    The step test of :func:`_merge_components` once more, on the classes of the smoothed label map (spatially
    coherent regions, their borders no longer frayed by single noisy pixels): the two classes that border each
    other with the smallest jump ratio (:func:`_jump_ratio`, along the difference of their means, the step
    across the border against the steps two pixels away) are merged while it is below ``jump``. A class split
    along a thickness staircase keeps terrace steps on both sides of its cut (ratio about 10-25 on the tuning
    draws); a boundary between two structures is mostly a step far above the steps beside it (50-7000).
    With ``separation > 0`` a pair is not merged when its interiors (away from their border) differ by more
    than ``separation`` times their own spread (:func:`_interior_separation`: two structures joined by a wide
    linear mixing band, which reads as no step); the pair of next-smallest ratio is tried instead.
    Returns ``(labels, prob)`` with the merged classes' probabilities summed (classes renumbered 0..k-1).
    """
    steps = _border_steps(scan_shape)
    prob = np.asarray(prob)
    group = np.arange(prob.shape[1])  # original class -> class it was merged into
    lab = np.asarray(labels).copy()
    kept: set[tuple[int, int]] = set()  # pairs the guard kept apart (their classes unchanged since)
    while True:
        ids = np.unique(lab)
        cand = []
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                if (a, b) in kept:
                    continue
                r = _jump_ratio(zc, lab, a, b, steps)
                if np.isfinite(r) and r < jump:
                    cand.append((r, a, b))
        pair = None
        for _r, a, b in sorted(cand):
            if separation > 0 and _interior_separation(zc, lab, a, b, scan_shape) > separation:
                kept.add((a, b))
                continue
            pair = (a, b)
            break
        if pair is None:
            break
        lab[lab == pair[1]] = pair[0]
        group[group == pair[1]] = pair[0]
        kept = {k for k in kept if pair[0] not in k}  # a grown class is judged afresh
    if len(np.unique(group)) == len(group):
        return labels, prob
    _, group = np.unique(group, return_inverse=True)
    merged = np.zeros((len(prob), int(group.max()) + 1))
    for c in range(prob.shape[1]):
        merged[:, group[c]] += prob[:, c]
    return group[labels], merged


def _valley_ratio(za: np.ndarray, zb: np.ndarray, noise_var: float) -> float:
    """Density between two groups relative to the lower of their two peaks.

    Density between two groups relative to the lower of their two peaks, along the difference of their means,
    smoothed with a Gaussian as wide as the noise along it.
    """
    ma, mb = za.mean(0), zb.mean(0)
    w = mb - ma
    a, b = float(ma @ w), float(mb @ w)
    if b - a <= 0:
        return 1.0
    t = (np.concatenate([za @ w, zb @ w]) - a) / (b - a)  # a at 0, b at 1
    noise_sd = math.sqrt(max(noise_var, 0.0)) * float(np.linalg.norm(w)) / (b - a)
    bw = min(max(noise_sd, 0.03), 0.15)
    grid = np.linspace(-0.25, 1.25, 121)
    t = t[(t > -0.25 - 4 * bw) & (t < 1.25 + 4 * bw)]
    dens = np.zeros_like(grid)
    for i in range(0, len(t), 4096):
        dens += np.exp(-0.5 * ((grid[:, None] - t[None, i : i + 4096]) / bw) ** 2).sum(1)
    pa = dens[np.abs(grid) <= 0.2].max()
    pb = dens[np.abs(grid - 1) <= 0.2].max()
    mid = dens[(grid >= 0.2) & (grid <= 0.8)]
    low = min(pa, pb)
    if low <= 0:
        return 0.0
    return float(mid.min() / low)


def _icm(logp: np.ndarray, scan_shape, beta: float, n_iter: int = 5, inside: np.ndarray | None = None) -> np.ndarray:
    """Iterated conditional modes of a Potts prior on the scan.

    Iterated conditional modes of a Potts prior (8-neighbourhood) on the scan (``inside``: only these pixels
    take part, as labels and as neighbours).
    """
    sy, sx = scan_shape
    k = logp.shape[1]
    lp = logp.reshape(sy, sx, k)
    labels = lp.argmax(-1)
    w = None if inside is None else inside.reshape(sy, sx, 1).astype(np.float32)
    for _ in range(n_iter):
        onehot = np.eye(k, dtype=np.float32)[labels]
        if w is not None:
            onehot *= w
        pad = np.pad(onehot, ((1, 1), (1, 1), (0, 0)))
        nb = sum(pad[1 + dy : 1 + dy + sy, 1 + dx : 1 + dx + sx] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
        new = (lp + beta * nb).argmax(-1)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels.ravel()


def _silhouette(z, labels, seed) -> float:
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(silhouette_score(z, labels, sample_size=min(len(z), 3000), random_state=seed))


def _mixing(xn: np.ndarray, means: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Fractions of the two most likely classes, from normalised features (linear space)."""
    n, k = prob.shape
    out = np.zeros((n, k), np.float32)
    if k == 1:
        out[:] = 1
        return out
    order = np.argsort(-prob, axis=1)
    a, b = order[:, 0], order[:, 1]
    step = 8192
    for i in range(0, n, step):
        sl = slice(i, i + step)
        ma, mb = means[a[sl]], means[b[sl]]
        diff = ma - mb
        num = np.einsum("ij,ij->i", xn[sl] - mb, diff)
        den = np.einsum("ij,ij->i", diff, diff)
        f = np.clip(num / np.where(den > 0, den, 1), 0, 1)
        rows = np.arange(sl.start, min(sl.start + step, n))
        out[rows, a[sl]] = f
        out[rows, b[sl]] += 1 - f
    return out


def _spaces(p: ClassifyParams) -> tuple[str, ...]:
    """The clustering spaces tried: maximum-autocorrelation factors need PCA components."""
    if p.decomposition != "pca" or p.space == "components":
        return ("components",)
    return ("components", "maf") if p.space == "auto" else ("maf",)


def space_score(factors: np.ndarray, labels: np.ndarray) -> float:
    """Share of the scan's coherent variance a label map explains.

    The between-class share (0..1) of the total variance of maximum-autocorrelation factors ``factors`` ``(n,
    m)`` (:func:`maf_factors`, in their own scale: each factor's variance is its ratio of variance over the
    scan to variance between neighbours, so the most coherent directions weigh most) for the classes
    ``labels`` ``(n,)``. A label map that misses structure filling large regions (one class where two
    lattices 2.5 % apart fill the scan) scores near 0.
    """
    f = np.asarray(factors, np.float64)
    f = f - f.mean(0)
    labels = np.asarray(labels).ravel()
    total = float((f**2).sum())
    if total <= 0:
        return 0.0
    counts = np.bincount(labels)
    keep = counts > 0
    sums = np.stack([np.bincount(labels, weights=f[:, i], minlength=len(counts)) for i in range(f.shape[1])], 1)
    between = float((sums[keep] ** 2 / counts[keep, None]).sum())
    return min(max(between / total, 0.0), 1.0)


def choose_space(factors: np.ndarray, labels: dict) -> tuple[str, dict]:
    """Which clustering ``space="auto"`` keeps: ``("components" or "maf", {space: score})``.

    The factors' classes (``labels["maf"]``) only when they explain at least ``SPACE_RATIO`` times as much of
    the coherent variance (:func:`space_score`) as the components' classes and ``SPACE_GAIN`` more: the
    components missed structure filling large regions. Otherwise the components' classes, which were better
    on rotated grains and distinct phases (docs/classification.md, session 10).
    ``labels``: each space's Gaussian-mixture classes with the number of classes suggested (the classification
    made with ``space="auto"``; with a number of classes or another method given, that clustering is then
    made on the chosen space).
    """
    scores = {s: space_score(factors, lab) for s, lab in labels.items()}
    c, m = scores["components"], scores["maf"]
    return ("maf" if m >= SPACE_RATIO * c and m - c >= SPACE_GAIN else "components"), scores


def _iter_cluster(zc, noise_var, raw, blocks, scan_shape, p: ClassifyParams, step, same, space: str = ""):
    """Cluster the scores ``zc``: the class count (unless given), clustering, spatial smoothing.

    Yields ``step(...)`` between trials and ``same(...)`` inside them; returns ``(labels, prob, suggested,
    bic, silhouette)``: labels ``(n,)`` ordered by decreasing class size, ``prob`` ``(n, k)`` normalised.
    """
    tag = f"{space}: " if space else ""
    fit = _fit_sample(zc, p.seed)
    bic: dict[int, float] = {}
    sil: dict[int, float] = {}
    models: dict[int, Any] = {}
    kmax = max(1, min(p.max_classes, len(fit) - 1))
    sweep = p.n_classes is None or p.method == "gmm"
    groups = None
    bands: list = []
    if sweep:
        for k in range(1, max(kmax, p.n_classes or 0) + 1):
            msg = f"{tag}trying {k} classes"
            tick = functools.partial(same, msg)
            models[k], bic[k] = yield from _in_thread(_gmm_trial, tick, fit, k, p.seed)
            if k > 1:
                # the k-means and its silhouette (0.3-0.7 s on 4096 patterns) in the thread too
                sil[k] = yield from _in_thread(_kmeans_trial, tick, fit, k, p.seed)
            yield step(msg)
        kbest = min(bic, key=bic.get)
        g = models[kbest]
        tick = functools.partial(same, f"{tag}merging components")
        hard = yield from _in_thread(g.predict, tick, zc)
        cmeans = yield from _in_thread(_component_means, tick, raw, blocks, hard, kbest)
        yield tick()
        bands = (yield from _in_thread(_boundary_bands, tick, cmeans, hard, scan_shape)) if p.bands else []
        thin = yield from _in_thread(
            functools.partial(_thin_components, skip={c for c, _, _ in bands}),
            tick,
            hard,
            zc,
            scan_shape,
            kbest,
            p.min_width,
        )
        merge = functools.partial(
            _merge_components,
            zc,
            hard,
            scan_shape,
            jump=p.jump,
            valley=p.valley,
            noise_var=noise_var,
            premerge=[(c, into) for c, into, _ in bands] + thin,
            aside=tuple(c for c, _, _ in bands),
        )
        yield tick()
        groups = yield from _in_thread(merge, tick)
        suggested = int(groups.max() + 1)
        if p.n_classes is not None:
            # the number given: merge the BIC mixture down to it (or, with fewer components
            # than asked for, the mixture of that many components)
            if suggested > p.n_classes:
                # the distinct groups, then the smallest into its nearest, down to the number
                # asked for
                groups = yield from _in_thread(_merge_smallest, tick, zc, hard, groups, p.n_classes)
            elif len(np.unique(hard)) >= p.n_classes:
                groups = yield from _in_thread(functools.partial(merge, target=p.n_classes), tick)
            else:
                g = models[p.n_classes]
                groups = np.arange(p.n_classes)
    else:
        suggested = int(p.n_classes)
    k_use = int(p.n_classes or suggested)
    msg = f"{tag}clustering ({p.method}, {k_use} classes)"
    yield step(msg)
    # the clustering in a thread (Cancel points every 0.1 s while it runs)
    labels, prob = yield from _in_thread(
        _final_clustering,
        functools.partial(same, msg),
        zc,
        fit,
        g if sweep else None,
        groups,
        bands,
        kbest if sweep else 0,
        cmeans if sweep else None,
        raw,
        blocks,
        noise_var,
        k_use,
        p,
    )
    msg = f"{tag}spatial regularisation"
    yield step(msg)
    labels, prob, suggested = yield from _in_thread(
        _regularised, functools.partial(same, msg), zc, labels, prob, suggested, scan_shape, p
    )
    return labels, prob, suggested, bic, sil


def _final_clustering(zc, fit, g, groups, bands, kbest, cmeans, raw, blocks, noise_var, k_use, p: ClassifyParams):
    """The clustering with ``k_use`` classes: ``(labels, prob)`` before the smoothing (see :func:`_iter_cluster`)."""
    n = len(zc)
    if p.method == "gmm":
        # the merged mixture: responsibilities summed within each group
        resp_c = g.predict_proba(zc)
        prob = np.zeros((n, int(groups.max()) + 1))
        for c in range(resp_c.shape[1]):
            prob[:, groups[c]] += resp_c[:, c]
        if bands and len(resp_c[0]) == len(groups) == kbest:
            _share_bands(prob, resp_c, groups, bands, raw, blocks, cmeans)
        labels = prob.argmax(1)
    elif p.method == "kmeans":
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=k_use, n_init=4, random_state=p.seed).fit(fit)
        labels = km.predict(zc)
        d2 = ((zc[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1)
        s2 = max(noise_var * zc.shape[1], 1e-12) if p.decomposition == "pca" else float(np.median(d2.min(1)) + 1e-12)
        logits = -0.5 * (d2 - d2.min(1, keepdims=True)) / (s2 / zc.shape[1])
        prob = np.exp(logits)
        prob /= prob.sum(1, keepdims=True)
    else:
        from sklearn.cluster import AgglomerativeClustering

        # Ward linkage on a sample (memory grows with its square), then every pattern to the
        # nearest class centroid
        sample = _fit_sample(zc, p.seed, n_max=4000)
        lab_s = AgglomerativeClustering(n_clusters=k_use, linkage="ward").fit_predict(sample)
        cen = np.stack([sample[lab_s == c].mean(0) for c in range(k_use)])
        labels = np.argmin(((zc[:, None, :] - cen[None]) ** 2).sum(-1), axis=1)
        prob = np.eye(k_use)[labels]
    return labels, prob


def _regularised(zc, labels, prob, suggested, scan_shape, p: ClassifyParams):
    """The spatial smoothing, re-merge and classes ordered by size: ``(labels, prob, suggested)``."""
    prob = np.clip(prob, 1e-300, None)
    if p.spatial > 0 and p.method != "hierarchical":
        labels = _icm(np.log(prob), scan_shape, p.spatial)
    if p.n_classes is None and p.remerge_jump > 0:
        labels, prob = _remerge_smoothed(zc, labels, prob, scan_shape, p.remerge_jump, p.remerge_separation)
        suggested = len(np.unique(labels))
    # classes ordered by size (largest first); empty classes dropped
    sizes = np.bincount(labels, minlength=prob.shape[1])
    order = [c for c in np.argsort(-sizes, kind="stable") if sizes[c] > 0]
    remap = np.full(prob.shape[1], -1)
    remap[order] = np.arange(len(order))
    labels = remap[labels]
    prob = prob[:, order]
    prob /= prob.sum(1, keepdims=True)
    return labels, prob, suggested


def _means_and_mixing(raw, blocks, labels, k: int, prob):
    """Each class's mean normalised features ``(k, d)`` and every pattern's mixing fractions."""
    xn = _normalised(raw, blocks)
    means = np.stack([xn[labels == c].mean(0) for c in range(k)])
    return means, _mixing(xn, means, prob)


# the libraries the classification's threads call, imported by the job before it starts them
_LIBRARIES = ("scipy.linalg", "sklearn.cluster", "sklearn.decomposition", "sklearn.metrics", "sklearn.mixture")


# -- the job --------------------------------------------------------------------------------------
def iter_classify_features(features: Features, params: ClassifyParams | None = None) -> Job[Classification]:
    """Job: decompose and cluster ``features`` (see the module docstring).

    Parameters
    ----------
    features : Features
        Raw features of every pattern (:func:`~.features.iter_features` or
        :func:`~.features.bragg_features`).
    params : ClassifyParams, optional
        Decomposition, clustering and number of classes (default ``ClassifyParams()``).

    Yields
    ------
    Progress
        Between stages: decomposition, each number of classes tried, clustering, smoothing,
        class means.

    Returns
    -------
    Classification
        The generator's return value: labels (classes ordered by decreasing size), probabilities,
        mixing fractions, loadings, components, class mean features, BIC and silhouette for every
        number of classes tried, the suggested number and the noise variance.

    Notes
    -----
    Each feature vector is normalised by its sum and square-rooted (Poisson counts get a variance
    independent of their mean); PCA keeps the components whose variance exceeds the
    Marchenko-Pastur edge ``sigma^2 (1 + sqrt(d / n))^2`` of the noise (measured from scan
    neighbours) by 50 % [1]_, or mini-batch NMF is used. The scores are clustered by a Gaussian
    mixture (number of components of least BIC [2]_, then merged while not distinct), k-means
    or Ward clustering, smoothed by iterated conditional modes of a Potts prior on the scan [3]_,
    and each pattern is written as a mix of its two most likely class means.

    References
    ----------
    .. [1] V. A. Marchenko and L. A. Pastur, "Distribution of eigenvalues for some sets of random
       matrices", Math. USSR Sb. 1, 457-483 (1967).
    .. [2] G. Schwarz, "Estimating the dimension of a model", Ann. Statist. 6, 461-464 (1978).
    .. [3] J. Besag, "On the statistical analysis of dirty pictures", J. R. Stat. Soc. B 48,
       259-302 (1986).
    """
    p = params or ClassifyParams()
    t0 = time.perf_counter()
    spaces = _spaces(p)
    runs_made = 1 if len(spaces) == 1 else (2 if p.n_classes is None and p.method == "gmm" else 3)
    steps = 3 + runs_made * (2 + max(p.max_classes, p.n_classes or 0)) + (len(spaces) > 1)
    done = 0

    def step(msg):
        nonlocal done
        done += 1
        return Progress(min(done, steps), steps, msg)

    def same(msg):  # a point inside a step where the job can be cancelled
        return Progress(min(done, steps), steps, msg)

    # every call that can take more than ~0.1 s runs in a thread of its own that the job waits for in 0.1 s
    # steps (_in_thread), so a Cancel never waits for a decomposition or a clustering trial; the libraries are
    # imported here first (in a thread too), not in those threads
    from ...engine.jobs import iter_imports

    yield from iter_imports(_LIBRARIES, "decomposition")
    scan_shape = features.scan_shape
    raw = features.flat()
    blocks = features.meta.get("blocks")
    tick = functools.partial(same, "decomposition")
    if blocks:
        x = yield from _in_thread(_transform_blocks, tick, raw, blocks, p, scan_shape)
    else:
        x = yield from _in_thread(_transform, tick, raw, p)
    noise_var = yield from _in_thread(neighbour_noise_variance, tick, x, scan_shape)
    yield step("decomposition")
    extra: dict[str, Any] = {}
    if p.decomposition == "pca":
        z, comps, evr = yield from _iter_pca(x, p, noise_var, tick)
    else:
        _quiet_nmf_iterations()
        z, comps, converged = yield from _in_thread(_nmf, tick, x, p)
        evr = np.full(len(comps), np.nan)
        extra["nmf_converged"] = converged
    del x
    t_dec = time.perf_counter() - t0

    inputs = {}  # each space's clustering input, made once (auto uses the factors up to three times)

    def maf_input():
        zc = maf_factors(z, scan_shape, p.maf)
        return zc, neighbour_noise_variance(zc, scan_shape)

    def cluster_input(space):
        if space in inputs:
            return inputs[space]
        if space == "maf":
            raise AssertionError("the factors are made in a thread first (iter_cluster_input)")
        # cluster on the leading components (the class signal; the rest is mostly noise)
        zc = np.ascontiguousarray(z[:, : min(z.shape[1], p.cluster_dims)], dtype=np.float64)
        if p.decomposition == "nmf":
            s = zc.sum(1, keepdims=True)
            zc = zc / np.where(s > 0, s, 1)
        inputs[space] = zc, noise_var
        return inputs[space]

    def iter_cluster_input(space):
        if space == "maf" and space not in inputs:
            # the factors: 0.3-0.9 s on 4096 patterns, in a thread
            inputs[space] = yield from _in_thread(maf_input, functools.partial(same, "maximum-autocorrelation factors"))
        return cluster_input(space)

    if len(spaces) > 1:
        # the space is chosen on each space's own classes (mixture, number of classes suggested: what
        # choose_space was set on), then the classification asked for is made on the chosen space (the same
        # clustering when nothing else was asked for)
        free = replace(p, n_classes=None, method="gmm")
        runs = {}
        for space in spaces:
            zc_nv = yield from iter_cluster_input(space)
            runs[space] = yield from _iter_cluster(*zc_nv, raw, blocks, scan_shape, free, step, same, space)
        yield step("choosing the clustering space")
        chosen, scores = choose_space(cluster_input("maf")[0], {s: runs[s][0] for s in spaces})
        extra["space_scores"] = scores
        if free != p:
            zc_nv = yield from iter_cluster_input(chosen)
            runs[chosen] = yield from _iter_cluster(*zc_nv, raw, blocks, scan_shape, p, step, same)
    else:
        chosen = spaces[0]
        zc_nv = yield from iter_cluster_input(chosen)
        runs = {chosen: (yield from _iter_cluster(*zc_nv, raw, blocks, scan_shape, p, step, same))}
    extra["space_chosen"] = chosen
    labels, prob, suggested, bic, sil = runs[chosen]
    k_final = prob.shape[1]
    means, mixing = yield from _in_thread(
        _means_and_mixing,
        functools.partial(same, "class means and mixing fractions"),
        raw,
        blocks,
        labels,
        k_final,
        prob,
    )
    yield step("class means and mixing fractions")
    fshape = tuple(features.shape)
    comps_img = comps.reshape(len(comps), *fshape) if int(np.prod(fshape)) == comps.shape[1] else comps
    result = Classification(
        labels=labels.reshape(scan_shape).astype(np.int32),
        probability=prob.reshape(*scan_shape, k_final).astype(np.float32),
        mixing=mixing.reshape(*scan_shape, k_final),
        loadings=z.reshape(*scan_shape, -1).astype(np.float32),
        components=comps_img.astype(np.float32),
        class_features=means.reshape(k_final, *fshape).astype(np.float32),
        explained_variance_ratio=np.asarray(evr, float),
        suggested_n_classes=suggested,
        bic=bic,
        silhouette=sil,
        noise_variance=noise_var,
        params={
            "features": asdict(features.params),
            "classify": asdict(p),
            "n_components": int(z.shape[1]),
            "seconds_decomposition": t_dec,
            "seconds_total": time.perf_counter() - t0,
            **extra,
        },
    )
    yield step("done")
    return result


classify_features = eager(iter_classify_features, "Classify features.")
