"""Structure classification: find the phases and domains of a scan without knowing them first.

Features per pattern (:mod:`.features`, streamed over scan chunks), decomposition and
clustering (:mod:`.model`, scikit-learn imported only when it runs: the optional extra
``napari-4dstem[classify]``), the whole job on a dataset (:mod:`.pipeline`).
"""

from .features import (
    FEATURE_KINDS,
    FeatureParams,
    Features,
    bragg_features,
    compute_features,
    iter_features,
)
from .model import (
    CLUSTER_METHODS,
    Classification,
    ClassifyParams,
    classify_features,
    iter_classify_features,
)
from .pipeline import classify, iter_class_means, iter_classify, to_emd_objects

__all__ = [
    "CLUSTER_METHODS",
    "FEATURE_KINDS",
    "Classification",
    "ClassifyParams",
    "FeatureParams",
    "Features",
    "bragg_features",
    "classify",
    "classify_features",
    "compute_features",
    "iter_class_means",
    "iter_classify",
    "iter_classify_features",
    "iter_features",
    "to_emd_objects",
]
