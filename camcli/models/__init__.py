"""Loading models and naming their layers.

:mod:`.sources` is the registry of where models come from and :func:`load_model` its one entry;
each source lives with the models it knows: a handed-over module and :func:`~.modules.own_model`
(:mod:`.modules`), a factory (:mod:`.factory`), YOLO and torchvision's detectors
(:mod:`.detectors`), its segmenters (:mod:`.segmenters`), a HuggingFace folder
(:mod:`.huggingface`), an exported program (:mod:`.exported`), a whole pickled model
(:mod:`.pickled`), torchvision and timm classifiers by name (:mod:`.classifiers`). Shared pieces
live once: checkpoints (:mod:`.checkpoints`), torchvision weights (:mod:`.torchvision_weights`),
labels (:mod:`.labels`), ``model_arg`` (:mod:`.model_args`). :mod:`.layer_search` traces a model
to list its layers and pick the default one; :mod:`.batchnorm_folding` speeds inference up.
"""

from __future__ import annotations

import importlib

#: what ``from camcli.models import X`` gives, and the module X lives in: imported when first asked
#: for, so that :mod:`.labels` is read before torch loads (the command line's checks)
_EXPORTS = {
    "LoadedModel": "camcli.engine.loaded",
    "classification_models": "camcli.models.classifiers",
    "load_model": "camcli.models.sources",
    "hub_cache_file": "camcli.models.torchvision_weights",
    "weight_names": "camcli.models.torchvision_weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
