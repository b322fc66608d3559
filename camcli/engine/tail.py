"""The part of a model that runs after a layer, as a module of its own.

Ablation-CAM changes a layer's output once per channel and needs the class score of each
change. Running the whole model for each copy recomputes everything before the layer, which
does not change: for ResNet's ``layer4[1]`` that is nearly all of the work, since only the
pooling and the classifier come after it. :func:`model_tail` cuts a ``torch.fx`` trace of the
model at the layer and keeps what depends on the layer's output; fed that output, it returns
what the model returns.

A tail is made only where the cut is clean, and ``None`` is returned otherwise (the caller
then runs the whole model, as before):

- the model traces (no control flow that depends on the data);
- the layer is called exactly once, returns a tensor, and the model's output depends on it.

Values computed before the layer and used after it (a residual connection around the layer, as
at a ViT block's ``ln_1``) become inputs of the tail of their own: :meth:`ModelTail.before`
computes them for an image with the part of the model they need, and each must be a tensor with
one row per image, since the tail gets it repeated for every ablated copy.

:meth:`ModelTail.reproduces` compares the tail with the whole model on two images (so that a
value without one row per image is found out), and callers check every batch before using it;
a tail that does not reproduce the model's output is never used.
"""

from __future__ import annotations

import weakref

import torch
from torch import fx, nn
from camcli.engine.layer_names import hook_layer


#: model -> layer -> its tail, or None where the model cannot be cut there
_TAILS: "weakref.WeakKeyDictionary[nn.Module, dict[str, ModelTail | None]]" = weakref.WeakKeyDictionary()
#: model -> layers whose tail once failed to reproduce the model
_FAILED: "weakref.WeakKeyDictionary[nn.Module, set[str]]" = weakref.WeakKeyDictionary()


class _LayerAsLeaf(fx.Tracer):
    """The default tracer, but the target layer is one call (not traced into)."""

    def __init__(self, layer: str) -> None:
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name == self.layer or super().is_leaf_module(m, module_qualified_name)


class ModelTail:
    """``tail(output, *before)``: the model's output given ``layer``'s output and the values from
    before the layer that are used after it (:meth:`before`); shares the model's modules and
    parameters (a change to the model's weights is a change to the tail's)."""

    def __init__(self, module: fx.GraphModule, prefix: fx.GraphModule | None, layer: str) -> None:
        self.module = module
        self.prefix = prefix  # the model's input -> the values crossing the cut (None: there are none)
        self.layer = layer

    def __call__(self, layer_output: torch.Tensor, *before: torch.Tensor):
        return self.module(layer_output, *before)

    def before(self, x: torch.Tensor) -> tuple[torch.Tensor | None, tuple[torch.Tensor, ...]] | None:
        """For the images ``x``, one run of the part of the model before the cut: the layer's
        output and the values crossing the cut. Where no value crosses nothing is run, and the
        layer's output is ``None``. ``None`` if a crossing value is not a tensor with a row per
        image (then the tail cannot be fed copies of one image)."""
        if self.prefix is None:
            return None, ()
        layer_output, *values = self.prefix(x)
        ok = all(isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == x.shape[0] for v in values)
        return (layer_output, tuple(values)) if ok else None

    def reproduces(self, model: nn.Module, images: torch.Tensor, logits_of) -> bool:
        """Whether the tail gives ``model``'s output on ``images`` (N, 3, H, W): the layer's output
        is read from a real forward, fed to the tail, and the two results (through
        ``logits_of``) compared. Callers check once per batch, so a model changed since the trace
        (a replaced module, a Python attribute the trace froze) is caught."""
        whole, layer_output = read_layer(model, self.layer, images)
        if not isinstance(layer_output, torch.Tensor):
            return False  # the tail takes a tensor: a layer that returns a tuple is not cut
        whole = logits_of(whole).float()
        try:
            before = self.before(images)
            if before is None:
                return False
            cut = logits_of(self(layer_output, *before[1])).float()
        except Exception:  # noqa: BLE001 - any failure means: do not use the tail
            return False
        tolerance = 1e-4 * (1 + float(whole.abs().max()))
        return cut.shape == whole.shape and bool(torch.allclose(cut, whole, rtol=1e-3, atol=tolerance))


def read_layer(model: nn.Module, layer: str, x: torch.Tensor):
    """One forward of ``x``: the model's output and ``layer``'s output (a copy where it is a
    tensor; a tuple or dict as the layer returned it)."""
    seen: dict[str, object] = {}

    def hook(_module, _inputs, output):
        seen["out"] = output.clone() if isinstance(output, torch.Tensor) else output

    handles = hook_layer(model, layer, hook)
    try:
        output = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return output, seen["out"]


def model_tail(model: nn.Module, layer: str) -> ModelTail | None:
    """The part of ``model`` after ``layer`` (a dotted module name), or ``None`` where the model
    cannot be cut cleanly there. Built once per model and layer (see :func:`forget`)."""
    per_model = _TAILS.setdefault(model, {})
    if layer not in per_model:
        per_model[layer] = _build(model, layer)
    return per_model[layer]


def forget(model: nn.Module, layer: str) -> None:
    """The tail of ``model`` at ``layer`` did not reproduce the model: trace the model again next
    time (it may have changed since), and after a second failure never cut it there."""
    per_model = _TAILS.setdefault(model, {})
    failed = _FAILED.setdefault(model, set())
    if layer in failed:
        per_model[layer] = None
    else:
        failed.add(layer)
        per_model.pop(layer, None)


def _build(model: nn.Module, layer: str) -> ModelTail | None:
    try:
        graph = _LayerAsLeaf(layer).trace(model)
    except Exception:  # noqa: BLE001 - data-dependent control flow, untraceable code: no tail
        return None
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
    if len(calls) != 1:
        return None
    cut = calls[0]
    after = _descendants(graph, {cut})
    output = next(n for n in graph.nodes if n.op == "output")
    if output not in after:
        return None
    crossing = {a for n in after if n is not cut for a in n.all_input_nodes if a not in after}
    on_input = _descendants(graph, {n for n in graph.nodes if n.op == "placeholder"})
    per_image = [n for n in graph.nodes if n in crossing and n in on_input]  # fed in, in graph order
    constants = _ancestors(crossing - set(per_image))  # parameters and what is made of them alone: copied
    tail = fx.Graph()
    env: dict[fx.Node, fx.Node] = {cut: tail.placeholder("layer_output")}
    for k, node in enumerate(per_image):
        env[node] = tail.placeholder(f"before_{k}")
    for node in graph.nodes:
        if node in constants or (node in after and node is not cut):
            env[node] = tail.node_copy(node, lambda a: env[a])
    tail.lint()
    prefix = None
    if per_image:
        prefix_graph = fx.Graph()
        needed = _ancestors({cut, *per_image})
        penv: dict[fx.Node, fx.Node] = {}
        for node in graph.nodes:
            if node in needed:
                penv[node] = prefix_graph.node_copy(node, lambda a: penv[a])
        prefix_graph.output(tuple(penv[n] for n in [cut, *per_image]))  # the layer's output too
        prefix_graph.lint()
        prefix = fx.GraphModule(model, prefix_graph)
    return ModelTail(fx.GraphModule(model, tail), prefix, layer)


def _descendants(graph: fx.Graph, roots: set[fx.Node]) -> set[fx.Node]:
    """``roots`` and every node that depends on one of them."""
    out = set(roots)
    for node in graph.nodes:
        if any(a in out for a in node.all_input_nodes):
            out.add(node)
    return out


def _ancestors(nodes: set[fx.Node]) -> set[fx.Node]:
    """``nodes`` and every node they depend on."""
    out, todo = set(), list(nodes)
    while todo:
        node = todo.pop()
        if node not in out:
            out.add(node)
            todo.extend(node.all_input_nodes)
    return out
