"""A multigrid preconditioner for ROAD's imputation system, so conjugate gradients need ~10 steps.

The system (see :mod:`camcli.evaluation.road`) couples each removed pixel with its eight
neighbours. Plain conjugate gradients need a number of steps that grows with the size of the
removed region (about 280 at 224 px when 90% is removed), because each step moves information
one pixel. A multigrid V-cycle moves it across the whole image in one application: the error
that is smooth on the fine grid is corrected on coarser grids, where it is not.

- Coarse grids aggregate 2x2 pixels. The coarse operator is the Galerkin product ``P^T A P``
  with ``P`` the piecewise-constant interpolation onto the removed pixels, so it is exact
  algebra, not a rediscretisation, and stays a 9-point stencil stored as 9 coefficient maps.
- Smoothing is one damped Jacobi sweep before and one after the coarse correction (the same
  sweep, so the V-cycle is a symmetric operator, as conjugate gradients need); the coarse
  correction is over-weighted by 1.5, the usual remedy for piecewise-constant interpolation;
  the coarsest grid (at most 4 pixels a side) gets 30 Jacobi sweeps.

Everything is batched over the masks and broadcast over the channels (all channels share their
mask's operator), in torch, on the input's device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: the nine stencil offsets (dy, dx), row by row; index 4 is the pixel itself
OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
_CENTRE = 4
OMEGA = 0.8  # Jacobi damping: the fine operator's D^-1 A has eigenvalues in (0, 4/3]
OVERCORRECTION = 1.5
COARSEST_SWEEPS = 30


def _shifted(padded: torch.Tensor, dy: int, dx: int, h: int, w: int) -> torch.Tensor:
    """The view of a 1-padded (.., h + 2, w + 2) tensor at each pixel's neighbour (dy, dx)."""
    return padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def fine_stencil(removed: torch.Tensor, weights: dict[tuple[int, int], float], degree: torch.Tensor) -> torch.Tensor:
    """(B, 9, H, W) coefficients of the system on the removed pixels (``removed``: (B, 1, H, W),
    1 where removed): ``degree`` on the diagonal, minus the neighbour's weight where both pixels
    are removed, and nothing at kept pixels."""
    h, w = removed.shape[-2:]
    padded = F.pad(removed, (1, 1, 1, 1))
    rows = [degree * removed if (dy, dx) == (0, 0) else -weights[(dy, dx)] * removed * _shifted(padded, dy, dx, h, w)
            for dy, dx in OFFSETS]
    return torch.cat(rows, 1)


def apply_stencil(stencil: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``A v`` for A given as (B, 9, h, w) coefficients and v (B, C, h, w)."""
    h, w = v.shape[-2:]
    padded = F.pad(v, (1, 1, 1, 1))
    out = stencil[:, _CENTRE:_CENTRE + 1] * v
    for k, (dy, dx) in enumerate(OFFSETS):
        if k != _CENTRE:
            out.addcmul_(stencil[:, k:k + 1], _shifted(padded, dy, dx, h, w))
    return out


def coarsen(stencil: torch.Tensor) -> torch.Tensor:
    """The Galerkin operator ``P^T A P`` on 2x2 aggregates: a fine pixel's coupling with its
    neighbour (dy, dx) is added to the coupling of their aggregates (odd sizes padded)."""
    b, _, h, w = stencil.shape
    s = F.pad(stencil, (0, w % 2, 0, h % 2))
    coarse = stencil.new_zeros(b, 9, s.shape[-2] // 2, s.shape[-1] // 2)
    for k, (dy, dx) in enumerate(OFFSETS):
        for py in (0, 1):
            for px in (0, 1):
                to = OFFSETS.index(((py + dy) // 2, (px + dx) // 2))
                coarse[:, to] += s[:, k, py::2, px::2]
    return coarse


def _restrict(r: torch.Tensor) -> torch.Tensor:
    """``P^T r``: the sum over each 2x2 aggregate (r is zero off the removed pixels)."""
    h, w = r.shape[-2:]
    return F.avg_pool2d(F.pad(r, (0, w % 2, 0, h % 2)), 2).mul_(4)


def _prolong(e: torch.Tensor, size: tuple[int, int], removed: torch.Tensor) -> torch.Tensor:
    """``P e``: each aggregate's value on its removed pixels."""
    return F.interpolate(e, scale_factor=2, mode="nearest")[..., :size[0], :size[1]] * removed


class Multigrid:
    """``M(r)``, an approximate inverse of the system, for preconditioned conjugate gradients.

    ``fine_apply(v)`` is the fine operator (the caller's cheaper constant-coefficient form),
    ``stencil`` its (B, 9, H, W) coefficients, ``removed`` (B, 1, H, W) 1 at the unknowns.
    """

    def __init__(self, fine_apply, stencil: torch.Tensor, removed: torch.Tensor) -> None:
        self.fine_apply = fine_apply
        self.removed = [removed]
        self.diagonal_inverse = [self._inverse(stencil)]
        self.stencils = [None]  # the fine level is applied by fine_apply
        current = stencil
        while min(current.shape[-2:]) > 4:
            current = coarsen(current)
            self.stencils.append(current)
            self.removed.append((current[:, _CENTRE:_CENTRE + 1] > 0).to(removed.dtype))
            self.diagonal_inverse.append(self._inverse(current))

    @staticmethod
    def _inverse(stencil: torch.Tensor) -> torch.Tensor:
        d = stencil[:, _CENTRE:_CENTRE + 1]
        return torch.where(d > 0, 1 / d.clamp_min(1e-30), torch.zeros_like(d))

    def subset(self, rows: torch.Tensor, fine_apply) -> "Multigrid":
        """The same preconditioner for the masks ``rows`` only (converged masks leave the batch)."""
        out = object.__new__(Multigrid)
        out.fine_apply = fine_apply
        out.removed = [m[rows] for m in self.removed]
        out.diagonal_inverse = [d[rows] for d in self.diagonal_inverse]
        out.stencils = [None] + [s[rows] for s in self.stencils[1:]]
        return out

    def _apply(self, level: int, v: torch.Tensor) -> torch.Tensor:
        return self.fine_apply(v) if level == 0 else apply_stencil(self.stencils[level], v)

    def __call__(self, r: torch.Tensor, level: int = 0) -> torch.Tensor:
        inverse = self.diagonal_inverse[level]
        x = OMEGA * inverse * r  # one Jacobi sweep from zero
        if level == len(self.stencils) - 1:
            for _ in range(COARSEST_SWEEPS):
                x.addcmul_(OMEGA * inverse, r - self._apply(level, x))
            return x
        coarse = self(_restrict(r - self._apply(level, x)) * self.removed[level + 1], level + 1)
        x.add_(_prolong(coarse, tuple(r.shape[-2:]), self.removed[level]), alpha=OVERCORRECTION)
        return x.addcmul_(OMEGA * inverse, r - self._apply(level, x))
