"""``camcli evaluate``: score explanations against ground-truth boxes; with gates, a CI check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from camcli.cli import app, handle_errors, stderr_console
from camcli.cli.options import settings_options
from camcli.errors import EXIT_FAILURES, EXIT_OK, UsageError
from camcli.settings.fields import EVALUATE_KEYS


@app.command(epilog="Exit codes: 0 every gate holds; 1 a gate failed; 2 usage or configuration error.")
@handle_errors
@settings_options(EVALUATE_KEYS)
def evaluate(
    sources: Annotated[list[Path], typer.Argument(help="A finished `camcli explain` output folder, or image files and folders to explain now.", show_default=False)],
    truth: Annotated[Path, typer.Option("--truth", "-t", help="Ground-truth boxes: CSV (path,x0,y0,x1,y1[,label]), a Pascal VOC folder, or COCO JSON.", rich_help_panel="Ground truth")],
    normalized: Annotated[bool, typer.Option("--normalized", help="CSV coordinates are fractions of the image size (0..1), not pixels.", rich_help_panel="Ground truth")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML file with model and method settings (as for explain), when explaining images here.", rich_help_panel="Model")] = None,
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
    **settings,
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

    from camcli.evaluation.scoring import check_gates, fmt, score, write_csv
    from camcli.evaluation.sources import gather_maps
    from camcli.evaluation.truth import read_truth

    console = stderr_console()
    log = (lambda msg: None) if quiet else (lambda msg: console.print(msg, markup=False))
    if box_mode not in ("largest", "all"):
        raise UsageError(f"--box-mode must be largest or all, got {box_mode!r}")
    maps, eval_dir = gather_maps(sources, settings, config, steps if faithfulness else None, out, log)
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
