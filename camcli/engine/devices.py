"""Choosing the torch device: ``auto`` prefers CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch

from camcli.errors import UsageError


def pick_device(spec: str = "auto") -> torch.device:
    """Resolve ``auto``, ``cpu``, ``cuda``, ``cuda:1`` or ``mps`` to a device that exists here."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise UsageError(f"invalid `device` {spec!r}: use auto, cpu, cuda, cuda:N or mps") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"`device` {spec}: CUDA is not available on this machine (try `device` auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"`device` {spec}: only {torch.cuda.device_count()} CUDA device(s) found")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError(f"`device` {spec}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise UsageError(f"unsupported `device` {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def describe(device: torch.device) -> str:
    """Human-readable name for the run log and run.json."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
