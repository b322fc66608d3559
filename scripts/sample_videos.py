"""Clips for the video demo and its held-out figures, from a generator written apart from the
training one (``scripts/video_scenes.py``): shapes drawn by PIL with outlines, on a vertical
gradient, in square frames of 128 or 192 pixels at 24 fps, written as MPEG-4 files and decoded
by camcli like anyone's videos. Each clip records the moving shape's box in every frame.

    python scripts/sample_videos.py                     # sample_videos/: 6 clips and boxes.csv
    python scripts/sample_videos.py --count 150 --seed 7 --out /tmp/heldout   # for evaluate_video.py
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["circle", "square", "triangle"]
FPS = 24
SECONDS = 1.5


def outline(draw: ImageDraw.ImageDraw, shape: int, cx: float, cy: float, r: float, fill, edge) -> tuple:
    """Draw one shape; its box (x0, y0, x1, y1)."""
    if shape == 0:
        box = (cx - r, cy - r, cx + r, cy + r)
        draw.ellipse(box, fill=fill, outline=edge, width=2)
        return box
    if shape == 1:
        s = r * 0.85
        box = (cx - s, cy - s, cx + s, cy + s)
        draw.rectangle(box, fill=fill, outline=edge, width=2)
        return box
    points = [(cx, cy - r), (cx - r * 0.95, cy + r * 0.8), (cx + r * 0.95, cy + r * 0.8)]
    draw.polygon(points, fill=fill, outline=edge, width=2)
    return (cx - r * 0.95, cy - r, cx + r * 0.95, cy + r * 0.8)


def scene(rng: np.random.Generator, label: int, side: int) -> tuple[list[np.ndarray], list[tuple]]:
    """The frames (RGB) of one clip, and the moving shape's box in each."""
    top, bottom = rng.uniform(20, 120, 3), rng.uniform(20, 120, 3)
    ramp = np.linspace(0, 1, side)[:, None, None]
    background = ((1 - ramp) * top + ramp * bottom).repeat(side, axis=1).astype(np.uint8)
    scale = side / 64
    still = [(int(s), rng.uniform(9, 55, 2) * scale, rng.uniform(5.5, 7.5) * scale,
              tuple(int(v) for v in rng.integers(130, 256, 3))) for s in rng.permutation(3)]
    r = rng.uniform(5.5, 7.5) * scale
    frames_n = round(FPS * SECONDS)
    # 1.5 to 3.5 pixels of the model's 64 per sampled frame (every second frame at 24 fps)
    step = rng.uniform(1.5, 3.5) * scale / 2
    heading = rng.uniform(0, 2 * math.pi)
    v = np.array([math.cos(heading), math.sin(heading)]) * step
    span = v * (frames_n - 1)
    low, high = np.maximum(r, r - span), np.minimum(side - r, side - r - span)
    start = rng.uniform(np.minimum(low, high), np.maximum(low, high))
    colour = tuple(int(c) for c in rng.integers(130, 256, 3))
    frames, boxes = [], []
    for k in range(frames_n):
        picture = Image.fromarray(background)
        draw = ImageDraw.Draw(picture)
        for shape, (x, y), rr, c in still:
            outline(draw, shape, x, y, rr, c, (20, 20, 20))
        x, y = start + v * k
        boxes.append(outline(draw, label, x, y, r, colour, (20, 20, 20)))
        frames.append(np.asarray(picture))
    return frames, boxes


def write(path: Path, frames: list[np.ndarray]) -> None:
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    for f in frames:
        out.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    out.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "sample_videos")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "boxes.csv", "w", newline="") as f:
        table = csv.writer(f)
        table.writerow(["path", "label", "frame", "x0", "y0", "x1", "y1"])
        for k in range(args.count):
            label = k % len(CLASSES)
            side = 128 if rng.random() < 0.5 else 192
            frames, boxes = scene(rng, label, side)
            name = f"{k:03d}_{CLASSES[label]}.mp4"
            write(args.out / name, frames)
            for n, box in enumerate(boxes):
                table.writerow([name, CLASSES[label], n, *(round(v, 1) for v in box)])


if __name__ == "__main__":
    main()
