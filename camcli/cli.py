"""The ``camcli`` command line: a thin layer over the Python API.

Data goes to stdout; logs, progress and errors go to stderr. Errors a user can fix print one
line and exit 2; failed images make the run exit 1; Ctrl-C exits 130.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from camcli import __version__
from camcli.errors import EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CamcliError

EXIT_CODES = (
    "Exit codes: 0 every image explained; 1 some images failed (see the status column of "
    "predictions.csv); 2 usage or configuration error (bad path, model, layer, method, checkpoint); "
    "130 interrupted."
)

app = typer.Typer(
    name="camcli",
    help="Explain image classifiers in bulk: class activation maps (CAM, Grad-CAM, ...) for whole folders.\n\n"
         "Start with `camcli explain IMAGES --out DIR`; list methods with `camcli methods`, models with "
         "`camcli models`, a model's layers with `camcli layers MODEL`.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


def _console() -> Console:
    return Console(stderr=True, highlight=False)


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def handle_errors(func):
    """Turn camcli's errors into one line on stderr and the documented exit code."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CamcliError as e:
            _console().print(f"[bold red]camcli: error:[/] {e}", markup=True, highlight=False)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            _console().print("camcli: interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
    return wrapper


def _version_callback(value: bool) -> None:
    if value:
        import torch
        import torchvision

        from camcli.devices import describe, pick_device
        print(f"camcli {__version__} (torch {torch.__version__}, torchvision {torchvision.__version__}, "
              f"device {describe(pick_device('auto'))})")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version_callback, is_eager=True,
        help="Print camcli's, torch's and torchvision's versions and the device found, then exit.")] = None) -> None:
    """camcli: class activation maps for whole folders of images."""


@app.command(epilog=EXIT_CODES)
@handle_errors
def explain(
    inputs: Annotated[list[Path], typer.Argument(help="Image files and folders (searched recursively).", show_default=False)],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML file with defaults for any option below; options on the command line win.", rich_help_panel="Run")] = None,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Output folder for overlays/, predictions.csv and run.json. [default: camcli-out]", rich_help_panel="Run")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="torchvision architecture, e.g. resnet50 (see `camcli models`). [default: resnet50]", rich_help_panel="Model")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="torchvision weights: DEFAULT, IMAGENET1K_V1, ... or none. Loaded from the torch hub cache, downloaded if missing. [default: DEFAULT]", rich_help_panel="Model")] = None,
    checkpoint: Annotated[Optional[str], typer.Option("--checkpoint", help="Your weights: a state dict (.pt/.pth, loaded with weights_only=True) or .safetensors for --model's architecture.", rich_help_panel="Model")] = None,
    num_classes: Annotated[Optional[int], typer.Option("--num-classes", help="Classes of the checkpoint's head. [default: read from the checkpoint]", rich_help_panel="Model")] = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="Class names: a text file (one per line) or JSON. [default: from the weights, else class_N]", rich_help_panel="Model")] = None,
    input_size: Annotated[Optional[int], typer.Option("--input-size", help="Side of the square model input; each image is resized (not cropped) to it. [default: the weights' crop size, else 224]", rich_help_panel="Model")] = None,
    method: Annotated[Optional[list[str]], typer.Option("--method", help="CAM method(s), comma-separated or repeated (see `camcli methods`). [default: gradcam]", rich_help_panel="Explanation")] = None,
    layer: Annotated[Optional[list[str]], typer.Option("--layer", help="Target layer(s), e.g. 'layer4[1]' or layer4.1; repeat for several (see `camcli layers MODEL`). [default: the last spatial layer]", rich_help_panel="Explanation")] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="Class to explain in every image: an index or a label name. [default: each image's top-1 class]", rich_help_panel="Explanation")] = None,
    score: Annotated[Optional[str], typer.Option("--score", help="Score whose gradient is taken: logit (the papers' choice) or softmax. [default: logit]", rich_help_panel="Explanation")] = None,
    alpha: Annotated[Optional[float], typer.Option("--alpha", help="Heatmap opacity over the image, 0..1. [default: 0.5]", rich_help_panel="Output")] = None,
    colormap: Annotated[Optional[str], typer.Option("--colormap", help="OpenCV colour map: jet, turbo, viridis, inferno, magma, ... [default: jet]", rich_help_panel="Output")] = None,
    topk: Annotated[Optional[int], typer.Option("--topk", help="Write the K best classes as top1..topK columns. [default: 1]", rich_help_panel="Output")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", help="Images per forward pass. [default: 16]", rich_help_panel="Performance")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-j", help="Processes decoding images; 0 decodes in the main process. [default: 2]", rich_help_panel="Performance")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps. [default: auto]", rich_help_panel="Performance")] = None,
    quiet: Annotated[Optional[bool], typer.Option("--quiet", "-q", help="No progress bar and no log lines; errors only.", rich_help_panel="Run")] = None,
) -> None:
    """Explain every image: write overlays, predictions.csv and run.json to --out.

    Examples:

      camcli explain sample_images/ --config configs/demo.toml --out runs/demo

      camcli explain photos/ --model resnet50 --weights IMAGENET1K_V2 --method gradcam --layer "layer4[2]" --out runs/r50

      camcli explain photos/ --model resnet18 --checkpoint finetuned.pth --labels labels.txt --method cam
    """
    from camcli.run import run_explain
    from camcli.settings import resolve

    cli = dict(out=out, model=model, weights=weights, checkpoint=checkpoint, num_classes=num_classes, labels=labels,
               input_size=input_size, method=method, layer=layer, target=target, score=score, alpha=alpha,
               colormap=colormap, topk=topk, batch_size=batch_size, workers=workers, device=device, quiet=quiet)
    settings = resolve(cli, config)
    console = _console()
    log = (lambda msg: None) if settings.quiet else (lambda msg: console.print(msg, markup=False))
    show_bar = console.is_terminal and not settings.quiet
    with Progress(TextColumn("explaining"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                  console=console, disable=not show_bar, transient=True) as bar:
        task = bar.add_task("explain", total=None, rate="")

        def progress(done: int, total: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0
            bar.update(task, completed=done, total=total, rate=f"{done / elapsed:.1f} img/s" if elapsed else "")

        summary = run_explain(settings, [str(p) for p in inputs], log=log, progress=progress)
    if not settings.quiet:
        rate = summary.images / summary.seconds if summary.seconds else 0.0
        console.print(f"explained {summary.ok} of {summary.images} image(s), {summary.failed} failed"
                      f"{f', {summary.empty_maps} empty map(s)' if summary.empty_maps else ''} "
                      f"in {summary.seconds:.1f} s ({rate:.1f} img/s) -> {summary.out}", markup=False)
    if summary.failed and settings.quiet:
        console.print(f"camcli: {summary.failed} image(s) failed; see {summary.out / 'predictions.csv'}", markup=False)
    if summary.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_FAILURES if summary.failed else EXIT_OK)


@app.command()
@handle_errors
def methods() -> None:
    """List every CAM method: name, whether it needs gradients, its cost, and its paper."""
    from camcli.methods import available

    out = _stdout()
    for name, cls in available().items():
        grad = "gradients" if cls.needs_gradients else "no gradients"
        out.print(f"{name:<12} {cls.summary}. [{grad}; {cls.cost}; "
                  f"{'class-discriminative' if cls.class_discriminative else 'class-agnostic'}] {cls.paper}",
                  markup=False)


@app.command()
@handle_errors
def models(
    filter: Annotated[Optional[str], typer.Argument(help="Show only models whose name contains this text.")] = None,
) -> None:
    """List torchvision classification models and their weights (from the registry; nothing is downloaded)."""
    from camcli.models import classification_models, weight_names

    out = _stdout()
    shown = [m for m in classification_models() if not filter or filter.lower() in m.lower()]
    if not shown:
        from camcli.errors import unknown
        raise unknown("model filter", filter or "", classification_models())
    for name in shown:
        out.print(f"{name:<24} {', '.join(weight_names(name)) or '-'}", markup=False)


@app.command()
@handle_errors
def layers(
    model: Annotated[str, typer.Argument(help="torchvision architecture, e.g. resnet18.")],
    checkpoint: Annotated[Optional[str], typer.Option("--checkpoint", help="Load this state dict first (changes the head's size).")] = None,
    num_classes: Annotated[Optional[int], typer.Option("--num-classes", help="Classes of the checkpoint's head.")] = None,
    input_size: Annotated[int, typer.Option("--input-size", help="Side of the dummy input used to measure output shapes.")] = 224,
) -> None:
    """Show a model's modules with their output shapes, named as --layer accepts them.

    The layer chosen when --layer is not given is marked with '*'. No weights are downloaded:
    shapes do not depend on them.
    """
    from camcli.layers import default_layer, display_name, is_spatial, trace_layers
    from camcli.models import load_model

    loaded = load_model(model, weights="none", checkpoint=checkpoint, num_classes=num_classes)
    size = (input_size, input_size)
    chosen = default_layer(loaded.model, size)
    out = _stdout()
    for info in trace_layers(loaded.model, size):
        depth = info.name.count(".")
        shape = "x".join(map(str, info.shape[1:])) if info.shape else "-"
        mark = "*" if info.name == chosen else (" " if is_spatial(info) else " ")
        kind = type(loaded.model.get_submodule(info.name)).__name__
        out.print(f"{mark} {'  ' * depth}{display_name(info.name):<28} {kind:<22} {shape}", markup=False)
    _console().print(f"* default layer: {display_name(chosen)} (also written {chosen})", markup=False)


def main() -> None:
    """Console-script entry point."""
    if os.environ.get("NO_COLOR"):
        os.environ.setdefault("TERM", os.environ.get("TERM", "dumb"))
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit as e:
        code = e.code
        sys.exit(code if code is not None else EXIT_OK)


__all__ = ["app", "main", "EXIT_USAGE"]
