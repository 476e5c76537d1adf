"""Neural-network disk detection (FCU-Net): model, training, inference and model registry.

Torch is imported only inside the functions that need it: ``import napari_4dstem.nn`` works
without the ``nn`` extra. The public API, importable from here:

- :class:`ModelConfig`, :func:`build_model` (:mod:`.model`)
- :func:`find_bragg_disks_nn`, :func:`iter_find_bragg_disks_nn`, :func:`predict_pattern`,
  :class:`ProbeError`, :class:`OutOfDomainWarning` (:mod:`.infer`)
- :class:`TrainConfig`, :func:`iter_train`, :func:`export_model`, :class:`TrainingDiverged`
  (:mod:`.train`)
- :func:`load_model`, :func:`list_models`, :func:`pull_model`, :func:`verify_models`,
  :class:`IntegrityError`, :data:`DEFAULT_MODEL` (:mod:`.registry`)
- :func:`write_training_shards`, :func:`make_thick_strained_scan` (:mod:`.synthetic`)
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "ModelConfig": "model",
    "ModelError": "model",
    "build_model": "model",
    "MODEL_SIZES": "model",
    "find_bragg_disks_nn": "infer",
    "iter_find_bragg_disks_nn": "infer",
    "predict_pattern": "infer",
    "ProbeError": "infer",
    "OutOfDomainWarning": "infer",
    "TrainConfig": "train",
    "iter_train": "train",
    "export_model": "train",
    "TrainingDiverged": "train",
    "load_model": "registry",
    "list_models": "registry",
    "pull_model": "registry",
    "verify_models": "registry",
    "IntegrityError": "registry",
    "DEFAULT_MODEL": "registry",
    "write_training_shards": "synthetic",
    "make_thick_strained_scan": "synthetic",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
