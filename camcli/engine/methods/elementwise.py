"""Methods that multiply gradients and activations element by element, then sum channels.

They keep the spatial detail that Grad-CAM's per-channel average throws away: HiResCAM is
provably faithful to the score for GAP + linear heads, LayerCAM also works at shallow layers.
"""

from __future__ import annotations

import torch

from camcli.engine.methods import register
from camcli.engine.methods.base import CAMMethod, ForwardPass


@register
class HiResCAM(CAMMethod):
    name = "hirescam"
    volumes = True
    layer_only = True
    summary = "element-wise gradient x activation summed over channels (no gradient averaging)"
    paper = "Draelos & Carin, 2020, arXiv:2011.08891"

    def weighted(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        return fp.gradients[layer].float() * fp.activations[layer].float()


@register
class GradCAMElementWise(CAMMethod):
    name = "gradcam-elementwise"
    volumes = True
    layer_only = True
    summary = "ReLU of element-wise gradient x activation, summed over channels"
    paper = "pytorch-grad-cam's GradCAMElementWise (a HiResCAM variant)"

    def weighted(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        return (fp.gradients[layer].float() * fp.activations[layer].float()).clamp_min(0)


@register
class LayerCAM(CAMMethod):
    name = "layercam"
    volumes = True
    layer_only = True
    summary = "positive gradients x activations, element-wise; fine maps at shallow layers too"
    paper = "Jiang et al., IEEE TIP 2021, doi:10.1109/TIP.2021.3089943"

    def weighted(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        return fp.gradients[layer].float().clamp_min(0) * fp.activations[layer].float()
