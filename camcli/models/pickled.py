"""A whole pickled model as the checkpoint (``--trust-checkpoint``, no ``--model``): the file is the
model. Reading it runs code, so only a trusted checkpoint is read; a trusted file that holds a
state dict after all goes on to the classifier it names (resnet50 by default).
"""

from __future__ import annotations

from torch import nn

from camcli.engine.loaded import LoadedModel
from camcli.errors import UsageError
from camcli.models import yolo
from camcli.models.checkpoints import read_checkpoint
from camcli.models.classifiers import CLASSIFIERS, DEFAULT_ARCHITECTURE, NO_MODEL_ARGS
from camcli.models.modules import own_model
from camcli.models.sources import ModelRequest, ModelSource


class Pickled(ModelSource):
    name = "pickled"

    def claims(self, request: ModelRequest) -> bool:
        # the default model is not a choice: a whole pickled model is taken as it is, whatever its class
        return request.checkpoint is not None and request.trust and request.spec in (None, DEFAULT_ARCHITECTURE)

    def load(self, request: ModelRequest) -> LoadedModel:
        state = read_checkpoint(request.checkpoint, trust=True)
        if not isinstance(state, nn.Module):
            return CLASSIFIERS.load(request, state)
        if request.model_args and not yolo.is_yolo_model(state):
            raise UsageError(NO_MODEL_ARGS)
        return own_model(state, {"kind": "pickled"}, size=request.input_size, file=request.checkpoint,
                         model_args=request.model_args, **request.own)


PICKLED = Pickled()
