"""Held-out figures of the demo video classifier (not run by CI): accuracy, and whether each
frame's map points at the moving shape.

    python scripts/evaluate_video.py [--count 150] [--write]

Draws ``--count`` clips with the separate generator (``scripts/sample_videos.py``, seed 7: other
drawing code, frame sizes and rates than training's), explains them with ``camcli explain
--config configs/demo-video.toml --save-heatmap npy`` (decoded, sampled and fitted as any user's
videos), and reads the run: the share of clips whose prediction is the moving shape's class, and
per frame of each window whether the map's peak lies in the moving shape's box (the pointing
game, with a tolerance of 1/32 of the frame); as a control, the same with each frame's map set
against the box of the window's frame farthest from it in time: a map that follows the shape
points there far less.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def inside(peak, box, tolerance: float) -> bool:
    x, y = peak
    x0, y0, x1, y1 = box
    return x0 - tolerance <= x <= x1 + tolerance and y0 - tolerance <= y <= y1 + tolerance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=150)
    parser.add_argument("--write", action="store_true", help="add the figures to demo/video.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="camcli-heldout-video-"))
    clips, out = work / "clips", work / "run"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "sample_videos.py"), "--count", str(args.count), "--seed",
                    "7", "--out", str(clips)], check=True)
    subprocess.run([sys.executable, "-m", "camcli", "explain", str(clips), "--config", str(ROOT / "configs" /
                    "demo-video.toml"), "--save-heatmap", "npy", "--out", str(out), "--quiet"], check=True)
    boxes: dict[str, dict[int, tuple]] = {}
    labels = {}
    with open(clips / "boxes.csv", newline="") as f:
        for row in csv.DictReader(f):
            boxes.setdefault(row["path"], {})[int(row["frame"])] = tuple(float(row[c]) for c in ("x0", "y0", "x1", "y1"))
            labels[row["path"]] = row["label"]
    with open(out / "clips.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    right = hits = frames = control = 0
    for row in rows:
        right += row["pred_label"] == labels[row["path"]]
        heat = np.load(out / row["heatmap"], mmap_mode="r")
        start, end = int(row["start_frame"]), int(row["end_frame"])
        tolerance = int(row["width"]) / 32
        for k in range(end - start + 1):
            y, x = np.unravel_index(int(np.argmax(heat[k])), heat[k].shape)
            hits += inside((x, y), boxes[row["path"]][start + k], tolerance)
            far = end if start + k - start < (end - start) / 2 else start
            control += inside((x, y), boxes[row["path"]][far], tolerance)
            frames += 1
    figures = {"clips": len(rows), "accuracy": round(right / len(rows), 4), "frames": frames,
               "pointing_per_frame": round(hits / frames, 4), "pointing_against_the_farthest_frames_box":
               round(control / frames, 4), "command": "python scripts/evaluate_video.py --count "
               f"{args.count}", "clips_from": "scripts/sample_videos.py --seed 7 (128 or 192 px square, 24 fps, 1.5 s)"}
    print(json.dumps(figures, indent=2))
    if args.write:
        path = ROOT / "demo" / "video.json"
        record = json.loads(path.read_text()) if path.exists() else {}
        record["heldout"] = figures
        path.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
