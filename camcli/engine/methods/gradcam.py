"""Methods that weight each channel by one number computed from the gradients.

Grad-CAM averages the gradients; Grad-CAM++ weights positive gradients by second- and
third-order terms; XGrad-CAM normalises the gradients by the activations.
"""

from __future__ import annotations

import torch

from camcli.engine.methods import register
from camcli.engine.methods.assumptions import NonNegativeActivations
from camcli.engine.methods.base import CAMMethod, ForwardPass, spatial


class ChannelWeightCAM(CAMMethod):
    """Map = sum over channels of weight_k x A_k; subclasses define the weights."""

    def channel_weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def gradients_at(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        """The gradients the weights are made of: the score's (Finer-CAM and Shapley-CAM change them)."""
        return fp.gradients[layer]

    def weighted(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        acts, grads = fp.activations[layer].float(), self.gradients_at(fp, layer).float()
        return self.channel_weights(acts, grads) * acts  # summed, then ReLU, by the base class


@register
class GradCAM(ChannelWeightCAM):
    name = "gradcam"
    volumes = True
    layer_only = True
    summary = "gradient of the class score, averaged per channel, weights the feature maps"
    paper = "Selvaraju et al., ICCV 2017, arXiv:1610.02391"

    def channel_weights(self, acts, grads):
        return grads.mean(dim=spatial(grads), keepdim=True)  # alpha_k^c, eq. 1


@register
class GradCAMPlusPlus(ChannelWeightCAM):
    name = "gradcam++"
    volumes = True
    layer_only = True
    summary = "positive gradients weighted by second/third-order terms of exp(score); better on several objects"
    paper = "Chattopadhyay et al., WACV 2018, arXiv:1710.11063"
    assumptions = (NonNegativeActivations(),)  # sum(A) in the denominator of alpha (eq. 19)

    def channel_weights(self, acts, grads):
        # With Y = exp(S), the derivatives of Y are exp(S) times powers of dS/dA, and exp(S)
        # cancels in alpha (eq. 19); the remaining common factor exp(S) drops out when normalised.
        return plusplus_weights(acts, grads, grads.pow(2), grads.pow(3))


@register
class XGradCAM(ChannelWeightCAM):
    name = "xgradcam"
    volumes = True
    layer_only = True
    summary = "gradients weighted by the normalised activations (axiom-based Grad-CAM)"
    paper = "Fu et al., BMVC 2020, arXiv:2008.02312"
    assumptions = (NonNegativeActivations(),)  # divides by each channel's activation sum

    def channel_weights(self, acts, grads):
        total = acts.sum(dim=spatial(acts), keepdim=True)
        norm = acts / torch.where(total != 0, total, torch.ones_like(total))
        norm = torch.where(total != 0, norm, torch.zeros_like(norm))
        return (grads * norm).sum(dim=spatial(acts), keepdim=True)


def plusplus_weights(acts: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++'s channel weights from the first, second and third derivatives (eq. 19, eq. 10):
    alpha = d2 / (2 d2 + sum(A) d3) where d2 is not zero, w = sum_ij alpha relu(d1)."""
    denom = 2 * d2 + acts.sum(dim=spatial(acts), keepdim=True) * d3
    alpha = d2 / torch.where(denom != 0, denom, torch.ones_like(denom))
    alpha = torch.where(d2 != 0, alpha, torch.zeros_like(alpha))
    return (alpha * d1.clamp_min(0)).sum(dim=spatial(acts), keepdim=True)
