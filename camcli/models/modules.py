"""Any ``nn.Module`` as a model camcli explains: handed over from Python, made by a factory,
unpickled, exported or read from a HuggingFace folder (:func:`own_model`).

Nothing is derived from a name here: the class count comes from one dry forward, labels from
``labels`` (else ``class_N``), preprocessing from ``input_size``, ``mean`` and ``std`` (224 and
ImageNet's by default, as for a torchvision checkpoint). The model is recorded by its class's
qualified name and, for resuming, by what identifies its source (a file's hash, its weights').
"""

from __future__ import annotations

import hashlib
import os

import torch
from torch import nn

from camcli.engine.loaded import LoadedModel
from camcli.errors import UsageError, first_line
from camcli.models.checkpoints import file_sha256, load_into, read_state_dict
from camcli.models.grayscale import GRAY_MEAN, GRAY_STD, rgb_first_conv, takes_one_channel
from camcli.models.kinds import is_detector, is_segmenter
from camcli.models.labels import fit_labels, given_labels

from camcli.models.sources import ModelRequest, ModelSource
from camcli.models.torchvision_weights import no_torchvision_weights  # torchvision-free until weights are built
from camcli.settings.code import PYTHON_OBJECT

#: what to check when a state dict does not fit a model of the user's own
OWN_MODEL_FIT_HINT = "Check that `model` builds the model the checkpoint was saved from"


def handed_over(model) -> tuple[object, nn.Module | None]:
    """The Python API's ``model=``: (what the settings record, the module itself or None)."""
    if isinstance(model, nn.Module):
        return PYTHON_OBJECT + qualified_name(model), model
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a name or a torch.nn.Module, not {type(model).__name__}")
    return model, None


def own_model(model: nn.Module, source: dict, *, size: tuple[int, int] | None = None, checkpoint=None,
              file=None, num_classes: int | None = None, labels=None, hint: str = "",
              output: str | None = None, model_args: list[str] | None = None) -> LoadedModel:
    """A model not built from a name: ``checkpoint`` (a state dict) loaded into it strictly (``hint``
    says what to check when it does not fit), classes from one dry forward at ``size`` (224 by
    default), ``source`` recorded with the class's name. ``file``: the file the model itself came
    from (a pickle, an exported program), recorded as its checkpoint."""
    if checkpoint is not None:
        load_into(model, read_state_dict(checkpoint), str(checkpoint), hint=hint)
    recorded = checkpoint if checkpoint is not None else file
    files = {"checkpoint": str(recorded) if recorded is not None else None,
             "checkpoint_sha256": file_sha256(recorded) if recorded is not None else None}
    name = qualified_name(model)
    label_list = given_labels(labels)
    if is_detector(model):
        from camcli.models.detectors import as_detector, detector

        return detector(as_detector(model, model_args), name, label_list, num_classes, **files,
                        source={**source, "class": name})
    channels = volume_channels(model)
    if channels is not None:  # a 3D network: fed volumes, one cube of `input_size` per scan
        from camcli.models.video_models import fixed_clip

        side = size[0] if size else VOLUME_SIDE
        cube = fixed_clip(model) or (side,) * 3  # an MViT takes one clip size only
        n = classes_of(model, cube, output, channels)
        if num_classes is not None and num_classes != n:
            raise UsageError(f"`num_classes` {num_classes} does not match the model, which returns {n} scores per scan")
        return LoadedModel(model, name, fit_labels(label_list, n, "`labels`"), cube, (0.0,) * channels,
                           (1.0,) * channels, input_channels=channels, **files, source={**source, "class": name})
    size = size or (224, 224)
    gray = takes_one_channel(model)
    if gray:  # trained on one channel: fed the luminance of camcli's RGB pictures, as a named architecture's
        rgb_first_conv(model)
    n = classes_of(model, size, output)
    if num_classes is not None and num_classes != n:
        raise UsageError(f"`num_classes` {num_classes} does not match the model, which returns {n} scores per image")
    if is_segmenter(model):
        from camcli.models.segmenters import segmenter

        loaded = segmenter(model, name, label_list, n, size, **files, source={**source, "class": name})
    else:
        loaded = LoadedModel(model, name, fit_labels(label_list, n, "`labels`"), size, **files,
                             source={**source, "class": name})
    if gray:
        loaded.input_channels = 1
        loaded.mean, loaded.std = GRAY_MEAN * 3, GRAY_STD * 3
    return loaded


def qualified_name(model: nn.Module) -> str:
    """``package.module.Class`` of the model, as ``run.json`` records it."""
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def weights_sha256(model: nn.Module) -> str:
    """A hash of every parameter and buffer (names, dtypes, shapes and values): the same weights, the same hash."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


#: the side of a volume model's input cube when ``input_size`` does not say (MONAI's examples' 96)
VOLUME_SIDE = 96


def volume_channels(model: nn.Module) -> int | None:
    """The input channels of a model whose first convolution is three-dimensional (a network for
    volumes), or ``None``."""
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)
    return first.in_channels if isinstance(first, nn.Conv3d) else None


def classes_of(model: nn.Module, input_size: tuple[int, ...], output: str | None = None, channels: int = 3) -> int:
    """How many scores the model returns per image (in the part ``output`` picks), from one dry
    forward at ``input_size``; 1 for one value per image. What the scores mean is the head's
    business (:mod:`camcli.engine.heads`), which also refuses outputs that are no scores."""
    from camcli.engine.targets import select_output

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.zeros(1, channels, *input_size, device=device)
    what = (f"{'x'.join(map(str, input_size))} RGB input" if channels == 3 and len(input_size) == 2 else
            f"{'x'.join(map(str, input_size))} input of {channels} channel(s)")
    try:
        with torch.inference_mode():
            out = model.eval()(x)
    except Exception as e:  # the user's model: its failure, in one line
        raise UsageError(f"the model ({qualified_name(model)}) fails on a {what}: "
                         f"{type(e).__name__}: {first_line(e)}; give the size it takes with `input_size`") from None
    scores = select_output(out, output)
    return int(scores.shape[1]) if scores.dim() >= 2 else 1


class HandedOver(ModelSource):
    """``camcli.explain(model=net)``: the module itself, copied (camcli folds its BatchNorms and
    changes its memory layout), weights from ``checkpoint`` when given."""

    name = "module"

    def claims(self, request: ModelRequest) -> bool:
        return isinstance(request.spec, nn.Module)

    def load(self, request: ModelRequest) -> LoadedModel:
        import copy

        no_torchvision_weights(request.weights)
        model = copy.deepcopy(request.spec)
        return own_model(model, {"kind": "module", "weights_sha256": weights_sha256(model)}, size=request.input_size,
                         checkpoint=request.checkpoint, hint=OWN_MODEL_FIT_HINT, **request.own)


HANDED_OVER = HandedOver()
