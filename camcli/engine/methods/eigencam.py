"""Eigen-CAM (Muhammad & Yeasin, 2020): the first principal component of the activations,
and EigenGrad-CAM, the same of the gradients times the activations.

Eigen-CAM is class-agnostic: it shows what the layer responds to most, whatever the class, so
``--target`` does not change it. EigenGrad-CAM (pytorch-grad-cam's variant) weights each
position's activations by their gradients first, which makes it class-discriminative.

The sign of a principal component is arbitrary (SVD may return either); we orient it to
correlate positively with the channel-mean of what was decomposed (the activations; for
EigenGrad-CAM, gradients x activations), so that the map highlights strong evidence.
pytorch-grad-cam leaves the sign to LAPACK, so its map is sometimes the inverse of ours.
"""

from __future__ import annotations

import torch

from camcli.engine.methods import register
from camcli.engine.methods.assumptions import SeparatedFirstComponent
from camcli.engine.methods.base import CAMMethod, ForwardPass
from camcli.engine.methods.principal import first_component


@register
class EigenCAM(CAMMethod):
    name = "eigencam"
    volumes = True
    layer_only = True
    summary = "first principal component of the activations; class-agnostic (ignores the target class)"
    paper = "Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299"
    needs_gradients = False
    class_discriminative = False
    cost = "1 forward + one small SVD per image"
    assumptions = (SeparatedFirstComponent(),)

    def raw_maps(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        return first_component(fp.activations[layer])


@register
class EigenGradCAM(CAMMethod):
    name = "eigengradcam"
    volumes = True
    layer_only = True
    summary = "first principal component of gradients x activations; class-discriminative Eigen-CAM"
    paper = "variant of Eigen-CAM (Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299), as in pytorch-grad-cam"
    cost = "1 forward + 1 partial backward + one small SVD per image"

    def raw_maps(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        return first_component(fp.gradients[layer].float() * fp.activations[layer].float())
