"""Commands that list or join things: ``methods``, ``models``, ``layers``, ``merge`` and ``gallery``.

Each listing prints aligned text for people, or with ``--json`` one JSON array on stdout for
programs (``camcli methods --json | jq -r '.[].name'``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from camcli.cli import app, handle_errors, stderr_console, stdout_console
from camcli.errors import UsageError

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON array on stdout instead of text.")]


def _print_json(rows: list[dict]) -> None:
    sys.stdout.write(json.dumps(rows, indent=1) + "\n")


@app.command()
@handle_errors
def merge(
    out: Annotated[Path, typer.Argument(help="Output folder holding predictions.part-*.csv (detections.part-*.csv, segments.part-*.csv) "
                                        "from `explain --shard i/n` jobs.")],
) -> None:
    """Join the CSV parts of sharded runs into predictions.csv (a detection run's: detections.csv; a segmentation
    run's: segments.csv), in input order."""
    from camcli import tasks
    from camcli.run import merge_parts

    n = merge_parts(out)
    merged = next((out / f"{stem}.csv" for stem in tasks.csv_stems() if any(out.glob(f"{stem}.part-*.csv"))), out)
    stderr_console().print(f"merged {n} rows into {merged}", markup=False)


@app.command()
@handle_errors
def gallery(
    run: Annotated[Path, typer.Argument(help="A `camcli explain` output folder.")],
    grid: Annotated[bool, typer.Option("--grid", help="Also redraw the contact sheets grid/sheet_NNN.png.")] = False,
) -> None:
    """(Re)build a run's index.html gallery from its predictions.csv and overlays.

    For a run made without --html, or to refresh it (the gallery links camcli evaluate's
    report.html when the folder has one). Nothing is recomputed.

    Example:

      camcli gallery runs/demo
    """
    from camcli.output.pictures import rebuild_pictures

    if not run.is_dir():
        raise UsageError(f"{run} is not a folder")
    page = rebuild_pictures(run, grid)
    stderr_console().print(f"gallery: {page}", markup=False)


@app.command()
@handle_errors
def methods(as_json: JsonOption = False) -> None:
    """List every CAM method: name, whether it needs gradients, its cost, what it assumes, and its paper.

    With --json, each object has name, summary, paper, cost, needs_gradients,
    class_discriminative, transformers (whether it works on token and channels-last layers,
    or why not), resolution (layer: a map on the target layer's grid; pixel: at the model
    input's), uses_layer (false: one map per image for the whole network, layer "input"),
    options (the settings it takes) and assumes.
    """
    from camcli.engine.methods import available

    if as_json:
        _print_json([{"name": name, "summary": cls.summary, "paper": cls.paper, "cost": cls.cost,
                      "needs_gradients": cls.needs_gradients, "class_discriminative": cls.class_discriminative,
                      "transformers": cls.transformers, "resolution": "pixel" if cls.pixel_level else "layer",
                      "uses_layer": cls.uses_layer, "options": _options(cls),
                      "assumes": [a.name for a in cls.assumptions]}
                     for name, cls in available().items()])
        return
    out = stdout_console()
    for name, cls in available().items():
        needs = "gradients" if cls.needs_gradients else "no gradients"
        kind = "class-discriminative" if cls.class_discriminative else "class-agnostic"
        assumes = "".join(f"; assumes {a.name}" for a in cls.assumptions)
        options = [f"--{o.replace('_', '-')}" for o in _options(cls)]
        takes = f"; options: {', '.join(options)}" if options else ""
        out.print(f"{name:<20} {cls.summary}. [{needs}; {kind}; cost: {cls.cost}{takes}{assumes}] {cls.paper}",
                  markup=False)


def _options(cls) -> list[str]:
    """The settings a method takes (``cam_batch_size``, which every per-image method takes, aside)."""
    return [o for o in cls.options if o != "cam_batch_size"]


@app.command()
@handle_errors
def models(
    filter: Annotated[Optional[str], typer.Argument(help="Show only models whose name contains this text.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List torchvision's classification, detection and segmentation models and their weights (from
    the registry; nothing is downloaded).

    The filter 'detection' lists the detectors alone (explained box by box: docs/detection.md),
    'segmentation' the segmenters (explained class by class: docs/segmentation.md).
    A filter starting with 'timm' lists timm's architectures instead (when the optional timm
    package is installed): use them as --model timm/NAME with --checkpoint. With --json, each
    object has name, source, task and weights.
    """
    from camcli import tasks
    from camcli.models import timm_models, weight_names

    out = stdout_console()
    task_of = {name: task.name for task in tasks.all_tasks() for name in task.known_models()}
    if filter and filter.lower().startswith("timm"):
        every = timm_models.names()
        if not every:
            from camcli.errors import UsageError
            raise UsageError("timm is not installed: pip install 'camcli[timm]'")
        rest = filter[len("timm/"):] if filter.lower().startswith("timm/") else ""
        shown = [m for m in every if rest.lower() in m.lower()]
        weights = lambda _name: []  # noqa: E731 - timm weights come from --checkpoint only
    elif filter and filter.lower() in tasks.names():
        every = shown = [name for name, task in task_of.items() if task == filter.lower()]
        weights = weight_names
    else:
        every = sorted(task_of, key=list(task_of).index)
        shown = [m for m in every if not filter or filter.lower() in m.lower()]
        weights = weight_names
    if not shown:
        from camcli.errors import unknown
        raise unknown("model filter", filter or "", every)
    if as_json:
        _print_json([{"name": name, "source": "timm" if name.startswith("timm/") else "torchvision",
                      "task": task_of.get(name, tasks.FALLBACK), "weights": weights(name)} for name in shown])
        return
    width = max(24, *(len(name) + 1 for name in shown))
    for name in shown:
        listed = ", ".join(weights(name)) or ("(weights from --checkpoint)" if name.startswith("timm/") else "-")
        tag = task_of.get(name)
        out.print(f"{name:<{width}} {listed}" + (f"  [{tag}]" if tag and tasks.get(tag).tagged_in_listings else ""),
                  markup=False)


@app.command()
@handle_errors
def layers(
    model: Annotated[Optional[str], typer.Argument(help="torchvision architecture (resnet18), timm/NAME, or your own model's factory: path/to/file.py:function or package.module:function; leave out for a whole pickled model (--checkpoint with --trust-checkpoint) or when --config names it.", show_default=False)] = None,
    checkpoint: Annotated[Optional[str], typer.Option("--checkpoint", help="Load this state dict first (changes the head's size); with --trust-checkpoint also a whole pickled model.")] = None,
    num_classes: Annotated[Optional[int], typer.Option("--num-classes", help="Classes of the checkpoint's head.")] = None,
    input_size: Annotated[Optional[int], typer.Option("--input-size", help="Side of the dummy input used to measure output shapes (default: the model's input size, 224 for torchvision models).")] = None,
    model_arg: Annotated[Optional[list[str]], typer.Option("--model-arg", help="key=value for a factory --model (repeat for several).")] = None,
    trust_checkpoint: Annotated[bool, typer.Option("--trust-checkpoint", help="Allow a whole pickled model or TorchScript file as --checkpoint (unpickling runs code: only for files you trust).")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML file of camcli explain: its model, checkpoint, model_arg, num_classes and input_size are used unless given here.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show a model's modules with their output shapes, named as --layer accepts them.

    Takes every model camcli explain takes: a torchvision or timm name, a factory of your own,
    a whole pickled model (--checkpoint with --trust-checkpoint), or a --config file.

    Columns: mark, name (as --layer accepts it; layer4[1] may also be written layer4.1), module
    type, output shape and the map it gives: '512x7x7' (channels x height x width), 'nhwc
    7x7x768 -> 7x7' (channels-last, Swin), 'tokens 197x768 -> 14x14' (ViT: class token dropped,
    patch tokens on a 14x14 grid). A shape without a map cannot be explained; one that reads
    two ways needs --layer-layout. '*' marks the layer used when --layer is not given; 'cam'
    marks layers where --method cam applies (global average pooling and one linear layer
    follow). No weights are downloaded: shapes do not depend on them.

    With --json, each object has name (dotted), display (as shown), type, shape (the output's,
    without the batch axis; null if it never ran), calls, map (layout, grid h and w, prefix
    tokens; null if the output is no map or is ambiguous), default and cam.

    Examples:

      camcli layers resnet18

      camcli layers mynet.py:build --model-arg classes=10 --checkpoint mine.pt

      camcli layers --config configs/demo.toml --json
    """
    from camcli.api import layers as list_layers
    from camcli.engine.layer_names import display_name

    given = {"checkpoint": checkpoint, "num_classes": num_classes, "input_size": input_size,
             "model_arg": model_arg or None, "trust_checkpoint": trust_checkpoint or None}
    found = list_layers(model, config=config, **{k: v for k, v in given.items() if v is not None})
    if as_json:
        _print_json([{k: v for k, v in info.items() if k != "describe"} for info in found])
        return
    out = stdout_console()
    rows = [(info, "  " * info["name"].count(".") + info["display"], info["type"]) for info in found]
    name_width = max((len(r[1]) for r in rows), default=0)
    kind_width = max((len(r[2]) for r in rows), default=0)
    for info, name, kind in rows:
        mark = ("*" if info["default"] else " ") + ("cam" if info["cam"] else "   ")
        out.print(f"{mark} {name:<{name_width}} {kind:<{kind_width}} {info['describe']}", markup=False)
    console = stderr_console()
    chosen = next((info["name"] for info in found if info["default"]), None)
    if chosen:
        console.print(f"* default layer: {display_name(chosen)} (also written {chosen})", markup=False)
    else:
        console.print("no default layer: no module's output reads as a spatial map (N, C, H, W), channels-last or "
                      "patch tokens, once per forward", markup=False)
    console.print("cam: --method cam applies here" if any(info["cam"] for info in found) else
                  "cam: no layer of this model supports --method cam; use gradcam or another method", markup=False)
