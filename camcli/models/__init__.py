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

from camcli.engine.loaded import LoadedModel
from camcli.models.classifiers import classification_models
from camcli.models.sources import load_model
from camcli.models.torchvision_weights import hub_cache_file, weight_names

__all__ = ["LoadedModel", "classification_models", "hub_cache_file", "load_model", "weight_names"]
