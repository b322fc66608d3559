"""Loading a classifier and naming its layers.

:mod:`.loader` builds a torchvision architecture with torchvision weights or a checkpoint
(:mod:`.checkpoints`) and its class names (:mod:`.labels`), a model of the user's own from a
factory (:mod:`.factory`) or as a module (:mod:`.modules`); :mod:`.layer_search` traces a model to list its
layers and pick the default one; :mod:`.batchnorm_folding` speeds inference up.
"""

from camcli.models.loader import LoadedModel, classification_models, hub_cache_file, load_model, weight_names

__all__ = ["LoadedModel", "classification_models", "hub_cache_file", "load_model", "weight_names"]
