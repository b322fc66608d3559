"""The registry of CAM methods, filled by the :func:`register` decorator.

``get_method("gradcam")`` returns a fresh instance; ``available()`` lists every class in
registration order, which is the order ``camcli methods`` prints.
"""

from __future__ import annotations

from camcli.errors import UsageError, unknown
from camcli.engine.methods.base import CAMMethod, ForwardPass, MapBatch, class_scores, normalise

_REGISTRY: dict[str, type[CAMMethod]] = {}


def register(cls: type[CAMMethod]) -> type[CAMMethod]:
    """Class decorator: make a method reachable by its ``name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"method {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> dict[str, type[CAMMethod]]:
    return dict(_REGISTRY)


def get_method(name: str, **options) -> CAMMethod:
    """A fresh method by name; ``options`` it does not understand (and ``None`` values) are ignored."""
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise unknown("method", name, _REGISTRY, "Run `camcli methods` for the list.")
    cls = _REGISTRY[key]
    method = cls(**{k: v for k, v in options.items() if k in cls.options and v is not None})
    if options.get("eigen_smooth"):
        if cls.weighted is CAMMethod.weighted:
            raise UsageError(f"`eigen_smooth` replaces a weighted channel sum by its first principal component; "
                             f"{cls.name} is not a weighted sum")
        method.eigen_smooth = True
    return method


# Importing the modules registers their classes.
# Import order is registration order, the order `camcli methods` lists them in.
from camcli.engine.methods import (cam, gradcam, elementwise, scorecam, eigencam, ablationcam,  # noqa: E402,F401
                                   fem, kpcacam, randomcam, scorecam_averaged, smoothgradcampp, finercam,
                                   shapleycam, fullgrad, guided, legrad)

__all__ = ["CAMMethod", "ForwardPass", "MapBatch", "available", "class_scores", "get_method", "normalise", "register"]
