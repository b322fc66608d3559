"""Hooks that read target layers during a forward pass, and the parameter freeze around it.

:func:`capture` hooks the target layers; each hook returns a copy of the layer output made
*from* the (N, C, h, w) map it stores, so that downstream in-place operations (ResNet's
``relu(inplace=True)``) modify the copy, and the gradient with respect to the map is the
layer's gradient, reshaped (transformer layers: see :mod:`~camcli.engine.layouts`).
:func:`frozen_parameters` turns ``requires_grad`` off for a call, so no parameter ``.grad``
is ever computed or left behind. Both clean up in ``finally`` blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from camcli.errors import UsageError
from camcli.engine.layouts import LAYOUTS, NCHW, Layout
from camcli.engine.tensors import first_tensor, replace_first_tensor, replace_tensors, tensors_of
from camcli.engine.layer_names import display_name, hook_layer


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Turn ``requires_grad`` off for every parameter, and restore each flag afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def capture(model: nn.Module, layers: Sequence[str], track_grad: bool,
            layout_of: Callable[[str, torch.Tensor], Layout] | None = None,
            levels: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Hook ``layers``; the yielded dict fills with each layer's output, as an (N, C, h, w) map,
    during the forward. ``layout_of(layer, output)`` says how to read an output (default: as it is).
    ``levels``: every tensor of an output is kept, as a list (a detector backbone's FPN levels, read
    as they are), and the model goes on with copies of them."""
    store: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(layer: str):
        def hook(_module, _inputs, output):
            if layer in store:
                raise UsageError(f"layer {display_name(layer)} runs more than once per forward (a shared "
                                 f"module): name one of its calls, {display_name(layer)}#1, #2, ... (`camcli layers` "
                                 "lists them)")
            if levels:
                found = [t.requires_grad_(True) if track_grad and not t.requires_grad else t
                         for t in tensors_of(output)]
                store[layer] = found
                return replace_tensors(output, [t.clone() for t in found]) if found else None
            tensor = first_tensor(output)
            if tensor is None:
                raise UsageError(f"layer {display_name(layer)} produced no tensor")
            if track_grad and not tensor.requires_grad:
                tensor.requires_grad_(True)  # a leaf: frozen parameters and a plain input
            layout = layout_of(layer, tensor) if layout_of else NCHW
            store[layer] = layout.to_map(tensor)
            return replace_first_tensor(output, layout.from_map(store[layer], tensor))
        return hook

    with removed_after(handles):
        for layer in layers:
            handles += hook_layer(model, layer, hook_for(layer))
        yield store


def layout_requests(spec: str | Sequence[str] | None, layers: Sequence[str]) -> dict[str, str]:
    """The ``layer_layout`` setting per layer: one value for all, or one per layer, in order."""
    items = [spec] if spec is None or isinstance(spec, str) else list(spec)
    values = [part.strip().lower() for item in items for part in (item or "auto").split(",")]
    for v in values:
        if v not in LAYOUTS:
            raise UsageError(f"unknown `layer_layout` {v!r}; choose one of {', '.join(LAYOUTS)}")
    if len(values) == 1:
        return {layer: values[0] for layer in layers}
    if len(values) != len(layers):
        raise UsageError(f"`layer_layout` has {len(values)} values for {len(layers)} layers: give one for every "
                         "layer, or one for all")
    return dict(zip(layers, values))


@contextmanager
def removed_after(handles: list) -> Iterator[None]:
    """Hook handles removed when the block ends, also when it raises."""
    try:
        yield
    finally:
        for h in handles:
            h.remove()
