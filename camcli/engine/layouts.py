"""How a layer's output is laid out, and the (N, C, h, w) map every method works on.

Convolutional layers output (N, C, H, W). Transformers do not: ViT's blocks output tokens
(N, prefix + h*w, C) with a class token (and register tokens, in some timm models) before the
patch tokens; Swin's blocks output channels-last maps (N, H, W, C). Video models add time: 3D
convolutions give (N, C, t, h, w), Swin3D's stages (N, t, h, w, C), and MViT's blocks tokens
(N, 1 + t*h*w, C) whose (t, h, w) grid the model itself states (its positional encoding and its
blocks' pooling: read from them, never factored from the count). A :class:`Layout` turns
such an output into the map the methods see, and a map back into the output the model goes on
with, so that gradients, ablated channels and masks all pass through one reshape.

The layout is decided once per layer, from the shapes and the input size, and never guessed.
When both readings of a 4-D output fit the input's geometry (small maps: 2x4x5 from a 4x5
input could be either), one more forward at a larger input shows which axes are spatial:
they grow, the channel axis does not. What stays ambiguous, or a token count that several
grids could explain, is refused with a request for ``layer_layout``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from camcli.engine.tensors import first_tensor
from camcli.errors import UsageError
from camcli.engine.layer_names import display_name, hook_layer

LAYOUTS = ("auto", "nchw", "nhwc", "tokens")
#: the most prefix tokens (class, distillation, register tokens) considered without the model saying
MAX_PREFIX = 8


class NotAMap(UsageError):
    """A layer's output cannot be read as a map, or reads as one in more than one way."""


@dataclass(frozen=True)
class Layout:
    """One reading of a layer output: ``nchw`` (as it is: channels first, (N, C, h, w) or a
    volume's (N, C, d, h, w)), ``nhwc`` or ``tokens``."""

    kind: str
    grid: tuple[int, ...] = (0, 0)  # tokens: the patch grid (h, w), or a clip's (t, h, w)
    prefix: int = 0  # tokens: class/register tokens in front of the patch tokens

    def to_map(self, t: torch.Tensor) -> torch.Tensor:
        """The layer output as an (N, C, h, w) map, or (N, C, t, h, w) (a view where possible, so
        gradients reach it)."""
        if self.kind == "nchw":
            return t
        if self.kind == "nhwc":
            return t.permute(0, t.dim() - 1, *range(1, t.dim() - 1))
        n, _, c = t.shape
        axes = len(self.grid)
        return t[:, self.prefix:].reshape(n, *self.grid, c).permute(0, axes + 1, *range(1, axes + 1))

    def from_map(self, m: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """A new layer output made from map ``m``; prefix tokens are taken from ``original``.

        Always a fresh tensor: in-place operations further down the model never reach ``m``.
        """
        if self.kind == "nchw":
            return m.clone()
        last = tuple(range(2, m.dim())) + (1,)
        if self.kind == "nhwc":
            return m.permute(0, *last).clone(memory_format=torch.contiguous_format)
        n, c = m.shape[:2]
        patches = m.permute(0, *last).reshape(n, -1, c)
        if not self.prefix:
            return patches.clone(memory_format=torch.contiguous_format)
        front = original[:, :self.prefix].expand(n, -1, -1).to(patches.dtype)
        return torch.cat([front, patches], dim=1)

    def grid_of(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The (h, w) of the map an output of ``shape`` gives ((t, h, w) for a clip's)."""
        if self.kind == "tokens":
            return self.grid
        return tuple(shape[1:-1]) if self.kind == "nhwc" else tuple(shape[2:])

    def channels_of(self, shape: tuple[int, ...]) -> int:
        """The channel count of the map an output of ``shape`` gives."""
        return shape[-1] if self.kind in ("nhwc", "tokens") else shape[1]

    def describe(self, shape: tuple[int, ...]) -> str:
        """What ``camcli layers`` prints: ``768x7x7``, ``nhwc 7x7x768 -> 7x7``, ``tokens 197x768 -> 14x14``."""
        dims = "x".join(map(str, shape[1:]))
        if self.kind == "nchw":
            return dims
        return f"{self.kind} {dims} -> {'x'.join(map(str, self.grid_of(shape)))}"


NCHW = Layout("nchw")


@dataclass(frozen=True)
class TokenGeometry:
    """What a transformer says about its tokens; ``None`` where it does not say."""

    patch: tuple[int, int] | None = None
    prefix: int | None = None
    #: a video transformer's token grids: token count (prefix included) -> (t, h, w), as MViT states them
    grids: tuple[tuple[int, tuple[int, int, int]], ...] = ()
    #: the model's 5-D outputs may be channels-last (Swin3D's stages: (N, t, h, w, C)); 3D
    #: convolutions' never are, so a volume network's maps are not probed for it
    channels_last_5d: bool = False


def token_geometry(model: nn.Module) -> TokenGeometry:
    """Patch size and prefix-token count, read from torchvision's, timm's and HuggingFace's ViT
    attributes; a video MViT's (t, h, w) grids from its positional encoding and its blocks."""
    grids = mvit_grids(model)
    if grids:
        return TokenGeometry(prefix=1, grids=grids)
    if any(type(m).__name__ == "PatchEmbed3d" for m in model.modules()):  # torchvision's Swin3D
        return TokenGeometry(channels_last_5d=True)
    patch = prefix = None
    if isinstance(getattr(model, "patch_size", None), int) and hasattr(model, "class_token"):
        patch, prefix = (model.patch_size, model.patch_size), 1  # torchvision VisionTransformer
    config = getattr(model, "config", None)  # HuggingFace ViT, DeiT, BEiT (not Swin's, whose stages shrink)
    size = getattr(config, "patch_size", None)
    if patch is None and isinstance(size, int) and not hasattr(config, "depths"):
        patch = (size, size)
    embed = getattr(model, "patch_embed", None)
    if embed is not None and getattr(embed, "patch_size", None) is not None:  # timm
        p = embed.patch_size
        patch = (int(p[0]), int(p[1])) if isinstance(p, (tuple, list)) else (int(p), int(p))
        if isinstance(getattr(model, "num_prefix_tokens", None), int):
            prefix = model.num_prefix_tokens
    return TokenGeometry(patch, prefix)


def mvit_grids(model: nn.Module) -> tuple[tuple[int, tuple[int, int, int]], ...]:
    """torchvision's MViT: every token count its blocks see (class token included) with the
    (t, h, w) grid it holds: the positional encoding's grid, then each block's query pooling,
    with the pooling layer's own arithmetic. Empty for any other model; a count two grids share
    is left out (a layer giving it is refused, not guessed)."""
    encoding, blocks = getattr(model, "pos_encoding", None), getattr(model, "blocks", None)
    stated = all(hasattr(encoding, a) for a in ("temporal_size", "spatial_size", "class_token"))
    if not (stated and isinstance(blocks, (nn.Sequential, nn.ModuleList))):
        return ()
    thw = (int(encoding.temporal_size), *map(int, encoding.spatial_size))
    seen = {thw}
    for block in blocks:
        pool = getattr(getattr(getattr(block, "attn", None), "pool_q", None), "pool", None)
        if pool is not None:
            thw = _pooled(thw, pool)
        seen.add(thw)
    counts: dict[int, set] = {}
    for g in seen:
        counts.setdefault(1 + math.prod(g), set()).add(g)
    return tuple((n, next(iter(gs))) for n, gs in sorted(counts.items()) if len(gs) == 1)


def _pooled(thw: tuple[int, int, int], pool: nn.Module) -> tuple[int, int, int]:
    """The grid a 3D convolution or pooling layer makes of ``thw``."""
    def three(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v,) * 3
    k, s, p = three(pool.kernel_size), three(pool.stride or pool.kernel_size), three(pool.padding)
    d = three(getattr(pool, "dilation", 1))
    return tuple((n + 2 * pp - dd * (kk - 1) - 1) // ss + 1 for n, kk, ss, pp, dd in zip(thw, k, s, p, d))


def _fits(h: int, w: int, input_size: tuple[int, int]) -> bool:
    """Whether an (h, w) grid can be the input (H, W) seen at one stride (rounding either way)."""
    big_h, big_w = input_size
    if not (1 <= h <= big_h and 1 <= w <= big_w):
        return False
    lo = max(big_h / (h + 1), big_w / (w + 1))
    hi = min(big_h / (h - 1) if h > 1 else math.inf, big_w / (w - 1) if w > 1 else math.inf)
    return lo < hi


def token_grids(count: int, input_size: tuple[int, int], geometry: TokenGeometry) -> list[Layout]:
    """Every (prefix, grid) reading of ``count`` tokens that the model and the input allow."""
    big_h, big_w = input_size
    if geometry.patch is not None:
        grid = (big_h // geometry.patch[0], big_w // geometry.patch[1])
        prefix = count - grid[0] * grid[1]
        if prefix < 0 or (geometry.prefix is not None and prefix != geometry.prefix):
            return []  # not this model's patch grid (a window of a hierarchical model): no map
        return [Layout("tokens", grid, prefix)]
    prefixes = [geometry.prefix] if geometry.prefix is not None else range(MAX_PREFIX + 1)
    found = []
    for p in prefixes:
        n = count - p
        for gh in range(1, n + 1):
            gw = n // gh
            if n % gh == 0 and big_h % gh == 0 and big_w % gw == 0 and big_h // gh == big_w // gw:
                found.append(Layout("tokens", (gh, gw), p))
    return list(dict.fromkeys(found))


def readings(shape: tuple[int, ...], input_size: tuple[int, int], geometry: TokenGeometry) -> list[Layout]:
    """Every layout under which ``shape`` is a map of an ``input_size`` image (empty: none)."""
    if len(shape) == 4 and len(input_size) == 2:
        out = []
        if _fits(shape[2], shape[3], input_size):
            out.append(NCHW)
        if _fits(shape[1], shape[2], input_size):
            out.append(Layout("nhwc"))
        return out
    if len(shape) == 3 and len(input_size) == 3:  # a clip's tokens: only the grids the model states
        return [Layout("tokens", grid, shape[1] - math.prod(grid)) for count, grid in geometry.grids
                if count == shape[1]]
    if len(shape) == 3:
        return token_grids(shape[1], input_size, geometry)
    if len(shape) == 5 and len(input_size) == 3:
        out = []
        if all(1 <= s <= big for s, big in zip(shape[2:], input_size)):
            out.append(NCHW)  # a volume's or a clip's (N, C, d, h, w), as 3D convolutions give them
        if (geometry.channels_last_5d or not out) and all(1 <= s <= big for s, big in zip(shape[1:4], input_size)):
            out.append(Layout("nhwc"))  # Swin3D's (N, t, h, w, C)
        return out
    return []


def probe_size(input_size: tuple[int, ...]) -> tuple[int, ...]:
    """A second input size for telling spatial axes from channels: 1.5x, rounded up to 32 (a
    clip's or volume's first axis is kept)."""
    grown = tuple(max(32, -(-int(s * 1.5) // 32) * 32) for s in input_size[-2:])
    return (*input_size[:-2], *grown)


def layer_shapes(model: nn.Module, layers: list[str], x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """The shape of each layer's output for input ``x`` (one forward, no gradients)."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for layer in layers:
        def hook(_m, _i, output, layer=layer):
            t = first_tensor(output)
            shapes.setdefault(layer, tuple(t.shape) if t is not None else ())
        handles += hook_layer(model, layer, hook)
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


def rescaled_shapes(model: nn.Module, layers: list[str], x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """:func:`layer_shapes` at :func:`probe_size`; empty when the model refuses that size (ViT)."""
    bigger = F.interpolate(x[:1].float(), size=probe_size(tuple(x.shape[2:])),
                           mode="trilinear" if x.dim() == 5 else "bilinear", align_corners=False).to(x.dtype)
    try:
        return layer_shapes(model, layers, bigger)
    except (RuntimeError, ValueError, AssertionError, TypeError):
        return {}


def decide_layouts(model: nn.Module, layers: list[str], x: torch.Tensor, requested: str = "auto"
                   ) -> dict[str, Layout]:
    """How each layer's output reads as a map for inputs like ``x`` (one image): its shape measured,
    a second input size tried where a 4-D shape fits both ways, then :func:`detect` (a refusal
    names the layer)."""
    input_size = tuple(x.shape[2:])  # (H, W), or (D, H, W) for a volume
    shapes = layer_shapes(model, layers, x)
    geometry = token_geometry(model)
    unsure = [l for l in layers if len(readings(shapes[l], input_size, geometry)) > 1]
    bigger = rescaled_shapes(model, unsure, x) if unsure and requested == "auto" else {}
    return {layer: detect(shapes[layer], input_size, geometry, requested, where=f"layer {display_name(layer)}",
                          rescaled=bigger.get(layer)) for layer in layers}


def by_scaling(found: list[Layout], shape: tuple[int, ...], other: tuple[int, ...] | None) -> list[Layout]:
    """Of the 4-D readings ``found``, those whose spatial axes are the ones that changed when the
    input grew (``other``: the same layer's output shape at :func:`probe_size`)."""
    if not other or len(other) != len(shape) or len(shape) not in (4, 5):
        return found
    changed = {i for i in range(1, len(shape)) if shape[i] != other[i]}
    spatial = {"nchw": set(range(2, len(shape))), "nhwc": set(range(1, len(shape) - 1))}
    return [r for r in found if changed and changed <= spatial.get(r.kind, set())]


def detect(shape: tuple[int, ...], input_size: tuple[int, int], geometry: TokenGeometry,
           requested: str = "auto", where: str = "the layer", rescaled: tuple[int, ...] | None = None) -> Layout:
    """The one layout of ``shape``, or a ``UsageError`` saying why it is not a map or is ambiguous.

    ``rescaled`` is the output's shape at :func:`probe_size`, where known: it settles 4-D outputs
    that fit both ways. ``requested`` (``layer_layout``) chooses between the readings that fit;
    ``auto`` accepts only a single reading. A requested layout that does not fit is refused.
    """
    shown = "x".join(map(str, shape))
    found = readings(shape, input_size, replace(geometry, channels_last_5d=True) if requested == "nhwc" else geometry)
    if len(found) > 1 and len(shape) in (4, 5):
        found = by_scaling(found, shape, rescaled) or found
    if requested != "auto":
        chosen = [r for r in found if r.kind == requested]
        if len(chosen) == 1:
            return chosen[0]
        if not chosen:
            raise NotAMap(f"{where} outputs shape {shown}, which cannot be read as `layer_layout` {requested} "
                          f"for a {'x'.join(map(str, input_size))} input")
        found = chosen
    if len(found) == 1:
        return found[0]
    if not found:
        what = {4: "no channel axis leaves a grid that matches the input",
                5: "a volume's layers give (N, C, d, h, w) maps no larger than the input",
                3: ("the model states no (t, h, w) grid of this many tokens" if len(input_size) == 3 else
                    "no square patch grid (with up to 8 prefix tokens) matches the token count")}.get(
                    len(shape), "CAM methods need a map: (N, C, H, W), (N, H, W, C) or tokens (N, L, C)")
        raise NotAMap(f"{where} outputs shape {shown} for a {'x'.join(map(str, input_size))} input: {what}")
    if all(r.kind == "tokens" for r in found):
        options = ", ".join(f"{r.prefix} prefix + {r.grid[0]}x{r.grid[1]}" for r in found)
        raise NotAMap(f"{where} outputs {shape[1]} tokens, which fit several patch grids ({options}) and the model "
                      "states no patch size; camcli does not guess: choose a layer whose output is a map")
    raise NotAMap(f"{where} outputs shape {shown}, which reads as a map in more than one way "
                  f"({' or '.join(r.kind for r in found)}); camcli does not guess: pass `layer_layout` "
                  + " or ".join(r.kind for r in found))
