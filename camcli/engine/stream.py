"""The stream at the heart of a run: images in, per-image explanations out, in input order.

Decoding and resizing happen in DataLoader workers; the main process normalises on the
device and runs the :class:`~camcli.engine.explainer.Explainer` once per batch. Maps stay at
the layer's resolution until someone asks for them full size. Nothing accumulates: memory is
bounded by the batches (by count and by bytes) and the workers' prefetch, whatever the folder's size.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from camcli.engine.detection import Detection
from camcli.engine.segmentation import Segment
from camcli.engine.explainer import Explainer
from camcli.engine.methods.assumptions import Assumption
from camcli.engine.methods.assumptions import failures as failed_at
from camcli.engine.methods.assumptions import on_host as on_host_checks
from camcli.engine.methods.base import stable_seed
from camcli.engine.framing import Frame, bilinear_weights, map_to_image
from camcli.engine.images import DEFAULT_MAX_PIXELS, Decoded, ImageDataset, ImageItem, collate
from camcli.engine.workers import bind_to_parent, own_temp_dir, shut_down
from camcli.engine.loaded import LoadedModel
from camcli.engine.tensors import upsample, uses_channels_last  # noqa: F401  (where callers found it)


@dataclass
class MapResult:
    """One heatmap of one image: a method at a layer.

    The map is kept at the layer's resolution; the full-size map (4 bytes per image pixel, 96 MB
    for a 24-megapixel photo) is made when asked for: :attr:`heatmap` keeps it, :meth:`upsampled`
    does not (the writer renders with it and lets it go).
    """

    method: str
    layer: str
    layer_map: np.ndarray  # (h, w) float32 in [0, 1] at the layer's resolution
    empty: bool  # no positive evidence: the map is all zeros
    size: tuple[int, int]  # (H, W) of the original image
    #: the method's assumptions that fail at this layer for this image, with the figure measured
    failures: tuple[tuple[Assumption, float], ...] = ()
    #: where the original lay in the model input (letterbox, crop); None: stretched over all of it
    frame: Frame | None = None
    input_size: tuple[int, int] | None = None  # (h, w) of the model input the frame refers to
    #: the class this map explains, and its reported value (several per image in multi-label runs)
    target_index: int | None = None
    target_label: str | None = None
    target_score: float | None = None
    #: the box this map explains (detection runs)
    detection: Detection | None = None
    #: the class found in the image that this map explains (segmentation runs)
    segment: Segment | None = None

    def upsampled(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """The map bilinearly upsampled to ``size`` (the original size by default), float32 in [0, 1]."""
        layer_map = torch.from_numpy(self.layer_map)
        if self.frame is None:
            return upsample(layer_map, size or self.size).numpy()
        return map_to_image(layer_map, self.frame, self.input_size, size or self.size).numpy()

    def row_reader(self, size: tuple[int, int] | None = None):
        """``read(top, bottom)``: rows of the map at ``size`` (the original size by default), made
        a strip at a time with separable bilinear weights, so the whole never exists at once;
        equal to :meth:`upsampled`'s rows up to float rounding."""
        size = size or self.size
        layer_map = torch.from_numpy(self.layer_map).float()
        frame = self.frame or Frame(0, 0, layer_map.shape[1], layer_map.shape[0])
        input_size = self.input_size if self.frame is not None else tuple(layer_map.shape)
        rows, across = bilinear_weights(layer_map, frame, input_size, size)

        def read(top: int, bottom: int) -> np.ndarray:
            return (rows[top:bottom] @ across).clamp_(0, 1).numpy()
        return read

    @cached_property
    def heatmap(self) -> np.ndarray:
        """(H, W) float32 in [0, 1] at the image's original size (made on first use, then kept)."""
        return self.upsampled()

    @property
    def warning(self) -> str:
        """The failed assumptions in words ("" when none failed)."""
        return "; ".join(a.describe(v) for a, v in self.failures)


@dataclass
class ImageResult:
    """Everything camcli learnt about one image. ``status`` is ``ok`` or ``error``."""

    item: ImageItem
    status: str
    error: str = ""
    note: str = ""
    width: int | None = None
    height: int | None = None
    image: np.ndarray | None = None  # original RGB uint8, upright
    pixels: torch.Tensor | None = None  # (3, h, w) uint8, the image as resized for the model
    topk: list[tuple[int, str, float]] = field(default_factory=list)  # (index, label, probability)
    target_index: int | None = None  # the first class explained (each map names its own)
    target_label: str | None = None
    target_score: float | None = None
    maps: list[MapResult] = field(default_factory=list)
    #: how many classes were explained (the maps are that many sets of method x layer)
    explained: int = 1
    #: the run may explain several classes per image: file names and rows name the class
    per_class: bool = False
    #: a detector's kept boxes, best first (``None``: not a detection run); each map names its box
    detections: list[Detection] | None = None
    #: a segmenter's classes found, largest first (``None``: not a segmentation run); each map names its class
    segments: list[Segment] | None = None
    #: the segmenter's predicted labels (:class:`~camcli.engine.segmentation_stream.LabelGrid`)
    label_grid: object | None = None

    @property
    def pred_index(self) -> int | None:
        return self.topk[0][0] if self.topk else None

    @property
    def pred_label(self) -> str | None:
        return self.topk[0][1] if self.topk else None

    @property
    def score(self) -> float | None:
        return self.topk[0][2] if self.topk else None


def iter_results(loaded: LoadedModel, explainer: Explainer, items: Sequence[ImageItem], *,
                 batch_size: int = 16, workers: int = 0, device: torch.device | str = "cpu",
                 target: int | None = None, topk: int = 5, max_pixels: int = DEFAULT_MAX_PIXELS,
                 skip: Collection[str] = frozenset(), batches: Sequence[Sequence[ImageItem]] | None = None,
                 prefetch: int = 2, resize: str = "stretch", seed: int = 0) -> Iterator[ImageResult]:
    """Explain ``items`` batch by batch and yield one :class:`ImageResult` per item, in order.

    ``batches`` (consecutive runs of ``items``, see :mod:`camcli.engine.batching`) replaces
    ``batch_size``; ``prefetch`` is how many batches each loader worker prepares ahead;
    ``resize`` is how each image is fitted to the input (:mod:`camcli.engine.framing`).
    Items whose ``rel`` is in ``skip`` still go through the shared forward with their batch (a
    resumed run keeps batches as they were), but nothing else is done for them and they are
    not yielded: per-image methods (Score-CAM, Ablation-CAM) leave them out, and their maps are
    neither upsampled nor copied.
    """
    device = torch.device(device)
    items = list(items)
    loader = image_loader(loaded, items, batch_size, batches, workers, device, max_pixels, prefetch, resize)
    mean = torch.tensor(loaded.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(loaded.std, device=device).view(1, 3, 1, 1)
    k = max(1, min(topk, len(labels_of(explainer, loaded))))
    nhwc = uses_channels_last(loaded.model)
    if not items:
        return
    batches_in = iter(loader)
    try:
        for batch in batches_in:
            yield from _explain_batch(batch, loaded, explainer, device, mean, std, target, k, nhwc, skip, seed)
    finally:  # also when a stop interrupts next() inside the loader: its workers end now, not at exit
        shut_down(batches_in)


def image_loader(loaded: LoadedModel, items: list[ImageItem], batch_size: int,
                 batches: Sequence[Sequence[ImageItem]] | None, workers: int, device: torch.device, max_pixels: int,
                 prefetch: int, resize: str) -> torch.utils.data.DataLoader:
    """Batches of :class:`Decoded` records, decoded and fitted in ``workers`` processes
    (``resize`` none: the images as they are, for models that fit them themselves)."""
    if batches is None:
        batches = [items[k:k + max(1, batch_size)] for k in range(0, len(items), max(1, batch_size))]
    position = {id(item): k for k, item in enumerate(items)}
    if workers > 0:
        own_temp_dir()
    return torch.utils.data.DataLoader(
        ImageDataset(items, loaded.input_size, max_pixels, resize,
                     tuple(int(round(255 * m)) for m in loaded.mean), loaded.crop_fraction),
        batch_sampler=[[position[id(i)] for i in batch] for batch in batches],
        num_workers=max(0, workers), collate_fn=collate, pin_memory=device.type == "cuda",
        prefetch_factor=max(1, prefetch) if workers > 0 else None,
        worker_init_fn=functools.partial(bind_to_parent, os.getpid()) if workers > 0 else None)


def labels_of(explainer: Explainer, loaded: LoadedModel) -> list[str]:
    """Names of the target's classes: its own (the binary head's two sides, a similarity's
    reference), else the model's."""
    return explainer.target.labels or loaded.labels


def image_seed(seed: int, rel: str) -> int:
    """A 63-bit seed from the run's ``seed`` and the image's relative path: the same image gets
    the same random numbers whatever its batch, shard or resume."""
    return stable_seed(f"{seed}\0{rel}".encode())


def model_input(decoded: Sequence[Decoded], device: torch.device, mean: torch.Tensor, std: torch.Tensor,
                nhwc: bool) -> torch.Tensor:
    """The batch as the model takes it: the fitted uint8 pixels stacked, moved to ``device``
    (pinned first on CUDA), scaled to [0, 1] and normalised; channels-last for NHWC models."""
    pixels = torch.stack([d.pixels for d in decoded])
    if device.type == "cuda":
        pixels = pixels.pin_memory()
    x = (pixels.to(device, non_blocking=True).float().div_(255) - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if nhwc else x


#: the error row of an image whose model output holds NaN or infinite values
NOT_FINITE = ("the model's output is not finite (NaN or infinite scores): check the checkpoint's weights and the "
              "input normalisation (mean, std)")


def _explain_batch(batch: list[Decoded], loaded: LoadedModel, explainer: Explainer, device: torch.device,
                   mean: torch.Tensor, std: torch.Tensor, target: int | None, k: int, nhwc: bool,
                   skip: Collection[str] = frozenset(), seed: int = 0) -> Iterator[ImageResult]:
    good = [d for d in batch if not d.error]
    results: dict[int, ImageResult] = {}
    labels = labels_of(explainer, loaded)
    if good:
        x = model_input(good, device, mean, std, nhwc)
        wanted = [d.item.rel not in skip for d in good]
        seeds = [image_seed(seed, d.item.rel) for d in good]
        try:
            exp = explainer(x, target, wanted=None if all(wanted) else wanted, seeds=seeds)
            # the classes each image explains; the first is the one just explained
            chosen = (explainer.target.choose(exp.logits) if target is None
                      else [([int(t)], "") for t in exp.targets.cpu().tolist()])
            slots = [exp]
            for s in range(1, max(len(c) for c, _ in chosen)):
                present = [len(c) > s and w for (c, _), w in zip(chosen, wanted)]
                if not any(present):
                    slots.append(None)
                    continue
                classes = torch.tensor([c[s] if len(c) > s else c[0] for c, _ in chosen], device=exp.logits.device)
                slots.append(explainer.further(exp, x, classes, wanted=present, seeds=seeds))
        except (RuntimeError, ValueError) as e:  # e.g. out of memory: the batch fails, the run goes on
            reason = f"model failed on this batch: {str(e).splitlines()[0]}"
            for d in good:
                results[d.item.index] = ImageResult(d.item, "error", error=reason)
        else:
            probs, idx = exp.probs.topk(k, dim=1)
            probs, idx = probs.cpu().tolist(), idx.cpu().tolist()
            values = exp.probs.cpu().tolist()
            # one device-to-host copy per batch and slot, not one per image
            on_host = [{key: (mb.maps.cpu().numpy(), mb.empty.cpu().tolist()) for key, mb in e.maps.items()}
                       if e is not None else {} for e in slots]
            checks = [{key: on_host_checks(found) for key, found in e.checks.items()} if e is not None else {}
                      for e in slots]
            finite = torch.isfinite(exp.logits.reshape(len(good), -1)).all(1).cpu().tolist()
            for i, d in enumerate(good):
                if d.item.rel in skip:
                    continue
                if not finite[i]:  # NaN weights or an overflow: no score or map of it means anything
                    results[d.item.index] = ImageResult(d.item, "error", error=NOT_FINITE)
                    continue
                h, w = d.original.shape[:2]
                classes, why = chosen[i]
                maps = []
                for s, t in enumerate(classes):
                    for method, layer in exp.maps:
                        small, empty = on_host[s][(method, layer)]
                        failures = failed_at(checks[s].get((method, layer), []), i)
                        maps.append(MapResult(method, layer, small[i], bool(empty[i]), (h, w), failures, d.frame,
                                              loaded.input_size, t, labels[t], values[i][t]))
                t = classes[0]
                note = "; ".join(n for n in (d.note, why) if n)
                results[d.item.index] = ImageResult(
                    d.item, "ok", note=note, width=w, height=h, image=d.original, pixels=d.pixels,
                    topk=[(c, labels[c], p) for c, p in zip(idx[i], probs[i])],
                    target_index=t, target_label=labels[t], target_score=values[i][t], maps=maps,
                    explained=len(classes), per_class=explainer.target.several)
    for d in batch:
        if d.item.rel in skip:
            continue
        if d.error:
            yield ImageResult(d.item, "error", error=d.error)
        else:
            yield results[d.item.index]
