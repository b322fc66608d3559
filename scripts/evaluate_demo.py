"""Judge the demo model as a new user would: on scenes it was not trained on, through camcli.

    python scripts/evaluate_demo.py            # 600 + 300 held-out scenes, 600 + 300 training-style ones
    python scripts/evaluate_demo.py --write    # and record the figures in demo/model.json

Scenes come from two generators: ``heldout_scenes.py`` (written apart from training, other
drawing library, backgrounds and distractors) and, for comparison, fresh seeds of the training
generator ``demo_scenes.py``. They are written as PNG files and explained by ``camcli.explain``
with ``configs/demo.toml``, the same code path as ``camcli explain``, so the squeeze to the
model's input and the map's upsampling are the product's own.

Figures, each per generator:

- single-object accuracy: top-1 is the scene's class;
- two-object top-1-in-scene: top-1 is one of the two classes;
- strict pointing: the maximum of Grad-CAM's map for the explained (top-1) class lies inside
  that class's box, no tolerance; a wrong prediction counts as a miss;
- IoU >= 0.5: the box camcli finds in the map (largest region at half the maximum, the default
  of ``--boxes``) overlaps the explained class's box by at least 0.5; misses count as 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_scenes  # noqa: E402
import heldout_scenes  # noqa: E402

import camcli  # noqa: E402
from camcli.geometry import Box, boxes_from_heatmap, iou, pointing_hit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def write_scenes(folder: Path, generator: str, singles: int, pairs: int, seed: int) -> dict[str, list]:
    """PNG scenes in ``folder``; returns {file name: [(label, Box), ...]}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for k, count in ((1, singles), (2, pairs)):
        for i in range(count):
            if generator == "heldout":
                img, objects = heldout_scenes.heldout_scene(rng, k)
            else:
                img, objects = demo_scenes.make_scene(rng, demo_scenes.scene_size(rng), k)
            name = f"{k}_{i:04d}.png"
            cv2.imwrite(str(folder / name), np.ascontiguousarray(img[..., ::-1]))
            truth[name] = [(o.label, Box(*o.box)) for o in objects]
    return truth


def judge(folder: Path, truth: dict[str, list], config: Path) -> dict:
    run = camcli.explain(folder, config=config, method="gradcam", workers=0, quiet=True)
    tally = {k: {"scenes": 0, "right": 0, "pointing": 0, "iou50": 0} for k in (1, 2)}
    for r in run:
        objects = truth[r.item.rel]
        t = tally[len(objects)]
        t["scenes"] += 1
        boxes = [b for label, b in objects if label == r.pred_label]
        if r.status != "ok" or not boxes:
            continue
        t["right"] += 1
        heat = r.maps[0].heatmap
        t["pointing"] += pointing_hit(heat, boxes, tolerance=0)
        found = boxes_from_heatmap(heat)
        t["iou50"] += bool(found) and iou(found[0].box, boxes[0]) >= 0.5
    one, two = tally[1], tally[2]
    return {
        "single_scenes": one["scenes"], "pair_scenes": two["scenes"],
        "single_accuracy": round(one["right"] / one["scenes"], 4),
        "pair_top1_in_scene": round(two["right"] / two["scenes"], 4),
        "single_strict_pointing": round(one["pointing"] / one["scenes"], 4),
        "pair_strict_pointing": round(two["pointing"] / two["scenes"], 4),
        "single_iou50": round(one["iou50"] / one["scenes"], 4),
        "pair_iou50": round(two["iou50"] / two["scenes"], 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--singles", type=int, default=600)
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--keep", type=Path, help="keep the scenes in this folder (to look at the misses)")
    ap.add_argument("--write", action="store_true", help="record the figures in demo/model.json")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.toml",
                    help="the model to judge, as a camcli config (another model, or an older demo model)")
    args = ap.parse_args()

    figures = {}
    for generator, seed in (("heldout", 2026), ("training_generator", 7)):
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            folder = args.keep / generator if args.keep else Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            truth = write_scenes(folder, "heldout" if generator == "heldout" else "training", args.singles,
                                 args.pairs, seed)
            figures[generator] = judge(folder, truth, args.config)
        print(f"{generator} ({time.time() - t0:.0f} s): {json.dumps(figures[generator])}", flush=True)
    if args.write:
        path = ROOT / "demo" / "model.json"
        meta = json.loads(path.read_text())
        meta["evaluation"] = {"command": "python scripts/evaluate_demo.py --write", "method": "gradcam",
                              "layer": "layer4[1]", **figures}
        path.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
