"""Batches bounded by bytes as well as by count, planned from the images' headers.

A batch of sixteen 24-megapixel photos is 1.2 GB of decoded pixels, held by a loader worker,
copied to the main process and kept until the overlays are written. :func:`plan_batches` reads
each image's size from its header (no decoding) and cuts a batch before it would exceed a byte
limit; an image larger than the limit gets a batch of its own. Small images batch exactly as
by count, and the plan depends only on the files, so a resumed run recomputes the same batches.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from camcli.engine.images import ImageItem, open_image

#: bytes of one decoded RGB pixel
BYTES_PER_PIXEL = 3


def image_pixels(path: str) -> int:
    """Width x height from the image's header (0 when it cannot be read: decoding will say why)."""
    try:
        with open_image(path, sys.maxsize) as im:
            w, h = im.size
        return w * h
    except Exception:  # noqa: BLE001 - unreadable, vanished, not an image: the decoder reports it
        return 0


def plan_batches(items: Sequence[ImageItem], pixels: Sequence[int], batch_size: int,
                 max_bytes: int) -> list[list[ImageItem]]:
    """Consecutive batches of at most ``batch_size`` images and at most ``max_bytes`` of decoded pixels."""
    batches: list[list[ImageItem]] = []
    current: list[ImageItem] = []
    size = 0
    for item, px in zip(items, pixels):
        cost = px * BYTES_PER_PIXEL
        if current and (len(current) >= batch_size or size + cost > max_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(item)
        size += cost
    if current:
        batches.append(current)
    return batches
