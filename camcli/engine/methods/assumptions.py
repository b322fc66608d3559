"""What a method assumes of the layer it explains, measured on every batch.

Some formulas are derived for feature maps of a particular kind, and turn fragile elsewhere:
Grad-CAM++ and XGrad-CAM divide by each channel's activation sum, which the papers take from
rectified (non-negative) maps; with signed activations (SiLU, GELU, a residual sum, a
BatchNorm output) some sums sit near zero and a tiny change in the denominator turns the map
around. Eigen-CAM's map is the first principal component, which is only defined when the first
singular value stands clear of the second. A method lists its :class:`Assumption` objects; the
explainer measures each one per image and reports the images where it fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from camcli.errors import UsageError


@dataclass(frozen=True)
class Check:
    """One assumption measured on a batch: a figure per image, and which images fail it."""

    assumption: Assumption
    values: torch.Tensor  # (N,) the measured figure
    failed: torch.Tensor  # (N,) bool


class Assumption:
    """Base class: a name, the figure measured, when it fails, and what to do then."""

    name: ClassVar[str]  # "non-negative activations"
    figure: ClassVar[str]  # what ``measure`` returns, e.g. "negative share of the activation mass"
    advice: ClassVar[str]

    def measure(self, acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, failed), each (N,), from the layer's activations (N, C, h, w)."""
        raise NotImplementedError

    def describe(self, value: float) -> str:
        """What failed, in words, with the figure."""
        raise NotImplementedError

    def check(self, acts: torch.Tensor) -> Check:
        values, failed = self.measure(acts.float())
        return Check(self, values, failed)


class NonNegativeActivations(Assumption):
    """The layer's activations are rectified: negative values carry at most 1% of their mass."""

    name = "non-negative activations"
    figure = "negative share of the activation mass"
    advice = ("explain a rectified layer (the output of a ReLU, such as a ResNet block's output) or use "
              "gradcam, hirescam or layercam, whose weights do not divide by the activation sums")
    #: a negative share above this fails; rectified layers measure 0 exactly
    limit = 0.01

    def measure(self, acts):
        magnitude = acts.abs().flatten(1).sum(1)
        negative = (-acts).clamp_min(0).flatten(1).sum(1)
        share = torch.where(magnitude > 0, negative / torch.where(magnitude > 0, magnitude, 1.0), 0.0)
        return share, share > self.limit

    def describe(self, value):
        return f"{value:.0%} of the activation mass is negative (the formula assumes rectified maps)"


class SeparatedFirstComponent(Assumption):
    """The first singular value of the centred activations stands clear of the second."""

    name = "a well-separated first principal component"
    figure = "second / first singular value"
    advice = ("the principal axis is ill-defined here: use a class-discriminative method (gradcam) or "
              "another layer")
    #: sigma2 / sigma1 above this fails: the two leading axes are within 10% of each other
    limit = 0.9

    def measure(self, acts):
        x = acts.flatten(2).transpose(1, 2)  # (N, hw, C): positions are samples
        x = x - x.mean(dim=1, keepdim=True)
        s = torch.linalg.svdvals(x)  # (N, min(hw, C)), descending
        if s.shape[1] < 2:
            ratio = torch.zeros(s.shape[0], device=s.device)
        else:
            ratio = torch.where(s[:, 0] > 0, s[:, 1] / torch.where(s[:, 0] > 0, s[:, 0], 1.0), 1.0)
        return ratio, ratio > self.limit

    def describe(self, value):
        return f"the first two singular values are nearly equal (second / first = {value:.2f})"


def measure(method, layer: str, acts: torch.Tensor, measured: dict | None = None) -> list[Check]:
    """Each of ``method``'s assumptions measured on ``layer``'s activations (N, C, h, w);
    ``measured`` keeps each assumption's figures per layer for the next method that shares it."""
    found = []
    for a in method.assumptions:
        key = (type(a), layer)
        if measured is not None and key in measured:
            found.append(measured[key])
            continue
        check = a.check(acts)
        if measured is not None:
            measured[key] = check
        found.append(check)
    return found


def on_host(checks: list[Check]) -> list[Check]:
    """The checks with their figures as Python lists: one device-to-host copy for a whole batch."""
    return [Check(c.assumption, c.values.cpu().tolist(), c.failed.cpu().tolist()) for c in checks]


def failures(checks: list[Check], row: int) -> tuple[tuple[Assumption, float], ...]:
    """The assumptions image ``row`` fails, each with its figure: what its rows report."""
    return tuple((c.assumption, float(c.values[row])) for c in checks if bool(c.failed[row]))


def refuse_failed(method: str, layer: str, checks: list[Check], rows=None) -> None:
    """``strict``: refuse when an assumption fails on any image of ``rows`` (indices, or a bool mask;
    None: every image), quoting its worst figure among them."""
    for c in checks:
        failed = torch.as_tensor(c.failed, dtype=torch.bool).flatten().cpu()
        values = torch.as_tensor(c.values, dtype=torch.float32).flatten().cpu()
        if rows is not None:
            chosen = torch.as_tensor(rows).flatten().cpu()
            mask = chosen.bool() if chosen.dtype == torch.bool else torch.zeros_like(failed).index_fill_(0, chosen.long(), True)
            failed = failed & mask
        if failed.any():
            raise strict_refusal(method, layer, c.assumption, float(values[failed].max()))


def strict_refusal(method: str, layer: str, assumption: Assumption, worst: float) -> UsageError:
    """What ``strict`` says when ``method``'s assumption fails at ``layer`` (every explainer's words)."""
    from camcli.engine.layer_names import display_name

    return UsageError(f"`strict`: {method} at {display_name(layer)} assumes {assumption.name}, but "
                      f"{assumption.describe(worst)}; {assumption.advice}")
