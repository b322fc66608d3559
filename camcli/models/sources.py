"""Where models come from, as one registry: each source claims a model spec and loads it.

A :class:`ModelSource` says whether it can load a request (:meth:`~ModelSource.claims`) and
returns a :class:`~camcli.engine.loaded.LoadedModel` (:meth:`~ModelSource.load`). The built-in
sources live in the modules that know their models (a handed-over module, a factory, YOLO,
torchvision's detectors and segmenters, a HuggingFace folder, an exported program, a whole
pickled model, torchvision and timm classifiers by name) and are asked in that order, after any
source added with :func:`register_source`. :func:`load_model` is the one entry point; the task a
model serves is decided by camcli/tasks/, not here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from camcli.errors import UsageError

if TYPE_CHECKING:
    import torch

    from camcli.engine.loaded import LoadedModel


@dataclass(frozen=True)
class ModelRequest:
    """What the settings say about the model to load."""

    spec: Any  # a name, a factory spec, a folder, an nn.Module, or None (the default architecture)
    weights: str | None = "DEFAULT"
    checkpoint: str | Path | None = None
    num_classes: int | None = None
    labels: str | Path | list[str] | None = None
    input_size: tuple[int, int] | None = None
    trust: bool = False
    model_args: list[str] | None = None
    output: str | None = None  # the part of a tuple or dict output to read

    @property
    def own(self) -> dict:
        """What a model of the user's own takes: class count, labels, the output to read."""
        return {"num_classes": self.num_classes, "labels": self.labels, "output": self.output}


class ModelSource:
    """One place models come from. Subclass it, name it, and say what it claims and how it loads."""

    name: ClassVar[str]

    def claims(self, request: ModelRequest) -> bool:
        raise NotImplementedError

    def load(self, request: ModelRequest) -> LoadedModel:
        raise NotImplementedError


#: the built-in sources, in the order they are asked: module path -> the name of its source object
BUILT_IN = (("camcli.models.modules", "HANDED_OVER"), ("camcli.models.factory", "FACTORY"),
            ("camcli.models.monai_networks", "MONAI"),
            ("camcli.models.detectors", "YOLO"), ("camcli.models.detectors", "DETECTORS"),
            ("camcli.models.segmenters", "SEGMENTERS"), ("camcli.models.video_models", "VIDEO"),
            ("camcli.models.huggingface", "FOLDER"),
            ("camcli.models.exported", "PROGRAM"), ("camcli.models.pickled", "PICKLED"),
            ("camcli.models.classifiers", "CLASSIFIERS"))
_added: list[ModelSource] = []


def register_source(source: ModelSource) -> ModelSource:
    """Add a source; it is asked before the built-in ones."""
    if not isinstance(source, ModelSource):
        raise TypeError(f"register_source() takes a ModelSource instance, got {type(source).__name__}")
    unregister_source(source.name)
    _added.append(source)
    return source


def unregister_source(name: str) -> None:
    """Remove a source added with :func:`register_source`."""
    _added[:] = [s for s in _added if s.name != name]


def all_sources() -> list[ModelSource]:
    """Every source, in the order they are asked."""
    return list(_in_order())


def _in_order() -> Iterator[ModelSource]:
    """The sources in the order they are asked, each module imported when its turn comes (the
    ones after the source that claims a model are never imported: torchvision's, for one)."""
    yield from _added
    for module, obj in BUILT_IN:
        yield getattr(import_module(module), obj)


def load_model(architecture=None, weights: str | None = "DEFAULT", checkpoint: str | Path | None = None,
               num_classes: int | None = None, labels: str | Path | list[str] | None = None,
               input_size: int | tuple[int, int] | None = None, device: torch.device | str = "cpu",
               trust: bool = False, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               model_args: list[str] | None = None, output: str | None = None) -> LoadedModel:
    """Load ``architecture`` through the first source that claims it, in eval mode on ``device``.

    ``architecture`` is a torchvision name, ``timm/NAME``, a factory (``file.py:function`` or
    ``package.module:function``, called with ``model_args``: ``["key=value", ...]``), a
    HuggingFace folder, a YOLO yaml, an ``nn.Module`` itself, or ``None`` (resnet50, unless
    ``checkpoint`` is a whole pickled model or an exported program: then that). ``weights`` is a
    torchvision weights name (``DEFAULT``, ``IMAGENET1K_V1``...) or ``none``; with ``checkpoint``
    the weights come from that file instead. A whole pickled model or TorchScript file loads only
    with ``trust=True`` (``--trust-checkpoint``): it runs code. ``mean`` and ``std`` replace the
    weights' normalisation.

    >>> lm = load_model("resnet18", weights="none", num_classes=10)  # doctest: +SKIP
    """
    request = ModelRequest(architecture, weights, checkpoint, num_classes, labels, _size(input_size), trust,
                           model_args, output)
    source = next(s for s in _in_order() if s.claims(request))
    loaded = source.load(request)
    if mean is not None or std is not None:
        _set_normalisation(loaded, mean, std)
    loaded.model.eval().to(device)
    return loaded


def _set_normalisation(loaded: LoadedModel, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
    """``mean``/``std`` given by the user: one value per input channel (one value: all channels)."""
    for name, values in (("mean", mean), ("std", std)):
        if values is None:
            continue
        values = tuple(float(v) for v in values)
        if len(values) not in (1, loaded.input_channels):
            kind = "an RGB" if loaded.input_channels == 3 else "a grayscale"
            raise UsageError(f"`{name}` has {len(values)} values; {kind} model takes {loaded.input_channels} "
                             "(or one for all channels)")
        if name == "std" and any(v <= 0 for v in values):
            raise UsageError(f"`std` values must be positive, got {', '.join(map(str, values))}")
        if len(values) == 1:
            values = values * 3
        setattr(loaded, name, values)


def _size(input_size) -> tuple[int, int] | None:
    if input_size is None:
        return None
    if isinstance(input_size, int):
        return (input_size, input_size)
    h, w = input_size
    return (int(h), int(w))
