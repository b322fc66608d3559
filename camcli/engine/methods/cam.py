"""Classic CAM (Zhou et al., 2016): the classifier's weights for the class weight the feature maps.

Only defined when the layer feeds global average pooling and then a single linear layer
(ResNet's ``layer4`` -> ``avgpool`` -> ``fc``). We check that numerically on a dummy batch:
the logits must equal ``W @ mean(A) + b``; anything else gets a clear error.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from camcli.errors import UsageError
from camcli.engine.layer_names import display_name
from camcli.engine.methods import register
from camcli.engine.methods.base import CAMMethod, ForwardPass, model_logits, per_channel, spatial


def linear_head(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The last ``nn.Linear`` registered in the model: the classifier of GAP + linear networks."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    return found


@register
class CAM(CAMMethod):
    name = "cam"
    volumes = True  # global average pooling over every spatial axis, then the linear layer
    summary = "classifier weights of the class weight the feature maps (GAP + linear heads only)"
    paper = "Zhou et al., CVPR 2016, arXiv:1512.04150"
    needs_gradients = False
    cost = "1 forward"
    transformers = "only where a global average and one linear layer follow (Swin's permute; not ViT's class token)"

    def validate(self, fp: ForwardPass, layer: str) -> None:
        head = linear_head(fp.model)
        acts = fp.activations[layer]
        where = display_name(layer)
        why = None
        if head is None:
            why = "the model has no linear classifier"
        elif fp.target.kind == "similarity":
            why = "the cosine similarity of an embedding is not a weighted sum of the layer's channels"
        elif head[1].in_features != acts.shape[1]:
            why = (f"{where} has {acts.shape[1]} channels but the last linear layer "
                   f"({display_name(head[0])}) maps {head[1].in_features} -> {head[1].out_features}")
        else:
            # read through the target as the model's own output is (the binary head's [-z, z])
            predicted = dataclasses.replace(fp.target, output=None).table(self._logits_from_gap(head[1], acts))
            err = (predicted - fp.logits.float()).abs().max().item() if predicted.shape == fp.logits.shape \
                else float("inf")
            tol = 1e-3 * max(1.0, fp.logits.abs().max().item())
            if err > tol:
                why = (f"the logits are not a linear function of the global average of {where} "
                       f"(max difference {err:.3g})")
        if why:
            raise UsageError(f"method 'cam' needs a layer followed by global average pooling and one linear "
                             f"layer: {why}. Use `method` gradcam (or another gradient method) for this model/layer.")

    @staticmethod
    def _logits_from_gap(head: nn.Linear, acts: torch.Tensor) -> torch.Tensor:
        pooled = acts.float().mean(dim=spatial(acts))
        out = pooled @ head.weight.detach().float().t()
        if head.bias is not None:
            out = out + head.bias.detach().float()
        return out

    def weighted(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        acts = fp.activations[layer]
        return per_channel(self._weights(fp, layer), acts) * acts

    def raw_maps(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        return torch.einsum("nc,nc...->n...", self._weights(fp, layer), fp.activations[layer])

    @staticmethod
    def _weights(fp: ForwardPass, layer: str) -> torch.Tensor:
        """(N, C): the classifier's row for each explained class (the binary head's negative class
        is its one row negated; a regression explained "lower" negates it too)."""
        _, head = linear_head(fp.model)
        weight = head.weight.detach().to(fp.activations[layer].dtype)
        if fp.target.kind == "binary":
            return weight[0][None] * (2 * fp.targets.to(weight.device) - 1).to(weight.dtype)[:, None]
        return weight[fp.targets] * fp.target.direction


def cam_capable_layers(model: nn.Module, input_size: tuple[int, int], device: torch.device | str = "cpu") -> set[str]:
    """Layers where classic CAM applies: their global average, through the last linear layer,
    reproduces the logits. Checked on one random input with a single forward pass."""
    head = linear_head(model)
    if head is None:
        return set()
    outputs: dict[str, list[torch.Tensor | None]] = {}  # module -> its output at each call
    handles = []
    for name, module in model.named_modules():
        if name:
            def hook(_m, _i, out, name=name):
                fits = (isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[1] == head[1].in_features
                        and out.shape[2] * out.shape[3] > 1)  # a 1x1 map (avgpool) explains nothing
                outputs.setdefault(name, []).append(out.detach().clone() if fits else None)
            handles.append(module.register_forward_hook(hook))
    try:
        x = torch.rand(1, 3, *input_size, generator=torch.Generator().manual_seed(0)).to(device)
        with torch.inference_mode():
            logits = model_logits(model(x)).float()
    finally:
        for h in handles:
            h.remove()
    tol = 1e-3 * max(1.0, logits.abs().max().item())
    found = set()
    for name, calls in outputs.items():  # a module run several times is a layer per call (act#2)
        for k, acts in enumerate(calls, start=1):
            if acts is not None and (CAM._logits_from_gap(head[1], acts) - logits).abs().max().item() <= tol:
                found.add(name if len(calls) == 1 else f"{name}#{k}")
    return found
