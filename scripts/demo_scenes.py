"""Synthetic scenes for the demo model: coloured shapes on cluttered, textured backgrounds.

Each scene is an RGB uint8 array plus the ground-truth objects (class name and pixel box).
The generator is deterministic for a given ``numpy.random.Generator`` so the training set,
the held-out set and ``sample_images/`` can all be reproduced from their seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")


@dataclass(frozen=True)
class SceneObject:
    label: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, inclusive-exclusive


def _background(rng: np.random.Generator, w: int, h: int, clutter: float = 1.0) -> np.ndarray:
    """A colour gradient, blurred noise texture, stripes, lines and dots: clutter without shapes.

    ``clutter`` in [0, 1] scales texture, stripes, lines and dots (the trainer's curriculum).
    """
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, w if rng.random() < 0.5 else h)
    grad = (c0[None] * (1 - t[:, None]) + c1[None] * t[:, None]).astype(np.float32)
    img = np.broadcast_to(grad[None] if len(t) == w else grad[:, None], (h, w, 3)).copy()
    for scale in (rng.integers(2, 6), rng.integers(8, 24)):
        noise = rng.normal(0, 1, (h // scale + 2, w // scale + 2, 3)).astype(np.float32)
        img += cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC) * rng.uniform(10, 35) * clutter
    if rng.random() < 0.5 * clutter:  # stripes
        period, angle = rng.uniform(6, 30), rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        img += (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / period * 2 * np.pi)[..., None]
                * rng.uniform(8, 25))
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(4, 14) * clutter)):  # thin random lines
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p0, p1, rng.integers(0, 256, 3).tolist(), int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(int(rng.integers(5, 25) * clutter)):  # small dots
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, c, int(rng.integers(1, 4)), rng.integers(0, 256, 3).tolist(), -1, cv2.LINE_AA)
    return img


def _polygon(label: str, cx: float, cy: float, r: float, angle: float) -> list[np.ndarray]:
    def rot(points: np.ndarray) -> np.ndarray:
        c, s = np.cos(angle), np.sin(angle)
        xy = points @ np.array([[c, s], [-s, c]])
        return np.round(xy + [cx, cy]).astype(np.int32)

    if label == "square":
        return [rot(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * r * 0.75)]
    if label == "triangle":
        a = np.deg2rad([90, 210, 330])
        return [rot(np.stack([np.cos(a), -np.sin(a)], 1) * r)]
    if label == "star":
        a = np.deg2rad(np.arange(10) * 36 + 90)
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.42)
        return [rot(np.stack([np.cos(a) * rad, -np.sin(a) * rad], 1))]
    if label == "cross":
        k = 0.3
        pts = np.array([[-k, -1], [k, -1], [k, -k], [1, -k], [1, k], [k, k], [k, 1], [-k, 1],
                        [-k, k], [-1, k], [-1, -k], [-k, -k]]) * r * 0.95
        return [rot(pts)]
    raise ValueError(label)


def _draw(mask: np.ndarray, label: str, cx: float, cy: float, r: float, angle: float) -> None:
    if label == "circle":
        cv2.circle(mask, (int(cx), int(cy)), int(r * 0.9), 255, -1, cv2.LINE_AA)
    elif label == "ring":
        cv2.circle(mask, (int(cx), int(cy)), int(r * 0.9), 255, max(3, int(r * 0.3)), cv2.LINE_AA)
    else:
        cv2.fillPoly(mask, _polygon(label, cx, cy, r, angle), 255, cv2.LINE_AA)


def _contrasting_colour(rng: np.random.Generator, patch: np.ndarray) -> np.ndarray:
    mean = patch.reshape(-1, 3).mean(0)
    best, best_d = None, -1.0
    for _ in range(12):
        c = rng.uniform(0, 255, 3)
        d = float(np.abs(c - mean).sum())
        if d > best_d:
            best, best_d = c, d
        if d > 250:
            break
    return best


def make_scene(rng: np.random.Generator, size: tuple[int, int], n_objects: int = 1,
               labels: list[str] | None = None, clutter: float = 1.0) -> tuple[np.ndarray, list[SceneObject]]:
    """Draw ``n_objects`` shapes of distinct classes at random, non-overlapping places."""
    w, h = size
    img = _background(rng, w, h, clutter)
    labels = labels or list(rng.choice(CLASSES, size=n_objects, replace=False))
    objects: list[SceneObject] = []
    taken: list[tuple[int, int, int, int]] = []
    for label in labels:
        for _attempt in range(200):
            lo = 0.12 if n_objects == 1 else 0.10
            hi = 0.22 if n_objects == 1 else 0.16
            r = rng.uniform(lo, hi) * min(w, h)
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            mask = np.zeros((h, w), np.uint8)
            _draw(mask, label, cx, cy, r, rng.uniform(0, 2 * np.pi))
            ys, xs = np.nonzero(mask > 127)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            gap = 6
            if all(box[2] + gap < t[0] or t[2] + gap < box[0] or box[3] + gap < t[1] or t[3] + gap < box[1]
                   for t in taken):
                break
        else:
            raise RuntimeError("could not place objects without overlap")
        colour = _contrasting_colour(rng, img[box[1]:box[3], box[0]:box[2]])
        shade = rng.uniform(0.8, 1.0, (h, w, 1)).astype(np.float32)  # a little texture on the shape
        alpha = (mask.astype(np.float32) / 255.0)[..., None]
        img = (img * (1 - alpha) + colour[None, None] * shade * alpha).clip(0, 255).astype(np.uint8)
        taken.append(box)
        objects.append(SceneObject(str(label), box))
    return img, objects
