"""Judge the demo detector on scenes it was not trained on, through camcli.

    python scripts/evaluate_detector.py            # 300 held-out scenes of one to three objects
    python scripts/evaluate_detector.py --write    # and record the figures in demo/detector.json

Scenes come from ``heldout_scenes.py`` (written apart from the training generator: another
drawing library, other backgrounds and distractors), are written as PNG files with a truth CSV,
explained by ``camcli explain --config configs/demo-detect.toml --save-heatmap npy`` and scored
by ``camcli evaluate``: the code paths a user runs. Figures: the detector's recall and precision
at IoU 0.5, and over the boxes it found right, Grad-CAM's pointing game (strict: the map's
maximum inside the truth box) and the share of the map's energy inside it, for several methods
at the config's layer (P3) and at ``backbone`` (every level on the coarsest grid).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heldout_scenes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def write_scenes(folder: Path, count: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    truth = folder / "truth.csv"
    images = folder / "scenes"
    images.mkdir()
    with open(truth, "w", encoding="utf-8") as f:
        f.write("path,x0,y0,x1,y1,label\n")
        for i in range(count):
            img, objects = heldout_scenes.heldout_scene(rng, 1 + i % 3)
            name = f"{1 + i % 3}_{i:04d}.png"
            cv2.imwrite(str(images / name), np.ascontiguousarray(img[..., ::-1]))
            for o in objects:
                f.write(f"{name},{o.box[0]},{o.box[1]},{o.box[2]},{o.box[3]},{o.label}\n")
    return truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--method", default="layercam,hirescam,gradcam,eigencam", help="methods to judge")
    ap.add_argument("--layer", action="append", help="layers to judge (default: the config's, and backbone)")
    ap.add_argument("--write", action="store_true", help="record the figures in demo/detector.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        truth = write_scenes(tmp, a.scenes, a.seed)
        out = tmp / "run"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "camcli", "explain", str(tmp / "scenes"), "--config",
                        str(ROOT / "configs" / "demo-detect.toml"), "--save-heatmap", "npy", "--out", str(out),
                        "--method", a.method, *[f for layer in (a.layer or ["backbone.fpn.layer_blocks.0", "backbone"])
                                                for f in ("--layer", layer)], "--quiet"], check=True)
        seconds = time.perf_counter() - started
        strict = json.loads(subprocess.run(
            [sys.executable, "-m", "camcli", "evaluate", str(out), "--truth", str(truth), "--json", "--quiet",
             "--pointing-tolerance", "0"], check=True, capture_output=True, text=True).stdout)
    d = strict["detector"]
    maps = {f"{s['method']}@{s['layer']}": {"boxes": s["images"], "strict_pointing": round(s["pointing"], 4),
                                            "energy_in_truth_box": round(s["energy"], 4)}
            for s in strict["summaries"]}
    figures = {"command": "python scripts/evaluate_detector.py --write", "heldout_scenes": a.scenes,
               "objects_per_scene": "1 to 3", "seed": a.seed, "truth_boxes": d["truth_boxes"],
               "detections": d["detections"], "recall_iou50": round(d["recall"], 4),
               "precision_iou50": round(d["precision"], 4), "matched_mean_iou": round(d["mean_iou"], 4),
               "maps": maps, "explain_seconds": round(seconds, 1)}
    print(json.dumps(figures, indent=2))
    if a.write:
        path = ROOT / "demo" / "detector.json"
        info = json.loads(path.read_text(encoding="utf-8"))
        info["evaluation"] = figures
        path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
