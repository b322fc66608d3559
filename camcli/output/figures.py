"""Composite pictures: a comparison panel per image and contact sheets for a whole run.

A panel is the original followed by one titled overlay per method x layer (the side-by-side
figures of the Grad-CAM tutorials). A contact sheet tiles a few dozen captioned thumbnails;
sheets are written as they fill, so a run of 10,000 images never holds more than one sheet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from camcli.output.render import fit_text_scale

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def fit_height(image: np.ndarray, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    width = max(1, round(w * height / h))
    interp = cv2.INTER_AREA if height < h else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def fit_box(image: np.ndarray, side: int) -> np.ndarray:
    """Scale to fit a side x side square, centred on white."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.full((side, side, 3), 255, np.uint8)
    y, x = (side - small.shape[0]) // 2, (side - small.shape[1]) // 2
    canvas[y:y + small.shape[0], x:x + small.shape[1]] = small
    return canvas


#: how far a caption line may shrink to fit before it is shortened instead: below this share of
#: its size, text on a 192-pixel thumbnail is no longer readable
SMALLEST_SHARE = 0.75


def caption(tile: np.ndarray, text: str, bar: int | None = None, lines: int | None = None) -> np.ndarray:
    """A white band above ``tile`` with ``text`` in black, a line per line of ``text``.

    A line too wide shrinks a little (to :data:`SMALLEST_SHARE` of its size), then loses its middle
    (``pairs/star_r…g_03.png``): the start and the end of a path or a name say the most. ``bar``
    is the height of one line; ``lines`` fixes the band's line count, so that the tiles of a
    contact sheet line up whatever their captions.
    """
    w = tile.shape[1]
    bar = bar or max(18, tile.shape[0] // 12)
    base = bar / 40.0
    thickness = 1 if bar < 30 else 2
    rows = text.split("\n")
    count = max(len(rows), lines or 0)
    head = np.full((bar * count, w, 3), 255, np.uint8)
    for k, line in enumerate(rows[:count]):
        scale = fit_text_scale(line, w - 6, base, thickness, floor=base * SMALLEST_SHARE)
        line = shortened(line, w - 6, scale, thickness)
        (tw, th), _ = cv2.getTextSize(line, _FONT, scale, thickness)
        cv2.putText(head, line, (max(3, (w - tw) // 2), k * bar + (bar + th) // 2), _FONT, scale, (0, 0, 0),
                    thickness, cv2.LINE_AA)
    return np.vstack([head, tile])


def shortened(text: str, width: int, scale: float, thickness: int) -> str:
    """``text``, or its start and end around ``...`` when it is wider than ``width`` pixels."""
    def fits(t: str) -> bool:
        return cv2.getTextSize(t, _FONT, scale, thickness)[0][0] <= width

    if fits(text):
        return text
    keep = len(text) - 1
    while keep > 2:
        head, tail = text[:(keep + 1) // 2], text[len(text) - keep // 2:]
        if fits(f"{head}...{tail}"):
            return f"{head}...{tail}"
        keep -= 1
    return text[:1] + "..."


def panel(original: np.ndarray, overlays: Sequence[tuple[str, np.ndarray]], title: str = "image",
          height: int = 256, max_columns: int = 5) -> np.ndarray:
    """Original, then each (title, overlay), at one height, wrapped after ``max_columns`` tiles."""
    tiles = [caption(fit_height(original, height), title)] + [caption(fit_height(o, height), t) for t, o in overlays]
    columns = min(max_columns, len(tiles))
    rows = []
    gap = 6
    for r in range(math.ceil(len(tiles) / columns)):
        row = tiles[r * columns:(r + 1) * columns]
        parts = []
        for tile in row:
            parts += [tile, np.full((tile.shape[0], gap, 3), 255, np.uint8)]
        rows.append(np.hstack(parts[:-1]))
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.vstack(padded)[:-gap]


class ContactSheets:
    """Collects captioned thumbnails and hands back a full sheet every ``per_sheet`` tiles."""

    def __init__(self, per_sheet: int = 36, thumb: int = 192) -> None:
        self.per_sheet = per_sheet
        self.thumb = thumb
        self.columns = math.ceil(math.sqrt(per_sheet))
        self.caption_lines = 3  # the image, the method at its layer, what the map explains
        self._tiles: list[np.ndarray] = []

    def add(self, image: np.ndarray, text: str) -> np.ndarray | None:
        """A thumbnail; ``text``'s lines (at most :attr:`caption_lines`) above it."""
        self._tiles.append(caption(fit_box(image, self.thumb), text, bar=20, lines=self.caption_lines))
        return self.flush() if len(self._tiles) >= self.per_sheet else None

    def flush(self) -> np.ndarray | None:
        if not self._tiles:
            return None
        tiles, self._tiles = self._tiles, []
        h, w = tiles[0].shape[:2]
        columns = min(self.columns, len(tiles))
        rows = math.ceil(len(tiles) / columns)
        gap = 4
        sheet = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), 255, np.uint8)
        for i, tile in enumerate(tiles):
            r, c = divmod(i, columns)
            sheet[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
        return sheet
