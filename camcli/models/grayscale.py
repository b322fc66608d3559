"""Models trained on one channel, fed camcli's RGB pictures: their first convolution computes on the luminance.

A checkpoint whose first convolution takes one channel (MNIST, X-rays) gets, in that place, an RGB
convolution whose weights are the grey ones times the ITU-R 601 luma coefficients: the same output
for the luminance Pillow's ``convert("L")`` gives, with the normalisation of all three channels
set to the grey one. The same happens for a model of one's own (a factory, a module handed over)
whose first convolution takes one channel, so every route reads grey models alike.
"""

from __future__ import annotations

import torch
from torch import nn

#: ITU-R 601-2 luma, as Pillow's convert("L") computes it
LUMA = (0.299, 0.587, 0.114)
#: a grayscale model's default normalisation: ImageNet's, averaged over the channels
GRAY_MEAN, GRAY_STD = (0.449,), (0.226,)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The model's first registered 2-D convolution, with its name."""
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def replace_first_conv(model: nn.Module, in_channels: int) -> tuple[nn.Conv2d, nn.Conv2d]:
    """Put a convolution like the first one, taking ``in_channels``, in its place; (old, new)."""
    name, conv = first_conv(model)
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None, conv.padding_mode)
    new.to(device=conv.weight.device, dtype=conv.weight.dtype)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
    return conv, new


def rgb_first_conv(model: nn.Module) -> None:
    """The loaded one-channel first convolution as an RGB one that computes it on the luminance."""
    gray, rgb = replace_first_conv(model, 3)
    with torch.no_grad():
        rgb.weight.copy_(gray.weight * torch.tensor(LUMA, dtype=gray.weight.dtype,
                                                    device=gray.weight.device).view(1, 3, 1, 1))
        if gray.bias is not None:
            rgb.bias.copy_(gray.bias)


def takes_one_channel(model: nn.Module) -> bool:
    """Whether the model's first convolution reads one channel (a model of one's own trained on grey images)."""
    first = first_conv(model)
    return first is not None and first[1].in_channels == 1 and first[1].groups == 1
