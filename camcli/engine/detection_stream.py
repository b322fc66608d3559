"""The stream of a detection run: images in, per-image boxes and a map for each, in input order.

Images go to the detector as they are (its own transform resizes and normalises them), in
batches of different sizes; each :class:`~camcli.engine.stream.MapResult` names its box and
reads its map back over the original image through the detector's resize and padding.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence

import torch

from camcli.engine.detection import DetectionExplainer
from camcli.engine.framing import Frame
from camcli.engine.images import DEFAULT_MAX_PIXELS, Decoded, ImageItem
from camcli.engine.loaded import LoadedModel
from camcli.engine.stream import ImageResult, MapResult, image_loader, image_seed
from camcli.engine.workers import shut_down


def iter_detections(loaded: LoadedModel, explainer: DetectionExplainer, items: Sequence[ImageItem], *,
                    batch_size: int = 16, workers: int = 0, device: torch.device | str = "cpu",
                    max_pixels: int = DEFAULT_MAX_PIXELS, skip: Collection[str] = frozenset(),
                    batches: Sequence[Sequence[ImageItem]] | None = None, prefetch: int = 2,
                    seed: int = 0) -> Iterator[ImageResult]:
    """Explain ``items`` through the detector batch by batch; one :class:`ImageResult` per item,
    in order (``skip``: as :func:`~camcli.engine.stream.iter_results`)."""
    device = torch.device(device)
    items = list(items)
    if not items:
        return
    loader = image_loader(loaded, items, batch_size, batches, workers, device, max_pixels, prefetch, "none")
    batches_in = iter(loader)
    try:
        for batch in batches_in:
            yield from _explain_batch(batch, explainer, device, skip, seed)
    finally:
        shut_down(batches_in)


def _explain_batch(batch: list[Decoded], explainer: DetectionExplainer, device: torch.device,
                   skip: Collection[str], seed: int) -> Iterator[ImageResult]:
    good = [d for d in batch if not d.error]
    results: dict[int, ImageResult] = {}
    if good:
        images = [d.pixels.to(device).float().div_(255) for d in good]
        wanted = [d.item.rel not in skip for d in good]
        try:
            found = explainer(images, wanted, seeds=[image_seed(seed, d.item.rel) for d in good])
        except (RuntimeError, ValueError) as e:  # e.g. out of memory: the batch fails, the run goes on
            reason = f"model failed on this batch: {str(e).splitlines()[0]}"
            for d in good:
                results[d.item.index] = ImageResult(d.item, "error", error=reason)
        else:
            for d, image in zip(good, found):
                if d.item.rel in skip:
                    continue
                h, w = d.original.shape[:2]
                # the image fills (valid) of the map's extent from its inset (the padding is cut off)
                vh, vw = image.valid
                maps = [MapResult(method, layer, small.numpy(), empty, (h, w), failures,
                                  Frame(inset[1], inset[0], inset[1] + vw, inset[0] + vh), extent,
                                  det.index, det.label, det.score, detection=det)
                        for det, per_box in zip(image.detections, image.maps)
                        for (method, layer), (small, empty, failures, (extent, inset)) in per_box.items()]
                note = d.note
                if not image.detections:
                    none = f"no detection scores {explainer.score_threshold:g} or more"
                    note = "; ".join(n for n in (d.note, none) if n)
                results[d.item.index] = ImageResult(d.item, "ok", note=note, width=w, height=h, image=d.original,
                                                    pixels=None, maps=maps, explained=len(image.detections),
                                                    per_class=True, detections=image.detections)
    for d in batch:
        if d.item.rel in skip:
            continue
        yield ImageResult(d.item, "error", error=d.error) if d.error else results[d.item.index]
