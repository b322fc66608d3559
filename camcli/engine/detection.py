"""Detectors: one forward per batch, one partial backward per box rank, a map for every box.

A torchvision detector takes a list of images and returns, per image, boxes, labels and scores
that stay differentiable back to its features. Each kept box (score >= ``score_threshold``, at
most ``max_detections`` per image) is explained through a box-score target, as
pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` defines it: among the detections of the same
class, the one that overlaps the original box most (IoU > ``iou_threshold``) scores its class
score plus that IoU; none scores 0. On the shared forward the matched box is the box itself, so
one forward serves every box: the r-th boxes of all images share the r-th backward (images are
independent in a detector's batch), taken with respect to the target layers only.

Layers: a tensor layer is read as it is; a layer that outputs several feature maps (the
backbone's FPN levels, an OrderedDict) is read as pytorch-grad-cam's
``fasterrcnn_reshape_transform`` reads it: each level's absolute value resized to the coarsest
level's grid, concatenated on channels. The gradients go through the same resize, with the sign
of their activation folded in (the derivative of the absolute value), so a gradient method sees
d score / d |A| on the same grid (pytorch-grad-cam captures no gradient for such outputs).

Methods that make their map from the layer alone (``layer_only``) apply, and Ablation-CAM, whose
ablated passes are matched to each box by the box score; the others read logits or classifier
weights that a detector does not have, or run passes of their own not matched to boxes yet, and
are refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou

from camcli.engine.capture import frozen_parameters, removed_after
from camcli.engine.layer_names import display_name, hook_layer
from camcli.engine.methods import CAMMethod, taking
from camcli.engine.methods.assumptions import failures, measure, on_host, refuse_failed
from camcli.engine.methods.base import ForwardPass, normalise
from camcli.engine.work import count_passes
from camcli.errors import UsageError

#: IoU above which a box of a new forward is the same detection (pytorch-grad-cam's default)
IOU_THRESHOLD = 0.5
#: the method that forwards ablated copies, its boxes matched in each new output by :func:`box_score`
#: the passes of a method's own that a box's score is taken on (Ablation-CAM's ablated channels)
SCORED_PASSES = "ablated"


@dataclass(frozen=True)
class Detection:
    """One box the detector kept, in the pixels of the image it was given."""

    rank: int  # 1 for the highest score in its image
    index: int  # class index (the model's own: COCO ids for torchvision's weights)
    label: str
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1


@dataclass
class ImageDetections:
    """What a batch gave one image: its boxes, one map per box x method x layer, and where the
    image lies in the padded batch the layers saw."""

    detections: list[Detection]
    #: per detection: (method, layer) -> ((h, w) map in [0, 1], empty, failed assumptions, (extent,
    #: inset)): the map's cells that cover the image (the batch's padding cut off, then normalised),
    #: the (h, w) of the detector's input those cells cover, and the (y, x) of the image's top left
    #: corner in it (0, 0 unless the detector centres its images: YOLO's letterbox)
    maps: list[dict[tuple[str, str], tuple[torch.Tensor, bool, tuple, tuple]]]
    valid: tuple[int, int]  # (h, w) of the image inside the padded input, after the detector's resize
    padded: tuple[int, int]  # (h, w) of the padded input the layer grids cover


def box_score(output: Mapping[str, torch.Tensor], label: int, box: torch.Tensor,
              iou_threshold: float = IOU_THRESHOLD) -> torch.Tensor:
    """The score of the detection in ``output`` that is the box ``box`` of class ``label``: its
    class score plus its IoU with ``box`` (differentiable), or 0 when no box of that class
    overlaps it more than ``iou_threshold``. Matched within the class (pytorch-grad-cam takes the
    best IoU over all classes first, then checks the class; they differ only when boxes of two
    classes tie)."""
    boxes, labels, scores = output["boxes"], output["labels"], output["scores"]
    zero = scores.sum() * 0 if scores.numel() else torch.zeros((), device=box.device)
    same = labels == label
    if not bool(same.any()):
        return zero
    ious = box_iou(box.to(boxes.dtype)[None], boxes)[0]
    ious = torch.where(same, ious, torch.full_like(ious, -1.0))
    k = int(ious.argmax())
    if float(ious[k].detach()) <= iou_threshold:
        return zero
    return scores[k] + ious[k]


def levels_of(output) -> list[torch.Tensor] | None:
    """The feature maps a layer produced: one tensor, or the tensors of a dict/list/tuple (FPN
    levels); ``None`` when it produced none."""
    if isinstance(output, torch.Tensor):
        return [output]
    items = list(output.values()) if isinstance(output, Mapping) else list(output) \
        if isinstance(output, (list, tuple)) else []
    found = [t for t in items if isinstance(t, torch.Tensor)]
    return found or None


def as_map(levels: Sequence[torch.Tensor], grads: Sequence[torch.Tensor] | None = None):
    """(activations, gradients) as (N, C, h, w) maps: one level as it is; several levels each
    resized to the coarsest grid (activations as absolute values, gradients times the
    activation's sign) and concatenated."""
    if len(levels) == 1:
        return levels[0], (grads[0] if grads is not None else None)
    grid = min((tuple(t.shape[-2:]) for t in levels), key=lambda s: s[0] * s[1])

    def resized(t):
        return t if tuple(t.shape[-2:]) == grid else F.interpolate(t, grid, mode="bilinear")
    acts = torch.cat([resized(t.abs()) for t in levels], 1)
    if grads is None:
        return acts, None
    return acts, torch.cat([resized(g * t.sign()) for t, g in zip(levels, grads)], 1)


class DetectionExplainer:
    """Explain batches of images through a detector, every kept box with every method at every layer."""

    def __init__(self, model: nn.Module, layers: Sequence[str], methods: Sequence[CAMMethod], labels: list[str],
                 score_threshold: float = 0.5, max_detections: int = 20, strict: bool = False) -> None:
        if not layers or not methods:
            raise UsageError("at least one layer and one method are needed")
        refused = [m.name for m in methods if not (m.layer_only or m.scores_passes == SCORED_PASSES)]
        if refused:
            fits = ", ".join(taking(SCORED_PASSES))
            raise UsageError(f"method(s) {', '.join(refused)} cannot explain a detector's boxes: they run forward "
                             "passes of their own or read a classifier's logits or weights, which camcli does not "
                             f"match to boxes; these can: {fits}")
        self.model = model
        self.layers = list(dict.fromkeys(layers))
        self.methods = list(methods)
        self.labels = labels
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        self.strict = strict
        self.needs_gradients = any(m.needs_gradients for m in self.methods)
        #: methods that forward ablated copies of each image (Ablation-CAM); the others read the shared pass
        self.ablating = [m for m in self.methods if m.scores_passes == SCORED_PASSES]
        self.channels: dict[str, int] = {}

    def map_keys(self) -> list[tuple[str, str]]:
        """(method, layer) of every map a box gets, in the order they come."""
        return [(m.name, layer) for m in self.methods for layer in self.layers]

    def validate(self, side: int, device: torch.device | str) -> None:
        """One dummy image through the detector: every layer must run and give feature maps."""
        x = torch.rand(3, side, side, generator=torch.Generator().manual_seed(0)).to(device)
        with torch.inference_mode():
            store, _outputs, _sizes = self._forward([x], graph=False)
        self.channels = {layer: int(as_map(levels)[0].shape[1]) for layer, levels in store.items()}

    def _forward(self, images: list[torch.Tensor], graph: bool):
        """The detector on ``images``: (layer -> its feature maps, the outputs, the transform's sizes)."""
        store: dict[str, list[torch.Tensor]] = {}
        sizes: dict[str, object] = {}
        handles = []

        def hook_for(layer: str):
            def hook(_module, _inputs, output):
                if layer in store:
                    raise UsageError(f"layer {display_name(layer)} runs more than once per forward: name one of "
                                     f"its calls, {display_name(layer)}#1, #2, ...")
                levels = levels_of(output)
                if levels is None or any(t.dim() != 4 for t in levels):
                    shapes = [tuple(t.shape) for t in levels or []]
                    raise UsageError(f"layer {display_name(layer)} of the detector gives no (N, C, h, w) feature map "
                                     f"(got {shapes or type(output).__name__}); its backbone or one of its blocks do")
                if graph:
                    levels = [t if t.requires_grad else t.requires_grad_(True) for t in levels]
                    copies = [t.clone() for t in levels]  # downstream in-place ops change the copies
                    store[layer] = levels
                    return _replaced(output, copies)
                store[layer] = levels
                return None
            return hook

        def sizes_hook(_module, _inputs, output):
            image_list = output[0]
            sizes["valid"] = [tuple(int(v) for v in s) for s in image_list.image_sizes]
            sizes["padded"] = tuple(int(v) for v in image_list.tensors.shape[-2:])
            # (top, left) of each image in the batch: torchvision's transforms put it at the top left
            sizes["offset"] = list(getattr(image_list, "image_offsets", None) or [(0, 0)] * len(sizes["valid"]))

        with removed_after(handles):
            for layer in self.layers:
                handles += hook_layer(self.model, layer, hook_for(layer))
            transform = getattr(self.model, "transform", None)
            if transform is not None:
                handles.append(transform.register_forward_hook(sizes_hook))
            outputs = self.model(images)
        missing = [display_name(l) for l in self.layers if l not in store]
        if missing:
            raise UsageError(f"layer(s) {', '.join(missing)} did not run during the forward pass")
        if not sizes:  # a detector without torchvision's transform: the layers saw the images as given
            sizes = {"valid": [tuple(x.shape[-2:]) for x in images],
                     "padded": tuple(max(x.shape[d] for x in images) for d in (-2, -1)),
                     "offset": [(0, 0)] * len(images)}
        return store, outputs, sizes

    def kept(self, output: Mapping[str, torch.Tensor]) -> list[int]:
        """Indices of the boxes explained in one image's output: score >= the threshold, best first."""
        scores = output["scores"].detach()
        order = torch.argsort(scores, descending=True, stable=True)
        keep = [int(i) for i in order if float(scores[i]) >= self.score_threshold]
        return keep[:self.max_detections]

    def __call__(self, images: list[torch.Tensor], wanted: Sequence[bool] | None = None,
                 seeds: Sequence[int] | None = None) -> list[ImageDetections]:
        """Explain a batch of (3, H, W) images in [0, 1]; ``wanted`` (one bool per image) leaves the
        maps of the others out (a resumed run's finished images).

        Images of one size go through the detector together; images of different sizes go in
        groups of their own size, because a detector pads a batch to its largest image: padding
        costs compute (a 4:1 panorama beside a square photo is mostly padding) and changes the
        detector's features near an image's border, so an image's boxes and maps would depend on
        the other images of its batch."""
        n = len(images)
        wanted = [True] * n if wanted is None else [bool(w) for w in wanted]
        groups: dict[tuple[int, ...], list[int]] = {}
        for j, x in enumerate(images):
            groups.setdefault(tuple(x.shape), []).append(j)
        results: list[ImageDetections | None] = [None] * n
        for members in groups.values():
            found = self._explain([images[j] for j in members], [wanted[j] for j in members],
                                  [seeds[j] for j in members] if seeds is not None else None)
            for j, image in zip(members, found):
                results[j] = image
        return results

    def _explain(self, images: list[torch.Tensor], wanted: list[bool], seeds) -> list[ImageDetections]:
        """:meth:`__call__` for images of one size: one forward, one backward per box rank."""
        with frozen_parameters(self.model), torch.inference_mode(not self.needs_gradients), \
                torch.set_grad_enabled(self.needs_gradients):
            if self.needs_gradients:
                images = [x.clone() for x in images]  # normal tensors, even if made in inference mode
            store, outputs, sizes = self._forward(images, graph=self.needs_gradients)
            chosen = [self.kept(o) if w else [] for o, w in zip(outputs, wanted)]
            maps: list[list[dict]] = [[{} for _ in c] for c in chosen]
            ranks = max((len(c) for c in chosen), default=0)
            free = [m for m in self.methods if not m.needs_gradients and m not in self.ablating]
            for layer in self.layers:
                acts, _ = as_map([t.detach() for t in store[layer]])
                for j, kept in enumerate(chosen):
                    if free and kept:
                        fp = self._pass(acts, None, layer, j, sizes, seeds)
                        for method in free:
                            self._keep(method, fp, layer, maps[j], range(len(kept)))
            if self.needs_gradients:
                for r in range(ranks):
                    present = [j for j, c in enumerate(chosen) if len(c) > r]
                    objective = sum(box_score(outputs[j], int(outputs[j]["labels"][chosen[j][r]]),
                                              outputs[j]["boxes"][chosen[j][r]].detach()) for j in present)
                    tensors = [t for layer in self.layers for t in store[layer]]
                    grads = torch.autograd.grad(objective, tensors, allow_unused=True, retain_graph=r < ranks - 1)
                    grads = [g if g is not None else torch.zeros_like(t) for t, g in zip(tensors, grads)]
                    k = 0
                    for layer in self.layers:
                        levels = store[layer]
                        acts, g = as_map([t.detach() for t in levels], grads[k:k + len(levels)])
                        k += len(levels)
                        for j in present:
                            fp = self._pass(acts, g, layer, j, sizes, seeds)
                            for method in self.methods:
                                if method.needs_gradients:
                                    self._keep(method, fp, layer, maps[j], [r])
        for method in self.ablating:
            for layer in self.layers:
                for j, kept in enumerate(chosen):
                    if kept:
                        self._ablation(method, layer, images[j], outputs[j], kept, maps[j])
        results = []
        for j, o in enumerate(outputs):
            detections = []
            o = {k: v.detach() for k, v in o.items() if isinstance(v, torch.Tensor)}
            for r, i in enumerate(chosen[j]):
                index = int(o["labels"][i])
                label = self.labels[index] if 0 <= index < len(self.labels) else f"class_{index}"
                detections.append(Detection(r + 1, index, label, float(o["scores"][i]),
                                            tuple(float(v) for v in o["boxes"][i].cpu())))
            ordered = [{key: m[key] for key in self.map_keys()} for m in maps[j]]  # in the order of map_keys
            results.append(ImageDetections(detections, ordered, sizes["valid"][j], sizes["padded"]))
        return results

    def _pass(self, acts: torch.Tensor, grads: torch.Tensor | None, layer: str, j: int, sizes: dict,
              seeds) -> ForwardPass:
        """Image ``j``'s pass for the methods: its activations (and gradients) on the cells that
        cover it, the batch's padding cut off, so that its map never depends on the other images'
        sizes (Grad-CAM's channel means, Eigen-CAM's components are taken over the image alone)."""
        rows, cols, extent = cells(acts.shape[-2:], sizes["valid"][j], sizes["padded"], sizes["offset"][j])
        acts = acts[j:j + 1, :, rows, cols]
        fp = ForwardPass(self.model, torch.zeros(1, 1, 1, 1), torch.zeros(1, 1), torch.zeros(1, dtype=torch.long),
                         {layer: acts}, {layer: grads[j:j + 1, :, rows, cols]} if grads is not None else {},
                         cache={"extent": extent})
        if seeds is not None:
            fp.seeds = [int(seeds[j])]
        return fp

    def _keep(self, method: CAMMethod, fp: ForwardPass, layer: str, maps: list[dict], ranks) -> None:
        """Run ``method`` on one image's ``fp`` and hand its map to that image's boxes of ``ranks``."""
        batch = method(fp, layer)
        checks = on_host(measure(method, layer, fp.activations[layer]))
        if self.strict:
            refuse_failed(method.name, layer, checks)
        failed = failures(checks, 0)
        entry = (batch.maps[0].detach().float().cpu(), bool(batch.empty[0]), failed, fp.cache["extent"])
        for r in ranks:
            maps[r][(method.name, layer)] = entry

    def _ablation(self, method: CAMMethod, layer: str, image: torch.Tensor, output: Mapping[str, torch.Tensor],
                  kept: list[int], maps: list[dict]) -> None:
        """Ablation-CAM for one image's boxes: every channel of the layer's map zeroed in turn (for
        FPN levels: that channel of its level), the detector run on the image alone with the
        ablated copies (``cam_batch_size`` a pass), and each channel weighted by the relative drop
        of each box's score, ``(y - y_k) / y``, with ``y`` from the image alone too; one set of
        passes serves all the image's boxes (found again in each output by :func:`box_score`)."""
        targets = [(int(output["labels"][i]), output["boxes"][i].detach()) for i in kept]
        with torch.inference_mode():
            store, outs, sizes = self._forward([image], graph=False)  # the image alone: the base scores and maps
            alone, maps_in = outs[0], store[layer]
            base = torch.tensor([float(box_score(alone, label, box)) for label, box in targets])
            which = [(level, c) for level, t in enumerate(maps_in) for c in range(t.shape[1])]
            ablated = torch.zeros(len(targets), len(which))
            current: list[tuple[int, int]] = []

            def hook(_module, _inputs, out):
                copies = [t.clone() for t in levels_of(out)]
                for b, (level, c) in enumerate(current):
                    copies[level][b, c] = 0
                return _replaced(out, copies)

            handles = hook_layer(self.model, layer, hook)
            try:
                for start in range(0, len(which), method.cam_batch_size):
                    current[:] = which[start:start + method.cam_batch_size]
                    for b, o in enumerate(self.model([image] * len(current))):
                        for r, (label, box) in enumerate(targets):
                            ablated[r, start + b] = float(box_score(o, label, box))
                    count_passes(len(current))
            finally:
                for h in handles:
                    h.remove()
            denom = torch.where(base.abs() > 1e-7, base, torch.full_like(base, 1e-7))[:, None]
            acts = as_map(maps_in)[0].float()  # (1, C, h, w) of the image alone, cut to its cells
            weights = ((base[:, None] - ablated) / denom).to(acts.device)
            rows, cols, extent = cells(acts.shape[-2:], sizes["valid"][0], sizes["padded"], sizes["offset"][0])
            batch = normalise((weights[:, :, None, None] * acts[:, :, rows, cols]).sum(1), relu=method.relu)
        for r in range(len(kept)):
            maps[r][(method.name, layer)] = (batch.maps[r].cpu(), bool(batch.empty[r]), (), extent)


def cells(grid: tuple[int, int], valid: tuple[int, int], padded: tuple[int, int],
          offset: tuple[int, int] = (0, 0)) -> tuple[slice, slice, tuple]:
    """The rows and columns of a layer's ``grid`` that cover an image of ``valid`` size whose top
    left corner lies at ``offset`` (top, left) in the ``padded`` batch, and ((h, w) of the detector's
    input those cells cover, (y, x) of the image's corner in that region)."""
    h, w = grid
    cell_h, cell_w = padded[0] / h, padded[1] / w
    top, left = (min(max(0, int(offset[0] * h // padded[0])), h - 1), min(max(0, int(offset[1] * w // padded[1])), w - 1))
    bottom = max(top + 1, min(h, -(-(offset[0] + valid[0]) * h // padded[0])))
    right = max(left + 1, min(w, -(-(offset[1] + valid[1]) * w // padded[1])))
    extent = ((bottom - top) * cell_h, (right - left) * cell_w)
    return slice(top, bottom), slice(left, right), (extent, (offset[0] - top * cell_h, offset[1] - left * cell_w))


def _replaced(output, copies: list[torch.Tensor]):
    """``output`` with its tensors replaced by ``copies``, in order, of the same container type."""
    if isinstance(output, torch.Tensor):
        return copies[0]
    it = iter(copies)
    if isinstance(output, Mapping):
        return type(output)((k, next(it) if isinstance(v, torch.Tensor) else v) for k, v in output.items())
    return type(output)(next(it) if isinstance(v, torch.Tensor) else v for v in output)
