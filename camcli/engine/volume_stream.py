"""Scans through a volume model: read, made the model's input, explained a batch at a time.

Each scan is read into RAS+ order (:mod:`~camcli.engine.scans`), its values windowed or scaled
(:mod:`~camcli.engine.intensity`), resampled trilinearly to the model's input cube, and stacked
with the others of its batch: one forward and one partial backward serve every method at every
layer, as for images. A scan that cannot be read, or a folder holding several series, becomes an
error result with its reason; the run goes on.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from camcli.engine.discovery import ImageItem
from camcli.engine.explainer import Explainer
from camcli.engine.intensity import fitted, scaled, shrunk, window_of, windowed
from camcli.engine.loaded import LoadedModel
from camcli.engine.methods.assumptions import failures as failed_at
from camcli.engine.methods.assumptions import on_host as on_host_checks
from camcli.engine.scans import Grid, Scan, read_scan
from camcli.engine.segmentation import Segment, SegmentationExplainer
from camcli.engine.stream import NOT_FINITE, ImageResult, image_seed
from camcli.engine.workers import bind_to_parent, own_temp_dir, shut_down
from camcli.errors import UsageError


@dataclass
class VolumeMap:
    """One method x layer's map of a scan, at the layer's resolution (d, h, w) on the RAS grid."""

    method: str
    layer: str
    small: np.ndarray
    empty: bool
    failures: tuple = ()
    segment: Segment | None = None  # a 3D segmenter's class this map explains

    @property
    def warning(self) -> str:
        return "; ".join(f"{a.name}: {a.describe(v)}" for a, v in self.failures)


@dataclass
class VolumeResult(ImageResult):
    """What camcli learnt about one scan: the :class:`ImageResult` fields (``maps`` holds
    :class:`VolumeMap` items), where the scan's voxels lie, and its values for pictures (at most
    :data:`DISPLAY_SIDE` a side: a batch of CTs is not kept whole while it is explained)."""

    grid: Grid | None = None
    display: np.ndarray | None = None  # (x, y, z) in [0, 1] on the RAS grid, shrunk from the scan's shape
    #: a 3D segmenter's predicted class per voxel of its output grid (which covers the whole scan)
    labels: np.ndarray | None = None
    #: the resampling to the model's input: its voxels per scan voxel along each RAS axis
    factors: tuple[float, ...] = ()


#: the most voxels a side of the values kept for a scan's pictures (a picture's plane is 256 pixels)
DISPLAY_SIDE = 256


class _Read(NamedTuple):
    """One item of a batch as read: its grid, the model's input and the values for its pictures,
    or why it could not be read."""

    item: ImageItem
    grid: Grid | None = None
    x: torch.Tensor | None = None
    display: np.ndarray | None = None
    error: str = ""
    factors: tuple[float, ...] = ()  # the model's input voxels per scan voxel, along each RAS axis


def prepared(scan: Scan, size: tuple[int, ...], channels: int, window: str | None,
             scaling: str) -> tuple[torch.Tensor, np.ndarray, tuple[float, ...]]:
    """The scan as the model's input (channels, *size): windowed or scaled, resampled (the input
    cube covers the whole scan, so a map is brought back by resizing it to the scan's shape); and
    its values for pictures, shrunk to :data:`DISPLAY_SIDE` first, then windowed, or else scaled by
    percentiles (a z-scored scan is no picture); and the resampling's factor per RAS axis. The
    scan's voxels are scaled in place: the
    stream reads each scan for this alone, and a CT's copy would cost another 420 MB."""
    small = shrunk(scan.voxels, DISPLAY_SIDE)
    if window:
        display = windowed(small, *window_of(window), in_place=True)
        values = windowed(scan.voxels, *window_of(window), in_place=True)
    else:
        display = scaled(small, "percentiles", in_place=True)
        values = scaled(scan.voxels, scaling, in_place=True)
    tensor, factors = fitted(values, size)
    return tensor.expand(channels, *tensor.shape[1:]), display, factors


class ScanDataset(torch.utils.data.Dataset):
    """Scans read and made the model's input, in the loader's worker processes when it has some
    (reading a gzipped NIfTI, reorienting and scaling it is most of a small model's time)."""

    def __init__(self, items: Sequence[ImageItem], size: tuple[int, ...], channels: int, window: str | None,
                 scaling: str) -> None:
        self.items, self.size, self.channels, self.window, self.scaling = list(items), size, channels, window, scaling

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> _Read:
        return _read(self.items[k], self.size, self.channels, self.window, self.scaling)


def iter_volumes(loaded: LoadedModel, explainer: Explainer, items: Sequence[ImageItem], *,
                 batches: Sequence[Sequence[ImageItem]] | None = None, batch_size: int = 4, workers: int = 0,
                 prefetch: int = 2, device: torch.device | str = "cpu", window: str | None = None,
                 scaling: str = "percentiles", topk: int = 5, skip: Collection[str] = frozenset(),
                 seed: int = 0) -> Iterator[VolumeResult]:
    """One :class:`VolumeResult` per item, in order (``skip``: a resumed run's finished scans go
    through their batch's forward but are not yielded); scans are read in ``workers`` processes,
    ``prefetch`` batches ahead each."""
    device = torch.device(device)
    items = list(items)
    if not items:
        return
    if batches is None:
        batches = [items[k:k + max(1, batch_size)] for k in range(0, len(items), max(1, batch_size))]
    position = {id(item): k for k, item in enumerate(items)}
    if workers > 0:
        own_temp_dir()
    loader = torch.utils.data.DataLoader(
        ScanDataset(items, loaded.input_size, loaded.input_channels, window, scaling),
        batch_sampler=[[position[id(i)] for i in batch] for batch in batches], num_workers=max(0, workers),
        collate_fn=list, prefetch_factor=max(1, prefetch) if workers > 0 else None,
        worker_init_fn=functools.partial(bind_to_parent, os.getpid()) if workers > 0 else None)
    read_batches = iter(loader)
    try:
        yield from _explained(read_batches, loaded, explainer, device, topk, skip, seed)
    finally:
        shut_down(read_batches)


def _explained(read_batches, loaded, explainer, device, topk, skip, seed) -> Iterator[VolumeResult]:
    for read in read_batches:
        if isinstance(explainer, SegmentationExplainer):
            yield from _segmented(read, explainer, device, skip, seed)
            continue
        labels = explainer.target.labels or loaded.labels
        yield from _explain(read, explainer, device, labels, max(1, min(topk, len(labels))), skip, seed)


def _read(item: ImageItem, size: tuple[int, ...], channels: int, window: str | None, scaling: str) -> _Read:
    try:
        scans = read_scan(item.path)
        if len(scans) != 1:
            raise UsageError(f"holds {len(scans)} series ({', '.join(s.source for s in scans)}); give each "
                             "series a folder of its own")
        x, display, factors = prepared(scans[0], size, channels, window, scaling)
        return _Read(item, scans[0].grid, x, display, factors=factors)  # the scan's voxels go here: a CT's are 420 MB
    except (UsageError, ValueError, OSError) as e:
        return _Read(item, error=str(e).splitlines()[0])


def _through(read: list[_Read], device, skip, seed, explain, results: dict[int, VolumeResult]):
    """The batch's readable scans stacked and explained (``explain(x, wanted, seeds)``), with the
    scans read; ``None`` where there is none, or where the model failed on the batch (each scan
    then gets the error in ``results``)."""
    good = [r for r in read if not r.error]
    if not good:
        return None
    x = torch.stack([r.x for r in good]).to(device)
    try:
        return good, explain(x, [r.item.rel not in skip for r in good], [image_seed(seed, r.item.rel) for r in good])
    except (RuntimeError, ValueError) as e:
        for r in good:
            results[r.item.index] = VolumeResult(r.item, "error",
                                                 error=f"model failed on this batch: {str(e).splitlines()[0]}")
        return None


def _explain(read: list[_Read], explainer, device, labels, k, skip, seed) -> Iterator[VolumeResult]:
    """A classifier's batch: per scan, its top classes and a map per method x layer of the first."""
    results: dict[int, VolumeResult] = {}
    done = _through(read, device, skip, seed, lambda x, wanted, seeds: explainer(
        x, None, wanted=None if all(wanted) else wanted, seeds=seeds), results)
    if done is None:
        yield from _in_order(read, results, skip)
        return
    good, exp = done
    probs, idx = exp.probs.topk(k, dim=1)
    probs, idx = probs.cpu().tolist(), idx.cpu().tolist()
    values, targets = exp.probs.cpu().tolist(), exp.targets.cpu().tolist()
    finite = torch.isfinite(exp.logits).all(1).cpu().tolist()
    on_host = {key: (mb.maps.cpu().numpy(), mb.empty.cpu().tolist()) for key, mb in exp.maps.items()}
    checks = {key: on_host_checks(found) for key, found in exp.checks.items()}
    for i, r in enumerate(good):
        item = r.item
        if item.rel in skip:
            continue
        if not finite[i]:
            results[item.index] = VolumeResult(item, "error", error=NOT_FINITE)
            continue
        maps = [VolumeMap(method, layer, small[i], bool(empty[i]), failed_at(checks.get((method, layer), []), i))
                for (method, layer), (small, empty) in on_host.items()]
        t = targets[i]
        results[item.index] = VolumeResult(
            item, "ok", topk=[(c, labels[c], p) for c, p in zip(idx[i], probs[i])], target_index=t,
            target_label=labels[t], target_score=values[i][t], maps=maps, grid=r.grid, display=r.display,
            factors=r.factors)
    yield from _in_order(read, results, skip)


def _segmented(read: list[_Read], explainer: SegmentationExplainer, device, skip, seed) -> Iterator[VolumeResult]:
    """A 3D segmenter's batch: per scan, the classes found (largest first), a map per class x
    method x layer, and the predicted labels."""
    results: dict[int, VolumeResult] = {}
    done = _through(read, device, skip, seed, lambda x, wanted, seeds: explainer(x, wanted=wanted, seeds=seeds),
                    results)
    good, found = done if done is not None else ([], [])
    for r, seg in zip(good, found):
        if r.item.rel in skip:
            continue
        maps = [VolumeMap(method, layer, m.cpu().numpy(), empty, failures, segment)
                for segment, per_class in zip(seg.segments, seg.maps)
                for (method, layer), (m, empty, failures) in per_class.items()]
        results[r.item.index] = VolumeResult(r.item, "ok", note=seg.note, maps=maps, segments=seg.segments,
                                             explained=len(seg.segments), per_class=True, grid=r.grid,
                                             display=r.display, labels=seg.labels.numpy(), factors=r.factors)
    yield from _in_order(read, results, skip)


def _in_order(read: list[_Read], results: dict[int, VolumeResult], skip) -> Iterator[VolumeResult]:
    for r in read:
        if r.item.rel not in skip:
            yield VolumeResult(r.item, "error", error=r.error) if r.error else results[r.item.index]
