"""Segmenters: one forward per batch, one partial backward per class rank, a map for every class found.

A semantic segmenter scores every class at every pixel. A class is *found* in an image when its
predicted mask (the pixels where it scores highest) covers at least ``min_area`` of the image;
the background only when asked. Each found class is explained through pytorch-grad-cam's
``SemanticSegmentationTarget``: the sum of its scores (the logits, as the model returns them)
over its predicted mask, or over a region the user gives instead. The masks come from the
shared forward and are held fixed, so one forward serves every class: the r-th classes
(largest mask first) of all images share the r-th backward, taken with respect to the target
layers only (images are independent in a segmenter's batch).

A single-channel binary segmenter (one logit ``z`` per pixel) reads as two classes, ``[-z, z]``:
the negative side (the background) and the positive; one that ends in its own Sigmoid gives
probabilities, read as ``[1 - p, p]`` and never squashed twice.

Methods: those that make their map from the layer alone (``layer_only``: Grad-CAM and its
element-wise and eigen kin) read the shared pass; Score-CAM and its averaged variants forward
masked copies of the image and score each with the same target (the class's mask from the
original image, held fixed). The others read a classifier's weights or logits, or take
gradients to the pixels through passes of their own, and are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from camcli.engine.capture import capture
from camcli.engine.layouts import Layout, decide_layouts
from camcli.engine.methods import CAMMethod, taking
from camcli.engine.methods.base import ForwardPass
from camcli.engine.targets import select_output
from camcli.engine.task_explainer import TaskExplainer
from camcli.errors import UsageError

#: the passes of a method's own that a class's region score is taken on (the Score-CAM family's masked inputs)
SCORED_PASSES = "masked"


@dataclass(frozen=True)
class Segment:
    """One class found in an image, and what its map explains."""

    rank: int  # 1 for the class with the largest mask in its image
    index: int
    label: str
    pixel_share: float  # share of the image's pixels predicted as this class
    probability: float  # the class's mean probability over its predicted mask (0 when it has none)
    #: what the score sums over: ``None`` the class's own mask, else the region's name
    region: str | None = None


@dataclass
class ImageSegments:
    """What a batch gave one image: the classes found, the predicted label of every output
    pixel, and one map per class x method x layer."""

    segments: list[Segment]
    labels: torch.Tensor  # (h, w) predicted class per pixel of the output grid (it covers the model input); (d, h, w) per voxel
    #: per segment: (method, layer) -> ((h, w) map in [0, 1], empty, failed assumptions)
    maps: list[dict[tuple[str, str], tuple[torch.Tensor, bool, tuple]]]
    note: str = ""


class SegmentationHead:
    """How a segmenter's output is read: its (N, K, h, w) class scores per pixel (the ``out`` of
    torchvision's dict, the ``logits`` of HuggingFace's output, or the part ``output`` names), as a
    table with one channel per class (a binary segmenter's one channel made two). A 3D segmenter's
    are (N, K, d, h, w), per voxel: ``dims`` says which the model's input is."""

    def __init__(self, output: str | None = None, squashed: bool = False, dims: int = 2) -> None:
        self.output = output
        self.squashed = squashed  # the model ends in its own Sigmoid/Softmax: its outputs are probabilities
        self.dims = dims  # 2: scores per pixel; 3: per voxel
        self.binary = False  # one channel per pixel (known once the output is seen)
        self.grid: tuple[int, ...] = ()  # (h, w) or (d, h, w) of the output (known once seen)

    @classmethod
    def read(cls, model: nn.Module, input_size: tuple[int, ...], device: torch.device | str,
             output: str | None = None, squashed: bool = False, channels: int = 3) -> SegmentationHead:
        """The head of ``model``, its width and grid read from one dummy input (an image, or a
        volume when ``input_size`` has three sides): whether it is binary decides the labels, so
        it is read before the explainer is built."""
        head = cls(output, squashed, dims=len(input_size))
        with torch.inference_mode():
            head.seen(head.scores(model(dummy_image(input_size, device, channels))))
        return head

    def seen(self, scores: torch.Tensor) -> None:
        """Record what the output ``scores`` (N, C, h, w) says of the head: binary or not, its grid."""
        self.binary = scores.shape[1] == 1
        self.grid = tuple(int(v) for v in scores.shape[2:])

    def scores(self, output) -> torch.Tensor:
        """(N, C, h, w) float: the model's class scores per pixel (per voxel: (N, C, d, h, w)), as it gives them."""
        if self.output is None and isinstance(output, dict) and "out" in output:
            t = output["out"]
        else:
            t = select_output(output, self.output)
        if t.dim() != 2 + self.dims:
            grid, unit = ("d, h, w", "voxel") if self.dims == 3 else ("h, w", "pixel")
            raise UsageError(f"the segmenter's output is {tuple(t.shape)}, not (N, classes, {grid}) scores per {unit}: "
                             f"pick its per-{unit} scores with `output`")
        return t.float()

    def table(self, output) -> torch.Tensor:
        """(N, K, h, w): one channel per class; a binary segmenter's ``z`` as ``[-z, z]`` (``[1 - p, p]``)."""
        t = self.scores(output)
        if t.shape[1] == 1:
            return torch.cat([1 - t, t], 1) if self.squashed else torch.cat([-t, t], 1)
        return t

    def probabilities(self, table: torch.Tensor) -> torch.Tensor:
        """(N, K, h, w) probabilities: a softmax over classes, the sigmoid of a binary table's sides,
        or the model's own."""
        if self.squashed:
            return table
        return table.sigmoid() if self.binary else table.softmax(1)


class RegionScore:
    """pytorch-grad-cam's ``SemanticSegmentationTarget`` for one image: ``table[c] * mask`` summed,
    the mask fixed; called on a model output of masked copies of that image (Score-CAM)."""

    def __init__(self, head: SegmentationHead, mask: torch.Tensor) -> None:
        self.head, self.mask = head, mask

    def __call__(self, output, index: torch.Tensor) -> torch.Tensor:
        table = self.head.table(output)
        rows = table[torch.arange(table.shape[0], device=table.device), index.to(table.device).long()]
        return (rows * self.mask.to(rows.dtype)).flatten(1).sum(1)


class SegmentationExplainer(TaskExplainer):
    """Explain batches through a segmenter, every class found with every method at every layer."""

    scored_passes = SCORED_PASSES
    explains = "a segmenter's classes"
    why_not = ("they read a classifier's weights or logits, or take gradients to the pixels through passes of "
               "their own")

    def __init__(self, model: nn.Module, layers: Sequence[str], methods: Sequence[CAMMethod], labels: list[str],
                 min_area: float = 0.01, background: bool = False, classes: Sequence[int] = (),
                 output: str | None = None, squashed: bool = False, strict: bool = False,
                 background_index: int | None = None, layer_layout: str = "auto",
                 head: SegmentationHead | None = None) -> None:
        super().__init__(model, layers, methods, strict)
        self.labels = list(labels)  # a binary segmenter's: its two sides (read the head first, `SegmentationHead.read`)
        self.min_area = min_area
        self.background = background
        self.classes = tuple(classes)
        self.head = head if head is not None else SegmentationHead(output, squashed)
        self.background_index = background_index
        self.layer_layout = layer_layout
        self.layouts: dict[str, Layout] = {}

    @property
    def grid(self) -> tuple[int, ...]:
        """(h, w) of the segmenter's output (a 3D one's (d, h, w)): regions are sampled onto it."""
        return self.head.grid

    def validate(self, input_size: tuple[int, ...], device: torch.device | str, channels: int = 3) -> None:
        """One dummy input: the output must be per-pixel scores for the labels, every layer a map."""
        x = dummy_image(input_size, device, channels)
        self.layouts = decide_layouts(self.model, self.layers, x, self.layer_layout)
        with torch.inference_mode(), capture(self.model, self.layers, False, lambda l, t: self.layouts[l]) as store:
            scores = self.head.scores(self.model(x))
        if not self.head.grid:  # not read before (a Python caller's explainer): read on this pass
            self.head.seen(scores)
        if scores.shape[1] != len(self.labels) and not (self.head.binary and len(self.labels) == 2):
            raise UsageError(f"the segmenter scores {scores.shape[1]} classes per pixel but has {len(self.labels)} "
                             "labels")
        self.channels = {layer: int(store[layer].shape[1]) for layer in self.layers}

    def found(self, table: torch.Tensor, pred: torch.Tensor,
              region: torch.Tensor | None) -> tuple[list[tuple[int, float, float]], str]:
        """One image's classes to explain, largest mask first: (class, pixel share, mean probability),
        and a note when none is. ``table``: (K, h, w), detached; ``pred``: its (h, w) argmax;
        ``region``: (h, w) bool or None."""
        k = table.shape[0]
        counts = torch.bincount(pred.flatten(), minlength=k).float()
        shares = (counts / pred.numel()).tolist()
        probs = self.head.probabilities(table[None])[0]
        candidates = list(self.classes) or [c for c in range(k) if c != self.background_index or self.background]
        if region is not None:
            inside = torch.bincount(pred[region].flatten(), minlength=k).float() / max(1, int(region.sum()))
            area = inside.tolist()
        else:
            area = shares
        # a class named with `target` is explained over a region whether or not it is predicted there
        chosen = [c for c in candidates
                  if (area[c] > 0 and area[c] >= self.min_area) or (self.classes and region is not None)]
        chosen.sort(key=lambda c: (-shares[c], c))
        out = []
        for c in chosen:
            mask = pred == c
            mean = float(probs[c][mask].mean()) if bool(mask.any()) else 0.0
            out.append((c, shares[c], mean))
        note = ""
        if not out:
            where = "the region" if region is not None else "the image"
            which = f"none of {', '.join(self._label(c) for c in self.classes)}" if self.classes else "no class"
            note = (f"{which} covers {100 * self.min_area:g}% of {where} or more"
                    + ("" if self.background or self.classes or self.background_index is None
                       else " (the background is explained only with `background`)"))
        return out, note

    def __call__(self, x: torch.Tensor, wanted: Sequence[bool] | None = None, seeds: Sequence[int] | None = None,
                 regions: Sequence[tuple[torch.Tensor, str] | None] | None = None) -> list[ImageSegments]:
        """Explain a batch of preprocessed (N, 3, H, W) images; ``wanted`` leaves the others'
        maps out (a resumed run's finished images); ``regions``: per image, a (h, w) bool mask on
        the output's grid and its name, or ``None`` for each class's own mask."""
        n = x.shape[0]
        wanted = [True] * n if wanted is None else [bool(w) for w in wanted]
        regions = list(regions) if regions is not None else [None] * n
        with self.explaining(), capture(self.model, self.layers, self.needs_gradients,
                                        lambda l, t: self.layouts[l]) as store:
            if self.needs_gradients:
                x = x.clone()  # a normal tensor, even if made in inference mode
            table = self.head.table(self.model(x))
            found = table.detach()
            preds = found.argmax(1)  # (N, h, w): each pixel's predicted class
            chosen, notes, masks = [], [], []
            for i in range(n):
                region = regions[i][0].to(found.device) if regions[i] is not None else None
                picked, note = self.found(found[i], preds[i], region) if wanted[i] else ([], "")
                chosen.append(picked)
                notes.append(note)
                masks.append([(region if region is not None else preds[i] == c).float() for c, _, _ in picked])
            maps: list[list[dict]] = [[{} for _ in c] for c in chosen]
            ranks = max((len(c) for c in chosen), default=0)
            acts = {layer: store[layer].detach() for layer in self.layers}
            if self.free and ranks:
                fp = self._pass(x, acts, {}, seeds)
                for method in self.free:
                    self._keep(method, fp, maps, [(i, r) for i, c in enumerate(chosen) for r in range(len(c))])
            if self.needs_gradients:
                def objective(r: int) -> torch.Tensor:  # the r-th class of every image that has one
                    return sum((table[i, chosen[i][r][0]] * masks[i][r]).sum() for i in range(n) if len(chosen[i]) > r)

                for r, grads in self.ranked_gradients([store[l] for l in self.layers], objective, ranks):
                    fp = self._pass(x, acts, dict(zip(self.layers, grads)), seeds)
                    present = [(i, r) for i, c in enumerate(chosen) if len(c) > r]
                    for method in self.methods:
                        if method.needs_gradients:
                            self._keep(method, fp, maps, present)
        for method in self.scoring:
            for i, picked in enumerate(chosen):
                for r, (c, _, _) in enumerate(picked):
                    fp = ForwardPass(self.model, x[i:i + 1].detach(), torch.zeros(1, 1),
                                     torch.tensor([c], device=x.device), {l: a[i:i + 1] for l, a in acts.items()},
                                     target=RegionScore(self.head, masks[i][r]))
                    if seeds is not None:
                        fp.seeds = [int(seeds[i])]
                    for layer in self.layers:
                        self._keep(method, fp, maps, [(0, r)], layer=layer, rows={0: i})
        results = []
        labels = preds.to(torch.int16).cpu()  # one copy to the host for the batch
        for i in range(n):
            name = regions[i][1] if regions[i] is not None else None
            segments = [Segment(r + 1, c, self._label(c), share, prob, name)
                        for r, (c, share, prob) in enumerate(chosen[i])]
            ordered = [{key: m[key] for key in self.map_keys()} for m in maps[i]]
            results.append(ImageSegments(segments, labels[i], ordered, notes[i]))
        return results

    def _label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"class_{index}"

    def _pass(self, x: torch.Tensor, acts: dict, grads: dict, seeds) -> ForwardPass:
        n = x.shape[0]
        fp = ForwardPass(self.model, x.detach(), torch.zeros(n, 1), torch.zeros(n, dtype=torch.long, device=x.device),
                         acts, grads, layouts=dict(self.layouts))
        if seeds is not None:
            fp.seeds = [int(s) for s in seeds]
        return fp

    def _keep(self, method: CAMMethod, fp: ForwardPass, maps: list[list[dict]], where: list[tuple[int, int]],
              layer: str | None = None, rows: dict[int, int] | None = None) -> None:
        """Run ``method`` on ``fp`` at each layer (or ``layer``) and hand row ``i``'s map to
        segment ``r`` of image ``rows[i]`` (the row itself by default), for each (i, r) of ``where``."""
        for name in [layer] if layer is not None else self.layers:
            found = self.host_maps(method, fp, name, sorted({i for i, _ in where}))
            for i, r in where:
                maps[rows[i] if rows else i][r][(method.name, name)] = found.entry(i)


def dummy_image(input_size: tuple[int, ...], device: torch.device | str, channels: int = 3) -> torch.Tensor:
    """The seeded (1, 3, H, W) image the checks before a run go through ((1, C, D, H, W) for a volume)."""
    return torch.rand(1, channels, *input_size, generator=torch.Generator().manual_seed(0)).to(device)


def segmentation_methods() -> list[str]:
    """The methods that explain a segmenter's classes."""
    return taking(SCORED_PASSES)

