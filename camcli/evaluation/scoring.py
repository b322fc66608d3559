"""Localisation and faithfulness scores for explanations, and CI gates.

Maps come from :mod:`camcli.evaluation.sources` (a finished run, or images explained now).
Each map is scored against the ground-truth boxes of the explained class (all boxes when the
truth has no labels); the figures are then averaged per method x layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from camcli.geometry import (DEFAULT_THRESHOLD, POINTING_TOLERANCE, Box, best_iou, boxes_from_heatmap,
                                     energy_inside, pointing_hit)
from camcli.evaluation.faithfulness import Faithfulness
from camcli.evaluation.road import Road
from camcli.evaluation.truth import Truth


@dataclass
class MapToScore:
    """One explanation to score: where it came from and what it says."""

    path: str
    method: str
    layer: str
    width: int
    height: int
    pred_label: str | None
    target_label: str | None
    heat: np.ndarray | None = None  # (H, W) in [0, 1] at the original size
    box: Box | None = None  # a box already found (from the CSV) when no heatmap was saved
    box_known: bool = False  # True when ``box`` comes from the CSV (None then means "no box")
    faith: Faithfulness | None = None
    road: Road | None = None
    sanity: tuple[float, float] | None = None  # Spearman and SSIM to the randomised model's map (--sanity)


@dataclass
class Scored:
    item: MapToScore
    matched: list[Box]
    iou: float | None
    located: bool | None
    pointing: bool | None
    energy: float | None
    correct: bool | None
    box: Box | None


@dataclass
class Summary:
    method: str
    layer: str
    images: int = 0
    mean_iou: float | None = None
    localisation: float | None = None  # share with IoU >= 0.5
    pointing: float | None = None
    energy: float | None = None
    accuracy: float | None = None
    average_drop: float | None = None
    increase_in_confidence: float | None = None
    deletion_auc: float | None = None
    insertion_auc: float | None = None
    deletion_curve: list[float] | None = None  # mean class probability per deletion step
    insertion_curve: list[float] | None = None
    #: ROAD (``--faithfulness``): ``percentiles``, mean change in probability per percentile for
    #: ``morf`` and ``lerf``, their means ``morf_mean``, ``lerf_mean`` and ``combined``
    road: dict | None = None
    #: sanity checks (``--sanity``): ``units``, ``images``, per step of the ``cascade`` and the
    #: ``independent`` test the unit ``randomised`` and the mean and spread of ``spearman`` and
    #: ``ssim``; ``final_spearman`` and ``final_ssim`` after the whole cascade
    sanity: dict | None = None
    #: metrics of a task's own scorer (camcli.evaluation.metrics.register_metric), by key
    extra: dict[str, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = {k: v for k, v in vars(self).items() if k != "extra"}
        return out | self.extra


@dataclass
class Evaluation:
    rows: list[Scored]
    summaries: list[Summary]
    without_truth: list[str] = field(default_factory=list)  # images with no ground-truth entry
    truth_without_image: list[str] = field(default_factory=list)  # ground truth for images not seen


def _matching(truth: list[Box], target_label: str | None) -> list[Box]:
    if any(b.label for b in truth):
        return [b for b in truth if b.label is not None and target_label is not None
                and b.label.lower() == target_label.lower()]
    return list(truth)


def score(items: Iterable[MapToScore], truth: Truth, threshold: float = DEFAULT_THRESHOLD,
          mode: str = "largest", tolerance: float = POINTING_TOLERANCE) -> Evaluation:
    rows: list[Scored] = []
    seen: set[str] = set()
    without: list[str] = []
    for item in items:
        key = match_path(item.path, truth)
        if key is None:
            if item.path not in without:
                without.append(item.path)
            continue
        seen.add(key)
        gt = truth[key]
        matched = _matching(gt, item.target_label)
        labels = {b.label.lower() for b in gt if b.label}
        correct = (item.pred_label or "").lower() in labels if labels else None
        if item.heat is not None:
            found = boxes_from_heatmap(item.heat, threshold, mode)
            box = max(found, key=lambda f: best_iou(f.box, matched)).box if found else None
            pointing = pointing_hit(item.heat, matched, tolerance)
            energy = energy_inside(item.heat, matched)
        else:
            box, pointing, energy = item.box, None, None
        value = best_iou(box, matched) if (item.heat is not None or item.box_known) else None
        rows.append(Scored(item, matched, value, None if value is None else value >= 0.5, pointing, energy, correct, box))
    missing = sorted(set(truth) - seen)
    return Evaluation(rows, summarise(rows), without, missing)


def match_path(path: str, truth: Truth) -> str | None:
    """The truth entry for an explained image: the same relative path, or else the one entry
    whose path ends with it (or that it ends with), so that explaining ``data/single/`` matches a
    truth file written relative to ``data/``. Ambiguous suffixes match nothing."""
    if path in truth:
        return path
    found = [k for k in truth if k.endswith("/" + path) or path.endswith("/" + k)]
    return found[0] if len(found) == 1 else None


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarise(rows: list[Scored]) -> list[Summary]:
    groups: dict[tuple[str, str], list[Scored]] = {}
    for r in rows:
        groups.setdefault((r.item.method, r.item.layer), []).append(r)
    out = []
    for (method, layer), rs in groups.items():
        faith = [r.item.faith for r in rs if r.item.faith is not None]
        out.append(Summary(
            method, layer, images=len(rs), mean_iou=_mean(r.iou for r in rs), localisation=_mean(r.located for r in rs),
            pointing=_mean(r.pointing for r in rs), energy=_mean(r.energy for r in rs),
            accuracy=_mean(r.correct for r in rs), average_drop=_mean(f.drop for f in faith),
            increase_in_confidence=_mean(f.increase for f in faith),
            deletion_auc=_mean(f.deletion_auc for f in faith), insertion_auc=_mean(f.insertion_auc for f in faith),
            deletion_curve=_mean_curve([f.deletion_curve for f in faith]),
            insertion_curve=_mean_curve([f.insertion_curve for f in faith]),
            road=_road_summary([r.item.road for r in rs if r.item.road is not None])))
    return out


def _mean_curve(curves: list[tuple[float, ...]]) -> list[float] | None:
    curves = [c for c in curves if c]
    return [_mean(values) for values in zip(*curves)] if curves else None


def _road_summary(roads: list[Road]) -> dict | None:
    if not roads:
        return None
    return {"percentiles": list(roads[0].percentiles), "morf": _mean_curve([r.morf for r in roads]),
            "lerf": _mean_curve([r.lerf for r in roads]),
            "morf_mean": _mean(r.morf_mean for r in roads), "lerf_mean": _mean(r.lerf_mean for r in roads),
            "combined": _mean(r.combined for r in roads)}


def check_gates(summaries: list[Summary], **limits: float | None) -> list[str]:
    """Messages for every gate a method x layer fails; an empty list means all gates hold.
    ``limits``: gate name (``min_pointing``, ``max_sanity_similarity``, a task's own) -> its limit."""
    from camcli.evaluation.metrics import METRICS

    failures = []
    for gate, limit in limits.items():
        if limit is None:
            continue
        bounded = next((m for m in METRICS if m.gate == gate), None)
        if bounded is None:
            raise ValueError(f"no metric is gated by {gate}")
        why = ("the sanity checks did not run for it" if bounded.key.startswith("sanity") else
               "needs heatmaps and labelled truth")
        for s in summaries:
            message = bounded.gate_message(s.method, s.layer, bounded.value(s), limit, why)
            if message:
                failures.append(message)
    return failures


EVAL_COLUMNS = ["path", "method", "layer", "pred_label", "target_label", "correct", "iou", "located", "pointing",
                "energy", "box_x0", "box_y0", "box_x1", "box_y1", "truth_boxes", "average_drop", "increase",
                "deletion_auc", "insertion_auc", "road_morf", "road_lerf", "road_combined", "sanity_spearman",
                "sanity_ssim"]


def write_csv(path: Path, evaluation: Evaluation) -> None:
    from camcli.output.csvfile import write_table

    def cells(r: Scored):
        b, fa, ro = r.box, r.item.faith, r.item.road
        return (r.item.path, r.item.method, r.item.layer, r.item.pred_label, r.item.target_label, r.correct, r.iou,
                r.located, r.pointing, r.energy, b and b.x0, b and b.y0, b and b.x1, b and b.y1, len(r.matched),
                fa and fa.drop, fa and fa.increase, fa and fa.deletion_auc, fa and fa.insertion_auc,
                ro and ro.morf_mean, ro and ro.lerf_mean, ro and ro.combined, *(r.item.sanity or (None, None)))
    write_table(path, EVAL_COLUMNS, (cells(r) for r in evaluation.rows))


def fmt(value: float | None, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f}%" if percent else f"{value:.3f}"
