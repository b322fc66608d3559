"""``fuse``: one map per method from its maps at several layers.

Early layers see fine detail and little of the class, late layers the class at a coarse grid.
Fusing them gives a map with both. Each layer's normalised map is upsampled (bilinear) to the
finest of the layers' grids (a volume's: trilinear) and the maps are combined point by point:

- ``max``: torchcam's ``fuse_cams`` (a position counts when any layer points at it);
- ``mean``: the average, a softer consensus;
- ``product``: RefineCAM's multiplication (a position counts only when every layer agrees).

The result is min-max scaled again and written as its own map, under the layer name that lists
the fused layers (``layer3+layer4[1]``); the per-layer maps are written as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from camcli.errors import UsageError
from camcli.engine import FUSIONS
from camcli.engine.methods.base import MapBatch, normalise
from camcli.engine.tensors import upsample

#: ``fuse`` -> how a stack of maps (layers first) becomes one
COMBINE = {"max": lambda stack: stack.amax(0), "mean": lambda stack: stack.mean(0),
           "product": lambda stack: stack.prod(0)}


def fused_name(layers: Sequence[str]) -> str:
    """The layer name a fused map is listed under: the layers joined by ``+``."""
    return "+".join(layers)


def check_fuse(fuse: str, layers: Sequence[str], methods: Sequence) -> None:
    """Refuse a fusion that is not one of :data:`FUSIONS`, or that has fewer than two layers to fuse."""
    if fuse not in FUSIONS:
        raise UsageError(f"unknown `fuse` {fuse!r}; choose one of {', '.join(FUSIONS)}")
    if len(layers) < 2:
        raise UsageError("`fuse` combines the maps of several layers; give two or more with `layer`")
    if not any(m.uses_layer for m in methods):
        raise UsageError(f"`fuse` needs a method that uses the target layer, and {', '.join(m.name for m in methods)} "
                         f"{'ignores' if len(methods) == 1 else 'ignore'} it")


def fused(maps: dict[tuple[str, str], MapBatch], how: str, layers: Sequence[str],
          methods: Sequence) -> dict[tuple[str, str], MapBatch]:
    """(method, fused layers) -> the fused map, for every method that uses the layer."""
    out = {}
    for method in methods:
        if not method.uses_layer:
            continue
        parts = [maps[(method.name, layer)].maps for layer in layers]
        size = max((tuple(p.shape[1:]) for p in parts), key=lambda grid: torch.Size(grid).numel())
        stack = torch.stack([p if tuple(p.shape[-2:]) == size else upsample(p, size) for p in parts])
        out[(method.name, fused_name(layers))] = normalise(COMBINE[how](stack), relu=False)
    return out
