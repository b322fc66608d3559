"""Ablation-CAM (Desai & Ramaswamy, 2020): how much the class score drops when a channel is zeroed.

Gradient-free. For every channel k the layer's output is replaced, through a forward hook,
by a copy with channel k set to zero (for a transformer layer: channel k of every patch token),
and the model is run on; the weight is the relative drop ``(y - y_k) / y``. Runs under
``torch.inference_mode``; the hook lives only for these passes and is always removed.
"""

from __future__ import annotations

import torch

from camcli.errors import UsageError
from camcli.engine.tensors import first_tensor, replace_first_tensor
from camcli.engine.methods import register
from camcli.engine.methods.base import CAMMethod, ForwardPass, class_scores, model_logits


@register
class AblationCAM(CAMMethod):
    name = "ablationcam"
    summary = "relative drop of the class score when each channel is zeroed weights the channels"
    paper = "Desai & Ramaswamy, WACV 2020, doi:10.1109/WACV45572.2020.9093360"
    needs_gradients = False
    cost = "1 forward + 1 forward per channel (batched by cam_batch_size)"
    options = ("cam_batch_size",)

    def __init__(self, cam_batch_size: int = 64) -> None:
        if cam_batch_size < 1:
            raise UsageError(f"`cam_batch_size` must be at least 1, got {cam_batch_size}")
        self.cam_batch_size = cam_batch_size

    def weighted(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        acts = fp.activations[layer]
        n, c = acts.shape[:2]
        base = class_scores(fp.logits, fp.targets, fp.score)
        weights = torch.zeros(n, c, device=acts.device)
        replacement: dict[str, torch.Tensor] = {}

        def hook(_module, _inputs, output):
            return replace_first_tensor(output, fp.layer_output(layer, replacement["acts"], first_tensor(output)))

        handle = fp.model.get_submodule(layer).register_forward_hook(hook)
        try:
            with torch.inference_mode():
                for i in fp.wanted_images():
                    for s in range(0, c, self.cam_batch_size):
                        channels = torch.arange(s, min(c, s + self.cam_batch_size), device=acts.device)
                        k = len(channels)
                        ablated = acts[i:i + 1].expand(k, -1, -1, -1).clone()
                        ablated[torch.arange(k), channels] = 0
                        replacement["acts"] = ablated
                        logits = model_logits(fp.model(fp.inputs[i:i + 1].expand(k, -1, -1, -1)))
                        dropped = class_scores(logits, fp.targets[i:i + 1].expand(k), fp.score)
                        weights[i, channels] = dropped
                    y = base[i]
                    denom = y if y.abs() > 1e-7 else torch.tensor(1e-7, device=y.device)
                    weights[i] = (y - weights[i]) / denom
        finally:
            handle.remove()
            replacement.clear()
        return weights[:, :, None, None] * acts.float()
