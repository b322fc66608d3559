"""timm architectures (``--model timm/<name>``), when the optional ``timm`` package is installed.

camcli builds them with ``pretrained=False`` and loads weights from ``--checkpoint`` only
(timm's training scripts save ``{'state_dict': ...}``, which the checkpoint reader unwraps): it
never downloads. Input size, mean, std and crop fraction come from the model's
``pretrained_cfg``, as timm's own data config does.
"""

from __future__ import annotations

from torch import nn

from camcli.engine.framing import DEFAULT_CROP_FRACTION
from camcli.errors import UsageError, unknown

PREFIX = "timm/"


def is_timm(architecture: str) -> bool:
    return architecture.startswith(PREFIX)


def _timm():
    try:
        import timm
    except ImportError:
        raise UsageError("timm models need the optional timm package: pip install 'camcli[timm]'") from None
    return timm


def build(architecture: str, num_classes: int | None = None) -> nn.Module:
    """``timm.create_model(name, pretrained=False)``, with an error that suggests close names."""
    timm = _timm()
    name = architecture[len(PREFIX):]
    if name not in timm.list_models():
        raise unknown("timm model", name, timm.list_models(), "Run `camcli models timm/` for the list.")
    kwargs = {"num_classes": num_classes} if num_classes is not None else {}
    return timm.create_model(name, pretrained=False, **kwargs)


def names() -> list[str]:
    """Every timm architecture, prefixed (empty when timm is not installed)."""
    try:
        import timm
    except ImportError:
        return []
    return [PREFIX + n for n in timm.list_models()]


def preset(model: nn.Module) -> dict:
    """What timm says the model expects: input size, crop fraction, and mean and std (``None``
    where the model does not say)."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    size = cfg.get("input_size", (3, 224, 224))
    return {"input_size": (int(size[-2]), int(size[-1])), "crop_fraction": float(cfg.get("crop_pct") or DEFAULT_CROP_FRACTION),
            "mean": tuple(cfg["mean"]) if cfg.get("mean") else None,
            "std": tuple(cfg["std"]) if cfg.get("std") else None}
