"""Ultralytics YOLO detectors (v8 and later, the optional ``camcli[yolo]`` extra) behind
torchvision's detector interface, so that the engine explains them as it explains Faster R-CNN.

:class:`YoloDetector` takes a list of images in [0, 1] and returns per image ``boxes`` (in its
pixels), ``labels`` (YOLO's class ids, from 0) and ``scores`` that stay differentiable: each
image is resized so that its longer side is ``imgsz`` and padded on the right and bottom to a
multiple of the model's stride (what Ultralytics' rectangular inference does, with the padding
on one side), the model runs in eval mode (never its training path), and its decoded predictions
(B, 4 + classes, anchors) go through class-wise NMS as Ultralytics' ``non_max_suppression``
does: a box's score is its best class probability, gathered from the prediction so that its
gradient reaches the layers. Heads that do their own NMS (``end2end``: YOLOv10, YOLO26) are
refused: their outputs are not read yet.

The default layer ``levels`` is the list of feature maps the Detect head reads (P3 to P5), read
as FPN levels are (:mod:`camcli.engine.detection`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import batched_nms, box_convert

from camcli.errors import UsageError

YOLO_HINT = "YOLO models need the optional extra: pip install 'camcli[yolo]' (Ultralytics)"


def is_yolo_config(spec) -> bool:
    """Whether ``spec`` names an Ultralytics model file: ``yolov8n.yaml`` or a path to one."""
    return isinstance(spec, (str, Path)) and str(spec).lower().endswith((".yaml", ".yml"))


def is_yolo_model(obj) -> bool:
    """Whether ``obj`` is an Ultralytics detection model (without importing Ultralytics)."""
    return any(c.__name__ == "DetectionModel" and c.__module__.startswith("ultralytics") for c in type(obj).__mro__)


def from_config(spec: str, num_classes: int | None) -> nn.Module:
    """An untrained Ultralytics detection model built from its yaml (``nc`` = ``num_classes``)."""
    try:
        from ultralytics.nn.tasks import DetectionModel
    except ImportError:
        raise UsageError(YOLO_HINT) from None
    try:
        return DetectionModel(str(spec), nc=num_classes, verbose=False)
    except (FileNotFoundError, KeyError, ValueError, TypeError) as e:
        raise UsageError(f"cannot build a YOLO model from {spec}: {e}") from None


def from_checkpoint(data) -> nn.Module | None:
    """The model inside an Ultralytics ``.pt`` (a dict holding ``model`` or ``ema``), or ``None``."""
    if is_yolo_model(data):
        return data
    if isinstance(data, dict):
        for key in ("ema", "model"):
            if is_yolo_model(data.get(key)):
                return data[key]
    return None


class LetterboxTransform(nn.Module):
    """Images to one padded batch: longer side ``imgsz``, padded right and bottom to the stride;
    returns what torchvision's transform returns, so the explainer reads the sizes the same way."""

    def __init__(self, imgsz: int, stride: int) -> None:
        super().__init__()
        self.imgsz, self.stride = imgsz, stride

    def forward(self, images: list[torch.Tensor]):
        resized = []
        for x in images:
            h, w = x.shape[-2:]
            scale = self.imgsz / max(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            resized.append(F.interpolate(x[None], size=size, mode="bilinear", align_corners=False,
                                         antialias=scale < 1)[0] if size != (h, w) else x)
        top = max(r.shape[-2] for r in resized)
        left = max(r.shape[-1] for r in resized)
        ph, pw = -(-top // self.stride) * self.stride, -(-left // self.stride) * self.stride
        batch = resized[0].new_full((len(resized), 3, ph, pw), 114 / 255)  # Ultralytics' grey
        for i, r in enumerate(resized):
            batch[i, :, :r.shape[-2], :r.shape[-1]] = r
        return ImageList(batch, [tuple(r.shape[-2:]) for r in resized]), None


class _Levels(nn.Module):
    """The feature maps the Detect head reads, as they are: a layer to name (``levels``)."""

    def forward(self, levels):
        return list(levels)


class YoloDetector(nn.Module):
    """An Ultralytics detection model as a torchvision-style detector (see the module's docstring)."""

    #: the layer explained when none is named, and the method (gradient-free, as Ultralytics' users expect)
    default_layer = "levels"
    default_method = "eigencam"

    def __init__(self, model: nn.Module, imgsz: int = 640, conf: float = 0.001, iou: float = 0.7,
                 max_det: int = 300) -> None:
        super().__init__()
        head = model.model[-1]
        if getattr(head, "end2end", False):
            raise UsageError(f"{type(model).__name__} has an end-to-end head ({type(head).__name__}: its own NMS); "
                             "camcli reads YOLO heads whose outputs are boxes and class scores per anchor (YOLOv8, "
                             "YOLO11)")
        self.model = model.float().eval()
        stride = int(max(float(s) for s in model.stride)) if hasattr(model, "stride") else 32
        self.transform = LetterboxTransform(imgsz, stride)
        self.levels = _Levels()
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.num_classes = int(head.nc)
        names = getattr(model, "names", None) or {}
        given = [str(names.get(i, i)) if isinstance(names, dict) else str(names[i]) for i in range(self.num_classes)]
        # Ultralytics names an untrained model's classes "0", "1", ...: those are camcli's class_N
        self.names = [f"class_{i}" if name == str(i) else name for i, name in enumerate(given)]
        head.register_forward_pre_hook(lambda _m, args: (self.levels(args[0]),))

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        if self.training:
            raise RuntimeError("camcli runs YOLO in eval mode only")
        batch, _ = self.transform(list(images))
        preds = self.model(batch.tensors)
        preds = preds[0] if isinstance(preds, (tuple, list)) else preds
        out = []
        for j, x in enumerate(images):
            p = preds[j]  # (4 + classes, anchors): centre x, y, width, height in input pixels, then probabilities
            scores, labels = p[4:].max(0)
            keep = torch.nonzero(scores.detach() > self.conf).flatten()
            boxes = box_convert(p[:4, keep].T, "cxcywh", "xyxy")
            kept = batched_nms(boxes.detach(), scores[keep].detach(), labels[keep], self.iou)[:self.max_det]
            h, w = x.shape[-2:]
            rh, rw = batch.image_sizes[j]
            scale = torch.tensor([w / rw, h / rh, w / rw, h / rh], device=boxes.device, dtype=boxes.dtype)
            found = boxes[kept] * scale
            found = torch.stack([found[:, 0].clamp(0, w), found[:, 1].clamp(0, h),
                                 found[:, 2].clamp(0, w), found[:, 3].clamp(0, h)], 1)
            out.append({"boxes": found, "labels": labels[keep][kept], "scores": scores[keep][kept]})
        return out
