"""The demo video classifier's training clips: which shape moves (not run by CI).

Each clip: a textured background, a circle, a square and a triangle standing still at random
places, and one more shape of the clip's class moving in a straight line at a random speed and
heading, drawn over them. Frames come out at the model's input size (64 x 64), so training needs
no decoding; camcli's own reading of the sample videos is checked by the held-out script, whose
clips a separate generator (``scripts/sample_videos.py``) draws at other sizes and rates.
"""

from __future__ import annotations

import cv2
import numpy as np

CLASSES = ["circle", "square", "triangle"]
SIZE = 64
FRAMES = 12


def draw(canvas: np.ndarray, shape: int, centre, radius: float, colour) -> None:
    x, y = centre
    if shape == 0:
        cv2.circle(canvas, (round(x * 16), round(y * 16)), round(radius * 16), colour, -1, cv2.LINE_AA, 4)
    elif shape == 1:
        r = radius * 0.85
        cv2.rectangle(canvas, (round((x - r) * 16), round((y - r) * 16)), (round((x + r) * 16), round((y + r) * 16)),
                      colour, -1, cv2.LINE_AA, 4)
    else:
        points = np.array([[x, y - radius], [x - radius * 0.95, y + radius * 0.8], [x + radius * 0.95, y + radius * 0.8]])
        cv2.fillPoly(canvas, [np.round(points * 16).astype(np.int32)], colour, cv2.LINE_AA, 4)


def clip(rng: np.random.Generator, label: int) -> np.ndarray:
    """(FRAMES, SIZE, SIZE, 3) uint8: the still shapes and the moving one of class ``label``."""
    base = rng.uniform(30, 110, 3)
    background = np.clip(base + rng.normal(0, 12, (SIZE // 8, SIZE // 8, 3)), 0, 255).astype(np.uint8)
    background = cv2.resize(background, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    still = []
    for shape in rng.permutation(3):
        still.append((shape, rng.uniform(8, SIZE - 8, 2), rng.uniform(5, 8), tuple(map(int, rng.integers(120, 256, 3)))))
    radius = rng.uniform(5, 8)
    speed = rng.uniform(1.5, 3.5)
    heading = rng.uniform(0, 2 * np.pi)
    velocity = speed * np.array([np.cos(heading), np.sin(heading)])
    span = velocity * (FRAMES - 1)
    low = np.maximum(radius, radius - span)
    high = np.minimum(SIZE - radius, SIZE - radius - span)
    start = rng.uniform(np.minimum(low, high), np.maximum(low, high))
    colour = tuple(map(int, rng.integers(120, 256, 3)))
    frames = np.empty((FRAMES, SIZE, SIZE, 3), np.uint8)
    for k in range(FRAMES):
        canvas = background.copy()
        for shape, centre, r, c in still:
            draw(canvas, shape, centre, r, c)
        draw(canvas, label, start + velocity * k, radius, colour)
        frames[k] = canvas
    return frames


def make_batch(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), count)
    return np.stack([clip(rng, int(y)) for y in labels]), labels
