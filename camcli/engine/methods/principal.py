"""The first principal component of a stack of maps: Eigen-CAM's map, EigenGrad-CAM's, and
what ``eigen_smooth`` puts in place of a method's channel sum.

Positions are the samples and channels the features. A component has no sign of its own; it is
oriented to correlate positively with the channel mean of what was decomposed, so that it
points the way the plain channel sum points.
"""

from __future__ import annotations

import torch


def first_component(acts: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N, h, w) (a volume's (N, C, d, h, w) -> (N, d, h, w)): projection of each
    position on the first principal axis, oriented towards the channel mean."""
    n, grid = acts.shape[0], acts.shape[2:]
    x = acts.float().flatten(2).transpose(1, 2)  # (N, hw, C): positions are samples
    x = x - x.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    proj = (x @ vh[:, 0, :, None]).squeeze(2)  # (N, hw)
    return oriented(proj, acts).view(n, *grid)


def oriented(proj: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """(N, hw) projections, each sign-flipped to correlate positively with the channel mean of
    the (N, C, h, w) maps ``acts`` it came from."""
    energy = acts.to(proj.dtype).mean(1).flatten(1)
    energy = energy - energy.mean(1, keepdim=True)
    sign = torch.where((proj * energy).sum(1) < 0, -1.0, 1.0).to(proj.dtype)
    return proj * sign[:, None]
