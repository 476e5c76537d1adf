"""Structure classification: find the phases and domains of a scan without knowing them first.

Features per pattern (:mod:`.features`, streamed over scan chunks), decomposition and
clustering (:mod:`.model`, scikit-learn imported only when it runs: the optional extra
``napari-4dstem[classify]``), the whole job on a dataset (:mod:`.pipeline`).

The names below load their module on first use, so importing the package (e.g. for the
command line's ``classify`` subcommand) imports neither numba nor scikit-learn.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "FEATURE_KINDS": "features",
    "FeatureParams": "features",
    "Features": "features",
    "bragg_features": "features",
    "compute_features": "features",
    "iter_features": "features",
    "CLUSTER_METHODS": "model",
    "Classification": "model",
    "ClassifyParams": "model",
    "classify_features": "model",
    "iter_classify_features": "model",
    "classify": "pipeline",
    "iter_class_means": "pipeline",
    "iter_classify": "pipeline",
    "to_emd_objects": "pipeline",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
