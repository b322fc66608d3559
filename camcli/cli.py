"""The ``camcli`` command line: a thin layer over the Python API.

Data goes to stdout; logs, progress and errors go to stderr. Errors a user can fix print one
line and exit 2; failed images make the run exit 1; Ctrl-C exits 130.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from camcli import __version__
from camcli.allocator import keep_freed_memory
from camcli.errors import EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CamcliError, UsageError

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
    return Console(stderr=True, highlight=False, soft_wrap=True)  # one message, one line, also in pipes


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
    inputs: Annotated[list[str], typer.Argument(help="Image files and folders (searched recursively); - reads paths from stdin, @FILE reads them from a list file.", show_default=False)],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML file with defaults for any option below; options on the command line win.", rich_help_panel="Run")] = None,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Output folder for overlays/, predictions.csv and run.json. \\[default: camcli-out]", rich_help_panel="Run")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="torchvision architecture, e.g. resnet50 (see `camcli models`). \\[default: resnet50]", rich_help_panel="Model")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="torchvision weights: DEFAULT, IMAGENET1K_V1, ... or none. Loaded from the torch hub cache, downloaded if missing. \\[default: DEFAULT]", rich_help_panel="Model")] = None,
    checkpoint: Annotated[Optional[str], typer.Option("--checkpoint", help="Your weights: a state dict (.pt/.pth, loaded with weights_only=True) or .safetensors for --model's architecture.", rich_help_panel="Model")] = None,
    num_classes: Annotated[Optional[int], typer.Option("--num-classes", help="Classes of the checkpoint's head. \\[default: read from the checkpoint]", rich_help_panel="Model")] = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="Class names: a text file (one per line) or JSON. \\[default: from the weights, else class_N]", rich_help_panel="Model")] = None,
    input_size: Annotated[Optional[int], typer.Option("--input-size", help="Side of the square model input; each image is resized (not cropped) to it. \\[default: the weights' crop size, else 224]", rich_help_panel="Model")] = None,
    method: Annotated[Optional[list[str]], typer.Option("--method", help="CAM method(s), comma-separated or repeated (see `camcli methods`). \\[default: gradcam]", rich_help_panel="Explanation")] = None,
    layer: Annotated[Optional[list[str]], typer.Option("--layer", help="Target layer(s), e.g. 'layer4[1]' or layer4.1; repeat for several (see `camcli layers MODEL`). \\[default: the last spatial layer]", rich_help_panel="Explanation")] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="Class to explain in every image: an index or a label name. \\[default: each image's top-1 class]", rich_help_panel="Explanation")] = None,
    score: Annotated[Optional[str], typer.Option("--score", help="Score explained: logit (what the Grad-CAM, Grad-CAM++ and Score-CAM papers and pytorch-grad-cam use) or softmax probability. \\[default: logit]", rich_help_panel="Explanation")] = None,
    cam_batch_size: Annotated[Optional[int], typer.Option("--cam-batch-size", help="Masked inputs per forward pass for scorecam and ablationcam; bounds their memory. \\[default: 16 on a CPU, 64 on a GPU]", rich_help_panel="Explanation")] = None,
    max_n: Annotated[Optional[int], typer.Option("--max-n", help="Faster Score-CAM: use only the N channels with the largest spatial spread (scorecam only). \\[default: all]", rich_help_panel="Explanation")] = None,
    alpha: Annotated[Optional[float], typer.Option("--alpha", help="Heatmap opacity over the image, 0..1. \\[default: 0.5]", rich_help_panel="Output")] = None,
    colormap: Annotated[Optional[str], typer.Option("--colormap", help="OpenCV colour map: jet, turbo, viridis, inferno, magma, ... \\[default: jet]", rich_help_panel="Output")] = None,
    topk: Annotated[Optional[int], typer.Option("--topk", help="Write the K best classes as top1..topK columns. \\[default: 1]", rich_help_panel="Output")] = None,
    save_heatmap: Annotated[Optional[str], typer.Option("--save-heatmap", help="Also write each raw normalised map under heatmaps/: npy (float32) or png16 (16-bit grayscale).", rich_help_panel="Output")] = None,
    heatmap_size: Annotated[Optional[str], typer.Option("--heatmap-size", help="Resolution of --save-heatmap maps: image (original size) or layer. \\[default: image]", rich_help_panel="Output")] = None,
    boxes: Annotated[Optional[bool], typer.Option("--boxes/--no-boxes", help="Find a box in each heatmap (threshold, contours) and write it to the CSV (box_* columns, original-image pixels).", rich_help_panel="Boxes")] = None,
    box_threshold: Annotated[Optional[float], typer.Option("--box-threshold", help="Keep pixels >= this share of the map's maximum (half maximum suits the coarse maps of last blocks; the CAM paper used 0.2 on ImageNet). \\[default: 0.5]", rich_help_panel="Boxes")] = None,
    box_mode: Annotated[Optional[str], typer.Option("--box-mode", help="largest: the largest region; all: every region above --box-min-area (boxes_all column). \\[default: largest]", rich_help_panel="Boxes")] = None,
    box_min_area: Annotated[Optional[float], typer.Option("--box-min-area", help="With --box-mode all: smallest region kept, as a share of the image area. \\[default: 0.01]", rich_help_panel="Boxes")] = None,
    box_rotated: Annotated[Optional[bool], typer.Option("--box-rotated/--no-box-rotated", help="Also write the minAreaRect rotated box's corners (box_rotated column).", rich_help_panel="Boxes")] = None,
    draw_boxes: Annotated[Optional[bool], typer.Option("--draw-boxes/--no-draw-boxes", help="Draw the boxes on the overlays (implies --boxes).", rich_help_panel="Boxes")] = None,
    trust_checkpoint: Annotated[Optional[bool], typer.Option("--trust-checkpoint/--no-trust-checkpoint", help="Allow a whole pickled model or TorchScript file as --checkpoint. Unpickling runs code: only for files you trust.", rich_help_panel="Model")] = None,
    hidden: Annotated[Optional[bool], typer.Option("--hidden/--no-hidden", help="Include hidden files and folders (names starting with '.') when walking folders.", rich_help_panel="Run")] = None,
    max_pixels: Annotated[Optional[int], typer.Option("--max-pixels", help="Refuse images larger than this many pixels (decompression-bomb guard). \\[default: 89478485, Pillow's]", rich_help_panel="Run")] = None,
    fail_fast: Annotated[Optional[bool], typer.Option("--fail-fast/--no-fail-fast", help="Stop at the first image that fails (its row is written; exit 1).", rich_help_panel="Run")] = None,
    resume: Annotated[Optional[bool], typer.Option("--resume/--no-resume", help="Continue a run in the same --out: images whose rows and files are complete are skipped; refused if settings differ.", rich_help_panel="Run")] = None,
    overwrite: Annotated[Optional[bool], typer.Option("--overwrite/--no-overwrite", help="Replace camcli's earlier outputs in a non-empty --out (other files are left alone).", rich_help_panel="Run")] = None,
    shard: Annotated[Optional[str], typer.Option("--shard", help="INDEX/COUNT: process only this share of the sorted images (cluster array jobs); join parts with `camcli merge`. Under torchrun, RANK/WORLD_SIZE do this.", rich_help_panel="Run")] = None,
    caption: Annotated[Optional[bool], typer.Option("--caption/--no-caption", help="Write the predicted label and score (and the explained class, if different) on each overlay.", rich_help_panel="Output")] = None,
    html: Annotated[Optional[bool], typer.Option("--html/--no-html", help="Write index.html: a gallery of the run that opens in any browser, no server needed.", rich_help_panel="Output")] = None,
    panel: Annotated[Optional[bool], typer.Option("--panel/--no-panel", help="Write panels/<image>.png: the original beside one titled overlay per method x layer.", rich_help_panel="Output")] = None,
    grid: Annotated[Optional[bool], typer.Option("--grid/--no-grid", help="Write contact sheets grid/sheet_NNN.png: 36 captioned thumbnails each.", rich_help_panel="Output")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", help="Images per forward pass. \\[default: 16]", rich_help_panel="Performance")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-j", help="Processes decoding images; 0 decodes in the main process. \\[default: 2]", rich_help_panel="Performance")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps. \\[default: auto]", rich_help_panel="Performance")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="fp32, or bf16/fp16 autocast for the forward pass (CUDA only; maps stay float32). \\[default: fp32]", rich_help_panel="Performance")] = None,
    quiet: Annotated[Optional[bool], typer.Option("--quiet/--no-quiet", "-q", help="No progress bar and no log lines; errors only.", rich_help_panel="Run")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also log each failed image and where every setting came from.", rich_help_panel="Run")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Write NDJSON to stdout: one object per image as it finishes, then a summary object.", rich_help_panel="Run")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the effective settings (and where each came from) and the images that would be processed; load no model, write nothing.", rich_help_panel="Run")] = False,
) -> None:
    """Explain every image: write overlays, predictions.csv and run.json to --out.

    Examples:

      camcli explain sample_images/ --config configs/demo.toml --out runs/demo

      camcli explain photos/ --model resnet50 --weights IMAGENET1K_V2 --method gradcam --layer "layer4[2]" --out runs/r50

      camcli explain photos/ --model resnet18 --checkpoint finetuned.pth --labels labels.txt --method cam
    """
    from camcli.images import expand_inputs
    from camcli.outputs import ndjson_record
    from camcli.run import stream_run
    from camcli.settings import resolve

    cli = dict(out=out, model=model, weights=weights, checkpoint=checkpoint, num_classes=num_classes, labels=labels,
               input_size=input_size, method=method, layer=layer, target=target, score=score,
               cam_batch_size=cam_batch_size, max_n=max_n, alpha=alpha, colormap=colormap, topk=topk,
               save_heatmap=save_heatmap, heatmap_size=heatmap_size, panel=panel, grid=grid, boxes=boxes,
               box_threshold=box_threshold, box_mode=box_mode, box_min_area=box_min_area, box_rotated=box_rotated,
               draw_boxes=draw_boxes, caption=caption, html=html, trust_checkpoint=trust_checkpoint, hidden=hidden,
               max_pixels=max_pixels, fail_fast=fail_fast, resume=resume, overwrite=overwrite, shard=shard,
               batch_size=batch_size, workers=workers, device=device, precision=precision, quiet=quiet)
    settings = resolve(cli, config)
    console = _console()
    paths = expand_inputs(inputs)
    if dry_run:
        _dry_run(settings, paths, json_out)
        raise typer.Exit(EXIT_OK)
    log = (lambda msg: None) if settings.quiet else (lambda msg: console.print(msg, markup=False))
    if verbose:
        for key, origin in settings.sources.items():
            if origin != "default":
                log(f"setting {key} = {getattr(settings, key)!r} (from {origin})")
    show_bar = console.is_terminal and not settings.quiet
    with Progress(TextColumn("explaining"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                  console=console, disable=not show_bar, transient=True) as bar:
        task = bar.add_task("explain", total=None, rate="")

        def progress(done: int, total: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0
            bar.update(task, completed=done, total=total, rate=f"{done / elapsed:.1f} img/s" if elapsed else "")

        stream = stream_run(settings, paths, log=log, progress=progress)
        while True:
            try:
                result, rows = next(stream)
            except StopIteration as stop:
                summary = stop.value
                break
            if json_out:
                print(json.dumps(ndjson_record(result, rows)), flush=True)
            if verbose and result.status != "ok":
                log(f"failed: {result.item.rel}: {result.error}")
    if json_out:
        print(json.dumps({"type": "summary", "images": summary.images, "ok": summary.ok, "failed": summary.failed,
                          "empty_maps": summary.empty_maps, "seconds": round(summary.seconds, 3),
                          "interrupted": summary.interrupted, "out": str(summary.out)}), flush=True)
    if not settings.quiet:
        rate = summary.images / summary.seconds if summary.seconds else 0.0
        if summary.resumed:
            console.print(f"resumed: {summary.resumed} image(s) were already done", markup=False)
        console.print(f"explained {summary.ok} of {summary.images} image(s), {summary.failed} failed"
                      f"{f', {summary.empty_maps} empty map(s)' if summary.empty_maps else ''} "
                      f"in {summary.seconds:.1f} s ({rate:.1f} img/s) -> {summary.out}", markup=False)
    if summary.failed and settings.quiet:
        console.print(f"camcli: {summary.failed} image(s) failed; see {summary.out / summary.csv_name}", markup=False)
    if summary.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_FAILURES if summary.failed else EXIT_OK)


def _dry_run(settings, paths: list[str], as_json: bool) -> None:
    from camcli.images import discover
    from camcli.settings import FIELDS

    items = discover(paths)
    values = {k: getattr(settings, k) for k in FIELDS}
    if as_json:
        print(json.dumps({"type": "dry_run", "settings": values, "sources": settings.sources,
                          "images": [i.path for i in items]}))
        return
    out = _stdout()
    width = max(len(k) for k in values)
    for key, value in values.items():
        out.print(f"{key:<{width}} = {value!r:<40} ({settings.sources[key]})", markup=False)
    out.print(f"{len(items)} image(s):", markup=False)
    for item in items:
        out.print(f"  {item.path}", markup=False)


@app.command(epilog="Exit codes: 0 every gate holds; 1 a gate failed; 2 usage or configuration error.")
@handle_errors
def evaluate(
    sources: Annotated[list[Path], typer.Argument(help="A finished `camcli explain` output folder, or image files and folders to explain now.", show_default=False)],
    truth: Annotated[Path, typer.Option("--truth", "-t", help="Ground-truth boxes: CSV (path,x0,y0,x1,y1[,label]), a Pascal VOC folder, or COCO JSON.", rich_help_panel="Ground truth")],
    normalized: Annotated[bool, typer.Option("--normalized", help="CSV coordinates are fractions of the image size (0..1), not pixels.", rich_help_panel="Ground truth")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML file with model and method settings (as for explain), when explaining images here.", rich_help_panel="Model")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="torchvision architecture. \\[default: resnet50]", rich_help_panel="Model")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="torchvision weights name or none. \\[default: DEFAULT]", rich_help_panel="Model")] = None,
    checkpoint: Annotated[Optional[str], typer.Option("--checkpoint", help="Your state dict or .safetensors.", rich_help_panel="Model")] = None,
    num_classes: Annotated[Optional[int], typer.Option("--num-classes", help="Classes of the checkpoint's head.", rich_help_panel="Model")] = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="Class names file (text or JSON).", rich_help_panel="Model")] = None,
    input_size: Annotated[Optional[int], typer.Option("--input-size", help="Side of the square model input.", rich_help_panel="Model")] = None,
    method: Annotated[Optional[list[str]], typer.Option("--method", help="Methods to compare, comma-separated or repeated. \\[default: gradcam]", rich_help_panel="Model")] = None,
    layer: Annotated[Optional[list[str]], typer.Option("--layer", help="Target layer(s). \\[default: the last spatial layer]", rich_help_panel="Model")] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="Class to explain (index or label). \\[default: top-1]", rich_help_panel="Model")] = None,
    cam_batch_size: Annotated[Optional[int], typer.Option("--cam-batch-size", help="Masked inputs per forward for scorecam, ablationcam and the faithfulness metrics. \\[default: 16 on a CPU, 64 on a GPU]", rich_help_panel="Model")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", help="Images per forward pass. \\[default: 16]", rich_help_panel="Model")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-j", help="Decoding processes. \\[default: 2]", rich_help_panel="Model")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps. \\[default: auto]", rich_help_panel="Model")] = None,
    box_threshold: Annotated[float, typer.Option("--box-threshold", help="Box from pixels >= this share of the map's maximum.", rich_help_panel="Metrics")] = 0.5,
    pointing_tolerance: Annotated[float, typer.Option("--pointing-tolerance", help="Pointing game: a maximum this many pixels outside a box still counts (15, as published; 0 is strict).", rich_help_panel="Metrics")] = 15.0,
    box_mode: Annotated[str, typer.Option("--box-mode", help="largest or all: which regions the IoU box covers (largest region, or the best-matching of all).", rich_help_panel="Metrics")] = "largest",
    faithfulness: Annotated[bool, typer.Option("--faithfulness", help="Also measure Average Drop, Increase in Confidence and deletion/insertion AUC (1 + 2 x (steps+1) forwards per map; reruns the model).", rich_help_panel="Metrics")] = False,
    steps: Annotated[int, typer.Option("--steps", help="Deletion/insertion curve points.", rich_help_panel="Metrics")] = 16,
    min_iou: Annotated[Optional[float], typer.Option("--min-iou", help="Gate: exit 1 if a method's mean IoU is below this.", rich_help_panel="Gates")] = None,
    min_pointing: Annotated[Optional[float], typer.Option("--min-pointing", help="Gate: exit 1 if a method's pointing-game hit rate (0..1) is below this.", rich_help_panel="Gates")] = None,
    min_accuracy: Annotated[Optional[float], typer.Option("--min-accuracy", help="Gate: exit 1 if classification accuracy (0..1) is below this.", rich_help_panel="Gates")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object on stdout.", rich_help_panel="Output")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for evaluation.csv when explaining images here. \\[default: camcli-eval]", rich_help_panel="Output")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table or log lines on stderr.", rich_help_panel="Output")] = False,
) -> None:
    """Score explanations against ground-truth boxes; with --min-* gates, a CI check.

    Metrics per method x layer: mean IoU of the heatmap's box, localisation accuracy (IoU >= 0.5),
    pointing game (the map's maximum inside a true box of the explained class), energy pointing
    game (share of the map inside those boxes), and classification accuracy when the truth has
    labels; with --faithfulness also Average Drop, Increase in Confidence, deletion and insertion AUC.

    Examples:

      camcli explain sample_images/ --config configs/demo.toml --method gradcam,cam --save-heatmap npy --out runs/demo

      camcli evaluate runs/demo --truth sample_images/boxes.csv --min-pointing 0.9

      camcli evaluate sample_images/ --config configs/demo.toml --method cam,gradcam,scorecam --truth sample_images/boxes.csv --json
    """
    import json as json_module

    from rich.table import Table

    from camcli.evaluate import (check_gates, fmt, load_run_manifest, maps_from_images, maps_from_output, score,
                                 write_csv)
    from camcli.outputs import prepare_out_dir
    from camcli.settings import ExplainSettings, FIELDS, resolve
    from camcli.truth import read_truth

    console = _console()
    log = (lambda msg: None) if quiet else (lambda msg: console.print(msg, markup=False))
    if box_mode not in ("largest", "all"):
        raise UsageError(f"--box-mode must be largest or all, got {box_mode!r}")
    is_output = len(sources) == 1 and sources[0].is_dir() and (sources[0] / "predictions.csv").is_file()
    cli_values = dict(model=model, weights=weights, checkpoint=checkpoint, num_classes=num_classes, labels=labels,
                      input_size=input_size, method=method, layer=layer, target=target, cam_batch_size=cam_batch_size,
                      batch_size=batch_size, workers=workers, device=device)
    sizes = None
    if is_output and not faithfulness:
        folder = sources[0]
        if any(v is not None for v in cli_values.values()) or config:
            raise UsageError("model options apply when explaining images; an output folder is scored as it is "
                             "(add --faithfulness to rerun its model)")
        maps = list(maps_from_output(folder))
        sizes = {m.path: (m.width, m.height) for m in maps}
        eval_dir = folder
    else:
        if is_output:  # --faithfulness on a finished run: rerun its model from run.json
            manifest = load_run_manifest(sources[0])
            saved = {k: v for k, v in manifest.get("settings", {}).items() if k in FIELDS}
            settings = ExplainSettings(**saved)
            for k, v in cli_values.items():
                if v is not None:
                    setattr(settings, k, v)
            inputs = manifest.get("inputs", [])
            eval_dir = sources[0]
        else:
            settings = resolve(cli_values, config)
            inputs = [str(s) for s in sources]
            eval_dir = prepare_out_dir(out or Path("camcli-eval"))
        maps = list(maps_from_images(settings, inputs, faithfulness, steps, log=log))
        sizes = {m.path: (m.width, m.height) for m in maps}
    gt = read_truth(truth, normalized=normalized, sizes=sizes)
    evaluation = score(maps, gt, threshold=box_threshold, mode=box_mode, tolerance=pointing_tolerance)
    write_csv(eval_dir / "evaluation.csv", evaluation)
    if evaluation.without_truth:
        console.print(f"camcli: warning: {len(evaluation.without_truth)} image(s) have no ground truth and were "
                      f"not scored, e.g. {', '.join(evaluation.without_truth[:3])}", markup=False)
    if evaluation.truth_without_image:
        console.print(f"camcli: warning: {len(evaluation.truth_without_image)} ground-truth path(s) match no "
                      f"explained image, e.g. {', '.join(evaluation.truth_without_image[:3])}", markup=False)
    if not evaluation.rows:
        raise UsageError("nothing to score: no explained image has ground truth (check the paths in --truth)")
    failures = check_gates(evaluation.summaries, min_iou=min_iou, min_pointing=min_pointing, min_accuracy=min_accuracy)

    if not quiet:
        if not console.is_terminal:
            console = Console(stderr=True, highlight=False, width=160)  # the whole table, also in logs
        table = Table(title=f"camcli evaluate ({len(evaluation.rows)} maps)", title_style="bold")
        cols = ["method", "layer", "images", "mean IoU", "IoU>=0.5", "pointing", "energy", "accuracy"]
        if faithfulness:
            cols += ["avg drop", "incr. conf.", "deletion", "insertion"]
        for c in cols:
            table.add_column(c, justify="left" if c in ("method", "layer") else "right")
        for s in evaluation.summaries:
            cells = [s.method, s.layer, str(s.images), fmt(s.mean_iou), fmt(s.localisation, True), fmt(s.pointing, True),
                     fmt(s.energy, True), fmt(s.accuracy, True)]
            if faithfulness:
                cells += [fmt(s.average_drop, True), fmt(s.increase_in_confidence, True), fmt(s.deletion_auc),
                          fmt(s.insertion_auc)]
            table.add_row(*cells)
        console.print(table)
        console.print(f"per-image values: {eval_dir / 'evaluation.csv'}", markup=False)
    for f in failures:
        console.print(f"camcli: gate failed: {f}", markup=False)
    if json_out:
        print(json_module.dumps({"summaries": [s.as_dict() for s in evaluation.summaries],
                                 "gates_failed": failures, "passed": not failures,
                                 "images_without_truth": evaluation.without_truth,
                                 "truth_without_image": evaluation.truth_without_image,
                                 "evaluation_csv": str(eval_dir / "evaluation.csv")}))
    raise typer.Exit(EXIT_FAILURES if failures else EXIT_OK)


@app.command()
@handle_errors
def merge(
    out: Annotated[Path, typer.Argument(help="Output folder holding predictions.part-*.csv from `explain --shard i/n` jobs.")],
) -> None:
    """Join the CSV parts of sharded runs into predictions.csv, in input order."""
    from camcli.run import merge_parts

    n = merge_parts(out)
    _console().print(f"merged {n} rows into {out / 'predictions.csv'}", markup=False)


@app.command()
@handle_errors
def methods() -> None:
    """List every CAM method: name, whether it needs gradients, its cost, and its paper."""
    from camcli.methods import available

    out = _stdout()
    for name, cls in available().items():
        needs = "gradients" if cls.needs_gradients else "no gradients"
        kind = "class-discriminative" if cls.class_discriminative else "class-agnostic"
        out.print(f"{name:<20} {cls.summary}. [{needs}; {kind}; cost: {cls.cost}] {cls.paper}", markup=False)


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

    Columns: mark, name (as --layer accepts it; layer4[1] may also be written layer4.1), module
    type, output shape (channels x height x width). '*' marks the layer used when --layer is
    not given; 'cam' marks layers where --method cam applies (global average pooling and one
    linear layer follow). No weights are downloaded: shapes do not depend on them.
    """
    from camcli.layers import default_layer, display_name, trace_layers
    from camcli.methods.cam import cam_capable_layers
    from camcli.models import load_model

    loaded = load_model(model, weights="none", checkpoint=checkpoint, num_classes=num_classes)
    size = (input_size, input_size)
    chosen = default_layer(loaded.model, size)
    cam_ok = cam_capable_layers(loaded.model, size)
    out = _stdout()
    for info in trace_layers(loaded.model, size):
        depth = info.name.count(".")
        shape = "x".join(map(str, info.shape[1:])) if info.shape else "-"
        mark = ("*" if info.name == chosen else " ") + ("cam" if info.name in cam_ok else "   ")
        kind = type(loaded.model.get_submodule(info.name)).__name__
        out.print(f"{mark} {'  ' * depth}{display_name(info.name):<28} {kind:<22} {shape}", markup=False)
    console = _console()
    console.print(f"* default layer: {display_name(chosen)} (also written {chosen})", markup=False)
    console.print("cam: --method cam applies here" if cam_ok else "cam: no layer of this model supports --method cam; "
                  "use gradcam or another method", markup=False)


def main() -> None:
    """Console-script entry point."""
    keep_freed_memory()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit as e:
        code = e.code
        sys.exit(code if code is not None else EXIT_OK)


__all__ = ["app", "main", "EXIT_USAGE"]
