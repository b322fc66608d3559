"""FEM, the Feature Explanation Method (Fuad et al., IPTA 2020): channels weighted by how much
of their map stands out.

Gradient-free and class-agnostic. For each channel, the positions whose activation exceeds
the channel's mean plus ``k`` standard deviations (the k-sigma rule, k = 2 in the paper) are
counted; the share of such positions weights the channel.
"""

from __future__ import annotations

import torch

from camcli.engine.methods import register
from camcli.engine.methods.base import CAMMethod, ForwardPass
from camcli.errors import UsageError


@register
class FEM(CAMMethod):
    name = "fem"
    layer_only = True
    summary = "each channel weighted by the share of its positions above mean + k std (k-sigma rule); class-agnostic"
    paper = "Fuad et al., IPTA 2020, doi:10.1109/IPTA50016.2020.9286629"
    needs_gradients = False
    class_discriminative = False
    cost = "1 forward"

    def __init__(self, fem_k: float = 2.0) -> None:
        if not fem_k >= 0:
            raise UsageError(f"`fem_k` must be 0 or more, got {fem_k}")
        self.k = float(fem_k)

    def weighted(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        acts = fp.activations[layer].float()
        flat = acts.flatten(2)
        threshold = flat.mean(2, keepdim=True) + self.k * flat.std(2, unbiased=False, keepdim=True)
        weights = (flat > threshold).float().mean(2)  # (N, C)
        return weights[:, :, None, None] * acts
