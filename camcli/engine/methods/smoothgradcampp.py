"""Smooth Grad-CAM++ (Omeiza et al. 2019): Grad-CAM++ with derivatives averaged over noisy inputs.

The first, second and third derivatives of Grad-CAM++ (powers of the gradient, eq. 19 of
Grad-CAM++) are averaged over ``noise_samples`` copies of the input with Gaussian noise of
``noise_std`` (on the normalised input) added; the activations are the clean image's:

    alpha = mean(g^2) / (2 mean(g^2) + sum_ab A_ab * mean(g^3)),  w_k = sum_ij alpha relu(mean(g)).

Differences from torchcam's SmoothGradCAMpp, on purpose: torchcam multiplies alpha by the last
noisy sample's gradient instead of the averaged one, and sums A x mean(g^3) position by
position in the denominator instead of Grad-CAM++'s sum(A) x mean(g^3)(i, j). Like torchcam,
alpha's numerator is the second derivative (the paper prints the first). Defaults are
torchcam's: 4 samples, std 0.3. The noise is drawn from each image's seeded generator.
"""

from __future__ import annotations

import torch

from camcli.engine.methods import register
from camcli.engine.methods.assumptions import NonNegativeActivations
from camcli.engine.methods.base import CAMMethod, ForwardPass, noise_options
from camcli.engine.methods.gradcam import plusplus_weights


@register
class SmoothGradCAMPlusPlus(CAMMethod):
    name = "smoothgradcam++"
    summary = "Grad-CAM++ with its derivatives averaged over noisy copies of the input (seeded)"
    paper = "Omeiza et al., arXiv:1908.01224"
    cost = "1 forward + 1 partial backward per noisy sample"
    assumptions = (NonNegativeActivations(),)

    def __init__(self, noise_samples: int | None = None, noise_std: float | None = None) -> None:
        self.samples, self.std = noise_options(noise_samples, noise_std, 4, 0.3)

    def derivatives(self, fp: ForwardPass) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """layer -> (mean g, mean g^2, mean g^3) over the noisy copies; computed once per batch."""
        key = (self.name, self.samples, self.std)
        if key not in fp.cache:
            x = fp.inputs
            generators = [fp.generator(i) for i in range(x.shape[0])]
            sums: dict[str, list[torch.Tensor]] = {}
            for _ in range(self.samples):
                noise = torch.stack([torch.randn(x.shape[1:], generator=g, device=x.device) for g in generators])
                noisy = fp.again(x + noise.to(x.dtype) * self.std)
                for layer, g in noisy.gradients.items():
                    g = g.float()
                    totals = sums.setdefault(layer, [torch.zeros_like(g) for _ in range(3)])
                    for total, power in zip(totals, (g, g * g, g * g * g)):
                        total += power
            fp.cache[key] = {layer: tuple(t / self.samples for t in totals) for layer, totals in sums.items()}
        return fp.cache[key]

    def weighted(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        acts = fp.activations[layer].float()
        d1, d2, d3 = self.derivatives(fp)[layer]
        return plusplus_weights(acts, d1, d2, d3) * acts
