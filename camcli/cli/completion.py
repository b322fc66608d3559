"""What the shell offers after an option (``camcli --install-completion`` installs it).

Fixed choices come from :data:`~camcli.settings.checks.CHOICES`; methods, colour maps and devices
from their registries; ``--model`` from torchvision's and camcli's model lists (torch loads once,
on the first <Tab> after ``--model``); ``--layer`` from the architecture named earlier on the line,
built without weights as ``camcli layers`` does (a factory ``file.py:function`` or a model folder
is not loaded for a completion: <Tab> runs no code and reads no file). A completion that fails offers nothing: the shell's
<Tab> must never print a traceback.
"""

from __future__ import annotations

from collections.abc import Callable

DEVICES = ("auto", "cpu", "cuda", "cuda:0", "cuda:1", "mps")


def _starting(values, incomplete: str) -> list[str]:
    return [v for v in values if v.startswith(incomplete)]


def _listed(values, incomplete: str) -> list[str]:
    """A comma-separated list (``--method gradcam,sc<Tab>``): complete the last name, keep the others."""
    done, _, last = incomplete.rpartition(",")
    prefix = done + "," if done else ""
    return [prefix + v for v in values if v.startswith(last)]


def _methods(incomplete: str) -> list[str]:
    from camcli.engine import METHOD_NAMES

    return _listed(METHOD_NAMES, incomplete)


def _colormaps(incomplete: str) -> list[str]:
    from camcli.output.render import COLORMAPS

    return _starting(sorted(COLORMAPS), incomplete)


def _models(incomplete: str) -> list[str]:
    try:
        from camcli import tasks

        names = [name for task in tasks.all_tasks() for name in task.known_models()]  # `camcli models`' list
    except Exception:  # noqa: BLE001 - a completion offers nothing rather than a traceback
        return []
    return _starting(sorted(dict.fromkeys(names)), incomplete)


def _layers(ctx, incomplete: str) -> list[str]:
    model = (ctx.params or {}).get("model") or "resnet50"
    if ":" in model or "/" in model.replace("timm/", "", 1):  # a factory or a folder: <Tab> runs no code, reads no file
        return []
    try:
        from camcli import api

        names = [entry["display"] for entry in api.layers(model)]
    except Exception:  # noqa: BLE001
        return []
    return _starting(names, incomplete)


def for_setting(name: str) -> Callable | None:
    """The completion of setting ``name``'s values, or None (the shell's own: file names)."""
    from camcli.settings.checks import CHOICES

    if name in CHOICES:
        return lambda incomplete: _starting(CHOICES[name], incomplete)
    return {
        "method": _methods,
        "colormap": _colormaps,
        "model": _models,
        "layer": lambda ctx, incomplete: _layers(ctx, incomplete),
        "device": lambda incomplete: _starting(DEVICES, incomplete),
    }.get(name)
