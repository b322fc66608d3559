"""Small tensor helpers the engine shares: the tensor inside a module's output, and map resizing."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F


def upsample(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(h, w) or (N, h, w) map(s) -> same at ``size`` (H, W), bilinear, clamped to [0, 1]; a
    volume's (d, h, w) or (N, d, h, w) at ``size`` (D, H, W), trilinear."""
    single = maps.dim() == len(size)
    x = maps[None, None] if single else maps[:, None]
    mode = "bilinear" if len(size) == 2 else "trilinear"
    y = F.interpolate(x.float(), size=tuple(size), mode=mode, align_corners=False).clamp_(0, 1)
    return y[0, 0] if single else y[:, 0]


def first_tensor(output) -> torch.Tensor | None:
    """The tensor a layer produced; for tuple/list/dict outputs, the first tensor inside."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            t = first_tensor(item)
            if t is not None:
                return t
    if isinstance(output, dict):
        for item in output.values():
            t = first_tensor(item)
            if t is not None:
                return t
    return None


def replace_first_tensor(output, new: torch.Tensor):
    """``output`` with its first tensor (see :func:`first_tensor`) replaced by ``new``."""
    if isinstance(output, torch.Tensor):
        return new
    if isinstance(output, (tuple, list)):
        items = list(output)
        for i, item in enumerate(items):
            if first_tensor(item) is not None:
                items[i] = replace_first_tensor(item, new)
                break
        return type(output)(items) if not hasattr(output, "_fields") else type(output)(*items)
    if isinstance(output, dict):
        out = dict(output)
        for k, item in out.items():
            if first_tensor(item) is not None:
                out[k] = replace_first_tensor(item, new)
                break
        return type(output)(out)
    return output


def tensors_of(output) -> list[torch.Tensor]:
    """Every tensor a layer produced: one tensor, or the tensors of a dict/list/tuple (a detector
    backbone's FPN levels); empty when it produced none."""
    if isinstance(output, torch.Tensor):
        return [output]
    items = list(output.values()) if isinstance(output, Mapping) else list(output) \
        if isinstance(output, (list, tuple)) else []
    return [t for t in items if isinstance(t, torch.Tensor)]


def replace_tensors(output, new: list[torch.Tensor]):
    """``output`` with the tensors :func:`tensors_of` finds replaced by ``new``, in order, in a
    container of the same type."""
    if isinstance(output, torch.Tensor):
        return new[0]
    it = iter(new)
    if isinstance(output, Mapping):
        return type(output)((k, next(it) if isinstance(v, torch.Tensor) else v) for k, v in output.items())
    return type(output)(next(it) if isinstance(v, torch.Tensor) else v for v in output)


def uses_channels_last(model) -> bool:
    """Whether the model's convolutions are channels-last (inputs are then made so too)."""
    for p in model.parameters():
        if p.dim() == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False
