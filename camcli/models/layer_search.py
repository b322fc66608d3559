"""Finding layers by running the model once: output shapes, and the default target layer.

A dummy forward with a hook on every module records what each one outputs and when it
finishes; ``camcli layers`` prints that, and :func:`default_layer` picks the last spatial map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from camcli.engine.tensors import first_tensor
from camcli.errors import UsageError


@dataclass(frozen=True)
class LayerInfo:
    """One module as seen during a dummy forward: its output shape and how often it ran."""

    name: str  # canonical dotted name
    shape: tuple[int, ...] | None  # first tensor output's shape, None if it never ran
    calls: int
    order: int  # position of its (first) forward completion; -1 if it never ran
    identity: tuple[int, int] | None = None  # (storage pointer, version) of that output


def trace_layers(model: nn.Module, input_size: tuple[int, int], device: torch.device | str = "cpu") -> list[LayerInfo]:
    """Run one dummy forward at ``input_size`` and record every module's output shape.

    Runs under ``no_grad`` rather than ``inference_mode`` so that tensors keep their version
    counter: a BatchNorm output later modified in place by ``+=`` and ``relu_`` shares storage
    with the block's output, and only the version tells them apart.
    """
    seen: dict[str, dict] = {}
    counter = [0]
    handles = []
    alive: list[torch.Tensor] = []  # freed storage is reused: keep outputs so pointers stay unique

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            entry = seen.get(name)
            if entry is None:
                tensor = first_tensor(output)
                if tensor is not None:
                    alive.append(tensor)
                seen[name] = entry = {
                    "shape": tuple(tensor.shape) if tensor is not None else None,
                    "identity": (tensor.data_ptr(), tensor._version) if tensor is not None else None,
                    "order": counter[0], "calls": 0}
            entry["calls"] += 1
            counter[0] += 1
        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook_for(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    infos = []
    for name, _module in model.named_modules():
        if not name:
            continue
        e = seen.get(name)
        infos.append(LayerInfo(name, e["shape"], e["calls"], e["order"], e["identity"]) if e
                     else LayerInfo(name, None, 0, -1))
    return infos


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Hardsigmoid,
                nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout)


def is_spatial(info: LayerInfo) -> bool:
    return info.shape is not None and len(info.shape) == 4 and info.shape[2] * info.shape[3] > 1


def default_layer(model: nn.Module, input_size: tuple[int, int], device: torch.device | str = "cpu") -> str:
    """The last module, in execution order, whose output is a spatial 4-D map (H, W > 1).

    Containers finish after their children, so several names can produce the very same map
    (``layer4`` and ``layer4.1`` in a ResNet). We take the deepest of those that runs once per
    forward and is not a bare activation, which is the name people write by hand
    (``layer4[1]``, ``features[30]`` in VGG, ``features.norm5`` in DenseNet). Adaptive pools
    are skipped: at the usual input size VGG's ``avgpool`` only copies the last map through.
    """
    infos = trace_layers(model, input_size, device)
    spatial = _spatial(model, infos)
    if not spatial:
        raise UsageError("this model has no module with a spatial 4-D output that runs once per forward; "
                         "CAM methods need a convolutional layer (pass `layer` explicitly)")
    return _last(model, spatial)


def earlier_layer(model: nn.Module, input_size: tuple[int, int], layer: str,
                  device: torch.device | str = "cpu") -> str | None:
    """The last spatial layer (chosen as :func:`default_layer` chooses) that runs before ``layer``,
    outside it, and outputs another map; ``None`` when there is none."""
    infos = trace_layers(model, input_size, device)
    this = next((i for i in infos if i.name == layer), None)
    if this is None or this.order < 0:
        return None
    spatial = [i for i in _spatial(model, infos) if i.order < this.order and i.identity != this.identity
               and not i.name.startswith(layer + ".")]
    return _last(model, spatial) if spatial else None


def _spatial(model: nn.Module, infos: list[LayerInfo]) -> list[LayerInfo]:
    modules = dict(model.named_modules())
    return [i for i in infos if i.calls == 1 and is_spatial(i)
            and not isinstance(modules[i.name], (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))]


def _last(model: nn.Module, spatial: list[LayerInfo]) -> str:
    modules = dict(model.named_modules())
    last = max(spatial, key=lambda i: i.order)
    same = [i for i in spatial if i.identity == last.identity and i.shape == last.shape]
    plain = [i for i in same if not isinstance(modules[i.name], _ACTIVATIONS)]
    return max(plain or same, key=lambda i: (i.name.count("."), -i.order)).name
