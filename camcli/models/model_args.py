"""``model_arg`` key=value pairs: the keyword arguments of a factory, a torchvision builder or a
YOLO model, parsed once for every source that takes them."""

from __future__ import annotations

import ast

from camcli.errors import UsageError


def parse_model_args(items: list[str] | None) -> dict[str, object]:
    """``["classes=10", "name=tiny"]`` -> ``{"classes": 10, "name": "tiny"}``."""
    args: dict[str, object] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise UsageError(f"`model_arg` {item!r} is not key=value (a Python keyword argument of the factory)")
        try:
            args[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            args[key] = value.strip()
    return args
