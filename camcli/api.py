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


def explain(paths: str | os.PathLike | Sequence[str | os.PathLike], model: str | None = None, *,
            method: str | Sequence[str] | None = None, layer: str | Sequence[str] | None = None,
            out: str | os.PathLike | None = None, config: str | os.PathLike | None = None,
            **options) -> Run:
    """Explain images; iterate the returned :class:`~camcli.run.Run` for one
    :class:`~camcli.engine.stream.ImageResult` per image, in input order.

    ``paths``: image files, folders and globs. ``model``, ``method``, ``layer`` and every other
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
    inputs = [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else [os.fspath(p) for p in paths]
    values = dict(options, model=model, method=_as_list(method), layer=_as_list(layer),
                  out=os.fspath(out) if out is not None else None)
    settings = resolve(values, config, environ={})
    return Run(settings, inputs, write=out is not None)


def _as_list(value) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)
