"""Score-CAM (Wang et al., 2020) and Faster Score-CAM: weights from masked forward passes.

Each channel, upsampled to the input and min-max normalised, masks the input; the class
score of each masked input, softmaxed over the channels, weights the channel. No gradients:
everything runs under ``torch.inference_mode`` with no hooks on the model.

Two exact savings: channels whose map is constant (dead ReLU channels are common) all give the
same all-zero mask, and channels that are positive affine copies of each other give the same
mask; each distinct mask is forwarded once. ``max_n`` (Faster Score-CAM, tf-keras-vis's
``max_N``) keeps only the N channels with the largest spatial standard deviation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from camcli.errors import UsageError
from camcli.engine.methods import register
from camcli.engine.methods.base import CAMMethod, ForwardPass, per_channel
from camcli.engine.tensors import uses_channels_last
from camcli.engine.work import count_passes


def normalised_masks(acts: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(C, h, w) -> (C, H, W) (a volume's (C, d, h, w) -> (C, D, H, W)): bilinear (trilinear)
    upsampling, then min-max to [0, 1]; constant maps -> 0."""
    mode = "trilinear" if len(size) == 3 else "bilinear"
    up = F.interpolate(acts[:, None].float(), size=size, mode=mode, align_corners=False)[:, 0]
    flat = up.flatten(1)
    shape = (-1,) + (1,) * len(size)
    lo, hi = flat.min(1).values.view(shape), flat.max(1).values.view(shape)
    span = hi - lo
    return torch.where(span > 0, (up - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(up))


def distinct_channels(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Channels giving distinct masks, and for every channel the index of its representative.

    Masks depend on a channel only up to a positive affine map, so channels are compared after
    min-max normalisation at layer resolution; constant channels all normalise to zeros.
    """
    flat = acts.float().flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    span = hi - lo
    norm = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(flat))
    _, inverse = torch.unique(norm, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), flat.shape[0], dtype=torch.long, device=flat.device)
    first.scatter_reduce_(0, inverse, torch.arange(flat.shape[0], device=flat.device), reduce="amin")
    return first, inverse


@register
class ScoreCAM(CAMMethod):
    name = "scorecam"
    volumes = True  # its masks upsampled trilinearly (SSCAM and ISCAM add noise to them, or sum them)
    scores_passes = "masked"
    summary = "each channel masks the input; softmax over the masked class scores weights the channels"
    paper = "Wang et al., CVPR-W 2020, arXiv:1910.01279; max-n: Faster Score-CAM (tf-keras-vis)"
    needs_gradients = False
    cost = "1 forward + 1 forward per distinct channel (max-n N caps it at N)"
    cut_by = "`max_n` N keeps only the N most varied channels (Faster Score-CAM)"

    def passes_per_image(self, channels: int) -> int:
        return min(channels, self.max_n or channels)

    def __init__(self, cam_batch_size: int = 64, max_n: int | None = None) -> None:
        if cam_batch_size < 1:
            raise UsageError(f"`cam_batch_size` must be at least 1, got {cam_batch_size}")
        if max_n is not None and max_n < 1:
            raise UsageError(f"`max_n` must be at least 1, got {max_n}")
        self.cam_batch_size = cam_batch_size
        self.max_n = max_n

    def weighted(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        acts = fp.activations[layer].float()
        n, c = acts.shape[:2]
        weights = torch.zeros(n, c, device=acts.device)
        with torch.inference_mode():
            for i in fp.wanted_images():
                chosen = torch.arange(c, device=acts.device)
                if self.max_n is not None and self.max_n < c:
                    chosen = acts[i].flatten(1).std(1).topk(self.max_n).indices.sort().values
                weights[i, chosen] = self.channel_scores(fp, i, acts[i, chosen]).softmax(0)
        return per_channel(weights, acts) * acts

    def channel_scores(self, fp: ForwardPass, i: int, acts: torch.Tensor) -> torch.Tensor:
        """(C,) class scores of image ``i`` masked by each of its channels ``acts`` (C, h, w);
        each distinct mask is forwarded once."""
        reps, inverse = distinct_channels(acts)
        size = tuple(fp.inputs.shape[2:])
        scores = masked_scores(fp, i, len(reps), self.cam_batch_size,
                               lambda s, e: normalised_masks(acts[reps[s:e]], size))
        return scores[inverse]


def masked_scores(fp: ForwardPass, i: int, count: int, chunk: int, masks_for) -> torch.Tensor:
    """(count,) class scores of image ``i`` times each of ``count`` masks; ``masks_for(start,
    stop)`` gives masks (k, H, W) (a volume's (k, D, H, W)), so that at most ``chunk`` of them are in memory at once."""
    scores = torch.empty(count, device=fp.inputs.device)
    target = fp.targets[i:i + 1]
    memory_format = torch.channels_last if uses_channels_last(fp.model) and fp.inputs.dim() == 4 \
        else torch.contiguous_format
    for s in range(0, count, chunk):
        e = min(s + chunk, count)
        masks = masks_for(s, e)
        masked = (fp.inputs[i:i + 1] * masks[:, None].to(fp.inputs.dtype)).contiguous(
            memory_format=memory_format)  # the model's own: NHWC convolutions are faster, on CPU too
        scores[s:e] = fp.target(fp.model(masked), target.expand(e - s))
        count_passes(e - s)
    return scores
