"""Score-CAM with each channel's score averaged over several masks: SS-CAM and IS-CAM.

Both keep Score-CAM's weights (softmax over the channels of the class score of the masked
input) but score each channel ``noise_samples`` times and average:

- SS-CAM (Wang et al. 2020) adds Gaussian noise N(0, std^2) to every pixel of the [0, 1] mask,
  a fresh draw per sample and channel, as torchcam does (the paper's noise on the mask; it also
  describes noise on the input). torchcam's defaults: 35 samples, std 2.
- IS-CAM (Naidu et al. 2020) scales the mask instead: at step i of N it is multiplied by
  sum_{j<=i} j/N, the accumulated coefficient of torchcam's implementation and of its statement
  of the paper's formula; the last step's mask is (N+1)/2 times the plain one. Default 10 steps.

Masks are made as Score-CAM makes them (bilinear upsampling, then min-max per channel);
torchcam min-maxes at the layer's resolution and then upsamples, which differs only where the
upsampled extremes fall between grid points. The noise comes from each image's seeded
generator (``seed`` and the image's path), one draw per channel in channel order, sample after
sample, so a map does not depend on the batch or on ``cam_batch_size``.
"""

from __future__ import annotations

import torch

from camcli.engine.methods import register
from camcli.engine.methods.base import ForwardPass, noise_options
from camcli.engine.methods.scorecam import ScoreCAM, distinct_channels, masked_scores, normalised_masks


def mask_noise(generator: torch.Generator, count: int, size: tuple[int, int], std: float,
               device: torch.device | str) -> torch.Tensor:
    """(count, H, W) noise, one draw of N(0, std^2) per mask in order (SS-CAM's perturbation)."""
    return torch.stack([torch.randn(size, generator=generator, device=device) for _ in range(count)]) * std


@register
class SSCAM(ScoreCAM):
    name = "sscam"
    summary = "Score-CAM with Gaussian noise on each mask, the masked scores averaged over samples (seeded)"
    paper = "Wang et al., arXiv:2006.14255 (SS-CAM); noise on the masks, as torchcam"
    cost = "1 forward + samples x channels masked forwards (max-n N: samples x N)"

    def __init__(self, cam_batch_size: int = 64, noise_samples: int | None = None,
                 noise_std: float | None = None, max_n: int | None = None) -> None:
        super().__init__(cam_batch_size, max_n)
        self.samples, self.std = noise_options(noise_samples, noise_std, 35, 2.0)

    def passes_per_image(self, channels: int) -> int:
        return self.samples * super().passes_per_image(channels)

    cut_by = "`max_n` N keeps only the N most varied channels, `noise_samples` sets the samples"

    def channel_scores(self, fp: ForwardPass, i: int, acts: torch.Tensor) -> torch.Tensor:
        size = tuple(fp.inputs.shape[2:])
        generator = fp.generator(i)
        total = torch.zeros(acts.shape[0], device=fp.inputs.device)
        for _ in range(self.samples):
            total += masked_scores(fp, i, acts.shape[0], self.cam_batch_size, lambda s, e: (
                normalised_masks(acts[s:e], size) + mask_noise(generator, e - s, size, self.std, acts.device)))
        return total / self.samples


@register
class ISCAM(ScoreCAM):
    name = "iscam"
    summary = "Score-CAM integrated over masks scaled step by step (accumulated i/N coefficients, as torchcam)"
    paper = "Naidu et al., arXiv:2010.03023 (IS-CAM)"
    cost = "1 forward + steps x distinct channels masked forwards (max-n N caps the channels at N)"

    def __init__(self, cam_batch_size: int = 64, noise_samples: int | None = None, max_n: int | None = None) -> None:
        super().__init__(cam_batch_size, max_n)
        self.steps, _ = noise_options(noise_samples, None, 10)

    def passes_per_image(self, channels: int) -> int:
        return self.steps * super().passes_per_image(channels)

    cut_by = "`max_n` N keeps only the N most varied channels, `noise_samples` sets the steps"

    def coefficients(self) -> list[float]:
        """The mask's scale at each step: sum_{j<=i} j/N for i = 1..N."""
        out, total = [], 0.0
        for i in range(1, self.steps + 1):
            total += i / self.steps
            out.append(total)
        return out

    def channel_scores(self, fp: ForwardPass, i: int, acts: torch.Tensor) -> torch.Tensor:
        reps, inverse = distinct_channels(acts)
        size = tuple(fp.inputs.shape[2:])
        total = torch.zeros(len(reps), device=fp.inputs.device)
        for coefficient in self.coefficients():
            total += masked_scores(fp, i, len(reps), self.cam_batch_size,
                                   lambda s, e: normalised_masks(acts[reps[s:e]], size) * coefficient)
        return (total / self.steps)[inverse]
