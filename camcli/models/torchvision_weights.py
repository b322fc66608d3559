"""torchvision's weights: finding an enum member by name, building with it from the torch hub
cache (a clear message offline), naming a checkpoint's classes after weights with as many.
Shared by every torchvision source (classifiers, detectors, segmenters); nothing is downloaded
that the user did not ask for.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from camcli.errors import UsageError, unknown


def weight_names(architecture: str) -> list[str]:
    """The names of ``architecture``'s torchvision weights (empty when it has none)."""
    import torchvision  # here: importing it loads torch._dynamo (camcli.models.kinds)

    try:
        enum = torchvision.models.get_model_weights(architecture)
    except (ValueError, KeyError):
        return []
    return [w.name for w in enum]


def no_weights(weights) -> bool:
    """Whether ``weights`` names no torchvision weights (``DEFAULT`` counts as none once a checkpoint gives them)."""
    return weights in (None, "none", "None", "DEFAULT")


def no_torchvision_weights(weights) -> None:
    """Refuse torchvision weights for a model of the user's own."""
    if not no_weights(weights):
        raise UsageError("`weights` names torchvision weights; your own model takes its weights from `checkpoint`")


def weights_enum(architecture: str, name: str):
    """The weights enum member ``name`` (``DEFAULT``, ``IMAGENET1K_V1``, ``ResNet18_Weights.IMAGENET1K_V1``)."""
    import torchvision  # here: importing it loads torch._dynamo (camcli.models.kinds)

    enum = torchvision.models.get_model_weights(architecture)
    if name.upper() == "DEFAULT":
        return enum.DEFAULT
    short = name.split(".")[-1]
    for w in enum:
        if w.name.lower() == short.lower():
            return w
    raise unknown(f"weights for {architecture}", name, ["DEFAULT", "none", *[w.name for w in enum]])


def weights_for_classes(architecture: str, name: str, num_classes: int | None):
    """The weights enum member ``name`` and its categories; ``num_classes``, when given, must be
    theirs (a fine-tuned head comes with a checkpoint)."""
    w = weights_enum(architecture, name)
    categories = list(w.meta["categories"])
    if num_classes is not None and num_classes != len(categories):
        raise UsageError(f"`num_classes` {num_classes} does not match {w} ({len(categories)} classes); use "
                         "`checkpoint` for a fine-tuned head")
    return w, categories


def hub_cache_file(w) -> Path:
    """Where torch hub looks for (and downloads) a weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(w.url).path)


def build_with_weights(architecture: str, w, **kwargs) -> nn.Module:
    """``architecture`` built with weights ``w``, from the hub cache or downloaded; offline and not
    cached, one line that says where to put the file."""
    import torchvision  # here: importing it loads torch._dynamo (camcli.models.kinds)

    target = hub_cache_file(w)
    try:
        return torchvision.models.get_model(architecture, weights=w, **kwargs)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        if target.exists():
            raise UsageError(f"cannot read cached weights {target}: {e}") from e
        raise UsageError(
            f"weights {w} are not in the torch hub cache and could not be downloaded ({_reason(e)}). "
            f"Put the file from {w.url} at {target} (set TORCH_HOME to move the cache), "
            "or pass your own weights with `checkpoint`, or try camcli with `weights` none (random weights: "
            "the maps then show no learnt evidence).") from e
    except RuntimeError as e:
        raise UsageError(f"cached weights {target} do not load into {architecture}: {str(e).splitlines()[0]}") from e


def categories_for(architecture: str, classes: int | None) -> tuple[str, list[str]] | None:
    """(weights, categories) of torchvision weights of ``architecture`` with ``classes`` categories:
    a checkpoint of torchvision's own ImageNet file (or a fine-tune that kept its head) is named by
    them instead of ``class_N``. Read from the weights' metadata; nothing is downloaded."""
    import torchvision  # here: importing it loads torch._dynamo (camcli.models.kinds)

    try:
        enum = torchvision.models.get_model_weights(architecture)
    except (ValueError, KeyError):
        return None
    for w in enum:
        categories = w.meta.get("categories")
        if categories and len(categories) == classes:
            return str(w), list(categories)
    return None


def _reason(e: Exception) -> str:
    return str(getattr(e, "reason", None) or e).splitlines()[0][:120]
