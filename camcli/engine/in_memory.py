"""Images handed over in memory: PIL images, NumPy arrays and torch tensors, as ``camcli.explain``
takes them beside paths (as pytorch-grad-cam, torchcam, HuggingFace's ``pipeline`` and
Ultralytics do).

Each becomes an :class:`~camcli.engine.discovery.ImageItem` that carries its RGB pixels, named
``image-0000.png`` by its place in the input (the CSV's ``path``, the overlays' names). What a
tensor's axes or values mean is read by the conventions of its library, and refused where they
would have to be guessed: a NumPy array is ``H x W`` or ``H x W x C`` (PIL's and OpenCV's order;
OpenCV's BGR cannot be told from RGB, so arrays are taken as RGB), a tensor is ``C x H x W`` or a
batch ``N x C x H x W`` (torchvision's order); ``uint8`` is 0-255, floats must lie in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from camcli.engine.discovery import ImageItem, discover
from camcli.errors import UsageError


def is_in_memory(value) -> bool:
    """Whether ``value`` is an image object rather than a path."""
    if isinstance(value, np.ndarray):
        return True
    module = type(value).__module__
    return module.startswith("PIL.") or (module.startswith("torch") and hasattr(value, "dim"))


def items_of(inputs: Sequence, hidden: bool = False, out=None) -> list[ImageItem]:
    """Paths and in-memory images, in the order given: paths discovered as ``discover`` does,
    each image object (or each image of a batch tensor) one item carrying its pixels."""
    items: list[ImageItem] = []
    for value in inputs:
        if is_in_memory(value):
            for rgb in _pictures(value, len(items)):
                name = f"image-{len(items):04d}.png"
                items.append(ImageItem(len(items), name, name, rgb))
        else:
            for found in discover([value], hidden=hidden, out=out):
                items.append(ImageItem(len(items), found.path, found.rel))
    names = [i.rel for i in items]
    if len(set(names)) != len(names):
        raise UsageError("two inputs would be written under one name (a file named like image-0000.png beside images "
                         "given in memory): rename the file or pass the images apart")
    return items


def _pictures(value, first: int) -> list[np.ndarray]:
    where = f"the image given in memory at input {first}"
    if isinstance(value, np.ndarray):
        return [_from_array(value, where)]
    if type(value).__module__.startswith("PIL."):
        from PIL import ImageOps

        from camcli.engine.images import to_rgb

        return [np.ascontiguousarray(to_rgb(ImageOps.exif_transpose(value)))]
    tensor = value.detach().cpu()
    if tensor.dim() == 4:
        return [_from_tensor(t, f"{where}, batch image {k}") for k, t in enumerate(tensor)]
    return [_from_tensor(tensor, where)]


def _from_tensor(tensor, where: str) -> np.ndarray:
    if tensor.dim() != 3 or tensor.shape[0] not in (1, 3):
        raise UsageError(f"{where} is a tensor of shape {tuple(tensor.shape)}; camcli takes C x H x W (1 or 3 "
                         "channels) or N x C x H x W, as torchvision does")
    return _from_array(tensor.permute(1, 2, 0).numpy(), where)


def _from_array(a: np.ndarray, where: str) -> np.ndarray:
    if a.ndim == 3 and a.shape[2] not in (1, 3, 4) and a.shape[0] in (1, 3):
        raise UsageError(f"{where} is an array of shape {a.shape}: channels first? A NumPy image is H x W x C "
                         "(PIL's and OpenCV's order); pass a torch tensor for C x H x W")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise UsageError(f"{where} has shape {a.shape}; camcli takes H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA)")
    a = a[..., :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise UsageError(f"{where} holds floats outside [0, 1] (from {float(np.nanmin(a)):g} to "
                             f"{float(np.nanmax(a)):g}): pass uint8 pixels or floats scaled to [0, 1]; camcli "
                             "normalises them itself, so a normalised tensor would be normalised twice")
        return np.ascontiguousarray((a * 255.0 + 0.5).astype(np.uint8))
    raise UsageError(f"{where} is of type {a.dtype}; camcli takes uint8 pixels or floats in [0, 1]")
