"""Ablation-CAM (Desai & Ramaswamy, 2020): how much the class score drops when a channel is zeroed.

Gradient-free. For every channel k the layer's output is replaced, through a forward hook,
by a copy with channel k set to zero (for a transformer layer: channel k of every patch token),
and the model is run on; the weight is the relative drop ``(y - y_k) / y``.

Only the part of the model after the layer is run on the ablated copies where the model can be
cut there (:mod:`camcli.engine.tail`; checked against the whole model on every batch): for ResNet's
``layer4[1]`` that is the pooling and the classifier, so the C ablations cost about one
forward instead of C. Elsewhere the whole model runs with the layer's output replaced through
a forward hook that lives only for these passes. Runs under ``torch.inference_mode``.
"""

from __future__ import annotations

import torch

from camcli.errors import UsageError
from camcli.engine.layer_names import hook_layer
from camcli.engine.tail import forget, model_tail, read_layer
from camcli.engine.tensors import first_tensor, replace_first_tensor
from camcli.engine.work import count_passes
from camcli.engine.methods import register
from camcli.engine.methods.base import CAMMethod, ForwardPass, per_channel


@register
class AblationCAM(CAMMethod):
    name = "ablationcam"
    volumes = True
    scores_passes = "ablated"
    summary = "relative drop of the class score when each channel is zeroed weights the channels"
    paper = "Desai & Ramaswamy, WACV 2020, doi:10.1109/WACV45572.2020.9093360"
    needs_gradients = False
    cost = ("1 forward + 1 pass per channel (batched by cam_batch_size) of the model after the layer where it "
            "can be cut there, else of the whole model")

    def passes_per_image(self, channels: int) -> int:
        return channels

    def __init__(self, cam_batch_size: int = 64) -> None:
        if cam_batch_size < 1:
            raise UsageError(f"`cam_batch_size` must be at least 1, got {cam_batch_size}")
        self.cam_batch_size = cam_batch_size

    def weighted(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        acts = fp.activations[layer]
        n, c = acts.shape[:2]
        base = fp.target.scores(fp.logits, fp.targets)
        weights = torch.zeros(n, c, device=acts.device)
        with torch.inference_mode():
            scores_of = self._tail_scores(fp, layer) or self._whole_model_scores(fp, layer)
            try:
                for i in fp.wanted_images():
                    def ablated_scores(channels: torch.Tensor, i: int = i) -> torch.Tensor:
                        k = len(channels)
                        ablated = acts[i:i + 1].expand(k, *acts.shape[1:]).clone()
                        ablated[torch.arange(k), channels] = 0
                        return scores_of(i, ablated)[:, None]

                    weights[i] = self.drops(base[i:i + 1], c, ablated_scores)[0]
            finally:
                getattr(scores_of, "close", lambda: None)()
        return per_channel(weights, acts) * acts.float()

    def drops(self, base: torch.Tensor, channels: int, scores_of) -> torch.Tensor:
        """(T, C): the relative drop ``(y - y_k) / y`` of each of T scores ``base`` (T,) when each
        of ``channels`` channels k is zeroed in turn. ``scores_of(ks)`` runs the passes with the
        channels ``ks`` zeroed, one pass each, and gives their scores, (len(ks), T); they go in
        batches of ``cam_batch_size`` (every task's Ablation-CAM: a class score, a box score)."""
        base = base.float()
        ablated = torch.zeros(len(base), channels, device=base.device)
        for s in range(0, channels, self.cam_batch_size):
            ks = torch.arange(s, min(channels, s + self.cam_batch_size), device=base.device)
            ablated[:, ks] = scores_of(ks).to(ablated).T
            count_passes(len(ks))
        denom = torch.where(base.abs() > 1e-7, base, torch.full_like(base, 1e-7))[:, None]
        return (base[:, None] - ablated) / denom

    @staticmethod
    def _tail_scores(fp: ForwardPass, layer: str):
        """``scores_of(i, ablated)`` that runs only the part of the model after ``layer``, or
        ``None`` where the model cannot be cut there (see :mod:`camcli.engine.tail`)."""
        tail = model_tail(fp.model, layer)
        wanted = fp.wanted_images()
        if tail is None or not wanted:
            return None
        first = fp.inputs[wanted[0]:wanted[0] + 1]
        if not tail.reproduces(fp.model, torch.cat([first, first.flip(-1)]), fp.target.read):  # two distinct images
            forget(fp.model, layer)
            return None
        rows = torch.tensor(wanted, device=fp.inputs.device)
        got = tail.before(fp.inputs[rows])  # one row per wanted image
        if got is None:
            return None
        computed, before = got
        layout = fp.layouts.get(layer)
        originals = None
        if layout is not None and layout.kind == "tokens" and layout.prefix:  # class tokens come from the real output
            # a tensor (the tail's check saw to it); from the run before the cut where there was one
            originals = computed if computed is not None else read_layer(fp.model, layer, fp.inputs[rows])[1]
        dtype = next((p.dtype for p in fp.model.parameters() if p.is_floating_point()), fp.inputs.dtype)
        row_of = {i: r for r, i in enumerate(wanted)}

        def scores_of(i: int, ablated: torch.Tensor) -> torch.Tensor:
            k = ablated.shape[0]
            r = row_of[i]
            original = originals[r:r + 1] if originals is not None else None
            output = fp.layer_output(layer, ablated, original).to(dtype)
            repeated = [v[r:r + 1].expand(k, *v.shape[1:]).contiguous() for v in before]
            return fp.target(tail(output, *repeated), fp.targets[i:i + 1].expand(k))

        return scores_of

    @staticmethod
    def _whole_model_scores(fp: ForwardPass, layer: str):
        """``scores_of(i, ablated)`` that runs the whole model on image ``i`` with ``layer``'s
        output replaced, through a forward hook (``close()`` removes it)."""
        replacement: dict[str, torch.Tensor] = {}

        def hook(_module, _inputs, output):
            return replace_first_tensor(output, fp.layer_output(layer, replacement["acts"], first_tensor(output)))

        handles = hook_layer(fp.model, layer, hook)

        def scores_of(i: int, ablated: torch.Tensor) -> torch.Tensor:
            k = ablated.shape[0]
            replacement["acts"] = ablated
            return fp.target(fp.model(fp.inputs[i:i + 1].expand(k, *fp.inputs.shape[1:])), fp.targets[i:i + 1].expand(k))

        def close() -> None:
            for handle in handles:
                handle.remove()
            replacement.clear()

        scores_of.close = close
        return scores_of

