"""Finding layers by running the model once: output shapes, and the default target layer.

A dummy forward with a hook on every module records what each one outputs and when it
finishes, and how that output reads as a map (:mod:`camcli.engine.layouts`: as it is,
channels-last, or tokens); ``camcli layers`` prints that, and :func:`default_layer` picks the
last map that carries class evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from camcli.engine.layer_names import hook_layer, split_call
from camcli.engine.methods.cam import linear_head
from camcli.engine.layouts import Layout, by_scaling, readings, rescaled_shapes, token_geometry
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
    #: every way the output reads as a map of the input (one: a usable layer; two: ambiguous)
    layouts: tuple[Layout, ...] = ()

    @property
    def layout(self) -> Layout | None:
        """The one reading of the output as a map, or None (not a map, or ambiguous)."""
        return self.layouts[0] if len(self.layouts) == 1 else None

    def describe(self) -> str:
        """The output as ``camcli layers`` shows it: ``512x7x7``, ``tokens 197x768 -> 14x14``."""
        if self.shape is None:
            return "-"
        if self.layout is not None:
            return self.layout.describe(self.shape)
        dims = "x".join(map(str, self.shape[1:]))
        return dims + (f" (reads as {' or '.join(l.kind for l in self.layouts)})" if self.layouts else "")


def trace_layers(model: nn.Module, input_size: tuple[int, ...], device: torch.device | str = "cpu",
                 channels: int = 3) -> list[LayerInfo]:
    """Run one dummy forward at ``input_size`` (of ``channels``; a volume's (D, H, W)) and record
    every module's output shape.

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
            tensor = first_tensor(output)
            if tensor is not None:
                alive.append(tensor)
            call = {"shape": tuple(tensor.shape) if tensor is not None else None,
                    "identity": (tensor.data_ptr(), tensor._version) if tensor is not None else None,
                    "order": counter[0]}
            entry = seen.setdefault(name, {**call, "calls": 0, "each": []})
            entry["calls"] += 1
            entry["each"].append(call)
            counter[0] += 1
        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook_for(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, channels, *input_size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    for name, e in list(seen.items()):  # a module run several times: one layer per call, act#1, act#2, ...
        if e["calls"] > 1:
            for k, call in enumerate(e["each"], start=1):
                seen[f"{name}#{k}"] = {**call, "calls": 1}
    geometry = token_geometry(model)
    found = {name: readings(e["shape"], input_size, geometry) if e["shape"] else [] for name, e in seen.items()}
    unsure = [name for name, r in found.items() if len(r) > 1 and len(seen[name]["shape"]) == 4]
    if unsure:  # both readings fit: the axes that grow with the input are the spatial ones
        was_training = model.training
        try:
            rescaled = rescaled_shapes(model.eval(), unsure, torch.zeros(1, channels, *input_size, device=device))
        finally:
            model.train(was_training)
        for name in unsure:
            found[name] = by_scaling(found[name], seen[name]["shape"], rescaled.get(name)) or found[name]
    infos = []
    for name, _module in model.named_modules():
        if not name:
            continue
        e = seen.get(name)
        infos.append(LayerInfo(name, e["shape"], e["calls"], e["order"], e["identity"], tuple(found[name])) if e
                     else LayerInfo(name, None, 0, -1))
        for k in range(1, (e["calls"] + 1) if e and e["calls"] > 1 else 0):
            c = seen[f"{name}#{k}"]
            infos.append(LayerInfo(f"{name}#{k}", c["shape"], 1, c["order"], c["identity"], tuple(found[f"{name}#{k}"])))
    return infos


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Hardsigmoid,
                nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout)


def is_spatial(info: LayerInfo) -> bool:
    """A layer whose output reads one way as a map larger than 1x1."""
    if info.layout is None:
        return False
    h, w = info.layout.grid_of(info.shape)
    return h * w > 1


def default_layer(model: nn.Module, input_size: tuple[int, int], device: torch.device | str = "cpu",
                  infos: list[LayerInfo] | None = None) -> str:
    """The last module, in execution order, whose output is a spatial map that carries class evidence.

    Containers finish after their children, so several names can produce the very same map
    (``layer4`` and ``layer4.1`` in a ResNet). We take the deepest of those that runs once per
    forward and is not a bare activation, preferring a numbered block (``layer4[1]``,
    ``blocks[3].layers[1]`` in MaxViT) over the operations inside it, which is the name people
    write by hand (``features[30]`` in VGG, ``features.norm5`` in DenseNet). Adaptive pools are
    skipped: at the usual input size VGG's ``avgpool`` only copies the last map through.

    Token and channels-last layers must also receive gradient on their patch positions: after
    ViT's last attention only the class token reaches the head, so maps there would be blank;
    the last block's ``ln_1`` (timm: ``norm1``) is the last layer on the residual stream whose
    patch tokens matter. ``infos``: a :func:`trace_layers` result for the same input size, if
    the caller has one.
    """
    infos = infos if infos is not None else trace_layers(model, input_size, device)
    spatial = _spatial(model, infos)
    if not spatial:
        raise UsageError("this model has no module whose output reads as a spatial map (N, C, H, W), channels-last "
                         "or patch tokens, and runs once per forward; pass `layer` explicitly")
    last = max(spatial, key=lambda i: i.order)
    if last.layout.kind != "nchw":
        # on the residual stream (the width the head reads: not timm's fused qkv projection)
        width = last.layout.channels_of(last.shape)
        # a Linear inside attention (HuggingFace's separate q/k/v projections) is no value on the stream
        stream = [i for i in spatial if i.layout.kind != "nchw" and i.layout.channels_of(i.shape) == width
                  and not isinstance(_module(model, i.name), nn.Linear)]
        reached = _with_patch_gradient(model, stream, input_size, device)
        spatial = [i for i in spatial if i.layout.kind == "nchw" or i.name in reached] or spatial
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


def _module(model: nn.Module, layer: str) -> nn.Module:
    """The module a layer name means (``act#2``: ``act``)."""
    return model.get_submodule(split_call(layer)[0])


def _spatial(model: nn.Module, infos: list[LayerInfo]) -> list[LayerInfo]:
    return [i for i in infos if i.calls == 1 and is_spatial(i)
            and not isinstance(_module(model, i.name), (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))]


def _with_patch_gradient(model: nn.Module, infos: list[LayerInfo], input_size: tuple[int, int],
                         device: torch.device | str) -> set[str]:
    """Names among ``infos`` whose map positions receive a non-zero gradient of the logits."""
    store: dict[str, torch.Tensor] = {}
    handles = []
    for info in infos:
        def hook(_m, _i, output, name=info.name):
            store[name] = first_tensor(output)
        handles += hook_layer(model, info.name, hook)
    # What reaches the classifier, seen through a random projection: a freshly built head can
    # be all zeros (torchvision's ViT), and a plain sum cancels after a LayerNorm.
    head = linear_head(model)
    if head is not None:
        handles.append(head[1].register_forward_hook(lambda _m, inputs, _o: store.__setitem__("", inputs[0])))
    was_training = model.training
    generator = torch.Generator().manual_seed(0)
    try:
        model.eval()
        x = torch.rand(1, 3, *input_size, generator=generator).to(device).requires_grad_(True)
        with torch.enable_grad():
            output = model(x)
            out = store.get("")
            out = out if out is not None else first_tensor(output)
            objective = (out.float() * torch.randn(out.shape, generator=generator).to(out.device)).sum()
            names = [i.name for i in infos if i.name in store and store[i.name].requires_grad]
            grads = torch.autograd.grad(objective, [store[n] for n in names], allow_unused=True)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    layout = {i.name: i.layout for i in infos}
    return {n for n, g in zip(names, grads) if g is not None and bool(layout[n].to_map(g).abs().sum() > 0)}


def _last(model: nn.Module, spatial: list[LayerInfo]) -> str:
    last = max(spatial, key=lambda i: i.order)
    same = [i for i in spatial if i.identity == last.identity and i.shape == last.shape]
    plain = [i for i in same if not isinstance(_module(model, i.name), _ACTIVATIONS)] or same
    blocks = [i for i in plain if i.name.rsplit(".", 1)[-1].isdigit()] or plain
    return max(blocks, key=lambda i: (i.name.count("."), -i.order)).name
