"""Grad-CAM (Selvaraju et al., 2017): channel weights are the spatial mean of the gradients."""

from __future__ import annotations

import torch

from camcli.methods import register
from camcli.methods.base import CAMMethod, ForwardPass


@register
class GradCAM(CAMMethod):
    name = "gradcam"
    summary = "gradient of the class score, averaged per channel, weights the feature maps"
    paper = "Selvaraju et al., ICCV 2017, arXiv:1610.02391"

    def raw_maps(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        acts, grads = fp.activations[layer], fp.gradients[layer]
        weights = grads.mean(dim=(2, 3), keepdim=True)  # alpha_k^c, eq. 1
        return (weights * acts).sum(1)  # ReLU applied by the base class, eq. 2
