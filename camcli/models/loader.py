"""Loading a classifier: a torchvision architecture by name, with torchvision weights or a checkpoint;
and :func:`load_model`, the one entry point, sending every other source to its module (a module
or factory of the user's own, a HuggingFace folder, an exported program, a pickled model).

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

import copy
import os
import urllib.error
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from camcli.engine.loaded import IMAGENET_MEAN, IMAGENET_STD, LoadedModel
from camcli.models.checkpoints import (OWN_MODEL_HINT, TORCHSCRIPT_HINT, file_sha256, head_key, is_torchscript,
                                      load_into, read_checkpoint)
from camcli.errors import UsageError, unknown
from camcli.models import detectors, exported, huggingface, segmenters, timm_models, yolo
from camcli.models.factory import build_from_factory, is_factory
from camcli.models.modules import own_model, qualified_name, weights_sha256
from camcli.models.grayscale import GRAY_MEAN, GRAY_STD, first_conv, replace_first_conv, rgb_first_conv
from camcli.models.labels import fit_labels, read_labels

#: the model when none is named
DEFAULT_ARCHITECTURE = "resnet50"


def classification_models() -> list[str]:
    """Every classification architecture in torchvision's registry (no download)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def weight_names(architecture: str) -> list[str]:
    try:
        enum = torchvision.models.get_model_weights(architecture)
    except (ValueError, KeyError):
        return []
    return [w.name for w in enum]


def load_model(architecture: str | nn.Module | None, weights: str | None = "DEFAULT",
               checkpoint: str | Path | None = None, num_classes: int | None = None,
               labels: str | Path | list[str] | None = None, input_size: int | tuple[int, int] | None = None,
               device: torch.device | str = "cpu", trust: bool = False, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, model_args: list[str] | None = None,
               output: str | None = None) -> LoadedModel:
    """Build ``architecture`` and load weights into it.

    ``architecture`` is a torchvision name, ``timm/NAME``, a factory (``file.py:function`` or
    ``package.module:function``, called with ``model_args``: ``["key=value", ...]``; see
    :mod:`.factory`), an ``nn.Module`` itself, or ``None`` (resnet50, unless ``checkpoint`` is a
    whole pickled model: then that). ``weights`` is a torchvision weights name (``DEFAULT``,
    ``IMAGENET1K_V1``...) or ``none``; with ``checkpoint`` the weights come from that file
    instead, and the class count is read from the head's weight shape unless ``num_classes``
    says otherwise. A whole pickled model or TorchScript file loads only with ``trust=True``
    (``--trust-checkpoint``): it runs code. A TorchScript file's weights go into
    ``architecture`` (compiled modules take no hooks).

    >>> lm = load_model("resnet18", weights="none", num_classes=10)  # doctest: +SKIP
    """
    size = _size(input_size)
    own = {"num_classes": num_classes, "labels": labels, "output": output}  # output: the part of a tuple to read
    if isinstance(architecture, nn.Module):  # a copy: camcli folds its BatchNorms and changes its memory layout
        _no_torchvision_weights(weights)
        model = copy.deepcopy(architecture)
        loaded = own_model(model, {"kind": "module", "weights_sha256": weights_sha256(model)}, size=size,
                           checkpoint=checkpoint, hint=_FACTORY_HINT, **own)
        return _finish(loaded, mean, std, device)
    if isinstance(architecture, str) and is_factory(architecture):
        _no_torchvision_weights(weights)
        model, factory = build_from_factory(architecture, model_args)
        loaded = own_model(model, {"kind": "factory", "spec": factory.spec, "file": factory.file,
                                   "file_sha256": factory.file_sha256},
                           size=size, checkpoint=checkpoint, hint=_FACTORY_HINT, **own)
        return _finish(loaded, mean, std, device)
    if yolo.is_yolo_config(architecture):
        return _finish(detectors.load_yolo(str(architecture), checkpoint, num_classes, labels, model_args),
                       mean, std, device)
    if isinstance(architecture, str) and architecture in detectors.detection_models():
        return _finish(detectors.load_detector(architecture, weights, checkpoint, num_classes, labels, model_args,
                                               trust), mean, std, device)
    if isinstance(architecture, str) and architecture in segmenters.segmentation_models():
        return _finish(segmenters.load_segmenter(architecture, weights, checkpoint, num_classes, labels, model_args,
                                                 trust, size), mean, std, device)
    if isinstance(architecture, (str, Path)) and huggingface.is_hf_folder(architecture):
        if checkpoint is not None:
            raise UsageError("a HuggingFace folder holds its own weights: leave `checkpoint` out")
        return _finish(huggingface.load_folder(Path(architecture), size, trust=trust, **own), mean, std, device)
    if checkpoint is not None and exported.is_exported(checkpoint):
        if architecture not in (None, DEFAULT_ARCHITECTURE):
            raise UsageError(f"checkpoint {checkpoint} is a torch.export program, which is the model: leave `model` out")
        return _finish(exported.load_program(checkpoint, size, trust=trust, **own), mean, std, device)
    state = None
    if checkpoint is not None and trust and architecture in (None, DEFAULT_ARCHITECTURE):
        # the default model is not a choice: a whole pickled model is taken as it is, whatever its class
        state = read_checkpoint(checkpoint, trust=True)
        if isinstance(state, nn.Module):
            if model_args and not yolo.is_yolo_model(state):
                raise UsageError(_NO_MODEL_ARGS)
            return _finish(_pickled(state, checkpoint, size, own, model_args), mean, std, device)
    if model_args:
        raise UsageError(_NO_MODEL_ARGS)
    architecture = architecture or DEFAULT_ARCHITECTURE
    from_timm = timm_models.is_timm(architecture)
    names = classification_models()
    if architecture not in names and not from_timm:
        names = names + detectors.detection_models() + segmenters.segmentation_models()
        raise unknown("model", architecture, names, "Run `camcli models` for the list (timm models: timm/NAME).")
    if from_timm and checkpoint is None and str(weights).lower() != "none":
        raise UsageError(f"camcli builds {architecture} with pretrained=False and downloads nothing: pass your "
                         "weights with `checkpoint` (a timm training checkpoint works), or `weights` none")
    label_list = list(labels) if isinstance(labels, list) else (read_labels(labels) if labels else None)

    if checkpoint is not None:
        if not _no_weights(weights):
            raise UsageError("`weights` and `checkpoint` exclude each other: the checkpoint supplies the weights")
        state = state if state is not None else read_checkpoint(checkpoint, trust=trust)
        channels = 3
        if isinstance(state, nn.Module):  # a whole pickled model, and `model` names an architecture too
            if type(state) is not type(_structure(architecture)):
                raise UsageError(f"checkpoint {checkpoint} is a whole pickled model of class {qualified_name(state)}, "
                                 f"not a {architecture}: the file is the model, so leave `model` out")
            return _finish(_pickled(state, checkpoint, size, own), mean, std, device)
        else:
            if num_classes is None:
                num_classes = _classes_in(architecture, state)
            model = _build_for(architecture, num_classes, state)
            channels = _match_input_channels(model, state, str(checkpoint))
            load_into(model, state, str(checkpoint), hint=TORCHSCRIPT_HINT if is_torchscript(Path(checkpoint))
                      else OWN_MODEL_HINT)
            if channels == 1:
                rgb_first_conv(model)
        offered = None if label_list else _categories_for(architecture, num_classes)
        loaded = LoadedModel(model, architecture, fit_labels(label_list or (offered and offered[1]), num_classes,
                                                             "`labels`"),
                             size or (224, 224), checkpoint=str(checkpoint),
                             checkpoint_sha256=file_sha256(checkpoint), labels_from=offered and offered[0])
        if channels == 1:
            loaded.input_channels = 1
            loaded.mean, loaded.std = GRAY_MEAN * 3, GRAY_STD * 3
    elif weights is None or str(weights).lower() == "none":
        n = num_classes or (len(label_list) if label_list else 1000)
        model = _build(architecture, num_classes=n)
        loaded = LoadedModel(model, architecture, fit_labels(label_list, n, "`labels`"), size or (224, 224))
    else:
        w = _weights_enum(architecture, str(weights))
        if num_classes is not None and num_classes != len(w.meta["categories"]):
            raise UsageError(f"`num_classes` {num_classes} does not match {w} ({len(w.meta['categories'])} "
                             "classes); use `checkpoint` for a fine-tuned head")
        model = _build_with_weights(architecture, w)
        preset = w.transforms()
        crop = getattr(preset, "crop_size", [224])
        resize_to = getattr(preset, "resize_size", None)
        loaded = LoadedModel(model, architecture,
                             fit_labels(label_list or list(w.meta["categories"]), len(w.meta["categories"]),
                                        "`labels`" if label_list else str(w)),
                             size or (int(crop[0]), int(crop[-1])),
                             tuple(getattr(preset, "mean", IMAGENET_MEAN)), tuple(getattr(preset, "std", IMAGENET_STD)),
                             weights=str(w))
        if resize_to:
            loaded.crop_fraction = int(crop[0]) / int(resize_to[0])
    if from_timm:
        cfg = timm_models.preset(loaded.model)
        loaded.input_size = size or cfg["input_size"]
        loaded.crop_fraction = cfg["crop_fraction"]
        mean, std = cfg["mean"] or IMAGENET_MEAN, cfg["std"] or IMAGENET_STD
        if loaded.input_channels == 3:
            loaded.mean, loaded.std = mean, std
        else:
            loaded.mean, loaded.std = (sum(mean) / 3,) * 3, (sum(std) / 3,) * 3
    return _finish(loaded, mean, std, device)


def _no_weights(weights) -> bool:
    """Whether ``weights`` names no torchvision weights (``DEFAULT`` counts as none once a checkpoint gives them)."""
    return weights in (None, "none", "None", "DEFAULT")


def _no_torchvision_weights(weights) -> None:
    if not _no_weights(weights):
        raise UsageError("`weights` names torchvision weights; your own model takes its weights from `checkpoint`")


#: what to check when a state dict does not fit a model of the user's own
_FACTORY_HINT = "Check that `model` builds the model the checkpoint was saved from"


#: builder arguments go to a factory, a torchvision detector's builder or a YOLO model
_NO_MODEL_ARGS = ("`model_arg` is for a factory (`model` file.py:function), a detector's builder or a YOLO model; a "
                  "named classifier takes none")


def _pickled(model: nn.Module, checkpoint, size, own: dict, model_args: list[str] | None = None) -> LoadedModel:
    return own_model(model, {"kind": "pickled"}, size=size, file=checkpoint, model_args=model_args, **own)


def _finish(loaded: LoadedModel, mean, std, device) -> LoadedModel:
    if mean is not None or std is not None:
        _set_normalisation(loaded, mean, std)
    loaded.model.eval().to(device)
    return loaded


def _set_normalisation(loaded: LoadedModel, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
    """``mean``/``std`` given by the user: one value per input channel (one value: all channels)."""
    for name, values in (("mean", mean), ("std", std)):
        if values is None:
            continue
        values = tuple(float(v) for v in values)
        if len(values) not in (1, loaded.input_channels):
            kind = "an RGB" if loaded.input_channels == 3 else "a grayscale"
            raise UsageError(f"`{name}` has {len(values)} values; {kind} model takes {loaded.input_channels} "
                             "(or one for all channels)")
        if name == "std" and any(v <= 0 for v in values):
            raise UsageError(f"`std` values must be positive, got {', '.join(map(str, values))}")
        if len(values) == 1:
            values = values * 3
        setattr(loaded, name, values)


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


def _size(input_size) -> tuple[int, int] | None:
    if input_size is None:
        return None
    if isinstance(input_size, int):
        return (input_size, input_size)
    h, w = input_size
    return (int(h), int(w))


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


def _categories_for(architecture: str, classes: int | None) -> tuple[str, list[str]] | None:
    """(weights, categories) of torchvision weights of ``architecture`` with ``classes`` categories:
    a checkpoint of torchvision's own ImageNet file (or a fine-tune that kept its head) is named by
    them instead of ``class_N``. Read from the weights' metadata; nothing is downloaded."""
    try:
        enum = torchvision.models.get_model_weights(architecture)
    except (ValueError, KeyError):
        return None
    for w in enum:
        categories = w.meta.get("categories")
        if categories and len(categories) == classes:
            return str(w), list(categories)
    return None


def _weights_enum(architecture: str, name: str):
    enum = torchvision.models.get_model_weights(architecture)
    if name.upper() == "DEFAULT":
        return enum.DEFAULT
    short = name.split(".")[-1]
    for w in enum:
        if w.name.lower() == short.lower():
            return w
    raise unknown(f"weights for {architecture}", name, ["DEFAULT", "none", *[w.name for w in enum]])


def hub_cache_file(w) -> Path:
    """Where torch hub looks for (and downloads) a weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(w.url).path)


def _build_with_weights(architecture: str, w) -> nn.Module:
    target = hub_cache_file(w)
    try:
        return torchvision.models.get_model(architecture, weights=w)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        if target.exists():
            raise UsageError(f"cannot read cached weights {target}: {e}") from e
        raise UsageError(
            f"weights {w} are not in the torch hub cache and could not be downloaded ({_reason(e)}). "
            f"Put the file from {w.url} at {target} (set TORCH_HOME to move the cache), "
            "or pass your own weights with `checkpoint`.") from e
    except RuntimeError as e:
        raise UsageError(f"cached weights {target} do not load into {architecture}: {str(e).splitlines()[0]}") from e


def _reason(e: Exception) -> str:
    return str(getattr(e, "reason", None) or e).splitlines()[0][:120]


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
