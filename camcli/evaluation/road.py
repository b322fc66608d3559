"""ROAD: Remove And Debias (Rong et al., ICML 2022, arXiv:2202.00449).

Deleting pixels by blacking them out leaks the mask's shape to the model (it sees the hole and
its edges), so deletion curves measure the mask as much as the map. ROAD replaces the removed
pixels by *noisy linear imputation*: each removed pixel takes the weighted mean of its eight
neighbours (1/6 for the four sides, 1/12 for the corners; removed neighbours are unknowns too,
so the holes are filled by solving one sparse linear system), plus a little Gaussian noise.

For each percentile p in 10..90 the p% most relevant pixels (MoRF) or the p% least relevant
(LeRF) are removed, and the class probability is compared with the intact image's. Reported per
map: ``morf`` (mean change in probability over the percentiles, lower means the map found what
the model needs), ``lerf`` (the same when the unimportant pixels go: near 0 is good) and
``combined = (lerf - morf) / 2`` (higher is better), as pytorch-grad-cam's ``ROADCombined``.

As pytorch-grad-cam (whose code is the authors'), the imputation works on the normalised
model input and the noise is 0.01 in that space; the removed share follows its thresholds
(``map < percentile(map, p)`` is kept for MoRF). The difference: the system is solved by
conjugate gradients in torch, matrix-free with a 3x3 convolution, batched over every
percentile, on the model's device, instead of by SciPy's sparse direct solver. It stops at a
relative residual of 1e-4, where the filled values are within about 0.01 of the exact solution
(the size of ROAD's own noise); solved to 1e-6 they equal pytorch-grad-cam's to 1e-5 (both
checked in tests/test_road.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
NOISE = 0.01
_SIDE, _CORNER = 1 / 6, 1 / 12


@dataclass(frozen=True)
class Road:
    percentiles: tuple[int, ...]
    morf: tuple[float, ...]  # change in class probability per percentile, most relevant removed
    lerf: tuple[float, ...]  # the same, least relevant removed

    @property
    def morf_mean(self) -> float:
        return sum(self.morf) / len(self.morf)

    @property
    def lerf_mean(self) -> float:
        return sum(self.lerf) / len(self.lerf)

    @property
    def combined(self) -> float:
        return (self.lerf_mean - self.morf_mean) / 2


def _kernel(channels: int, device, dtype) -> torch.Tensor:
    k = torch.tensor([[_CORNER, _SIDE, _CORNER], [_SIDE, 0.0, _SIDE], [_CORNER, _SIDE, _CORNER]], dtype=dtype,
                     device=device)
    return k.expand(channels, 1, 3, 3).contiguous()


def impute(x: torch.Tensor, keep: torch.Tensor, noise: float = NOISE, generator: torch.Generator | None = None,
           tol: float = 1e-4, max_iter: int = 5000) -> torch.Tensor:
    """Noisy linear imputation of ``x`` (B, C, H, W) where ``keep`` (B, 1, H, W) is False.

    Solves, for every removed pixel i, ``d_i x_i - sum_j w_ij x_j = sum_k w_ik v_k`` (j: removed
    neighbours, k: kept ones, d_i: the weights of i's neighbours inside the image) by conjugate
    gradients to a relative residual of ``tol``, starting from the solution at half the resolution
    (which saves two thirds of the iterations). At the default 1e-4 the filled values are within
    about 0.01 of the exact solve, the size of the noise ROAD adds anyway. A removed region that
    touches no kept pixel (the whole image removed) is filled with 0, the mean of the normalised
    input.
    """
    filled = _solve(x, keep, tol, max_iter)
    if noise:
        jitter = torch.randn(x.shape, generator=generator, device="cpu", dtype=x.dtype).to(x.device)
        filled = filled + noise * jitter * (~keep).to(x.dtype)
    return filled


def _solve(x: torch.Tensor, keep: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    start = torch.zeros_like(x)
    if min(h, w) > 32:  # the half-resolution problem: kept where any of the four pixels is kept
        k = keep.to(x.dtype)
        k_half = F.avg_pool2d(k, 2, ceil_mode=True)
        x_half = F.avg_pool2d(x * k, 2, ceil_mode=True) / k_half.clamp_min(1e-12)
        coarse = _solve(x_half, k_half > 0, tol, max_iter)
        start = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return _conjugate_gradients(x, keep, start, tol, max_iter)


def _conjugate_gradients(x, keep, start, tol: float, max_iter: int) -> torch.Tensor:
    b_, c, h, w = x.shape
    weights = _kernel(c, x.device, x.dtype)
    conv = lambda t: F.conv2d(t, weights, padding=1, groups=c)  # noqa: E731
    removed = (~keep).to(x.dtype).expand(b_, c, h, w)
    degree = conv(torch.ones_like(x))
    rhs = conv(x * (1 - removed)) * removed

    def apply(v: torch.Tensor) -> torch.Tensor:
        return (degree * v - conv(v)) * removed

    sol = start * removed
    r = rhs - apply(sol)
    p = r.clone()
    rs = (r * r).sum((1, 2, 3))
    stop = (tol * rhs.flatten(1).norm(dim=1)) ** 2
    for _ in range(max_iter):
        if bool((rs <= stop).all()):
            break
        ap = apply(p)
        denom = (p * ap).sum((1, 2, 3))
        alpha = torch.where(denom > 0, rs / denom.clamp_min(1e-30), torch.zeros_like(rs)).view(-1, 1, 1, 1)
        sol = sol + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum((1, 2, 3))
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(1e-30), torch.zeros_like(rs)).view(-1, 1, 1, 1)
        p = r + beta * p
        rs = rs_new
    return torch.where(removed.bool(), sol, x)


def keep_masks(heat: torch.Tensor, percentiles=PERCENTILES) -> torch.Tensor:
    """(2 * len(percentiles), 1, H, W): MoRF masks, then LeRF masks (True: pixel stays)."""
    flat = heat.flatten().float()
    q = torch.tensor([p / 100 for p in percentiles], dtype=flat.dtype, device=flat.device)
    morf = torch.stack([heat < t for t in torch.quantile(flat, q)])
    inverse = 1 - heat
    lerf = torch.stack([inverse < t for t in torch.quantile(1 - flat, q)])
    return torch.cat([morf, lerf])[:, None]


def road(model, x: torch.Tensor, heat: torch.Tensor, target: int, percentiles=PERCENTILES,
         generator: torch.Generator | None = None, batch_size: int = 64, noise: float = NOISE,
         tol: float = 1e-4) -> Road:
    """ROAD for one map: ``x`` (C, H, W) the normalised model input, ``heat`` (H, W) at its size."""
    masks = keep_masks(heat.to(x.device), percentiles)
    n = len(percentiles)
    imputed = impute(x[None].expand(2 * n, *x.shape), masks, noise=noise, generator=generator, tol=tol)
    batch = torch.cat([x[None], imputed])
    with torch.inference_mode():
        probs = torch.cat([model(batch[s:s + batch_size]).float().softmax(1)[:, target]
                           for s in range(0, len(batch), batch_size)])
    change = (probs[1:] - probs[0]).tolist()
    return Road(tuple(percentiles), tuple(change[:n]), tuple(change[n:]))
