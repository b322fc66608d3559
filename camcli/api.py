"""The Python API the command line is built on.

>>> import camcli
>>> run = camcli.explain(["sample_images/"], model="resnet18",                 # doctest: +SKIP
...                      checkpoint="demo/shapes_resnet18.safetensors",
...                      labels="demo/labels.txt", input_size=224, method="gradcam,cam")
>>> for r in run:                                                              # doctest: +SKIP
...     print(r.item.rel, r.pred_label, f"{r.score:.2f}", [m.heatmap.shape for m in r.maps])
single/circle_00.jpg circle 0.99 [(311, 254), (311, 254)]
>>> run.summary.ok                                                             # doctest: +SKIP
24

Nothing is written unless ``out=`` is given; then overlays, ``predictions.csv`` and
``run.json`` are written exactly as ``camcli explain --out`` writes them, by the same code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from camcli.run import Run
from camcli.settings import FIELDS, resolve


def explain(paths: str | os.PathLike | Sequence[str | os.PathLike], model=None, *,
            method: str | Sequence[str] | None = None, layer: str | Sequence[str] | None = None,
            out: str | os.PathLike | None = None, config: str | os.PathLike | None = None,
            **options) -> Run:
    """Explain images; iterate the returned :class:`~camcli.run.Run` for one
    :class:`~camcli.engine.stream.ImageResult` per image, in input order.

    ``paths``: image files, folders and globs, or images in memory (a PIL image, an H x W x C NumPy
    array, a C x H x W or N x C x H x W tensor, or a list of them and paths; see
    :mod:`camcli.engine.in_memory`), named ``image-0000.png``, ... by their place. ``model`` is a name as ``--model`` takes it
    (``resnet18``, ``timm/NAME``, ``file.py:function``) or any ``torch.nn.Module``: then labels,
    ``input_size``, ``mean`` and ``std`` come from the keywords (224 and ImageNet's by default)
    and the class count from the module's output, and ``checkpoint`` may load a state dict into
    it. ``method``, ``layer`` and every other
    keyword (``weights``, ``checkpoint``, ``labels``, ``input_size``, ``target``, ``score``,
    ``topk``, ``batch_size``, ``workers``, ``device``, ``hidden``, ``max_pixels``, ...) mean what
    the ``camcli explain`` option of the same name means; ``config`` reads a TOML file first.
    Each result carries the prediction (``pred_label``, ``score``, ``topk``), the explained
    class, and per method x layer a :class:`~camcli.engine.stream.MapResult` with the heatmap
    at the image's size and at the layer's size. Once iterated, ``run.summary`` has the counts.
    """
    unknown = sorted(k for k in options if k not in FIELDS or k == "out")
    if unknown:
        raise TypeError(f"explain() got unexpected option(s): {', '.join(unknown)}")
    from camcli.engine.in_memory import is_in_memory, items_of
    from camcli.models.modules import handed_over

    given = [paths] if isinstance(paths, (str, os.PathLike)) or is_in_memory(paths) else list(paths)
    model, module = handed_over(model)  # a module is recorded by its class's name, and used itself
    values = dict(options, model=model, method=_as_list(method), layer=_as_list(layer),
                  out=os.fspath(out) if out is not None else None)
    settings = resolve(values, config, environ={})
    items = None
    if any(is_in_memory(p) for p in given):  # images in memory: named image-0000.png, ... by their place
        items = items_of(given, hidden=settings.hidden, out=settings.out if out is not None else None)
        inputs = [i.rel if i.pixels is not None else i.path for i in items]
    else:
        inputs = [os.fspath(p) for p in given]
    return Run(settings, inputs, write=out is not None, module=module, items=items)


def _as_list(value) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


#: what ``layers()`` takes besides the model (what shapes a model's layers)
_LAYER_OPTIONS = ("checkpoint", "num_classes", "input_size", "model_arg", "trust_checkpoint")


def layers(model=None, *, config: str | os.PathLike | None = None, **options) -> list[dict]:
    """Every module of ``model`` with its output shape and the map it gives: what ``camcli layers
    --json`` prints, plus ``describe`` (its text column).

    ``model`` is anything :func:`explain` takes (a name, a factory spec, an ``nn.Module``), or
    ``None`` with a whole pickled model as ``checkpoint`` (``trust_checkpoint=True``) or a
    ``config`` that names one; ``checkpoint``, ``num_classes``, ``input_size``, ``model_arg`` and
    ``trust_checkpoint`` mean what they mean there. No weights are downloaded.

    >>> [l["display"] for l in camcli.layers("resnet18") if l["default"]]    # doctest: +SKIP
    ['layer4[1]']
    """
    from camcli import tasks
    from camcli.errors import UsageError
    from camcli.models import load_model
    from camcli.models.layer_search import trace_layers

    unknown = sorted(k for k in options if k not in _LAYER_OPTIONS)
    if unknown:
        raise TypeError(f"layers() got unexpected option(s): {', '.join(unknown)}")
    from camcli.models.modules import handed_over

    model, module = handed_over(model)
    settings = resolve(dict(options, model=model), config, environ={})
    named = model is not None or settings.sources.get("model") != "default"
    if not named and not (settings.checkpoint and settings.trust_checkpoint):
        raise UsageError("name a model: an architecture (resnet18), timm/NAME, a factory (file.py:function), or a "
                         "whole pickled model as `checkpoint` with `trust_checkpoint`")
    loaded = load_model(module if module is not None else (settings.model if named else None), weights="none",
                        checkpoint=settings.checkpoint, num_classes=settings.num_classes,
                        input_size=settings.input_size, trust=settings.trust_checkpoint,
                        model_args=settings.model_arg)
    if settings.checkpoint is None and loaded.source is None:
        _randomise_zero_head(loaded.model)
    # a volume model takes its own channels; an image model RGB (a grey one's first convolution takes RGB)
    infos = trace_layers(loaded.model, loaded.input_size,
                         channels=loaded.input_channels if len(loaded.input_size) == 3 else 3)
    chosen, cam_ok = tasks.decide(settings, loaded, refuse=False).layer_defaults(loaded, infos)
    return [_layer_record(info, loaded.model, chosen, cam_ok) for info in infos]


def _randomise_zero_head(model) -> None:
    """Some architectures start with an all-zero classifier (torchvision's ViT); every layer's
    average would then "reproduce" the zero logits and pass the CAM check. Shapes and the CAM
    check are about structure, so the freshly built head gets seeded random weights."""
    import torch

    from camcli.engine.methods.cam import linear_head

    head = linear_head(model)
    if head is not None and not bool(head[1].weight.detach().any()):
        with torch.no_grad():
            head[1].weight.normal_(generator=torch.Generator().manual_seed(0))


def _layer_record(info, model, chosen: str, cam_ok: set[str]) -> dict:
    from camcli.engine.layer_names import display_name, split_call

    layout = info.layout
    grid = list(layout.grid_of(info.shape)) if layout is not None else None
    module = model.get_submodule(split_call(info.name)[0])
    return {"name": info.name, "display": display_name(info.name), "type": type(module).__name__,
            "shape": list(info.shape[1:]) if info.shape else None, "calls": info.calls,
            "map": {"layout": layout.kind, "grid": grid, "prefix": layout.prefix} if layout else None,
            "default": info.name == chosen, "cam": info.name in cam_ok, "describe": info.describe()}
