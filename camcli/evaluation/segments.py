"""Scoring a segmentation run against truth label masks: the segmenter's per-class IoU and mIoU,
and, for every class it explained that the truth holds, whether its maps point into that class's
truth mask.

Truth is a folder of label masks, one per image, found by the image's relative path
(``a/b.jpg``: ``a/b.png``, else ``a/b.jpg``), as PNGs of class indices (a palette image, such as
Pascal VOC's, reads as its indices; 255 is VOC's "ignore" and counts nowhere). Indices are the
model's own. IoU is accumulated over the whole run per class (intersection over union of all
its pixels, the VOC rule); mIoU is their mean over the classes present in the truth or the
predictions. The run's predicted masks come from ``save_mask``, its maps from ``save_heatmap``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import numpy as np

from camcli.errors import UsageError
from camcli.evaluation.scoring import Summary, _mean
from camcli.geometry import POINTING_TOLERANCE, energy_in_mask, points_into
from camcli.output.csvfile import read_rows
from camcli.output.rows import PredictionRow

#: VOC's label for pixels that count for no class (object borders)
IGNORE = 255
COLUMNS = ("path", "seg_rank", "seg_index", "seg_label", "pixel_share", "truth_share", "iou", "method", "layer",
           "pointing", "energy")


@dataclass
class SegmenterScore:
    """How well the segmenter's masks match the truth, over the images that have truth."""

    images: int = 0
    labels: dict[int, str] = field(default_factory=dict)  # class index -> name, as the run's rows give them
    intersection: dict[int, int] = field(default_factory=dict)
    union: dict[int, int] = field(default_factory=dict)
    correct: int = 0  # pixels labelled right (of those the truth does not ignore)
    counted: int = 0

    @property
    def per_class(self) -> dict[str, float]:
        """Each class's IoU over the run (classes in the truth or the predictions)."""
        return {self._name(c): self.intersection.get(c, 0) / u for c, u in sorted(self.union.items()) if u}

    @property
    def miou(self) -> float | None:
        values = list(self.per_class.values())
        return sum(values) / len(values) if values else None

    @property
    def pixel_accuracy(self) -> float | None:
        return self.correct / self.counted if self.counted else None

    def _name(self, c: int) -> str:
        return self.labels.get(c, f"class_{c}")

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> dict[int, float]:
        """Count one image; return its per-class IoU."""
        valid = truth != IGNORE
        p, t = predicted[valid].astype(np.int64), truth[valid].astype(np.int64)
        self.images += 1
        self.correct += int((p == t).sum())
        self.counted += int(valid.sum())
        found = {}
        for c in np.union1d(np.unique(p), np.unique(t)).tolist():
            inter, uni = int(((p == c) & (t == c)).sum()), int(((p == c) | (t == c)).sum())
            self.intersection[c] = self.intersection.get(c, 0) + inter
            self.union[c] = self.union.get(c, 0) + uni
            found[c] = inter / uni if uni else 0.0
        return found

    def as_dict(self) -> dict:
        return {"images": self.images, "miou": self.miou, "pixel_accuracy": self.pixel_accuracy,
                "per_class_iou": self.per_class}


@dataclass
class SegmentScore:
    """One class found x method x layer of an image with truth, and its map's figures."""

    row: PredictionRow
    truth_share: float
    iou: float | None
    pointing: bool | None = None
    energy: float | None = None


@dataclass
class SegmentationEvaluation:
    segmenter: SegmenterScore
    summaries: list[Summary]  # per method x layer, over the explained classes the truth holds
    rows: list[SegmentScore] = field(default_factory=list)
    without_truth: list[str] = field(default_factory=list)
    truth_without_image: list[str] = field(default_factory=list)
    heatmaps: bool = False


def truth_file(folder: Path, rel: str) -> Path | None:
    """The truth mask of the image at ``rel``: ``rel`` with ``.png``, else ``rel`` itself."""
    for candidate in (folder / Path(rel).with_suffix(".png"), folder / rel):
        if candidate.is_file():
            return candidate
    return None


def read_label_mask(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W) class indices from a PNG (palette indices, grey values, or 16-bit)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L", "I;16", "I", "1"):
                raise UsageError(f"{path} is an {img.mode} image, not a label mask: save class indices (a palette "
                                 "or grey PNG)")
            labels = np.asarray(img).astype(np.int64)
    except OSError as e:
        raise UsageError(f"cannot read label mask {path}: {e}") from None
    if size is not None and labels.shape != tuple(size):
        raise UsageError(f"label mask {path} is {labels.shape[1]}x{labels.shape[0]}, its image {size[1]}x{size[0]}")
    return labels


def score_segmentation_run(folder: Path, truth: Path, tolerance: float = POINTING_TOLERANCE) -> SegmentationEvaluation:
    """Score ``folder``'s ``segments.csv`` (its saved masks and heatmaps) against the label masks in ``truth``."""
    from camcli.evaluation.sources import read_heatmap

    truth = Path(truth)
    if not truth.is_dir():
        raise UsageError(f"--truth {truth}: a segmentation run is scored against a folder of label masks (one PNG "
                         "per image, by relative path)")
    _header, rows = read_rows(folder / "segments.csv")
    ok = [r for r in rows if r.explained]
    if ok and not any(r.mask for r in ok):
        raise UsageError("the run saved no masks: explain with `save_mask` so that its masks can be scored")
    segmenter = SegmenterScore(labels=recorded_labels(folder) or {r.seg_index: r.seg_label for r in ok
                                                           if r.seg_index is not None})
    scored: list[SegmentScore] = []
    without: list[str] = []
    matched: set[str] = set()  # the truth masks some image of the run found
    for path, group in groupby(ok, key=lambda r: r.path):
        group = list(group)
        found = truth_file(truth, path)
        if found is not None:
            matched.add(found.relative_to(truth).as_posix())
        if found is None or not group[0].mask:
            without.append(path)
            continue
        size = (group[0].height, group[0].width)
        t = read_label_mask(found, size)
        predicted = read_label_mask(folder / group[0].mask, size)
        ious = segmenter.add(predicted, t)
        valid = t != IGNORE
        for r in group:
            if r.seg_rank is None:
                continue
            own = t == r.seg_index
            item = SegmentScore(r, float(own.sum() / max(1, valid.sum())), ious.get(r.seg_index))
            if own.any() and r.heatmap and r.ok:
                heat = read_heatmap(folder / r.heatmap, r.width, r.height)
                item.pointing = points_into(heat, own, tolerance)
                item.energy = energy_in_mask(heat, own)
            scored.append(item)
    listed = {p.relative_to(truth).as_posix() for p in truth.rglob("*.png")}
    return SegmentationEvaluation(segmenter, summarise(scored), scored, without, sorted(listed - matched),
                                  any(r.heatmap for r in ok))


def recorded_labels(folder: Path) -> dict[int, str]:
    """The segmenter's class names as its run recorded them (run.json), or nothing."""
    import json

    try:
        names = json.loads((folder / "run.json").read_text(encoding="utf-8"))["model"].get("labels") or []
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    return dict(enumerate(map(str, names)))


def summarise(rows: list[SegmentScore]) -> list[Summary]:
    """Per method x layer over the explained classes the truth holds: pointing and energy."""
    groups: dict[tuple[str, str], list[SegmentScore]] = {}
    for r in rows:
        groups.setdefault((r.row.method, r.row.layer), []).append(r)
    out = []
    for (method, layer), rs in groups.items():
        held = [r for r in rs if r.truth_share > 0]
        out.append(Summary(method, layer, images=len(held), mean_iou=_mean(r.iou for r in held),
                           pointing=_mean(r.pointing for r in held), energy=_mean(r.energy for r in held)))
    return out


def check_segmentation_gates(evaluation: SegmentationEvaluation, min_iou: float | None = None,
                             min_pointing: float | None = None) -> list[str]:
    """Messages for the gates that fail: the segmenter's mIoU, each method x layer's pointing game."""
    failures = []
    s = evaluation.segmenter
    if min_iou is not None and (s.miou or 0.0) < min_iou:
        failures.append(f"the segmenter's mIoU {s.miou or 0.0:.3f} < --min-iou {min_iou}")
    if min_pointing is not None:
        if not evaluation.heatmaps:
            raise UsageError("--min-pointing needs the run's maps: explain with `save_heatmap` npy (or png16)")
        for m in evaluation.summaries:
            if m.pointing is None:
                failures.append(f"{m.method} @ {m.layer}: no explained class is in the truth, so the pointing game "
                                f"cannot be measured but --min-pointing {min_pointing} was asked")
            elif m.pointing < min_pointing:
                failures.append(f"{m.method} @ {m.layer}: pointing game into the truth masks {m.pointing:.3f} < "
                                f"--min-pointing {min_pointing}")
    return failures


def write_segmentation_csv(path: Path, evaluation: SegmentationEvaluation) -> None:
    """evaluation.csv of a segmentation run: one row per class found x method x layer of an image with truth."""
    from camcli.output.csvfile import write_table

    def cells(s: SegmentScore):
        r = s.row
        return (r.path, r.seg_rank, r.seg_index, r.seg_label, r.pixel_share, s.truth_share, s.iou, r.method, r.layer,
                s.pointing, s.energy)
    write_table(path, COLUMNS, (cells(s) for s in evaluation.rows))
