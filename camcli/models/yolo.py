"""Ultralytics YOLO detectors (v8 and later, the optional ``camcli[yolo]`` extra) behind
torchvision's detector interface, so that the engine explains them as it explains Faster R-CNN.

:class:`YoloDetector` takes a list of images in [0, 1] and returns per image ``boxes`` (in its
pixels), ``labels`` (YOLO's class ids, from 0) and ``scores`` that stay differentiable: each
image is letterboxed as Ultralytics' ``predict`` does it (:class:`LetterboxTransform`: longer side
``imgsz``, padded to a multiple of the model's stride, the image centred), the model runs in eval mode (never its training path), and its decoded predictions
(B, 4 + classes, anchors) go through class-wise NMS as Ultralytics' ``non_max_suppression``
does: a box's score is its best class probability, gathered from the prediction so that its
gradient reaches the layers. Heads that do their own NMS (``end2end``: YOLOv10, YOLO26) are
refused: their outputs are not read yet.

Heads are read by what they are, never by position: Detect gives ``4 + classes`` rows per anchor;
Segment adds its mask coefficients after the class scores and returns ``((y, proto), raw)``, and
Pose adds its keypoints: both are explained box by box, their masks and keypoints ignored. OBB
heads give rotated boxes (an angle per anchor): an axis-aligned reading of them would be wrong,
so they are refused.

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
from camcli.models.kinds import is_yolo_model  # noqa: F401  (where callers found it)

YOLO_HINT = "YOLO models need the optional extra: pip install 'camcli[yolo]' (Ultralytics)"


def is_yolo_config(spec) -> bool:
    """Whether ``spec`` names an Ultralytics model file: ``yolov8n.yaml`` or a path to one."""
    return isinstance(spec, (str, Path)) and str(spec).lower().endswith((".yaml", ".yml"))


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
    """Images to one padded batch as Ultralytics' ``predict`` letterboxes them (its ``LetterBox``
    with ``auto``, as for a batch of one size): longer side ``imgsz``, each side rounded as it
    rounds it, bilinear resizing of the 0-255 pixels rounded to whole values (OpenCV's
    ``INTER_LINEAR`` on uint8), padded with grey 114 to a multiple of the stride, the padding split
    between both sides; so the boxes and scores are those of ``model.predict`` on the same image,
    within rounding. Returns what torchvision's transform returns, and each image's (top, left)
    corner in the batch as ``image_offsets`` of the :class:`ImageList`."""

    def __init__(self, imgsz: int, stride: int) -> None:
        super().__init__()
        self.imgsz, self.stride = imgsz, stride

    def place(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """((new h, new w), (top, left), (padded h, padded w)) of an h x w image, as LetterBox computes them."""
        r = min(self.imgsz / h, self.imgsz / w)
        nh, nw = max(round(h * r), 1), max(round(w * r), 1)
        dh, dw = ((self.imgsz - nh) % self.stride) / 2, ((self.imgsz - nw) % self.stride) / 2
        top, bottom, left, right = round(dh - 0.1), round(dh + 0.1), round(dw - 0.1), round(dw + 0.1)
        return (nh, nw), (top, left), (nh + top + bottom, nw + left + right)

    def forward(self, images: list[torch.Tensor]):
        placed = [self.place(*x.shape[-2:]) for x in images]
        ph = max(p[2][0] for p in placed)
        pw = max(p[2][1] for p in placed)
        batch = images[0].new_full((len(images), 3, ph, pw), 114 / 255)  # Ultralytics' grey
        for i, (x, ((nh, nw), (top, left), _)) in enumerate(zip(images, placed)):
            if (nh, nw) != tuple(x.shape[-2:]):
                pixels = F.interpolate(x[None] * 255, size=(nh, nw), mode="bilinear", align_corners=False)[0]
                x = pixels.round().clamp(0, 255) / 255
            batch[i, :, top:top + nh, left:left + nw] = x
        found = ImageList(batch, [p[0] for p in placed])
        found.image_offsets = [p[1] for p in placed]
        return found, None


class _Levels(nn.Module):
    """The feature maps the Detect head reads, as they are: a layer to name (``levels``)."""

    def forward(self, levels):
        return list(levels)


class YoloDetector(nn.Module):
    """An Ultralytics detection model as a torchvision-style detector (see the module's docstring)."""

    #: the layer explained when none is named, and the method (gradient-free, as Ultralytics' users expect)
    default_layer = "levels"
    default_method = "eigencam"
    default_method_reason = ("Eigen-CAM is a YOLO run's default: gradient-free, as Ultralytics' users expect; name "
                             "another with `method`")

    def __init__(self, model: nn.Module, imgsz: int = 640, conf: float = 0.001, iou: float = 0.7,
                 max_det: int = 300) -> None:
        super().__init__()
        head = model.model[-1]
        kinds = [c.__name__ for c in type(head).__mro__]
        if "OBB" in kinds:
            raise UsageError(f"{type(head).__name__} heads give rotated boxes (an angle per box); camcli explains "
                             "axis-aligned boxes and would misplace these: use a Detect, Segment or Pose model")
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
        self.head = head
        #: what the head gives beyond boxes and class scores, which the maps do not explain
        self.ignored = ("mask coefficients" if "Segment" in kinds else "keypoints" if "Pose" in kinds else None)
        names = getattr(model, "names", None) or {}
        given = [str(names.get(i, i)) if isinstance(names, dict) else str(names[i]) for i in range(self.num_classes)]
        # Ultralytics names an untrained model's classes "0", "1", ...: those are camcli's class_N
        self.names = [f"class_{i}" if name == str(i) else name for i, name in enumerate(given)]
        head.register_forward_pre_hook(lambda _m, args: (self.levels(args[0]),))

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        if self.training:
            raise RuntimeError("camcli runs YOLO in eval mode only")
        batch, _ = self.transform(list(images))
        anchors = getattr(self.head, "anchors", None)
        if torch.is_grad_enabled() and isinstance(anchors, torch.Tensor) and anchors.is_inference():
            self.head.shape = None  # anchors cached by a pass in inference mode: made again, for autograd
        preds = self.model(batch.tensors)
        while isinstance(preds, (tuple, list)):  # Detect: (y, raw); Segment: ((y, proto), raw)
            preds = preds[0]
        out = []
        nc = self.num_classes
        for j, x in enumerate(images):
            # (4 + classes [+ mask coefficients or keypoints], anchors): centre x, y, width, height in input
            # pixels, then the class probabilities
            p = preds[j]
            scores, labels = p[4:4 + nc].max(0)
            keep = torch.nonzero(scores.detach() > self.conf).flatten()
            boxes = box_convert(p[:4, keep].T, "cxcywh", "xyxy")
            kept = batched_nms(boxes.detach(), scores[keep].detach(), labels[keep], self.iou)[:self.max_det]
            h, w = x.shape[-2:]
            rh, rw = batch.image_sizes[j]
            top, left = batch.image_offsets[j]
            shift = torch.tensor([left, top, left, top], device=boxes.device, dtype=boxes.dtype)
            scale = torch.tensor([w / rw, h / rh, w / rw, h / rh], device=boxes.device, dtype=boxes.dtype)
            found = (boxes[kept] - shift) * scale  # as Ultralytics' scale_boxes: the padding off, then the gain
            found = torch.stack([found[:, 0].clamp(0, w), found[:, 1].clamp(0, h),
                                 found[:, 2].clamp(0, w), found[:, 3].clamp(0, h)], 1)
            out.append({"boxes": found, "labels": labels[keep][kept], "scores": scores[keep][kept]})
        return out
