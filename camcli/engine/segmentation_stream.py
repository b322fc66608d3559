"""The stream of a segmentation run: images in, per-image classes found and a map for each, in input order.

Images are fitted to the model's input and normalised as a classifier's are (``stretch`` or
``letterbox``; a ``crop`` would leave parts of the image unsegmented). The predicted labels stay
on the output's grid (:class:`LabelGrid`) and are read back over the image at the size a writer
asks for, through the same :class:`~camcli.engine.framing.Frame` as the maps; a ``region`` the
user gives in image pixels is sampled onto that grid the same way.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from camcli.engine.framing import Frame
from camcli.engine.images import DEFAULT_MAX_PIXELS, Decoded, ImageItem
from camcli.engine.loaded import LoadedModel
from camcli.engine.segmentation import SegmentationExplainer
from camcli.engine.stream import ImageResult, MapResult, image_loader, image_seed, model_input, uses_channels_last
from camcli.engine.workers import shut_down


@dataclass(frozen=True)
class LabelGrid:
    """The predicted class of every cell of the output's grid, which covers the model input, and
    where the original image lies in that input."""

    labels: torch.Tensor  # (h, w) int16
    frame: Frame | None  # None: the image stretched over all of the input
    input_size: tuple[int, int]  # (h, w) of the model input

    def at(self, size: tuple[int, int]) -> np.ndarray:
        """(H, W) int16 labels over the original image at ``size`` (nearest cell)."""
        rows = _cells(size[0], *self._span(0), self.input_size[0], self.labels.shape[0])
        cols = _cells(size[1], *self._span(1), self.input_size[1], self.labels.shape[1])
        return self.labels.numpy()[np.ix_(rows, cols)]

    def outline(self, index: int, size: tuple[int, int]) -> list[np.ndarray]:
        """The contours of class ``index``'s cells (holes too), as (k, 1, 2) int32 points over the
        original image drawn at ``size``: found on the grid (upsampled 4x, so that they follow
        the cells' edges), never on a full-size mask, so an overlay of a 50 MP photo needs none."""
        import cv2

        fine = 4
        mask = (self.labels.numpy() == index).astype(np.uint8)
        contours, _ = cv2.findContours(np.kron(mask, np.ones((fine, fine), np.uint8)), cv2.RETR_LIST,
                                       cv2.CHAIN_APPROX_SIMPLE)
        out = []
        for axis_points in contours:
            pts = axis_points.astype(np.float64)
            for k, axis in ((0, 1), (1, 0)):  # x (columns), then y (rows)
                start, stop = self._span(axis)
                cells = self.labels.shape[axis]
                inside = (pts[..., k] + 0.5) / fine * self.input_size[axis] / cells
                pts[..., k] = (inside - start) * size[axis] / (stop - start)
            out.append(np.round(pts).astype(np.int32))
        return out

    def _span(self, axis: int) -> tuple[float, float]:
        if self.frame is None:
            return 0.0, float(self.input_size[axis])
        return (self.frame.y0, self.frame.y1) if axis == 0 else (self.frame.x0, self.frame.x1)


def _cells(n_out: int, start: float, stop: float, n_in: int, n_grid: int) -> np.ndarray:
    """For each of ``n_out`` image pixels, the grid cell under its centre."""
    centre = start + (np.arange(n_out) + 0.5) * (stop - start) / n_out
    return np.clip(np.floor(centre * n_grid / n_in).astype(np.int64), 0, n_grid - 1)


def on_grid(inside, size: tuple[int, int], frame: Frame | None, input_size: tuple[int, int],
            grid: tuple[int, int]) -> torch.Tensor:
    """A region of the original image (``inside(rows, cols)`` -> bool array, for pixel indices)
    as a (h, w) bool mask on the output's grid: each cell takes the image pixel under its centre;
    cells outside the image (a letterbox's margin) are outside the region."""
    def axis(n_grid, n_in, n_img, start, stop):
        centre = (np.arange(n_grid) + 0.5) * n_in / n_grid
        pixel = np.floor((centre - start) * n_img / (stop - start)).astype(np.int64)
        return np.clip(pixel, 0, n_img - 1), (pixel >= 0) & (pixel < n_img)
    x0, y0, x1, y1 = (0.0, 0.0, float(input_size[1]), float(input_size[0])) if frame is None else \
        (frame.x0, frame.y0, frame.x1, frame.y1)
    rows, row_ok = axis(grid[0], input_size[0], size[0], y0, y1)
    cols, col_ok = axis(grid[1], input_size[1], size[1], x0, x1)
    found = np.asarray(inside(rows, cols), bool) & row_ok[:, None] & col_ok[None, :]
    return torch.from_numpy(np.ascontiguousarray(found))


class Regions:
    """The ``region`` setting for each image: a box in image pixels, or a folder of mask images
    found by the image's relative path (``a/b.jpg``: ``a/b.png``, else ``a/b.jpg`` itself)."""

    def __init__(self, spec: tuple[float, float, float, float] | str) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        if isinstance(self.spec, tuple):
            return "box " + ",".join(f"{v:g}" for v in self.spec)
        return f"mask from {self.spec}"

    def find(self, rel: str) -> Path | None:
        folder = Path(self.spec)
        for candidate in (folder / Path(rel).with_suffix(".png"), folder / rel):
            if candidate.is_file():
                return candidate
        return None

    def for_image(self, rel: str, size: tuple[int, int], frame: Frame | None, input_size: tuple[int, int],
                  grid: tuple[int, int]) -> tuple[torch.Tensor, str]:
        """(the region on the output's grid, its name); a ``ValueError`` says why there is none."""
        if isinstance(self.spec, tuple):
            x0, y0, x1, y1 = self.spec
            if x0 >= size[1] or y0 >= size[0]:
                raise ValueError(f"`region` box {self.name[4:]} lies outside the {size[1]}x{size[0]} image")
            mask = on_grid(lambda r, c: ((r >= y0) & (r < y1))[:, None] & ((c >= x0) & (c < x1))[None, :],
                           size, frame, input_size, grid)
            return mask, self.name
        path = self.find(rel)
        if path is None:
            raise ValueError(f"no region mask for {rel} in {self.spec} (looked for {Path(rel).with_suffix('.png')})")
        from PIL import Image

        try:
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("L") if img.mode not in ("L", "P", "1") else img)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read region mask {path}: {e}") from None
        if pixels.shape[:2] != tuple(size):
            raise ValueError(f"region mask {path} is {pixels.shape[1]}x{pixels.shape[0]}, the image "
                             f"{size[1]}x{size[0]}")
        region = pixels != 0
        return on_grid(lambda r, c: region[np.ix_(r, c)], size, frame, input_size, grid), f"mask {path.name}"


def iter_segments(loaded: LoadedModel, explainer: SegmentationExplainer, items: Sequence[ImageItem], *,
                  batch_size: int = 16, workers: int = 0, device: torch.device | str = "cpu",
                  max_pixels: int = DEFAULT_MAX_PIXELS, skip: Collection[str] = frozenset(),
                  batches: Sequence[Sequence[ImageItem]] | None = None, prefetch: int = 2, resize: str = "stretch",
                  seed: int = 0, regions: Regions | None = None) -> Iterator[ImageResult]:
    """Explain ``items`` through the segmenter batch by batch; one :class:`ImageResult` per item,
    in order (``skip``: as :func:`~camcli.engine.stream.iter_results`)."""
    device = torch.device(device)
    items = list(items)
    if not items:
        return
    loader = image_loader(loaded, items, batch_size, batches, workers, device, max_pixels, prefetch, resize)
    mean = torch.tensor(loaded.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(loaded.std, device=device).view(1, 3, 1, 1)
    nhwc = uses_channels_last(loaded.model)
    batches_in = iter(loader)
    try:
        for batch in batches_in:
            yield from _explain_batch(batch, loaded, explainer, device, mean, std, nhwc, skip, seed, regions)
    finally:
        shut_down(batches_in)


def _explain_batch(batch: list[Decoded], loaded: LoadedModel, explainer: SegmentationExplainer,
                   device: torch.device, mean, std, nhwc: bool, skip: Collection[str], seed: int,
                   regions: Regions | None) -> Iterator[ImageResult]:
    results: dict[int, ImageResult] = {}
    good, found_regions = [], []
    for d in batch:
        if d.error:
            continue
        if regions is not None and d.item.rel not in skip:
            try:
                h, w = d.original.shape[:2]
                found_regions.append(regions.for_image(d.item.rel, (h, w), d.frame, loaded.input_size,
                                                       explainer.grid))
            except ValueError as e:
                results[d.item.index] = ImageResult(d.item, "error", error=str(e))
                continue
        else:
            found_regions.append(None)
        good.append(d)
    if good:
        x = model_input(good, device, mean, std, nhwc)
        wanted = [d.item.rel not in skip for d in good]
        try:
            found = explainer(x, wanted, seeds=[image_seed(seed, d.item.rel) for d in good], regions=found_regions)
        except (RuntimeError, ValueError) as e:  # e.g. out of memory: the batch fails, the run goes on
            reason = f"model failed on this batch: {str(e).splitlines()[0]}"
            for d in good:
                results[d.item.index] = ImageResult(d.item, "error", error=reason)
        else:
            for d, image in zip(good, found):
                if d.item.rel in skip:
                    continue
                h, w = d.original.shape[:2]
                maps = [MapResult(method, layer, small.numpy(), empty, (h, w), failures, d.frame, loaded.input_size,
                                  seg.index, seg.label, seg.probability, segment=seg)
                        for seg, per_class in zip(image.segments, image.maps)
                        for (method, layer), (small, empty, failures) in per_class.items()]
                note = "; ".join(n for n in (d.note, image.note) if n)
                results[d.item.index] = ImageResult(
                    d.item, "ok", note=note, width=w, height=h, image=d.original, pixels=d.pixels, maps=maps,
                    explained=len(image.segments), per_class=True, segments=image.segments,
                    label_grid=LabelGrid(image.labels, d.frame, loaded.input_size))
    for d in batch:
        if d.item.rel in skip:
            continue
        yield ImageResult(d.item, "error", error=d.error) if d.error else results[d.item.index]
