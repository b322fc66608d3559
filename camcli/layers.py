"""Naming, finding and auto-selecting the layer a CAM is computed at.

Users write layers the way they index the model in Python (``layer4[1]``, ``layer4[-1]``,
``features[28]``) or the way ``named_modules`` spells them (``layer4.1``, ``features.28``).
Both resolve to the same canonical dotted name; we display the bracket form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from camcli.errors import UsageError, closest

_TOKEN = re.compile(r"\s*(?:\.?\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*(-?\d+)\s*\]|\.?\s*(-?\d+))")


def parse_layer(spec: str) -> list[str | int]:
    """Split ``'layer4[1]'``, ``'layer4.1'`` or ``'features[-1].conv'`` into attribute/index parts."""
    text = spec.strip()
    if not text:
        raise UsageError("empty --layer name")
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise UsageError(f"cannot parse layer name {spec!r} at {text[pos:]!r}; write it like layer4[1] or layer4.1")
        name, bracket, bare = m.groups()
        parts.append(name if name is not None else int(bracket if bracket is not None else bare))
        pos = m.end()
    return parts


def display_name(dotted: str) -> str:
    """``'layer4.1'`` -> ``'layer4[1]'``; ``'features.norm5'`` stays as it is."""
    out = ""
    for part in dotted.split("."):
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def file_safe(dotted: str) -> str:
    """Layer name usable in a file name on every platform (``layer4.1``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", dotted) or "model"


def resolve_layer(model: nn.Module, spec: str) -> str:
    """Canonical dotted name of the module ``spec`` points at, or a ``UsageError`` with suggestions."""
    modules = dict(model.named_modules())
    if spec.strip() in modules and spec.strip():
        return spec.strip()
    path: list[str] = []
    module = model
    for part in parse_layer(spec):
        children = list(module.named_children())
        if isinstance(part, int):
            if not children:
                break
            index = part + len(children) if part < 0 else part
            if not 0 <= index < len(children):
                raise _unknown_layer(model, spec, f"index {part} is out of range ({len(children)} children)")
            name, module = children[index]
        else:
            sub = dict(children)
            if part not in sub:
                raise _unknown_layer(model, spec)
            name, module = part, sub[part]
        path.append(name)
    else:
        return ".".join(path)
    raise _unknown_layer(model, spec)


def _unknown_layer(model: nn.Module, spec: str, why: str = "") -> UsageError:
    names = [n for n, _ in model.named_modules() if n]
    shown = [display_name(n) for n in names]
    near = closest(spec.strip(), shown + names, n=5)
    near = list(dict.fromkeys(display_name(n) if n in names else n for n in near))
    msg = f"unknown layer {spec!r}" + (f" ({why})" if why else "")
    if near:
        msg += "; closest: " + ", ".join(near)
    msg += ". See every name with `camcli layers MODEL`."
    return UsageError(msg)


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
    modules = dict(model.named_modules())
    spatial = [i for i in infos if i.calls == 1 and is_spatial(i)
               and not isinstance(modules[i.name], (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))]
    if not spatial:
        raise UsageError("this model has no module with a spatial 4-D output that runs once per forward; "
                         "CAM methods need a convolutional layer (pass --layer explicitly)")
    last = max(spatial, key=lambda i: i.order)
    same = [i for i in spatial if i.identity == last.identity and i.shape == last.shape]
    plain = [i for i in same if not isinstance(modules[i.name], _ACTIVATIONS)]
    return max(plain or same, key=lambda i: (i.name.count("."), -i.order)).name


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
