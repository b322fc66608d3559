"""Finer-CAM (Zhang et al. 2025): Grad-CAM of the target's score against its closest rivals.

Fine-grained classes share most of their evidence (every bird has a beak); Grad-CAM of one
class's logit shows all of it. Finer-CAM explains a contrastive score instead: the target's
logit minus ``alpha`` times the logits of the classes whose logits are closest to it. As in
pytorch-grad-cam (the Finer-CAM authors' contribution), three comparison classes are used and
the differences are averaged weighted by the comparison classes' softmax probabilities,
differentiated as written; alpha defaults to 1. torchcam instead subtracts gamma (0.6) times
the plain mean of the three logits. The contrast is always between logits, whatever ``score``.
"""

from __future__ import annotations

import torch

from camcli.errors import UsageError
from camcli.engine.methods import register
from camcli.engine.methods.base import ForwardPass
from camcli.engine.methods.gradcam import GradCAM

#: how many of the closest classes each target is compared with
COMPARISONS = 3


def closest_classes(logits: torch.Tensor, targets: torch.Tensor, count: int = COMPARISONS) -> torch.Tensor:
    """(N, count) the classes whose logits are nearest each target's, the target excluded."""
    with torch.no_grad():
        t = targets.view(-1, 1).to(logits.device)
        distance = (logits - logits.gather(1, t)).abs()
        distance.scatter_(1, t, float("inf"))
        return distance.topk(min(count, logits.shape[1] - 1), dim=1, largest=False).indices


def contrastive_score(logits: torch.Tensor, targets: torch.Tensor, alpha: float,
                      probabilities: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) sum_d p_d (y_target - alpha y_d) / sum_d p_d over the closest classes d; ``p`` the
    head's probabilities (a softmax of the logits unless given)."""
    rivals = closest_classes(logits, targets)
    target = logits.gather(1, targets.view(-1, 1).to(logits.device))
    p = (logits.softmax(1) if probabilities is None else probabilities).gather(1, rivals)
    return (p * (target - alpha * logits.gather(1, rivals))).sum(1) / (p.sum(1) + 1e-9)


@register
class FinerCAM(GradCAM):
    name = "finercam"
    layer_only = False  # its own objective / second derivatives
    summary = "Grad-CAM of the target's logit minus alpha x its three closest rivals': what tells them apart"
    paper = "Zhang et al., CVPR 2025, arXiv:2501.11309"

    def __init__(self, finer_alpha: float | None = None) -> None:
        self.alpha = 1.0 if finer_alpha is None else float(finer_alpha)
        if not self.alpha >= 0:
            raise UsageError(f"`finer_alpha` must be 0 or more, got {self.alpha}")

    @property
    def objective_key(self) -> str:
        return f"finer alpha={self.alpha!r}"

    def objective(self, logits, targets, target):
        return contrastive_score(logits.float(), targets, self.alpha, target.probabilities(logits))

    def validate(self, fp: ForwardPass, layer: str) -> None:
        if not fp.target.probabilistic:
            raise UsageError(f"finercam compares the target with rival classes; a {fp.target.kind} output has none")
        if fp.logits.shape[1] < 2:
            raise UsageError("finercam compares the target with other classes; this model has one class")

    def gradients_at(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        return fp.objective_gradients[self.objective_key][layer]
