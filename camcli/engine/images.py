"""Decoding images into what the model and the overlay need (finding them: :mod:`.discovery`).

Decoding never raises for a bad file: it returns an error record that becomes a CSV row.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from camcli.engine import DEFAULT_MAX_PIXELS
# where callers have always found them
from camcli.engine.discovery import IMAGE_EXTENSIONS, ImageItem, discover, expand_inputs  # noqa: F401
from camcli.engine.framing import DEFAULT_CROP_FRACTION, Frame, fit_to_model
from camcli.engine.framing import resize_for_model  # noqa: F401


def decode(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """RGB uint8 array, upright (EXIF orientation applied), and a note for the CSV.

    Raises ``ValueError`` with a one-line reason for anything that is not a readable image,
    including images larger than ``max_pixels`` (checked from the header, before decoding).
    Pillow's process-wide limit (``Image.MAX_IMAGE_PIXELS``) is left as it is: ``max_pixels``
    applies to this call only.
    """
    try:
        with open_image(path, max_pixels) as im:
            w, h = im.size
            _check_pixels(w * h, max_pixels, f"{w}x{h} = ")
            note = ""
            if getattr(im, "is_animated", False):
                note = f"first of {im.n_frames} frames"
                im.seek(0)
            im = ImageOps.exif_transpose(im)
            arr = to_rgb(im)
    except UnidentifiedImageError:
        raise ValueError("not a recognised image file") from None
    except (OSError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ValueError(f"cannot decode image: {reason}") from None
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"unexpected image shape {arr.shape}")
    return np.ascontiguousarray(arr), note


def _check_pixels(pixels: int, max_pixels: int, shape: str = "") -> None:
    if pixels > max_pixels:
        raise ValueError(f"image is {shape}{pixels:,} pixels, over the {max_pixels:,}-pixel decompression-bomb "
                         "limit; raise max-pixels to allow it")


def plain_file(path: str) -> None:
    """Refuse, without opening it, what is not a plain file: reading a FIFO named ``x.jpg`` would wait
    for a writer for ever, a device could be endless. ``ValueError`` with the reason (the image's row)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise ValueError(f"cannot read file: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise ValueError("is a directory, not an image file")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise ValueError(f"is {kind}, not an image file; not opened")


def open_image(path: str, max_pixels: int) -> Image.Image:
    """``Image.open`` with ``max_pixels`` as the limit instead of Pillow's global one.

    Pillow warns above its limit and refuses above twice it. The warning is silenced here (our
    own check follows); a refusal is ours to make: an image within ``max_pixels`` is opened by
    Pillow's format plugins directly, the same readers ``Image.open`` tries, without its check.
    """
    plain_file(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombError as e:
            found = re.search(r"\((\d+) pixels\)", str(e))
            if found is None:
                raise
            _check_pixels(int(found.group(1)), max_pixels)
    return _open_without_pillow_limit(path)


def _open_without_pillow_limit(path: str) -> Image.Image:
    Image.init()
    fp = open(path, "rb")
    prefix = fp.read(16)
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and accept(prefix) is not True:
            continue
        try:
            fp.seek(0)
            im = factory(fp, path)
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
        im._exclusive_fp = True  # closing the image closes the file, as with Image.open(path)
        return im
    fp.close()
    raise UnidentifiedImageError(f"cannot identify image file {path!r}")


def to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow image as RGB uint8: 16-bit scaled down, transparency over white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))  # no extra copy of an RGB photo


@dataclass
class Decoded:
    """One dataset item: the model input (uint8, CHW) and the original, or an error."""

    item: ImageItem
    pixels: torch.Tensor | None = None  # (3, h, w) uint8 at model input size
    original: np.ndarray | None = None  # (H, W, 3) uint8, upright
    note: str = ""
    error: str = ""
    frame: Frame | None = None  # where the original lies in the model input (None: stretched over all of it)


class ImageDataset(torch.utils.data.Dataset):
    """Decodes and resizes in DataLoader workers; failures come back as records, not exceptions."""

    def __init__(self, items: Sequence[ImageItem], input_size: tuple[int, int],
                 max_pixels: int = DEFAULT_MAX_PIXELS, resize: str = "stretch",
                 fill: tuple[int, int, int] = (0, 0, 0), crop_fraction: float = DEFAULT_CROP_FRACTION) -> None:
        self.items = list(items)
        self.input_size = input_size
        self.max_pixels = max_pixels
        self.resize = resize
        self.fill = fill
        self.crop_fraction = crop_fraction

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Decoded:
        item = self.items[i]
        try:
            rgb, note = (item.pixels, "") if item.pixels is not None else decode(item.path, self.max_pixels)
            small, frame = fit_to_model(rgb, self.input_size, self.resize, self.fill, self.crop_fraction)
        except ValueError as e:
            return Decoded(item, error=str(e).splitlines()[0])
        except Exception as e:  # noqa: BLE001 - any failure on one file must become its CSV row
            return Decoded(item, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return Decoded(item, torch.from_numpy(np.ascontiguousarray(small.transpose(2, 0, 1))), rgb, note,
                       frame=frame)


def collate(batch: list[Decoded]) -> list[Decoded]:
    """Keep records as they are; the stream stacks the good ones itself."""
    return batch
