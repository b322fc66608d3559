"""Any ``nn.Module`` as a model camcli explains: handed over from Python, made by a factory, or unpickled.

Nothing is derived from a name here: the class count comes from one dry forward, labels from
``labels`` (else ``class_N``), preprocessing from ``input_size``, ``mean`` and ``std`` (224 and
ImageNet's by default, as for a torchvision checkpoint). The model is recorded by its class's
qualified name and, for resuming, by a hash of its weights.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from camcli.errors import UsageError


def qualified_name(model: nn.Module) -> str:
    """``package.module.Class`` of the model, as ``run.json`` records it."""
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def weights_sha256(model: nn.Module) -> str:
    """A hash of every parameter and buffer (names, dtypes, shapes and values): the same weights, the same hash."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def classes_of(model: nn.Module, input_size: tuple[int, int]) -> int:
    """How many scores the model returns per image, from one dry forward at ``input_size``."""
    from camcli.engine.methods.base import model_logits

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.zeros(1, 3, *input_size, device=device)
    try:
        with torch.inference_mode():
            out = model.eval()(x)
    except Exception as e:  # the user's model: its failure, in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"the model ({qualified_name(model)}) fails on a {input_size[0]}x{input_size[1]} RGB input: "
                         f"{type(e).__name__}: {first}; give the size it takes with `input_size`") from None
    return int(model_logits(out).shape[1])
