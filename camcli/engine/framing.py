"""How an image becomes the model's input, and how a map goes back onto the image.

Three ways to fit an image to the model's input (``resize``):

- ``stretch``: the whole image squashed to the input size (camcli's default: every pixel is
  seen, and a map covers the whole image; wide images are squeezed).
- ``letterbox``: scaled to fit inside, keeping its aspect ratio, and padded with the mean
  colour (which normalises to zero).
- ``crop``: scaled so that it covers the input, keeping its aspect ratio, and centre-cropped,
  as torchvision's presets do (shorter side to ``resize_size``, then ``crop_size``).

A :class:`Frame` records where the whole original image lies in input pixels. Maps are read
back through it: each original pixel samples the layer map where that pixel was in the input,
so a letterbox's padding never shows up as heat, and the border a crop cut away gets none.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

#: torchvision's ImageNet presets crop 224 out of 256; used when the weights do not say
DEFAULT_CROP_FRACTION = 224 / 256


@dataclass(frozen=True)
class Frame:
    """The original image's extent in model-input pixels: (x0, y0) to (x1, y1); may exceed the
    input (a crop) or leave a margin (a letterbox)."""

    x0: float
    y0: float
    x1: float
    y1: float


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    shrink = rgb.shape[0] > height or rgb.shape[1] > width
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_for_model(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The whole image squashed to (height, width): area averaging down, bilinear up."""
    return _resize(rgb, size[1], size[0])


def fit_to_model(rgb: np.ndarray, size: tuple[int, int], mode: str = "stretch",
                 fill: tuple[int, int, int] = (0, 0, 0),
                 crop_fraction: float = DEFAULT_CROP_FRACTION) -> tuple[np.ndarray, Frame | None]:
    """The model input (height x width x 3 uint8) and where the original lies in it
    (``None`` for ``stretch``: everywhere)."""
    h_in, w_in = size
    h, w = rgb.shape[:2]
    if mode == "none":  # the model fits images itself (a detector's transform)
        return rgb, None
    if mode == "stretch":
        return resize_for_model(rgb, size), None
    if mode == "letterbox":
        scale = min(h_in / h, w_in / w)
        nw, nh = max(1, min(w_in, round(w * scale))), max(1, min(h_in, round(h * scale)))
        left, top = (w_in - nw) // 2, (h_in - nh) // 2
        canvas = np.empty((h_in, w_in, 3), np.uint8)
        canvas[:] = fill
        canvas[top:top + nh, left:left + nw] = _resize(rgb, nw, nh)
        return canvas, Frame(left, top, left + nw, top + nh)
    if mode == "crop":
        scale = max(h_in / h, w_in / w) / crop_fraction
        nw, nh = max(w_in, round(w * scale)), max(h_in, round(h * scale))
        left, top = int(round((nw - w_in) / 2.0)), int(round((nh - h_in) / 2.0))
        cut = np.ascontiguousarray(_resize(rgb, nw, nh)[top:top + h_in, left:left + w_in])
        return cut, Frame(-left, -top, nw - left, nh - top)
    raise ValueError(f"unknown resize mode {mode!r}")


def map_to_image(layer_map: torch.Tensor, frame: Frame, input_size: tuple[int, int],
                 size: tuple[int, int]) -> torch.Tensor:
    """An (h, w) layer map covering the model input, read back at ``size`` (H, W) over the
    original image through ``frame``: bilinear with half-pixel centres, as ``F.interpolate``
    with ``align_corners=False`` does; pixels the model never saw (a crop's border) get 0.

    Separable: one (H, h) and one (W, w) weight matrix, so memory stays at the output's size.
    """
    rows, across = bilinear_weights(layer_map, frame, input_size, size)
    return (rows @ across).clamp_(0, 1)


def bilinear_weights(layer_map: torch.Tensor, frame: Frame, input_size: tuple[int, int],
                     size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, h) row weights and the (h, W) map already read across: any band of output rows is
    ``rows[top:bottom] @ across``, so a picture can be rendered a strip at a time."""
    rows = _weights(size[0], frame.y0, frame.y1, input_size[0], layer_map.shape[0])
    cols = _weights(size[1], frame.x0, frame.x1, input_size[1], layer_map.shape[1])
    return rows, layer_map.float() @ cols.T


def _weights(n_out: int, start: float, stop: float, n_in: int, n_map: int) -> torch.Tensor:
    """(n_out, n_map) bilinear weights: output pixel i sits at input coordinate
    ``start + (i + 0.5) * (stop - start) / n_out``; rows outside the input are all zero."""
    centre = start + (torch.arange(n_out, dtype=torch.float64) + 0.5) * (stop - start) / n_out
    q = (centre * n_map / n_in - 0.5).clamp(0, n_map - 1)
    low = q.floor().long()
    frac = q - low
    high = (low + 1).clamp(max=n_map - 1)
    w = torch.zeros(n_out, n_map, dtype=torch.float64)
    w.scatter_add_(1, low[:, None], (1 - frac)[:, None])
    w.scatter_add_(1, high[:, None], frac[:, None])
    seen = (centre >= 0) & (centre <= n_in)
    return (w * seen[:, None]).float()
