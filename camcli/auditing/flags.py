"""Flags on a cluster: the signatures of a shortcut, worded as hypotheses with the images to look at.

- ``fixed-place``: the cluster's maps peak at one place: at least ``FIXED_SHARE`` of their peaks
  within ``PLACE_RADIUS`` (a tenth of the picture) of their median point. A model that follows
  its objects puts its evidence where each object is, so one place for a whole cluster means
  either that the objects are all there too (then boxes clear it: with truth boxes the flag needs
  the objects' centres to lie typically at least ``OBJECT_SPREAD`` from theirs, and twice as far
  as the peaks from theirs) or that something fixed there carries the evidence: a watermark, a
  border, a background.
- ``off-object`` (with truth boxes): the peak of most of the cluster's maps (over ``OFF_OBJECT``)
  lies outside every box of the explained class (every box, when the truth has no labels), with
  the pointing game's tolerance.

A cluster of fewer than ``MIN_MAPS`` maps is not flagged: too few to tell a place from chance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from camcli.auditing.strategies import PLACE_RADIUS, Cluster, where
from camcli.geometry import POINTING_TOLERANCE, Box

FIXED_SHARE = 0.8
OBJECT_SPREAD = 0.10
OFF_OBJECT = 0.5
MIN_MAPS = 5
LOOK_AT = 6


@dataclass
class Flag:
    kind: str  # fixed-place, off-object
    text: str  # a hypothesis, in a sentence
    look_at: list[str]  # images to look at first

    def as_dict(self) -> dict:
        return {"flag": self.kind, "text": self.text, "look_at": self.look_at}


def objects_of(boxes: list[Box] | None, explained: str) -> list[Box] | None:
    """The truth boxes of the explained class (all of them when none is labelled); None without truth."""
    if boxes is None:
        return None
    if any(b.label for b in boxes):
        return [b for b in boxes if b.label == explained]
    return list(boxes)


def flag_cluster(c: Cluster, paths: list[str], peaks: np.ndarray, sizes: list[tuple[int, int]],
                 objects: list[list[Box] | None], cls: str) -> list[Flag]:
    """The flags of cluster ``c``; ``paths``, ``peaks``, ``sizes`` (width, height) and ``objects`` are per map of the class."""
    if c.size < MIN_MAPS:
        return []
    look = [paths[i] for i in c.exemplars[:LOOK_AT]]
    place = where(*c.peak)
    flags = []
    boxed = [i for i in c.members if objects[i]]
    object_spread = None
    if len(boxed) >= max(MIN_MAPS, c.size // 2):
        centres = np.array([_centre(objects[i], sizes[i]) for i in boxed])
        object_spread = float(np.median(np.sqrt(((centres - np.median(centres, 0)) ** 2).sum(1))))
    if c.near >= FIXED_SHARE:
        at = (f"{round(c.near * c.size)} of the {c.size} maps of this {cls} cluster peak at the {place} (within "
              f"{PLACE_RADIUS:.0%} of the picture of x {c.peak[0]:.2f}, y {c.peak[1]:.2f})")
        if object_spread is None:
            flags.append(Flag("fixed-place", (
                f"fixed place: {at}; if the {cls} objects in these pictures are not all there, something fixed "
                "there may carry the evidence (a watermark, a border, the background): look at the pictures"), look))
        elif object_spread >= max(2 * c.spread, OBJECT_SPREAD):
            flags.append(Flag("fixed-place", (
                f"fixed place: {at}, while their objects lie anywhere (typically {object_spread:.0%} of the picture "
                "from their middle): the evidence may come from something fixed there (a watermark, a border, the "
                "background), not from the object: look at the pictures"), look))
    if boxed:
        off = [i for i in boxed if not _near_any(peaks[i], sizes[i], objects[i])]
        if len(off) > OFF_OBJECT * len(boxed) and len(boxed) >= MIN_MAPS:
            flags.append(Flag("off-object", (
                f"off the object: {len(off)} of the {len(boxed)} maps of this {cls} cluster with truth boxes "
                f"peak outside every box of a {cls} (mostly at the {place}): the model may use the "
                "surroundings, not the object: look at the pictures"), [paths[i] for i in off[:LOOK_AT]]))
    return flags


def _centre(boxes: list[Box], size: tuple[int, int]) -> tuple[float, float]:
    b = max(boxes, key=lambda b: b.area)
    w, h = size
    return ((b.x0 + b.x1) / 2 / w, (b.y0 + b.y1) / 2 / h)


def _near_any(peak: np.ndarray, size: tuple[int, int], boxes: list[Box]) -> bool:
    """The pointing game's hit: the peak (a fraction of the picture) inside a box grown by the tolerance."""
    x, y = float(peak[0]) * size[0], float(peak[1]) * size[1]
    t = POINTING_TOLERANCE
    return any(b.x0 - t <= x < b.x1 + t and b.y0 - t <= y < b.y1 + t for b in boxes)
