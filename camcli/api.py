"""The Python API the command line is built on.

>>> import camcli
>>> for r in camcli.explain(["sample_images/"], model="resnet18",            # doctest: +SKIP
...                         checkpoint="demo/shapes_resnet18.safetensors",
...                         labels="demo/labels.txt", input_size=160, method="gradcam,cam"):
...     print(r.item.rel, r.pred_label, f"{r.score:.2f}", [m.heatmap.shape for m in r.maps])
single/circle_00.jpg circle 0.99 [(311, 254), (311, 254)]

Nothing is written unless ``out=`` is given; then overlays, ``predictions.csv`` and
``run.json`` are written exactly as ``camcli explain --out`` writes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from camcli.images import discover
from camcli.pipeline import ImageResult, iter_results
from camcli.settings import FIELDS, resolve


def explain(paths: str | os.PathLike | Sequence[str | os.PathLike], model: str | None = None, *,
            method: str | Sequence[str] | None = None, layer: str | Sequence[str] | None = None,
            out: str | os.PathLike | None = None, config: str | os.PathLike | None = None,
            **options) -> Iterator[ImageResult]:
    """Explain images and yield one :class:`~camcli.pipeline.ImageResult` per image, in order.

    ``paths``: image files and folders. ``model``, ``method``, ``layer`` and every other keyword
    (``weights``, ``checkpoint``, ``labels``, ``input_size``, ``target``, ``score``,
    ``batch_size``, ``workers``, ``device``, ``topk``, ...) mean what the ``camcli explain``
    option of the same name means; ``config`` reads a TOML file first. Each result carries the
    prediction (``pred_label``, ``score``, ``topk``), the explained class, and per method x
    layer a :class:`~camcli.pipeline.MapResult` with the heatmap at the image's size and at
    the layer's size.
    """
    unknown = sorted(k for k in options if k not in FIELDS)
    if unknown:
        raise TypeError(f"explain() got unexpected option(s): {', '.join(unknown)}")
    inputs = [str(paths)] if isinstance(paths, (str, os.PathLike)) else [str(p) for p in paths]
    values = dict(options, model=model, method=_as_list(method), layer=_as_list(layer),
                  out=str(out) if out is not None else None)
    settings = resolve(values, config, environ={})
    if out is not None:
        from camcli.run import stream_run
        for result, _rows in stream_run(settings, inputs):
            yield result
        return
    from camcli.run import prepare, resolve_target
    items = discover(inputs)
    loaded, explainer, _layers, device = prepare(settings)
    target = resolve_target(settings.target, loaded.labels)
    yield from iter_results(loaded, explainer, items, batch_size=settings.batch_size, workers=settings.workers,
                            device=device, target=target, topk=max(5, settings.topk))


def _as_list(value) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)
