"""Shapley-CAM (Cai 2025): Grad-CAM's weights with a second-order correction.

Read as a Shapley value of the channels, a channel's contribution is approximated by the
gradient minus half the Hessian-vector product with the activations, averaged over the map:
w_k = mean_ij (dS/dA - 1/2 H A)_k. The product comes from a second backward through the
first's graph (``fp.hessian_products``), batched. Where the score is linear in the layer
(a ReLU network's logits after its last block) H A is zero and the map is Grad-CAM's; the
paper pairs the method with a softmax-based score, for which it differs (``score softmax``).
Same formula as pytorch-grad-cam's ShapleyCAM.
"""

from __future__ import annotations

import torch

from camcli.engine.methods import register
from camcli.engine.methods.base import ForwardPass
from camcli.engine.methods.gradcam import GradCAM


@register
class ShapleyCAM(GradCAM):
    name = "shapleycam"
    layer_only = False  # its own objective / second derivatives
    summary = "Grad-CAM weights from gradient minus half the Hessian-vector product (a Shapley-value reading)"
    paper = "Cai, arXiv:2501.06261"
    cost = "1 forward + 2 partial backwards"
    needs_hessian = True

    def gradients_at(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        return fp.gradients[layer].float() - 0.5 * fp.hessian_products[layer].float()  # averaged by Grad-CAM
