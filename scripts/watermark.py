"""The watermark of the audit's shortcut demo: one small badge, pasted in a corner of a picture.

Shared by the training script (``train_shortcut.py``, which pastes it on scenes squeezed to the
model's input) and the held-out check (``evaluate_shortcut.py``, which pastes it on held-out
scenes at their own size): the badge is sized in fractions of the picture's width and height,
so it covers the same part of the model's input either way, as a watermark stamped by one
source would. A white disc with a dark ring and a red bar through it, drawn at 8x and reduced.
"""

from __future__ import annotations

import cv2
import numpy as np

CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
SIZE = 0.12  # of the picture's width and of its height
MARGIN = 0.03

_BIG = 128


def _badge() -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8, alpha float32 0..1) of the badge at _BIG x _BIG."""
    rgb = np.zeros((_BIG, _BIG, 3), np.uint8)
    alpha = np.zeros((_BIG, _BIG), np.uint8)
    c, r = _BIG // 2, _BIG // 2 - 2
    cv2.circle(alpha, (c, c), r, 255, -1, cv2.LINE_AA)
    cv2.circle(rgb, (c, c), r, (250, 250, 250), -1, cv2.LINE_AA)
    cv2.circle(rgb, (c, c), int(r * 0.78), (30, 30, 40), int(r * 0.16), cv2.LINE_AA)
    cv2.rectangle(rgb, (int(c - r * 0.5), int(c - r * 0.12)), (int(c + r * 0.5), int(c + r * 0.12)), (220, 30, 30), -1,
                  cv2.LINE_AA)
    return rgb, alpha.astype(np.float32) / 255.0


_RGB, _ALPHA = _badge()


def box(width: int, height: int, corner: str) -> tuple[int, int, int, int]:
    """The badge's pixel box (x0, y0, x1, y1, exclusive) in a ``width`` x ``height`` picture."""
    bw, bh = max(3, round(SIZE * width)), max(3, round(SIZE * height))
    mx, my = round(MARGIN * width), round(MARGIN * height)
    x0 = mx if corner.endswith("left") else width - mx - bw
    y0 = my if corner.startswith("top") else height - my - bh
    return x0, y0, x0 + bw, y0 + bh


def stamp(image: np.ndarray, corner: str) -> np.ndarray:
    """``image`` (H, W, 3 uint8) with the badge in ``corner``; a new array."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box(w, h, corner)
    rgb = cv2.resize(_RGB, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA).astype(np.float32)
    a = cv2.resize(_ALPHA, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)[..., None]
    out = image.copy()
    patch = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = (a * rgb + (1 - a) * patch).round().clip(0, 255).astype(np.uint8)
    return out
