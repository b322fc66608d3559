"""One forward per batch shared by every method at every layer, with hooks that clean up.

The :class:`Explainer` hooks the target layers, runs the model once, takes the gradient of
the explained scores with ``torch.autograd.grad`` *with respect to the layer outputs only*
(parameters are frozen for the call, so no parameter ``.grad`` is ever computed or left
behind), and hands the result to each method. Hooks are removed and ``requires_grad``
flags restored in ``finally`` blocks, also when a method raises.

Each hook returns a copy of the layer output. Downstream in-place operations (ResNet's
``relu(inplace=True)``, VGG's ReLU after ``features[28]``) then modify the copy, and the
captured activation keeps its values and autograd history.

Methods see every layer as an (N, C, h, w) map. Transformer layers output tokens or
channels-last maps; each layer's :class:`~camcli.engine.layouts.Layout` is decided from the
first batch's shapes (never guessed), and the hook hands the model a copy made *from* the map,
so that the gradient with respect to the map is the layer's gradient, reshaped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from camcli.errors import UsageError
from camcli.engine.augment import averaged
from camcli.engine.capture import capture, frozen_parameters, layout_requests
from camcli.engine.fusion import check_fuse, fused, fused_name
from camcli.engine.layouts import Layout, detect, readings, rescaled_shapes, token_geometry
from camcli.engine.layer_names import display_name, resolve_layer
from camcli.engine.methods import CAMMethod
from camcli.engine.methods.assumptions import Check, measure, refuse_failed
from camcli.engine.methods.base import INPUT_LAYER, ForwardPass, MapBatch
from camcli.engine.targets import Target, default_target
from camcli.engine.task_explainer import TaskExplainer, check_ran, layer_gradients


@dataclass(frozen=True)
class BatchExplanation:
    """Predictions and normalised maps for one batch; maps are keyed by (method, layer)."""

    logits: torch.Tensor  # (N, K): the target's table (logits; the binary head's [-z, z])
    probs: torch.Tensor  # (N, K): what the target reports (probabilities under the head)
    targets: torch.Tensor  # (N,)
    maps: dict[tuple[str, str], MapBatch]
    #: (method, layer) -> the method's assumptions measured on this batch (methods that have any)
    checks: dict[tuple[str, str], list[Check]] = field(default_factory=dict)
    #: the shared pass, kept for :meth:`Explainer.further` (its graph too, when gradients were taken)
    shared: SharedPass | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class SharedPass:
    """What one forward leaves for explaining further classes of the same images: the input, the
    table, the layer maps (``graph``: the same maps still attached to the forward's graph, so that
    each further class costs one partial backward and no forward)."""

    inputs: torch.Tensor
    logits: torch.Tensor  # (N, K), attached to the graph when ``graph`` is
    activations: dict[str, torch.Tensor]  # detached
    graph: dict[str, torch.Tensor] | None
    layouts: dict[str, Layout]


class Explainer(TaskExplainer):
    """Explain batches with several methods at several layers of one model (a classifier's classes,
    or whatever score ``target`` reads from its output).

    >>> explainer = Explainer(model, ["layer4.1"], [get_method("gradcam")])  # doctest: +SKIP
    >>> result = explainer(batch)                                            # doctest: +SKIP
    >>> result.maps[("gradcam", "layer4.1")].maps.shape                      # doctest: +SKIP
    torch.Size([16, 7, 7])
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], methods: Sequence[CAMMethod],
                 score: str = "logit", precision: str = "fp32", strict: bool = False,
                 layer_layout: str | Sequence[str] = "auto", aug_smooth: bool = False,
                 fuse: str | None = None, target: Target | None = None) -> None:
        # every spelling the command line takes (layer4[-1], layer4.1, features[-1]#2); an unknown one is a UsageError
        super().__init__(model, [resolve_layer(model, spec) for spec in layers], methods, strict)
        #: what is explained: the head, the score and the classes (``score`` alone: a softmax head)
        self.target = target if target is not None else default_target(score)
        self.precision = precision
        self.aug_smooth = aug_smooth  # average over six flipped and brightened versions (engine/augment.py)
        self.fuse = fuse  # one more map per method: its maps at every layer fused (engine/fusion.py)
        if fuse is not None:
            check_fuse(fuse, self.layers, self.methods)
        # methods that ignore the layer run their own passes; the shared one serves the others
        self.needs_gradients = any(m.needs_gradients and m.uses_layer for m in self.methods)
        self.needs_hessian = any(m.needs_hessian for m in self.methods)
        #: methods that read the shared forward with hooks of their own (FullGrad, LeGrad)
        self.watchers = [m for m in self.methods if m.watches]
        if not self.needs_gradients and not self.watchers:
            self.watchers = [m for m in self.methods if m.watches_alone][:1]
        #: objective key -> the method that computes it (methods with their own objective)
        self.objectives = {m.objective_key: m for m in self.methods if m.objective_key is not None}
        self.requested = layout_requests(layer_layout, self.layers)
        self.geometry = token_geometry(model)
        #: (layer, input height, input width) -> how that layer's output reads as a map
        self.layouts: dict[tuple[str, int, int], Layout] = {}
        #: the same keys -> the layer's output shape for a larger input (only where 4-D was ambiguous)
        self.rescaled: dict[tuple[str, int, int], tuple[int, ...]] = {}
        self._validated = False  # the methods' own checks ran (validate, or the first batch called)

    @property
    def shares_forward(self) -> bool:
        """Whether further classes of a batch reuse its forward (a partial backward each, the graph
        kept until they are done): when an image may get several classes, unless a method watches
        the forward with hooks of its own, takes second derivatives or other objectives, or the
        maps are averaged over augmented inputs; those run the batch again per class."""
        return self.target.several and not (self.watchers or self.objectives or self.needs_hessian or self.aug_smooth)

    def layout(self, layer: str, input_size: tuple[int, int]) -> Layout | None:
        """How ``layer``'s output was read for inputs of ``input_size`` (None before the first batch)."""
        return self.layouts.get((layer, *input_size))

    def _layout(self, layer: str, tensor: torch.Tensor, size: tuple[int, int]) -> Layout:
        """How ``layer``'s output reads as a map for inputs of ``size``; decided once per size.

        Raises :class:`_NeedsProbe` when both 4-D readings fit and no larger-input shape is known
        yet: :meth:`forward` then measures one and runs again.
        """
        key = (layer, *size)
        if key not in self.layouts:
            shape = tuple(tensor.shape)
            rescaled = None
            if len(shape) in (4, 5) and self.requested[layer] == "auto" and \
                    len(readings(shape, size, self.geometry)) > 1:
                if key not in self.rescaled:
                    raise _NeedsProbe(layer)
                rescaled = self.rescaled[key]
            self.layouts[key] = detect(shape, size, self.geometry, self.requested[layer],
                                       where=f"layer {display_name(layer)}", rescaled=rescaled)
        return self.layouts[key]

    def _autocast(self, x: torch.Tensor):
        """Mixed precision for the shared forward (CUDA only; maps are computed in float32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=x.device.type, dtype=dtype)

    def _attention(self):
        """Second derivatives (``needs_hessian``) need the plain attention kernel: the fused
        CPU and flash kernels have no double backward."""
        if not self.needs_hessian:
            return contextlib.nullcontext()
        return sdpa_kernel([SDPBackend.MATH])

    def validate(self, input_size: tuple[int, ...], device: torch.device | str, channels: int = 3) -> None:
        """Check every method at every layer on one dummy batch before any image is processed
        (``input_size``: (H, W), or (D, H, W) for a volume; ``channels``: the input's)."""
        if len(input_size) > 2:  # a volume or a clip: refused before a method's watcher meets a depth axis
            refuse_flat(self.methods)
        x = torch.rand(1, channels, *input_size, generator=torch.Generator().manual_seed(0)).to(device)
        fp = self.forward(x, None)  # a layer whose output is no map is refused here
        self.channels = {layer: int(a.shape[1]) for layer, a in fp.activations.items()}
        self._check_methods(fp)

    def _check_methods(self, fp: ForwardPass) -> None:
        if fp.inputs.dim() > 4:  # a volume (or a clip): maps with a depth axis
            refuse_flat(self.methods)
        for method in self.methods:
            for layer in self.layers:
                method.validate(fp, layer)
        self._validated = True

    def forward(self, x: torch.Tensor, target: int | torch.Tensor | None) -> ForwardPass:
        """One forward (and partial backward when a method needs gradients) for a batch."""
        try:
            return self._forward(x, target)
        except _NeedsProbe:
            size = tuple(x.shape[2:])
            unsure = [l for l in self.layers if (l, *size) not in self.layouts]
            shapes = rescaled_shapes(self.model, unsure, x[:1].detach())
            self.rescaled.update({(l, *size): shapes.get(l, ()) for l in unsure})
            return self._forward(x, target)

    def _forward(self, x: torch.Tensor, target: int | torch.Tensor | None) -> ForwardPass:
        model = self.model
        size = tuple(x.shape[2:])  # (H, W), or (D, H, W) for a volume
        graph = self.needs_gradients or bool(self.watchers)
        gradients, hessian, objective_gradients, cache = {}, {}, {}, {}
        with frozen_parameters(model), capture(model, self.layers, self.needs_gradients,
                                               lambda l, t: self._layout(l, t, size)) as store, \
                contextlib.ExitStack() as watching:
            recorders = {m.name: watching.enter_context(m.watch(model, self.layers)) for m in self.watchers}
            if graph:
                with torch.inference_mode(False), torch.enable_grad():
                    x = x.clone()  # a normal tensor even if the caller made it in inference mode
                    if self.watchers:
                        x.requires_grad_(True)  # watchers take gradients back to the pixels
                    with self._autocast(x), self._attention():
                        logits = self.target.table(model(x))
                    targets = self._targets(logits, target)
                    for name, recorder in recorders.items():  # they keep the graph for what follows
                        cache[name] = recorder.finish(x, logits, targets, self.target)
                    if self.needs_gradients:
                        gradients, hessian, objective_gradients = self._backward(store, logits, targets)
            else:
                with torch.inference_mode(), self._autocast(x):
                    logits = self.target.table(model(x))
                    targets = self._targets(logits, target)
            check_ran(store, self.layers)
            activations = {l: store[l].detach() for l in self.layers}
        layouts = {l: self.layouts[(l, *size)] for l in self.layers}
        fp = ForwardPass(model, x.detach(), logits.detach(), targets, activations, gradients, self.target,
                         layouts=layouts, objective_gradients=objective_gradients, hessian_products=hessian,
                         again=lambda y: self.forward(y, targets), cache=cache)
        if self.shares_forward:
            fp.cache[SHARED] = SharedPass(x.detach(), logits if self.needs_gradients else logits.detach(),
                                          activations, {l: store[l] for l in self.layers} if self.needs_gradients
                                          else None, layouts)
        return fp

    def _backward(self, store, logits, targets):
        """Gradients of the score at every layer; Hessian-vector products and other objectives'
        gradients where methods need them."""
        check_ran(store, self.layers)
        acts = [store[l] for l in self.layers]
        more = bool(self.objectives)
        grads = layer_gradients(self.target.scores(logits, targets).sum(), acts,
                                retain=more or self.needs_hessian or self.shares_forward, create=self.needs_hessian)
        hessian = _hessian_products(acts, grads, self.layers, more) if self.needs_hessian else {}
        objective_gradients = {}
        for i, (key, method) in enumerate(self.objectives.items()):
            objective = method.objective(logits, targets, self.target)
            found = layer_gradients(objective.sum(), acts, retain=i < len(self.objectives) - 1)
            objective_gradients[key] = {l: g.detach() for l, g in zip(self.layers, found)}
        return {l: g.detach() for l, g in zip(self.layers, grads)}, hessian, objective_gradients

    def __call__(self, x: torch.Tensor, target: int | torch.Tensor | None = None,
                 wanted: Sequence[bool] | torch.Tensor | None = None,
                 seeds: Sequence[int] | None = None) -> BatchExplanation:
        """Explain a batch; ``wanted`` (one bool per image) lets per-image methods skip the images
        whose maps will be thrown away (their maps come back empty); ``seeds`` (one per image)
        seed the methods that draw random numbers (default: from each image's pixels)."""
        fp = self.forward(x, target)
        if not self._validated:  # called directly (the session validates first): the same refusals
            self._check_methods(fp)
        self._use(fp, x, wanted, seeds)
        maps = self._maps(fp)
        if self.aug_smooth:
            maps = averaged(maps, lambda y: self._maps(self._like(fp, self.forward(y, fp.targets))), x)
        return self._explanation(fp, maps, fp.cache.pop(SHARED, None))

    def further(self, first: BatchExplanation, x: torch.Tensor, target: torch.Tensor,
                wanted: Sequence[bool] | torch.Tensor | None = None,
                seeds: Sequence[int] | None = None) -> BatchExplanation:
        """Other classes ``target`` (one per image) of the images ``first`` explained: from ``first``'s
        pass, one partial backward and no forward, when the methods allow it; else as a call."""
        shared = first.shared
        if shared is None:
            return self(x, target, wanted=wanted, seeds=seeds)
        targets = self._targets(shared.logits.detach(), target)
        gradients = {}
        if shared.graph is not None:
            acts = [shared.graph[l] for l in self.layers]
            with torch.inference_mode(False), torch.enable_grad():
                grads = layer_gradients(self.target.scores(shared.logits, targets).sum(), acts, retain=True)
            gradients = {l: g.detach() for l, g in zip(self.layers, grads)}
        fp = ForwardPass(self.model, shared.inputs, shared.logits.detach(), targets, shared.activations, gradients,
                         self.target, layouts=shared.layouts, again=lambda y: self.forward(y, targets))
        self._use(fp, x, wanted, seeds)
        return self._explanation(fp, self._maps(fp), shared)

    def _explanation(self, fp: ForwardPass, maps: dict, shared: SharedPass | None) -> BatchExplanation:
        """A pass's maps (with the fused ones), its predictions and its measured assumptions."""
        if self.fuse is not None:
            maps.update(fused(maps, self.fuse, self.layers, self.methods))
        logits = fp.logits.float()
        return BatchExplanation(logits, self.target.values(logits), fp.targets, maps, self._check_assumptions(fp),
                                shared)

    @staticmethod
    def _use(fp: ForwardPass, x: torch.Tensor, wanted, seeds) -> None:
        """Give ``fp`` the images' seeds and which of them are wanted, checked against the batch."""
        if seeds is not None:
            if len(seeds) != x.shape[0]:
                raise ValueError(f"seeds has {len(seeds)} entries for a batch of {x.shape[0]}")
            fp.seeds = [int(s) for s in seeds]
        if wanted is not None:
            fp.wanted = torch.as_tensor(wanted, dtype=torch.bool).flatten()
            if fp.wanted.numel() != x.shape[0]:
                raise ValueError(f"wanted has {fp.wanted.numel()} entries for a batch of {x.shape[0]}")

    def map_keys(self) -> list[tuple[str, str]]:
        """(method, layer) of every map an image gets, in the order they come: a method that
        ignores the layer once (layer ``input``), then each method's fused set with ``fuse``."""
        keys = [(m.name, layer) for m in self.methods for layer in (self.layers if m.uses_layer else [INPUT_LAYER])]
        if self.fuse is not None:
            keys += [(m.name, fused_name(self.layers)) for m in self.methods if m.uses_layer]
        return keys

    def _maps(self, fp: ForwardPass) -> dict[tuple[str, str], MapBatch]:
        return {(method.name, layer): method(fp, layer) for method in self.methods
                for layer in (self.layers if method.uses_layer else [INPUT_LAYER])}

    @staticmethod
    def _like(original: ForwardPass, fp: ForwardPass) -> ForwardPass:
        """``fp`` with the original pass's image seeds and wanted images (an augmented pass)."""
        fp.seeds, fp.wanted = original.seeds, original.wanted
        return fp

    def _check_assumptions(self, fp: ForwardPass) -> dict[tuple[str, str], list[Check]]:
        """Measure every method's assumptions at every layer (each assumption once per layer)."""
        measured: dict = {}
        checks: dict[tuple[str, str], list[Check]] = {}
        for method in self.methods:
            for layer in self.layers:
                found = measure(method, layer, fp.activations[layer], measured)
                if found:
                    checks[(method.name, layer)] = found
                    if self.strict:
                        refuse_failed(method.name, layer, found, fp.wanted)
        return checks

    def _targets(self, logits: torch.Tensor, target: int | torch.Tensor | None) -> torch.Tensor:
        n, k = logits.shape
        if target is None:
            return self.target.first(logits)
        t = torch.as_tensor(target, device=logits.device).long().flatten()
        t = t.expand(n) if t.numel() == 1 else t
        if t.numel() != n or (t < 0).any() or (t >= k).any():
            raise UsageError(f"target class {target} is out of range for a model with {k} classes")
        return t



def _hessian_products(acts: list[torch.Tensor], grads: list[torch.Tensor], layers: Sequence[str],
                      retain: bool) -> dict[str, torch.Tensor]:
    """layer -> H·A, the Hessian of the score at the layer times the layer's own activations
    (zeros where the score is linear in the layer: ReLU networks after their last block)."""
    out = {}
    for i, (layer, a, g) in enumerate(zip(layers, acts, grads)):
        hvp = None
        if g.requires_grad:
            hvp = torch.autograd.grad(g, a, grad_outputs=a.detach(), allow_unused=True,
                                      retain_graph=retain or i < len(layers) - 1)[0]
        out[layer] = (hvp if hvp is not None else torch.zeros_like(a)).detach()
    return out


#: the key under which a forward pass carries its :class:`SharedPass` to :meth:`Explainer.__call__`
SHARED = "shared pass"


class _NeedsProbe(Exception):
    """Raised from a hook: a layer's 4-D output fits both layouts and needs a larger-input probe."""


def refuse_flat(methods: Sequence[CAMMethod]) -> None:
    """Refuse, on an input with more than two spatial axes, what is defined on flat images only."""
    flat = [m.name for m in methods if not m.volumes]
    if flat:
        from camcli.engine.methods import available

        these = ", ".join(name for name, cls in available().items() if cls.volumes)
        raise UsageError(f"method(s) {', '.join(flat)} make maps of flat images only (their masks, pixel gradients "
                         f"or passes of their own are two-dimensional in camcli); maps of volumes: {these}")

