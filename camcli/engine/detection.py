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

from camcli.engine.capture import capture, removed_after
from camcli.engine.layer_names import display_name, hook_layer
from camcli.engine.methods import CAMMethod
from camcli.engine.methods.base import ForwardPass, normalise
from camcli.engine.task_explainer import TaskExplainer, check_ran
from camcli.engine.tensors import replace_tensors, tensors_of
from camcli.errors import UsageError

#: IoU above which a box of a new forward is the same detection (pytorch-grad-cam's default)
IOU_THRESHOLD = 0.5
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
    from torchvision.ops import box_iou  # here: torchvision.ops loads torch._dynamo (camcli.models.kinds)

    ious = box_iou(box.to(boxes.dtype)[None], boxes)[0]
    ious = torch.where(same, ious, torch.full_like(ious, -1.0))
    k = int(ious.argmax())
    if float(ious[k].detach()) <= iou_threshold:
        return zero
    return scores[k] + ious[k]


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


class DetectionExplainer(TaskExplainer):
    """Explain batches of images through a detector, every kept box with every method at every layer."""

    scored_passes = SCORED_PASSES
    explains = "a detector's boxes"
    why_not = ("they run forward passes of their own or read a classifier's logits or weights, which camcli does "
               "not match to boxes")

    def __init__(self, model: nn.Module, layers: Sequence[str], methods: Sequence[CAMMethod], labels: list[str],
                 score_threshold: float = 0.5, max_detections: int = 20, strict: bool = False) -> None:
        super().__init__(model, layers, methods, strict)
        self.labels = labels
        self.score_threshold = score_threshold
        self.max_detections = max_detections

    def validate(self, side: int, device: torch.device | str) -> None:
        """One dummy image through the detector: every layer must run and give feature maps."""
        x = torch.rand(3, side, side, generator=torch.Generator().manual_seed(0)).to(device)
        with torch.inference_mode():
            store, _outputs, _sizes = self._forward([x], graph=False)
        self.channels = {layer: int(as_map(levels)[0].shape[1]) for layer, levels in store.items()}

    def _forward(self, images: list[torch.Tensor], graph: bool):
        """The detector on ``images``: (layer -> its feature maps, the outputs, the transform's sizes)."""
        sizes: dict[str, object] = {}

        def sizes_hook(_module, _inputs, output):
            image_list = output[0]
            sizes["valid"] = [tuple(int(v) for v in s) for s in image_list.image_sizes]
            sizes["padded"] = tuple(int(v) for v in image_list.tensors.shape[-2:])
            # (top, left) of each image in the batch: torchvision's transforms put it at the top left
            sizes["offset"] = list(getattr(image_list, "image_offsets", None) or [(0, 0)] * len(sizes["valid"]))

        transform = getattr(self.model, "transform", None)
        with capture(self.model, self.layers, graph, levels=True) as store, \
                removed_after([transform.register_forward_hook(sizes_hook)] if transform is not None else []):
            outputs = self.model(images)
        check_ran(store, self.layers)
        for layer, levels in store.items():
            if not levels or any(t.dim() != 4 for t in levels):
                shapes = [tuple(t.shape) for t in levels]
                raise UsageError(f"layer {display_name(layer)} of the detector gives no (N, C, h, w) feature map "
                                 f"(got {shapes or 'no tensor'}); its backbone or one of its blocks do")
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
        with self.explaining():
            if self.needs_gradients:
                images = [x.clone() for x in images]  # normal tensors, even if made in inference mode
            store, outputs, sizes = self._forward(images, graph=self.needs_gradients)
            chosen = [self.kept(o) if w else [] for o, w in zip(outputs, wanted)]
            maps: list[list[dict]] = [[{} for _ in c] for c in chosen]
            ranks = max((len(c) for c in chosen), default=0)
            for layer in self.layers:
                acts, _ = as_map([t.detach() for t in store[layer]])
                for j, kept in enumerate(chosen):
                    if self.free and kept:
                        fp = self._pass(acts, None, layer, j, sizes, seeds)
                        for method in self.free:
                            self._keep(method, fp, layer, maps[j], range(len(kept)))
            if self.needs_gradients:
                def objective(r: int) -> torch.Tensor:  # the r-th box of every image that has one
                    return sum(box_score(outputs[j], int(outputs[j]["labels"][c[r]]), outputs[j]["boxes"][c[r]].detach())
                               for j, c in enumerate(chosen) if len(c) > r)

                tensors = [t for layer in self.layers for t in store[layer]]
                for r, grads in self.ranked_gradients(tensors, objective, ranks):
                    k = 0
                    for layer in self.layers:
                        levels = store[layer]
                        acts, g = as_map([t.detach() for t in levels], grads[k:k + len(levels)])
                        k += len(levels)
                        for j, c in enumerate(chosen):
                            if len(c) > r:
                                fp = self._pass(acts, g, layer, j, sizes, seeds)
                                for method in self.methods:
                                    if method.needs_gradients:
                                        self._keep(method, fp, layer, maps[j], [r])
        for method in self.scoring:
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
        entry = (*self.host_maps(method, fp, layer).entry(0), fp.cache["extent"])
        for r in ranks:
            maps[r][(method.name, layer)] = entry

    def _ablation(self, method: CAMMethod, layer: str, image: torch.Tensor, output: Mapping[str, torch.Tensor],
                  kept: list[int], maps: list[dict]) -> None:
        """Ablation-CAM for one image's boxes (:meth:`AblationCAM.drops <camcli.engine.methods.ablationcam.
        AblationCAM.drops>`): every channel of the layer's map zeroed in turn (for FPN levels: that
        channel of its level), the detector run on the image alone with the ablated copies, and each
        channel weighted by the relative drop of each box's score, with the base scores from the image
        alone too; one set of passes serves all the image's boxes (found again in each output by
        :func:`box_score`)."""
        targets = [(int(output["labels"][i]), output["boxes"][i].detach()) for i in kept]

        def scores(out) -> list[float]:
            return [float(box_score(out, label, box)) for label, box in targets]

        with torch.inference_mode():
            store, outs, sizes = self._forward([image], graph=False)  # the image alone: the base scores and maps
            maps_in = store[layer]
            which = [(level, c) for level, t in enumerate(maps_in) for c in range(t.shape[1])]
            current: list[tuple[int, int]] = []

            def hook(_module, _inputs, out):
                copies = [t.clone() for t in tensors_of(out)]
                for b, (level, c) in enumerate(current):
                    copies[level][b, c] = 0
                return replace_tensors(out, copies)

            def ablated_scores(ks: torch.Tensor) -> torch.Tensor:
                current[:] = [which[int(k)] for k in ks]
                return torch.tensor([scores(o) for o in self.model([image] * len(current))])

            with removed_after(hook_layer(self.model, layer, hook)):
                weights = method.drops(torch.tensor(scores(outs[0])), len(which), ablated_scores)
            acts = as_map(maps_in)[0].float()  # (1, C, h, w) of the image alone, cut to its cells
            rows, cols, extent = cells(acts.shape[-2:], sizes["valid"][0], sizes["padded"], sizes["offset"][0])
            batch = normalise((weights.to(acts.device)[:, :, None, None] * acts[:, :, rows, cols]).sum(1),
                              relu=method.relu)
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
