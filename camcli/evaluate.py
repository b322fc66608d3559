"""``camcli evaluate``: localisation and faithfulness scores for explanations, and CI gates.

Maps come either from a finished ``explain`` output folder (its ``predictions.csv`` and the
heatmaps saved with ``--save-heatmap``, or boxes saved with ``--boxes``), or from explaining
images on the spot. Each map is scored against the ground-truth boxes of the explained class
(all boxes when the truth has no labels); the figures are then averaged per method x layer.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from camcli.boxes import (DEFAULT_THRESHOLD, POINTING_TOLERANCE, Box, best_iou, boxes_from_heatmap,
                          energy_inside, pointing_hit)
from camcli.errors import UsageError
from camcli.faithfulness import Faithfulness
from camcli.truth import Truth


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

    def as_dict(self) -> dict:
        return dict(vars(self))


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
            method, layer, len(rs), _mean(r.iou for r in rs), _mean(r.located for r in rs),
            _mean(r.pointing for r in rs), _mean(r.energy for r in rs), _mean(r.correct for r in rs),
            _mean(f.drop for f in faith), _mean(f.increase for f in faith),
            _mean(f.deletion_auc for f in faith), _mean(f.insertion_auc for f in faith)))
    return out


GATES = {"min_iou": ("mean_iou", "mean IoU"), "min_pointing": ("pointing", "pointing game"),
         "min_accuracy": ("accuracy", "accuracy")}


def check_gates(summaries: list[Summary], **thresholds: float | None) -> list[str]:
    """Messages for every gate a method x layer fails; an empty list means all gates hold."""
    failures = []
    for key, limit in thresholds.items():
        if limit is None:
            continue
        attr, name = GATES[key]
        for s in summaries:
            value = getattr(s, attr)
            if value is None:
                failures.append(f"{s.method} @ {s.layer}: {name} cannot be measured (needs heatmaps and labelled truth) "
                                f"but --{key.replace('_', '-')} {limit} was asked")
            elif value < limit:
                failures.append(f"{s.method} @ {s.layer}: {name} {value:.3f} < --{key.replace('_', '-')} {limit}")
    return failures


EVAL_COLUMNS = ["path", "method", "layer", "pred_label", "target_label", "correct", "iou", "located", "pointing",
                "energy", "box_x0", "box_y0", "box_x1", "box_y1", "truth_boxes", "average_drop", "increase",
                "deletion_auc", "insertion_auc"]


def write_csv(path: Path, evaluation: Evaluation) -> None:
    from camcli.outputs import csv_cell as cell

    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(EVAL_COLUMNS)
        for r in evaluation.rows:
            b, fa = r.box, r.item.faith
            w.writerow([cell(v) for v in (
                r.item.path, r.item.method, r.item.layer, r.item.pred_label, r.item.target_label, r.correct, r.iou,
                r.located, r.pointing, r.energy, b and b.x0, b and b.y0, b and b.x1, b and b.y1, len(r.matched),
                fa and fa.drop, fa and fa.increase, fa and fa.deletion_auc, fa and fa.insertion_auc)])
    tmp.replace(path)


def _read_heatmap(path: Path, width: int, height: int) -> np.ndarray:
    if path.suffix == ".npy":
        heat = np.load(path, allow_pickle=False).astype(np.float32)
    else:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise UsageError(f"cannot read heatmap {path}")
        heat = raw.astype(np.float32) / (65535.0 if raw.dtype == np.uint16 else 255.0)
    if heat.shape != (height, width):
        from camcli.render import upsample
        heat = upsample(torch.from_numpy(heat), (height, width)).numpy()
    return heat


def maps_from_output(out_dir: Path) -> Iterator[MapToScore]:
    """Maps recorded by a finished ``explain`` run: saved heatmaps, else boxes in the CSV."""
    csv_path = out_dir / "predictions.csv"
    if not csv_path.is_file():
        raise UsageError(f"{out_dir} has no predictions.csv: is it a `camcli explain` output folder?")
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    ok = [r for r in rows if r.get("status") == "ok"]
    has_heat = any(r.get("heatmap") for r in ok)
    has_box = "box_status" in (rows[0].keys() if rows else [])
    if ok and not has_heat and not has_box:
        raise UsageError(f"{out_dir} holds neither heatmaps nor boxes: run explain with --save-heatmap npy "
                         "(all metrics) or --boxes (IoU only), or pass images and a model to evaluate directly")
    for r in ok:
        w, h = int(r["width"]), int(r["height"])
        item = MapToScore(r["path"], r["method"], r["layer"], w, h, r.get("pred_label"), r.get("target_label"))
        if r.get("heatmap"):
            item.heat = _read_heatmap(out_dir / r["heatmap"], w, h)
        elif has_box:
            item.box_known = True
            if r.get("box_x0"):
                item.box = Box(*(float(r[k]) for k in ("box_x0", "box_y0", "box_x1", "box_y1")))
        yield item


def load_run_manifest(out_dir: Path) -> dict:
    p = out_dir / "run.json"
    if not p.is_file():
        raise UsageError(f"{out_dir} has no run.json")
    return json.loads(p.read_text())


def fmt(value: float | None, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f}%" if percent else f"{value:.3f}"


def maps_from_images(settings, inputs: list[str], with_faithfulness: bool = False, steps: int = 16,
                     log=None) -> Iterator[MapToScore]:
    """Explain ``inputs`` with ``settings`` in memory (nothing written) and yield the maps."""
    from camcli.faithfulness import faithfulness
    from camcli.images import discover
    from camcli.layers import display_name
    from camcli.pipeline import iter_results
    from camcli.render import upsample
    from camcli.run import prepare, resolve_target
    from camcli.settings import cam_batch_size_for

    items = discover(inputs)
    loaded, explainer, _layers, device = prepare(settings)
    target = resolve_target(settings.target, loaded.labels)
    mean = torch.tensor(loaded.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(loaded.std, device=device).view(1, 3, 1, 1)
    for result in iter_results(loaded, explainer, items, batch_size=settings.batch_size, workers=settings.workers,
                               device=device, target=target):
        if result.status != "ok":
            if log:
                log(f"skipped {result.item.rel}: {result.error}")
            continue
        for m in result.maps:
            item = MapToScore(result.item.rel, m.method, display_name(m.layer), result.width, result.height,
                              result.pred_label, result.target_label, heat=m.heatmap)
            if with_faithfulness:
                pixels = result.pixels.to(device).float() / 255.0
                heat = upsample(torch.from_numpy(m.layer_map), tuple(pixels.shape[1:]))
                item.faith = faithfulness(loaded.model, pixels, heat, result.target_index, mean, std, steps=steps,
                                          batch_size=cam_batch_size_for(settings, device))
            yield item
