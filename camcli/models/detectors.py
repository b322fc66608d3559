"""Loading a detector: torchvision's detection architectures by name, with torchvision weights or a
checkpoint, and any module that is one of their classes (handed over, from a factory, unpickled).

A detector feeds itself: its own transform (``GeneralizedRCNNTransform``) normalises and resizes
each image and maps the boxes back, so camcli hands it the image as it is, in [0, 1], and records
no mean or std of its own. Labels come from the weights (COCO's 91 categories, ``__background__``
and the ``N/A`` gaps included, so that a label index is the model's own), from ``labels`` or as
``class_N``; index 0 is the background for the R-CNN and SSD families.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from camcli.engine.loaded import LoadedModel
from camcli.errors import UsageError, unknown
from camcli.models.checkpoints import (TORCHSCRIPT_HINT, file_sha256, is_torchscript, load_into, named_state,
                                      read_state_dict)
from camcli.models.labels import fit_labels, given_labels
from camcli.models.model_args import parse_model_args
from camcli.models.torchvision_weights import build_with_weights, weights_for_classes
from camcli.models.sources import ModelRequest, ModelSource
from camcli.models.kinds import is_detector  # noqa: F401  (where callers found it)
from camcli.models.yolo import YoloDetector, is_yolo_config, is_yolo_model

#: what camcli feeds a detector: pixels in [0, 1]; its own transform normalises them
NO_NORMALISATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def detection_models() -> list[str]:
    """Every detection architecture in torchvision's registry (no download)."""
    return sorted(torchvision.models.list_models(module=torchvision.models.detection))


def default_detector_layer(model: nn.Module) -> str | None:
    """The layer a detector is explained at when none is named: its backbone (torchvision's, with
    the FPN levels), the feature maps YOLO's head reads (``levels``); ``None`` when it has neither."""
    name = getattr(model, "default_layer", "backbone")
    return name if isinstance(getattr(model, name, None), nn.Module) else None


def as_detector(model: nn.Module, model_args: list[str] | None = None) -> nn.Module:
    """``model`` as the engine takes a detector: an Ultralytics model behind torchvision's interface
    (``model_args``: its ``imgsz``, ``conf``, ``iou``, ``max_det``), any other as it is."""
    if not is_yolo_model(model):
        return model

    kwargs = parse_model_args(model_args)
    unknown = sorted(set(kwargs) - {"imgsz", "conf", "iou", "max_det"})
    if unknown:
        raise UsageError(f"`model_arg` {', '.join(unknown)}: a YOLO model takes imgsz, conf, iou and max_det")
    return YoloDetector(model, **kwargs)


def load_yolo(spec: str, checkpoint, num_classes: int | None, labels, model_args: list[str] | None) -> LoadedModel:
    """An Ultralytics model from its yaml (``yolov8n.yaml`` or a path), untrained or filled from a
    state dict ``checkpoint`` (an Ultralytics ``.pt`` is a pickle: ``trust_checkpoint`` without ``model``)."""
    from camcli.models.yolo import from_config

    label_list = given_labels(labels)
    n = num_classes or (len(label_list) if label_list else 80)
    model = as_detector(from_config(spec, n), model_args)
    extra = {}
    if checkpoint is not None:
        load_into(model.model, read_state_dict(checkpoint), str(checkpoint),
                  hint=f"Check that {spec} (with `num_classes` {n}) is the model the state dict was saved from")
        extra = {"checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint)}
    return detector(model, str(spec), label_list, n, **extra)


def input_side(model: nn.Module) -> int:
    """The side a detector resizes images to (its transform's ``min_size``; SSD's fixed size; YOLO's ``imgsz``)."""
    transform = getattr(model, "transform", None)
    if hasattr(transform, "imgsz"):
        return int(transform.imgsz)
    fixed = getattr(transform, "fixed_size", None)
    if fixed:
        return int(max(fixed))
    sizes = getattr(transform, "min_size", (800,))
    return int(sizes[-1] if isinstance(sizes, (tuple, list)) else sizes)


def load_detector(architecture: str, weights: str | None, checkpoint, num_classes: int | None,
                  labels, model_args: list[str] | None, trust: bool) -> LoadedModel:
    """``architecture`` (a torchvision detection name) built with its weights, or empty and filled
    from ``checkpoint``; ``model_args`` are keyword arguments of its builder (``min_size=512``,
    ``box_score_thresh=0.01``...)."""

    kwargs = parse_model_args(model_args)
    label_list = given_labels(labels)
    if checkpoint is not None:
        state = named_state(checkpoint, weights, trust)
        n = num_classes or _classes_in(architecture, state, kwargs)
        model = _build(architecture, n, kwargs)
        load_into(model, state, str(checkpoint), hint=TORCHSCRIPT_HINT if is_torchscript(checkpoint) else
                  f"Check that `model` {architecture} (with its `model_arg`s) is the architecture it was saved from")
        return detector(model, architecture, label_list, n, checkpoint=str(checkpoint),
                        checkpoint_sha256=file_sha256(checkpoint))
    if weights is None or str(weights).lower() == "none":
        n = num_classes or (len(label_list) if label_list else 91)
        return detector(_build(architecture, n, kwargs), architecture, label_list, n)
    w, categories = weights_for_classes(architecture, str(weights), num_classes)
    if kwargs:
        model = _with_weights_and_args(architecture, w, kwargs)
    else:
        model = build_with_weights(architecture, w)
    loaded = detector(model, architecture, label_list or categories, len(categories), weights=str(w))
    return loaded


def detector(model: nn.Module, architecture: str, labels: list[str] | None, num_classes: int | None = None,
             **extra) -> LoadedModel:
    """A detector as the engine takes it: no normalisation of camcli's, its own input side."""
    n = num_classes or detector_classes(model)
    if labels is None and isinstance(model, YoloDetector):
        labels = model.names
    side = input_side(model)
    mean, std = NO_NORMALISATION
    return LoadedModel(model, architecture, fit_labels(labels, n, "`labels`"), (side, side), mean, std, **extra)


def detector_classes(model: nn.Module) -> int:
    """Classes of a detector's head, read from its weights (background included where it has one)."""
    if isinstance(model, YoloDetector):
        return model.num_classes
    for name, p in model.named_parameters():
        if name.endswith("box_predictor.cls_score.weight"):  # Faster/Mask/Keypoint R-CNN
            return int(p.shape[0])
    head = getattr(getattr(model, "head", None), "classification_head", None)
    if head is not None and hasattr(head, "num_classes"):  # RetinaNet, FCOS, SSD, SSDlite
        return int(head.num_classes)
    raise UsageError(f"cannot tell how many classes the detector {type(model).__name__} has; pass `num_classes`")


def _build(architecture: str, num_classes: int, kwargs: dict) -> nn.Module:
    if architecture not in detection_models():
        raise unknown("detection model", architecture, detection_models(), "Run `camcli models` for the list.")
    try:
        return torchvision.models.get_model(architecture, weights=None, weights_backbone=None,
                                            num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as e:
        raise UsageError(f"cannot build {architecture}: {e}") from e


def _with_weights_and_args(architecture: str, w, kwargs: dict) -> nn.Module:
    """Weights loaded into a model built with the user's builder arguments (the weights' own
    builder refuses most of them)."""
    model = _build(architecture, len(w.meta["categories"]), kwargs)

    model.load_state_dict(build_with_weights(architecture, w).state_dict())
    return model


def _classes_in(architecture: str, state: dict[str, torch.Tensor], kwargs: dict) -> int:
    """Class count from the checkpoint's classification weights (R-CNN: the box predictor's rows;
    the single-stage heads: output channels over anchors per location)."""
    for key, value in state.items():
        if key.endswith("box_predictor.cls_score.weight"):
            return int(value.shape[0])
    with torch.device("meta"):
        probe = _build(architecture, 91, kwargs)
    head = probe.head.classification_head if hasattr(probe, "head") else None
    mine = probe.state_dict()
    for key, value in state.items():
        if key in mine and key.startswith("head.classification_head") and key.endswith("weight") \
                and value.shape[0] != mine[key].shape[0] and head is not None:
            return int(value.shape[0] * head.num_classes // mine[key].shape[0])
    if any(k.startswith("head.classification_head") for k in state):
        return 91
    raise UsageError(f"cannot read the number of classes from checkpoint for {architecture}; pass `num_classes`")


class Yolo(ModelSource):
    """An Ultralytics model from its yaml (``yolov8n.yaml`` or a path)."""

    name = "yolo"

    def claims(self, request: ModelRequest) -> bool:
        return is_yolo_config(request.spec)

    def load(self, request: ModelRequest) -> LoadedModel:
        return load_yolo(str(request.spec), request.checkpoint, request.num_classes, request.labels,
                         request.model_args)


class TorchvisionDetectors(ModelSource):
    """torchvision's detectors by name, with their weights or a checkpoint."""

    name = "torchvision-detector"

    def claims(self, request: ModelRequest) -> bool:
        return isinstance(request.spec, str) and request.spec in detection_models()

    def load(self, request: ModelRequest) -> LoadedModel:
        return load_detector(request.spec, request.weights, request.checkpoint, request.num_classes, request.labels,
                             request.model_args, request.trust)


YOLO = Yolo()
DETECTORS = TorchvisionDetectors()
