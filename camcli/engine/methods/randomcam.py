"""RandomCAM: random channel weights, a baseline for metrics and sanity checks.

Each channel's weight is drawn uniformly from [-1, 1] (as pytorch-grad-cam's RandomCAM
does), per image, from a generator seeded by the run's ``seed`` and the image's path: reruns,
resumed runs and shards give the same map. A method whose scores are no better than
RandomCAM's says nothing about the model.
"""

from __future__ import annotations

import torch

from camcli.engine.methods import register
from camcli.engine.methods.base import CAMMethod, ForwardPass


@register
class RandomCAM(CAMMethod):
    name = "randomcam"
    layer_only = True
    summary = "random channel weights, uniform in [-1, 1], seeded by --seed: a baseline for metrics"
    paper = "baseline (pytorch-grad-cam's RandomCAM)"
    needs_gradients = False
    class_discriminative = False
    cost = "1 forward"

    def weighted(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        acts = fp.activations[layer].float()
        n, c = acts.shape[:2]
        weights = torch.stack([torch.rand(c, generator=fp.generator(i), device=acts.device) * 2 - 1
                               for i in range(n)])
        return weights[:, :, None, None] * acts
