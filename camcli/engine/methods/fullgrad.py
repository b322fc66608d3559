"""FullGrad (Srinivas & Fleuret 2019): input-gradient x input plus every bias's gradient.

A ReLU network's output is exactly the sum of ``grad_x f * x`` and, for every bias ``b``,
``grad_b f * b`` (the paper's full-gradient completeness). FullGrad shows all of it: the
input term and the bias-gradient of every convolution and BatchNorm, each made absolute,
min-max scaled and upsampled to the input, summed over channels and layers. It explains the
whole network, so it ignores the target layer and gives one map per image.

Following the paper's formula (sum over channels of psi(per-channel term)) and pytorch-grad-cam,
every channel is scaled on its own; the authors' code scales all channels of a layer together.
A BatchNorm's bias is its effective one, beta - mean * gamma / sqrt(var + eps). camcli folds
BatchNorm into the convolution before it; the folded convolution's bias is exactly that
effective bias, so the sum is unchanged (for convolutions with no bias of their own, which is
every torchvision model). Channels are scaled at the layer's resolution and upsampled after
summing, which equals upsampling each one (bilinear interpolation is linear).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from camcli.errors import UsageError
from camcli.engine.capture import removed_after
from camcli.engine.methods import register
from camcli.engine.methods.base import CAMMethod, ForwardPass
from camcli.engine.tensors import first_tensor, replace_first_tensor


def bias_of(module: nn.Module) -> torch.Tensor | None:
    """The bias a convolution or BatchNorm adds to its output, per channel (None: it adds none)."""
    if isinstance(module, nn.Conv2d):
        return None if module.bias is None else module.bias.detach()
    if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None:
        gamma = module.weight.detach() if module.weight is not None else torch.ones_like(module.running_mean)
        beta = module.bias.detach() if module.bias is not None else torch.zeros_like(module.running_mean)
        return beta - module.running_mean * gamma / torch.sqrt(module.running_var + module.eps)
    return None


def biased_modules(model: nn.Module) -> list[tuple[nn.Module, torch.Tensor]]:
    return [(m, b) for m in model.modules() if (b := bias_of(m)) is not None]


def scaled(t: torch.Tensor) -> torch.Tensor:
    """Per (image, channel) map: minus its minimum, over its maximum (pytorch-grad-cam's scale)."""
    flat = t.flatten(2)
    t = t - flat.min(2).values[..., None, None]
    return t / (1e-7 + t.flatten(2).max(2).values[..., None, None])


@register
class FullGrad(CAMMethod):
    name = "fullgrad"
    summary = "pixel-level: |input-gradient x input| plus |bias-gradient x bias| of every conv/BatchNorm; ignores the layer"
    paper = "Srinivas & Fleuret, NeurIPS 2019, arXiv:1905.00780"
    cost = "1 backward to the pixels (on the shared forward)"
    uses_layer = False
    pixel_level = True
    relu = False  # a sum of absolute values
    transformers = "no: refused where biases sit in LayerNorm or attention layers (ViT, Swin, ConvNeXt)"

    def validate(self, fp: ForwardPass, layer: str) -> None:
        elsewhere = sorted({type(m).__name__ for m in fp.model.modules()
                            if isinstance(m, (nn.LayerNorm, nn.MultiheadAttention))})
        if elsewhere:
            raise UsageError(f"fullgrad sums the bias-gradients of convolutions and BatchNorms, and this model also "
                             f"adds biases in {', '.join(elsewhere)} layers, which the map would leave out; use "
                             "gradcam (or legrad on a ViT)")
        if not biased_modules(fp.model):
            raise UsageError("fullgrad sums the bias-gradients of convolutions and BatchNorms, and this model has "
                             "none with a bias; use gradcam")

    watches = True  # its hooks ride on the shared forward: no second forward

    @contextmanager
    def watch(self, model: nn.Module, layers: list[str]) -> Iterator[_Recorder]:
        recorder = _Recorder()
        with removed_after([m.register_forward_hook(recorder.hook_for(b)) for m, b in biased_modules(model)]):
            yield recorder

    def raw_maps(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        return fp.cache[self.name]


class _Recorder:
    """Keeps every biased module's output during the forward, then sums the terms."""

    def __init__(self) -> None:
        self.outputs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (output, bias) per call

    def hook_for(self, bias: torch.Tensor):
        def hook(_module, _inputs, output):
            tensor = first_tensor(output)
            if tensor is None or tensor.dim() != 4 or not tensor.requires_grad:
                return None
            self.outputs.append((tensor, bias))
            # the model goes on with a copy: an in-place ReLU then cannot rewrite the output
            return replace_first_tensor(output, tensor.clone())
        return hook

    def finish(self, x: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, target) -> torch.Tensor:
        grads = torch.autograd.grad(target.scores(table, targets).sum(), [x] + [o for o, _ in self.outputs],
                                    allow_unused=True, retain_graph=True)
        size = tuple(x.shape[-2:])
        total = scaled((grads[0] * x).detach().float().abs()).sum(1)
        for (_, bias), g in zip(self.outputs, grads[1:]):
            if g is None:
                continue
            term = scaled((g.detach().float() * bias.view(1, -1, 1, 1).float()).abs()).sum(1, keepdim=True)
            total += F.interpolate(term, size=size, mode="bilinear", align_corners=False)[:, 0]
        self.outputs.clear()
        return total
