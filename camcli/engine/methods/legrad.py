"""LeGrad (Bousselham et al. 2025): how sensitive each block's prediction is to its attention.

For every transformer block l the block's tokens are read as a prediction by the model's own
head, as the authors' code reads them: the mean of all the block's tokens through the final
LayerNorm and the classifier, s^l. LeGrad takes the gradient of the explained class's s^l with
respect to the block's post-softmax attention probabilities (batch, heads, queries, keys),
keeps its positive part, averages it over heads and queries, drops the class token's key and
reads the patch keys as a map; the maps of the blocks are averaged. The target layer names the
first block aggregated: its block and every later one (the authors aggregate the last two by
default: give the second-to-last block as the layer). Same as torchcam's LeGrad given those
blocks.

The attention probabilities are made part of the graph for the call only: each
``nn.MultiheadAttention`` is asked for per-head weights, and its output is recomputed from
them (out_proj(A V), the same values), as torchcam does; the hooks ride on the shared forward.
Supported: torchvision's VisionTransformer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from camcli.errors import UsageError
from camcli.engine.capture import removed_after
from camcli.engine.methods import register
from camcli.engine.methods.base import CAMMethod, ForwardPass


def attention_blocks(model: nn.Module) -> list[tuple[str, nn.Module, nn.MultiheadAttention]]:
    """(name, block, its self-attention) for every module with a direct ``nn.MultiheadAttention`` child."""
    found = []
    for name, module in model.named_modules():
        for child in module.children():
            if isinstance(child, nn.MultiheadAttention):
                found.append((name, module, child))
                break
    return found


def first_block(blocks: list[str], layer: str) -> int | None:
    """Index of the block that is ``layer`` or holds it."""
    for i, name in enumerate(blocks):
        if layer == name or layer.startswith(name + "."):
            return i
    return None


def block_reader(model: nn.Module):
    """Tokens (N, T, D) -> logits (N, K) as the model reads its last block, or None if unknown."""
    encoder = getattr(model, "encoder", None)
    norm, heads = getattr(encoder, "ln", None), getattr(model, "heads", None)
    if isinstance(norm, nn.Module) and isinstance(heads, nn.Module) and hasattr(model, "class_token"):
        return lambda tokens: heads(norm(tokens.mean(dim=1)))
    return None


def _ask_for_weights(module, args, kwargs):
    kwargs = dict(kwargs)
    args = list(args)
    if len(args) > 4:
        args[4] = True
    else:
        kwargs["need_weights"] = True
    if len(args) > 6:
        args[6] = False
    else:
        kwargs["average_attn_weights"] = False
    return tuple(args), kwargs


def _output_from_weights(store):
    def hook(module, args, kwargs, output):
        weights = output[1]  # (N, heads, queries, keys), post-softmax
        value = args[2] if len(args) > 2 else kwargs["value"]
        n, length, dim = value.shape
        v = F.linear(value, module.in_proj_weight[2 * dim:],
                     None if module.in_proj_bias is None else module.in_proj_bias[2 * dim:])
        v = v.reshape(n, length, module.num_heads, dim // module.num_heads).transpose(1, 2)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(n, weights.shape[-2], dim)
        store.append(weights)
        return module.out_proj(out), None
    return hook


@register
class LeGrad(CAMMethod):
    name = "legrad"
    summary = "ViT: positive gradient of each block's prediction w.r.t. its attention, averaged from the layer's block on"
    paper = "Bousselham et al., ICCV 2025, arXiv:2404.03214"
    cost = "1 short backward per block (on the shared forward)"
    transformers = "ViT only (torchvision's VisionTransformer): it reads attention probabilities"

    def validate(self, fp: ForwardPass, layer: str) -> None:
        blocks = attention_blocks(fp.model)
        if not blocks or block_reader(fp.model) is None:
            raise UsageError("legrad reads the attention of a vision transformer's blocks; it supports torchvision's "
                             "VisionTransformer (vit_*), and this model is not one; use gradcam")
        if first_block([name for name, _, _ in blocks], layer) is None:
            raise UsageError(f"legrad averages transformer blocks from the one `layer` names; {layer} is not a block "
                             f"or inside one (the blocks: {blocks[0][0]} ... {blocks[-1][0]})")
        for _, _, attention in blocks:
            if not attention.batch_first or not attention._qkv_same_embed_dim or attention.bias_k is not None:
                raise UsageError("legrad needs batch-first self-attention with one Q/K/V projection")

    watches = True  # its hooks ride on the shared forward: no second forward

    @contextmanager
    def watch(self, model: nn.Module, layers: list[str]) -> Iterator[_Recorder]:
        recorder = _Recorder(block_reader(model))
        handles = []
        blocks = attention_blocks(model)
        starts = [first_block([name for name, _, _ in blocks], layer) for layer in layers]
        # only the blocks some layer needs: earlier ones keep their fused attention kernel
        blocks = blocks[min((i for i in starts if i is not None), default=len(blocks)):]
        recorder.blocks = [name for name, _, _ in blocks]
        for _, block, attention in blocks:
            handles.append(attention.register_forward_pre_hook(_ask_for_weights, with_kwargs=True))
            handles.append(attention.register_forward_hook(_output_from_weights(recorder.weights), with_kwargs=True))
            handles.append(block.register_forward_hook(lambda _m, _i, out: recorder.tokens.append(out)))
        with removed_after(handles):
            yield recorder

    def raw_maps(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        blocks, maps = fp.cache[self.name]  # from the earliest block any layer needs
        return torch.stack(maps[first_block(blocks, layer):]).mean(0)


class _Recorder:
    """Keeps each block's attention probabilities and output tokens, then takes the gradients."""

    def __init__(self, read) -> None:
        self.read = read
        self.blocks: list[str] = []
        self.weights: list[torch.Tensor] = []
        self.tokens: list[torch.Tensor] = []

    def finish(self, x, table, targets, target) -> tuple[list[str], list[torch.Tensor]] | None:
        if self.read is None or not self.weights:
            return None  # not a supported ViT: validate says so
        head = dataclasses.replace(target, output=None)  # the block reader gives the head's tensor itself
        maps = []
        for a, t in zip(self.weights, self.tokens):
            block_score = head(self.read(t), targets).sum()
            (grad,) = torch.autograd.grad(block_score, a, retain_graph=True)
            relevance = grad.detach().clamp_min(0).mean(dim=(1, 2))[:, 1:]  # drop the class token key
            side = math.isqrt(relevance.shape[1])
            if side * side != relevance.shape[1]:
                raise UsageError(f"legrad: {relevance.shape[1]} patch tokens do not form a square grid")
            maps.append(relevance.reshape(-1, side, side))
        self.weights.clear()
        self.tokens.clear()
        return self.blocks, maps
