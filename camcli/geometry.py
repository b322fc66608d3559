"""Boxes from heatmaps, and the geometry that scores maps against boxes: what the output writers
(a CAM's box, a detection's energy in its box) and the evaluation share, below both.

A heatmap becomes boxes as in the course notebook (seed 004): keep the pixels at or above a
threshold *relative to the map's maximum*, find connected regions with ``cv2.findContours``,
and box the largest one (or every region above a minimum area). The rotated box is OpenCV's
``minAreaRect`` of the region. An empty map yields no box: never a whole-image box pretending
to be an answer.

The default threshold is half the maximum. CAM's paper (Zhou et al., 2016) used 0.2 on
ImageNet, where objects fill most of the picture, and seed 004 uses 0.05; with the coarse maps
of a last convolutional block (5x5 to 7x7 cells) and objects that fill a fifth of the picture,
low thresholds box the whole blurred blob: on the demo scenes the mean IoU of Grad-CAM's boxes
is 0.20 at 0.2 and 0.41 at 0.5.

Coordinates are pixels of the original image, ``x1``/``y1`` exclusive, so a box's area is
``(x1 - x0) * (y1 - y0)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_THRESHOLD = 0.5
#: the pointing game's tolerance in pixels, as published (Zhang et al., 2016)
POINTING_TOLERANCE = 15


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    label: str | None = None

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)

    def contains(self, x: float, y: float) -> bool:
        return self.x0 <= x < self.x1 and self.y0 <= y < self.y1


@dataclass(frozen=True)
class FoundBox:
    """A box found in a heatmap: axis-aligned, rotated corners, and the region's pixel count."""

    box: Box
    corners: tuple[tuple[float, float], ...]  # the minAreaRect's four corners, (x, y)
    pixels: int


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two axis-aligned boxes; 0 when either is degenerate."""
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two convex polygons given as (N, 2) corner arrays (rotated boxes)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    area_a, area_b = abs(cv2.contourArea(a)), abs(cv2.contourArea(b))
    if area_a <= 0 or area_b <= 0:
        return 0.0
    inter, _ = cv2.intersectConvexConvex(a, b)
    inter = max(0.0, float(inter))
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def boxes_from_heatmap(heat: np.ndarray, threshold: float = DEFAULT_THRESHOLD, mode: str = "largest",
                       min_area: float = 0.0) -> list[FoundBox]:
    """Boxes around the regions where ``heat >= threshold * heat.max()``.

    ``mode="largest"`` returns at most one box (the region with most pixels); ``"all"``
    returns every region of at least ``min_area`` pixels, largest first.
    """
    if mode not in ("largest", "all"):
        raise ValueError(f"mode must be 'largest' or 'all', got {mode!r}")
    heat = np.asarray(heat, np.float32)
    top = float(heat.max()) if heat.size else 0.0
    if not np.isfinite(top) or top <= 0:
        return []
    mask = (heat >= threshold * top).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    found = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        region = np.zeros_like(mask)
        cv2.drawContours(region, [contour], 0, 1, thickness=-1)
        pixels = int((region & mask).sum())
        corners = cv2.boxPoints(cv2.minAreaRect(contour))
        found.append(FoundBox(Box(float(x), float(y), float(x + w), float(y + h)),
                              tuple((float(px), float(py)) for px, py in corners), pixels))
    found.sort(key=lambda f: (-f.pixels, f.box.y0, f.box.x0))
    if mode == "largest":
        return found[:1]
    return [f for f in found if f.pixels >= min_area]


def peak(heat: np.ndarray) -> tuple[int, int]:
    """(x, y) of the map's maximum.

    Bilinear upsampling (``align_corners=False``) peaks at the strongest cell's centre, but
    when that cell touches the border it leaves a flat strip from the centre out to the edge,
    and the first argmax would then sit on the image's edge. Among the pixels of that flat top
    we take the one farthest from the border: the cell's centre.
    """
    heat = np.asarray(heat, np.float32)
    h, w = heat.shape
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    top = heat[y, x]
    plateau = (heat >= top - 1e-6 * max(1.0, abs(float(top)))).astype(np.uint8)
    _, labels = cv2.connectedComponents(plateau, connectivity=8)
    ys, xs = np.nonzero(labels == labels[y, x])
    inner = np.minimum(np.minimum(xs, w - 1 - xs), np.minimum(ys, h - 1 - ys))
    k = int(np.argmax(inner))
    return int(xs[k]), int(ys[k])


def pointing_hit(heat: np.ndarray, truth: list[Box], tolerance: float = POINTING_TOLERANCE) -> bool:
    """Pointing game: does the maximum fall inside (or within ``tolerance`` px of) a true box?

    The published game (Zhang et al., 2016) allows 15 pixels; ``tolerance=0`` is the strict one.
    """
    if not truth or float(np.max(heat)) <= 0:
        return False
    x, y = peak(heat)
    return any(b.x0 - tolerance <= x < b.x1 + tolerance and b.y0 - tolerance <= y < b.y1 + tolerance for b in truth)


def energy_inside(heat: np.ndarray, truth: list[Box]) -> float:
    """Energy-based pointing game: the share of the map's mass inside the union of the boxes."""
    heat = np.asarray(heat, np.float64)
    total = heat.sum()
    if total <= 0 or not truth:
        return 0.0
    mask = np.zeros(heat.shape, bool)
    h, w = heat.shape
    for b in truth:
        mask[max(0, int(np.floor(b.y0))):min(h, int(np.ceil(b.y1))), max(0, int(np.floor(b.x0))):min(w, int(np.ceil(b.x1)))] = True
    return float(heat[mask].sum() / total)


def best_iou(found: Box | None, truth: list[Box]) -> float:
    """The best IoU of a found box against any true box (0 without a found box)."""
    if found is None or not truth:
        return 0.0
    return max(iou(found, t) for t in truth)


def energy_in_mask(heat: np.ndarray, mask: np.ndarray) -> float:
    """The share of the map's mass that lies on ``mask`` ((h, w) bool, the map's size): a
    segment's energy-based pointing game."""
    heat = np.asarray(heat, np.float64)
    total = heat.sum()
    if total <= 0 or not mask.any():
        return 0.0
    return float(heat[mask].sum() / total)


def points_into(heat: np.ndarray, mask: np.ndarray, tolerance: float = POINTING_TOLERANCE) -> bool:
    """Pointing game on a mask: does the map's maximum fall on ``mask``, or within ``tolerance``
    pixels of it (15, as for boxes; 0 is strict)?"""
    if not mask.any() or float(np.max(heat)) <= 0:
        return False
    x, y = peak(heat)
    if mask[y, x]:
        return True
    if tolerance <= 0:
        return False
    y0, y1 = max(0, int(y - tolerance)), min(mask.shape[0], int(y + tolerance) + 1)
    x0, x1 = max(0, int(x - tolerance)), min(mask.shape[1], int(x + tolerance) + 1)
    ys, xs = np.nonzero(mask[y0:y1, x0:x1])
    return bool(len(ys)) and float(np.min((ys + y0 - y) ** 2 + (xs + x0 - x) ** 2)) <= tolerance ** 2
