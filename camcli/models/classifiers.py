"""Classifiers by name: torchvision's architectures, with torchvision weights or a checkpoint, and
timm's (``timm/NAME``, built with ``pretrained=False`` and a checkpoint). The source asked last: a
name no other source claims is looked up here, and an unknown one is refused with the closest.

Labels and preprocessing travel with the weights, as torchvision designs them: a weights enum
carries ``meta["categories"]`` and ``transforms()`` (its crop size, mean and std). A user
checkpoint carries neither, so they come from ``--labels`` and ``--input-size`` (ImageNet
mean/std by default); ``--mean`` and ``--std`` replace either's normalisation.

A checkpoint whose first convolution takes one channel (a grayscale fine-tune) is built to
match and then given an equivalent RGB first convolution: its weights times the luminance
coefficients, with one mean and std for all three channels, so that the model sees exactly the
luminance image (borders included: the folded bias is zero) and every later step, from
Score-CAM's masks to the faithfulness metrics, stays RGB.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from camcli.engine.loaded import IMAGENET_MEAN, IMAGENET_STD, LoadedModel
from camcli.errors import UsageError, unknown
from camcli.models import timm_models
from camcli.models.checkpoints import (OWN_MODEL_HINT, TORCHSCRIPT_HINT, file_sha256, head_key, is_torchscript,
                                      load_into, read_checkpoint)
from camcli.models.detectors import detection_models
from camcli.models.grayscale import GRAY_MEAN, GRAY_STD, first_conv, replace_first_conv, rgb_first_conv
from camcli.models.labels import fit_labels, given_labels
from camcli.models.modules import own_model, qualified_name
from camcli.models.segmenters import segmentation_models
from camcli.models.sources import ModelRequest, ModelSource
from camcli.models.torchvision_weights import build_with_weights, categories_for, no_weights, weights_for_classes

#: the model when none is named
DEFAULT_ARCHITECTURE = "resnet50"
#: builder arguments go to a factory, a torchvision detector's builder or a YOLO model
NO_MODEL_ARGS = ("`model_arg` is for a factory (`model` file.py:function), a MONAI network (`model` monai/NAME), a "
                 "detector's builder or a YOLO model; a named classifier takes none")


def classification_models() -> list[str]:
    """Every classification architecture in torchvision's registry (no download)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


class Classifiers(ModelSource):
    """torchvision and timm classifiers by name; the default architecture when none is named."""

    name = "classifier"

    def claims(self, request: ModelRequest) -> bool:
        return True  # asked last

    def load(self, request: ModelRequest, state=None) -> LoadedModel:
        """``state``: the checkpoint already read (by the pickled source, when it held no model)."""
        if request.model_args:
            raise UsageError(NO_MODEL_ARGS)
        architecture = request.spec or DEFAULT_ARCHITECTURE
        from_timm = timm_models.is_timm(architecture)
        names = classification_models()
        if architecture not in names and not from_timm:
            names = names + detection_models() + segmentation_models()
            raise unknown("model", architecture, names, "Run `camcli models` for the list (timm models: timm/NAME).")
        if from_timm and request.checkpoint is None and str(request.weights).lower() != "none":
            raise UsageError(f"camcli builds {architecture} with pretrained=False and downloads nothing: pass your "
                             "weights with `checkpoint` (a timm training checkpoint works), or `weights` none")
        label_list = given_labels(request.labels)
        if request.checkpoint is not None:
            loaded = _from_checkpoint(architecture, request, label_list, state)
        elif request.weights is None or str(request.weights).lower() == "none":
            n = request.num_classes or (len(label_list) if label_list else 1000)
            loaded = LoadedModel(_build(architecture, num_classes=n), architecture, fit_labels(label_list, n, "`labels`"),
                                 request.input_size or (224, 224))
        else:
            loaded = _with_weights(architecture, request, label_list)
        if from_timm and loaded.source is None:
            _timm_preset(loaded, request.input_size)
        return loaded


def _from_checkpoint(architecture: str, request: ModelRequest, label_list: list[str] | None, state) -> LoadedModel:
    """``architecture`` shaped as the checkpoint's state dict is (class count, auxiliary heads, a
    one-channel first convolution), its weights loaded strictly, named by torchvision's categories
    when they have as many classes."""
    checkpoint, num_classes, size = request.checkpoint, request.num_classes, request.input_size
    if not no_weights(request.weights):
        raise UsageError("`weights` and `checkpoint` exclude each other: the checkpoint supplies the weights")
    state = state if state is not None else read_checkpoint(checkpoint, trust=request.trust)
    if isinstance(state, nn.Module):  # a whole pickled model, and `model` names an architecture too
        if type(state) is not type(_structure(architecture)):
            raise UsageError(f"checkpoint {checkpoint} is a whole pickled model of class {qualified_name(state)}, "
                             f"not a {architecture}: the file is the model, so leave `model` out")
        return own_model(state, {"kind": "pickled"}, size=size, file=checkpoint, **request.own)
    if num_classes is None:
        num_classes = _classes_in(architecture, state)
    model = _build_for(architecture, num_classes, state)
    channels = _match_input_channels(model, state, str(checkpoint))
    load_into(model, state, str(checkpoint), hint=TORCHSCRIPT_HINT if is_torchscript(Path(checkpoint))
              else OWN_MODEL_HINT)
    if channels == 1:
        rgb_first_conv(model)
    offered = None if label_list else categories_for(architecture, num_classes)
    loaded = LoadedModel(model, architecture, fit_labels(label_list or (offered and offered[1]), num_classes, "`labels`"),
                         size or (224, 224), checkpoint=str(checkpoint), checkpoint_sha256=file_sha256(checkpoint),
                         labels_from=offered and offered[0])
    if channels == 1:
        loaded.input_channels = 1
        loaded.mean, loaded.std = GRAY_MEAN * 3, GRAY_STD * 3
    return loaded


def _with_weights(architecture: str, request: ModelRequest, label_list: list[str] | None) -> LoadedModel:
    """``architecture`` with torchvision weights: their categories, crop size and normalisation."""
    w, _ = weights_for_classes(architecture, str(request.weights), request.num_classes)
    model = build_with_weights(architecture, w)
    preset = w.transforms()
    crop = getattr(preset, "crop_size", [224])
    resize_to = getattr(preset, "resize_size", None)
    loaded = LoadedModel(model, architecture,
                         fit_labels(label_list or list(w.meta["categories"]), len(w.meta["categories"]),
                                    "`labels`" if label_list else str(w)),
                         request.input_size or (int(crop[0]), int(crop[-1])),
                         tuple(getattr(preset, "mean", IMAGENET_MEAN)), tuple(getattr(preset, "std", IMAGENET_STD)),
                         weights=str(w))
    if resize_to:
        loaded.crop_fraction = int(crop[0]) / int(resize_to[0])
    return loaded


def _timm_preset(loaded: LoadedModel, size: tuple[int, int] | None) -> None:
    """A timm model's input size, crop and normalisation from its pretrained config (a
    one-channel model's: the mean of each)."""
    cfg = timm_models.preset(loaded.model)
    loaded.input_size = size or cfg["input_size"]
    loaded.crop_fraction = cfg["crop_fraction"]
    mean, std = cfg["mean"] or IMAGENET_MEAN, cfg["std"] or IMAGENET_STD
    if loaded.input_channels == 3:
        loaded.mean, loaded.std = mean, std
    else:
        loaded.mean, loaded.std = (sum(mean) / 3,) * 3, (sum(std) / 3,) * 3


def _match_input_channels(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> int:
    """Rebuild the first convolution for a checkpoint trained on one channel; returns the count."""
    first = first_conv(model)
    key = f"{first[0]}.weight" if first else None
    if first is None or key not in state or state[key].dim() != 4 or state[key].shape[1] == first[1].in_channels:
        return first[1].in_channels if first else 3
    channels = int(state[key].shape[1])
    if channels != 1 or first[1].in_channels != 3:
        raise UsageError(f"checkpoint {source}: its first convolution ({first[0]}) takes {channels} input channels; "
                         "images can be fed as RGB (3 channels) or grayscale (1), nothing else")
    replace_first_conv(model, 1)
    return 1


def _build(architecture: str, **kwargs) -> nn.Module:
    if timm_models.is_timm(architecture):
        return timm_models.build(architecture, kwargs.get("num_classes"))
    try:
        return torchvision.models.get_model(architecture, weights=None, **kwargs)
    except (TypeError, ValueError) as e:
        raise UsageError(f"cannot build {architecture}: {e}") from e


#: auxiliary training heads, absent from checkpoints saved with ``aux_logits=False`` (what inference checkpoints are)
_AUX_HEADS = {"inception_v3": ("AuxLogits.",), "googlenet": ("aux1.", "aux2.")}


def _build_for(architecture: str, num_classes: int, state: dict[str, torch.Tensor]) -> nn.Module:
    """``architecture`` with ``num_classes``, shaped as the checkpoint is: without the auxiliary
    heads when the checkpoint has none of their weights."""
    model = _build(architecture, num_classes=num_classes)
    prefixes = _AUX_HEADS.get(architecture)
    if prefixes and not any(k.startswith(prefixes) for k in state) and any(
            k.startswith(prefixes) for k in model.state_dict()):
        model = _build(architecture, num_classes=num_classes, aux_logits=False)
    return model


def _structure(architecture: str) -> nn.Module:
    """The architecture's modules, without weights where it can: built on the meta device (no memory, no
    random initialisation: 0.5 s for a ViT-B instead of seconds)."""
    try:
        with torch.device("meta"):
            return _build(architecture)
    except (NotImplementedError, RuntimeError):  # a constructor that computes with tensors (RegNet's widths)
        return _build(architecture)


def _classes_in(architecture: str, state: dict[str, torch.Tensor]) -> int:
    """Class count from the classifier weight's first dimension."""
    probe = _structure(architecture)
    key = head_key(probe)
    if key is None or key not in state:
        own = set(probe.state_dict())
        shared = sum(k in own for k in state)
        if shared < len(state) / 2:
            raise UsageError(f"the checkpoint is not a {architecture}'s: only {shared} of its {len(state)} keys are "
                             f"{architecture}'s (its first: {', '.join(list(state)[:3])}). Name its architecture with "
                             "`model`, or, for a model of your own class, the code that builds it: `model` "
                             "path/to/file.py:function")
        raise UsageError(f"cannot infer the number of classes: the checkpoint has no {key!r}; pass `num_classes`")
    return int(state[key].shape[0])


CLASSIFIERS = Classifiers()
