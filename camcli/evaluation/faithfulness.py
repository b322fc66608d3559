"""Faithfulness metrics that need no ground truth: does the model agree with the map?

* Average Drop and Increase in Confidence (Chattopadhyay et al., 2018): the image multiplied
  by the map is shown to the model; how much does the class probability fall (lower is
  better), and how often does it rise (higher is better)?
* Deletion and insertion AUC (Petsiuk et al., 2018): pixels are removed (set to black) or
  inserted (into a blurred copy) in order of decreasing saliency; the area under the class
  probability curve should be low for deletion and high for insertion.

Masking happens on the model-sized image in [0, 1] pixel space, before normalisation. Each
image costs ``1 + 2 * (steps + 1)`` forwards, sent in batches of at most ``batch_size``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Faithfulness:
    drop: float  # max(0, p - p_masked) / p, in [0, 1]
    increase: bool  # p_masked > p
    deletion_auc: float
    insertion_auc: float
    deletion_curve: tuple[float, ...] = ()  # class probability at fractions 0, 1/steps, ..., 1
    insertion_curve: tuple[float, ...] = ()


def softmax_of(output) -> torch.Tensor:
    """A plain classifier's probabilities (the default ``reads``)."""
    from camcli.engine.targets import default_target

    return default_target().probabilities_of(output)


def _probs(model, pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, target: int, batch_size: int,
           reads=softmax_of) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for s in range(0, len(pixels), batch_size):
            out.append(reads(model((pixels[s:s + batch_size] - mean) / std))[:, target])
    return torch.cat(out)


def _blur(pixels: torch.Tensor) -> torch.Tensor:
    k = max(3, (min(pixels.shape[-2:]) // 8) | 1)
    coords = torch.arange(k, dtype=pixels.dtype, device=pixels.device) - k // 2
    g = torch.exp(-(coords ** 2) / (2 * (k / 4) ** 2))
    g = (g / g.sum()).view(1, 1, 1, k)
    x = F.pad(pixels, (k // 2, k // 2, 0, 0), mode="replicate")
    x = F.conv2d(x, g.expand(3, 1, 1, k), groups=3)
    x = F.pad(x, (0, 0, k // 2, k // 2), mode="replicate")
    return F.conv2d(x, g.view(1, 1, k, 1).expand(3, 1, k, 1), groups=3)


def auc(values: torch.Tensor) -> float:
    """Trapezoidal area under a curve sampled at evenly spaced fractions 0..1."""
    v = values.double()
    return float(((v[1:] + v[:-1]) / 2).mean()) if len(v) > 1 else float(v[0])


def faithfulness(model, pixels: torch.Tensor, heat: torch.Tensor, target: int, mean: torch.Tensor, std: torch.Tensor,
                 steps: int = 16, batch_size: int = 64, reads=softmax_of) -> Faithfulness:
    """Metrics for one image: ``pixels`` (3, h, w) in [0, 1] at model size, ``heat`` (h, w) in [0, 1];
    ``reads(output)`` gives the (N, K) probabilities followed (the run's head: a Target's
    ``probabilities_of``; a softmax by default)."""
    pixels = pixels.float()
    heat = heat.float().to(pixels.device)
    base = pixels[None]
    order = torch.argsort(heat.flatten(), descending=True, stable=True)
    n = order.numel()
    fractions = torch.linspace(0, 1, steps + 1)
    keep_masks = torch.zeros(steps + 1, n, device=pixels.device)
    for i, f in enumerate(fractions):
        keep_masks[i, order[:int(round(float(f) * n))]] = 1.0  # the top-f most salient pixels
    keep_masks = keep_masks.view(steps + 1, 1, *heat.shape)
    deleted = base * (1 - keep_masks)  # salient pixels blacked out
    blurred = _blur(base)
    inserted = blurred * (1 - keep_masks) + base * keep_masks  # salient pixels restored
    explained = base * heat[None, None]
    batch = torch.cat([base, explained, deleted, inserted])
    probs = _probs(model, batch, mean, std, target, batch_size, reads)
    p, p_masked = probs[0], probs[1]
    curve_del, curve_ins = probs[2:steps + 3], probs[steps + 3:]
    drop = float(torch.clamp(p - p_masked, min=0) / p) if p > 0 else 0.0
    return Faithfulness(drop, bool(p_masked > p), auc(curve_del), auc(curve_ins), tuple(curve_del.tolist()),
                        tuple(curve_ins.tolist()))
