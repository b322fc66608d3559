"""Which head a model has, measured on one dummy batch: how many outputs it gives and whether
its last module squashes them (a ``Sigmoid`` or ``Softmax`` of its own), and the embedding of a
reference image for similarity targets.

``--head auto`` decides from these facts alone (:func:`auto_kind`); an explicit head that
contradicts them (a softmax over one output, a sigmoid head on a model that ends in Softmax)
is refused instead of giving maps of a constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from camcli.errors import UsageError
from camcli.engine.images import ImageDataset, ImageItem
from camcli.engine.targets import select_output

#: the modules whose output is read as probabilities, by the head they imply
SQUASHING = {nn.Sigmoid: "sigmoid", nn.Softmax: "softmax"}


@dataclass(frozen=True)
class HeadFacts:
    """What one forward of a dummy image shows of the model's output."""

    width: int  # outputs per image (1 for a (N,) or (N, 1) output)
    dims: int  # dimensions of the output tensor, batch included
    squashed_by: str | None  # "sigmoid" or "softmax" when the model's last module is one
    in_unit_range: bool  # every output lies in [0, 1]


def probe(model: nn.Module, input_size: tuple[int, ...], device: torch.device | str,
          output: str | None = None, channels: int = 3) -> HeadFacts:
    """Run one dummy batch (of volumes when ``input_size`` has three sides) and record the
    output's width and the module that produced it."""
    last: dict[str, object] = {}

    def hook(module, _inputs, out):
        last["module"], last["out"] = module, out

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        x = torch.rand(2, channels, *input_size, generator=torch.Generator().manual_seed(0)).to(device)
        with torch.inference_mode():
            tensor = select_output(model(x), output)
    finally:
        for h in handles:
            h.remove()
    squashed = None
    if last.get("out") is tensor:  # the model returns what its last module made
        squashed = next((kind for cls, kind in SQUASHING.items() if isinstance(last["module"], cls)), None)
    width = int(tensor.shape[1]) if tensor.dim() == 2 else (1 if tensor.dim() == 1 else -1)
    finite = tensor.float()
    return HeadFacts(width, tensor.dim(), squashed,
                     bool(torch.isfinite(finite).all() and finite.min() >= 0 and finite.max() <= 1))


def auto_kind(facts: HeadFacts) -> tuple[str, bool]:
    """``--head auto``: (kind, squashed). One output is binary; a model ending in its own Sigmoid
    or Softmax gives those probabilities; everything else is a softmax head over logits."""
    if facts.width == 1:
        return "binary", facts.squashed_by == "sigmoid"
    if facts.squashed_by:
        return facts.squashed_by, True
    return "softmax", False


def checked_kind(head: str, facts: HeadFacts) -> tuple[str, bool]:
    """The head asked for, refused where the model's output contradicts it; (kind, squashed)."""
    if head == "auto":
        return auto_kind(facts)
    if head == "regression":
        return head, False
    if facts.width < 1:
        raise UsageError(f"`head` {head} reads (N, classes) outputs, but the model's output has {facts.dims} "
                         "dimensions; pick another part of it with `output`")
    if head == "binary":
        if facts.width != 1:
            raise UsageError(f"`head` binary reads one output per image, but the model gives {facts.width}; a "
                             "two-class softmax head is `head` softmax")
        return head, facts.squashed_by == "sigmoid"
    if facts.width == 1:
        raise UsageError(f"`head` {head} over one output is constant (a softmax of one logit is always 1): the "
                         "model has one output, which is `head` binary (or regression)")
    if facts.squashed_by and facts.squashed_by != head:
        raise UsageError(f"`head` {head}: the model ends in its own {facts.squashed_by.capitalize()}, so its outputs "
                         f"are {facts.squashed_by} probabilities; use `head` {facts.squashed_by} (or auto)")
    return head, facts.squashed_by == head


def reference_embedding(model: nn.Module, path: str, input_size: tuple[int, int], mean, std, resize: str,
                        crop_fraction: float, device: torch.device | str, output: str | None,
                        max_pixels: int) -> torch.Tensor:
    """The embedding of the image at ``path``, decoded and fitted by the run's own dataset (so it
    is fed exactly as the run's images are)."""
    fill = tuple(int(round(255 * m)) for m in mean)
    decoded = ImageDataset([ImageItem(0, str(path), Path(path).name)], input_size, max_pixels, resize, fill,
                           crop_fraction)[0]
    if decoded.error:
        raise UsageError(f"`target_image` {path}: {decoded.error}")
    pixels = decoded.pixels[None].to(device).float() / 255
    x = (pixels - torch.tensor(mean, device=device).view(1, 3, 1, 1)) / torch.tensor(std, device=device).view(1, 3, 1, 1)
    with torch.inference_mode():
        embedding = select_output(model(x), output).float()
    if embedding.dim() != 2:
        raise UsageError(f"the model's output is {tuple(embedding.shape)}, not one embedding per image: pick another "
                         "part of it with `output`, or pool it in your model")
    return embedding[0].detach().clone()


def read_embedding(path: str) -> torch.Tensor:
    """A reference embedding from a ``.npy`` file: one vector (or a (1, D) array)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"`target_embedding` {path}: cannot read it as a .npy array ({str(e).splitlines()[0]})") \
            from None
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.number) or array.size == 0:
        raise UsageError(f"`target_embedding` {path}: expected one vector, got an array of shape {array.shape}")
    if not np.isfinite(array).all() or not np.any(array):
        raise UsageError(f"`target_embedding` {path}: the vector must be finite and not all zeros")
    return torch.from_numpy(array.astype(np.float32))


def binary_labels(labels: list[str]) -> list[str]:
    """The binary head's two classes, negative first: two given names, ``not X`` and ``X`` for one
    given name, else negative and positive."""
    if len(labels) == 2:
        return list(labels)
    if labels == ["class_0"]:
        return ["negative", "positive"]
    return [f"not {labels[0]}", labels[0]]
