"""Scoring a detection run against truth boxes: the detector's precision and recall at IoU 0.5,
and, for every box it found right, whether its maps point at the object.

Boxes are matched greedily, best score first, each to the unmatched truth box of its class (any
truth box when the truth has no labels) that it overlaps most, when that IoU is at least 0.5 (the
PASCAL VOC rule). A matched box's maps are scored against its truth box: the pointing game (the
map's maximum inside it, within the tolerance) and the share of the map's energy inside it.
Maps come from the run's saved heatmaps (``--save-heatmap``); without them only the detector is
scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from camcli.errors import UsageError
from camcli.evaluation.scoring import Summary, _mean, match_path
from camcli.evaluation.truth import Truth
from camcli.geometry import POINTING_TOLERANCE, Box, energy_inside, iou, pointing_hit
from camcli.output.csvfile import read_rows
from camcli.output.rows import PredictionRow

#: a detection is right when it overlaps a truth box of its class by at least this (PASCAL VOC)
MATCH_IOU = 0.5
COLUMNS = ("path", "det_rank", "det_label", "det_score", "det_x0", "det_y0", "det_x1", "det_y1", "matched",
           "truth_label", "truth_x0", "truth_y0", "truth_x1", "truth_y1", "iou", "method", "layer", "pointing",
           "energy")


@dataclass
class DetectorScore:
    """How well the detector found the truth boxes, over the images that have truth."""

    images: int = 0
    truth_boxes: int = 0
    detections: int = 0
    matched: int = 0
    mean_iou: float | None = None  # of the matched boxes with their truth boxes

    @property
    def precision(self) -> float | None:
        return self.matched / self.detections if self.detections else None

    @property
    def recall(self) -> float | None:
        return self.matched / self.truth_boxes if self.truth_boxes else None

    def as_dict(self) -> dict:
        return {"images": self.images, "truth_boxes": self.truth_boxes, "detections": self.detections,
                "matched": self.matched, "precision": self.precision, "recall": self.recall,
                "mean_iou": self.mean_iou}


@dataclass
class BoxScore:
    """One detection x method x layer of an image with truth: its match, and its map's figures."""

    row: PredictionRow
    truth: Box | None
    iou: float | None
    pointing: bool | None = None
    energy: float | None = None


@dataclass
class DetectionEvaluation:
    detector: DetectorScore
    summaries: list[Summary]  # per method x layer, over the matched boxes: pointing, energy
    rows: list[BoxScore] = field(default_factory=list)
    without_truth: list[str] = field(default_factory=list)
    truth_without_image: list[str] = field(default_factory=list)
    heatmaps: bool = False  # whether the run saved its maps (pointing and energy need them)


def match_boxes(detections: list[PredictionRow], truth: list[Box]) -> dict[int, tuple[Box, float]]:
    """det_rank -> (its truth box, IoU) for the detections that are right (greedy, best score first)."""
    labelled = any(b.label for b in truth)
    free = list(truth)
    found: dict[int, tuple[Box, float]] = {}
    for det in sorted(detections, key=lambda r: -(r.det_score or 0.0)):
        mine = Box(*det.det_box)
        candidates = [b for b in free if not labelled or (b.label or "").lower() == (det.det_label or "").lower()]
        if not candidates:
            continue
        best = max(candidates, key=lambda b: iou(mine, b))
        value = iou(mine, best)
        if value >= MATCH_IOU:
            found[det.det_rank] = (best, value)
            free.remove(best)
    return found


def score_detection_run(folder: Path, truth: Truth, tolerance: float = POINTING_TOLERANCE) -> DetectionEvaluation:
    """Score ``folder``'s ``detections.csv`` (and saved heatmaps) against ``truth``."""
    from camcli.evaluation.sources import read_heatmap

    _header, rows = read_rows(folder / "detections.csv")
    detector = DetectorScore()
    scored: list[BoxScore] = []
    seen: set[str] = set()
    without: list[str] = []
    ious: list[float] = []
    ok = [r for r in rows if r.explained]
    heatmaps = any(r.heatmap for r in ok)
    for path, group in groupby(ok, key=lambda r: r.path):
        group = list(group)
        key = match_path(path, truth)
        if key is None:
            without.append(path)
            continue
        seen.add(key)
        boxes = truth[key]
        firsts = list({r.det_rank: r for r in group if r.det_rank is not None}.values())
        matches = match_boxes(firsts, boxes)
        detector.images += 1
        detector.truth_boxes += len(boxes)
        detector.detections += len(firsts)
        detector.matched += len(matches)
        ious += [v for _b, v in matches.values()]
        for r in group:
            if r.det_rank is None:
                continue
            box, value = matches.get(r.det_rank, (None, None))
            item = BoxScore(r, box, value)
            if box is not None and r.heatmap and r.ok:
                heat = read_heatmap(folder / r.heatmap, r.width, r.height)
                item.pointing = pointing_hit(heat, [box], tolerance)
                item.energy = energy_inside(heat, [box])
            scored.append(item)
    detector.mean_iou = sum(ious) / len(ious) if ious else None
    missing = sorted(set(truth) - seen)
    return DetectionEvaluation(detector, summarise(scored), scored, without, missing, heatmaps)


def summarise(rows: list[BoxScore]) -> list[Summary]:
    """Per method x layer over the matched boxes: the boxes' mean IoU, pointing and energy."""
    groups: dict[tuple[str, str], list[BoxScore]] = {}
    for r in rows:
        groups.setdefault((r.row.method, r.row.layer), []).append(r)
    out = []
    for (method, layer), rs in groups.items():
        right = [r for r in rs if r.truth is not None]
        out.append(Summary(method, layer, images=len(right), mean_iou=_mean(r.iou for r in right),
                           pointing=_mean(r.pointing for r in right), energy=_mean(r.energy for r in right)))
    return out


def check_detection_gates(evaluation: DetectionEvaluation, min_recall: float | None = None,
                          min_pointing: float | None = None, min_iou: float | None = None) -> list[str]:
    """Messages for the gates that fail: the detector's recall, each method x layer's pointing game
    over the matched boxes, and the matched boxes' mean IoU."""
    failures = []
    d = evaluation.detector
    if min_recall is not None:
        if d.recall is None:
            failures.append(f"the detector's recall cannot be measured (no truth box) but --min-recall {min_recall} "
                            "was asked")
        elif d.recall < min_recall:
            failures.append(f"the detector's recall {d.recall:.3f} < --min-recall {min_recall} ({d.matched} of "
                            f"{d.truth_boxes} truth boxes found)")
    if min_iou is not None and (d.mean_iou or 0.0) < min_iou:
        failures.append(f"the matched boxes' mean IoU {d.mean_iou or 0.0:.3f} < --min-iou {min_iou}")
    if min_pointing is not None:
        if not evaluation.heatmaps:
            raise UsageError("--min-pointing needs the run's maps: explain with `save_heatmap` npy (or png16)")
        for s in evaluation.summaries:
            if s.pointing is None:
                failures.append(f"{s.method} @ {s.layer}: no box was found right, so the pointing game cannot be "
                                f"measured but --min-pointing {min_pointing} was asked")
            elif s.pointing < min_pointing:
                failures.append(f"{s.method} @ {s.layer}: pointing game over the matched boxes {s.pointing:.3f} < "
                                f"--min-pointing {min_pointing}")
    return failures


def write_detection_csv(path: Path, evaluation: DetectionEvaluation) -> None:
    """evaluation.csv of a detection run: one row per detection x method x layer of an image with truth."""
    from camcli.output.csvfile import write_table

    def cells(s: BoxScore):
        r, t = s.row, s.truth
        return (r.path, r.det_rank, r.det_label, r.det_score, *(r.det_box or (None,) * 4), t is not None,
                t and t.label, t and t.x0, t and t.y0, t and t.x1, t and t.y1, s.iou, r.method, r.layer, s.pointing,
                s.energy)
    write_table(path, COLUMNS, (cells(s) for s in evaluation.rows))
