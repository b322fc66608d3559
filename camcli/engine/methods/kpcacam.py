"""KPCA-CAM (Karmani et al., 2024): Eigen-CAM with kernel PCA.

The positions of the layer map are the samples and the channels their features, as in
Eigen-CAM; a kernel (sigmoid by default, as the paper and pytorch-grad-cam use) replaces the
dot product, and the map is each position's coordinate on the first kernel principal
component (the centred kernel matrix's top eigenvector times the square root of its
eigenvalue, as scikit-learn's ``KernelPCA.fit_transform`` gives). Kernels are scikit-learn's,
with ``gamma`` = 1 / channels unless given and ``coef0`` = 1. Class-agnostic. The sign is
oriented towards the channel-mean activation, as for Eigen-CAM.
"""

from __future__ import annotations

import torch

from camcli.engine.method_options import KERNELS  # declared with the option
from camcli.engine.methods import register
from camcli.engine.methods.base import CAMMethod, ForwardPass
from camcli.engine.methods.principal import oriented
from camcli.errors import UsageError



def kernel_matrix(x: torch.Tensor, kernel: str, gamma: float) -> torch.Tensor:
    """(N, P, C) samples -> (N, P, P) kernel values."""
    if kernel == "cosine":
        x = x / x.norm(dim=2, keepdim=True).clamp_min(1e-12)
        return x @ x.transpose(1, 2)
    dot = x @ x.transpose(1, 2)
    if kernel == "linear":
        return dot
    if kernel == "sigmoid":
        return torch.tanh(gamma * dot + 1.0)
    if kernel == "poly":
        return (gamma * dot + 1.0) ** 3
    sq = (x * x).sum(2)
    return torch.exp(-gamma * (sq[:, :, None] + sq[:, None, :] - 2 * dot).clamp_min(0))  # rbf


@register
class KPCACAM(CAMMethod):
    name = "kpcacam"
    layer_only = True
    summary = "first kernel principal component of the activations (Eigen-CAM with kernel PCA); class-agnostic"
    paper = "Karmani et al., 2024, arXiv:2410.00267"
    needs_gradients = False
    class_discriminative = False
    cost = "1 forward + one eigendecomposition of an (h*w)^2 kernel matrix per image"

    def __init__(self, kpca_kernel: str = "sigmoid", kpca_gamma: float | None = None) -> None:
        if kpca_kernel not in KERNELS:
            raise UsageError(f"`kpca_kernel` must be one of {', '.join(KERNELS)}, got {kpca_kernel!r}")
        if kpca_gamma is not None and not kpca_gamma > 0:
            raise UsageError(f"`kpca_gamma` must be positive, got {kpca_gamma}")
        self.kernel = kpca_kernel
        self.gamma = kpca_gamma

    def raw_maps(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        acts = fp.activations[layer].double()
        n, c, h, w = acts.shape
        x = acts.flatten(2).transpose(1, 2)  # (N, hw, C): positions are samples
        x = x - x.mean(dim=1, keepdim=True)
        k = kernel_matrix(x, self.kernel, self.gamma or 1.0 / c)
        k = k - k.mean(1, keepdim=True) - k.mean(2, keepdim=True) + k.mean((1, 2), keepdim=True)  # centred
        values, vectors = torch.linalg.eigh(k)
        proj = vectors[:, :, -1] * values[:, -1:].clamp_min(0).sqrt()  # (N, hw)
        return oriented(proj, acts).view(n, h, w).float()
