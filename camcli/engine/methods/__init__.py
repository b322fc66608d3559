"""The registry of CAM methods, filled by the :func:`register` decorator.

``get_method("gradcam")`` returns a fresh instance; ``available()`` lists every class in
registration order, which is the order ``camcli methods`` prints.
"""

from __future__ import annotations

from camcli.errors import UsageError, unknown
from camcli.engine.method_options import given_to, takes
from camcli.engine.methods.base import CAMMethod, ForwardPass, MapBatch, class_scores, normalise

_REGISTRY: dict[str, type[CAMMethod]] = {}


def register(cls: type[CAMMethod]) -> type[CAMMethod]:
    """Class decorator: make a method reachable by its ``name``; its ``options`` are the ones
    declared for it in :mod:`camcli.engine.method_options`."""
    if cls.name in _REGISTRY:
        raise ValueError(f"method {cls.name!r} registered twice")
    cls.options = takes(cls.name)
    _REGISTRY[cls.name] = cls
    return cls


def available() -> dict[str, type[CAMMethod]]:
    return dict(_REGISTRY)


def get_method(name: str, eigen_smooth: bool = False, **options) -> CAMMethod:
    """A fresh method by name, built with ``options`` (``None`` values mean the method's default);
    an option it does not take, or a bad value, is a ``UsageError`` (:func:`method_options.given_to`).
    ``eigen_smooth`` applies to every method that is a weighted channel sum."""
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise unknown("method", name, _REGISTRY, "Run `camcli methods` for the list.")
    cls = _REGISTRY[key]
    method = cls(**given_to(key, options))
    if eigen_smooth:
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


def taking(passes: str | None) -> list[str]:
    """The methods an explainer takes when it serves the shared forward and backward and, besides,
    scores ``passes`` of a method's own (``masked``, ``ablated``; ``None``: none): the layer-only
    methods and those whose passes it scores."""
    return [name for name, cls in available().items() if cls.layer_only or (passes and cls.scores_passes == passes)]
