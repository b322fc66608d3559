"""What every task's explainer shares, in one place.

A classifier's classes (:mod:`~camcli.engine.explainer`), a detector's boxes
(:mod:`~camcli.engine.detection`) and a segmenter's regions (:mod:`~camcli.engine.segmentation`)
are explained the same way: the parameters frozen around one forward with the target layers
captured (:func:`~camcli.engine.capture.capture`), one partial backward per target rank (the r-th
targets of every image share it, since images are independent in a batch), each method run on
the pass and its maps brought to the host with the assumptions its formula makes measured, and
refused under ``strict``. The explainers differ only in how they read the model's output into
scores (their targets: a class score, a box score, a region score), which images get which ranks,
and which passes of a method's own they score with those targets; :class:`TaskExplainer` holds
the rest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from camcli.engine.capture import frozen_parameters
from camcli.engine.layer_names import display_name
from camcli.engine.methods import CAMMethod, taking
from camcli.engine.methods.assumptions import Check, failures, measure, on_host, refuse_failed
from camcli.engine.methods.base import ForwardPass
from camcli.errors import UsageError


class TaskExplainer:
    """The shared part of an explainer: its model, layers and methods (the ones its task cannot
    serve refused by what they declare), the gradient mode around a pass, the per-rank backward,
    and each method's maps on the host with their checked assumptions."""

    #: passes of a method's own this task scores with its targets (``masked``: the Score-CAM family,
    #: ``ablated``: Ablation-CAM), besides the layer-only methods; ``None``: every method is served
    scored_passes: ClassVar[str | None] = None
    #: what the task's maps explain and why other methods cannot, for the refusal
    explains: ClassVar[str] = ""
    why_not: ClassVar[str] = ""

    def __init__(self, model: nn.Module, layers: Sequence[str], methods: Sequence[CAMMethod],
                 strict: bool = False) -> None:
        if not layers or not methods:
            raise UsageError("at least one layer and one method are needed")
        if self.scored_passes is not None:
            served = taking(self.scored_passes)
            refused = [m.name for m in methods if m.name not in served]
            if refused:
                raise UsageError(f"method(s) {', '.join(refused)} cannot explain {self.explains}: {self.why_not}; "
                                 f"these can: {', '.join(served)}")
        self.model = model
        self.layers = list(dict.fromkeys(layers))
        self.methods = list(methods)
        self.strict = strict  # a failed assumption is a UsageError instead of a finding
        self.needs_gradients = any(m.needs_gradients for m in self.methods)
        #: methods that score passes of their own with the task's targets (not the shared pass)
        self.scoring = [m for m in self.methods
                        if self.scored_passes is not None and m.scores_passes == self.scored_passes]
        #: methods made from the shared forward alone (no gradients, no passes of their own)
        self.free = [m for m in self.methods if not m.needs_gradients and m not in self.scoring]
        self.channels: dict[str, int] = {}  # layer -> channels of its map, known once validated

    def map_keys(self) -> list[tuple[str, str]]:
        """(method, layer) of every map a target gets, in the order they come."""
        return [(m.name, layer) for m in self.methods for layer in self.layers]

    @contextlib.contextmanager
    def explaining(self) -> Iterator[None]:
        """Parameters frozen, and autograd on only where a method needs gradients."""
        with frozen_parameters(self.model), torch.inference_mode(not self.needs_gradients), \
                torch.set_grad_enabled(self.needs_gradients):
            yield

    @staticmethod
    def ranked_gradients(tensors: Sequence[torch.Tensor], objective: Callable[[int], torch.Tensor],
                         ranks: int) -> Iterator[tuple[int, list[torch.Tensor]]]:
        """(r, the gradient of ``objective(r)`` at each of ``tensors``) for every rank, one partial
        backward each; the graph is kept until the last rank."""
        for r in range(ranks):
            yield r, [g.detach() for g in layer_gradients(objective(r), tensors, retain=r < ranks - 1)]

    def host_maps(self, method: CAMMethod, fp: ForwardPass, layer: str, rows=None) -> HostMaps:
        """``method``'s maps at ``layer`` on the host (one copy per call) with the assumptions it
        makes, measured on the layer; under ``strict`` a failure on one of ``rows`` (None: any) is refused."""
        batch = method(fp, layer)
        checks = on_host(measure(method, layer, fp.activations[layer]))
        if self.strict:
            refuse_failed(method.name, layer, checks, rows)
        return HostMaps(batch.maps.detach().float().cpu(), batch.empty.cpu().tolist(), checks)


@dataclass(frozen=True)
class HostMaps:
    """A method's maps at one layer for the rows of a pass, on the host."""

    maps: torch.Tensor  # (N, h, w) float32 in [0, 1]
    empty: list[bool]
    checks: list[Check]

    def entry(self, row: int) -> tuple[torch.Tensor, bool, tuple]:
        """Row ``row``'s map, whether it is empty, and the assumptions it fails with their figures."""
        return self.maps[row], bool(self.empty[row]), failures(self.checks, row)


def layer_gradients(objective: torch.Tensor, tensors: Sequence[torch.Tensor], retain: bool,
                    create: bool = False) -> list[torch.Tensor]:
    """d ``objective`` / d each of ``tensors`` (zeros where it does not depend on one): a partial
    backward to the layers only, never to the parameters (they are frozen)."""
    grads = torch.autograd.grad(objective, list(tensors), allow_unused=True, retain_graph=retain,
                                create_graph=create)
    return [g if g is not None else torch.zeros_like(t) for t, g in zip(tensors, grads)]


def check_ran(store: dict, layers: Sequence[str]) -> None:
    """Refuse when a target layer was not called during the forward (a branch the model skipped)."""
    missing = [display_name(l) for l in layers if l not in store]
    if missing:
        raise UsageError(f"layer(s) {', '.join(missing)} did not run during the forward pass")
