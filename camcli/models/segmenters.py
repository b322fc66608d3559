"""Loading a semantic segmenter: torchvision's FCN, DeepLabV3 and LR-ASPP by name, with torchvision
weights or a checkpoint, and any module of their classes or a HuggingFace ``*ForSemanticSegmentation``
(handed over, from a factory, from a folder).

A segmenter scores every class at every pixel: torchvision's return ``{"out": (N, K, H, W)}``
(plus ``aux`` when built with the auxiliary head, which camcli never reads), HuggingFace's an output
whose ``logits`` are (N, K, H/4, W/4). Images are fed as for a classifier (resized to
``input_size``, normalised with ``mean`` and ``std``); torchvision's weights resize to 520 px, so
520x520 is their default input. Labels come from the weights (VOC's 21 classes, ``__background__``
first), ``id2label``, ``labels`` or ``class_N``. User models whose architecture camcli does not
know (a U-Net of one's own) are segmenters when ``task`` says so.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models.segmentation._utils import _SimpleSegmentationModel
from torchvision.models.segmentation.lraspp import LRASPP

from camcli.engine.loaded import LoadedModel
from camcli.errors import UsageError, unknown
from camcli.models.checkpoints import TORCHSCRIPT_HINT, file_sha256, is_torchscript, load_into, named_state
from camcli.models.kinds import is_segmenter  # noqa: F401  (where callers found it)
from camcli.models.labels import fit_labels, given_labels
from camcli.models.model_args import parse_model_args
from camcli.models.sources import ModelRequest, ModelSource
from camcli.models.torchvision_weights import build_with_weights, weights_for_classes

#: what torchvision's segmentation weights resize images to (their transforms' ``resize_size``)
TORCHVISION_SIDE = 520
#: the names a background class goes by (index 0 of torchvision's VOC weights is ``__background__``)
BACKGROUND_NAMES = ("__background__", "background", "bg", "_background_", "void")


def segmentation_models() -> list[str]:
    """Every segmentation architecture in torchvision's registry (no download)."""
    return sorted(torchvision.models.list_models(module=torchvision.models.segmentation))


def default_segmenter_layer(model: nn.Module) -> str | None:
    """The layer a segmenter is explained at when none is named: torchvision's backbone's last block
    (ResNet's ``layer4``, MobileNet's last feature block: what the head reads), SegFormer's fused
    decoder features (``decode_head.linear_fuse``, the input of its classifier), else ``None``."""
    if isinstance(model, (_SimpleSegmentationModel, LRASPP)):
        children = [name for name, _ in model.backbone.named_children()]
        return f"backbone.{children[-1]}" if children else None
    fuse = getattr(getattr(model, "decode_head", None), "linear_fuse", None)
    if isinstance(fuse, nn.Module):
        return "decode_head.linear_fuse"
    return None


def background_index(labels: list[str]) -> int | None:
    """The class that is the background: index 0 when its name says so, else ``None``."""
    return 0 if labels and labels[0].strip().lower() in BACKGROUND_NAMES else None


def load_segmenter(architecture: str, weights: str | None, checkpoint, num_classes: int | None, labels,
                   model_args: list[str] | None, trust: bool, size: tuple[int, int] | None) -> LoadedModel:
    """``architecture`` (a torchvision segmentation name) with its weights, or empty and filled from
    ``checkpoint``; ``model_args`` are keyword arguments of its builder (``aux_loss=True``...)."""

    kwargs = parse_model_args(model_args)
    label_list = given_labels(labels)
    extra: dict = {}
    if checkpoint is not None:
        state = named_state(checkpoint, weights, trust)
        if any(k.startswith("aux_classifier.") for k in state) and "aux_loss" not in kwargs:
            kwargs["aux_loss"] = True  # saved with its training head: built with it, so that every key fits
        n = num_classes or _classes_in(architecture, state, kwargs)
        model = _build(architecture, n, kwargs)
        load_into(model, state, str(checkpoint), hint=TORCHSCRIPT_HINT if is_torchscript(checkpoint) else
                  f"Check that `model` {architecture} (with its `model_arg`s) is the architecture it was saved from")
        extra = {"checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint)}
    elif weights is None or str(weights).lower() == "none":
        n = num_classes or (len(label_list) if label_list else 21)
        model = _build(architecture, n, kwargs)
    else:
        w, categories = weights_for_classes(architecture, str(weights), num_classes)
        model = build_with_weights(architecture, w)
        if kwargs:
            built = _build(architecture, len(categories), kwargs)
            built.load_state_dict(model.state_dict(), strict=False)
            model = built
        n, label_list, extra = len(categories), label_list or categories, {"weights": str(w)}
    return segmenter(model, architecture, label_list, n, size or (TORCHVISION_SIDE, TORCHVISION_SIDE), **extra)


def segmenter(model: nn.Module, architecture: str, labels: list[str] | None, num_classes: int,
              size: tuple[int, int], **extra) -> LoadedModel:
    """A segmenter as the engine takes it: fed as a classifier is, its classes named."""
    return LoadedModel(model.eval(), architecture, fit_labels(labels, num_classes, "`labels`"), size, **extra)


def _build(architecture: str, num_classes: int, kwargs: dict) -> nn.Module:
    if architecture not in segmentation_models():
        raise unknown("segmentation model", architecture, segmentation_models(), "Run `camcli models` for the list.")
    try:
        return torchvision.models.get_model(architecture, weights=None, weights_backbone=None,
                                            num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as e:
        raise UsageError(f"cannot build {architecture}: {e}") from e


def _classes_in(architecture: str, state: dict[str, torch.Tensor], kwargs: dict) -> int:
    """Class count from the checkpoint's last classifier layer (FCN's and DeepLabV3's
    ``classifier.4``, LR-ASPP's ``classifier.high_classifier``)."""
    for key in ("classifier.4.weight", "classifier.high_classifier.weight"):
        if key in state:
            return int(state[key].shape[0])
    raise UsageError(f"cannot read the number of classes from the checkpoint for {architecture} (it has no "
                     "classifier.4.weight or classifier.high_classifier.weight); pass `num_classes`")


def own_segmenter_layer(model: nn.Module, input_size: tuple[int, int], device, classes: int) -> str:
    """The default layer of a segmenter of the user's own class: the classifier's rule (its last
    spatial block), unless that block outputs the scores themselves (a U-Net's last 1x1
    convolution, or an upsampling of the score map after it: their maps would only redraw the
    mask), then the last map before them that is not a score map."""
    from camcli.models.layer_search import default_layer, earlier_layer, trace_layers

    infos = {i.name: i for i in trace_layers(model, input_size, device)}
    chosen = default_layer(model, input_size, device, infos=list(infos.values()))
    for _ in range(len(infos)):
        info = infos.get(chosen)
        if info is None or info.layout is None or info.layout.channels_of(info.shape) not in (classes, 1):
            break
        before = earlier_layer(model, input_size, chosen, device)
        if before is None:
            break
        chosen = before
    return chosen


def redraws_output(model: nn.Module, layer: str, input_size: tuple[int, ...], device, scores_of,
                   channels: int = 3) -> bool:
    """Whether ``layer``'s output is the model's score map itself (the same values, resized): its
    Grad-CAM would redraw the predicted mask, not explain it. ``scores_of`` reads the scores from
    the model's output. One pass on a seeded random input."""
    import torch.nn.functional as F

    from camcli.engine.layer_names import split_call

    seen = []
    handle = model.get_submodule(split_call(layer)[0]).register_forward_hook(
        lambda _m, _i, out: seen.append(out) if isinstance(out, torch.Tensor) else None)
    x = torch.rand(1, channels, *input_size, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with torch.inference_mode():
            scores = scores_of(model(x))
    finally:
        handle.remove()
    if (not seen or seen[-1].dim() != scores.dim() or scores.dim() not in (4, 5)
            or seen[-1].shape[1] != scores.shape[1]):
        return False
    mine = seen[-1].float()
    if mine.shape[2:] != scores.shape[2:]:
        mine = F.interpolate(mine, size=scores.shape[2:], mode="bilinear" if mine.dim() == 4 else "trilinear",
                             align_corners=False)
    scale = float(scores.abs().max()) or 1.0
    return float((mine - scores.float()).abs().max()) <= 1e-3 * scale


class TorchvisionSegmenters(ModelSource):
    """torchvision's semantic segmenters by name, with their weights or a checkpoint."""

    name = "torchvision-segmenter"

    def claims(self, request: ModelRequest) -> bool:
        return isinstance(request.spec, str) and request.spec in segmentation_models()

    def load(self, request: ModelRequest) -> LoadedModel:
        return load_segmenter(request.spec, request.weights, request.checkpoint, request.num_classes, request.labels,
                              request.model_args, request.trust, request.input_size)


SEGMENTERS = TorchvisionSegmenters()
