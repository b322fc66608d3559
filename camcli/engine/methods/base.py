"""The shared base of every CAM method, and the data one forward pass hands to them.

A method is a small class: it declares what it needs (gradients or not), optionally checks
that it applies to a model and layer, and turns a :class:`ForwardPass` into raw maps. The
base class owns what all methods share: keeping positive evidence, min-max normalising each
map to [0, 1], and flagging maps that carry no evidence at all instead of dividing by zero.
"""

from __future__ import annotations

import contextlib
import hashlib
from abc import ABC
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from camcli.errors import UsageError
from camcli.engine.layouts import Layout
from camcli.engine.methods.assumptions import Assumption
from camcli.engine.methods.principal import first_component
from camcli.engine.targets import Target, default_target, select_output


#: the layer name under which methods that ignore the target layer list their one map
INPUT_LAYER = "input"


@dataclass
class ForwardPass:
    """What one shared forward (and, if needed, one backward) produced for a batch."""

    model: nn.Module
    inputs: torch.Tensor  # (N, 3, H, W), preprocessed
    logits: torch.Tensor  # (N, K), detached
    targets: torch.Tensor  # (N,), the class explained for each image
    activations: dict[str, torch.Tensor]  # layer -> (N, C, h, w) map (see layouts), detached
    gradients: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> d score / d activation
    #: what is explained (head, score): methods score their own passes with ``target(output, index)``
    target: Target = field(default_factory=default_target)
    #: (N,) bool or None: the images whose maps will be used. Methods with per-image passes
    #: (Score-CAM, Ablation-CAM) skip the others; a resumed run recomputes finished images
    #: only so that their batch is the same as in the whole run.
    wanted: torch.Tensor | None = None
    #: layer -> how its output was read as the map above (transformers: tokens, channels-last)
    layouts: dict[str, Layout] = field(default_factory=dict)
    #: one seed per image for methods that draw random numbers; the stream derives them from the
    #: `seed` setting and each image's path, so a map does not depend on its batch or on a resume
    seeds: list[int] | None = None
    #: objective key -> layer -> gradient of that objective (methods with their own, Finer-CAM)
    objective_gradients: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    #: layer -> Hessian-vector product H·A of the score at the layer (Shapley-CAM)
    hessian_products: dict[str, torch.Tensor] = field(default_factory=dict)
    #: the same pass (model, targets, layers, gradients) on another input of the batch's shape:
    #: methods that average over noisy inputs (Smooth Grad-CAM++) call it
    again: Callable[[torch.Tensor], ForwardPass] | None = None
    #: per-batch results a method shares between its layers (noisy passes are run once)
    cache: dict[Any, Any] = field(default_factory=dict)

    def generator(self, i: int) -> torch.Generator:
        """A random generator for image ``i`` on the activations' device, seeded by its seed or,
        without seeds, by the image's own pixels (so a map never depends on its batch)."""
        device = next(iter(self.activations.values())).device if self.activations else self.inputs.device
        if self.seeds is not None:
            seed = self.seeds[i]
        else:
            seed = stable_seed(self.inputs[i].detach().float().contiguous().cpu().numpy().tobytes())
        return torch.Generator(device=device).manual_seed(seed)

    def layer_output(self, layer: str, maps: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """Maps laid out as ``layer`` outputs them, to hand back to the model (Ablation-CAM)."""
        layout = self.layouts.get(layer)
        return maps if layout is None or layout.kind == "nchw" else layout.from_map(maps, original)

    def wanted_images(self) -> list[int]:
        """Indices of the images whose maps are needed (all of them unless ``wanted`` says)."""
        if self.wanted is None:
            return list(range(self.inputs.shape[0]))
        return [i for i, w in enumerate(self.wanted.tolist()) if w]


@dataclass(frozen=True)
class MapBatch:
    """Normalised maps for a batch at layer resolution, and which of them were empty."""

    maps: torch.Tensor  # (N, h, w), float32 in [0, 1]
    empty: torch.Tensor  # (N,), bool: no positive evidence, map is all zeros


class CAMMethod(ABC):
    """Base class: subclasses set the class attributes and implement :meth:`raw_maps`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    paper: ClassVar[str]
    needs_gradients: ClassVar[bool] = True
    class_discriminative: ClassVar[bool] = True
    cost: ClassVar[str] = "1 forward + 1 partial backward"
    #: keep only positive evidence before normalising (the ReLU of Grad-CAM, eq. 2)
    relu: ClassVar[bool] = True
    #: constructor options this method takes; set when it registers, from the declarations in
    #: :mod:`camcli.engine.method_options` (torch-free, so the command line checks them early)
    options: ClassVar[tuple[str, ...]] = ()
    #: what the method's formula assumes of the layer, measured on every batch (assumptions.py)
    assumptions: ClassVar[tuple[Assumption, ...]] = ()
    #: whether it works on transformer layers (tokens, channels-last), or where it does not
    transformers: ClassVar[str] = "yes"
    #: False for methods that explain the whole network and ignore the target layer (FullGrad,
    #: Guided Backprop): one map per image, listed under the layer name ``input``
    uses_layer: ClassVar[bool] = True
    #: maps at the model input's resolution (gradients at the pixels), not at the layer's
    pixel_level: ClassVar[bool] = False
    #: needs the Hessian-vector product of the score at the layer (``fp.hessian_products``)
    needs_hessian: ClassVar[bool] = False
    #: the map is made from the layer's activations (and the score's gradients at it) alone: no
    #: passes, logits, classifier weights or hooks of its own, so it explains any differentiable
    #: score, a detector's box score included (:mod:`camcli.engine.detection`)
    layer_only: ClassVar[bool] = False
    #: makes maps with any number of spatial axes (a volume's (N, C, d, h, w), not only (N, C, h, w)):
    #: its formula and every reduction in it are taken over all of them
    volumes: ClassVar[bool] = False
    #: the passes of its own whose scores make the map, where any: ``masked`` (the input times
    #: each channel's upsampled map: the Score-CAM family), ``ablated`` (the layer with channels
    #: zeroed: Ablation-CAM). An explainer that scores such passes through its task's target
    #: (a box's score, a region's) takes the method; tasks accept methods by this, not by name
    scores_passes: ClassVar[str | None] = None

    #: the method reads the shared forward through hooks of its own (:meth:`watch`), with a
    #: graph back to the input, instead of running a pass of its own
    watches: ClassVar[bool] = False
    #: the method can watch the shared forward only when nothing else takes gradients from it
    #: (its hooks change the backward: Guided Backprop); otherwise it runs a pass of its own
    watches_alone: ClassVar[bool] = False

    def watch(self, model: nn.Module, layers: list[str]):
        """A context manager, active during the shared forward at ``layers``, that yields a recorder whose
        ``finish(x, table, targets, target)`` runs while the graph is alive and returns what
        :meth:`raw_maps` then finds in ``fp.cache[self.name]``; it must keep the graph."""
        return contextlib.nullcontext()

    def objective(self, logits: torch.Tensor, targets: torch.Tensor, target: Target) -> torch.Tensor | None:
        """(N,) scores whose gradients this method needs instead of the target's (Finer-CAM),
        or ``None``; computed on the shared forward, differentiable."""
        return None

    @property
    def objective_key(self) -> str | None:
        """Names the objective: methods with equal keys share one backward."""
        return None

    def validate(self, fp: ForwardPass, layer: str) -> None:
        """Raise ``UsageError`` if the method cannot be applied at ``layer``; called on a dummy batch."""

    #: the setting that cuts :meth:`passes_per_image` (named as the API spells it), for the run's log
    cut_by: ClassVar[str] = "`cam_batch_size` bounds their memory, not their number"

    def passes_per_image(self, channels: int) -> int:
        """Forward passes this method runs for each image at a layer of ``channels`` channels, beyond
        the shared one (at most: Score-CAM skips duplicate masks); 0 for one-pass methods."""
        return 0

    #: what the run's log should say about how the method applies to this model (set by validate)
    notes: list[str] = []

    #: replace the channel sum by its first principal component (pytorch-grad-cam's eigen_smooth);
    #: set by :func:`~camcli.engine.methods.get_method` for methods that are weighted sums
    eigen_smooth: bool = False

    def weighted(self, fp: ForwardPass, layer: str) -> torch.Tensor | None:
        """The (N, C, h, w) terms whose channel sum is the map, for methods that are weighted sums
        of the activations; ``None`` for the others (principal components)."""
        return None

    def raw_maps(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        """Unnormalised maps (N, h, w) for ``fp.targets`` at ``layer``: the channel sum of
        :meth:`weighted`, unless a subclass computes them another way."""
        terms = self.weighted(fp, layer)
        if terms is None:
            raise NotImplementedError(f"{type(self).__name__} defines neither weighted() nor raw_maps()")
        return terms.sum(1)

    def __call__(self, fp: ForwardPass, layer: str) -> MapBatch:
        if self.eigen_smooth:
            return normalise(first_component(self.weighted(fp, layer)), relu=self.relu)
        return normalise(self.raw_maps(fp, layer), relu=self.relu)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def noise_options(samples: int | None, std: float | None, default_samples: int,
                  default_std: float | None = None) -> tuple[int, float | None]:
    """``noise_samples`` and ``noise_std`` or their defaults, checked (the noisy methods share them)."""
    samples = default_samples if samples is None else int(samples)
    if samples < 1:
        raise UsageError(f"`noise_samples` must be at least 1, got {samples}")
    std = default_std if std is None else float(std)
    if std is not None and not std > 0:
        raise UsageError(f"`noise_std` must be above 0, got {std}")
    return samples, std


def stable_seed(data: bytes) -> int:
    """A 63-bit seed from bytes, the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def class_scores(logits: torch.Tensor, targets: torch.Tensor, score: str) -> torch.Tensor:
    """The explained class's logit, or its softmax probability, for each row (a softmax head's
    :meth:`~camcli.engine.targets.Target.scores`)."""
    return default_target("logit" if score == "logit" else "probability").scores(logits, targets)


def normalise(raw: torch.Tensor, relu: bool = True) -> MapBatch:
    """Per-map min-max scaling to [0, 1] in float32.

    A map with no spread (all zeros after the ReLU, or constant) is returned as zeros and
    flagged empty: a uniform "no evidence" answer, never NaN and never a stretched noise floor.
    """
    maps = raw.detach().float()
    if relu:
        maps = maps.clamp_min(0)
    flat = maps.flatten(1)
    lo = flat.min(1).values
    hi = flat.max(1).values
    span = hi - lo
    scale = torch.maximum(hi.abs(), lo.abs())
    empty = ~torch.isfinite(span) | (span <= scale * 1e-6) | (span == 0)
    span = torch.where(empty, torch.ones_like(span), span)
    shape = (-1,) + (1,) * (maps.dim() - 1)  # (N, h, w) maps, or (N, d, h, w) for volumes
    out = (maps - lo.view(shape)) / span.view(shape)
    out = torch.where(empty.view(shape), torch.zeros_like(out), out).clamp_(0, 1)
    return MapBatch(out, empty)


def spatial(t: torch.Tensor) -> tuple[int, ...]:
    """The spatial axes of an (N, C, h, w) map, or of a volume's (N, C, d, h, w)."""
    return tuple(range(2, t.dim()))


def per_channel(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N, C) weights shaped to multiply the (N, C, ...) map ``like``."""
    return weights.reshape(*weights.shape[:2], *(1,) * (like.dim() - 2))


def model_logits(output) -> torch.Tensor:
    """Models may return a tensor, a tuple (Inception's aux logits) or a dict with 'logits'."""
    tensor = select_output(output)
    if tensor.dim() != 2:
        raise UsageError(f"the model's output is not (N, classes) logits: got {tuple(tensor.shape)}")
    return tensor
