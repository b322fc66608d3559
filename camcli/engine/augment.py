"""Test-time augmentation for ``aug_smooth``: the same explanation on six versions of each image.

The six are pytorch-grad-cam's (through ttach): a horizontal flip or not, times the input
scaled by 0.9, 1 or 1.1 (the normalised tensor, as ttach's Multiply does). Every version is
explained for the class explained on the original image; each map is flipped back where the
image was flipped, and the six are averaged, then min-max scaled again. Maps get smoother and
less sensitive to one pixel grid; the cost is six explanations per image. A volume (N, C, X, Y, Z
in RAS order) is flipped across the patient's left and right, the x axis, as a mirror image of a
body is still a body; an image across its width.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from camcli.engine.methods.base import normalise

#: (flip horizontally, factor), the identity first
AUGMENTATIONS: tuple[tuple[bool, float], ...] = tuple((flip, f) for flip in (False, True) for f in (0.9, 1.0, 1.1))


def flipped_axis(x: torch.Tensor) -> int:
    """The spatial axis (0 first) a flip mirrors: an image's width, a volume's left-right (x)."""
    return x.dim() - 3 if x.dim() == 4 else 0


def augmented(x: torch.Tensor) -> Iterator[tuple[bool, torch.Tensor]]:
    """Each augmentation but the identity, as (flipped, input)."""
    for flip, factor in AUGMENTATIONS:
        if not flip and factor == 1.0:
            continue
        y = x.flip(2 + flipped_axis(x)) if flip else x
        yield flip, y * factor


def averaged(original: dict, explain: Callable[[torch.Tensor], dict], x: torch.Tensor) -> dict:
    """``original`` maps ({key: MapBatch}) averaged with those ``explain`` gives for every other
    augmentation of ``x``, each flipped back first."""
    total = {key: mb.maps.clone() for key, mb in original.items()}
    back = 1 + flipped_axis(x)  # the same axis of the maps (N, *grid)
    for flipped, y in augmented(x):
        for key, mb in explain(y).items():
            total[key] += mb.maps.flip(back) if flipped else mb.maps
    return {key: normalise(t / len(AUGMENTATIONS), relu=False) for key, t in total.items()}
